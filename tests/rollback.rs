//! A failed or interrupted start stops exactly what had started, in reverse order.

mod common;

use common::HarnessExt;
use common::{assert_ordering, ms, Act, Harness, What};
use lifecycle::prelude::*;
use lifecycle::{Outcome, Signal, Trigger};

/// a <- b <- c, and an independent slow d. c fails while d is still starting.
async fn failed_start_rolls_back_exactly_the_started(h: &Harness, c_start: Act, expected: Outcome) {
    let app = App::builder()
        .add(h.probe("a"))
        .add(h.probe("b").after(&["a"]).start(Act::Sleep(ms(10))))
        .add(h.probe("c").after(&["b"]).start(c_start))
        .add(h.probe("e").after(&["c"]))
        .add_with(
            h.probe("d").start(Act::Sleep(ms(2000))),
            Options::new().start_timeout(ms(5000)),
        )
        .config(Config::default().start_timeout(ms(300)))
        .build()
        .unwrap();
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 1, "{report}");
    assert!(!report.reached_running);
    assert_eq!(
        report.trigger,
        Trigger::StartFailed {
            component: "c".into(),
            outcome: expected.clone()
        }
    );
    assert_eq!(report.component("c").unwrap().start.outcome, expected);
    assert_eq!(h.timeline().names(What::Started), ["a", "b"]);
    assert_eq!(
        h.timeline().names(What::Stopped),
        ["b", "a"],
        "the started nodes stop in reverse order"
    );
    assert_eq!(
        h.timeline().names(What::Flushed),
        ["b", "a"],
        "and only they are flushed"
    );
    assert_eq!(
        report.component("d").unwrap().start.outcome,
        Outcome::Cancelled,
        "the start in flight is cancelled"
    );
    assert_eq!(
        h.timeline().count("d", What::StartDropped),
        1,
        "its future was dropped"
    );
    assert_eq!(
        report.component("e").unwrap().start.outcome,
        Outcome::NotRun,
        "nothing new starts"
    );
    assert_eq!(h.timeline().count("e", What::StartBegan), 0);
    assert_eq!(report.component("d").unwrap().stop.outcome, Outcome::NotRun);
    assert!(
        report.shutdown < ms(1000),
        "rollback does not wait for the cancelled start: {:?}",
        report.shutdown
    );
    assert_ordering(h.timeline(), &[("b", "a"), ("c", "b"), ("e", "c")]);
    let failure = &report.failures()[0];
    assert!(
        failure.starts_with("start of c "),
        "the failure names the node: {failure}"
    );
}

async fn start_error(h: Harness) {
    failed_start_rolls_back_exactly_the_started(
        &h,
        Act::Fail,
        Outcome::Failed("start of c refused".into()),
    )
    .await;
}

async fn start_panic(h: Harness) {
    failed_start_rolls_back_exactly_the_started(
        &h,
        Act::Panic,
        Outcome::Panicked("start of c exploded".into()),
    )
    .await;
}

async fn start_timeout(h: Harness) {
    failed_start_rolls_back_exactly_the_started(&h, Act::Hang, Outcome::TimedOut(ms(300))).await;
    assert_eq!(
        h.timeline().count("c", What::StartDropped),
        1,
        "the hung start was dropped"
    );
}

/// The rollback gets a fresh budget, even when the start took longer than the budget.
async fn rollback_gets_a_fresh_budget(h: Harness) {
    let app = App::builder()
        .add(
            h.probe("slow")
                .start(Act::Sleep(ms(800)))
                .stop(Act::Sleep(ms(300))),
        )
        .add(h.probe("broken").after(&["slow"]).start(Act::Fail))
        .config(
            Config::default()
                .shutdown_timeout(ms(600))
                .flush_reserve(ms(100)),
        )
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert_eq!(
        report.component("slow").unwrap().stop.outcome,
        Outcome::Completed,
        "{report}"
    );
    assert_eq!(report.exit_code(), 1);
}

/// SIGTERM while starting: nothing new starts, the start in flight is cancelled, the
/// started nodes stop; the app never ran, so it exits 1 naming the cancelled start.
async fn signal_during_start_aborts_and_exits_1(h: Harness) {
    let app = App::builder()
        .add(h.probe("db"))
        .add(h.probe("cache").after(&["db"]).start(Act::Sleep(ms(1000))))
        .add(h.probe("http").after(&["cache"]))
        .build()
        .unwrap();
    h.signal_when("cache", What::StartBegan, Signal::Terminate);
    let report = h.run(app).await;
    assert_eq!(report.trigger, Trigger::Signal(Signal::Terminate));
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(report.failures(), ["start of cache cancelled by SIGTERM"]);
    assert_eq!(
        report.component("cache").unwrap().start.outcome,
        Outcome::Cancelled
    );
    assert_eq!(h.timeline().names(What::Started), ["db"]);
    assert_eq!(h.timeline().names(What::Stopped), ["db"]);
    assert_eq!(h.timeline().count("http", What::StartBegan), 0);
    assert!(
        report.startup < ms(500),
        "the slow start was cancelled, not awaited: {:?}",
        report.startup
    );
}

/// A shutdown requested before the app runs aborts the start at once.
async fn request_before_run(h: Harness) {
    let app = App::builder()
        .add(h.probe("db").start(Act::Sleep(ms(100))))
        .build()
        .unwrap();
    app.handle().shutdown();
    let report = h.run(app).await;
    assert_eq!(report.trigger, Trigger::Requested);
    assert!(!report.reached_running);
    assert_eq!(
        report.failures(),
        ["start of db cancelled by shutdown requested"]
    );
    assert_eq!(report.exit_code(), 1);
    // The request is seen before the first start completes: that start is cancelled,
    // and nothing is stopped because nothing started.
    assert_eq!(
        report.component("db").unwrap().start.outcome,
        Outcome::Cancelled
    );
    assert_eq!(h.timeline().count("db", What::Started), 0);
    assert_eq!(h.timeline().count("db", What::StopBegan), 0);
    assert!(report.startup < ms(100), "{:?}", report.startup);
}

scenarios!(
    start_error,
    start_panic,
    start_timeout,
    rollback_gets_a_fresh_budget,
    signal_during_start_aborts_and_exits_1,
    request_before_run,
);
