//! Supervision: a component with a restart policy that fails while the app runs is
//! restarted together with its transitive dependents, in order, while the rest keeps
//! running; the limit escalates to a shutdown; a trigger during a restart wins; readiness
//! follows criticality; resources are replaced.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::HarnessExt;
use common::{ms, Harness, TaskAct, What};
use lifecycle::prelude::*;
use lifecycle::{ComponentState, Outcome, Restart, Signal, Trigger};

fn quick() -> Restart {
    Restart::on_failure().backoff(ms(20), ms(20))
}

fn failing(times: usize) -> TaskAct {
    TaskAct::FailTimes(Arc::new(AtomicUsize::new(times)), ms(50))
}

/// `db` <- `worker` <- `http`, and `cache` on its own: a failure of `worker` cycles
/// `worker` and `http` (stop `http`, stop `worker`, start `worker`, start `http`); `db` and
/// `cache` run on untouched; the shutdown is clean and stops everything once.
async fn a_failure_cycles_the_component_and_its_dependents(h: Harness) {
    let app = App::builder()
        .add(h.probe("db"))
        .add_with(
            h.probe("worker").after(&["db"]).task(failing(1)),
            Options::new().restart(quick()),
        )
        .add(h.probe("http").after(&["worker"]))
        .add(h.probe("cache"))
        .build()
        .unwrap();
    h.shutdown_after(ms(400), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.trigger, Trigger::Requested);
    assert_eq!(report.restarts.len(), 1, "{report}");
    let restart = &report.restarts[0];
    assert_eq!(restart.component, "worker");
    assert_eq!(restart.cycled, ["worker", "http"]);
    assert_eq!(
        restart.cause,
        Outcome::Failed("the task lost its connection".into())
    );
    assert!(restart.completed, "{report}");
    assert!(report.component("worker").unwrap().task_failures.is_empty());
    assert!(report
        .to_string()
        .contains("restart of worker after its task failed"));

    // The restart's order: http stops before worker; worker starts before http.
    let entries = h.timeline().entries();
    let nth = |name: &str, what: What, n: usize| {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.name == name && e.what == what)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {what:?} #{n} of {name}: {entries:?}"))
    };
    assert!(nth("http", What::Stopped, 0) < nth("worker", What::StopBegan, 0));
    assert!(nth("worker", What::Started, 1) < nth("http", What::StartBegan, 1));
    // Untouched: db and cache started once and stopped once, at the shutdown.
    for name in ["db", "cache"] {
        assert_eq!(h.timeline().count(name, What::Started), 1, "{name}");
        assert_eq!(h.timeline().count(name, What::Stopped), 1, "{name}");
    }
    assert!(nth("db", What::StopBegan, 0) > nth("worker", What::Stopped, 1));
    // The cycled ones: started twice, stopped twice (once by the restart, once at exit).
    for name in ["worker", "http"] {
        assert_eq!(h.timeline().count(name, What::Started), 2, "{name}");
        assert_eq!(h.timeline().count(name, What::Stopped), 2, "{name}");
    }
    // The first incarnation's task ended by failing, the second one's was cancelled at
    // the shutdown.
    assert_eq!(h.timeline().count("worker", What::TaskDropped), 2);
}

/// More failures than the limit allows: the one after the limit shuts the app down,
/// exit 1, naming the component and its restarts.
async fn the_limit_escalates_to_a_shutdown(h: Harness) {
    let app = App::builder()
        .add(h.probe("db"))
        .add_with(
            h.probe("worker").after(&["db"]).task(failing(100)),
            Options::new().restart(quick().limit(2, ms(60_000))),
        )
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(
        report.trigger,
        Trigger::RestartsExhausted {
            component: "worker".into(),
            restarts: 2,
            outcome: Outcome::Failed("the task lost its connection".into()),
        }
    );
    assert_eq!(
        report.restarts.len(),
        3,
        "two restarts, and the one given up: {report}"
    );
    assert!(report.restarts[..2].iter().all(|r| r.completed));
    assert!(!report.restarts[2].completed);
    assert_eq!(
        report.failures(),
        ["task of worker failed: the task lost its connection"]
    );
    assert_eq!(h.timeline().count("worker", What::Started), 3);
    assert_eq!(h.timeline().count("db", What::Started), 1);
}

/// A signal during a restart's backoff wins: nothing is started again, and every
/// component that runs is stopped exactly once.
async fn a_trigger_during_a_restart_wins(h: Harness) {
    let app = App::builder()
        .add(h.probe("db"))
        .add_with(
            h.probe("worker").after(&["db"]).task(failing(1)),
            Options::new().restart(Restart::on_failure().backoff(ms(500), ms(500))),
        )
        .add(h.probe("http").after(&["worker"]))
        .build()
        .unwrap();
    h.signal_after(ms(200), Signal::Terminate); // failure at ~50 ms, backoff until ~550 ms
    let report = h.run(app).await;
    assert_eq!(
        report.trigger,
        Trigger::Signal(Signal::Terminate),
        "{report}"
    );
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.restarts.len(), 1);
    assert!(!report.restarts[0].completed, "{report}");
    for name in ["worker", "http"] {
        assert_eq!(
            h.timeline().count(name, What::Started),
            1,
            "{name} not started again"
        );
        assert_eq!(
            h.timeline().count(name, What::Stopped),
            1,
            "{name} stopped once"
        );
    }
    assert_eq!(h.timeline().count("db", What::Stopped), 1);
    assert!(
        report.shutdown < ms(1000),
        "the shutdown did not wait for the backoff: {report}"
    );
}

/// While a critical component restarts the app is not ready; while a non-critical one
/// does, it is ready and degraded. The snapshot shows the state and the restarts.
async fn readiness_follows_criticality(h: Harness, critical: bool) {
    {
        let app = App::builder()
            .add(h.probe("db"))
            .add_with(
                h.probe("cache").task(failing(1)),
                Options::new()
                    .critical(critical)
                    .restart(Restart::on_failure().backoff(ms(400), ms(400))),
            )
            .build()
            .unwrap();
        let monitor = app.health();
        let handle = app.handle();
        let runtime = h.runtime().clone();
        let seen = Arc::new(Mutex::new(None));
        let record = seen.clone();
        let runtime2 = runtime.clone();
        runtime.spawn(Box::pin(async move {
            runtime2.sleep(ms(200)).await; // in the backoff
            let snapshot = monitor.snapshot().await;
            *record.lock().unwrap() = Some(snapshot);
            handle.shutdown();
        }));
        let report = h.run(app).await;
        assert_eq!(report.exit_code(), 0, "{report}");
        let snapshot = seen.lock().unwrap().take().expect("a snapshot");
        let cache = snapshot
            .components
            .iter()
            .find(|c| &*c.name == "cache")
            .unwrap();
        assert_eq!(cache.state, ComponentState::Restarting, "{snapshot:?}");
        assert_eq!(cache.restarts, 1);
        assert!(snapshot.live, "the engine answers during a restart");
        assert_eq!(
            snapshot.ready, !critical,
            "critical: {critical}: {snapshot:?}"
        );
        assert_eq!(
            snapshot.status,
            Some(if critical {
                lifecycle::Status::Down
            } else {
                lifecycle::Status::Degraded
            })
        );
    }
}

async fn a_critical_restart_makes_the_app_unready(h: Harness) {
    readiness_follows_criticality(h, true).await
}

async fn a_non_critical_restart_degrades_the_app(h: Harness) {
    readiness_follows_criticality(h, false).await
}

/// A restarted provider hands its dependents its new value.
async fn a_restarted_provider_hands_out_its_new_value(h: Harness) {
    #[derive(Clone)]
    struct Generation(usize);

    struct Provider {
        starts: Arc<AtomicUsize>,
        fail_first: Arc<AtomicUsize>,
    }
    #[async_trait]
    impl Component for Provider {
        fn name(&self) -> &str {
            "db"
        }
        fn options(&self) -> Options {
            Options::new().provides::<Generation>().restart(quick())
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            let generation = self.starts.fetch_add(1, Ordering::SeqCst);
            ctx.provide(Generation(generation));
            let (runtime, fail) = (ctx.runtime().clone(), self.fail_first.clone());
            ctx.spawn_fallible(async move {
                runtime.sleep(ms(50)).await;
                if fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err("connection lost");
                }
                std::future::pending().await
            });
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    struct User(Arc<Mutex<Vec<usize>>>);
    #[async_trait]
    impl Component for User {
        fn name(&self) -> &str {
            "http"
        }
        fn options(&self) -> Options {
            Options::new().uses::<Generation>()
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            self.0.lock().unwrap().push(ctx.resource::<Generation>()?.0);
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .add(Provider {
            starts: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(1)),
        })
        .add(User(seen.clone()))
        .build()
        .unwrap();
    h.shutdown_after(ms(300), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        *seen.lock().unwrap(),
        [0, 1],
        "http got the new pool after the restart"
    );
}

/// `always`: a task of the start that ends is restarted too.
async fn always_restarts_a_loop_that_ends(h: Harness) {
    let app = App::builder()
        .add_with(
            h.probe("ticker").task(TaskAct::EndAfter(ms(100))),
            Options::new().restart(Restart::always().backoff(ms(10), ms(10))),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(350), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(report.restarts.len() >= 2, "{report}");
    assert_eq!(report.restarts[0].cause, Outcome::Completed);
}

scenarios!(
    a_failure_cycles_the_component_and_its_dependents,
    the_limit_escalates_to_a_shutdown,
    a_trigger_during_a_restart_wins,
    a_critical_restart_makes_the_app_unready,
    a_non_critical_restart_degrades_the_app,
    a_restarted_provider_hands_out_its_new_value,
    always_restarts_a_loop_that_ends,
);
