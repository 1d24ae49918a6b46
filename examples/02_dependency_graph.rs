//! A dependency graph: parallel start, reverse stop, flush last, and the report.
//!
//! Four stand-ins simulate their work with timers: `metrics`; `db` and `cache`, which
//! both depend on `metrics`; and `http`, which depends on `db` and `cache`. Run it with
//! `cargo run --example 02_dependency_graph` (smol), or on tokio with
//! `LIFECYCLE_RUNTIME=tokio cargo run --example 02_dependency_graph --features tokio`:
//!
//! - `db` and `cache` start concurrently once `metrics` has started, and `ready` is
//!   printed when `http`, the last one, has started (about 0.5 s in);
//! - press Ctrl-C (or `kill -TERM <pid>`): `http` stops first, then `db` and `cache`
//!   concurrently (`cache` takes about 2 s), then `metrics`, which flushes last; the
//!   report is printed and the process exits 0;
//! - press Ctrl-C a second time while `cache` is still stopping: the remaining stops are
//!   abandoned, `metrics` still flushes, and the process exits at once with 130 (143
//!   for a second `SIGTERM`).
//!
//! `DEMO_SLOW_START_MS` sets how long `db` and `cache` take to start (default 300), to
//! leave time for a signal during startup: the start is aborted, exactly the
//! components that had started are stopped, and the process exits 1, the report naming
//! the starts the signal cancelled.
//!
//! Stdout gets one plain line per step (`starting db`, `started db`, `ready`,
//! `stopping db`, `stopped db`, `flushed metrics`), then the report; logs go to stderr.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifecycle::prelude::*;

/// How long `db` and `cache` take to start, unless `DEMO_SLOW_START_MS` says otherwise.
const DEFAULT_SLOW_START: Duration = Duration::from_millis(300);
/// How long `cache` takes to stop: long enough to press Ctrl-C a second time.
const CACHE_STOP: Duration = Duration::from_secs(2);

/// Counts what the other components record, and writes the count out at flush.
struct Metrics {
    recorded: Arc<AtomicU64>,
}

#[async_trait]
impl Component for Metrics {
    fn name(&self) -> &str {
        "metrics"
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        println!("starting metrics");
        ctx.runtime().sleep(Duration::from_millis(100)).await;
        println!("started metrics");
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        println!("stopping metrics");
        ctx.runtime().sleep(Duration::from_millis(100)).await;
        println!("stopped metrics");
        Ok(())
    }

    // Runs after every stop, so what the shutdown itself recorded gets out too.
    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(Duration::from_millis(50)).await;
        let recorded = self.recorded.load(Ordering::Relaxed);
        tracing::info!(recorded, "metrics written out");
        println!("flushed metrics");
        Ok(())
    }
}

/// A stand-in for a backend such as a database pool or a cache: it takes `start_time`
/// to connect and `stop_time` to close, and records both in `metrics`.
struct Backend {
    name: &'static str,
    start_time: Duration,
    stop_time: Duration,
    recorded: Arc<AtomicU64>,
}

#[async_trait]
impl Component for Backend {
    fn name(&self) -> &str {
        self.name
    }

    fn options(&self) -> Options {
        Options::new().depends_on("metrics")
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        println!("starting {}", self.name);
        ctx.runtime().sleep(self.start_time).await;
        self.recorded.fetch_add(1, Ordering::Relaxed);
        println!("started {}", self.name);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        println!("stopping {}", self.name);
        ctx.runtime().sleep(self.stop_time).await;
        self.recorded.fetch_add(1, Ordering::Relaxed);
        println!("stopped {}", self.name);
        Ok(())
    }
}

/// A stand-in for an HTTP server: once started, a tracked task "serves" a request every
/// 100 ms until `http` has stopped.
struct Http {
    recorded: Arc<AtomicU64>,
}

#[async_trait]
impl Component for Http {
    fn name(&self) -> &str {
        "http"
    }

    fn options(&self) -> Options {
        Options::new().depends_on("db").depends_on("cache")
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        println!("starting http");
        ctx.runtime().sleep(Duration::from_millis(100)).await;
        let runtime = ctx.runtime().clone();
        let recorded = self.recorded.clone();
        ctx.spawn(async move {
            loop {
                runtime.sleep(Duration::from_millis(100)).await;
                recorded.fetch_add(1, Ordering::Relaxed);
            }
        });
        println!("started http");
        // `http` is the last component to start: the app is running.
        println!("ready");
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        println!("stopping http");
        ctx.runtime().sleep(Duration::from_millis(200)).await;
        println!("stopped http");
        Ok(())
    }
}

/// `DEMO_SLOW_START_MS`, or the default.
fn slow_start() -> Duration {
    match std::env::var("DEMO_SLOW_START_MS") {
        Ok(value) => match value.trim().parse() {
            Ok(millis) => Duration::from_millis(millis),
            Err(_) => {
                tracing::warn!(%value, "DEMO_SLOW_START_MS is not a number of milliseconds");
                DEFAULT_SLOW_START
            }
        },
        Err(_) => DEFAULT_SLOW_START,
    }
}

fn main() -> Result<Report, lifecycle::Error> {
    // First, before any setup: a signal from here on is handled, never fatal.
    lifecycle::signals::catch()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let recorded = Arc::new(AtomicU64::new(0));
    let slow_start = slow_start();
    let report = App::builder()
        // The default budget: 25 s in all, stops capped at 10 s each, the last 3 s kept
        // for the flush. `cache`'s 2 s stop fits easily.
        .config(Config::default())
        .add(Metrics {
            recorded: recorded.clone(),
        })
        .add(Backend {
            name: "db",
            start_time: slow_start,
            stop_time: Duration::from_millis(300),
            recorded: recorded.clone(),
        })
        .add(Backend {
            name: "cache",
            start_time: slow_start,
            stop_time: CACHE_STOP,
            recorded: recorded.clone(),
        })
        .add(Http { recorded })
        .run()?;

    print!("{report}");
    // Returning the report makes its exit code the process's.
    Ok(report)
}
