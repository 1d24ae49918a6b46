//! The HTTP component (`lifecycle::http::HttpServer`) against its peers, serving the same
//! axum `Router`, under `wrk`:
//!
//! - on tokio: `HttpServer` in an app run by `run_tokio`, hyper-util's server
//!   (`auto::Builder` with `TokioExecutor` and `TokioIo`, one `tokio::spawn` per
//!   connection), and `axum::serve`, each on a multi-threaded tokio runtime built as
//!   `run_tokio` builds its own (one worker per core);
//! - on smol: `HttpServer` in an app run by `run`, and hyper's HTTP/1 connection over
//!   async-io sockets through smol-hyper's `FuturesIo`, one `smol::spawn` per connection
//!   (smol's global executor, as the app's tasks).
//!
//! Two handlers: `/` answers `hello` at once; `/sleep` sleeps 1 ms on the runtime's timer
//! (tokio's `sleep`, async-io's `Timer`), then answers `hello`. Each server, handler and
//! connection count (64, 256) gets a 1 s warm-up run of `wrk -t2 -c{N}`, then a measured
//! 5 s run with `--latency`; requests/s and the 99th percentile are read from its output.
//! The whole set is repeated `HTTP_BENCH_ROUNDS` times (default 3), the servers in a
//! rotating order, and the table gives the median (and the range of requests/s), and the
//! server's CPU time per request (this process's user + system time, `wrk` excluded, over
//! the requests `wrk` completed): the steadiest figure when server and `wrk` share cores.
//!
//! A run during which other processes (or other virtual machines: steal) took more than 3%
//! of the CPU (`/proc/stat`; `HTTP_BENCH_OTHERS=<percent>` changes it, 100 under a
//! profiler) is done again once the machine is quiet, up to four times.
//! `HTTP_BENCH_ONLY=<part of a name>` keeps only the servers whose runtime and name
//! contain it (`tokio lifecycle`, `smol hyper`); `HTTP_BENCH_ROWS=<part of a row>` only
//! the handlers and connection counts whose `<handler> c=<connections>` contains it
//! (`sleep c=256`, `hello`), among them a third handler measured only when asked:
//! `/large` answers 256 KiB at once (`HTTP_BENCH_ROWS=KiB`), where the cost of copying a
//! body shows.
//!
//! The verdicts against the targets give two ratios for each figure: of the medians (as
//! the table), and the median of each round's ratio to that round's best peer. The
//! second pairs runs of one round (tens of seconds apart, not minutes), so it is less
//! moved by a drift of the machine between rounds, which on a shared 2-core machine
//! moves a peer's median by up to 30%.
//!
//! `HTTP_BENCH_SERVE=<part of a name>` runs no load: it starts the one server whose
//! runtime and name contain it, prints its address, and serves until its standard input
//! closes, for a profiler or `valgrind --tool=callgrind` to watch under a load of one's
//! own (BENCHMARKS.md counts instructions per request this way).
//!
//! With `HTTP_BENCH_DIAGNOSE` set, each runtime gets two more rows, not counted as peers,
//! that tell where HttpServer's cost goes: its hyper peer given hyper's own header read
//! timeout (5 s on lifecycle's `RuntimeTimer`, a sleep per request: what HttpServer no
//! longer does), and its hyper peer given HttpServer's connection setup instead
//! (`lifecycle::net` sockets, hyper-util's `auto` builder); what is left between that
//! row and HttpServer is the component's own work.
//!
//! ```sh
//! cargo bench --all-features --bench http
//! ```
//!
//! Needs `wrk` on the `PATH` (`apt-get install wrk`); says SKIPPED without it. Server and
//! `wrk` share the machine's cores. Without `--bench` (as `cargo test --benches` runs it)
//! it does nothing. The apps catch `SIGINT` and `SIGTERM` (`lifecycle::signals`), so
//! Ctrl-C stops the benchmark when it reaches the next app's start or stop.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use futures_channel::oneshot;
use futures_util::future::select;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use lifecycle::http::HttpServer;
use lifecycle::net::{Listener, RuntimeTimer};
use lifecycle::prelude::*;
use lifecycle::{Phase, ShutdownHandle, SmolRuntime, TokioRuntime};
use smol_hyper::rt::FuturesIo;

use common::load_average;

/// How long each measured `wrk` run lasts.
const DURATION_S: u64 = 5;
/// How long the warm-up run before it lasts (its figures are dropped).
const WARMUP_S: u64 = 1;
/// The connection counts `wrk` keeps open.
const CONNECTIONS: [usize; 2] = [64, 256];
/// The rounds of the whole set, unless `HTTP_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// What a target allows: `HttpServer`'s throughput at least this share of the best peer's…
const THROUGHPUT_TARGET: f64 = 0.97;
/// … and its p99 at most this multiple of the best peer's…
const P99_TARGET: f64 = 1.05;
/// … and its server CPU per request at most this multiple of the best peer's.
const CPU_TARGET: f64 = 1.00;
/// The share of the machine's CPU other processes may use during a measured run (a
/// build next to the benchmark takes far more), unless `HTTP_BENCH_OTHERS` gives another
/// (in percent; 100 to keep every run, as under a profiler).
fn others_limit() -> f64 {
    static LIMIT: OnceLock<f64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("HTTP_BENCH_OTHERS")
            .ok()
            .and_then(|percent| percent.parse::<f64>().ok())
            .map_or(0.03, |percent| percent / 100.0)
    })
}
/// How many times a disturbed run is tried.
const ATTEMPTS: usize = 4;
/// HttpServer's default header read timeout, given to the peers in the diagnosis rows.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rt {
    Tokio,
    Smol,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::Smol => "smol",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// `lifecycle::http::HttpServer` in an app.
    Lifecycle(Rt),
    /// hyper-util's `auto` connection, one `tokio::spawn` per connection.
    HyperUtil(Diag),
    /// `axum::serve`.
    AxumServe,
    /// hyper's HTTP/1 connection on async-io sockets, one `smol::spawn` per connection.
    HyperSmol(Diag),
}

/// What a diagnosis row adds to a hyper peer, a step towards what HttpServer sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Diag {
    /// The peer as it is.
    No,
    /// With hyper's own header read timeout (5 s, on lifecycle's `RuntimeTimer`): a
    /// runtime sleep armed for every request's head, as HttpServer had until it kept the
    /// timeout per connection. What this row costs over the peer is what that saved.
    Timer,
    /// With HttpServer's connections instead: `lifecycle::net::{Listener, Stream}`,
    /// hyper-util's `auto` builder, with upgrades, no header read timeout. What is left
    /// between this row and HttpServer is the component's own work (per request: the
    /// guard, the extensions, a clock reading; per connection: the tracked task, the
    /// drain's `select`, the header read timeout's sleep).
    Io,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Lifecycle(_) => "lifecycle HttpServer",
            Server::HyperUtil(Diag::No) => "hyper-util auto + tokio::spawn",
            Server::HyperUtil(Diag::Timer) => "(hyper-util + header timeout)",
            Server::HyperUtil(Diag::Io) => "(hyper-util + lifecycle io)",
            Server::AxumServe => "axum::serve",
            Server::HyperSmol(Diag::No) => "hyper http1 + smol-hyper + smol::spawn",
            Server::HyperSmol(Diag::Timer) => "(hyper smol + header timeout)",
            Server::HyperSmol(Diag::Io) => "(hyper smol + lifecycle io)",
        }
    }

    fn runtime(self) -> Rt {
        match self {
            Server::Lifecycle(rt) => rt,
            Server::HyperUtil(_) | Server::AxumServe => Rt::Tokio,
            Server::HyperSmol(_) => Rt::Smol,
        }
    }

    /// A peer, not lifecycle nor a diagnosis.
    fn is_peer(self) -> bool {
        matches!(
            self,
            Server::HyperUtil(Diag::No) | Server::AxumServe | Server::HyperSmol(Diag::No)
        )
    }

    fn is_lifecycle(self) -> bool {
        matches!(self, Server::Lifecycle(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Hello,
    Sleep1ms,
    /// 256 KiB at once: what a body's copy costs (only when `HTTP_BENCH_ROWS` asks).
    Large,
}

impl Handler {
    fn path(self) -> &'static str {
        match self {
            Handler::Hello => "/",
            Handler::Sleep1ms => "/sleep",
            Handler::Large => "/large",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Handler::Hello => "hello",
            Handler::Sleep1ms => "1 ms sleep",
            Handler::Large => "256 KiB",
        }
    }
}

/// The handlers measured unless `HTTP_BENCH_ROWS` names others.
const HANDLERS: [Handler; 2] = [Handler::Hello, Handler::Sleep1ms];
/// Every handler, for `HTTP_BENCH_ROWS`.
const ALL_HANDLERS: [Handler; 3] = [Handler::Hello, Handler::Sleep1ms, Handler::Large];

/// The body of `/large`.
static LARGE: [u8; 256 * 1024] = [b'x'; 256 * 1024];

/// The service every server of a runtime serves: `/`, `/large`, and `/sleep` on that
/// runtime's timer.
fn router(rt: Rt) -> Router {
    let router = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/large", get(|| async { &LARGE[..] }));
    match rt {
        Rt::Tokio => router.route(
            "/sleep",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                "hello"
            }),
        ),
        Rt::Smol => router.route(
            "/sleep",
            get(|| async {
                async_io::Timer::after(Duration::from_millis(1)).await;
                "hello"
            }),
        ),
    }
}

/// A server that is up, and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: Stop,
}

enum Stop {
    App(ShutdownHandle, thread::JoinHandle<Report>),
    Peer(oneshot::Sender<()>, thread::JoinHandle<()>),
}

impl Running {
    fn stop(self) {
        match self.stop {
            Stop::App(handle, app) => {
                handle.shutdown();
                let report = app.join().expect("the app's thread panicked");
                if report.exit_code() != 0 {
                    // A signal stopped it (Ctrl-C), or its stop failed: either way, stop.
                    println!(
                        "http: the app exited with code {}: stopping",
                        report.exit_code()
                    );
                    std::process::exit(130);
                }
            }
            Stop::Peer(stop, server) => {
                let _ = stop.send(());
                server.join().expect("the server's thread panicked");
            }
        }
    }
}

fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.set_nonblocking(true).unwrap();
    listener
}

/// The runtime `run_tokio` builds, for the peers: multi-threaded, one worker per core.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn start(server: Server) -> Running {
    match server {
        Server::Lifecycle(rt) => start_lifecycle(rt),
        Server::HyperUtil(diag) => start_peer(Rt::Tokio, move |listener, service, stop| {
            let runtime = tokio_runtime();
            runtime.block_on(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                let timer = RuntimeTimer::new(Arc::new(TokioRuntime::from_handle(
                    tokio::runtime::Handle::current(),
                )));
                if diag == Diag::Timer {
                    builder
                        .http1()
                        .timer(timer.clone())
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                    builder.http2().timer(timer);
                } else if diag == Diag::Io {
                    builder.http1().header_read_timeout(None);
                    builder.http2().timer(timer);
                    // Made inside the runtime: tokio's sockets, as HttpServer's.
                    let listener = Listener::from_std(listener).unwrap();
                    let accept = async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let builder = builder.clone();
                            let service = TowerToHyperService::new(service.clone());
                            tokio::spawn(async move {
                                let _ = builder
                                    .serve_connection_with_upgrades(stream.into_hyper(), service)
                                    .await;
                            });
                        }
                    };
                    select(pin!(accept), stop).await;
                    return;
                }
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let builder = builder.clone();
                        let service = TowerToHyperService::new(service.clone());
                        tokio::spawn(async move {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                select(pin!(accept), stop).await;
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        }),
        Server::AxumServe => start_peer(Rt::Tokio, |listener, service, stop| {
            let runtime = tokio_runtime();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async move { axum::serve(listener, service).await };
                select(pin!(serve), stop).await;
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        }),
        Server::HyperSmol(Diag::Io) => {
            start_peer(Rt::Smol, move |listener, service, stop| {
                smol::block_on(async move {
                    let mut builder = auto::Builder::new(SmolExecutor);
                    builder.http1().header_read_timeout(None);
                    builder
                        .http2()
                        .timer(RuntimeTimer::new(Arc::new(SmolRuntime::new())));
                    // Made outside tokio: async-io's sockets, as HttpServer's on smol.
                    let listener = Listener::from_std(listener).unwrap();
                    let accept = async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let builder = builder.clone();
                            let service = TowerToHyperService::new(service.clone());
                            smol::spawn(async move {
                                let _ = builder
                                    .serve_connection_with_upgrades(stream.into_hyper(), service)
                                    .await;
                            })
                            .detach();
                        }
                    };
                    select(pin!(accept), stop).await;
                });
            })
        }
        Server::HyperSmol(diag) => start_peer(Rt::Smol, move |listener, service, stop| {
            smol::block_on(async move {
                let listener = smol::Async::new(listener).unwrap();
                let mut builder = hyper::server::conn::http1::Builder::new();
                if diag == Diag::Timer {
                    builder
                        .timer(RuntimeTimer::new(Arc::new(SmolRuntime::new())))
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                }
                let accept = async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let builder = builder.clone();
                        let service = TowerToHyperService::new(service.clone());
                        smol::spawn(async move {
                            let _ = builder
                                .serve_connection(FuturesIo::new(stream), service)
                                .await;
                        })
                        .detach();
                    }
                };
                select(pin!(accept), stop).await;
            });
        }),
    }
}

/// hyper's executor (for HTTP/2 streams) on smol's global executor.
#[derive(Debug, Clone, Copy)]
struct SmolExecutor;

impl<F> hyper::rt::Executor<F> for SmolExecutor
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        smol::spawn(future).detach();
    }
}

/// A peer on its own thread, serving `router(rt)` on `serve`'s runtime until told to stop.
fn start_peer<F>(rt: Rt, serve: F) -> Running
where
    F: FnOnce(TcpListener, Router, oneshot::Receiver<()>) + Send + 'static,
{
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let service = router(rt);
    let server = thread::spawn(move || serve(listener, service, stopped));
    Running {
        addr,
        stop: Stop::Peer(stop, server),
    }
}

fn start_lifecycle(rt: Rt) -> Running {
    let http = HttpServer::bind("127.0.0.1:0")
        .expect("cannot bind 127.0.0.1:0")
        .serve(router(rt));
    let addr = http.local_addr();
    let app = App::builder()
        .config(Config::default().drain_delay(Duration::ZERO))
        .add(http)
        .build()
        .expect("the app builds");
    let handle = app.handle();
    let health = app.health();
    let app = thread::spawn(move || match rt {
        Rt::Tokio => app.run_tokio().expect("the app runs"),
        Rt::Smol => app.run().expect("the app runs"),
    });
    let began = Instant::now();
    while health.phase() != Phase::Running {
        if app.is_finished() {
            // A SIGINT or SIGTERM (the app catches them, see `lifecycle::signals`).
            println!("http: the app ended before it ran (interrupted?): stopping");
            std::process::exit(130);
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the app never ran"
        );
        thread::sleep(Duration::from_millis(2));
    }
    Running {
        addr,
        stop: Stop::App(handle, app),
    }
}

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
struct Measure {
    requests_per_s: f64,
    p99: Duration,
    /// The share of the machine's CPU time that other processes used meanwhile.
    others: f64,
    /// The CPU time the server used per request (this process's, `wrk` excluded).
    cpu_per_request: Duration,
}

/// A warm-up, then a measured run; again (after waiting for the machine to be quiet) when
/// other processes took more than [`others_limit`] of the CPU during it, up to
/// [`ATTEMPTS`] times (the last one is kept, and flagged).
fn measure(addr: SocketAddr, handler: Handler, connections: usize) -> Option<Measure> {
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        let _ = wrk(addr, handler.path(), connections, WARMUP_S);
        let before = CpuTimes::now();
        let (mut measure, requests) = wrk(addr, handler.path(), connections, DURATION_S)?;
        measure.others = before.others_since();
        measure.cpu_per_request = before.server_since() / requests.max(1);
        if measure.others <= others_limit() {
            return Some(measure);
        }
        if attempt < ATTEMPTS {
            println!(
                "  other processes used {:.1}% of the CPU during the run ({:.0} req/s): waiting \
                 for a quiet machine, then again",
                measure.others * 100.0,
                measure.requests_per_s
            );
            wait_for_quiet();
        }
        last = Some(measure);
    }
    last
}

/// Waits until other processes use at most [`others_limit`] of the CPU over 2 s (or 10
/// minutes have passed).
fn wait_for_quiet() {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(600) {
        let before = CpuTimes::now();
        thread::sleep(Duration::from_secs(2));
        if before.others_since() <= others_limit() {
            return;
        }
    }
}

/// The machine's CPU time, and this process's (with its waited-for children: `wrk`), in
/// clock ticks, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// user + nice + system + steal of all CPUs.
    busy: u64,
    /// Every field of all CPUs (idle included).
    total: u64,
    /// utime + stime + cutime + cstime of this process.
    own: u64,
    /// utime + stime of this process alone (the servers).
    server: u64,
}

impl CpuTimes {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // in user already. Steal (other virtual machines on the host) counts as busy.
        let busy = cpu.iter().take(3).sum::<u64>() + cpu.get(7).copied().unwrap_or(0);
        let total = cpu.iter().take(8).sum();
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // After the command's name (in parentheses): state is field 3, utime field 14.
        let after_name = own_stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let times: Vec<u64> = after_name
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|field| field.parse().ok())
            .collect();
        CpuTimes {
            busy,
            total,
            own: times.iter().sum(),
            server: times.iter().take(2).sum(),
        }
    }

    /// The CPU time this process (not its children) used since `self`.
    fn server_since(self) -> Duration {
        // Linux reports these in USER_HZ, 100 per second on every architecture it runs on.
        let ticks = CpuTimes::now().server.saturating_sub(self.server);
        Duration::from_millis(ticks * 10)
    }

    /// The share of the machine's CPU time since `self` that went to other processes, or
    /// to other virtual machines (steal); 0 where `/proc` cannot be read.
    fn others_since(self) -> f64 {
        let now = CpuTimes::now();
        let total = now.total.saturating_sub(self.total);
        let others = now
            .busy
            .saturating_sub(self.busy)
            .saturating_sub(now.own.saturating_sub(self.own));
        if total == 0 {
            0.0
        } else {
            others as f64 / total as f64
        }
    }
}

/// Runs `wrk` against `path` with `connections` connections for `seconds`: what it
/// measured, and how many requests it completed; `None` (and what went wrong, printed)
/// when its output cannot be read.
fn wrk(addr: SocketAddr, path: &str, connections: usize, seconds: u64) -> Option<(Measure, u32)> {
    let url = format!("http://{addr}{path}");
    let output = Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(&url)
        .output()
        .expect("cannot run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Socket errors") || line.starts_with("Non-2xx") {
            println!("  wrk {url} -c{connections}: {line}");
        }
    }
    let requests_per_s = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse::<f64>().ok());
    let p99 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .and_then(|value| parse_time(value.trim()));
    // `  348571 requests in 5.00s, 42.22MB read`
    let requests = text.lines().find_map(|line| {
        let (count, rest) = line.trim().split_once(' ')?;
        rest.starts_with("requests in")
            .then(|| count.parse::<u32>().ok())?
    });
    match (requests_per_s, p99, requests) {
        (Some(requests_per_s), Some(p99), Some(requests)) => Some((
            Measure {
                requests_per_s,
                p99,
                others: 0.0,
                cpu_per_request: Duration::ZERO,
            },
            requests,
        )),
        _ => {
            println!(
                "  wrk {url} -c{connections}: cannot read its output ({}):\n{text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
    }
}

/// A time as `wrk` prints it: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn parse_time(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Every measured run of one server, handler and connection count.
#[derive(Debug)]
struct Cell {
    server: Server,
    handler: Handler,
    connections: usize,
    /// Each measured run, with the round it ran in.
    runs: Vec<(usize, Measure)>,
}

impl Cell {
    fn requests_per_s(&self) -> f64 {
        median(
            self.runs
                .iter()
                .map(|(_, run)| run.requests_per_s)
                .collect(),
        )
    }

    fn p99(&self) -> Duration {
        Duration::from_secs_f64(median(
            self.runs
                .iter()
                .map(|(_, run)| run.p99.as_secs_f64())
                .collect(),
        ))
    }

    fn cpu_per_request(&self) -> Duration {
        Duration::from_secs_f64(median(
            self.runs
                .iter()
                .map(|(_, run)| run.cpu_per_request.as_secs_f64())
                .collect(),
        ))
    }

    fn range(&self) -> (f64, f64) {
        let rates = self.runs.iter().map(|(_, run)| run.requests_per_s);
        (
            rates.clone().fold(f64::INFINITY, f64::min),
            rates.fold(0.0, f64::max),
        )
    }
}

/// The median over rounds of `figure(cell's run) / figure(best peer's run)` in the same
/// round, the best being the largest figure if `higher_is_better`, else the smallest.
fn paired_ratio(
    cell: &Cell,
    peers: &[&Cell],
    figure: impl Fn(&Measure) -> f64,
    higher_is_better: bool,
) -> f64 {
    let ratios = cell
        .runs
        .iter()
        .filter_map(|(round, run)| {
            let same_round = peers.iter().flat_map(|peer| &peer.runs);
            let best = same_round
                .filter(|(peer_round, _)| peer_round == round)
                .map(|(_, peer_run)| figure(peer_run))
                .reduce(|a, b| if (a > b) == higher_is_better { a } else { b })?;
            Some(figure(run) / best)
        })
        .collect();
    median(ratios)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn human(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}

fn thousands(rate: f64) -> String {
    format!("{:.1}k", rate / 1000.0)
}

/// `HTTP_BENCH_SERVE`: serves with the one server whose runtime and name contain
/// `wanted` until standard input closes.
fn serve_only<'a>(wanted: &str, servers: impl Iterator<Item = &'a Server>) {
    let matching: Vec<Server> = servers
        .filter(|server| format!("{} {}", server.runtime().name(), server.name()).contains(wanted))
        .copied()
        .collect();
    let [server] = matching[..] else {
        println!(
            "http: HTTP_BENCH_SERVE={wanted:?} names {} servers, not one",
            matching.len()
        );
        return;
    };
    let running = start(server);
    println!(
        "http: {} {} serving on http://{} until standard input closes",
        server.runtime().name(),
        server.name(),
        running.addr
    );
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    running.stop();
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("http: a benchmark; run it with `cargo bench --all-features --bench http`");
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("http: SKIPPED, `wrk` is not on the PATH (apt-get install wrk)");
        return;
    }
    let rounds = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .filter(|&rounds| rounds > 0)
        .unwrap_or(ROUNDS);

    // The diagnosis rows (peers given HttpServer's header read timeout) only on request.
    let diagnose = std::env::var_os("HTTP_BENCH_DIAGNOSE").is_some();
    let mut tokio_servers = vec![
        Server::Lifecycle(Rt::Tokio),
        Server::HyperUtil(Diag::No),
        Server::AxumServe,
    ];
    let mut smol_servers = vec![Server::Lifecycle(Rt::Smol), Server::HyperSmol(Diag::No)];
    if diagnose {
        for diag in [Diag::Timer, Diag::Io] {
            tokio_servers.push(Server::HyperUtil(diag));
            smol_servers.push(Server::HyperSmol(diag));
        }
    }
    // `HTTP_BENCH_ONLY=<part of a name>`: only the servers whose runtime and name contain it
    // (to profile one).
    if let Ok(only) = std::env::var("HTTP_BENCH_ONLY") {
        let keep = |server: &Server| {
            format!("{} {}", server.runtime().name(), server.name()).contains(only.as_str())
        };
        tokio_servers.retain(keep);
        smol_servers.retain(keep);
    }
    if let Ok(wanted) = std::env::var("HTTP_BENCH_SERVE") {
        serve_only(&wanted, tokio_servers.iter().chain(&smol_servers));
        return;
    }
    // `HTTP_BENCH_ROWS=<part of a row>`: only the handlers and connection counts whose
    // `<handler> c=<connections>` contains it.
    let rows_wanted = std::env::var("HTTP_BENCH_ROWS").ok();
    let handlers = if rows_wanted.is_some() {
        &ALL_HANDLERS[..]
    } else {
        &HANDLERS[..]
    };
    let rows_wanted = rows_wanted.unwrap_or_default();
    let rows: Vec<(Handler, usize)> = handlers
        .iter()
        .copied()
        .flat_map(|handler| CONNECTIONS.map(|connections| (handler, connections)))
        .filter(|(handler, connections)| {
            format!("{} c={connections}", handler.name()).contains(rows_wanted.as_str())
        })
        .collect();
    if rows.is_empty() {
        println!(
            "http: no row matches HTTP_BENCH_ROWS={rows_wanted:?} (rows: `hello c=64`, \
             `1 ms sleep c=256`, …)"
        );
        return;
    }
    let cores = thread::available_parallelism().map_or(0, usize::from);
    let row_names: Vec<String> = rows
        .iter()
        .map(|(handler, connections)| format!("{} c={connections}", handler.name()))
        .collect();
    println!(
        "http: {rounds} rounds of `wrk -t2 -c<connections> -d{DURATION_S}s --latency` (after a \
         {WARMUP_S} s warm-up each) on {}; {cores} cores shared by the server and wrk; load \
         average at the start: {}",
        row_names.join(", "),
        load_average()
    );
    let began = Instant::now();
    let mut cells: Vec<Cell> = Vec::new();
    for servers in [&tokio_servers[..], &smol_servers[..]] {
        for &server in servers {
            for &(handler, connections) in &rows {
                cells.push(Cell {
                    server,
                    handler,
                    connections,
                    runs: Vec::new(),
                });
            }
        }
    }

    for round in 0..rounds {
        for servers in [&tokio_servers[..], &smol_servers[..]] {
            // A rotating order, so that no server always runs first (or last) in a round.
            for i in 0..servers.len() {
                let server = servers[(i + round) % servers.len()];
                let running = start(server);
                for &(handler, connections) in &rows {
                    let Some(measure) = measure(running.addr, handler, connections) else {
                        continue;
                    };
                    println!(
                        "round {}/{rounds}  {:5}  {:40} {:10} c={:<3}  {:>9.0} req/s  p99 {:>9}  server CPU {:>5.1} µs/req  others {:.1}%{}",
                        round + 1,
                        server.runtime().name(),
                        server.name(),
                        handler.name(),
                        connections,
                        measure.requests_per_s,
                        human(measure.p99),
                        measure.cpu_per_request.as_secs_f64() * 1e6,
                        measure.others * 100.0,
                        if measure.others > others_limit() {
                            "  DISTURBED"
                        } else {
                            ""
                        }
                    );
                    let cell = cells
                        .iter_mut()
                        .find(|cell| {
                            cell.server == server
                                && cell.handler == handler
                                && cell.connections == connections
                        })
                        .expect("every cell is listed");
                    cell.runs.push((round, measure));
                }
                running.stop();
            }
        }
    }

    let mut verdicts = Vec::new();
    for rt in [Rt::Tokio, Rt::Smol] {
        println!(
            "\n{}: median of {rounds} runs (requests/s range in brackets); ratios are to the \
             best peer of the same handler and connection count (highest requests/s, lowest \
             p99)\n",
            rt.name()
        );
        println!(
            "| server | handler | connections | requests/s | p99 | server CPU per request | throughput / best peer | p99 / best peer | CPU per request / best peer |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for &(handler, connections) in &rows {
            let row: Vec<&Cell> = cells
                .iter()
                .filter(|cell| {
                    cell.server.runtime() == rt
                        && cell.handler == handler
                        && cell.connections == connections
                        && !cell.runs.is_empty()
                })
                .collect();
            let peer_cells: Vec<&Cell> = row
                .iter()
                .copied()
                .filter(|cell| cell.server.is_peer())
                .collect();
            let peers = peer_cells.iter();
            let best_rate = peers
                .clone()
                .map(|cell| cell.requests_per_s())
                .fold(0.0, f64::max);
            let best_p99 = peers
                .clone()
                .map(|cell| cell.p99().as_secs_f64())
                .fold(f64::INFINITY, f64::min);
            let best_cpu = peers
                .map(|cell| cell.cpu_per_request().as_secs_f64())
                .fold(f64::INFINITY, f64::min);
            for cell in &row {
                let (low, high) = cell.range();
                let rate_ratio = cell.requests_per_s() / best_rate;
                let p99_ratio = cell.p99().as_secs_f64() / best_p99;
                let cpu_ratio = cell.cpu_per_request().as_secs_f64() / best_cpu;
                let name = if cell.server.is_lifecycle() {
                    format!("**{}**", cell.server.name())
                } else {
                    cell.server.name().to_owned()
                };
                println!(
                    "| {name} | {} | {connections} | {} ({}-{}) | {} | {:.1} µs | {rate_ratio:.2}× | {p99_ratio:.2}× | {cpu_ratio:.2}× |",
                    handler.name(),
                    thousands(cell.requests_per_s()),
                    thousands(low),
                    thousands(high),
                    human(cell.p99()),
                    cell.cpu_per_request().as_secs_f64() * 1e6,
                );
                if cell.server.is_lifecycle() && !peer_cells.is_empty() {
                    let paired = |figure: fn(&Measure) -> f64, higher_is_better| {
                        paired_ratio(cell, &peer_cells, figure, higher_is_better)
                    };
                    let verdict = |ratio: f64, paired: f64, met: fn(f64) -> bool| {
                        let says = |ratio| if met(ratio) { "met" } else { "MISSED" };
                        format!(
                            "{ratio:.3}× {} (paired by round {paired:.3}× {})",
                            says(ratio),
                            says(paired)
                        )
                    };
                    verdicts.push(format!(
                        "{} {}, {connections} connections: throughput {} (target ≥ \
                         {THROUGHPUT_TARGET}); p99 {} (target ≤ {P99_TARGET}); CPU per request \
                         {} (target ≤ {CPU_TARGET:.2})",
                        rt.name(),
                        handler.name(),
                        verdict(
                            rate_ratio,
                            paired(|run| run.requests_per_s, true),
                            |ratio| ratio >= THROUGHPUT_TARGET
                        ),
                        verdict(
                            p99_ratio,
                            paired(|run| run.p99.as_secs_f64(), false),
                            |ratio| ratio <= P99_TARGET
                        ),
                        verdict(
                            cpu_ratio,
                            paired(|run| run.cpu_per_request.as_secs_f64(), false),
                            |ratio| ratio <= CPU_TARGET
                        ),
                    ));
                }
            }
        }
    }
    let runs: Vec<&Measure> = cells
        .iter()
        .flat_map(|cell| cell.runs.iter().map(|(_, run)| run))
        .collect();
    let disturbed = runs
        .iter()
        .filter(|run| run.others > others_limit())
        .count();
    println!(
        "\nother processes' share of the CPU during the measured runs: median {:.1}%, at most \
         {:.1}%; {disturbed} of {} runs kept over {:.0}% (after {ATTEMPTS} tries)",
        median(runs.iter().map(|run| run.others * 100.0).collect()),
        runs.iter()
            .map(|run| run.others * 100.0)
            .fold(0.0, f64::max),
        runs.len(),
        others_limit() * 100.0
    );
    println!("\ntargets (HttpServer against the best peer):");
    for verdict in verdicts {
        println!("- {verdict}");
    }
    println!(
        "\n(http benchmark took {:.0} s; load average at the end: {})",
        began.elapsed().as_secs_f64(),
        load_average()
    );
}
