//! Start and stop of a layered graph of slow components, on smol and on tokio: wall
//! time against the graph's critical path (no schedule can be faster), against a
//! hand-rolled optimal schedule on the same runtime and timers (the runtime's own floor),
//! and against running the same hooks one after the other (what go's fx does).
//!
//! `cargo bench --all-features --bench slow_dag`. Run without `--bench` (as
//! `cargo test --benches` does), it only checks that everything runs, once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture, FutureExt, Shared};
use lifecycle::{Run, Runtime, SmolRuntime, TokioRuntime};

use common::{
    assert_clean, build, components, config, critical_paths, dependents, human, layered_dag,
    load_average, median, sums, Spec, SEED,
};

const LAYERS: usize = 10;
const WIDTH: usize = 10;
const MIN_MS: u64 = 5;
const MAX_MS: u64 = 20;

/// Start and stop times of one run.
#[derive(Debug, Clone, Copy)]
struct Times {
    start: Duration,
    stop: Duration,
    /// The whole call, from before `run` to its return (the runtime's creation, the
    /// signal handlers' registration, the report included).
    wall: Duration,
}

/// Runs the start hooks as soon as their dependencies are done, then the stop hooks as
/// soon as their dependents are done: the best any orchestrator can do on this runtime,
/// with the same sleeps as the components'.
async fn hand_rolled(specs: &[Spec], runtime: Arc<dyn Runtime>) -> Times {
    type Done = Shared<BoxFuture<'static, ()>>;
    let began = Instant::now();
    let mut started: Vec<Done> = Vec::with_capacity(specs.len());
    for spec in specs {
        let deps: Vec<Done> = spec.deps.iter().map(|&d| started[d].clone()).collect();
        let (runtime, took) = (runtime.clone(), spec.start);
        started.push(
            async move {
                join_all(deps).await;
                runtime.sleep(took).await;
            }
            .boxed()
            .shared(),
        );
    }
    join_all(started).await;
    let start = began.elapsed();

    let stop_began = Instant::now();
    let dependents = dependents(specs);
    let mut stopped: Vec<Option<Done>> = vec![None; specs.len()];
    for i in (0..specs.len()).rev() {
        let after: Vec<Done> = dependents[i]
            .iter()
            .map(|&d| stopped[d].clone().expect("dependents come later"))
            .collect();
        let (runtime, took) = (runtime.clone(), specs[i].stop);
        stopped[i] = Some(
            async move {
                join_all(after).await;
                runtime.sleep(took).await;
            }
            .boxed()
            .shared(),
        );
    }
    join_all(stopped.into_iter().flatten()).await;
    let stop = stop_began.elapsed();
    Times {
        start,
        stop,
        wall: began.elapsed(),
    }
}

/// Every start hook in order, then every stop hook in reverse order.
async fn sequential(specs: &[Spec], runtime: Arc<dyn Runtime>) -> Times {
    let began = Instant::now();
    for spec in specs {
        runtime.sleep(spec.start).await;
    }
    let start = began.elapsed();
    let stop_began = Instant::now();
    for spec in specs.iter().rev() {
        runtime.sleep(spec.stop).await;
    }
    let stop = stop_began.elapsed();
    Times {
        start,
        stop,
        wall: began.elapsed(),
    }
}

fn lifecycle_run(specs: &[Spec], tokio: bool) -> Times {
    let app = build(components(specs, true), config());
    let began = Instant::now();
    let report = if tokio { app.run_tokio() } else { app.run() }.expect("the app runs");
    let wall = began.elapsed();
    assert_clean(&report, specs.len());
    Times {
        start: report.startup,
        stop: report.shutdown,
        wall,
    }
}

fn medians(runs: Vec<Times>) -> Times {
    let pick = |f: fn(&Times) -> Duration| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    Times {
        start: pick(|t| t.start),
        stop: pick(|t| t.stop),
        wall: pick(|t| t.wall),
    }
}

fn over(measured: Duration, reference: Duration) -> String {
    let pct = (measured.as_secs_f64() / reference.as_secs_f64() - 1.0) * 100.0;
    format!("{pct:+.1}%")
}

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let (runs, sequential_runs) = if bench { (9, 2) } else { (1, 1) };
    let specs = layered_dag(LAYERS, WIDTH, MIN_MS, MAX_MS, SEED);
    let (critical_start, critical_stop) = critical_paths(&specs);
    let critical = critical_start + critical_stop;
    let (sum_start, sum_stop) = sums(&specs);
    println!(
        "slow_dag: {} nodes in {LAYERS} layers of {WIDTH}, each start and stop {MIN_MS}-{MAX_MS} ms (seed {SEED:#x})",
        specs.len()
    );
    println!(
        "critical path: start {}, stop {}, total {}; in sequence: start {}, stop {}, total {}",
        human(critical_start),
        human(critical_stop),
        human(critical),
        human(sum_start),
        human(sum_stop),
        human(sum_start + sum_stop),
    );
    println!(
        "medians of {runs} runs ({sequential_runs} in sequence); load average at the start: {}\n",
        load_average()
    );
    println!("| runtime | schedule | start | stop | start+stop | vs critical path | whole call |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for runtime_name in ["smol", "tokio"] {
        let on_tokio = runtime_name == "tokio";
        let runtime: Arc<dyn Runtime> = if on_tokio {
            Arc::new(TokioRuntime::from_handle(tokio.handle().clone()))
        } else {
            Arc::new(SmolRuntime::new())
        };
        let block_on = |future: BoxFuture<'_, Times>| {
            if on_tokio {
                tokio.block_on(future)
            } else {
                smol::block_on(future)
            }
        };
        // One run of each first, not counted: page faults, lazy statics, thread pools.
        lifecycle_run(&specs, on_tokio);
        let engine = medians((0..runs).map(|_| lifecycle_run(&specs, on_tokio)).collect());
        let floor = medians(
            (0..runs)
                .map(|_| block_on(hand_rolled(&specs, runtime.clone()).boxed()))
                .collect(),
        );
        let in_sequence = medians(
            (0..sequential_runs)
                .map(|_| block_on(sequential(&specs, runtime.clone()).boxed()))
                .collect(),
        );
        for (schedule, times) in [
            ("lifecycle `run`", engine),
            ("hand-rolled optimal", floor),
            ("in sequence", in_sequence),
        ] {
            println!(
                "| {runtime_name} | {schedule} | {} ({}) | {} ({}) | {} | {} | {} |",
                human(times.start),
                over(times.start, critical_start),
                human(times.stop),
                over(times.stop, critical_stop),
                human(times.start + times.stop),
                over(times.start + times.stop, critical),
                human(times.wall),
            );
        }
        println!(
            "| {runtime_name} | lifecycle vs hand-rolled | {} | {} | {} | | |",
            over(engine.start, floor.start),
            over(engine.stop, floor.stop),
            over(engine.start + engine.stop, floor.start + floor.stop),
        );
        println!(
            "| {runtime_name} | lifecycle speed-up over sequence | | | {:.1}× | | |",
            (in_sequence.start + in_sequence.stop).as_secs_f64()
                / (engine.start + engine.stop).as_secs_f64(),
        );
    }
    println!("\nload average at the end: {}", load_average());
}
