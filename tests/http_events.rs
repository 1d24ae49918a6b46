//! The HTTP component waits on events, not on timer loops: at the stop, connections still
//! waiting out their first-request grace; and the accept loop held at its connection
//! limit. Counted on a runtime that counts every sleep it is asked for, on each runtime.
#![cfg(feature = "http")]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use axum::routing::get;
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;

fn server() -> (HttpServer, SocketAddr) {
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve(axum::Router::new().route("/", get(|| async { "ok" })));
    let addr = http.local_addr();
    (http, addr)
}

/// 50 connections accepted just before the stop, none with a request: each waits out
/// its first-request grace (300 ms) on one timer, not on a 2 ms poll (about 150 sleeps
/// each: 7,055 in all, on smol, before).
fn fresh_connections_at_the_stop_wait_on_events(runtime: &'static str) {
    let (http, addr) = server();
    let app = App::builder()
        .add(http.first_request_grace(Duration::from_millis(300)))
        .build()
        .unwrap();
    let handle = app.handle();
    let (app, watch) = common::run_watched(runtime, app);
    let sleeps = &watch.sleeps;
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
    let (app, watch) = common::run_watched(runtime, app);
    let sleeps = &watch.sleeps;
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
