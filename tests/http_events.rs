//! The HTTP component waits on events, not on timer loops: at the stop, connections still
//! waiting out their first-request grace; and the accept loop held at its connection
//! limit. Counted on a runtime that counts every sleep it is asked for, on each runtime.
#![cfg(feature = "http")]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use axum::routing::get;
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use lifecycle::runtime::{BoxFuture, Runtime, SignalStream};

/// A runtime that counts the sleeps asked of it.
#[derive(Debug)]
struct CountingSleeps {
    inner: Arc<dyn Runtime>,
    sleeps: Arc<AtomicUsize>,
}

impl Runtime for CountingSleeps {
    fn spawn(&self, future: BoxFuture<()>) {
        self.inner.spawn(future)
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        self.sleeps.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep_until(deadline)
    }
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn signals(&self) -> std::io::Result<SignalStream> {
        Ok(Box::pin(futures_util::stream::pending()))
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// Runs `app` on `runtime` with every sleep counted, on a thread of its own, until it
/// is running: returns the thread (which ends with the report) and the counter.
fn run_counted(runtime: &'static str, app: App) -> (thread::JoinHandle<Report>, Arc<AtomicUsize>) {
    let sleeps = Arc::new(AtomicUsize::new(0));
    let counted = sleeps.clone();
    let monitor = app.health();
    let app = thread::spawn(move || match runtime {
        "smol" => ::smol::block_on(app.run_on(Arc::new(CountingSleeps {
            inner: Arc::new(lifecycle::SmolRuntime::new()),
            sleeps: counted,
        })))
        .unwrap(),
        #[cfg(feature = "tokio")]
        "tokio" => {
            let tokio = ::tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = tokio.handle().clone();
            tokio
                .block_on(app.run_on(Arc::new(CountingSleeps {
                    inner: Arc::new(lifecycle::TokioRuntime::from_handle(handle)),
                    sleeps: counted,
                })))
                .unwrap()
        }
        other => panic!("no runtime {other} in this build"),
    });
    let began = Instant::now();
    while monitor.phase() != lifecycle::Phase::Running {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the app never ran"
        );
        thread::sleep(Duration::from_millis(2));
    }
    (app, sleeps)
}

fn server() -> (HttpServer, SocketAddr) {
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve(axum::Router::new().route("/", get(|| async { "ok" })));
    let addr = http.local_addr();
    (http, addr)
}

/// 50 connections accepted just before the stop, none with a request: each waits out
/// its first-request grace (300 ms) on one timer, not on a 2 ms poll (about 150 sleeps
/// each: 7,500).
fn fresh_connections_at_the_stop_wait_on_events(runtime: &'static str) {
    let (http, addr) = server();
    let app = App::builder()
        .add(http.first_request_grace(Duration::from_millis(300)))
        .build()
        .unwrap();
    let handle = app.handle();
    let (app, sleeps) = run_counted(runtime, app);
    let clients: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(100)); // accepted
    let before = sleeps.load(Ordering::SeqCst);
    handle.shutdown();
    let report = app.join().unwrap();
    let during_stop = sleeps.load(Ordering::SeqCst) - before;
    drop(clients);
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        report.shutdown >= Duration::from_millis(250),
        "the grace was waited: {report}"
    );
    assert!(
        during_stop <= 200,
        "{during_stop} sleeps during a stop that held 50 fresh connections"
    );
}

/// At its connection limit the accept loop waits for a connection to end, not on a 5 ms
/// poll (200 sleeps a second); the waiting client is served as soon as a slot frees.
fn the_accept_loop_waits_for_a_free_slot_on_events(runtime: &'static str) {
    let (http, addr) = server();
    let app = App::builder().add(http.max_connections(2)).build().unwrap();
    let handle = app.handle();
    let (app, sleeps) = run_counted(runtime, app);
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(100)); // both slots taken
    let before = sleeps.load(Ordering::SeqCst);
    let waiting = TcpStream::connect(addr).unwrap(); // in the listen queue
    thread::sleep(Duration::from_millis(1000));
    let at_the_limit = sleeps.load(Ordering::SeqCst) - before;
    drop(held); // slots free: the waiting client is accepted and served
    let mut waiting = waiting;
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use std::io::{Read, Write};
    write!(
        waiting,
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        at_the_limit <= 20,
        "{at_the_limit} sleeps in a second at the connection limit"
    );
}

on_each_runtime!(
    fresh_connections_at_the_stop_wait_on_events,
    the_accept_loop_waits_for_a_free_slot_on_events,
);
