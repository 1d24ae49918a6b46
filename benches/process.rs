//! The service example as a real process, under a real SIGTERM, on smol and on tokio:
//!
//! - how long after the signal `/health/ready` answers 503, seen by a client polling it
//!   as fast as it can over one keep-alive connection; split into what a bare process
//!   needs to wake on the signal (the OS and the runtime: a child that only waits for the
//!   runtime's signal stream) and what the engine adds (the service's own log line
//!   `shutting down`, timestamped in µs, against the moment of `kill`);
//! - how long after the last in-flight response the process has exited, and how much of
//!   it the flush took (the report's flush column).
//!
//! Build the service first, then run the benchmark:
//!
//! ```sh
//! cargo build --release --example service --all-features
//! cargo bench --all-features --bench process
//! ```
//!
//! `LIFECYCLE_RUNTIME` picks the runtime of that one binary. `SERVICE_BIN` overrides where
//! the binary is looked for. Without `--bench` (as `cargo test --benches` runs it) it
//! does nothing.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lifecycle::{Runtime, SmolRuntime, TokioRuntime};
use rustix::process::{kill_process, Pid, Signal};

use common::load_average;

/// Runs of the service per runtime.
const RUNS: usize = 15;
/// Runs of the bare signal child per runtime.
const ECHO_RUNS: usize = 30;
/// How long the in-flight request works.
const WORK_MS: u64 = 300;
/// Probe requests answered before the signal is sent.
const PROBES_BEFORE: usize = 50;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|arg| arg == "--signal-echo") {
        signal_echo(&args[i + 1]);
        return;
    }
    if !args.iter().any(|arg| arg == "--bench") {
        println!("process: a benchmark; run it with `cargo bench --all-features --bench process`");
        return;
    }
    let Some(service) = service_binary() else {
        println!(
            "process: SKIPPED, the service example is not built: run \
             `cargo build --release --example service --all-features` first (or set SERVICE_BIN)"
        );
        return;
    };
    println!(
        "process: {} and {RUNS} runs per runtime; load average at the start: {}",
        service.display(),
        load_average()
    );

    let mut table = Vec::new();
    for runtime in ["smol", "tokio"] {
        let echo: Vec<Duration> = (0..ECHO_RUNS).map(|_| echo_once(runtime)).collect();
        let runs: Vec<Run> = (0..RUNS).map(|_| run_once(&service, runtime)).collect();
        table.push((runtime, echo, runs));
    }

    println!("\nmedian (min-max) over the runs; every time is from `kill(SIGTERM)` unless said\n");
    println!("| measure | smol | tokio |");
    println!("| --- | --- | --- |");
    let row = |label: &str, pick: &dyn Fn(Duration, &Run) -> Option<Duration>| {
        let cells: Vec<String> = table
            .iter()
            .map(|(_, echo, runs)| {
                let echo_median = median(echo.to_vec());
                let values: Vec<Duration> = runs
                    .iter()
                    .filter_map(|run| pick(echo_median, run))
                    .collect();
                spread(values)
            })
            .collect();
        println!("| {label} | {} | {} |", cells[0], cells[1]);
    };
    // The bare child's wake-up is its own series.
    let echo_cells: Vec<String> = table
        .iter()
        .map(|(_, echo, _)| spread(echo.clone()))
        .collect();
    println!(
        "| a bare child wakes on its runtime's signal stream (OS + runtime) | {} | {} |",
        echo_cells[0], echo_cells[1]
    );
    row(
        "the engine has triggered (its `shutting down` log line)",
        &|_, run| run.triggered,
    );
    row(
        "engine's part: trigger minus the bare child's median wake-up",
        &|echo, run| run.triggered.map(|t| t.saturating_sub(echo)),
    );
    row(
        "`/health/ready` answers 503 to the poller (upper bound)",
        &|_, run| Some(run.unready_by),
    );
    row(
        "`/health/ready` still answered 200 at (lower bound)",
        &|_, run| Some(run.ready_until),
    );
    row(
        "probe round trip before the signal (the poller's resolution)",
        &|_, run| Some(run.probe_rtt),
    );
    row("last in-flight response → process exit", &|_, run| {
        Some(run.response_to_exit)
    });
    row(
        "… of which the flush (report, ms resolution)",
        &|_, run| Some(run.flush),
    );
    row(
        "… last response → `database closed` (db stops once http has)",
        &|_, run| run.response_to_db_closed,
    );
    row(
        "… last response → the engine's `exited cleanly` line",
        &|_, run| run.response_to_report,
    );
    row("… `exited cleanly` line → process reaped", &|_, run| {
        run.report_to_exit
    });
    println!("\nload average at the end: {}", load_average());
}

/// Where the service binary is: `SERVICE_BIN`, else `release/examples/service` next to
/// this benchmark's `release/deps/`.
fn service_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("SERVICE_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()?
            .ancestors()
            .nth(2)?
            .join("examples/service"),
    };
    path.is_file().then_some(path)
}

/// The child's side of the baseline: waits for SIGTERM on the runtime's signal stream,
/// as the engine does, and prints when it woke (ns since the epoch).
fn signal_echo(runtime: &str) {
    let woke = match runtime {
        "smol" => {
            let mut signals = SmolRuntime::new().signals().expect("signals");
            ready_line();
            smol::block_on(signals.next());
            SystemTime::now()
        }
        _ => {
            let tokio = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            tokio.block_on(async {
                let mut signals = TokioRuntime::new().signals().expect("signals");
                ready_line();
                signals.next().await;
                SystemTime::now()
            })
        }
    };
    println!("{}", nanos(woke));
}

fn ready_line() {
    println!("ready");
    io::stdout().flush().expect("stdout");
}

fn nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// One baseline: spawn the echo child, signal it once it listens, read when it woke.
fn echo_once(runtime: &str) -> Duration {
    let mut child = Command::new(std::env::current_exe().expect("this benchmark"))
        .args(["--signal-echo", runtime])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(lines.next().expect("a line").expect("utf-8"), "ready");
    let sent = nanos(SystemTime::now());
    terminate(&child);
    let woke: u128 = lines
        .next()
        .expect("a line")
        .expect("utf-8")
        .parse()
        .expect("a number");
    child.wait().expect("the echo child exits");
    Duration::from_nanos(woke.saturating_sub(sent) as u64)
}

fn terminate(child: &Child) {
    let pid = Pid::from_raw(child.id() as i32).expect("a pid");
    kill_process(pid, Signal::TERM).expect("kill");
}

/// What one run of the service measured.
#[derive(Debug)]
struct Run {
    /// Until the engine logged `shutting down`.
    triggered: Option<Duration>,
    /// Until the first 503 reached the poller.
    unready_by: Duration,
    /// When the last request that got a 200 was sent (readiness was still true then).
    ready_until: Duration,
    /// The median probe round trip before the signal.
    probe_rtt: Duration,
    /// From the last byte of the in-flight response to the process reaped.
    response_to_exit: Duration,
    /// The flush column of the report, summed.
    flush: Duration,
    response_to_db_closed: Option<Duration>,
    response_to_report: Option<Duration>,
    report_to_exit: Option<Duration>,
}

/// The service process; killed if a run fails half-way.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    data: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Service {
    fn spawn(binary: &PathBuf, runtime: &str) -> Service {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let data = std::env::temp_dir().join(format!(
            "lifecycle-bench-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--drain-delay", "0"])
            .env("LIFECYCLE_RUNTIME", runtime)
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the service starts");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Service { child, lines, data }
    }

    /// Reads lines until one contains `text`; returns it.
    fn wait_for(&self, text: &str, seen: &mut Vec<String>) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    panic!(
                        "no line with {text:?} (the service's stderr is above; is it built with \
                         --all-features?); seen: {seen:#?}"
                    )
                });
            seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }
}

fn address_in(line: &str) -> SocketAddr {
    let at = line.find("addr=").expect("an address") + "addr=".len();
    line[at..]
        .split_whitespace()
        .next()
        .expect("an address")
        .parse()
        .expect("a socket address")
}

/// Sends `GET path` on a keep-alive connection and reads the whole response; returns
/// its status.
fn get(stream: &mut TcpStream, path: &str) -> io::Result<u16> {
    send_get(stream, path)?;
    read_response(stream)
}

/// Sends `GET path`, in one write.
fn send_get(stream: &mut TcpStream, path: &str) -> io::Result<()> {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
}

/// Reads one whole response; returns its status.
fn read_response(stream: &mut TcpStream) -> io::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let mut buf = [0u8; 4096];
    // The head, then exactly the body's length: no read past the response.
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut left = length;
    while left > 0 {
        let n = stream.read(&mut buf[..left.min(4096)])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(status)
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// One probe request: when it was sent, when its answer arrived, the status.
type Probe = (Instant, Instant, u16);

fn run_once(binary: &PathBuf, runtime: &str) -> Run {
    let service = Service::spawn(binary, runtime);
    let mut seen = Vec::new();
    let probes = address_in(&service.wait_for("probe server listening", &mut seen));
    let app = address_in(&service.wait_for("http listening", &mut seen));
    service.wait_for("lifecycle_core::engine: running", &mut seen);

    // The in-flight request: it works for WORK_MS, across the signal. Sent from here,
    // and given time to arrive before anything else competes for the two cores.
    let mut request = connect(app);
    send_get(&mut request, &format!("/work?ms={WORK_MS}")).expect("sent");
    let in_flight = thread::spawn(move || {
        let status = read_response(&mut request).expect("answered");
        (Instant::now(), SystemTime::now(), status)
    });
    thread::sleep(Duration::from_millis(30));

    // The poller: as fast as it can, until the first 503.
    let answered = Arc::new(AtomicUsize::new(0));
    let poller = {
        let answered = answered.clone();
        let mut stream = connect(probes);
        thread::spawn(move || {
            let mut probes: Vec<Probe> = Vec::with_capacity(4096);
            loop {
                let sent = Instant::now();
                let status = get(&mut stream, "/health/ready").expect("the probe answers");
                probes.push((sent, Instant::now(), status));
                answered.fetch_add(1, Ordering::Release);
                if status != 200 {
                    return probes;
                }
            }
        })
    };
    while answered.load(Ordering::Acquire) < PROBES_BEFORE {
        thread::yield_now();
    }

    let killed = Instant::now();
    let killed_wall = SystemTime::now();
    terminate(&service.child);

    let probes = poller.join().expect("the poller");
    let (response, response_wall, status) = in_flight.join().expect("the request");
    assert_eq!(status, 200, "the in-flight request completes");
    let mut service = service;
    let exit = service.child.wait().expect("the service exits");
    let (exited, exited_wall) = (Instant::now(), SystemTime::now());
    assert!(exit.success(), "exit code 0: {exit:?}");
    while let Ok(line) = service.lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }

    let first_503 = probes
        .iter()
        .position(|&(_, _, status)| status == 503)
        .expect("a 503");
    let (_, unready_at, _) = probes[first_503];
    let ready_until = probes[..first_503]
        .last()
        .map_or(Duration::ZERO, |&(sent, _, _)| {
            sent.saturating_duration_since(killed)
        });
    let before: Vec<Duration> = probes
        .iter()
        .filter(|&&(_, answered, _)| answered < killed)
        .map(|&(sent, answered, _)| answered - sent)
        .collect();
    let logged = |text: &str| {
        seen.iter()
            .find(|line| line.contains(text))
            .and_then(|line| log_time(line))
    };
    let since =
        |from: SystemTime, to: Option<SystemTime>| to.and_then(|to| to.duration_since(from).ok());
    let report_logged = logged("exited cleanly");
    Run {
        triggered: since(killed_wall, logged("shutting down trigger=SIGTERM")),
        unready_by: unready_at - killed,
        ready_until,
        probe_rtt: median(before),
        response_to_exit: exited - response,
        flush: flush_time(&seen),
        response_to_db_closed: since(response_wall, logged("database closed")),
        response_to_report: since(response_wall, report_logged),
        report_to_exit: report_logged.and_then(|at| exited_wall.duration_since(at).ok()),
    }
}

/// The time at the start of a log line, `2026-11-21T11:05:24.643053Z`, as a
/// `SystemTime`.
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':');
    let hours: i64 = time.next()?.parse().ok()?;
    let minutes: i64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let whole = days * 86_400 + hours * 3_600 + minutes * 60;
    Some(UNIX_EPOCH + Duration::from_secs(whole as u64) + Duration::from_secs_f64(seconds))
}

/// The report's flush column, summed: the third `<outcome> <n>ms` of each component row.
fn flush_time(lines: &[String]) -> Duration {
    let Some(header) = lines
        .iter()
        .position(|line| line.starts_with("component") && line.contains("flush"))
    else {
        return Duration::ZERO;
    };
    lines[header + 1..]
        .iter()
        .take_while(|line| !line.trim().is_empty() && line.contains("ms"))
        .filter_map(|line| {
            let times: Vec<u64> = line
                .split_whitespace()
                .filter_map(|word| word.strip_suffix("ms")?.parse().ok())
                .collect();
            times.get(2).copied()
        })
        .map(Duration::from_millis)
        .sum()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// `median (min-max)`.
fn spread(mut values: Vec<Duration>) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values.sort();
    let show = |d: Duration| {
        let us = d.as_secs_f64() * 1e6;
        if us < 1_000.0 {
            format!("{us:.0} µs")
        } else {
            format!("{:.2} ms", us / 1e3)
        }
    };
    format!(
        "{} ({}-{})",
        show(values[values.len() / 2]),
        show(values[0]),
        show(values[values.len() - 1])
    )
}
