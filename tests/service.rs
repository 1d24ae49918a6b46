//! End to end: the `service` example as a child process on each runtime, real HTTP
//! clients on keep-alive connections, a real SIGTERM. Nothing accepted may be lost:
//! every request the server read gets a complete 200, the rows in SQLite equal the 200s,
//! idle keep-alive connections do not hold the stop, and the log file and the metrics
//! snapshot written at flush hold the report and the drain's counts.
#![cfg(all(unix, feature = "http", any(feature = "smol", feature = "tokio")))]

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::child::{runtimes, Process};
use futures_rustls::rustls::pki_types::CertificateDer;

/// The service with its data in a fresh directory, removed at the end.
struct Service {
    process: Process,
    app: SocketAddr,
    probes: SocketAddr,
    data: PathBuf,
}

impl Service {
    fn start(runtime: &str, flags: &[&str]) -> Service {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let data = std::env::temp_dir().join(format!(
            "lifecycle-service-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&data);
        let data_dir = data.to_str().expect("a UTF-8 temp dir").to_owned();
        let mut args = vec![
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ];
        args.extend_from_slice(flags);
        let mut process = Process::spawn("service", runtime, &args, &[]);
        let line = process.wait_for_line("probe server listening", |l| {
            l.contains("probe server listening")
        });
        let probes = address_in(&line);
        let line = process.wait_for_line("http listening", |l| l.contains("http listening"));
        let app = address_in(&line);
        process.wait_for_line("running", |l| l.contains("lifecycle_core::engine: running"));
        Service {
            process,
            app,
            probes,
            data,
        }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(name))
            .unwrap_or_else(|e| self.process.fail(&format!("reading {name}: {e}")))
    }

    /// Rows in the `work` table, read from the database file after the exit.
    fn rows(&self) -> i64 {
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
        let path = self.data.join("service.db");
        ::smol::block_on(async {
            let pool = SqlitePoolOptions::new()
                .connect_with(SqliteConnectOptions::new().filename(&path).read_only(true))
                .await
                .expect("opening the service's database");
            let rows = sqlx::query_scalar("SELECT COUNT(*) FROM work")
                .fetch_one(&pool)
                .await
                .expect("counting rows");
            pool.close().await;
            rows
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The address after `addr=` in a log line.
fn address_in(line: &str) -> SocketAddr {
    let (_, rest) = line.split_once("addr=").expect("a line with addr=");
    rest.split_whitespace()
        .next()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A complete HTTP/1.1 response.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The `Connection: close` header was present.
    close: bool,
    body: String,
}

/// What became of a request.
#[derive(Debug)]
enum Answer {
    Complete(Response),
    /// The connection was closed before a byte of the answer: the server never read the
    /// request (a connection it had closed, or one still in its backlog when the
    /// listener closed). A client retries these.
    NotAccepted,
}

/// One keep-alive connection, spoken to by hand so every byte is accounted for.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` and reads the answer. `Err` is a broken answer: a hang (the read
    /// timeout) or a connection closed halfway.
    fn get(&mut self, path: &str) -> io::Result<Answer> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        if self.reader.get_mut().write_all(request.as_bytes()).is_err() {
            return Ok(Answer::NotAccepted);
        }
        let mut status_line = String::new();
        match self.reader.read_line(&mut status_line) {
            Ok(0) => return Ok(Answer::NotAccepted),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Answer::NotAccepted),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let (mut length, mut close) = (0, false);
        loop {
            let mut header = String::new();
            if self.reader.read_line(&mut header)? == 0 {
                return Err(io::Error::other("closed in the middle of the headers"));
            }
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse().map_err(io::Error::other)?;
            }
            if header == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Answer::Complete(Response {
            status,
            close,
            body: String::from_utf8_lossy(&body).into_owned(),
        }))
    }

    /// Whether the server closes this (idle) connection within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        let stream = self.reader.get_mut();
        stream.set_read_timeout(Some(within)).unwrap();
        let mut byte = [0];
        matches!(stream.read(&mut byte), Ok(0))
            || matches!(stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}

/// What one load client saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    not_accepted: usize,
    failures: Vec<String>,
}

/// A client on keep-alive connections, mixing fast and slow work, until the server
/// refuses connections. It opens a new connection when the server says
/// `Connection: close`.
fn load_client(addr: SocketAddr, id: usize, refused: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut connection = None;
    for n in 0.. {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(addr) {
                Ok(conn) => connection.insert(conn),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused.store(true, Ordering::SeqCst);
                    return tally;
                }
                Err(e) => {
                    tally.failures.push(format!("connect: {e}"));
                    return tally;
                }
            },
        };
        // One request in four is slow (300-800 ms), so some are in flight at the stop.
        let ms = if (n + id) % 4 == 0 {
            300 + (n * 37 + id * 101) % 500
        } else {
            5
        };
        match conn.get(&format!("/work?ms={ms}")) {
            Ok(Answer::Complete(response))
                if response.status == 200 && response.body.contains(r#""id":"#) =>
            {
                tally.ok += 1;
                if response.close {
                    connection = None;
                }
            }
            Ok(Answer::Complete(response)) => {
                tally.failures.push(format!("ms={ms}: {response:?}"));
                connection = None;
            }
            Ok(Answer::NotAccepted) => {
                tally.not_accepted += 1;
                connection = None;
            }
            Err(e) => {
                tally.failures.push(format!("ms={ms}: broken answer: {e}"));
                connection = None;
            }
        }
    }
    tally
}

/// `n` load clients (`client`, each with its id) on `addr`, until the server refuses
/// connections; the flag says whether one saw the refusal.
fn spawn_clients<T: Send + 'static>(
    addr: SocketAddr,
    n: usize,
    client: fn(SocketAddr, usize, Arc<AtomicBool>) -> T,
) -> (Arc<AtomicBool>, Vec<thread::JoinHandle<T>>) {
    let refused = Arc::new(AtomicBool::new(false));
    let clients = (0..n)
        .map(|id| {
            let refused = refused.clone();
            thread::spawn(move || client(addr, id, refused))
        })
        .collect();
    (refused, clients)
}

/// The value of the metric line starting with `series ` in a Prometheus text snapshot.
fn metric(snapshot: &str, series: &str) -> Option<f64> {
    snapshot.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scenarios 1 and 4 of the issue: SIGTERM under load from keep-alive clients.
fn sigterm_under_load_loses_nothing(runtime: &str) {
    const CLIENTS: usize = 12;
    let budget = Duration::from_secs(10);
    let mut service = Service::start(
        runtime,
        &["--drain-delay", "1s", "--shutdown-timeout", "10s"],
    );
    let (refused, clients) = spawn_clients(service.app, CLIENTS, load_client);
    thread::sleep(Duration::from_millis(1000));
    // The scrape shows the lifecycle's metrics while it serves.
    let scrape = get(service.probes, "/metrics").body;
    for series in [
        r#"lifecycle_health_status{component="db",status="up"} 1"#,
        r#"lifecycle_hook_duration_seconds_count{component="http",hook="start",outcome="completed"} 1"#,
    ] {
        assert!(scrape.contains(series), "[{runtime}] {series}:\n{scrape}");
    }
    assert!(
        scrape.contains(r#"lifecycle_http_requests_in_flight{component="http"}"#),
        "[{runtime}] {scrape}"
    );
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let took = exited - signalled;
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    assert!(
        took < budget,
        "[{runtime}] exited {took:?} after SIGTERM, over its budget"
    );
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    assert!(
        failures.is_empty(),
        "[{runtime}] requests broken or refused: {failures:#?}"
    );
    let ok: usize = tallies.iter().map(|t| t.ok).sum();
    let not_accepted: usize = tallies.iter().map(|t| t.not_accepted).sum();
    eprintln!(
        "[{runtime}] {ok} requests answered 200, {not_accepted} not accepted; exit {took:?} after SIGTERM"
    );
    assert!(
        ok > CLIENTS * 5,
        "[{runtime}] only {ok} requests went through"
    );
    assert!(
        refused.load(Ordering::SeqCst),
        "the clients ended on a refused connection"
    );
    assert_eq!(
        service.rows(),
        ok as i64,
        "[{runtime}] rows in the database vs 200s counted by the clients ({not_accepted} not accepted)"
    );

    let log = service.file("service.log");
    assert!(
        log.contains("shutdown by SIGTERM: exit code 0"),
        "[{runtime}] the log file ends without the report:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("http ") && l.contains("ok")),
        "[{runtime}] the report's table is not in the log file:\n{log}"
    );
    let snapshot = service.file("metrics.prom");
    let received = metric(&snapshot, r#"http_requests_received_total{path="/work"}"#);
    assert_eq!(
        received,
        Some(ok as f64),
        "[{runtime}] requests the server read vs complete 200s the clients got; final snapshot:\n{snapshot}"
    );
    let served = metric(
        &snapshot,
        r#"http_requests_total{path="/work",status="200"}"#,
    );
    assert_eq!(
        served,
        Some(ok as f64),
        "[{runtime}] final snapshot:\n{snapshot}"
    );
    let drained = metric(
        &snapshot,
        r#"http_requests_during_shutdown_total{path="/work"}"#,
    );
    assert!(
        drained.is_some_and(|n| n >= 1.0),
        "[{runtime}] the snapshot lacks the requests served while draining:\n{snapshot}"
    );
    // The lifecycle's own metrics, the shutdown's included: the flush wrote them.
    for series in [
        r#"lifecycle_hook_duration_seconds_count{component="db",hook="start",outcome="completed"}"#,
        r#"lifecycle_hook_duration_seconds_count{component="db",hook="stop",outcome="completed"}"#,
        r#"lifecycle_health_status{component="db",status="up"}"#,
    ] {
        assert_eq!(
            metric(&snapshot, series),
            Some(1.0),
            "[{runtime}] {series}:\n{snapshot}"
        );
    }
    let shutdown = metric(
        &snapshot,
        r#"lifecycle_shutdown_duration_seconds{outcome="clean"}"#,
    );
    assert!(
        // Within the default budget (25 s).
        shutdown.is_some_and(|took| took > 0.0 && took < 25.0),
        "[{runtime}] the shutdown's duration:\n{snapshot}"
    );
}

/// hyper's I/O that notes whether the server ever sent a byte. An HTTP/2 server sends
/// its SETTINGS as soon as it accepts a connection, before it reads any stream: a
/// connection that heard nothing was never accepted (it was in the listen backlog when
/// the listener closed), so none of its requests reached a handler.
struct Heard<T> {
    io: T,
    heard: Arc<AtomicBool>,
    scratch: Box<[u8]>,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Heard<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining().min(this.scratch.len());
        let mut read = hyper::rt::ReadBuf::new(&mut this.scratch[..room]);
        std::task::ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, read.unfilled()))?;
        if !read.filled().is_empty() {
            this.heard.store(true, Ordering::SeqCst);
        }
        buf.put_slice(read.filled());
        std::task::Poll::Ready(Ok(()))
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Heard<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What one HTTP/2 load client saw, with why each refused request was refused.
#[derive(Debug, Default)]
struct H2Tally {
    tally: Tally,
    refusals: std::collections::BTreeMap<&'static str, usize>,
    connections: usize,
}

/// Why a failed HTTP/2 request never reached a handler, or `None` when the server had
/// accepted it (then its answer was lost: a failure).
///
/// hyper says when the request never left the client (it hands the request back:
/// `unsent`, or `is_canceled`, when the connection had ended on the server's GOAWAY
/// before the request was written). Otherwise the cause is h2's error, hyper's source:
/// - a GOAWAY with NO_ERROR received from the server: h2 fails with it only the streams
///   above the GOAWAY's last stream id (the server declares it never processed them)
///   and requests opened after it (never sent); streams at or below it go on;
/// - a REFUSED_STREAM reset from the server: by definition, refused before any
///   processing;
/// - any error on a connection the server never spoke on (see [`Heard`]).
///
/// A stream cut by the connection's end (h2's "broken pipe"), any other reset or
/// GOAWAY reason, a timeout, is a request the server may have accepted: a failure.
fn h2_refusal(unsent: bool, error: &hyper::Error, heard: bool) -> Option<&'static str> {
    if unsent || error.is_canceled() {
        return Some("never sent: the connection had ended (GOAWAY)");
    }
    let h2 = std::error::Error::source(error).and_then(|source| source.downcast_ref::<h2::Error>());
    if let Some(h2) = h2.filter(|h2| h2.is_remote()) {
        if h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR) {
            return Some("GOAWAY (NO_ERROR): above its last stream id, or opened after it");
        }
        if h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Some("REFUSED_STREAM");
        }
    }
    (!heard).then_some("on a connection the server never accepted")
}

/// How many requests an HTTP/2 load client keeps in flight on its connection.
const H2_STREAMS: usize = 4;

/// A client on HTTP/2 connections (h2c, prior knowledge), [`H2_STREAMS`] concurrent
/// streams on each, mixing fast and slow work as [`load_client`] does, until the server
/// refuses connections. It opens a new connection when the server's GOAWAY ends the
/// current one.
fn h2_load_client(addr: SocketAddr, id: usize, refused: Arc<AtomicBool>) -> H2Tally {
    use hyper::client::conn::http2;
    ::smol::block_on(async move {
        let mut tally = H2Tally::default();
        let give_up = Instant::now() + common::child::PATIENCE;
        while Instant::now() < give_up {
            let stream = match lifecycle::net::Stream::connect(addr).await {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused.store(true, Ordering::SeqCst);
                    return tally;
                }
                Err(e) => {
                    tally.tally.failures.push(format!("connect: {e}"));
                    return tally;
                }
            };
            tally.connections += 1;
            let heard = Arc::new(AtomicBool::new(false));
            let io = Heard {
                io: stream.into_hyper(),
                heard: heard.clone(),
                scratch: vec![0; 16 * 1024].into_boxed_slice(),
            };
            let (sender, connection) = match http2::handshake(common::SmolExecutor, io).await {
                Ok(handshake) => handshake,
                // Nothing was sent: the next connect tells whether the server is gone.
                Err(_) if !heard.load(Ordering::SeqCst) => continue,
                Err(e) => {
                    tally.tally.failures.push(format!("handshake: {e}"));
                    return tally;
                }
            };
            let connection = ::smol::spawn(connection);
            let streams = (0..H2_STREAMS).map(|s| {
                let (mut sender, heard) = (sender.clone(), heard.clone());
                async move {
                    let mut tally = H2Tally::default();
                    for n in (s..).step_by(H2_STREAMS) {
                        if sender.ready().await.is_err() {
                            break; // the connection ended (its GOAWAY): reconnect
                        }
                        // One stream in four does slow work (300-800 ms), so some
                        // requests are in flight at the stop.
                        let ms = if (n + id) % 4 == 0 {
                            300 + (n * 37 + id * 101) % 500
                        } else {
                            5
                        };
                        let request = hyper::Request::builder()
                            .uri(format!("http://test/work?ms={ms}"))
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .unwrap();
                        let response = match sender.try_send_request(request).await {
                            Ok(response) => response,
                            Err(mut e) => {
                                let unsent = e.take_message().is_some();
                                let error = e.into_error();
                                match h2_refusal(unsent, &error, heard.load(Ordering::SeqCst)) {
                                    Some(why) => {
                                        tally.tally.not_accepted += 1;
                                        *tally.refusals.entry(why).or_default() += 1;
                                    }
                                    None => tally
                                        .tally
                                        .failures
                                        .push(format!("ms={ms}: {error} ({error:?})")),
                                }
                                break;
                            }
                        };
                        let status = response.status();
                        match http_body_util::BodyExt::collect(response.into_body()).await {
                            Ok(body) => {
                                let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                                if status == 200 && body.contains(r#""id":"#) {
                                    tally.tally.ok += 1;
                                } else {
                                    tally
                                        .tally
                                        .failures
                                        .push(format!("ms={ms}: {status} {body}"));
                                    break;
                                }
                            }
                            Err(e) => {
                                tally.tally.failures.push(format!(
                                    "ms={ms}: the body of a {status} was cut: {e} ({e:?})"
                                ));
                                break;
                            }
                        }
                    }
                    tally
                }
            });
            for stream in futures_util::future::join_all(streams).await {
                tally.tally.ok += stream.tally.ok;
                tally.tally.not_accepted += stream.tally.not_accepted;
                tally.tally.failures.extend(stream.tally.failures);
                for (why, n) in stream.refusals {
                    *tally.refusals.entry(why).or_default() += n;
                }
            }
            drop(sender);
            drop(connection); // every request on it has ended
        }
        tally
            .tally
            .failures
            .push(format!("still sending after {:?}", common::child::PATIENCE));
        tally
    })
}

/// Scenario 1 over HTTP/2: SIGTERM under load from h2c clients, several streams at once
/// on each connection. The GOAWAY sends them away; a request refused before a handler
/// saw it (above the GOAWAY's last stream id, after it, `REFUSED_STREAM`, or on a new
/// connection after the listener closed) is not accepted, which is fine; every request
/// the server accepted gets its complete 200, so the rows equal the 200s.
fn sigterm_under_h2_load_loses_nothing(runtime: &str) {
    const CLIENTS: usize = 4;
    let budget = Duration::from_secs(10);
    let mut service = Service::start(
        runtime,
        &["--drain-delay", "1s", "--shutdown-timeout", "10s"],
    );
    let (refused, clients) = spawn_clients(service.app, CLIENTS, h2_load_client);
    thread::sleep(Duration::from_millis(1000));
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    let tallies: Vec<H2Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let took = exited - signalled;
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    assert!(
        took < budget,
        "[{runtime}] exited {took:?} after SIGTERM, over its budget"
    );
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.tally.failures).collect();
    if !failures.is_empty() {
        service.process.fail(&format!(
            "[{runtime}] HTTP/2 requests broken after the server accepted them: {failures:#?}"
        ));
    }
    let ok: usize = tallies.iter().map(|t| t.tally.ok).sum();
    let not_accepted: usize = tallies.iter().map(|t| t.tally.not_accepted).sum();
    let connections: usize = tallies.iter().map(|t| t.connections).sum();
    let mut refusals = std::collections::BTreeMap::new();
    for (why, n) in tallies.iter().flat_map(|t| &t.refusals) {
        *refusals.entry(*why).or_insert(0) += n;
    }
    eprintln!(
        "[{runtime}] HTTP/2: {ok} requests answered 200, {not_accepted} not accepted {refusals:?}, \
         {connections} connections; exit {took:?} after SIGTERM"
    );
    assert!(
        ok > CLIENTS * H2_STREAMS * 5,
        "[{runtime}] only {ok} requests went through"
    );
    assert!(
        refused.load(Ordering::SeqCst),
        "[{runtime}] the clients ended on a refused connection"
    );
    assert_eq!(
        service.rows(),
        ok as i64,
        "[{runtime}] rows in the database vs 200s counted by the HTTP/2 clients ({not_accepted} not accepted)"
    );
    let snapshot = service.file("metrics.prom");
    assert_eq!(
        metric(&snapshot, r#"http_requests_received_total{path="/work"}"#),
        Some(ok as f64),
        "[{runtime}] requests the server read vs complete 200s the clients got; final snapshot:\n{snapshot}"
    );
}

/// Scenario 2: an idle keep-alive connection is closed at once when the stop begins,
/// while a slow request on another connection completes; a request sent on a keep-alive
/// connection while draining is answered with `Connection: close`.
fn keep_alive_connections_do_not_hold_the_stop(runtime: &str) {
    let drain = Duration::from_millis(1500);
    let mut service = Service::start(runtime, &["--drain-delay", "1500ms"]);
    let keep_alive = |conn: &mut Connection| match conn.get("/work?ms=0").unwrap() {
        Answer::Complete(r) if r.status == 200 && !r.close => {}
        other => panic!("[{runtime}] a keep-alive request got {other:?}"),
    };
    let mut idle = Connection::open(service.app).unwrap();
    keep_alive(&mut idle);
    let mut reused = Connection::open(service.app).unwrap();
    keep_alive(&mut reused);
    let addr = service.app;
    let slow = thread::spawn(move || {
        let mut conn = Connection::open(addr).unwrap();
        let answer = conn.get("/work?ms=3000");
        (answer, Instant::now())
    });
    thread::sleep(Duration::from_millis(200)); // the slow request is in flight
    service.process.signal("TERM");
    let signalled = Instant::now();

    thread::sleep(Duration::from_millis(300)); // draining
    match reused.get("/work?ms=10").unwrap() {
        Answer::Complete(r) if r.status == 200 && r.close => {}
        other => service.process.fail(&format!(
            "a request while draining should get a 200 with Connection: close, got {other:?}"
        )),
    }
    assert!(
        reused.closed_within(Duration::from_secs(2)),
        "[{runtime}] the server kept the connection after Connection: close"
    );
    assert!(
        idle.closed_within(drain + Duration::from_secs(1)),
        "[{runtime}] the idle keep-alive connection was not closed when the stop began"
    );
    let idle_closed = Instant::now();
    let (answer, slow_done) = slow.join().unwrap();
    match answer {
        Ok(Answer::Complete(r)) if r.status == 200 && r.close => {}
        other => service.process.fail(&format!(
            "the slow request should complete with Connection: close, got {other:?}"
        )),
    }
    assert!(
        idle_closed < slow_done,
        "[{runtime}] the idle connection was closed only after the slow request ended"
    );
    assert!(
        idle_closed - signalled >= drain - Duration::from_millis(100),
        "[{runtime}] the idle connection was closed during the drain, before the stop"
    );
    let (status, _) = service.process.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
}

/// A request still running at the app's stop deadline is cut: its connection is closed,
/// the stop is reported failed (exit code 1), and the process exits at the deadline
/// instead of waiting for the request.
fn a_request_over_the_stop_deadline_is_cut(runtime: &str) {
    let mut service = Service::start(runtime, &["--stop-timeout", "1s"]);
    let addr = service.app;
    let slow = thread::spawn(move || Connection::open(addr).unwrap().get("/work?ms=10000"));
    thread::sleep(Duration::from_millis(300)); // in flight
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    let took = exited - signalled;
    assert_eq!(status.code(), Some(1), "[{runtime}] {status}");
    assert!(
        took < Duration::from_secs(4),
        "[{runtime}] exited {took:?} after SIGTERM"
    );
    let answer = slow.join().unwrap();
    assert!(
        !matches!(answer, Ok(Answer::Complete(_))),
        "[{runtime}] the 10 s request was answered: {answer:?}"
    );
    if !service
        .process
        .stdout
        .iter()
        .any(|l| l.contains("stop of http failed: 1 requests still running at the stop deadline"))
    {
        service
            .process
            .fail("no line saying the stop of http cut a request");
    }
}

/// `GET path` on a new connection; the complete answer.
fn get(addr: SocketAddr, path: &str) -> Response {
    match Connection::open(addr).and_then(|mut conn| conn.get(path)) {
        Ok(Answer::Complete(response)) => response,
        other => panic!("GET {path} on {addr}: {other:?}"),
    }
}

/// A real Redis server on a free port, killed when dropped; `None` when `redis-server`
/// is not installed and `LIFECYCLE_REQUIRE_REDIS` is not set (`.ci/run` installs it
/// and sets it, so there the test cannot be skipped).
struct Redis {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("LIFECYCLE_REQUIRE_REDIS").is_none() => {
                eprintln!("SKIPPED: redis-server cannot be run ({e}); install it to test --redis");
                return None;
            }
            Err(e) => panic!("LIFECYCLE_REQUIRE_REDIS is set, but redis-server cannot be run: {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = Redis { child, addr };
        let give_up = Instant::now() + Duration::from_secs(10);
        while redis.command("PING") != "+PONG" {
            assert!(
                Instant::now() < give_up,
                "redis-server did not answer on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// Sends an inline command; the reply's first line, and the next for a bulk string
    /// (`"$1 7"`); empty when Redis cannot be reached.
    fn command(&self, command: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(self.addr) else {
            return String::new();
        };
        let _ = write!(stream, "{command}\r\n");
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let mut reply = first.trim_end().to_owned();
        if reply.starts_with('$') && reply != "$-1" {
            let mut value = String::new();
            let _ = reader.read_line(&mut value);
            reply = format!("{reply} {}", value.trim_end());
        }
        reply
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `--redis`, the cache is a real Redis server. When Redis dies the app is
/// degraded, not unready (the cache is not critical), `/stats` answers from the
/// database, and the shutdown is still clean.
fn redis_cache_degrades_without_taking_readiness(runtime: &str) {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let url = format!("redis://{}", redis.addr);
    let mut service = Service::start(runtime, &["--redis", &url]);
    assert_eq!(get(service.app, "/work?ms=0").status, 200);
    assert!(get(service.app, "/stats")
        .body
        .contains(r#""rows":1,"cached":false"#));
    assert!(get(service.app, "/stats")
        .body
        .contains(r#""rows":1,"cached":true"#));
    assert_eq!(
        redis.command("GET rows"),
        "$1 1",
        "the count is cached in Redis"
    );

    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let stats = get(service.app, "/stats");
    assert_eq!(stats.status, 200, "{stats:?}");
    assert!(
        stats.body.contains(r#""rows":1,"cached":false"#),
        "{stats:?}"
    );
    thread::sleep(Duration::from_millis(1100)); // past the health cache TTL
    let health = get(service.probes, "/health");
    assert!(
        health.body.starts_with(r#"{"status":"warn""#)
            && health.body.contains(
                r#""cache":[{"componentId":"cache","componentType":"component","status":"fail","state":"running""#
            ),
        "[{runtime}] /health without Redis: {}",
        health.body
    );
    assert_eq!(
        get(service.probes, "/health/ready").status,
        200,
        "degraded is still ready"
    );

    service.process.signal("TERM");
    let (status, _) = service.process.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
}

/// Bad flags and variables are refused before anything is acquired (no data dir, no
/// port), naming what is wrong.
/// A settings file for the service, removed at the end.
struct SettingsFile(PathBuf);

impl SettingsFile {
    fn new(runtime: &str) -> SettingsFile {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        SettingsFile(std::env::temp_dir().join(format!(
            "lifecycle-settings-{runtime}-{}-{}.json",
            std::process::id(),
            FILES.fetch_add(1, Ordering::SeqCst)
        )))
    }

    fn write(&self, json: &str) {
        // Written aside and renamed: a reload never reads half a file.
        let partial = self.0.with_extension("partial");
        std::fs::write(&partial, json).unwrap();
        std::fs::rename(&partial, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SettingsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reload under load: 20 SIGHUPs, each after a change of the settings file, while
/// keep-alive clients work: not one request fails, and each reload applies (the log
/// filter, the stats TTL). A file that does not parse fails the reload, naming the key;
/// the service keeps serving with the settings it had, `/health` says so, and the next
/// good file applies.
fn sighup_reloads_the_settings_under_load(runtime: &str) {
    const CLIENTS: usize = 8;
    let settings = SettingsFile::new(runtime);
    settings.write(r#"{"log": "info", "stats_ttl": "1s"}"#);
    let mut service = Service::start(
        runtime,
        &["--config", settings.path(), "--shutdown-timeout", "10s"],
    );
    let (refused, clients) = spawn_clients(service.app, CLIENTS, load_client);
    thread::sleep(Duration::from_millis(300));
    for n in 1..=20 {
        // Every other file lets the engine's debug lines through: the filter applies.
        let log = if n % 2 == 0 {
            "info,lifecycle_core::engine=debug"
        } else {
            "info"
        };
        settings.write(&format!(r#"{{"log": "{log}", "stats_ttl": "{n}s"}}"#));
        service.process.signal("HUP");
        let applied = service
            .process
            .wait_for_line("the filter applied", |l| l.contains("log filter applied"));
        assert_eq!(
            applied.contains("lifecycle_core::engine=debug"),
            n % 2 == 0,
            "[{runtime}] reload {n}: {applied}"
        );
        let report = service
            .process
            .wait_for_line("the reload's report", |l| l.contains("reload by SIGHUP"));
        assert!(
            report.contains("reload by SIGHUP: ok"),
            "[{runtime}] reload {n}: {report}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The last file let the debug lines through: the next reload shows its steps.
    settings.write(r#"{"log": "info,lifecycle_core::engine=debug", "stats_ttl": "soon"}"#);
    service.process.signal("HUP");
    let failed = service
        .process
        .wait_for_line("the failed reload", |l| l.contains("reload by SIGHUP"));
    assert!(
        failed.contains("reload by SIGHUP: incomplete")
            && failed.contains(r#"reload of settings failed"#)
            && failed.contains("stats_ttl")
            && failed.contains("reload of logs skipped")
            && failed.contains("reload of cache skipped"),
        "[{runtime}] {failed}"
    );
    let health = get(service.probes, "/health");
    assert_eq!(health.status, 200, "[{runtime}] still serving: {health:?}");
    assert!(
        health.body.contains(r#""complete":false"#) && health.body.contains("stats_ttl"),
        "[{runtime}] /health names the failed reload: {}",
        health.body
    );
    // The clients never noticed.
    thread::sleep(Duration::from_millis(300));
    settings.write(r#"{"log": "info", "stats_ttl": "1h"}"#);
    service.process.signal("HUP");
    let report = service
        .process
        .wait_for_line("the good reload", |l| l.contains("reload by SIGHUP"));
    assert!(
        report.contains("reload by SIGHUP: ok"),
        "[{runtime}] {report}"
    );
    assert!(
        get(service.probes, "/health")
            .body
            .contains(r#""complete":true"#),
        "[{runtime}] /health shows the good reload"
    );

    service.process.signal("TERM");
    let (status, _) = service.process.wait_for_exit();
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    assert!(
        failures.is_empty(),
        "[{runtime}] requests failed during the reloads: {failures:#?}"
    );
    let ok: usize = tallies.iter().map(|t| t.ok).sum();
    eprintln!("[{runtime}] {ok} requests answered 200 across 22 reloads");
    assert!(
        ok > CLIENTS * 10,
        "[{runtime}] only {ok} requests went through"
    );
    assert!(
        refused.load(Ordering::SeqCst),
        "[{runtime}] the clients ended on a refused connection"
    );
    let log = service.file("service.log");
    let listed = log
        .lines()
        .filter(|l| l.starts_with("  reload by SIGHUP"))
        .count();
    assert_eq!(
        listed, 22,
        "[{runtime}] the report lists the reloads:\n{log}"
    );
}

/// The stats TTL of the settings applies on reload: with `1s` a cached count has expired
/// a second later, with `1h` it is still served.
fn a_reloaded_ttl_applies(runtime: &str) {
    let settings = SettingsFile::new(runtime);
    settings.write(r#"{"stats_ttl": "1s"}"#);
    let mut service = Service::start(runtime, &["--config", settings.path()]);
    let cached_a_second_later = |service: &Service| {
        assert!(get(service.app, "/stats")
            .body
            .contains(r#""cached":false"#));
        thread::sleep(Duration::from_millis(1200));
        get(service.app, "/stats").body.contains(r#""cached":true"#)
    };
    assert!(!cached_a_second_later(&service), "[{runtime}] 1 s: expired");
    settings.write(r#"{"stats_ttl": "1h"}"#);
    service.process.signal("HUP");
    service
        .process
        .wait_for_line("the reload", |l| l.contains("reload by SIGHUP: ok"));
    thread::sleep(Duration::from_millis(1200)); // the 1 s entry expires
    assert!(
        cached_a_second_later(&service),
        "[{runtime}] 1 h: still cached"
    );
    service.process.signal("TERM");
    assert_eq!(service.process.wait_for_exit().0.code(), Some(0));
}

/// A SIGHUP to a service started with SIGHUP ignored (`nohup`) is ignored: no reload, no
/// death; SIGTERM right after a SIGHUP (in the middle of its reload, or just after)
/// still stops it cleanly within its budget.
fn sighup_under_nohup_is_ignored_and_sigterm_wins(runtime: &str) {
    let settings = SettingsFile::new(runtime);
    settings.write(r#"{"stats_ttl": "1s"}"#);
    let data =
        std::env::temp_dir().join(format!("lifecycle-nohup-{runtime}-{}", std::process::id()));
    let data_dir = data.to_str().unwrap().to_owned();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--config",
        settings.path(),
    ];
    let mut process = Process::spawn_wrapped(&["nohup"], "service", runtime, &args, &[]);
    process.wait_for_line("running", |l| l.contains("lifecycle_core::engine: running"));
    process.signal("HUP");
    thread::sleep(Duration::from_millis(500));
    assert!(
        process.is_running(),
        "[{runtime}] SIGHUP under nohup killed it"
    );
    process.signal("TERM");
    let (status, _) = process.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    let log = std::fs::read_to_string(data.join("service.log")).unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        log.contains("SIGHUP was ignored when the process started"),
        "[{runtime}] says why SIGHUP does not reload:\n{log}"
    );
    assert!(
        !log.contains("reload by"),
        "[{runtime}] reloaded under nohup:\n{log}"
    );

    // Not under nohup: SIGHUP and SIGTERM at once.
    let mut service = Service::start(
        runtime,
        &["--config", settings.path(), "--shutdown-timeout", "5s"],
    );
    service.process.signal("HUP");
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    assert!(
        exited - signalled < Duration::from_secs(5),
        "[{runtime}] within the budget"
    );
}

/// A self-signed certificate for `localhost`: its PEM, its key's PEM, and its DER.
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = CertificateDer::from(made.cert.der().to_vec());
    (made.cert.pem(), made.signing_key.serialize_pem(), der)
}

type Tls = futures_rustls::client::TlsStream<::smol::net::TcpStream>;

/// A TLS connection to `addr` that trusts `roots`, speaking HTTP/1.1.
async fn tls_connect(addr: SocketAddr, roots: &[CertificateDer<'static>]) -> Tls {
    use futures_rustls::rustls::{ClientConfig, RootCertStore};
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = ::smol::net::TcpStream::connect(addr).await.unwrap();
    let name = futures_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    futures_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// `GET path` on a keep-alive TLS connection: the status.
async fn tls_get(stream: &mut Tls, path: &str) -> u16 {
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed in the head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// HTTPS with the certificate rotated by SIGHUP: a connection made after the reload gets
/// the new certificate, the one opened before keeps its own and goes on working, and a
/// key that does not match its certificate fails the reload and changes nothing.
fn tls_certificate_rotates_on_sighup(runtime: &str) {
    let dir = std::env::temp_dir().join(format!("lifecycle-tls-{runtime}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (a_pem, a_key, a) = certificate();
    let (b_pem, b_key, b) = certificate();
    let install = |pem: &str, private: &str| {
        for (path, text) in [(&cert, pem), (&key, private)] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text).unwrap();
            std::fs::rename(&partial, path).unwrap();
        }
    };
    install(&a_pem, &a_key);
    let mut service = Service::start(
        runtime,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let roots = [a.clone(), b.clone()];
    ::smol::block_on(async {
        let mut before = tls_connect(service.app, &roots).await;
        assert_eq!(presented(&before), a, "[{runtime}] the first certificate");
        assert_eq!(tls_get(&mut before, "/work?ms=1").await, 200);

        install(&b_pem, &b_key);
        service.process.signal("HUP");
        let report = service
            .process
            .wait_for_line("the reload", |l| l.contains("reload by SIGHUP"));
        assert!(
            report.contains("reload by SIGHUP: ok"),
            "[{runtime}] {report}"
        );
        let mut after = tls_connect(service.app, &roots).await;
        assert_eq!(
            presented(&after),
            b,
            "[{runtime}] a new connection gets the new one"
        );
        assert_eq!(tls_get(&mut after, "/work?ms=1").await, 200);
        assert_eq!(
            tls_get(&mut before, "/work?ms=1").await,
            200,
            "[{runtime}] the connection opened before is not dropped"
        );
        assert_eq!(presented(&before), a);

        // B's certificate with A's key: refused, B stays.
        install(&b_pem, &a_key);
        service.process.signal("HUP");
        let report = service
            .process
            .wait_for_line("the failed reload", |l| l.contains("reload by SIGHUP"));
        assert!(
            report.contains("reload of tls failed") && report.contains("do not make a pair"),
            "[{runtime}] {report}"
        );
        let mut third = tls_connect(service.app, &roots).await;
        assert_eq!(presented(&third), b, "[{runtime}] the old pair stays");
        assert_eq!(tls_get(&mut third, "/work?ms=1").await, 200);
    });
    service.process.signal("TERM");
    assert_eq!(service.process.wait_for_exit().0.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configuration_is_refused_with_exit_code_2() {
    let runtime = runtimes()[0];
    for (flags, env, expected) in [
        (
            &["--drain-delay", "5x"][..],
            &[][..],
            "invalid value '5x' for '--drain-delay <DURATION>': `x` is not a unit",
        ),
        (
            &["--addr", "localhost"][..],
            &[][..],
            "invalid value 'localhost' for '--addr <ADDR>'",
        ),
        (
            &["--bogus"][..],
            &[][..],
            "unexpected argument '--bogus' found",
        ),
        (
            &[][..],
            &[("LIFECYCLE_SHUTDOWN_TIMEOUT", "0s")][..],
            r#"LIFECYCLE_SHUTDOWN_TIMEOUT="0s" is invalid"#,
        ),
        (
            &["--drain-delay", "30s"][..],
            &[][..],
            "must be less than shutdown_timeout",
        ),
    ] {
        let untouched =
            std::env::temp_dir().join(format!("lifecycle-refused-{}", std::process::id()));
        let dir = untouched.to_str().unwrap();
        let args: Vec<&str> = ["--data-dir", dir].iter().chain(flags).copied().collect();
        let mut process = Process::spawn("service", runtime, &args, env);
        let (status, _) = process.wait_for_exit();
        assert!(
            !untouched.exists(),
            "{flags:?} {env:?}: the data dir was created before the refusal"
        );
        let stderr = process.stderr();
        assert_eq!(
            status.code(),
            Some(2),
            "{flags:?} {env:?}: {status}\n{stderr}"
        );
        assert!(stderr.contains(expected), "{flags:?} {env:?}: {stderr}");
    }
}

/// OTLP scenario 1: SIGTERM under load, with every span exported to a real collector
/// on loopback through opentelemetry-otlp: each hook run's (the shutdown's stops and
/// flushes included), the phases ended before the flush, and exactly one `request` span
/// per request the clients got a 200 for, the drain's included.
#[cfg(feature = "otel")]
fn spans_are_exported_through_the_shutdown(runtime: &str) {
    use common::collector::{Collect, Collector};
    let collector = Collector::start(Collect::Answer);
    let url = collector.url();
    let mut service = Service::start(
        runtime,
        &[
            "--otlp-endpoint",
            &url,
            "--drain-delay",
            "1s",
            "--shutdown-timeout",
            "10s",
        ],
    );
    let (_, clients) = spawn_clients(service.app, 8, load_client);
    thread::sleep(Duration::from_millis(1000));
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    assert!(exited - signalled < Duration::from_secs(10), "[{runtime}]");
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    assert!(failures.is_empty(), "[{runtime}] {failures:#?}");
    let ok: usize = tallies.iter().map(|t| t.ok).sum();
    assert!(ok > 8 * 5, "[{runtime}] only {ok} requests went through");

    let spans = collector.spans();
    let requests = spans
        .iter()
        .filter(|s| s.name == "request" && s.attribute("path") == Some("/work"))
        .count();
    assert_eq!(
        requests, ok,
        "[{runtime}] request spans exported vs 200s the clients got"
    );
    for component in ["settings", "logs", "metrics", "db", "cache", "http"] {
        for hook in ["start", "stop", "flush"] {
            let runs: Vec<_> = spans
                .iter()
                .filter(|s| s.name == hook && s.attribute("component") == Some(component))
                .collect();
            assert_eq!(runs.len(), 1, "[{runtime}] {hook} of {component}: {runs:?}");
            assert_eq!(runs[0].attribute("outcome"), Some("completed"), "{runs:?}");
            assert!(runs[0].attribute("duration_ms").is_some(), "{runs:?}");
        }
    }
    for phase in ["start", "drain", "stop"] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == phase && s.attribute("component").is_none()),
            "[{runtime}] no {phase} phase span"
        );
    }
    let log = service.file("service.log");
    assert!(
        log.contains("shutdown by SIGTERM: exit code 0"),
        "[{runtime}] {log}"
    );
}

/// OTLP scenario 2: a collector that never answers. The flush of `otel` ends at its
/// deadline (timed out, exit code 1), within the budget, and the rest of the flush and
/// the report are not held up.
#[cfg(feature = "otel")]
fn a_hung_collector_is_abandoned_at_the_flush_deadline(runtime: &str) {
    use common::collector::{Collect, Collector};
    let collector = Collector::start(Collect::Hang);
    let url = collector.url();
    let budget = Duration::from_secs(6);
    let mut service = Service::start(
        runtime,
        &["--otlp-endpoint", &url, "--shutdown-timeout", "6s"],
    );
    for _ in 0..5 {
        assert_eq!(get(service.app, "/work?ms=1").status, 200);
    }
    service.process.signal("TERM");
    let signalled = Instant::now();
    let (status, exited) = service.process.wait_for_exit();
    assert_eq!(status.code(), Some(1), "[{runtime}] {status}");
    assert!(
        exited - signalled < budget,
        "[{runtime}] exited {:?} after SIGTERM, over its budget",
        exited - signalled
    );
    assert!(collector.requests() >= 1, "[{runtime}] no export was tried");
    let log = service.file("service.log");
    assert!(
        log.contains("flush of otel timed out"),
        "[{runtime}] the log says which flush timed out:\n{log}"
    );
    assert!(
        log.contains("shutdown by SIGTERM: exit code 1"),
        "[{runtime}] the report follows:\n{log}"
    );
}

/// The OTLP scenarios run on tokio's current-thread runtime too: a blocking flush on
/// its only thread is where OpenTelemetry's shutdown deadlocks.
macro_rules! on_otel_runtimes {
    ($($scenario:ident),* $(,)?) => {
        #[cfg(feature = "otel")]
        mod otlp {
            $(mod $scenario {
                #[cfg(feature = "smol")]
                #[test]
                fn smol() {
                    super::super::$scenario("smol");
                }
                #[cfg(feature = "tokio")]
                #[test]
                fn tokio() {
                    super::super::$scenario("tokio");
                }
                #[cfg(feature = "tokio")]
                #[test]
                fn tokio_current_thread() {
                    super::super::$scenario("tokio-current-thread");
                }
            })*
        }
    };
}

on_otel_runtimes!(
    spans_are_exported_through_the_shutdown,
    a_hung_collector_is_abandoned_at_the_flush_deadline,
);

on_each_runtime!(
    sigterm_under_load_loses_nothing,
    sigterm_under_h2_load_loses_nothing,
    keep_alive_connections_do_not_hold_the_stop,
    redis_cache_degrades_without_taking_readiness,
    a_request_over_the_stop_deadline_is_cut,
    sighup_reloads_the_settings_under_load,
    a_reloaded_ttl_applies,
    sighup_under_nohup_is_ignored_and_sigterm_wins,
    tls_certificate_rotates_on_sighup,
);
