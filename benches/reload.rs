//! Reload, on smol and tokio, in one run:
//!
//! 1. **SIGHUP to reload finished, against the graph's reload critical path.** A layered
//!    graph (5 layers of 4 components, each on 1-3 of the layer before, reloads of 2-12
//!    ms from a seeded generator); a real `SIGHUP` sent to this process, and the time
//!    until the health monitor shows the reload ended. No schedule beats the critical
//!    path of the reload durations.
//! 2. **Request p99 during reloads.** The same graph next to an `HttpServer` answering
//!    `hello`, under keep-alive load from 8 client threads; 2 s windows with 10 `SIGHUP`s
//!    alternate with windows without, and the median of each kind's per-window p99 is
//!    compared.
//!
//! `cargo bench --all-features --bench reload`. Without `--bench` (as `cargo test
//! --benches` runs it) it does one short round.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lifecycle::prelude::*;
use lifecycle::{HealthMonitor, ReloadContext, Run};

use common::{critical_paths, human, layered_dag, median, Spec, SEED};

/// A component whose reload takes its spec's `start` time.
struct Reloading {
    name: String,
    deps: Vec<String>,
    reload: Duration,
}

#[async_trait]
impl Component for Reloading {
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> Options {
        self.deps
            .iter()
            .fold(Options::new(), |o, d| o.depends_on(d.clone()))
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.reload).await;
        Ok(())
    }
}

fn graph(specs: &[Spec]) -> lifecycle::Builder {
    specs.iter().enumerate().fold(
        App::builder().config(
            Config::default()
                .reload_on_sighup(true)
                .report_on_stderr(false),
        ),
        |builder, (i, spec)| {
            builder.add(Reloading {
                name: format!("n{i}"),
                deps: spec.deps.iter().map(|d| format!("n{d}")).collect(),
                reload: spec.start,
            })
        },
    )
}

/// Sends SIGHUP to this process.
fn hangup() {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP)
        .expect("SIGHUP to self");
}

/// Waits until the monitor shows `count` reloads begun and none running. On a plain
/// executor: `smol::block_on` here would take turns at driving smol's reactor, and
/// disturb the server being measured.
fn reloaded(monitor: &HealthMonitor, count: u64) {
    let mut changes = monitor.subscribe();
    loop {
        let snapshot = monitor.cached();
        if snapshot.reloads >= count && !snapshot.reloading {
            return;
        }
        futures_executor::block_on(changes.changed());
    }
}

/// Runs `app` on `runtime` ("smol" or "tokio") on a thread of its own.
fn run(app: App, runtime: &'static str) -> thread::JoinHandle<Report> {
    thread::spawn(move || {
        match runtime {
            "smol" => app.run(),
            _ => app.run_tokio(),
        }
        .expect("runs")
    })
}

/// Part 1: each reload's time from the SIGHUP to the monitor showing it ended.
fn sighup_to_reloaded(specs: &[Spec], runtime: &'static str, rounds: u64) -> Vec<Duration> {
    let app = graph(specs).build().unwrap();
    let (monitor, handle) = (app.health(), app.handle());
    let running = run(app, runtime);
    while !monitor.is_ready() {
        thread::sleep(Duration::from_millis(5));
    }
    let mut took = Vec::new();
    for round in 1..=rounds {
        let sent = Instant::now();
        hangup();
        reloaded(&monitor, round);
        took.push(sent.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    handle.shutdown();
    let report = running.join().unwrap();
    assert_eq!(report.reloads.len() as u64, rounds, "{report}");
    assert!(report.reloads.iter().all(|r| r.is_complete()), "{report}");
    took
}

/// The same reload durations run by hand as the best schedule can (each sleep once its
/// dependencies' are done, as shared futures) on `runtime`: that runtime's floor.
fn hand_rolled(specs: &[Spec], runtime: &'static str) -> Duration {
    use futures_util::future::{join_all, BoxFuture, FutureExt, Shared};
    async fn schedule(
        specs: &[Spec],
        sleep: impl Fn(Duration) -> BoxFuture<'static, ()>,
    ) -> Duration {
        let began = Instant::now();
        let mut done: Vec<Shared<BoxFuture<'static, ()>>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let deps: Vec<_> = spec.deps.iter().map(|&d| done[d].clone()).collect();
            let nap = sleep(spec.start);
            done.push(
                async move {
                    join_all(deps).await;
                    nap.await;
                }
                .boxed()
                .shared(),
            );
        }
        join_all(done).await;
        began.elapsed()
    }
    match runtime {
        "smol" => smol::block_on(schedule(specs, |d| {
            async move {
                smol::Timer::after(d).await;
            }
            .boxed()
        })),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(schedule(specs, |d| {
                // A tokio sleep's deadline is fixed when it is made: make it when due.
                async move { tokio::time::sleep(d).await }.boxed()
            })),
    }
}

/// One keep-alive client until `done`: each request's latency.
fn client(addr: SocketAddr, done: Arc<AtomicBool>) -> Vec<(Instant, Duration)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream);
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let began = Instant::now();
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = n.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        latencies.push((began, began.elapsed()));
    }
    latencies
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Part 2: p99 of the requests in windows with reloads, and in windows without.
fn p99_during_reloads(
    specs: &[Spec],
    runtime: &'static str,
    windows: usize,
    window: Duration,
) -> (Duration, Duration, usize) {
    let hello = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let http = lifecycle::HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve(hello);
    let addr = http.local_addr();
    let app = graph(specs).add(http).build().unwrap();
    let (monitor, handle) = (app.health(), app.handle());
    let running = run(app, runtime);
    while !monitor.is_ready() {
        thread::sleep(Duration::from_millis(5));
    }
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || client(addr, done))
        })
        .collect();
    thread::sleep(Duration::from_millis(300)); // warm
                                               // Odd windows have reloads: (start, end, with reloads).
    let spans = Arc::new(Mutex::new(Vec::new()));
    let mut sent = 0;
    for w in 0..windows {
        let began = Instant::now();
        let with = w % 2 == 1;
        if with {
            for k in 1..=10 {
                hangup();
                sent += 1;
                reloaded(&monitor, sent);
                thread::sleep((began + window * k / 11).saturating_duration_since(Instant::now()));
            }
        }
        let left = window.saturating_sub(began.elapsed());
        thread::sleep(left);
        spans.lock().unwrap().push((began, Instant::now(), with));
    }
    done.store(true, Ordering::Relaxed);
    let latencies: Vec<(Instant, Duration)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    handle.shutdown();
    let report = running.join().unwrap();
    assert_eq!(report.reloads.len() as u64, sent, "{report}");
    // Each window's p99, then the median over the windows of each kind: one window
    // disturbed by the machine moves its own figure, not the comparison.
    let spans = spans.lock().unwrap();
    let mut requests = 0;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for &(from, to, reloading) in spans.iter() {
        let window: Vec<Duration> = latencies
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|&(_, took)| took)
            .collect();
        requests += window.len();
        let p99 = p99(window);
        if reloading {
            with.push(p99);
        } else {
            without.push(p99);
        }
    }
    (median(&mut without), median(&mut with), requests)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // smol's and tokio's SIGHUPs come from the one handler lifecycle registers.
    lifecycle::signals::catch().unwrap();
    let specs = layered_dag(5, 4, 2, 12, SEED);
    let (path, _) = critical_paths(&specs);
    let rounds = if full { 30 } else { 2 };
    println!("reload critical path {}", human(path));
    println!("| runtime | reloads | critical path | SIGHUP to reloaded, median | over the path | worst | hand-rolled on the runtime, median | over hand-rolled |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for runtime in ["smol", "tokio"] {
        let mut took = sighup_to_reloaded(&specs, runtime, rounds);
        let worst = *took.iter().max().unwrap();
        let median = median(&mut took);
        let mut floor: Vec<Duration> = (0..rounds).map(|_| hand_rolled(&specs, runtime)).collect();
        let floor = common::median(&mut floor);
        let over = |base: Duration| (median.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
        println!(
            "| {runtime} | {rounds} | {} | {} | {:+.1}% | {} | {} | {:+.1}% |",
            human(path),
            human(median),
            over(path),
            human(worst),
            human(floor),
            over(floor)
        );
    }
    let (windows, window) = if full {
        (20, Duration::from_secs(2))
    } else {
        (2, Duration::from_millis(300))
    };
    println!();
    println!(
        "| runtime | requests | p99 without reloads (median of {} windows) | p99 with 10 reloads per {} window (median of {}) | ratio |",
        windows / 2,
        human(window),
        windows / 2
    );
    println!("| --- | --- | --- | --- | --- |");
    // The same graph with hooks that return at once: what the reload machinery costs
    // without its 20 timers per reload.
    let instant: Vec<Spec> = specs
        .iter()
        .map(|spec| Spec {
            start: Duration::ZERO,
            ..spec.clone()
        })
        .collect();
    for runtime in ["smol", "tokio"] {
        for (hooks, specs) in [
            ("hooks sleep 2-12 ms", &specs),
            ("hooks return at once", &instant),
        ] {
            let (without, with, requests) = p99_during_reloads(specs, runtime, windows, window);
            println!(
                "| {runtime}, {hooks} | {requests} | {} | {} | {:.3}x |",
                human(without),
                human(with),
                with.as_secs_f64() / without.as_secs_f64()
            );
        }
    }
}
