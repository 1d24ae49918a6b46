//! The probe server, with a real HTTP client, on both runtimes (real time, generous
//! bounds): endpoints by phase, readiness flipping at the trigger while a slow request
//! on the app completes, probes answering through the whole stop phase.
#![cfg(feature = "http")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{ms, Check, Checked};
use lifecycle::prelude::*;
use lifecycle::{InFlight, ProbeServer};

/// Runs each named `fn(Rt)` on smol and on tokio.
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod smol {
            $( #[test] fn $name() { super::$name(super::Rt::Smol) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio {
            $( #[test] fn $name() { super::$name(super::Rt::Tokio) } )*
        }
    };
}

#[derive(Clone, Copy)]
enum Rt {
    Smol,
    #[cfg(feature = "tokio")]
    Tokio,
}

/// Runs `app` on `rt` in a thread of its own.
fn spawn_app(rt: Rt, app: App) -> JoinHandle<Report> {
    thread::spawn(move || match rt {
        Rt::Smol => app.run().expect("the app runs"),
        #[cfg(feature = "tokio")]
        Rt::Tokio => app.run_tokio().expect("the app runs"),
    })
}

fn probes() -> (ProbeServer, Client) {
    let probes = ProbeServer::bind("127.0.0.1:0").unwrap().details();
    let client = Client::new(probes.local_addr());
    (probes, client)
}

/// A blocking HTTP client: one connection per request, so nothing is pooled across the
/// server's shutdown.
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .max_idle_connections(0)
                .build(),
            base: format!("http://{addr}"),
        }
    }

    fn try_call(&self, method: &str, path: &str) -> Result<(u16, String), Box<ureq::Transport>> {
        let response = match self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .call()
        {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => return Err(Box::new(transport)),
        };
        let status = response.status();
        Ok((status, response.into_string().unwrap()))
    }

    /// GETs `path` and asserts the status and the (trimmed) body.
    fn expect(&self, path: &str, status: u16, body: &str) {
        let (got, text) = self.get(path);
        assert_eq!((got, text.trim()), (status, body), "GET {path}");
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.try_call("GET", path)
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// Polls `path` every 10 ms until `done(status, body)`; panics after 10 s.
    fn wait_for(&self, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get(path);
            if done(status, &body) {
                return (status, body);
            }
            assert!(Instant::now() < give_up, "{path} stayed {status} {body}");
            thread::sleep(ms(10));
        }
    }
}

/// A component whose start, stop and flush take a while.
struct Slow {
    name: &'static str,
    start: Duration,
    stop: Duration,
    flush: Duration,
}

#[async_trait]
impl Component for Slow {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.start).await;
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.stop).await;
        Ok(())
    }
    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.flush).await;
        Ok(())
    }
}

/// Sends `request` on a fresh connection and reads the whole answer (the server closes
/// after it: `Connection: close`).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Every endpoint, by phase: unready while starting, ready when running, 503 once a
/// critical check is down; a hanging check does not block a probe; HEAD, 404, 405 and
/// a malformed request (400) are answered and the server keeps serving; an added
/// endpoint is rendered anew for each request.
fn endpoints_answer_by_phase(rt: Rt) {
    let (probes, client) = probes();
    let scrapes = Arc::new(AtomicUsize::new(0));
    let counter = scrapes.clone();
    let probes = probes.group("core", &["db", "slow"]).endpoint(
        "/metrics",
        "text/plain; version=0.0.4",
        move || {
            format!(
                "scrapes_total {}\n",
                counter.fetch_add(1, Ordering::SeqCst) + 1
            )
        },
    );
    let addr = probes.local_addr();
    let (db, db_health, _) = Checked::new("db", Health::Up);
    let app = App::builder()
        .add(probes)
        .add(db)
        .add_with(
            Checked::failing("stuck", Check::Hang),
            Options::new().critical(false),
        )
        .add(Slow {
            name: "slow",
            start: ms(800),
            stop: ms(0),
            flush: ms(0),
        })
        .config(
            Config::default()
                .health_check_timeout(ms(300))
                .health_cache_ttl(ms(200)),
        )
        .build()
        .unwrap();
    let handle = app.handle();
    let running = spawn_app(rt, app);

    client.expect(
        "/health/ready",
        503,
        r#"{"ready":false,"phase":"starting"}"#,
    );
    client.expect("/health/live", 200, r#"{"live":true,"phase":"starting"}"#);
    client.expect(
        "/health/started",
        503,
        r#"{"started":false,"phase":"starting"}"#,
    );

    client.wait_for("/health/ready", |status, _| status == 200);
    client.expect(
        "/health/started",
        200,
        r#"{"started":true,"phase":"running"}"#,
    );
    thread::sleep(ms(250)); // past the TTL: the next probe runs the checks, one hanging
    let asked = Instant::now();
    let (status, body) = client.get("/health");
    let waited = asked.elapsed();
    assert!(
        waited < ms(1000),
        "a hanging check held the probe for {waited:?}"
    );
    assert_eq!(
        status, 200,
        "a non-critical check down only degrades: {body}"
    );
    assert!(body.starts_with(r#"{"status":"warn""#), "{body}");
    assert!(
        body.contains(r#""stuck":[{"componentId":"stuck","componentType":"component","status":"fail","state":"running","restarts":0,"time":""#),
        "{body}"
    );
    assert!(
        body.contains(r#""output":"health check timed out after 300ms"}]"#),
        "{body}"
    );

    let get = raw(
        addr,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let head = raw(
        addr,
        b"HEAD /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
    let (head_head, head_body) = head.split_once("\r\n\r\n").unwrap();
    assert!(head_head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(head_body, "", "HEAD has no body");
    assert!(!get_body.is_empty());
    let length = |head: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map(str::to_owned)
    };
    assert_eq!(
        length(head_head),
        length(get_head),
        "HEAD announces GET's length"
    );
    // The checks as Kubernetes' /readyz?verbose lists them (with reasons: details are
    // on); one component's health+json; a group over db and slow only.
    let (status, verbose) = client.get("/health/ready?verbose");
    assert_eq!(status, 200, "{verbose}");
    assert!(verbose.contains("[+]phase running\n"), "{verbose}");
    assert!(verbose.contains("[+]db up\n"), "{verbose}");
    assert!(
        verbose.contains("[-]stuck failed: health check timed out after 300ms (not critical)\n"),
        "{verbose}"
    );
    assert!(verbose.ends_with("readiness check passed\n"), "{verbose}");
    let (status, db) = client.get("/health/db");
    assert_eq!(status, 200);
    assert!(
        db.starts_with(r#"{"status":"pass","checks":{"db":[{"componentId":"db""#),
        "{db}"
    );
    assert!(!db.contains("stuck"), "{db}");
    let (status, stuck) = client.get("/health/stuck");
    assert_eq!(status, 503, "{stuck}");
    assert!(stuck.starts_with(r#"{"status":"fail""#), "{stuck}");
    let (status, core) = client.get("/health/core");
    assert_eq!(status, 200, "the group ignores stuck: {core}");
    assert!(
        core.contains(r#""db":["#) && core.contains(r#""slow":["#) && !core.contains("stuck"),
        "{core}"
    );
    assert_eq!(client.get("/health/nobody").0, 404);
    let typed = raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        typed.contains("content-type: application/health+json"),
        "{typed}"
    );
    client.expect("/metrics", 200, "scrapes_total 1");
    client.expect("/metrics", 200, "scrapes_total 2");
    assert_eq!(client.get("/nope").0, 404);
    assert_eq!(client.try_call("POST", "/health/ready").unwrap().0, 405);

    let answer = raw(addr, b"NONSENSE\x01 / \r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        client.get("/health/live").0,
        200,
        "still serving after garbage"
    );

    *db_health.lock().unwrap() = Health::Down("disk full".into());
    client.wait_for("/health/ready", |status, _| status == 503);
    let (status, body) = client.get("/health");
    assert_eq!(status, 503);
    assert!(body.contains(r#""output":"disk full""#), "{body}");
    assert_eq!(client.get("/health/core").0, 503, "the group's db is down");
    assert_eq!(
        client.get("/health/started").0,
        200,
        "started stays started"
    );
    assert_eq!(client.get("/health/live").0, 200, "unready, not dead");

    handle.shutdown();
    let report = running.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the probe server closed its socket"
    );
}

/// The app under test: a plain HTTP/1.1 server on std threads; `GET /work?ms=N` takes N
/// ms and counts in flight. Its stop waits for the work in flight.
struct App1 {
    listener: Option<TcpListener>,
    closing: Arc<AtomicBool>,
    /// How much work was in flight when the stop began.
    in_flight_at_stop: Arc<AtomicUsize>,
}

impl App1 {
    fn bind() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App1 {
            listener: Some(listener),
            closing: Arc::default(),
            in_flight_at_stop: Arc::default(),
        };
        (app, addr)
    }
}

fn serve(stream: TcpStream, in_flight: InFlight) {
    let _guard = in_flight.enter_owned();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let work: u64 = request_line
        .split_once("ms=")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    thread::sleep(ms(work));
    let mut stream = stream;
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone");
}

#[async_trait]
impl Component for App1 {
    fn name(&self) -> &str {
        "app"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let listener = self.listener.take().ok_or("started twice")?;
        let in_flight = ctx.in_flight().clone();
        let closing = self.closing.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
                let in_flight = in_flight.clone();
                thread::spawn(move || serve(stream.unwrap(), in_flight));
            }
        });
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.in_flight_at_stop
            .store(ctx.in_flight().count(), Ordering::SeqCst);
        let idle = ctx.in_flight().wait_idle();
        if ctx
            .runtime()
            .timeout_at(ctx.deadline() - ms(100), idle)
            .await
            .is_err()
        {
            return Err("requests still in flight at the deadline".into());
        }
        self.closing.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// At the trigger, readiness turns 503 at once, long before the drain delay ends; the
/// app keeps serving during the drain; a slow request in flight completes with a 200
/// and the app's stop waits for it.
fn readiness_flips_at_the_trigger_while_a_slow_request_completes(rt: Rt) {
    let (probes, client) = probes();
    let (app_component, app_addr) = App1::bind();
    let in_flight_at_stop = app_component.in_flight_at_stop.clone();
    let app_client = Client::new(app_addr);
    let app = App::builder()
        .add(probes)
        .add(app_component)
        .config(Config::default().drain_delay(ms(1000)))
        .build()
        .unwrap();
    let handle = app.handle();
    let running = spawn_app(rt, app);
    client.wait_for("/health/ready", |status, _| status == 200);

    let slow = thread::spawn(move || {
        let response = app_client.get("/work?ms=1500");
        (response, Instant::now())
    });
    thread::sleep(ms(200)); // the slow request is in flight

    let triggered = Instant::now();
    handle.shutdown();
    let (_, body) = client.wait_for("/health/ready", |status, _| status == 503);
    let unready = triggered.elapsed();
    assert!(
        unready < ms(500),
        "readiness went false {unready:?} after the trigger, not at once"
    );
    assert!(body.contains(r#""phase":"draining""#), "{body}");

    let during_drain = Client::new(app_addr).get("/work?ms=10");
    assert_eq!(
        during_drain,
        (200, "done".to_owned()),
        "serving during the drain"
    );

    let ((status, body), completed) = slow.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
    assert!(
        completed - triggered >= ms(1000),
        "the slow request ended when expected, after the drain"
    );
    let report = running.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let stop = &report.component("app").unwrap().stop;
    assert_eq!(stop.outcome, lifecycle::Outcome::Completed);
    assert_eq!(
        in_flight_at_stop.load(Ordering::SeqCst),
        1,
        "the stop began with the slow request in flight, and waited for it"
    );
}

/// While the components stop and flush, the probes answer: liveness 200 and readiness
/// 503 with the phase, until the probe server itself closes in the last flush.
fn probes_answer_throughout_the_stop_phase(rt: Rt) {
    let (probes, client) = probes();
    let app = App::builder()
        .add(probes)
        .add(Slow {
            name: "db",
            start: ms(0),
            stop: ms(1000),
            flush: ms(1000),
        })
        .build()
        .unwrap();
    let handle = app.handle();
    let running = spawn_app(rt, app);
    client.wait_for("/health/ready", |status, _| status == 200);

    handle.shutdown();
    let (mut stopping, mut flushing) = (0, 0);
    while let Ok((live, body)) = client.try_call("GET", "/health/live") {
        assert_eq!(live, 200, "liveness holds until exit: {body}");
        flushing += usize::from(body.contains("flushing"));
        if body.contains("stopping") {
            stopping += 1;
            if let Ok((ready, body)) = client.try_call("GET", "/health/ready") {
                assert_eq!(ready, 503, "{body}");
            }
        }
        thread::sleep(ms(20));
    }
    assert!(
        stopping >= 10 && flushing >= 10,
        "only {stopping} probes answered during the 1 s stop phase, {flushing} during the 1 s flush"
    );
    let report = running.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A component whose health check blocks the engine's thread once asked to.
struct Blocking {
    block: Arc<AtomicBool>,
}

#[async_trait]
impl Component for Blocking {
    fn name(&self) -> &str {
        "blocking"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn health(&self) -> Health {
        if self.block.swap(false, Ordering::SeqCst) {
            thread::sleep(ms(1500)); // the bug liveness exists to catch
        }
        Health::Up
    }
}

/// A health check that blocks the engine's thread makes the app not live (and not
/// ready) until the engine answers again; the probes themselves never block.
fn a_blocked_engine_is_not_live(rt: Rt) {
    let (probes, client) = probes();
    let block = Arc::new(AtomicBool::new(false));
    let app = App::builder()
        .add(probes)
        .add(Blocking {
            block: block.clone(),
        })
        .config(
            Config::default()
                .health_check_timeout(ms(200))
                .health_cache_ttl(ms(0)),
        )
        .build()
        .unwrap();
    let handle = app.handle();
    let running = spawn_app(rt, app);
    client.wait_for("/health/ready", |status, _| status == 200);

    block.store(true, Ordering::SeqCst);
    let asked = Instant::now();
    client.expect("/health/ready", 503, r#"{"ready":false,"phase":"running"}"#);
    let waited = asked.elapsed();
    assert!(waited < ms(1200), "the probe waited {waited:?}");
    client.expect("/health/live", 503, r#"{"live":false,"phase":"running"}"#);

    client.wait_for("/health/ready", |status, _| status == 200);
    assert_eq!(
        client.get("/health/live").0,
        200,
        "live again once the engine answers"
    );
    handle.shutdown();
    assert_eq!(running.join().unwrap().exit_code(), 0);
}

/// The probe server is served as `HttpServer` is: HTTP/2 (h2c) as well as HTTP/1.1, on
/// the same port, probes and endpoints alike, until its flush.
fn probes_answer_over_http2(rt: Rt) {
    let (probes, _) = probes();
    let probes = probes.endpoint("/metrics", "text/plain", || "up 1\n".to_owned());
    let addr = probes.local_addr();
    let app = App::builder().add(probes).build().unwrap();
    let handle = app.handle();
    let app = spawn_app(rt, app);
    ::smol::block_on(async move {
        let (mut client, _connection) = common::h2_connect(addr).await;
        for (path, status) in [("/health/live", 200), ("/metrics", 200), ("/nothing", 404)] {
            let response = client.send_request(common::h2_get(path)).await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            assert_eq!(response.version(), hyper::Version::HTTP_2);
        }
    });
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

on_both_runtimes!(
    probes_answer_over_http2,
    a_blocked_engine_is_not_live,
    endpoints_answer_by_phase,
    readiness_flips_at_the_trigger_while_a_slow_request_completes,
    probes_answer_throughout_the_stop_phase,
);
