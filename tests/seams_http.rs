//! Where the HTTP component meets the rest, with real clients on each runtime: a
//! panicking axum handler fails only its own request (HTTP/1.1 and HTTP/2), and an
//! `HttpServer` restarted with a failed dependency drains, keeps its port, and serves
//! again with the new resources.
#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use bytes::Bytes;
use common::{h2_connect, h2_get, run_in_background};
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use lifecycle::{Background, Restart};

/// Sends `GET path` on `stream` and reads one response: its status line and headers
/// (lower case) and its body; an error if the connection closed first.
fn get_on(stream: &mut TcpStream, path: &str) -> std::io::Result<(String, String)> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut data = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                return Ok((head.to_ascii_lowercase(), body.to_owned()));
            }
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn laptop() -> Config {
    Config::default().shutdown_timeout(Duration::from_secs(10))
}

/// A handler with a bug: an `unwrap` on a setting that is not there.
async fn panics() -> String {
    std::env::var("LIFECYCLE_TEST_A_SETTING_NOBODY_SET")
        .ok()
        .unwrap()
}

/// A body whose first chunk goes out, then panics.
async fn body_panics() -> axum::body::Body {
    let chunks =
        futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"first chunk"))])
            .chain(futures_util::stream::poll_fn(
                |_| -> std::task::Poll<Option<Result<Bytes, std::io::Error>>> {
                    panic!("the stream broke its invariant")
                },
            ));
    axum::body::Body::from_stream(chunks)
}

use futures_util::StreamExt as _;

/// An axum router whose `/panic` handler panics (an `unwrap` on `None`) and whose
/// `/body-panic` body panics after its first chunk: each fails its own request (500; once
/// the head went out, the HTTP/1.1 connection closed or the HTTP/2 stream reset, a stream
/// beside it completing), and the app serves on: `/ok` on the same and on new
/// connections, over HTTP/1.1 and HTTP/2, then a clean exit whose report counts the
/// panics.
fn a_panicking_handler_fails_only_its_request(runtime: &'static str) {
    let router = axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/panic", get(panics))
        .route("/body-panic", get(body_panics))
        .route(
            "/slow-ok",
            get(|| async {
                async_io::Timer::after(Duration::from_millis(300)).await;
                "ok"
            }),
        );
    let http = HttpServer::bind("127.0.0.1:0").unwrap().serve(router);
    let addr = http.local_addr();
    let app = App::builder().config(laptop()).add(http).build().unwrap();
    let (handle, monitor) = (app.handle(), app.health());
    let app = run_in_background(runtime, app);

    // HTTP/1.1: a 500, and the connection serves its next request.
    let mut stream = connect(addr);
    let (head, _) = get_on(&mut stream, "/panic").unwrap();
    assert!(head.starts_with("http/1.1 500"), "{head}");
    let (head, body) = get_on(&mut stream, "/ok").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");

    // A body that panics once its head went out: that connection closes, others serve.
    let mut stream = connect(addr);
    let cut = get_on(&mut stream, "/body-panic");
    assert!(cut.is_err(), "the connection closed: {cut:?}");
    let (head, _) = get_on(&mut connect(addr), "/ok").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // HTTP/2: the stream answers 500, the connection serves the next stream; a body
    // that panics resets its stream alone, while a stream beside it completes.
    ::smol::block_on(async {
        let (mut sender, _connection) = h2_connect(addr).await;
        let response = sender.send_request(h2_get("/panic")).await.unwrap();
        assert_eq!(response.status(), 500);
        let response = sender.send_request(h2_get("/ok")).await.unwrap();
        assert_eq!(response.status(), 200);
        let beside = ::smol::spawn(sender.send_request(h2_get("/slow-ok")));
        // The reset may come before the head or while the body streams.
        let streamed = async {
            let response = sender.send_request(h2_get("/body-panic")).await?;
            http_body_util::BodyExt::collect(response.into_body()).await
        };
        let error = streamed
            .await
            .expect_err("the panicking body's stream is reset");
        let reset = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<h2::Error>())
            .and_then(h2::Error::reason);
        assert_eq!(
            reset,
            Some(h2::Reason::INTERNAL_ERROR),
            "[{runtime}] {error:?}"
        );
        let response = beside.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(body_of(response).await, "ok");
        let response = sender.send_request(h2_get("/ok")).await.unwrap();
        assert_eq!(response.status(), 200, "the connection serves on");
    });

    assert_eq!(monitor.phase(), lifecycle::Phase::Running);
    assert_eq!(monitor.cached().components[0].handled_panics, 4);
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.trigger, lifecycle::Trigger::Requested);
    assert_eq!(report.component("http").unwrap().handled_panics, 4);
    assert!(
        report.to_string().contains("http caught 4 panics"),
        "{report}"
    );
}

/// Opted in with `fail_on_panic`, a handler's panic fails the component: the app shuts
/// down naming `http`, exit code 1.
fn fail_on_panic_fails_the_component(runtime: &'static str) {
    let router = axum::Router::new().route("/panic", get(panics));
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .fail_on_panic()
        .serve(router);
    let addr = http.local_addr();
    let app = App::builder().config(laptop()).add(http).build().unwrap();
    let app = run_in_background(runtime, app);

    let answer = get_on(&mut connect(addr), "/panic");
    assert!(answer.is_err(), "no answer: {answer:?}");
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    match &report.trigger {
        lifecycle::Trigger::TaskFailed { component, outcome } => {
            assert_eq!(component, "http");
            assert_eq!(outcome.kind(), "panicked", "{report}");
        }
        other => panic!("expected http's failure, got {other}: {report}"),
    }
    assert_eq!(report.component("http").unwrap().handled_panics, 0);
}

/// A probe server endpoint whose render panics (a metrics registry's bug) fails that
/// scrape with a 500; the next scrape, the probes and the app go on.
fn a_panicking_probe_endpoint_fails_only_its_scrape(runtime: &'static str) {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let render = {
        let scrapes = scrapes.clone();
        move || {
            if scrapes.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the registry broke its invariant");
            }
            "requests_total 1\n".to_owned()
        }
    };
    let probes = lifecycle::ProbeServer::bind("127.0.0.1:0")
        .unwrap()
        .endpoint("/metrics", "text/plain; version=0.0.4", render);
    let addr = probes.local_addr();
    let app = App::builder().config(laptop()).add(probes).build().unwrap();
    let handle = app.handle();
    let app = run_in_background(runtime, app);

    let (head, _) = get_on(&mut connect(addr), "/metrics").unwrap();
    assert!(head.starts_with("http/1.1 500"), "{head}");
    let (head, body) = get_on(&mut connect(addr), "/metrics").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "requests_total 1\n");
    let (head, _) = get_on(&mut connect(addr), "/health/live").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A response's whole body, as text.
async fn body_of(response: hyper::Response<hyper::body::Incoming>) -> String {
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    String::from_utf8_lossy(&body.unwrap().to_bytes()).into_owned()
}

/// What `feed` provides: which start it came from.
#[derive(Clone)]
struct Generation(usize);

/// `http` (axum) and a probe server depend on `feed`, a `Background` with a restart policy
/// whose loop the test makes fail: the restart cycles all three. The request in flight finishes
/// (its response says `Connection: close`; an HTTP/2 one, then its connection ends), the
/// idle connection is closed, a client that connects during the restart is served after
/// it on the same port, and the server's handlers see the new generation, over HTTP/1.1
/// and HTTP/2.
fn an_http_server_restarts_with_its_dependency(runtime: &'static str) {
    let fail = Arc::new(AtomicBool::new(false));
    let generations = Arc::new(AtomicUsize::new(0));
    let feed = {
        let (fail, generations) = (fail.clone(), generations.clone());
        Background::new("feed", move |ctx: StartContext| {
            let generation = generations.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.provide(Generation(generation));
            let fail = fail.clone();
            async move {
                while !ctx.shutdown_token().is_triggered() {
                    if fail.swap(false, Ordering::SeqCst) {
                        return Err("the feed lost its upstream");
                    }
                    ctx.runtime().sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
        })
    };
    let http = HttpServer::bind("127.0.0.1:0").unwrap().serve_with(
        |Generation(generation): Generation| {
            axum::Router::new()
                .route(
                    "/generation",
                    get(move || async move { generation.to_string() }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        async_io::Timer::after(Duration::from_millis(400)).await;
                        "slow done"
                    }),
                )
        },
    );
    let addr = http.local_addr();
    // A probe server that depends on `feed` too (not first, as by default): restarted
    // with it, it answers throughout.
    let probes = lifecycle::ProbeServer::bind("127.0.0.1:0").unwrap();
    let probes_addr = probes.local_addr();
    let app = App::builder()
        .config(laptop())
        .add_with(
            feed,
            Options::new().provides::<Generation>().restart(
                Restart::on_failure()
                    .backoff(Duration::from_millis(300), Duration::from_millis(300)),
            ),
        )
        .add(http)
        .add_with(probes, Options::new().before_all(false).depends_on("feed"))
        .build()
        .unwrap();
    let (handle, monitor) = (app.handle(), app.health());
    let app = run_in_background(runtime, app);

    // HTTP/2 through the same restart: its request in flight finishes, then its
    // connection ends (the restart's stop sends it a GOAWAY).
    let (sent, slow_sent) = std::sync::mpsc::channel();
    let h2 = std::thread::spawn(move || {
        ::smol::block_on(async move {
            let (mut sender, connection) = h2_connect(addr).await;
            let response = sender.send_request(h2_get("/generation")).await.unwrap();
            assert_eq!(body_of(response).await, "1");
            let slow = ::smol::spawn(sender.send_request(h2_get("/slow")));
            async_io::Timer::after(Duration::from_millis(20)).await;
            sent.send(()).unwrap();
            let response = slow.await.expect("the HTTP/2 request in flight finishes");
            assert_eq!(body_of(response).await, "slow done");
            assert!(
                common::ends_within(connection, Duration::from_secs(3)).await,
                "the HTTP/2 connection outlived the restart's stop"
            );
        })
    });
    slow_sent.recv().unwrap();
    let mut idle = connect(addr);
    let (_, body) = get_on(&mut idle, "/generation").unwrap();
    assert_eq!(body, "1");
    let mut busy = connect(addr);
    write!(busy, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fail.store(true, Ordering::SeqCst);
    // The request in flight finishes through the restart's stop.
    let mut response = String::new();
    busy.read_to_string(&mut response).unwrap();
    let response = response.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert!(response.ends_with("slow done"), "{response}");
    // The idle keep-alive connection was closed by the restart's stop.
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "closed, unanswered"
    );

    // During the backoff the probe server answers, and the port is still bound: the
    // connection waits in the listen queue and is answered by the new server.
    let (head, _) = get_on(&mut connect(probes_addr), "/health/live").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let waited = Instant::now();
    let (head, body) = get_on(&mut connect(addr), "/generation").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "2", "the restarted server serves the new resource");
    assert!(waited.elapsed() < Duration::from_secs(5));
    h2.join().unwrap();
    ::smol::block_on(async {
        let (mut sender, _connection) = h2_connect(addr).await;
        let response = sender.send_request(h2_get("/generation")).await.unwrap();
        assert_eq!(body_of(response).await, "2", "a new HTTP/2 connection");
    });
    let restarts = |name: &str| {
        let snapshot = monitor.cached();
        snapshot
            .components
            .iter()
            .find(|c| &*c.name == name)
            .unwrap()
            .restarts
    };
    assert_eq!((restarts("http"), restarts("probes")), (1, 1));
    let (head, _) = get_on(&mut connect(probes_addr), "/health/live").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");

    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.restarts.len(), 1, "{report}");
    assert!(report.restarts[0].completed, "{report}");
    assert_eq!(report.restarts[0].cycled, ["feed", "http", "probes"]);
}

/// Flushes slowly: the last thing the app does, after every other flush.
struct SlowFlush;

#[async_trait]
impl Component for SlowFlush {
    fn name(&self) -> &str {
        "logs"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        async_io::Timer::after(Duration::from_millis(800)).await;
        Ok(())
    }
}

/// A shutdown during a restart's backoff: `http` was stopped by the restart (its socket
/// kept for the start that will not come), and its port closes at its flush, not only
/// when the process exits.
fn a_restart_cut_short_by_the_shutdown_closes_the_port(runtime: &'static str) {
    let fail = Arc::new(AtomicBool::new(false));
    let feed = {
        let fail = fail.clone();
        Background::new("feed", move |ctx: StartContext| {
            let fail = fail.clone();
            async move {
                while !ctx.stop_token().is_triggered() {
                    if fail.swap(false, Ordering::SeqCst) {
                        return Err("the feed lost its upstream");
                    }
                    ctx.runtime().sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
        })
    };
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve(axum::Router::new().route("/", get(|| async { "ok" })));
    let addr = http.local_addr();
    let app = App::builder()
        .config(laptop())
        .add_with(
            SlowFlush,
            Options::new().flush_timeout(Duration::from_secs(2)),
        )
        .add_with(
            feed,
            Options::new().restart(
                Restart::on_failure().backoff(Duration::from_secs(5), Duration::from_secs(5)),
            ),
        )
        .add_with(http, Options::new().depends_on("feed"))
        .build()
        .unwrap();
    let (handle, monitor) = (app.handle(), app.health());
    let app = run_in_background(runtime, app);

    fail.store(true, Ordering::SeqCst);
    let began = Instant::now();
    while monitor.cached().components.iter().all(|c| c.restarts == 0) {
        assert!(began.elapsed() < Duration::from_secs(5), "no restart");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200)); // in the backoff: http stopped
    assert!(
        TcpStream::connect(addr).is_ok(),
        "kept bound for the restart"
    );
    handle.shutdown();
    std::thread::sleep(Duration::from_millis(300)); // in the 800 ms flush of `logs`
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port of a server the shutdown will not start again is closed"
    );
    let report = app.join().unwrap();
    assert_eq!(report.restarts.len(), 1, "{report}");
    assert!(!report.restarts[0].completed, "{report}");
}

on_each_runtime!(
    a_restart_cut_short_by_the_shutdown_closes_the_port,
    a_panicking_handler_fails_only_its_request,
    fail_on_panic_fails_the_component,
    a_panicking_probe_endpoint_fails_only_its_scrape,
    an_http_server_restarts_with_its_dependency,
);
