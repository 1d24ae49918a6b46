//! A restart, on smol (and tokio): the time from a component's failure to its subgraph
//! running again, against what no supervisor can beat: the subgraph's stop path, the
//! backoff waited, and its start path (critical paths of the cycled components' hooks).
//!
//! The graph: `db` <- `worker` (stop 15 ms, start 40 ms) <- `http` (stop 10 ms, start
//! 30 ms) and `api` (stop 5 ms, start 20 ms), plus `cache` on its own; `worker`'s task
//! fails 50 ms after each start, restarted after a 20 ms backoff. The floor of one
//! restart: stop path 10 + 15, backoff (the report's), start path 40 + 30.
//!
//! `cargo bench --all-features --bench restart`. Without `--bench` (as `cargo test
//! --benches` runs it) it does one short run.

use std::sync::Arc;
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::{Restart, Runtime, SmolRuntime, TokioRuntime};

struct Slow {
    name: &'static str,
    deps: Vec<&'static str>,
    start: Duration,
    stop: Duration,
    fail_after: Option<Duration>,
}

#[async_trait]
impl Component for Slow {
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> Options {
        self.deps
            .iter()
            .fold(Options::new(), |o, d| o.depends_on(*d))
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.start).await;
        if let Some(after) = self.fail_after {
            let runtime = ctx.runtime().clone();
            ctx.spawn_fallible(async move {
                runtime.sleep(after).await;
                Err("injected failure")
            });
        }
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.stop).await;
        Ok(())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn app(restarts: u32) -> App {
    let slow = |name, deps, start, stop, fail_after| Slow {
        name,
        deps,
        start: ms(start),
        stop: ms(stop),
        fail_after,
    };
    App::builder()
        .add(slow("db", vec![], 0, 0, None))
        .add(slow("cache", vec![], 0, 0, None))
        .add_with(
            slow("worker", vec!["db"], 40, 15, Some(ms(50))),
            Options::new().restart(
                Restart::on_failure()
                    .limit(restarts + 1, Duration::from_secs(600))
                    .backoff(ms(20), ms(20)),
            ),
        )
        .add(slow("http", vec!["worker"], 30, 10, None))
        .add(slow("api", vec!["worker"], 20, 5, None))
        .build()
        .unwrap()
}

/// Runs until `restarts` restarts have completed; returns each one's overhead over
/// its floor, and the floor.
async fn measure(runtime: Arc<dyn Runtime>, restarts: u32) -> Vec<(Duration, Duration)> {
    let app = app(restarts);
    let handle = app.handle();
    let monitor = app.health();
    let watcher = runtime.clone();
    runtime.spawn(Box::pin(async move {
        let mut changes = monitor.subscribe();
        loop {
            let snapshot = monitor.cached();
            let worker = snapshot.components.iter().find(|c| &*c.name == "worker");
            if worker.is_some_and(|w| w.restarts > restarts) {
                break;
            }
            if watcher
                .timeout(ms(60_000), changes.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        handle.shutdown();
    }));
    let report = app.run_on(runtime).await.expect("runs");
    let stop_path = ms(10 + 15);
    let start_path = ms(40 + 30);
    report
        .restarts
        .iter()
        .filter(|r| r.completed)
        .map(|r| {
            let floor = stop_path + r.backoff + start_path;
            (r.took.saturating_sub(floor), floor)
        })
        .collect()
}

fn summarize(label: &str, runs: &[(Duration, Duration)]) {
    let mut overheads: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    overheads.sort();
    let median = overheads[overheads.len() / 2];
    let floor = runs[0].1;
    let worst = *overheads.last().unwrap();
    println!(
        "{label}: {} restarts; floor ~{:?} (stop path 25 ms + backoff ~20 ms + start path 70 ms); overhead median {:?} ({:.2}% of the floor), worst {:?} ({:.2}%)",
        runs.len(),
        floor,
        median,
        median.as_secs_f64() / floor.as_secs_f64() * 100.0,
        worst,
        worst.as_secs_f64() / floor.as_secs_f64() * 100.0,
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let restarts = if benching { 30 } else { 1 };
    let smol = lifecycle_smol_block_on(measure(Arc::new(SmolRuntime::new()), restarts));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { measure(Arc::new(TokioRuntime::new()), restarts).await });
    if benching {
        summarize("smol", &smol);
        summarize("tokio", &tokio);
    } else {
        assert!(!smol.is_empty() && !tokio.is_empty(), "a restart completed");
    }
}

fn lifecycle_smol_block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    smol::block_on(future)
}
