//! Property test of reloads: random graphs (up to 30 components), each component's
//! reloads given random outcomes (ok, slow, error, panic, hang past the reload timeout),
//! one to four `SIGHUP`s at random times, and often a `SIGTERM` that may land in the
//! middle of a reload. After each run the report must show:
//!
//! - order: a component's reload began only once every one of its dependencies had
//!   completed its own reload, in the same reload;
//! - skip: a component is skipped exactly when one of its dependencies did not complete,
//!   and each reload hook ended as its act says (error, panic, timeout, ok);
//! - coalescing: never more reloads than `SIGHUP`s, at least one when one came while
//!   nothing else ran, every reload but an abandoned one complete in its coverage;
//! - abandonment: only the last reload can be abandoned, only by the `SIGTERM`, at the
//!   instant of the `SIGTERM`; the shutdown keeps its budget; the exit code is 0.
//!
//! tokio runs 256 cases on virtual time; smol 48 smaller ones on the real clock.
//! `PROPTEST_CASES` overrides both.
#![cfg(feature = "testing")]

mod common;

use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::testing::{assert_within_budget, Harness};
use lifecycle::{Outcome, ReloadContext, Signal, Trigger};
use proptest::prelude::*;

/// What one reload of one component does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Ok,
    /// Sleeps this many units (up to twice the reload timeout).
    Sleep(u32),
    Fail,
    Panic,
    Hang,
}

const RELOADS: usize = 4;
/// Time units.
const RELOAD_TIMEOUT: u32 = 40;
const SHUTDOWN_TIMEOUT: u32 = 100;

#[derive(Debug, Clone)]
struct Case {
    deps: Vec<Vec<usize>>,
    /// Per component, the act of each of its reloads.
    acts: Vec<[Act; RELOADS]>,
    /// When each SIGHUP comes, in units.
    hups: Vec<u32>,
    term: u32,
}

struct Node {
    name: String,
    deps: Vec<String>,
    unit: Duration,
    act: [Act; RELOADS],
    reloads: usize,
}

#[async_trait]
impl Component for Node {
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> Options {
        self.deps.iter().fold(Options::new(), |options, dep| {
            options.depends_on(dep.clone())
        })
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        let act = self.act[self.reloads.min(RELOADS - 1)];
        self.reloads += 1;
        match act {
            Act::Ok => Ok(()),
            Act::Sleep(units) => {
                ctx.runtime().sleep(self.unit * units).await;
                Ok(())
            }
            Act::Fail => Err("bad config".into()),
            Act::Panic => panic!("deliberate panic in reload"),
            Act::Hang => std::future::pending().await,
        }
    }
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::Ok),
        3 => (0..2 * RELOAD_TIMEOUT).prop_map(Act::Sleep),
        1 => Just(Act::Fail),
        1 => Just(Act::Panic),
        1 => Just(Act::Hang),
    ]
}

fn cases(max_nodes: usize) -> impl Strategy<Value = Case> {
    (1..=max_nodes)
        .prop_flat_map(|n| {
            let deps = (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(vec![]).boxed()
                    } else {
                        prop::collection::vec(0..i, 0..3)
                            .prop_map(|mut deps| {
                                deps.sort_unstable();
                                deps.dedup();
                                deps
                            })
                            .boxed()
                    }
                })
                .collect::<Vec<_>>();
            (
                deps,
                prop::collection::vec(prop::array::uniform4(act()), n),
                prop::collection::vec(1u32..400, 1..=RELOADS),
                50u32..600,
            )
        })
        .prop_map(|(deps, acts, mut hups, term)| {
            hups.sort_unstable();
            Case {
                deps,
                acts,
                hups,
                term,
            }
        })
}

async fn check(h: Harness, case: Case, unit: Duration, slack: Duration) {
    let name = |i: usize| format!("n{i}");
    let mut builder = App::builder().config(
        Config::default()
            .reload_on_sighup(true)
            .reload_timeout(unit * RELOAD_TIMEOUT)
            .shutdown_timeout(unit * SHUTDOWN_TIMEOUT)
            .flush_reserve(unit * 10)
            .report_on_stderr(false),
    );
    for (i, deps) in case.deps.iter().enumerate() {
        // Wrapped, so the kit's own forwarding of `reload` is under test too.
        builder = builder.add(h.wrap(Node {
            name: name(i),
            deps: deps.iter().map(|&d| name(d)).collect(),
            unit,
            act: case.acts[i],
            reloads: 0,
        }));
    }
    let app = builder.build().unwrap();
    for &at in &case.hups {
        h.signal_after(unit * at, Signal::Hangup);
    }
    h.signal_after(unit * case.term, Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.trigger, Trigger::Signal(Signal::Terminate));
    assert_within_budget(&report, unit * SHUTDOWN_TIMEOUT + slack);
    // A SIGHUP at the SIGTERM's instant may come first, and begin a reload at once abandoned.
    let hups_before_term = case.hups.iter().filter(|&&at| at <= case.term).count();
    assert!(report.reloads.len() <= hups_before_term, "{report}");
    if case.hups[0] + 1 < case.term {
        assert!(
            !report.reloads.is_empty(),
            "a SIGHUP before the SIGTERM reloads\n{report}"
        );
    }
    // How many times each component's hook ran, to know which act each reload had.
    let mut calls = vec![0usize; case.deps.len()];
    for (r, reload) in report.reloads.iter().enumerate() {
        let last = r + 1 == report.reloads.len();
        assert!(!reload.abandoned || last, "only the last can be abandoned");
        if reload.abandoned {
            let ended = reload.began + reload.took;
            let term = unit * case.term;
            assert!(
                ended >= term && ended <= term + slack,
                "abandoned at the SIGTERM ({term:?}), not at {ended:?}"
            );
        }
        assert_eq!(reload.components.len(), case.deps.len());
        let step = |i: usize| {
            &reload
                .components
                .iter()
                .find(|(n, _)| *n == name(i))
                .unwrap()
                .1
        };
        for (i, deps) in case.deps.iter().enumerate() {
            let own = step(i);
            let deps_complete = deps.iter().all(|&d| step(d).outcome == Outcome::Completed);
            match &own.outcome {
                Outcome::Skipped => assert!(!deps_complete, "n{i} skipped for nothing"),
                Outcome::NotRun => assert!(reload.abandoned),
                outcome => {
                    assert!(
                        deps_complete,
                        "n{i} reloaded ({outcome}) after a failed dependency"
                    );
                    let began = own.began.expect("a hook that ran began");
                    for &d in deps {
                        let dep = step(d);
                        assert!(
                            dep.began.unwrap() + dep.took <= began,
                            "n{i} began before its dependency n{d} ended"
                        );
                    }
                    let act = case.acts[i][calls[i].min(RELOADS - 1)];
                    calls[i] += 1;
                    let expected = match act {
                        _ if *outcome == Outcome::Cancelled => "cancelled",
                        Act::Ok => "completed",
                        Act::Sleep(units) if units < RELOAD_TIMEOUT => "completed",
                        Act::Sleep(_) | Act::Hang => "timed_out",
                        Act::Fail => "failed",
                        Act::Panic => "panicked",
                    };
                    // A sleep as long as the timeout ends either side of it (and, on the
                    // real clock, one within a few units of it).
                    let margin = if slack.is_zero() { 0 } else { 3 };
                    let borderline = matches!(act, Act::Sleep(u) if u + margin >= RELOAD_TIMEOUT && u <= RELOAD_TIMEOUT + margin);
                    assert!(
                        outcome.kind() == expected || borderline,
                        "n{i}: {act:?} ended {outcome}"
                    );
                    if *outcome == Outcome::Cancelled {
                        assert!(reload.abandoned);
                    }
                }
            }
            if !reload.abandoned {
                assert_ne!(own.outcome, Outcome::NotRun);
                assert_ne!(own.outcome, Outcome::Cancelled);
            }
        }
    }
}

fn quiet_deliberate_panics() {
    common::quiet_panics(|message| message.starts_with("deliberate"));
}

#[cfg(feature = "tokio")]
proptest! {
    #![proptest_config(common::proptest_config(256))]
    #[test]
    fn tokio_reloads_keep_order_skip_and_budget(case in cases(30)) {
        quiet_deliberate_panics();
        lifecycle::testing::on_tokio(|h| check(h, case, Duration::from_millis(10), Duration::ZERO));
    }
}

#[cfg(feature = "smol")]
proptest! {
    #![proptest_config(common::proptest_config(48))]
    #[test]
    fn smol_reloads_keep_order_skip_and_budget(case in cases(12)) {
        quiet_deliberate_panics();
        lifecycle::testing::on_smol(|h| {
            check(h, case, Duration::from_millis(2), Duration::from_millis(40))
        });
    }
}
