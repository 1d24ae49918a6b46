//! The engine's own cost, with criterion: building and validating a random graph of
//! 1,000 and 10,000 no-op components, starting and stopping it (a whole `run` on smol
//! and on tokio, and `run_on` a tokio runtime that already exists), and the health
//! aggregate over 1,000 components, cached and uncached.
//!
//! `cargo bench --all-features --bench engine`; a table with the per-component costs
//! follows criterion's output.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use lifecycle::{
    App, HealthMonitor, Phase, Report, Run, ShutdownHandle, SmolRuntime, TokioRuntime,
};

use common::{
    assert_clean, build, cell, components, config, criterion_median, human, median, random_dag,
    Spec, SEED,
};

const SIZES: [usize; 2] = [1_000, 10_000];
/// At most this many dependencies per component, on random earlier components.
const MAX_DEPS: usize = 3;
const HEALTH_NODES: usize = 1_000;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn build_and_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("build_validate");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let specs = random_dag(n, MAX_DEPS, SEED);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("lifecycle", n), &specs, |b, specs| {
            b.iter_batched(
                || components(specs, true),
                |nodes| build(nodes, config()),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// How a start+stop benchmark runs the app.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `run()`: a smol `block_on` per run.
    Smol,
    /// `run_tokio()`: a new multi-threaded tokio runtime per run.
    Tokio,
    /// `run_on` a tokio runtime built once.
    TokioRunOn,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Smol, Mode::Tokio, Mode::TokioRunOn];

    fn name(self) -> &'static str {
        match self {
            Mode::Smol => "smol_run",
            Mode::Tokio => "tokio_run",
            Mode::TokioRunOn => "tokio_run_on",
        }
    }

    fn run(self, app: App, tokio: &tokio::runtime::Runtime) -> Report {
        match self {
            Mode::Smol => app.run(),
            Mode::Tokio => app.run_tokio(),
            Mode::TokioRunOn => tokio
                .block_on(app.run_on(Arc::new(TokioRuntime::from_handle(tokio.handle().clone())))),
        }
        .expect("the app runs")
    }
}

fn start_stop(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let mut group = c.benchmark_group("start_stop");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for n in SIZES {
        let specs = random_dag(n, MAX_DEPS, SEED);
        group.throughput(Throughput::Elements(n as u64));
        for mode in Mode::ALL {
            group.bench_with_input(BenchmarkId::new(mode.name(), n), &specs, |b, specs| {
                b.iter_batched(
                    || build(components(specs, true), config()),
                    |app| mode.run(app, &tokio),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

/// An app of `HEALTH_NODES` no-op components, running in the background until dropped.
struct Background {
    monitor: HealthMonitor,
    handle: ShutdownHandle,
    done: Option<Box<dyn FnOnce() -> Report>>,
}

impl Background {
    fn start(on_tokio: Option<&tokio::runtime::Runtime>, cache_ttl: Duration) -> Background {
        let specs = random_dag(HEALTH_NODES, MAX_DEPS, SEED);
        let app = build(
            components(&specs, false),
            config().health_cache_ttl(cache_ttl),
        );
        let monitor = app.health();
        let handle = app.handle();
        let done: Box<dyn FnOnce() -> Report> = match on_tokio {
            Some(tokio) => {
                let runtime = Arc::new(TokioRuntime::from_handle(tokio.handle().clone()));
                let task = tokio.spawn(app.run_on(runtime));
                let handle = tokio.handle().clone();
                Box::new(move || handle.block_on(task).expect("joined").expect("ran"))
            }
            None => {
                let thread = thread::spawn(move || {
                    smol::block_on(app.run_on(Arc::new(SmolRuntime::new()))).expect("ran")
                });
                Box::new(move || thread.join().expect("joined"))
            }
        };
        while monitor.phase() != Phase::Running {
            thread::sleep(Duration::from_millis(1));
        }
        Background {
            monitor,
            handle,
            done: Some(done),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(done) = self.done.take() {
            assert_clean(&done(), HEALTH_NODES);
        }
    }
}

fn health(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let mut group = c.benchmark_group("health_1000");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for runtime in ["smol", "tokio"] {
        let on_tokio = (runtime == "tokio").then_some(&tokio);
        // `block_on` from the benchmark's thread, as a probe on another thread would ask.
        let block_on = |future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>| {
            match on_tokio {
                Some(tokio) => tokio.block_on(future),
                None => smol::block_on(future),
            }
        };
        for (cache, ttl) in [
            ("cached", Duration::from_secs(3600)),
            ("uncached", Duration::ZERO),
        ] {
            let app = Background::start(on_tokio, ttl);
            let monitor = &app.monitor;
            // The first round of checks, so that the cached case starts cached.
            block_on(Box::pin(async {
                assert!(monitor.snapshot().await.ready);
            }));
            group.bench_function(
                BenchmarkId::new(format!("{runtime}_{cache}"), "snapshot"),
                |b| {
                    b.iter(|| {
                        block_on(Box::pin(async {
                            std::hint::black_box(monitor.snapshot().await);
                        }))
                    })
                },
            );
            group.bench_function(
                BenchmarkId::new(format!("{runtime}_{cache}"), "is_ready"),
                |b| {
                    // Reads the last checks, never runs any: the same cost cached or not.
                    b.iter(|| assert!(monitor.is_ready()))
                },
            );
            drop(app);
        }
    }
    group.finish();
}

/// Startup and shutdown as the report measures them, to split a run in two.
fn split(specs: &[Spec], mode: Mode, tokio: &tokio::runtime::Runtime) -> (Duration, Duration) {
    let mut startups = Vec::new();
    let mut shutdowns = Vec::new();
    for _ in 0..7 {
        let app = build(components(specs, true), config());
        let report = mode.run(app, tokio);
        assert_clean(&report, specs.len());
        startups.push(report.startup);
        shutdowns.push(report.shutdown);
    }
    (median(&mut startups), median(&mut shutdowns))
}

fn summary() {
    let tokio = tokio_runtime();
    println!("\n## engine: criterion medians, per component\n");
    println!("| what | 1,000 components | 10,000 components | per component at 10,000 | marginal per component (1k → 10k) |");
    println!("| --- | --- | --- | --- | --- |");
    let row = |label: &str, id: &dyn Fn(usize) -> String| {
        let small = criterion_median(&id(SIZES[0]));
        let large = criterion_median(&id(SIZES[1]));
        let per = large.map(|ns| ns / SIZES[1] as f64);
        let marginal = small
            .zip(large)
            .map(|(s, l)| (l - s) / (SIZES[1] - SIZES[0]) as f64);
        println!(
            "| {label} | {} | {} | {} | {} |",
            cell(small),
            cell(large),
            cell(per),
            cell(marginal)
        );
    };
    row("build + validate", &|n| {
        format!("build_validate/lifecycle/{n}")
    });
    for mode in Mode::ALL {
        row(&format!("start + stop, {}", mode.name()), &|n| {
            format!("start_stop/{}/{n}", mode.name())
        });
    }

    println!("\nthe same runs split by the report (medians of 7 runs): startup / shutdown\n");
    println!("| mode | 1,000 components | 10,000 components |");
    println!("| --- | --- | --- |");
    for mode in Mode::ALL {
        let cells: Vec<String> = SIZES
            .iter()
            .map(|&n| {
                let (startup, shutdown) = split(&random_dag(n, MAX_DEPS, SEED), mode, &tokio);
                format!("{} / {}", human(startup), human(shutdown))
            })
            .collect();
        println!("| {} | {} | {} |", mode.name(), cells[0], cells[1]);
    }

    println!("\n## health over {HEALTH_NODES} components: criterion medians\n");
    println!(
        "| runtime | cached snapshot | cached is_ready | uncached snapshot | uncached is_ready |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for runtime in ["smol", "tokio"] {
        let get = |cache: &str, what: &str| {
            cell(criterion_median(&format!(
                "health_1000/{runtime}_{cache}/{what}"
            )))
        };
        println!(
            "| {runtime} | {} | {} | {} | {} |",
            get("cached", "snapshot"),
            get("cached", "is_ready"),
            get("uncached", "snapshot"),
            get("uncached", "is_ready"),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = build_and_validate, start_stop, health
}

fn main() {
    common::criterion_main("engine", benches, summary);
}
