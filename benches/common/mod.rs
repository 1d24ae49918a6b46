//! What the benchmarks share: a seeded generator, random graphs, components that sleep
//! or do nothing, the critical path of a graph, and criterion's saved estimates.

// Each benchmark binary uses a part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::Outcome;

/// The seed of every generated graph, so that every run measures the same graphs.
pub const SEED: u64 = 0x6c69_6665_6379_636c;

/// SplitMix64: small, seeded, and the same on every machine and version.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A whole number of milliseconds in `lo..=hi`.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// One node of a generated graph: its dependencies (always earlier nodes, so the index
/// order is a topological order) and how long its start and stop take.
#[derive(Debug, Clone)]
pub struct Spec {
    pub deps: Vec<usize>,
    pub start: Duration,
    pub stop: Duration,
}

/// `n` no-op nodes, each depending on up to `max_deps` distinct random earlier nodes.
pub fn random_dag(n: usize, max_deps: usize, seed: u64) -> Vec<Spec> {
    let mut rng = SplitMix::new(seed);
    (0..n)
        .map(|i| {
            let mut deps = Vec::new();
            if i > 0 {
                for _ in 0..rng.below(max_deps + 1) {
                    let d = rng.below(i);
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            Spec {
                deps,
                start: Duration::ZERO,
                stop: Duration::ZERO,
            }
        })
        .collect()
}

/// `layers` layers of `width` nodes; each node past the first layer depends on one to
/// three random nodes of the layer before. Starts and stops take `lo..=hi` ms each.
pub fn layered_dag(layers: usize, width: usize, lo: u64, hi: u64, seed: u64) -> Vec<Spec> {
    let mut rng = SplitMix::new(seed);
    let mut specs = Vec::with_capacity(layers * width);
    for layer in 0..layers {
        for _ in 0..width {
            let mut deps = Vec::new();
            if layer > 0 {
                for _ in 0..1 + rng.below(3) {
                    let d = (layer - 1) * width + rng.below(width);
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            let start = rng.millis(lo, hi);
            let stop = rng.millis(lo, hi);
            specs.push(Spec { deps, start, stop });
        }
    }
    specs
}

/// Every node's dependents.
pub fn dependents(specs: &[Spec]) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); specs.len()];
    for (i, spec) in specs.iter().enumerate() {
        for &d in &spec.deps {
            dependents[d].push(i);
        }
    }
    dependents
}

/// The critical paths: of the start (each node after all its dependencies) and of the
/// stop (each node after all its dependents). No schedule can be faster.
pub fn critical_paths(specs: &[Spec]) -> (Duration, Duration) {
    let mut started = vec![Duration::ZERO; specs.len()];
    for (i, spec) in specs.iter().enumerate() {
        let ready = spec.deps.iter().map(|&d| started[d]).max();
        started[i] = ready.unwrap_or_default() + spec.start;
    }
    let dependents = dependents(specs);
    let mut stopped = vec![Duration::ZERO; specs.len()];
    for i in (0..specs.len()).rev() {
        let ready = dependents[i].iter().map(|&d| stopped[d]).max();
        stopped[i] = ready.unwrap_or_default() + specs[i].stop;
    }
    (
        started.into_iter().max().unwrap_or_default(),
        stopped.into_iter().max().unwrap_or_default(),
    )
}

/// The sums: what running every hook in sequence takes at best.
pub fn sums(specs: &[Spec]) -> (Duration, Duration) {
    (
        specs.iter().map(|s| s.start).sum(),
        specs.iter().map(|s| s.stop).sum(),
    )
}

/// A component of a generated graph: its start and stop sleep on the app's runtime for
/// their durations (not at all when zero). With `last` set, the start that brings the
/// count to zero asks the app to shut down, so a run is start, then stop at once.
#[derive(Debug)]
pub struct Node {
    name: String,
    deps: Vec<String>,
    start: Duration,
    stop: Duration,
    last: Option<Arc<AtomicUsize>>,
}

#[async_trait]
impl Component for Node {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        self.deps
            .iter()
            .fold(Options::new(), |o, d| o.depends_on(d.as_str()))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        if !self.start.is_zero() {
            ctx.runtime().sleep(self.start).await;
        }
        // No await between the count and the return: the start that counts last is
        // the last to end, so the request is handled once the app is running.
        if let Some(left) = &self.last {
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                ctx.shutdown_handle().shutdown();
            }
        }
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        if !self.stop.is_zero() {
            ctx.runtime().sleep(self.stop).await;
        }
        Ok(())
    }
}

/// The components of `specs`; with `stop_when_started`, the last start triggers shutdown.
pub fn components(specs: &[Spec], stop_when_started: bool) -> Vec<Node> {
    let left = stop_when_started.then(|| Arc::new(AtomicUsize::new(specs.len())));
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| Node {
            name: format!("n{i}"),
            deps: spec.deps.iter().map(|d| format!("n{d}")).collect(),
            start: spec.start,
            stop: spec.stop,
            last: left.clone(),
        })
        .collect()
}

/// The configuration of every benchmark: no drain delay (whatever the environment says),
/// the default budgets otherwise.
pub fn config() -> Config {
    Config::default().drain_delay(Duration::ZERO)
}

/// Registers the components and validates the graph.
pub fn build(components: Vec<Node>, config: Config) -> App {
    let mut builder = App::builder().config(config);
    for component in components {
        builder = builder.add(component);
    }
    builder.build().expect("a valid generated graph")
}

/// Panics unless every component started, stopped and flushed, and the exit code is 0.
pub fn assert_clean(report: &Report, n: usize) {
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(report.reached_running, "{report}");
    assert_eq!(report.components.len(), n);
    for component in &report.components {
        assert_eq!(component.start.outcome, Outcome::Completed, "{report}");
        assert_eq!(component.stop.outcome, Outcome::Completed, "{report}");
    }
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// A duration for humans: ns, µs or ms with three significant figures.
pub fn human(d: Duration) -> String {
    human_ns(d.as_secs_f64() * 1e9)
}

/// Nanoseconds for humans.
pub fn human_ns(ns: f64) -> String {
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if value < 10.0 {
        format!("{value:.2} {unit}")
    } else if value < 100.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// Where criterion keeps its results, found as criterion finds it: `CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `criterion/` in the target directory this
/// benchmark runs from (`target/release/deps/<bench>`).
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .nth(3)
                .map(|target| target.join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion's median estimate, in ns per iteration, of the benchmark `id`
/// (`group/function/parameter`), from this run or the last one that measured it.
pub fn criterion_median(id: &str) -> Option<f64> {
    let path = criterion_home().join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// `a / b`, printed as a ratio (`0.52×`), or `-` when either is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".to_owned(),
    }
}

/// A measured median for the table, or `-`.
pub fn cell(ns: Option<f64>) -> String {
    ns.map_or_else(|| "-".to_owned(), human_ns)
}

/// The load averages over 1, 5 and 15 minutes (Linux), to tell a quiet machine from a
/// busy one next to the figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// The `main` of a criterion benchmark: the load average before and after, criterion's
/// run and summary, then `summary` (the table with the ratios) when run with `--bench`.
pub fn criterion_main(name: &str, benches: fn(), summary: fn()) {
    let began = std::time::Instant::now();
    println!("load average at the start: {}", load_average());
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    if std::env::args().any(|arg| arg == "--bench") {
        summary();
    }
    println!(
        "\n({name} benchmarks took {}; load average at the end: {})",
        human(began.elapsed()),
        load_average()
    );
}
