//! Property tests: random graphs (up to 300 components, four shapes), each component
//! given random behaviour in start, stop and flush (ok, slow, error, panic, hang), and a
//! random first signal (during start or while running) with an optional second one.
//! After each run the recorded event log must show that nothing started before its
//! dependencies, nothing stopped before its dependents, every started component stopped
//! at most once (exactly once unless a second signal skipped it), nothing else stopped,
//! every started component flushed after the last stop, every tracked task was
//! cancelled, the shutdown kept its budget (exactly, on tokio's virtual clock), and
//! the report and exit code say what the log says.
//!
//! tokio runs 512 cases on virtual time; smol runs 256 smaller cases on the real clock.
//! The second signal case and the report of a stop whose hook had ended came from here:
//! see `second_signal_after_a_stop_hook_ended` in `shutdown.rs`.
//! `PROPTEST_CASES` overrides both.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Harness;
use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;
use lifecycle::{Outcome, Signal, Trigger};
use proptest::prelude::*;

/// What one hook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Ok,
    /// Sleeps this many time units.
    Sleep(u32),
    Fail,
    Panic,
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hook {
    Start,
    Stop,
    Flush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    Err,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Began(Hook),
    Ended(Hook, End),
    /// The hook's future was dropped before it ended.
    Dropped(Hook),
    /// The component's tracked task was cancelled.
    TaskDropped,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: Duration,
    node: usize,
    what: What,
}

type Log = Arc<Mutex<Vec<Event>>>;

/// One generated case: the graph, the behaviours, the signals.
#[derive(Debug, Clone)]
struct Case {
    /// `deps[i]`: the components `i` depends on, all `< i`.
    deps: Vec<Vec<usize>>,
    acts: Vec<[Act; 3]>,
    drain: u32,
    first_signal: u32,
    second_signal: Option<u32>,
}

/// The time unit and the sizes that suit a runtime.
#[derive(Debug, Clone, Copy)]
struct Scale {
    unit: Duration,
    max_nodes: usize,
    /// Slack on the budget check: zero on virtual time.
    slack: Duration,
}

#[cfg(feature = "tokio")]
const VIRTUAL: Scale = Scale {
    unit: Duration::from_millis(1),
    max_nodes: 300,
    slack: Duration::ZERO,
};

const REAL: Scale = Scale {
    unit: Duration::from_micros(250),
    max_nodes: 40,
    slack: Duration::from_millis(100),
};

// Budgets in time units.
const START_TIMEOUT: u32 = 100;
const STOP_TIMEOUT: u32 = 100;
const FLUSH_TIMEOUT: u32 = 50;
const SHUTDOWN_TIMEOUT: u32 = 1500;
const FLUSH_RESERVE: u32 = 300;

/// A small deterministic generator (splitmix64), so a case is its parameters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn act(&mut self, fault_per_mille: u64, can_fail: bool) -> Act {
        if self.chance(fault_per_mille) {
            match (can_fail, self.below(3)) {
                (true, 0) => Act::Fail,
                (true, 1) => Act::Panic,
                _ => Act::Hang,
            }
        } else if self.chance(300) {
            Act::Sleep(self.below(150) as u32) // some beyond the timeouts
        } else {
            Act::Ok
        }
    }
}

impl Case {
    /// Builds the case of `seed` with `n` components of `shape` and a fault rate.
    fn new(
        seed: u64,
        n: usize,
        shape: u8,
        fault_per_mille: u64,
        signals: (u32, Option<u32>),
    ) -> Case {
        let mut rng = Rng(seed);
        let deps = (0..n)
            .map(|i| match (i, shape) {
                (0, _) => vec![],
                // a chain
                (i, 0) => vec![i - 1],
                // a wide fan-out from one root
                (_, 1) => vec![0],
                // layers of about eight, each node on one to three of the layer above
                (i, 2) => {
                    let layer = i / 8;
                    if layer == 0 {
                        vec![]
                    } else {
                        let above = (layer - 1) * 8..layer * 8;
                        let mut deps: Vec<usize> = (0..1 + rng.below(3))
                            .map(|_| above.start + rng.below(8) as usize)
                            .collect();
                        deps.sort_unstable();
                        deps.dedup();
                        deps
                    }
                }
                // a random sparse DAG, with disconnected parts
                (i, _) => {
                    let mut deps: Vec<usize> = (0..rng.below(3))
                        .map(|_| rng.below(i as u64) as usize)
                        .collect();
                    deps.sort_unstable();
                    deps.dedup();
                    deps
                }
            })
            .collect();
        // Faults are rarer in big graphs, so some runs reach `Running`.
        let start_faults = fault_per_mille / (1 + n as u64 / 10);
        let acts = (0..n)
            .map(|_| {
                let flush = match rng.act(fault_per_mille / 2, false) {
                    Act::Hang => Act::Hang,
                    _ => Act::Ok,
                };
                [
                    rng.act(start_faults, true),
                    rng.act(fault_per_mille, true),
                    flush,
                ]
            })
            .collect();
        Case {
            deps,
            acts,
            drain: if rng.chance(500) { 0 } else { 100 },
            first_signal: signals.0,
            second_signal: signals.1.map(|after| signals.0 + after),
        }
    }
}

/// A component that does what its case says and logs everything that happens to it.
struct Fuzz {
    id: usize,
    name: String,
    deps: Vec<String>,
    acts: [Act; 3],
    unit: Duration,
    log: Log,
    runtime: Arc<dyn Runtime>,
    origin: std::time::Instant,
}

/// Logs `what` (`Dropped` or `TaskDropped`) if dropped while armed.
struct Armed {
    log: Log,
    runtime: Arc<dyn Runtime>,
    origin: std::time::Instant,
    node: usize,
    what: What,
    armed: bool,
}

impl Armed {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.armed {
            let at = self.runtime.now() - self.origin;
            let (node, what) = (self.node, self.what);
            self.log.lock().unwrap().push(Event { at, node, what });
        }
    }
}

impl Fuzz {
    fn push(&self, what: What) {
        self.log.lock().unwrap().push(Event {
            at: self.runtime.now() - self.origin,
            node: self.id,
            what,
        });
    }

    fn armed(&self, what: What) -> Armed {
        Armed {
            log: self.log.clone(),
            runtime: self.runtime.clone(),
            origin: self.origin,
            node: self.id,
            what,
            armed: true,
        }
    }

    async fn run(&self, hook: Hook) -> Result<(), BoxError> {
        self.push(What::Began(hook));
        let armed = self.armed(What::Dropped(hook));
        let end = match self.acts[hook as usize] {
            Act::Ok => End::Ok,
            Act::Sleep(units) => {
                self.runtime.sleep(self.unit * units).await;
                End::Ok
            }
            Act::Fail => End::Err,
            Act::Panic => End::Panic,
            Act::Hang => std::future::pending().await,
        };
        armed.disarm();
        self.push(What::Ended(hook, end));
        match end {
            End::Ok => Ok(()),
            End::Err => Err(format!("{hook:?} of {} refused", self.name).into()),
            End::Panic => panic!("{hook:?} of {} exploded", self.name),
        }
    }
}

#[async_trait]
impl Component for Fuzz {
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> Options {
        self.deps
            .iter()
            .fold(Options::new(), |o, d| o.depends_on(d.as_str()))
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let task = self.armed(What::TaskDropped);
        ctx.spawn(async move {
            let _task = task;
            std::future::pending::<()>().await
        });
        self.run(Hook::Start).await
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.run(Hook::Stop).await
    }
    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.run(Hook::Flush).await
    }
}

/// Runs `case` on the harness's runtime and checks every property.
async fn check(h: Harness, case: Case, scale: Scale) {
    let unit = scale.unit;
    let log: Log = Arc::default();
    let origin = h.runtime().now();
    let n = case.deps.len();
    let mut builder = App::builder().config(
        Config::default()
            .start_timeout(unit * START_TIMEOUT)
            .stop_timeout(unit * STOP_TIMEOUT)
            .flush_timeout(unit * FLUSH_TIMEOUT)
            .shutdown_timeout(unit * SHUTDOWN_TIMEOUT)
            .flush_reserve(unit * FLUSH_RESERVE)
            .drain_delay(unit * case.drain),
    );
    for i in 0..n {
        builder = builder.add(Fuzz {
            id: i,
            name: format!("n{i}"),
            deps: case.deps[i].iter().map(|d| format!("n{d}")).collect(),
            acts: case.acts[i],
            unit,
            log: log.clone(),
            runtime: h.runtime().clone(),
            origin,
        });
    }
    let app = builder.build().expect("generated graphs are valid");
    h.signal_after(unit * case.first_signal, Signal::Terminate);
    if let Some(second) = case.second_signal {
        h.signal_after(unit * second, Signal::Interrupt);
    }
    let report = h.run(app).await;
    let triggered = (h.runtime().now() - origin).saturating_sub(report.shutdown);
    // Cancelled tasks are dropped at their next wake-up: give them a moment.
    h.runtime().sleep(Duration::from_millis(10)).await;
    let events = log.lock().unwrap().clone();
    verify(&case, scale, &events, &report, triggered);
}

/// Checks the properties; `triggered` is when shutdown began, from the run's start.
fn verify(case: &Case, scale: Scale, events: &[Event], report: &Report, triggered: Duration) {
    let n = case.deps.len();
    let position =
        |node: usize, what: What| events.iter().position(|e| e.node == node && e.what == what);
    let count = |node: usize, what: &dyn Fn(What) -> bool| {
        events
            .iter()
            .filter(|e| e.node == node && what(e.what))
            .count()
    };
    let ended = |node: usize, hook: Hook| {
        events.iter().position(|e| {
            e.node == node && matches!(e.what, What::Ended(h, _) | What::Dropped(h) if h == hook)
        })
    };
    let started: Vec<bool> = (0..n)
        .map(|i| position(i, What::Ended(Hook::Start, End::Ok)).is_some())
        .collect();
    let report_of = |i: usize| report.component(&format!("n{i}")).unwrap();

    // No component starts before all its dependencies have finished starting.
    for (i, deps) in case.deps.iter().enumerate() {
        if let Some(began) = position(i, What::Began(Hook::Start)) {
            for &d in deps {
                let dep_started = position(d, What::Ended(Hook::Start, End::Ok));
                assert!(
                    dep_started.is_some_and(|s| s < began),
                    "n{i} began starting before its dependency n{d} started"
                );
            }
        }
    }
    // No component stops before all its dependents have finished stopping.
    for (i, deps) in case.deps.iter().enumerate() {
        for &d in deps {
            if let Some(began) = position(d, What::Began(Hook::Stop)) {
                if started[i] {
                    assert!(
                        ended(i, Hook::Stop).is_some_and(|e| e < began),
                        "n{d} began stopping before its dependent n{i} stopped"
                    );
                }
            }
        }
    }
    let forced = report.forced_by.is_some();
    for (i, &started_i) in started.iter().enumerate() {
        // Every started component stops at most once, exactly once unless forced;
        // nothing else stops.
        let stops = count(i, &|w| w == What::Began(Hook::Stop));
        if started_i {
            assert!(stops <= 1, "n{i} stopped {stops} times");
            if !forced {
                assert_eq!(stops, 1, "started n{i} never stopped");
            }
            // Every started component flushes once, after the last stop.
            assert_eq!(
                count(i, &|w| w == What::Began(Hook::Flush)),
                1,
                "n{i} flushes"
            );
        } else {
            assert_eq!(stops, 0, "n{i} stopped without having started");
            assert_eq!(count(i, &|w| w == What::Began(Hook::Flush)), 0);
        }
        // Every tracked task was cancelled: nothing started is left running.
        if position(i, What::Began(Hook::Start)).is_some() {
            assert_eq!(
                count(i, &|w| w == What::TaskDropped),
                1,
                "the task of n{i} is still running"
            );
        }
    }
    let last_stop = events.iter().rposition(|e| {
        matches!(
            e.what,
            What::Ended(Hook::Stop, _) | What::Dropped(Hook::Stop)
        )
    });
    let first_flush = events
        .iter()
        .position(|e| e.what == What::Began(Hook::Flush));
    if let (Some(stop), Some(flush)) = (last_stop, first_flush) {
        assert!(stop < flush, "a flush began before the last stop ended");
    }

    // The shutdown keeps its budget; the flush its reserve.
    let budget = scale.unit * SHUTDOWN_TIMEOUT;
    assert!(
        report.shutdown <= budget + scale.slack,
        "shutdown took {:?} of a {budget:?} budget",
        report.shutdown
    );
    if let Some(flush_began) = first_flush {
        // The stops cannot eat the flush reserve, and the flushes end within the budget.
        let budget_end = triggered + budget;
        let reserve = scale.unit * FLUSH_RESERVE;
        let began = events[flush_began].at;
        assert!(
            began <= budget_end - reserve + scale.slack,
            "the flush began at {began:?}, inside its reserve (budget ends at {budget_end:?})"
        );
        let flush_ended = events
            .iter()
            .filter(|e| {
                matches!(
                    e.what,
                    What::Ended(Hook::Flush, _) | What::Dropped(Hook::Flush)
                )
            })
            .map(|e| e.at)
            .max()
            .unwrap_or(began);
        assert!(
            flush_ended <= budget_end + scale.slack,
            "a flush ended at {flush_ended:?}, after the budget ({budget_end:?})"
        );
    }

    // The report says what the log says.
    for (i, &started_i) in started.iter().enumerate() {
        let r = report_of(i);
        for (hook, step) in [
            (Hook::Start, &r.start),
            (Hook::Stop, &r.stop),
            (Hook::Flush, &r.flush),
        ] {
            let began = position(i, What::Began(hook)).is_some();
            let end = events.iter().find_map(|e| match e.what {
                What::Ended(h, end) if e.node == i && h == hook => Some(end),
                _ => None,
            });
            let dropped = position(i, What::Dropped(hook)).is_some();
            let ok = match (&step.outcome, began, end, dropped) {
                (Outcome::NotRun, false, None, false) => true,
                (Outcome::Skipped, false, None, false) => forced && hook == Hook::Stop && started_i,
                (Outcome::Completed, true, Some(End::Ok), false) => true,
                (Outcome::Failed(_), true, Some(End::Err), false) => true,
                (Outcome::Panicked(_), true, Some(End::Panic), false) => true,
                (Outcome::TimedOut(_), true, None, true) => true,
                // Cancelled: dropped, possibly before its first poll (no code of the
                // hook ran then).
                (Outcome::Cancelled, began, None, dropped) => {
                    began == dropped && hook != Hook::Flush
                }
                _ => false,
            };
            assert!(
                ok,
                "n{i}'s {hook:?} is reported {:?}, but it began={began} ended={end:?} dropped={dropped}",
                step.outcome
            );
        }
    }
    let all_started = started.iter().all(|&s| s);
    assert_eq!(report.reached_running, all_started);
    match &report.trigger {
        Trigger::StartFailed { component, outcome } => {
            assert!(!all_started);
            assert!(outcome.is_failure(), "{outcome:?}");
            assert_eq!(&report.component(component).unwrap().start.outcome, outcome);
        }
        Trigger::Signal(Signal::Terminate) => {}
        other => panic!("unexpected trigger {other:?}"),
    }
    let faults = report.components.iter().any(|c| {
        c.start.outcome.is_failure() || c.stop.outcome.is_failure() || c.flush.outcome.is_failure()
    });
    let expected_code = match report.forced_by {
        Some(signal) => 128 + signal.number() as u8,
        // A start aborted (by a fault or by the signal) means the app never ran.
        None if faults || !all_started => 1,
        None => 0,
    };
    assert_eq!(report.exit_code(), expected_code, "{report}");
    let names: HashSet<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), n, "the report lists every component once");
}

/// Keeps the hooks' deliberate panics out of the test output; other panics print.
fn quiet_deliberate_panics() {
    common::quiet_panics(|message| message.ends_with("exploded"));
}

/// The generated parameters of a case.
fn cases(max_nodes: usize) -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        1..=max_nodes,
        0u8..4,
        prop_oneof![Just(0u64), Just(20), Just(100), Just(400)],
        0u32..600,
        prop::option::of(0u32..800),
    )
        .prop_map(|(seed, n, shape, faults, first, second)| {
            Case::new(seed, n, shape, faults, (first, second))
        })
}

#[cfg(feature = "tokio")]
proptest! {
    #![proptest_config(common::proptest_config(512))]
    #[test]
    fn tokio_random_graphs_with_faults(case in cases(VIRTUAL.max_nodes)) {
        quiet_deliberate_panics();
        common::on_tokio(|h| check(h, case, VIRTUAL));
    }
}

proptest! {
    #![proptest_config(common::proptest_config(256))]
    #[test]
    fn smol_random_graphs_with_faults(case in cases(REAL.max_nodes)) {
        quiet_deliberate_panics();
        common::on_smol(|h| check(h, case, REAL));
    }
}

/// A shrunk case kept as an example (it caught a wrong budget check in `verify`): one
/// component whose stop takes 17 ms, a drain delay, and a signal 1 ms in.
#[cfg(feature = "tokio")]
#[test]
fn regression_slow_stop_after_a_drain() {
    let case = Case {
        deps: vec![vec![]],
        acts: vec![[Act::Ok, Act::Sleep(17), Act::Ok]],
        drain: 100,
        first_signal: 1,
        second_signal: None,
    };
    common::on_tokio(|h| check(h, case, VIRTUAL));
}
