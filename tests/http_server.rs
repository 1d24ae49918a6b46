//! The HTTP component with real clients (HTTP/1.1 over real sockets, hyper's HTTP/2
//! client, and a raw HTTP/2 frame client for what hyper's keeps to itself), on each
//! runtime: the drain (`Connection: close` from the trigger on, a GOAWAY for HTTP/2),
//! idle keep-alive connections that never hold the stop, a half-sent request that never
//! fails a clean exit, a connection accepted just before the listener closed that still
//! gets its request answered, a request over the stop deadline cut before its dependency
//! stops, a streamed body waited for; the timeouts, the connection limit, HTTP/2's pings,
//! hyper's options; and the memory of a connection's task.
#![cfg(feature = "http")]

mod common;

use common::{h2_connect, h2_get};

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use lifecycle::{Outcome, ShutdownHandle};

/// `GET /work?ms=N`: N ms of work, then `done`. Sets `dropped` if a request's future is
/// dropped before it finished. `GET /upgrade` holds the upgraded connection in a task of
/// the component's spawner.
#[derive(Clone)]
struct Work {
    dropped: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    spawner: lifecycle::Spawner,
}

struct DropFlag(Arc<AtomicBool>, bool);
impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl tower_service::Service<Request<Incoming>> for Work {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        if request.uri().path() == "/upgrade" {
            let upgrade = hyper::upgrade::on(&mut request);
            drop(self.spawner.spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let _held = upgraded;
                    std::future::pending::<()>().await;
                }
            }));
            let response = Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "hold")
                .body(Full::new(Bytes::new()))
                .unwrap();
            return Box::pin(async move { Ok(response) });
        }
        let ms: u64 = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let (dropped, started) = (self.dropped.clone(), self.started.clone());
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            let mut flag = DropFlag(dropped, true);
            async_io::Timer::after(Duration::from_millis(ms)).await;
            flag.1 = false;
            Ok(Response::new(Full::new(Bytes::from_static(b"done"))))
        })
    }
}

/// A dependency of `http` that records when its stop began.
struct Db(Arc<Mutex<Option<(Instant, bool)>>>, Arc<AtomicBool>);

#[async_trait]
impl Component for Db {
    fn name(&self) -> &str {
        "db"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        *self.0.lock().unwrap() = Some((Instant::now(), self.1.load(Ordering::SeqCst)));
        Ok(())
    }
}

struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    app: thread::JoinHandle<Report>,
    db_stop: Arc<Mutex<Option<(Instant, bool)>>>,
    dropped: Arc<AtomicBool>,
    /// `/work` requests whose handler began.
    started: Arc<AtomicUsize>,
}

fn start(runtime: &'static str, config: Config, http_stop: Duration) -> Running {
    start_serving(runtime, config, http_stop, |http| http)
}

fn start_serving(
    runtime: &'static str,
    config: Config,
    http_stop: Duration,
    configure: impl FnOnce(HttpServer) -> HttpServer,
) -> Running {
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let db_stop = Arc::new(Mutex::new(None));
    let (work, work_started) = (dropped.clone(), started.clone());
    let http =
        configure(HttpServer::bind("127.0.0.1:0").unwrap()).serve_with(move |ctx: StartContext| {
            Work {
                dropped: work.clone(),
                started: work_started.clone(),
                spawner: ctx.helper_spawner(),
            }
        });
    let addr = http.local_addr();
    let app = App::builder()
        .config(config)
        .add(Db(db_stop.clone(), dropped.clone()))
        .add_with(
            http,
            Options::new().depends_on("db").stop_timeout(http_stop),
        )
        .build()
        .unwrap();
    let handle = app.handle();
    let app = common::run_in_background(runtime, app);
    Running {
        addr,
        handle,
        app,
        db_stop,
        dropped,
        started,
    }
}

fn laptop(drain: Duration) -> Config {
    Config::default()
        .drain_delay(drain)
        .shutdown_timeout(Duration::from_secs(10))
}

/// Sends `GET path` on `stream`, reads one response; returns its head and body.
fn get(stream: &mut TcpStream, path: &str) -> std::io::Result<(String, String)> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Ok((head.to_ascii_lowercase(), body.to_owned()));
            }
        }
    }
}

/// Whether a read's `error` is its timeout's (nothing came), not the connection's end.
fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Whether `stream` is closed by its server within `within` (an end or a reset, not a
/// read that timed out, nor bytes).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    match stream.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !timed_out(&error),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Keep-alive requests are served; from the trigger on, responses say
/// `Connection: close` while the drain keeps serving; the idle connection does not hold
/// the stop.
fn drain_marks_responses_close(runtime: &'static str) {
    let running = start(
        runtime,
        laptop(Duration::from_millis(500)),
        Duration::from_secs(5),
    );
    let mut keep_alive = connect(running.addr);
    let (head, body) = get(&mut keep_alive, "/work").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, "done");
    let mut idle = connect(running.addr);
    get(&mut idle, "/work").unwrap();

    running.handle.shutdown();
    thread::sleep(Duration::from_millis(100)); // in the drain
    let (head, _) = get(&mut keep_alive, "/work?ms=10").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    let stopped = Instant::now();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "an idle keep-alive connection held the stop: {report}"
    );
}

/// Defect: a client that sent half a request header held the stop until its timeout
/// and made the exit code 1. It holds no work: it is closed, and the exit is clean.
fn a_half_sent_request_does_not_fail_the_exit(runtime: &'static str) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_secs(3));
    let mut half = connect(running.addr);
    half.write_all(b"GET /work?ms=1 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut dribble = connect(running.addr);
    dribble.write_all(b"GET /wo").unwrap();
    thread::sleep(Duration::from_millis(50));
    let stopped = Instant::now();
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        report.component("http").unwrap().stop.outcome,
        Outcome::Completed,
        "{report}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the half-sent request held the stop for {:?}",
        stopped.elapsed()
    );
}

/// Defect: a connection accepted just before the listener closed was dropped as idle
/// before its first request was read. It gets a grace to send it, and an answer.
fn a_just_accepted_connection_gets_its_answer(runtime: &'static str) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_secs(3));
    let mut early = connect(running.addr);
    thread::sleep(Duration::from_millis(50)); // accepted by the server
    running.handle.shutdown();
    thread::sleep(Duration::from_millis(100)); // the stop has begun: the listener is closed
    assert!(
        TcpStream::connect(running.addr).is_err(),
        "the listener should be closed by now"
    );
    let (head, body) = get(&mut early, "/work?ms=5").expect("an answer, not a reset");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "done");
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// Defect: a request over the stop deadline kept running after its dependency stopped.
/// It is cut at the deadline, reported, and `db` stops only after it was dropped.
fn a_request_over_the_stop_deadline_is_cut_before_db_stops(runtime: &'static str) {
    cut_before_db_stops(runtime, hyper::Version::HTTP_11);
}

/// The same over HTTP/2, whose requests run in stream tasks of their own, beside their
/// connection's.
fn an_http2_request_over_the_stop_deadline_is_cut_before_db_stops(runtime: &'static str) {
    cut_before_db_stops(runtime, hyper::Version::HTTP_2);
}

fn cut_before_db_stops(runtime: &'static str, version: hyper::Version) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_millis(400));
    let addr = running.addr;
    let client = thread::spawn(move || {
        if version == hyper::Version::HTTP_2 {
            return ::smol::block_on(async move {
                let (mut sender, _connection) = h2_connect(addr).await;
                let answer = sender.send_request(h2_get("/work?ms=5000")).await;
                answer
                    .map(|response| (format!("{response:?}"), String::new()))
                    .map_err(std::io::Error::other)
            });
        }
        let mut slow = connect(addr);
        get(&mut slow, "/work?ms=5000")
    });
    common::wait_until("the request's handler began", || {
        running.started.load(Ordering::SeqCst) > 0
    });
    let triggered = Instant::now();
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    let http_stop = &report.component("http").unwrap().stop.outcome;
    assert_eq!(
        *http_stop,
        Outcome::Failed(
            "1 requests still running at the stop deadline were cut (1 connections force-closed)"
                .into()
        ),
        "{report}"
    );
    let (db_began, handler_dropped) = running.db_stop.lock().unwrap().expect("db stopped");
    assert!(
        handler_dropped,
        "the request still ran when db began to stop"
    );
    assert!(db_began - triggered < Duration::from_secs(2));
    assert!(running.dropped.load(Ordering::SeqCst));
    let answer = client.join().unwrap();
    assert!(
        answer.is_err(),
        "[{runtime}] the cut {version:?} request got a response: {answer:?}"
    );
}

/// Sends `request` on a new connection one byte every `every`, until it is all sent or
/// the server closes the connection, then reads the answer. Returns when the request was
/// complete (`None` if it never was), the answer or why there is none, and when the
/// exchange ended (for an incomplete request: when the server closed the connection).
fn dribble(
    addr: SocketAddr,
    request: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> (Option<Instant>, std::io::Result<(String, String)>, Instant) {
    let began = Instant::now();
    let mut stream = connect(addr);
    stream.set_read_timeout(Some(every)).unwrap();
    for (sent, byte) in request.iter().enumerate() {
        if began.elapsed() > give_up {
            let error = std::io::Error::other(format!("still open after {sent} bytes"));
            return (None, Err(error), Instant::now());
        }
        if let Err(error) = stream.write_all(std::slice::from_ref(byte)) {
            return (None, Err(error), Instant::now()); // closed by the server
        }
        if sent + 1 == request.len() {
            break;
        }
        // Waits `every`, watching for the server closing the connection meanwhile.
        let mut buffer = [0u8; 1024];
        match stream.read(&mut buffer) {
            Ok(0) => {
                return (
                    None,
                    Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Instant::now(),
                )
            }
            Ok(n) => {
                let unasked = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let error =
                    std::io::Error::other(format!("an answer to half a request: {unasked:?}"));
                return (None, Err(error), Instant::now());
            }
            Err(error) if timed_out(&error) => {}
            Err(error) => return (None, Err(error), Instant::now()),
        }
    }
    let complete = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answer = read_response(&mut stream);
    (Some(complete), answer, Instant::now())
}

/// Slowloris during the shutdown: clients that send a request a byte every 50-100 ms,
/// never completing its header, hold no work: the stop closes them after the first
/// request grace, long before the header read timeout (5 s), and the exit is clean. A
/// client that dribbles a complete request during the drain gets its answer, with
/// `Connection: close`.
fn byte_dribbling_requests_during_shutdown_exit_cleanly(runtime: &'static str) {
    let drain = Duration::from_millis(1500);
    let shutdown_timeout = Duration::from_secs(10);
    let running = start(runtime, laptop(drain), Duration::from_secs(6));
    let addr = running.addr;
    let give_up = Duration::from_secs(8);
    let triggered = Instant::now();
    running.handle.shutdown();
    // A request line no dribbler completes in the stop: 40 s of bytes at the fastest.
    let endless = "GET /work?ms=1&padding=".repeat(35).into_bytes();
    let slowloris: Vec<_> = [50, 75, 100]
        .into_iter()
        .map(|ms| {
            let request = endless.clone();
            thread::spawn(move || dribble(addr, request, Duration::from_millis(ms), give_up))
        })
        .collect();
    // About 40 bytes at 10 ms: complete some 500 ms into the 1.5 s drain.
    let patient = thread::spawn(move || {
        dribble(
            addr,
            b"GET /work?ms=5 HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
            Duration::from_millis(10),
            give_up,
        )
    });

    let report = running.app.join().unwrap();
    let stopped = triggered.elapsed();
    assert_eq!(report.exit_code(), 0, "[{runtime}] {report}");
    assert_eq!(
        report.component("http").unwrap().stop.outcome,
        Outcome::Completed,
        "[{runtime}] {report}"
    );
    assert!(
        report.shutdown < shutdown_timeout,
        "[{runtime}] over the shutdown budget: {report}"
    );
    // The drain, then the first request grace (500 ms): well before the header read
    // timeout (5 s) could have ended the dribblers.
    assert!(
        stopped < drain + Duration::from_millis(1500),
        "[{runtime}] the dribblers held the stop: {stopped:?} after the trigger\n{report}"
    );

    let (complete, answer, _) = patient.join().unwrap();
    let Some(complete) = complete else {
        panic!("[{runtime}] the complete request was not sent in full: {answer:?}");
    };
    assert!(
        complete - triggered < drain,
        "[{runtime}] the dribbled request completed after the drain"
    );
    let (head, body) = answer.expect("an answer to the complete dribbled request");
    assert!(head.starts_with("http/1.1 200"), "[{runtime}] {head}");
    assert!(head.contains("connection: close"), "[{runtime}] {head}");
    assert_eq!(body, "done");
    let mut closed_at = Vec::new();
    for client in slowloris {
        let (complete, answer, closed) = client.join().unwrap();
        assert!(
            complete.is_none(),
            "[{runtime}] a slowloris completed its request"
        );
        match answer {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) => {}
            other => {
                panic!("[{runtime}] a slowloris should see its connection closed, got {other:?}")
            }
        }
        let closed = closed - triggered;
        assert!(
            closed >= drain && closed < drain + Duration::from_millis(1500),
            "[{runtime}] a slowloris was closed {closed:?} after the trigger, not at the stop"
        );
        closed_at.push(closed);
    }
    eprintln!(
        "[{runtime}] shutdown {:?}; the dribbled request complete {:?} after the trigger; \
         the slowloris clients closed after {closed_at:?}",
        report.shutdown,
        complete - triggered
    );
}

/// HTTP/2 with prior knowledge on the same listener; at the trigger the connection gets
/// a GOAWAY: the request in flight completes, then the connection ends, long before the
/// stop.
fn http2_gets_goaway_at_the_trigger(runtime: &'static str) {
    let running = start(
        runtime,
        laptop(Duration::from_millis(1500)),
        Duration::from_secs(5),
    );
    let addr = running.addr;
    let handle = running.handle.clone();
    // What hyper's client keeps to itself: the GOAWAY names the request in flight as
    // processed.
    let raw = thread::spawn(move || {
        let mut raw = RawH2::open(addr);
        raw.get(1, "/work?ms=300");
        raw.frames_until_closed()
    });
    ::smol::block_on(async move {
        let (mut sender, connection) = h2_connect(addr).await;
        let response = sender.send_request(h2_get("/work")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let slow = ::smol::spawn(sender.send_request(h2_get("/work?ms=300")));
        async_io::Timer::after(Duration::from_millis(50)).await;
        let triggered = Instant::now();
        handle.shutdown();
        let response = slow.await.expect("the request in flight completes");
        assert_eq!(response.status(), 200);
        assert!(
            common::ends_within(connection, Duration::from_millis(1000)).await,
            "no GOAWAY: the connection was still open 1 s into a 1.5 s drain"
        );
        assert!(triggered.elapsed() < Duration::from_millis(1000));
    });
    let frames = raw.join().unwrap();
    assert!(
        answered(&frames, 1),
        "[{runtime}] stream 1 unanswered: {frames:?}"
    );
    assert_eq!(last_goaway(&frames), Some(1), "[{runtime}] {frames:?}");
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// An HTTP/2 connection that had sent nothing yet at the trigger, and one opened during
/// the drain, get their GOAWAY with their first request's answer, not only at the stop:
/// their clients move to another instance while this one drains.
fn http2_connections_idle_at_or_opened_after_the_trigger_get_goaway(runtime: &'static str) {
    let running = start(
        runtime,
        laptop(Duration::from_millis(1500)),
        Duration::from_secs(5),
    );
    let addr = running.addr;
    let handle = running.handle.clone();
    ::smol::block_on(async move {
        let (mut idle, idle_connection) = h2_connect(addr).await;
        async_io::Timer::after(Duration::from_millis(50)).await;
        let triggered = Instant::now();
        handle.shutdown();
        async_io::Timer::after(Duration::from_millis(100)).await;
        let (mut late, late_connection) = h2_connect(addr).await;
        for (name, sender, connection) in [
            ("idle at the trigger", &mut idle, idle_connection),
            ("opened during the drain", &mut late, late_connection),
        ] {
            let response = sender.send_request(h2_get("/work")).await.unwrap();
            assert_eq!(response.status(), 200, "{name}");
            let left = Duration::from_millis(1000).saturating_sub(triggered.elapsed());
            assert!(
                common::ends_within(connection, left).await,
                "[{runtime}] no GOAWAY: the connection {name} was still open {:?} into a 1.5 s drain",
                triggered.elapsed()
            );
        }
    });
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A malformed request gets a 400 and its connection is closed; the server goes on.
fn a_malformed_request_gets_400(runtime: &'static str) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_secs(3));
    let mut bad = connect(running.addr);
    bad.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut bad).expect("an answer");
    assert!(head.starts_with("http/1.1 400"), "{head}");
    // And its connection is closed at once, not at the header read timeout (5 s).
    assert!(
        closed_within(&mut bad, Duration::from_secs(1)),
        "[{runtime}] the connection of a malformed request stays open"
    );
    let mut good = connect(running.addr);
    let (head, _) = get(&mut good, "/work").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// An upgraded connection is the component's tracked task: the stop waits for it until
/// the deadline, then it is cut (the client sees the socket close) and reported.
fn an_upgraded_connection_is_closed_at_the_deadline(runtime: &'static str) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_millis(400));
    let mut upgraded = connect(running.addr);
    write!(
        upgraded,
        "GET /upgrade HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: hold\r\n\r\n"
    )
    .unwrap();
    let (head, _) = read_response(&mut upgraded).unwrap();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let triggered = Instant::now();
    running.handle.shutdown();
    let mut byte = [0u8; 1];
    let closed = matches!(upgraded.read(&mut byte), Ok(0) | Err(_));
    assert!(closed, "the upgraded connection was closed");
    let report = running.app.join().unwrap();
    let waited = triggered.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "held until the 400 ms deadline, not longer: {waited:?}"
    );
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(
        report.component("http").unwrap().stop.outcome,
        Outcome::Failed(
            "upgraded connections (WebSocket) still open at the stop deadline were cut".into()
        )
    );
}

/// The probes on the app's port: readiness 200, then 503 from the trigger on; a load
/// balancer's checks are not work in flight, so the drain still ends on its quiet period.
fn probes_on_the_same_port(runtime: &'static str) {
    let config = laptop(Duration::from_secs(4)).drain_quiet_period(Duration::from_millis(300));
    let running = start_serving(
        runtime,
        config,
        Duration::from_secs(3),
        HttpServer::mount_probes,
    );
    let mut checks = connect(running.addr);
    let (head, body) = get(&mut checks, "/health/ready").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains(r#""ready":true"#), "{body}");
    // On the app's (public) port, `/health` says the status without the components.
    let (head, body) = get(&mut checks, "/health").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains(r#""status":"pass""#), "{body}");
    assert!(
        !body.contains("checks") && !body.contains("db"),
        "[{runtime}] details on the app's port: {body}"
    );
    let (head, _) = get(&mut checks, "/work").unwrap();
    assert!(
        head.starts_with("http/1.1 200"),
        "the app's own routes still answer: {head}"
    );

    let triggered = Instant::now();
    running.handle.shutdown();
    let (head, body) = get(&mut checks, "/health/ready").unwrap();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(body.contains(r#""ready":false"#), "{body}");
    // Checks every 50 ms through the drain, as a load balancer does.
    while !running.app.is_finished() && triggered.elapsed() < Duration::from_secs(3) {
        if get(&mut checks, "/health/ready").is_err() {
            break; // the server has stopped
        }
        thread::sleep(Duration::from_millis(50));
    }
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        triggered.elapsed() < Duration::from_millis(2500),
        "the probes kept the 4 s drain from ending on its 300 ms quiet period ({:?})",
        triggered.elapsed()
    );
}

/// The header read and idle timeouts, with no shutdown: a client that never completes
/// its first request's head and one that never sends a byte are closed at the header read
/// timeout; a keep-alive connection left idle is not, it is closed at the idle timeout;
/// one whose next request's head stalls is closed within twice the header read timeout
/// of that head's first bytes; a request slower than both is answered, and its connection serves
/// the next one; a balancer's checks every 150 ms keep theirs.
fn the_header_read_and_idle_timeouts_close_slow_silent_and_idle_clients(runtime: &'static str) {
    let timeout = Duration::from_millis(400);
    let idle_timeout = Duration::from_millis(1500);
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| {
            http.header_read_timeout(timeout)
                .idle_timeout(idle_timeout)
                .mount_probes()
        },
    );
    let addr = running.addr;
    let closed_after = |mut stream: TcpStream, since: Instant| {
        thread::spawn(move || {
            let mut byte = [0u8; 1];
            let read = stream.read(&mut byte);
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "closed, not answered: {read:?}"
            );
            since.elapsed()
        })
    };
    let mut half = connect(addr);
    half.write_all(b"GET /work HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let half = closed_after(half, Instant::now());
    let silent = closed_after(connect(addr), Instant::now());
    let mut idle = connect(addr);
    get(&mut idle, "/work").unwrap();
    let idle = closed_after(idle, Instant::now());
    let stalled = thread::spawn(move || {
        let mut stalled = connect(addr);
        get(&mut stalled, "/work").unwrap();
        thread::sleep(Duration::from_millis(300));
        stalled.write_all(b"GET /work HTTP/1.1\r\n").unwrap();
        closed_after(stalled, Instant::now()).join().unwrap()
    });
    let slow = thread::spawn(move || {
        let mut slow = connect(addr);
        let first = get(&mut slow, "/work?ms=1800").unwrap();
        (first, get(&mut slow, "/work").unwrap())
    });
    let checks = thread::spawn(move || {
        let mut checks = connect(addr);
        for _ in 0..16 {
            let (head, _) = get(&mut checks, "/health/live").unwrap();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            thread::sleep(Duration::from_millis(150));
        }
    });
    let within = |after: Duration, limit: Duration| {
        after >= limit - Duration::from_millis(50) && after < limit + Duration::from_millis(1000)
    };
    for (client, closed, limit, slack) in [
        ("half-sent", half, timeout, Duration::ZERO),
        ("silent", silent, timeout, Duration::ZERO),
        ("idle", idle, idle_timeout, Duration::ZERO),
        ("stalled", stalled, timeout, timeout),
    ] {
        let after = closed.join().unwrap();
        assert!(
            within(after, limit) || (after > limit && within(after, limit + slack)),
            "[{runtime}] the {client} client was closed {after:?} after its last bytes (limit {limit:?})"
        );
    }
    let ((head, body), (next, _)) = slow.join().unwrap();
    assert!(head.starts_with("http/1.1 200") && body == "done", "{head}");
    assert!(
        next.starts_with("http/1.1 200"),
        "the connection goes on: {next}"
    );
    checks.join().unwrap();
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// Behind a load balancer that keeps idle connections 60 s (AWS ALB), the server must
/// close later than that: by default an idle keep-alive connection outlives the header
/// read timeout, and is still served after it.
fn the_default_idle_timeout_outlives_the_header_read_timeout(runtime: &'static str) {
    let timeout = Duration::from_millis(300);
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| http.header_read_timeout(timeout),
    );
    let mut client = connect(running.addr);
    get(&mut client, "/work").unwrap();
    thread::sleep(timeout * 3);
    let (head, _) = get(&mut client, "/work")
        .unwrap_or_else(|error| panic!("[{runtime}] the idle connection was closed: {error}"));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// Durations past what the clock can count are no limit, not a panic: a silent client
/// stays connected, requests are served, and at the stop the grace ends at the stop's
/// deadline, the exit clean.
fn endless_timeouts_are_no_limits(runtime: &'static str) {
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_millis(800),
        |http| {
            http.header_read_timeout(Duration::MAX)
                .first_request_grace(Duration::MAX)
        },
    );
    let _silent = connect(running.addr);
    let mut client = connect(running.addr);
    let (head, _) = get(&mut client, "/work").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let stopped = Instant::now();
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the silent client held the stop past its deadline: {:?}",
        stopped.elapsed()
    );
}

/// HTTP/2 and the timeouts: a client that connected ahead of its first request (or sent
/// only its preface) is closed at the header read timeout; one idle between requests is
/// not (it is still served after twice that), and gets a GOAWAY once idle for the idle
/// timeout.
fn http2_connections_and_the_timeouts(runtime: &'static str) {
    let timeout = Duration::from_millis(300);
    let idle_timeout = Duration::from_millis(1200);
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| http.header_read_timeout(timeout).idle_timeout(idle_timeout),
    );
    let addr = running.addr;
    ::smol::block_on(async move {
        let (mut early, early_connection) = h2_connect(addr).await;
        let (mut between, between_connection) = h2_connect(addr).await;
        let response = between.send_request(h2_get("/work")).await.unwrap();
        assert_eq!(response.status(), 200);
        let idle_since = Instant::now();
        async_io::Timer::after(timeout * 2).await;
        assert!(
            early_connection.is_finished() && early.send_request(h2_get("/work")).await.is_err(),
            "[{runtime}] the HTTP/2 client without a request was not closed"
        );
        let response = between.send_request(h2_get("/work")).await;
        let response = response.unwrap_or_else(|error| {
            panic!("[{runtime}] the idle HTTP/2 connection was closed: {error}")
        });
        assert_eq!(response.status(), 200);
        let idle_since = idle_since + timeout * 2;
        let ended = between_connection.await;
        let after = idle_since.elapsed();
        assert!(
            ended.is_ok(),
            "[{runtime}] closed without a GOAWAY: {ended:?}"
        );
        assert!(
            after >= idle_timeout - Duration::from_millis(50)
                && after < idle_timeout + Duration::from_secs(1),
            "[{runtime}] the idle HTTP/2 connection ended {after:?} after its last response"
        );
    });
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// Clients that send the HTTP/2 preface and nothing else do not hold the connection
/// limit: with four slots and four such clients, a fifth, ordinary client is answered
/// once the header read timeout has closed them.
fn preface_only_clients_do_not_starve_the_connection_limit(runtime: &'static str) {
    let timeout = Duration::from_millis(300);
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| http.header_read_timeout(timeout).max_connections(4),
    );
    let prefaces: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect(running.addr);
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let began = Instant::now();
    let mut client = connect(running.addr);
    let (head, _) = get(&mut client, "/work").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        began.elapsed() < timeout + Duration::from_secs(2),
        "[{runtime}] answered only after {:?}",
        began.elapsed()
    );
    drop(prefaces);
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// HTTP/2 keep-alive pings, set through `HttpServer::hyper`: a client that stops
/// answering them (its connection no longer read, as a peer gone without a FIN) is
/// closed after the ping timeout, long before the idle timeout.
fn an_http2_peer_that_does_not_answer_pings_is_closed(runtime: &'static str) {
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| {
            http.hyper(|builder| {
                builder
                    .http2()
                    .keep_alive_interval(Duration::from_millis(200))
                    .keep_alive_timeout(Duration::from_millis(200));
            })
        },
    );
    let addr = running.addr;
    // h2's client: its connection is driven only when polled here (hyper's client would
    // answer pings from a task of its own).
    let client = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(async move {
        let tcp = ::tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = h2::client::handshake(tcp).await.unwrap();
        let mut connection = std::pin::pin!(connection);
        let request = hyper::Request::get(format!("http://{addr}/work"))
            .body(())
            .unwrap();
        let (response, _) = sender.send_request(request, true).unwrap();
        let response = match futures_util::future::select(response, connection.as_mut()).await {
            futures_util::future::Either::Left((response, _)) => response.unwrap(),
            futures_util::future::Either::Right((ended, _)) => panic!("ended: {ended:?}"),
        };
        assert_eq!(response.status(), 200);
        // The connection is not polled: the server's pings go unanswered.
        ::tokio::time::sleep(Duration::from_millis(1500)).await;
        let ended = ::tokio::time::timeout(Duration::from_millis(500), connection).await;
        assert!(
            ended.is_ok(),
            "[{runtime}] the server kept a connection whose peer answers no ping"
        );
    });
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// An executor for a type's size: hyper-util's connection is generic over it.
#[derive(Clone)]
struct NoExecutor;

impl<F: std::future::Future + Send + 'static> hyper::rt::Executor<F> for NoExecutor {
    fn execute(&self, _: F) {}
}

/// A connection's memory is its task's: the task holds hyper's connection future once,
/// with less than as much again for the rest (an `async` wrapper that awaits a future it
/// captured holds it twice; three of them made a connection's task 16 KB, and 10,000 idle
/// connections take 32 KB each instead of 19).
fn a_connection_task_is_about_its_hyper_connection(runtime: &'static str) {
    use hyper_util::server::conn::auto::UpgradeableConnection;
    use hyper_util::service::TowerToHyperService;
    type Router = axum::Router;
    let hyper_util: usize = std::mem::size_of::<
        UpgradeableConnection<
            'static,
            lifecycle::net::HyperIo,
            TowerToHyperService<Router>,
            NoExecutor,
        >,
    >();
    let router = Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let http = HttpServer::bind("127.0.0.1:0").unwrap().serve(router);
    let addr = http.local_addr();
    let app = App::builder().add(http).build().unwrap();
    let handle = app.handle();
    let (running, watch) = common::run_watched(runtime, app);
    let mut client = connect(addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let (_head, body) = read_response(&mut client).unwrap();
    assert_eq!(body, "hello", "[{runtime}] no answer");
    // An HTTP/2 stream is a task of its own.
    ::smol::block_on(async {
        let (mut sender, _connection) = h2_connect(addr).await;
        let response = sender.send_request(h2_get("/")).await.unwrap();
        assert_eq!(response.status(), 200, "[{runtime}]");
    });
    let largest = watch.largest_spawned.load(Ordering::SeqCst);
    handle.shutdown();
    let report = running.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        largest >= hyper_util && largest < 2 * hyper_util,
        "[{runtime}] the largest future spawned is {largest} bytes, \
         hyper-util's connection {hyper_util}"
    );
}

/// hyper's HTTP/1 timeouts set through `HttpServer::hyper` work: hyper panics in each
/// connection whose builder has one and no timer, so that every request went unanswered.
fn hypers_http1_header_read_timeout_set_through_hyper_works(runtime: &'static str) {
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| {
            http.header_read_timeout(Duration::from_secs(10))
                .hyper(|builder| {
                    builder
                        .http1()
                        .header_read_timeout(Duration::from_millis(300));
                })
        },
    );
    let mut client = connect(running.addr);
    let (head, body) =
        get(&mut client, "/work").unwrap_or_else(|error| panic!("[{runtime}] no answer: {error}"));
    assert!(head.starts_with("http/1.1 200") && body == "done", "{head}");
    // hyper times an idle keep-alive connection's wait with it too (the doc warns).
    let answered = Instant::now();
    assert!(
        closed_within(&mut client, Duration::from_secs(3)),
        "[{runtime}] the idle keep-alive connection outlived hyper's timeout"
    );
    assert!(answered.elapsed() >= Duration::from_millis(250));
    // hyper's 300 ms, not the server's 10 s, closes a head left half-sent.
    let mut half = connect(running.addr);
    half.write_all(b"GET /work HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let sent = Instant::now();
    assert!(
        closed_within(&mut half, Duration::from_secs(3)),
        "[{runtime}] the half-sent head was not closed by hyper's timeout"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let panics: u64 = report.components.iter().map(|c| c.handled_panics).sum();
    assert_eq!(panics, 0, "[{runtime}] {report}");
}

/// At `max_connections`, the next client waits in the listen queue, unanswered, until a
/// connection ends; then it is served.
fn the_connection_limit_holds_the_next_client_until_a_slot_frees(runtime: &'static str) {
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| http.max_connections(2),
    );
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(running.addr)).collect();
    for client in &mut held {
        let (head, _) = get(client, "/work").unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    let mut waiting = connect(running.addr);
    write!(waiting, "GET /work HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let early = waiting.read(&mut [0u8; 64]);
    assert!(
        early.as_ref().is_err_and(timed_out),
        "[{runtime}] a third client was answered over a limit of two: {early:?}"
    );
    drop(held.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (head, body) = read_response(&mut waiting)
        .unwrap_or_else(|error| panic!("[{runtime}] not served once a slot freed: {error}"));
    assert!(head.starts_with("http/1.1 200") && body == "done", "{head}");
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A response is in flight until its body is complete: the stop waits for a streamed
/// body (server-sent events, a download) to end, over HTTP/1.1 and HTTP/2, and the exit
/// is clean. (Counted until its head only, the connection would look idle to the drain,
/// and the body be cut after the first-request grace.)
fn a_streamed_body_is_in_flight_until_complete(runtime: &'static str) {
    const CHUNKS: usize = 8;
    let router = axum::Router::new().route(
        "/stream",
        axum::routing::get(|| async {
            let chunks = futures_util::stream::unfold(0, |sent| async move {
                if sent == CHUNKS {
                    return None;
                }
                if sent > 0 {
                    async_io::Timer::after(Duration::from_millis(150)).await;
                }
                let chunk = Bytes::from(format!("chunk {sent}\n"));
                Some((Ok::<_, std::io::Error>(chunk), sent + 1))
            });
            axum::body::Body::from_stream(chunks)
        }),
    );
    let http = HttpServer::bind("127.0.0.1:0").unwrap().serve(router);
    let addr = http.local_addr();
    let app = App::builder()
        .config(laptop(Duration::ZERO))
        .add(http)
        .build()
        .unwrap();
    let handle = app.handle();
    let app = common::run_in_background(runtime, app);
    // Each client says when its body's first chunk came.
    let (begun, bodies_begun) = std::sync::mpsc::channel();
    let mut h1 = connect(addr);
    write!(h1, "GET /stream HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let h1_begun = begun.clone();
    let h1 = thread::spawn(move || {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        while let Ok(n @ 1..) = h1.read(&mut buffer) {
            let before = String::from_utf8_lossy(&received).contains("chunk 0");
            received.extend_from_slice(&buffer[..n]);
            if !before && String::from_utf8_lossy(&received).contains("chunk 0") {
                h1_begun.send(()).unwrap();
            }
            if received.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    let h2 = thread::spawn(move || {
        ::smol::block_on(async move {
            let (mut sender, _connection) = h2_connect(addr).await;
            let response = sender.send_request(h2_get("/stream")).await?;
            let mut body = response.into_body();
            let mut received = Vec::new();
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                if let Ok(data) = frame?.into_data() {
                    if received.is_empty() {
                        begun.send(()).unwrap();
                    }
                    received.extend_from_slice(&data);
                }
            }
            Ok::<_, hyper::Error>(String::from_utf8_lossy(&received).into_owned())
        })
    });
    for _ in 0..2 {
        bodies_begun
            .recv_timeout(Duration::from_secs(10))
            .expect("a body's first chunk");
    }
    let stopped = Instant::now();
    handle.shutdown();
    let h1 = h1.join().unwrap();
    let h2 = h2.join().unwrap();
    let report = app.join().unwrap();
    let waited = stopped.elapsed();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        h1.matches("chunk ").count() == CHUNKS && h1.ends_with("0\r\n\r\n"),
        "[{runtime}] the HTTP/1.1 body was cut: {h1:?}"
    );
    let h2 = h2.unwrap_or_else(|error| panic!("[{runtime}] the HTTP/2 body failed: {error}"));
    assert_eq!(
        h2.matches("chunk ").count(),
        CHUNKS,
        "[{runtime}] the HTTP/2 body was cut: {h2:?}"
    );
    // Their last chunks came about a second after their first.
    assert!(
        waited >= Duration::from_millis(600),
        "[{runtime}] the stop did not wait for the bodies: {waited:?}"
    );
}

/// An HTTP/2 client speaking raw frames, to see what hyper's client keeps to itself (a
/// GOAWAY and its last stream). It acknowledges the server's SETTINGS and PINGs, as a
/// live client does.
struct RawH2(TcpStream);

/// A frame as read: its type, flags, stream and payload.
type Frame = (u8, u8, u32, Vec<u8>);

const PING: u8 = 6;
const GOAWAY: u8 = 7;

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS.
    fn open(addr: SocketAddr) -> Self {
        let mut raw = RawH2(connect(addr));
        raw.0
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        raw.send(4, 0, 0, &[]);
        raw
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        // The server may have closed: what it sent is still read.
        let _ = self.0.write_all(&frame);
    }

    /// `GET path` on `stream`, its head in one HEADERS frame that ends the stream (HPACK:
    /// `:method GET` and `:scheme http` from the static table, the path and authority as
    /// literals not indexed).
    fn get(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend(path.as_bytes());
        block.extend([0x01, 4]);
        block.extend(b"test");
        self.send(1, 0x5, stream, &block);
    }

    /// The next frame the server sends (a SETTINGS or PING of its acknowledged), or
    /// `None` once it closed the connection. Fails the test when the read times out (the
    /// server neither sends nor closes).
    fn next_frame(&mut self) -> Option<Frame> {
        let mut read = |buffer: &mut [u8]| match self.0.read_exact(buffer) {
            Ok(()) => Some(()),
            Err(error) if timed_out(&error) => panic!("the server sent nothing, nor closed"),
            Err(_) => None,
        };
        let mut head = [0u8; 9];
        read(&mut head)?;
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        read(&mut payload)?;
        match (kind, flags & 1) {
            (4, 0) => self.send(4, 1, 0, &[]),
            (PING, 0) => self.send(PING, 1, 0, &payload),
            _ => {}
        }
        Some((kind, flags, stream, payload))
    }

    /// The frames the server sends until it closes the connection.
    fn frames_until_closed(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.next_frame()).collect()
    }
}

/// Whether `frames` end `stream`'s answer (a DATA frame with END_STREAM).
fn answered(frames: &[Frame], stream: u32) -> bool {
    frames
        .iter()
        .any(|&(kind, flags, id, _)| kind == 0 && flags & 1 == 1 && id == stream)
}

/// The last stream a GOAWAY among `frames` says the server processed, if its error code
/// is NO_ERROR; `None` without a GOAWAY.
fn last_goaway(frames: &[Frame]) -> Option<u32> {
    let (_, _, _, payload) = frames.iter().rev().find(|frame| frame.0 == GOAWAY)?;
    assert_eq!(&payload[4..8], &[0, 0, 0, 0], "a GOAWAY with an error");
    Some(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff)
}

/// An HTTP/2 connection closed for a timeout gets a GOAWAY first, with NO_ERROR and the
/// last stream it processed (what a client needs to know which requests it may retry):
/// a preface-only client at the header read timeout (no stream processed), an idle one
/// at the idle timeout (its stream 1).
fn http2_timeouts_end_with_a_goaway(runtime: &'static str) {
    let header_read = Duration::from_millis(300);
    let idle = Duration::from_millis(1000);
    let running = start_serving(
        runtime,
        laptop(Duration::ZERO),
        Duration::from_secs(3),
        |http| http.header_read_timeout(header_read).idle_timeout(idle),
    );
    let addr = running.addr;
    let preface_only = thread::spawn(move || {
        let began = Instant::now();
        let frames = RawH2::open(addr).frames_until_closed();
        (frames, began.elapsed())
    });
    let idle_client = thread::spawn(move || {
        let began = Instant::now();
        let mut raw = RawH2::open(addr);
        raw.get(1, "/work");
        (raw.frames_until_closed(), began.elapsed())
    });
    let (frames, after) = preface_only.join().unwrap();
    assert_eq!(
        last_goaway(&frames),
        Some(0),
        "[{runtime}] the preface-only client: {frames:?}"
    );
    assert!(
        after >= header_read - Duration::from_millis(50) && after < header_read * 4,
        "[{runtime}] the preface-only client closed after {after:?}"
    );
    let (frames, after) = idle_client.join().unwrap();
    assert!(
        answered(&frames, 1),
        "[{runtime}] stream 1 unanswered: {frames:?}"
    );
    assert_eq!(
        last_goaway(&frames),
        Some(1),
        "[{runtime}] the idle client: {frames:?}"
    );
    assert!(
        after >= idle - Duration::from_millis(50) && after < idle * 3,
        "[{runtime}] the idle client closed after {after:?}"
    );
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// The server's own HTTP/2 keep-alive pings are on by default, every 20 s: a client
/// quiet after its request hears one 20 s on (one that does not answer it is closed:
/// `an_http2_peer_that_does_not_answer_pings_is_closed`, on shorter settings).
fn http2_keep_alive_pings_are_on_by_default_every_20_s(runtime: &'static str) {
    let running = start(runtime, laptop(Duration::ZERO), Duration::from_secs(3));
    let mut raw = RawH2::open(running.addr);
    raw.get(1, "/work");
    let quiet_since = Instant::now();
    raw.0
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while let Some((kind, flags, _, _)) = raw.next_frame() {
        if kind == PING && flags & 1 == 0 {
            let after = quiet_since.elapsed();
            assert!(
                after >= Duration::from_millis(19_500) && after < Duration::from_secs(23),
                "[{runtime}] a ping {after:?} after the client went quiet"
            );
            running.handle.shutdown();
            let report = running.app.join().unwrap();
            assert_eq!(report.exit_code(), 0, "{report}");
            return;
        }
    }
    panic!("[{runtime}] the connection closed before a ping");
}

on_each_runtime!(
    http2_keep_alive_pings_are_on_by_default_every_20_s,
    an_http2_request_over_the_stop_deadline_is_cut_before_db_stops,
    http2_timeouts_end_with_a_goaway,
    a_streamed_body_is_in_flight_until_complete,
    hypers_http1_header_read_timeout_set_through_hyper_works,
    the_connection_limit_holds_the_next_client_until_a_slot_frees,
    a_connection_task_is_about_its_hyper_connection,
    http2_connections_and_the_timeouts,
    preface_only_clients_do_not_starve_the_connection_limit,
    an_http2_peer_that_does_not_answer_pings_is_closed,
    the_default_idle_timeout_outlives_the_header_read_timeout,
    endless_timeouts_are_no_limits,
    the_header_read_and_idle_timeouts_close_slow_silent_and_idle_clients,
    an_upgraded_connection_is_closed_at_the_deadline,
    probes_on_the_same_port,
    http2_gets_goaway_at_the_trigger,
    http2_connections_idle_at_or_opened_after_the_trigger_get_goaway,
    a_malformed_request_gets_400,
    drain_marks_responses_close,
    a_half_sent_request_does_not_fail_the_exit,
    a_just_accepted_connection_gets_its_answer,
    a_request_over_the_stop_deadline_is_cut_before_db_stops,
    byte_dribbling_requests_during_shutdown_exit_cleanly,
);
