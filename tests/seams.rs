//! Where features meet: the library's own components under restart policies, health
//! answered through a slow restart, a signal after a shutdown the app began itself, a
//! shutdown during a restart keeping its budget and flush, and restart policies with
//! durations no clock can count. Each scenario runs on smol, on tokio's paused clock and
//! on tokio's threads.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ms, Harness, HarnessExt, TaskAct, What};
use lifecycle::prelude::*;
use lifecycle::{Background, BuildError, Outcome, Provider, Restart, Signal, Trigger};

fn quick() -> Restart {
    Restart::on_failure().backoff(ms(20), ms(20))
}

/// What the test's provider hands out: which opening it came from.
#[derive(Clone, Debug, PartialEq)]
struct Pool(usize);

/// A `Provider` and a `Background` that uses its value, under `net`, whose task fails
/// once: the restart cycles all three. The provider opens a new value, the loop is built
/// again from the new value, and the shutdown closes the second value once.
async fn provider_and_background_restart_with_their_dependency(h: Harness) {
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let loops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let db = {
        let (opened, closed) = (opened.clone(), closed.clone());
        Provider::new(
            "db",
            move || {
                let n = opened.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok::<_, BoxError>(Pool(n)) }
            },
            move |pool: Pool| {
                closed.lock().unwrap().push(pool.0);
                async {}
            },
        )
    };
    let worker = {
        let loops = loops.clone();
        Background::new("worker", move |ctx: StartContext, pool: Pool| {
            loops.lock().unwrap().push(pool.0);
            async move {
                ctx.shutdown_token().wait().await;
                Ok::<(), BoxError>(())
            }
        })
    };
    let failures = Arc::new(AtomicUsize::new(1));
    let app = App::builder()
        .add_with(
            h.probe("net").task(TaskAct::FailTimes(failures, ms(50))),
            Options::new().restart(quick()),
        )
        .add_with(db, Options::new().depends_on("net"))
        .add(worker)
        .build()
        .unwrap();
    h.shutdown_after(ms(400), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.restarts.len(), 1, "{report}");
    assert!(report.restarts[0].completed, "{report}");
    assert_eq!(report.restarts[0].cycled, ["net", "db", "worker"]);
    assert_eq!(opened.load(Ordering::SeqCst), 2, "the provider opened anew");
    assert_eq!(*loops.lock().unwrap(), [1, 2], "the loop got the new value");
    assert_eq!(*closed.lock().unwrap(), [1, 2], "each value closed once");
}

/// `Restart::always` drives a `Background` loop that ends: it is built and run again,
/// each time, until the shutdown.
async fn restart_always_drives_a_background_loop(h: Harness) {
    let runs = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let runs = runs.clone();
        Background::new("ticker", move |ctx: StartContext| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.runtime().sleep(ms(40)).await;
                Ok::<(), BoxError>(())
            }
        })
    };
    let app = App::builder()
        .add_with(
            ticker,
            Options::new().restart(
                Restart::always()
                    .limit(1000, Duration::from_secs(60))
                    .backoff(ms(10), ms(10)),
            ),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(500), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs >= 5, "the loop ran {runs} times in 500 ms: {report}");
    // The shutdown may come during the last restart's backoff, which it then ends.
    let (_last, before) = report.restarts.split_last().unwrap();
    assert!(before.iter().all(|r| r.completed), "{report}");
}

/// A restart whose stop takes 2 s: liveness stays true throughout (the engine answers
/// health checks while the restart runs), and the restarting component is reported down.
async fn liveness_holds_through_a_slow_restart(h: Harness) {
    let failures = Arc::new(AtomicUsize::new(1));
    let app = App::builder()
        .add_with(
            h.probe("worker")
                .task(TaskAct::FailTimes(failures, ms(50)))
                .stop(common::Act::Sleep(Duration::from_secs(2))),
            Options::new().restart(quick()).critical(false),
        )
        .add(h.probe("api"))
        .build()
        .unwrap();
    let monitor = app.health();
    let runtime = h.runtime().clone();
    let handle = app.handle();
    let watcher = async move {
        // From the failure (50 ms) through the 2 s stop, a kubelet's probes every 250 ms.
        runtime.sleep(ms(100)).await;
        let mut answers = Vec::new();
        for _ in 0..10 {
            let snapshot = monitor.snapshot().await;
            answers.push((snapshot.live, snapshot.ready));
            runtime.sleep(ms(250)).await;
        }
        handle.shutdown();
        answers
    };
    let (report, answers) = futures_util::join!(h.run(app), watcher);

    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.restarts.len(), 1, "{report}");
    assert!(
        answers.iter().all(|&(live, _)| live),
        "liveness failed during the restart: {answers:?}"
    );
    assert!(
        answers.iter().all(|&(_, ready)| ready),
        "a non-critical restart keeps the app ready: {answers:?}"
    );
}

/// After a shutdown the app began itself (the handle), one SIGTERM is logged and changes
/// nothing: the drain and every stop run, exit 0. A second one forces.
async fn one_signal_after_a_requested_shutdown_does_not_force(h: Harness) {
    let app = App::builder()
        .config(Config::default().drain_delay(ms(500)))
        .add(h.probe("db"))
        .add(
            h.probe("http")
                .after(&["db"])
                .stop(common::Act::Sleep(ms(200))),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(100), app.handle());
    h.signal_after(ms(300), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.trigger, Trigger::Requested);
    assert_eq!(report.forced_by, None, "{report}");
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(h.timeline().count("db", What::Stopped), 1);
    assert_eq!(h.timeline().count("http", What::Stopped), 1);
    assert!(
        report.shutdown >= ms(700),
        "the drain ran its whole 500 ms: {report}"
    );
}

async fn two_signals_after_a_requested_shutdown_force(h: Harness) {
    let app = App::builder()
        .config(Config::default().drain_delay(ms(500)))
        .add(h.probe("db"))
        .build()
        .unwrap();
    h.shutdown_after(ms(100), app.handle());
    h.signal_after(ms(200), Signal::Terminate);
    h.signal_after(ms(300), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.forced_by, Some(Signal::Terminate), "{report}");
    assert_eq!(report.exit_code(), 143, "{report}");
}

/// After a failed task began the shutdown, one signal does not force either.
async fn one_signal_after_a_task_failure_does_not_force(h: Harness) {
    let app = App::builder()
        .config(Config::default().drain_delay(ms(300)))
        .add(h.probe("worker").task(TaskAct::FailAfter(ms(50))))
        .add(h.probe("db").stop(common::Act::Sleep(ms(100))))
        .build()
        .unwrap();
    h.signal_after(ms(150), Signal::Interrupt);
    let report = h.run(app).await;

    assert!(
        matches!(report.trigger, Trigger::TaskFailed { .. }),
        "{report}"
    );
    assert_eq!(report.forced_by, None, "{report}");
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(h.timeline().count("db", What::Stopped), 1);
}

/// A SIGTERM during a restart whose subgraph has three 2 s stops, with a 3 s budget: the
/// restart's stops in flight and those after the trigger keep the shutdown's budget, and
/// the flush keeps its reserve.
async fn a_shutdown_during_a_restart_keeps_the_budget_and_the_flush(h: Harness) {
    let budget = Duration::from_secs(3);
    let failures = Arc::new(AtomicUsize::new(1));
    let app = App::builder()
        .config(
            Config::default()
                .shutdown_timeout(budget)
                .flush_reserve(ms(500)),
        )
        .add_with(
            h.probe("a")
                .task(TaskAct::FailTimes(failures, ms(50)))
                .stop(common::Act::Sleep(Duration::from_secs(2))),
            Options::new().restart(quick()),
        )
        .add(
            h.probe("b")
                .after(&["a"])
                .stop(common::Act::Sleep(Duration::from_secs(2))),
        )
        .add(
            h.probe("c")
                .after(&["b"])
                .stop(common::Act::Sleep(Duration::from_secs(2)))
                .flush(common::Act::Sleep(ms(100))),
        )
        .build()
        .unwrap();
    h.signal_after(ms(300), Signal::Terminate);
    let report = h.run(app).await;

    lifecycle::testing::assert_within_budget(&report, budget);
    assert_eq!(
        report.component("c").unwrap().flush.outcome,
        Outcome::Completed,
        "the flush kept its reserve: {report}"
    );
    assert_eq!(h.timeline().count("c", What::Flushed), 1);
}

/// A restart policy whose backoff or window no clock can count is refused at build, like
/// every other duration, instead of panicking inside the engine at the first failure.
async fn restart_durations_past_the_maximum_are_refused(_h: Harness) {
    let too_long = Duration::from_secs(100 * 3600);
    for restart in [
        Restart::on_failure().backoff(too_long, too_long),
        Restart::on_failure().limit(3, Duration::MAX),
    ] {
        let built = App::builder()
            .add_with(
                common::Named("worker", vec![]),
                Options::new().restart(restart),
            )
            .build();
        match built {
            Err(BuildError::InvalidConfig(why)) => {
                assert!(why.contains("worker"), "{why}");
                assert!(why.contains("restart"), "{why}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

/// A `Background` loop on its stop token runs through the drain and until its dependent
/// has stopped (it may still feed it); one on its shutdown token ends at the trigger.
async fn a_background_loop_on_its_stop_token_runs_until_its_turn(h: Harness) {
    let timeline = h.timeline().clone();
    let worker = Background::new("worker", move |ctx: StartContext| {
        let timeline = timeline.clone();
        async move {
            ctx.shutdown_token().wait().await;
            timeline.record("worker-shutdown-token", What::Stopped);
            ctx.stop_token().wait().await;
            timeline.record("worker-stop-token", What::Stopped);
            Ok::<(), BoxError>(())
        }
    });
    let app = App::builder()
        .config(Config::default().drain_delay(ms(100)))
        .add(worker)
        .add(
            h.probe("http")
                .after(&["worker"])
                .stop(common::Act::Sleep(ms(200))),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(50), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    let at = |name: &str| h.timeline().time(name, What::Stopped).unwrap();
    assert!(
        at("worker-shutdown-token") < ms(100),
        "at the trigger: {report}"
    );
    assert!(
        at("worker-stop-token") >= at("http"),
        "the loop ended before its dependent stopped: {report}"
    );
}

/// A probe endpoint whose content type is not a valid header value fails the probe
/// server's start with a message naming it, instead of a panic in the builder.
async fn a_bad_probe_content_type_fails_the_start_clearly(h: Harness) {
    let probes = lifecycle::ProbeServer::bind("127.0.0.1:0")
        .unwrap()
        .endpoint("/metrics", "text/plain\n", String::new);
    let app = App::builder().add(probes).build().unwrap();
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 1, "{report}");
    match &report.trigger {
        Trigger::StartFailed { component, outcome } => {
            assert_eq!(component, "probes");
            assert!(
                outcome.to_string().contains("`/metrics` endpoint"),
                "{outcome}"
            );
        }
        other => panic!("expected a failed start, got {other}"),
    }
}

lifecycle::scenarios!(
    a_background_loop_on_its_stop_token_runs_until_its_turn,
    a_bad_probe_content_type_fails_the_start_clearly,
    provider_and_background_restart_with_their_dependency,
    restart_always_drives_a_background_loop,
    liveness_holds_through_a_slow_restart,
    one_signal_after_a_requested_shutdown_does_not_force,
    two_signals_after_a_requested_shutdown_force,
    one_signal_after_a_task_failure_does_not_force,
    a_shutdown_during_a_restart_keeps_the_budget_and_the_flush,
    restart_durations_past_the_maximum_are_refused,
);
