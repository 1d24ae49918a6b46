//! A stop with 10,000 idle keep-alive connections, and the memory they hold, on tokio:
//! lifecycle's `HttpServer` (`run_tokio`, SIGTERM, no drain delay) against hyper-util's
//! `auto` server with its `GracefulShutdown`, and `axum::serve(..).with_graceful_shutdown(..)`.
//!
//! Each server runs alone in a child process (this binary, `IDLE_BENCH_SERVE=<server>`),
//! so its memory and CPU are its own. The parent opens the connections (each sends one
//! request and reads its answer, then stays open, idle), reads the child's resident
//! memory, sends it SIGTERM, and measures until every connection has seen the server
//! close it, and the child's CPU time over that stop.
//!
//! ```sh
//! cargo bench --all-features --bench idle
//! # Knobs: IDLE_BENCH_CONNECTIONS (10000), IDLE_BENCH_ROUNDS (5)
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVERS: [&str; 3] = ["lifecycle", "hyper-util", "axum"];

fn router() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The child: serves until SIGTERM, printing its address first.
fn serve(server: &str) {
    match server {
        "lifecycle" => {
            use lifecycle::prelude::*;
            lifecycle::signals::catch().unwrap();
            let http = lifecycle::http::HttpServer::bind("127.0.0.1:0")
                .unwrap()
                .serve(router());
            println!("{}", http.local_addr());
            let report = App::builder()
                .config(
                    Config::default()
                        .drain_delay(Duration::ZERO)
                        .report_on_stderr(false),
                )
                .add(http)
                .run_tokio()
                .unwrap();
            assert_eq!(report.exit_code(), 0, "{report}");
        }
        "hyper-util" => tokio_main(async {
            use hyper_util::rt::{TokioExecutor, TokioIo};
            use hyper_util::server::conn::auto;
            use hyper_util::service::TowerToHyperService;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("{}", listener.local_addr().unwrap());
            let builder = auto::Builder::new(TokioExecutor::new());
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            let mut sigterm =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            let service = TowerToHyperService::new(router());
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                            .into_owned();
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                    _ = sigterm.recv() => break,
                }
            }
            drop(listener);
            graceful.shutdown().await;
        }),
        "axum" => tokio_main(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("{}", listener.local_addr().unwrap());
            let mut sigterm =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            axum::serve(listener, router())
                .with_graceful_shutdown(async move {
                    sigterm.recv().await;
                })
                .await
                .unwrap();
        }),
        other => panic!("no server {other}"),
    }
}

/// The runtime `run_tokio` builds: multi-threaded, one worker per core.
fn tokio_main(main: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(main);
}

/// The child's resident memory, from /proc.
fn rss_kb(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process's CPU time in user space and in the kernel (all its threads, dead ones
/// included), from /proc: 10 ms ticks.
fn cpu(pid: &str) -> [Duration; 2] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut ticks = after_name
        .split_whitespace()
        .skip(11)
        .map(|field| Duration::from_millis(field.parse::<u64>().unwrap_or(0) * 10));
    [(); 2].map(|()| ticks.next().unwrap_or_default())
}

/// What one stop measured.
struct Measure {
    kb_per_connection: f64,
    stop: Duration,
    stop_cpu: Duration,
    /// Of `stop_cpu`, the kernel's.
    stop_system: Duration,
    /// The clients' CPU time over the stop (this process's): they share the cores.
    clients_cpu: Duration,
}

/// One connection: a request answered, then idle until the server closes it; resolves
/// when it does.
async fn idle_connection(
    addr: SocketAddr,
    opened: Arc<tokio::sync::Semaphore>,
    idle: Arc<tokio::sync::Barrier>,
) -> Instant {
    let permit = opened.acquire().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.ends_with(b"hello") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    drop(permit);
    idle.wait().await;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

fn measure(server: &str, connections: usize) -> Measure {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("IDLE_BENCH_SERVE", server)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kb(&child);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let measure = runtime.block_on(async {
        // A hundred handshakes at a time: the listen queue is short.
        let opened = Arc::new(tokio::sync::Semaphore::new(100));
        let idle = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let clients: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(idle_connection(addr, opened.clone(), idle.clone())))
            .collect();
        idle.wait().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kb(&child);
        let child_pid = child.id().to_string();
        let [user_before, system_before] = cpu(&child_pid);
        let [ours_before, our_system_before] = cpu("self");
        let stopped = Instant::now();
        // A system call, not a `kill` process: its fork would share the cores with the stop.
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let mut last = stopped;
        for client in clients {
            last = last.max(client.await.unwrap());
        }
        let [user, system] = cpu(&child_pid);
        let stop_system = system.saturating_sub(system_before);
        let [ours, our_system] = cpu("self");
        Measure {
            kb_per_connection: after.saturating_sub(before) as f64 / connections as f64,
            stop: last - stopped,
            stop_cpu: user.saturating_sub(user_before) + stop_system,
            stop_system,
            clients_cpu: (ours + our_system).saturating_sub(ours_before + our_system_before),
        }
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{server} exited with {status}");
    measure
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if let Ok(server) = std::env::var("IDLE_BENCH_SERVE") {
        return serve(&server);
    }
    let connections = env_or("IDLE_BENCH_CONNECTIONS", 10_000);
    let rounds = env_or("IDLE_BENCH_ROUNDS", 5);
    let mut results: Vec<(&str, Vec<Measure>)> = SERVERS.iter().map(|s| (*s, vec![])).collect();
    for round in 0..rounds {
        // A rotating order, so no server always runs first.
        for i in 0..SERVERS.len() {
            let (server, measures) = &mut results[(round + i) % SERVERS.len()];
            let measure = measure(server, connections);
            println!(
                "round {round} {server}: {:.1} KB per idle connection, stop {:?}, stop CPU {:?} ({:?} in the kernel), the clients' CPU {:?}",
                measure.kb_per_connection, measure.stop, measure.stop_cpu, measure.stop_system, measure.clients_cpu
            );
            measures.push(measure);
        }
    }
    let ms = |measures: &[Measure], pick: fn(&Measure) -> Duration| {
        median(
            measures
                .iter()
                .map(|m| pick(m).as_secs_f64() * 1e3)
                .collect(),
        )
    };
    let rows: Vec<(&str, f64, f64, f64, f64)> = results
        .iter()
        .map(|(server, measures)| {
            (
                *server,
                median(measures.iter().map(|m| m.kb_per_connection).collect()),
                ms(measures, |m| m.stop),
                ms(measures, |m| m.stop_cpu),
                ms(measures, |m| m.stop_system),
            )
        })
        .collect();
    let best = |pick: fn(&(&str, f64, f64, f64, f64)) -> f64| {
        rows.iter().skip(1).map(pick).fold(f64::INFINITY, f64::min)
    };
    let (kb, stop, cpu) = (best(|r| r.1), best(|r| r.2), best(|r| r.3));
    println!(
        "\n{connections} idle keep-alive connections, {rounds} rounds, medians; ratios to the best peer\n"
    );
    println!("| server | KB per idle connection | stop (all closed) | stop CPU | of it in the kernel | memory / best peer | stop / best peer | stop CPU / best peer |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (server, row_kb, row_stop, row_cpu, row_system) in &rows {
        println!(
            "| {server} | {row_kb:.1} | {row_stop:.0} ms | {row_cpu:.0} ms | {row_system:.0} ms | {:.2}x | {:.2}x | {:.2}x |",
            row_kb / kb,
            row_stop / stop,
            row_cpu / cpu.max(1.0)
        );
    }
}
