//! Property tests of supervision: random graphs, random restart policies, tracked tasks
//! that fail a random number of times while the app runs, and a SIGTERM at a random
//! moment (often in the middle of a restart). After each run the event log must show:
//!
//! - no component ran while one of its dependencies was stopped (every start came after
//!   its dependencies' latest start with no stop since, every stop began after its
//!   running dependents had stopped): so restarts stop in reverse order and start in
//!   order;
//! - each restart cycled exactly the failed component and its transitive dependents;
//! - every start was matched by exactly one stop (nothing stopped twice, nothing left
//!   running), whether the run ended in a restart or not;
//! - the restart limit escalated exactly when a component failed more often than its
//!   limit allows, and no component was restarted beyond it.
//!
//! tokio runs 256 cases on virtual time, smol 48 smaller ones on the real clock.
//! `PROPTEST_CASES` overrides both.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use common::HarnessExt;
use common::{ms, Harness, TaskAct, What};
use lifecycle::prelude::*;
use lifecycle::{Restart, Signal, Trigger};
use proptest::prelude::*;

/// The restart limit every restarting component gets.
const LIMIT: u32 = 2;

#[derive(Debug, Clone)]
struct Case {
    /// `deps[i]`: components `i` depends on, all `< i`.
    deps: Vec<Vec<usize>>,
    /// Whether `i` restarts on failure (else a failure shuts the app down).
    restarts: Vec<bool>,
    /// How many times `i`'s task fails (each after `fail_after`), then runs on.
    failures: Vec<usize>,
    fail_after: Vec<u64>,
    /// When SIGTERM comes, in ms.
    signal: u64,
}

fn case(max_nodes: usize) -> impl Strategy<Value = Case> {
    (2..=max_nodes).prop_flat_map(|n| {
        (
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
                n,
            ),
            proptest::collection::vec(prop::bool::weighted(0.8), n),
            proptest::collection::vec(
                prop_oneof![4 => Just(0usize), 3 => Just(1), 2 => Just(2), 1 => Just(3)],
                n,
            ),
            proptest::collection::vec(20u64..120, n),
            50u64..600,
        )
            .prop_map(move |(deps, restarts, failures, fail_after, signal)| Case {
                deps: deps
                    .into_iter()
                    .enumerate()
                    .map(|(i, picks)| {
                        let set: BTreeSet<usize> =
                            picks.iter().filter(|_| i > 0).map(|p| p.index(i)).collect();
                        set.into_iter().collect()
                    })
                    .collect(),
                restarts,
                failures,
                fail_after,
                signal,
            })
    })
}

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

fn name(i: usize) -> String {
    format!("c{i}")
}

async fn run_case(h: Harness, case: Case) {
    let n = case.deps.len();
    let mut builder = App::builder().config(
        Config::default()
            .shutdown_timeout(ms(5000))
            .stop_timeout(ms(200)),
    );
    for i in 0..n {
        let deps: Vec<String> = case.deps[i].iter().map(|&d| name(d)).collect();
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        let probe = h.probe(&name(i)).after(&deps).task(TaskAct::FailTimes(
            Arc::new(AtomicUsize::new(case.failures[i])),
            ms(case.fail_after[i]),
        ));
        let options = if case.restarts[i] {
            Options::new().restart(
                Restart::on_failure()
                    .limit(LIMIT, ms(60_000))
                    .backoff(ms(10), ms(40)),
            )
        } else {
            Options::new()
        };
        builder = builder.add_with(probe, options);
    }
    let app = builder.build().unwrap();
    h.signal_after(ms(case.signal), Signal::Terminate);
    let report = h.run(app).await;

    let entries = h.timeline().entries();
    // Whether each component runs, replaying the log.
    let mut running = vec![false; n];
    let index = |name: &str| name[1..].parse::<usize>().unwrap();
    let dependents: Vec<Vec<usize>> = (0..n)
        .map(|i| (0..n).filter(|&j| case.deps[j].contains(&i)).collect())
        .collect();
    for entry in &entries {
        let i = index(&entry.name);
        match entry.what {
            What::StartBegan => {
                for &d in &case.deps[i] {
                    assert!(
                        running[d],
                        "c{i} began starting while its dependency c{d} was not running: {report}"
                    );
                }
            }
            What::Started => running[i] = true,
            What::StopBegan => {
                assert!(running[i], "c{i} began stopping while not running");
                for &d in &dependents[i] {
                    assert!(
                        !running[d],
                        "c{i} began stopping while its dependent c{d} ran: {report}"
                    );
                }
            }
            What::Stopped | What::StopDropped => running[i] = false,
            _ => {}
        }
    }
    // A signal after a failure's shutdown began is a second trigger: it forces the exit,
    // skipping (or cancelling) the stops left, and those components end running.
    let skipped = |i: usize| {
        report.forced_by.is_some()
            && matches!(
                report.component(&name(i)).map(|c| &c.stop.outcome),
                Some(lifecycle::Outcome::Skipped | lifecycle::Outcome::Cancelled)
            )
    };
    for (i, &left) in running.iter().enumerate() {
        assert!(
            !left || skipped(i),
            "c{i} was left running: {running:?}\n{report}"
        );
    }
    for i in (0..n).filter(|&i| !skipped(i)) {
        let started = h.timeline().count(&name(i), What::Started);
        let stopped = h.timeline().count(&name(i), What::Stopped);
        assert_eq!(
            started, stopped,
            "c{i}: every start is matched by exactly one stop"
        );
    }

    // Each restart cycled the failed component and its transitive dependents.
    for restart in &report.restarts {
        let failed = index(&restart.component);
        let mut expected = BTreeSet::new();
        let mut queue = vec![failed];
        while let Some(next) = queue.pop() {
            if expected.insert(next) {
                queue.extend(dependents[next].iter().copied());
            }
        }
        let cycled: BTreeSet<usize> = restart.cycled.iter().map(|c| index(c)).collect();
        assert_eq!(cycled, expected, "{report}");
        assert!(case.restarts[failed]);
    }
    // The limit: never more restarts than it allows; escalation exactly past it.
    for i in 0..n {
        let begun = report
            .restarts
            .iter()
            .filter(|r| r.component == name(i))
            .count();
        assert!(
            begun as u32 <= LIMIT + 1,
            "c{i} restarted {begun} times: {report}"
        );
    }
    if let Trigger::RestartsExhausted {
        component,
        restarts,
        ..
    } = &report.trigger
    {
        assert_eq!(*restarts, LIMIT);
        let i = index(component);
        assert!(
            case.failures[i] as u32 > LIMIT,
            "c{i} failed only {} times",
            case.failures[i]
        );
        let expected = if report.forced_by.is_some() { 143 } else { 1 };
        assert_eq!(report.exit_code(), expected, "{report}");
    }
    if let Trigger::TaskFailed { component, .. } = &report.trigger {
        assert!(
            !case.restarts[index(component)],
            "a restarting component shut the app down"
        );
    }
}

/// A case proptest found: two restarting components failing around an escalation.
#[cfg(feature = "tokio")]
#[test]
fn regression_restarts_around_an_escalation() {
    let deps = vec![
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![3],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![3],
        vec![],
        vec![],
        vec![4],
    ];
    let case = Case {
        deps,
        restarts: vec![
            false, true, false, true, true, true, true, false, false, true, true, true, true, true,
            false,
        ],
        failures: vec![0, 0, 0, 1, 2, 2, 0, 0, 0, 3, 1, 0, 1, 1, 0],
        fail_after: vec![20, 20, 20, 91, 80, 90, 20, 20, 20, 46, 91, 20, 80, 91, 20],
        signal: 234,
    };
    common::on_tokio(|h| run_case(h, case));
}

#[cfg(feature = "tokio")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn tokio_restarts_keep_the_graph_invariants(case in case(24)) {
        common::on_tokio(|h| run_case(h, case));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    #[test]
    fn smol_restarts_keep_the_graph_invariants(case in case(10)) {
        common::on_smol(|h| run_case(h, case));
    }
}
