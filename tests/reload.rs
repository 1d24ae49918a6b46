//! Reload (`Component::reload`), on every runtime: the graph order with independent
//! components concurrent, a failure keeping the old state and skipping the dependents,
//! coalesced requests, a shutdown abandoning a reload with its budget intact, `SIGHUP`
//! only when the app asked for it and never counted as a forcing signal, resources
//! replaced only by a completed reload, and health answered during a slow reload.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::testing::{assert_within_budget, Fault, Harness, Hook, What};
use lifecycle::{Outcome, ReloadContext, ReloadTrigger, Signal};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A component that depends on `deps`, does nothing, and reloads in `reload` time.
struct Part {
    name: &'static str,
    deps: &'static [&'static str],
    reload: Duration,
}

fn part(name: &'static str, deps: &'static [&'static str]) -> Part {
    Part {
        name,
        deps,
        reload: Duration::from_millis(100),
    }
}

#[async_trait]
impl Component for Part {
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> Options {
        self.deps
            .iter()
            .fold(Options::new(), |options, dep| options.depends_on(*dep))
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.reload).await;
        Ok(())
    }
}

fn reloading() -> Config {
    Config::default().reload_on_sighup(true)
}

/// The outcome kinds of a reload, by component, in start order.
fn kinds(reload: &lifecycle::ReloadReport) -> Vec<(String, &'static str)> {
    reload
        .components
        .iter()
        .map(|(name, step)| (name.clone(), step.outcome.kind()))
        .collect()
}

fn pairs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected
        .iter()
        .map(|&(name, kind)| (name.to_owned(), kind))
        .collect()
}

/// db <- cache <- http, and metrics on its own. The first reload of `cache` fails: `db`
/// and `metrics` reload, `http` is skipped; the second SIGHUP reloads everything.
async fn dependencies_first_and_a_failure_skips_its_dependents(h: Harness) {
    let app = App::builder()
        .config(reloading())
        .add(h.wrap(part("db", &[])))
        .add(
            h.wrap(part("cache", &["db"]))
                .inject_at(Hook::Reload, Fault::Fail, 1),
        )
        .add(h.wrap(part("http", &["cache"])))
        .add(h.wrap(part("metrics", &[])))
        .build()
        .unwrap();
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(secs(2), Signal::Hangup);
    h.signal_after(secs(3), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(
        report.exit_code(),
        0,
        "a failed reload is no failed run\n{report}"
    );
    assert_eq!(report.reloads.len(), 2, "{report}");
    let first = &report.reloads[0];
    assert_eq!(first.trigger, ReloadTrigger::Signal(Signal::Hangup));
    assert_eq!(
        kinds(first),
        pairs(&[
            ("db", "completed"),
            ("metrics", "completed"),
            ("cache", "failed"),
            ("http", "skipped")
        ]),
        "in start order"
    );
    assert_eq!(
        first.failures(),
        [
            "reload of cache failed: injected failure",
            "reload of http skipped"
        ]
    );
    assert!(!first.is_complete() && !first.abandoned);
    assert!(report.reloads[1].is_complete(), "{}", report.reloads[1]);
    assert!(
        report.to_string().contains("reload by SIGHUP: incomplete"),
        "{report}"
    );

    let timeline = h.timeline();
    assert_eq!(
        timeline.count("http", What::ReloadBegan),
        1,
        "skipped the first time"
    );
    assert_eq!(timeline.count("db", What::Reloaded), 2);
    // Dependencies first, in both reloads; independent ones at once.
    let began = |name| {
        timeline
            .entries()
            .into_iter()
            .filter(|e| e.name == name && e.what == What::ReloadBegan)
            .map(|e| e.at)
            .collect::<Vec<_>>()
    };
    let ended = |name| {
        timeline
            .entries()
            .into_iter()
            .filter(|e| e.name == name && matches!(e.what, What::Reloaded | What::HookFailed))
            .map(|e| e.at)
            .collect::<Vec<_>>()
    };
    for round in 0..2 {
        assert!(ended("db")[round] <= began("cache")[round]);
        assert!(
            began("metrics")[round].abs_diff(began("db")[round]) < Duration::from_millis(50),
            "independent components reload concurrently"
        );
    }
    assert!(ended("cache")[1] <= began("http")[0]);
}

/// A SIGTERM in the middle of a slow reload: the reload is abandoned at once (the hook in
/// flight dropped, the dependents never asked), and the shutdown keeps its whole budget.
async fn a_shutdown_abandons_a_slow_reload_and_keeps_its_budget(h: Harness) {
    let budget = secs(10);
    let app = App::builder()
        .config(reloading().shutdown_timeout(budget))
        .add(h.wrap(part("db", &[])))
        .add(h.wrap(Part {
            reload: secs(60),
            ..part("cache", &["db"])
        }))
        .add(
            h.wrap(part("http", &["cache"]))
                .inject(Hook::Stop, Fault::Sleep(secs(5))),
        )
        .build()
        .unwrap();
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(secs(2), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        report.trigger,
        lifecycle::Trigger::Signal(Signal::Terminate)
    );
    let reload = &report.reloads[0];
    assert!(reload.abandoned, "{reload}");
    assert_eq!(
        kinds(reload),
        pairs(&[
            ("db", "completed"),
            ("cache", "cancelled"),
            ("http", "not_run")
        ])
    );
    let timeline = h.timeline();
    assert_eq!(timeline.count("cache", What::ReloadDropped), 1);
    assert_eq!(timeline.count("http", What::ReloadBegan), 0);
    // The shutdown began at the SIGTERM, and its stops had their whole time.
    let stopped = timeline.time("http", What::Stopped).expect("http stopped");
    assert!(
        stopped >= secs(7) && stopped < secs(8),
        "http's 5 s stop began at the SIGTERM: {stopped:?}"
    );
    assert_within_budget(&report, budget);
}

/// Five requests while a reload runs make exactly one more reload.
async fn requests_during_a_reload_coalesce_into_one_more(h: Harness) {
    let app = App::builder()
        .add(h.wrap(Part {
            reload: secs(1),
            ..part("config", &[])
        }))
        .build()
        .unwrap();
    let reload = app.reload_handle();
    let runtime = h.runtime().clone();
    runtime.clone().spawn(Box::pin(async move {
        runtime.sleep(Duration::from_millis(500)).await;
        for _ in 0..6 {
            reload.reload(); // the first begins a reload, the others come during it
            runtime.sleep(Duration::from_millis(100)).await;
        }
    }));
    h.shutdown_after(secs(5), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.reloads.len(), 2, "{report}");
    assert!(report.reloads.iter().all(|r| r.is_complete()));
    assert_eq!(report.reloads[0].trigger, ReloadTrigger::Requested);
    assert_eq!(h.timeline().count("config", What::Reloaded), 2);
}

/// Without `reload_on_sighup`, SIGHUP reloads nothing; and during a shutdown, a SIGHUP
/// is not the second signal that forces the exit.
async fn sighup_reloads_only_when_asked_and_never_forces(h: Harness) {
    let app = App::builder()
        .add(
            h.wrap(part("db", &[]))
                .inject(Hook::Stop, Fault::Sleep(secs(3))),
        )
        .build()
        .unwrap();
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(secs(2), Signal::Terminate);
    h.signal_after(secs(3), Signal::Hangup);
    let report = h.run(app).await;

    assert!(report.reloads.is_empty(), "{report}");
    assert_eq!(h.timeline().count("db", What::ReloadBegan), 0);
    assert_eq!(report.forced_by, None, "{report}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.component("db").unwrap().stop.outcome,
        Outcome::Completed
    );
}

/// A reload request during the shutdown is ignored: the stops go on as they would.
async fn a_reload_during_the_shutdown_is_ignored(h: Harness) {
    let app = App::builder()
        .config(reloading())
        .add(
            h.wrap(part("db", &[]))
                .inject(Hook::Stop, Fault::Sleep(secs(2))),
        )
        .build()
        .unwrap();
    let reload = app.reload_handle();
    let runtime = h.runtime().clone();
    runtime.clone().spawn(Box::pin(async move {
        runtime.sleep(secs(2)).await;
        reload.reload();
    }));
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(Duration::from_millis(1500), Signal::Terminate);
    h.signal_after(secs(2), Signal::Hangup);
    let report = h.run(app).await;

    assert_eq!(
        report.reloads.len(),
        1,
        "only the one before the shutdown\n{report}"
    );
    assert_eq!(h.timeline().count("db", What::ReloadBegan), 1);
    assert_eq!(report.forced_by, None);
    assert_eq!(report.exit_code(), 0);
}

#[derive(Clone, Debug, PartialEq)]
struct Settings(u32);

/// Provides `Settings`: its first reload stages new settings and fails, its second
/// completes without providing.
struct Source {
    reloads: u32,
}

#[async_trait]
impl Component for Source {
    fn name(&self) -> &str {
        "source"
    }
    fn options(&self) -> Options {
        Options::new().provides::<Settings>()
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.provide(Settings(1));
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        self.reloads += 1;
        match self.reloads {
            1 => {
                ctx.provide(Settings(2));
                Err("the new file does not parse".into())
            }
            2 => Ok(()),
            _ => {
                ctx.provide(Settings(self.reloads));
                Ok(())
            }
        }
    }
}

/// Records the `Settings` it sees in each reload.
struct User(Arc<Mutex<Vec<Settings>>>);

#[async_trait]
impl Component for User {
    fn name(&self) -> &str {
        "user"
    }
    fn options(&self) -> Options {
        Options::new().uses::<Settings>()
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(ctx.resource::<Settings>()?);
        Ok(())
    }
}

/// What a failed reload provided is dropped; a completed one's replaces the old value.
async fn a_failed_reload_keeps_what_it_provided(h: Harness) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .config(reloading())
        .add(Source { reloads: 0 })
        .add(User(seen.clone()))
        .build()
        .unwrap();
    for at in 1..=3 {
        h.signal_after(secs(at), Signal::Hangup);
    }
    h.signal_after(secs(4), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.reloads.len(), 3, "{report}");
    assert_eq!(
        *seen.lock().unwrap(),
        [Settings(1), Settings(3)],
        "skipped after the failure, then the old value, then the new one"
    );
}

/// During a slow reload the probes still get answers: live, ready, `reloading`; after
/// it, the snapshot says how the last reload went.
async fn health_is_answered_during_a_slow_reload(h: Harness) {
    let app = App::builder()
        .config(reloading())
        .add(h.wrap(Part {
            reload: secs(5),
            ..part("db", &[])
        }))
        .add(
            h.wrap(part("http", &["db"]))
                .inject_at(Hook::Reload, Fault::Fail, 1),
        )
        .build()
        .unwrap();
    let monitor = app.health();
    let during = Arc::new(Mutex::new(None));
    let after = Arc::new(Mutex::new(None));
    let runtime = h.runtime().clone();
    let (d, a) = (during.clone(), after.clone());
    runtime.clone().spawn(Box::pin(async move {
        runtime.sleep(secs(3)).await;
        *d.lock().unwrap() = Some(monitor.snapshot().await);
        runtime.sleep(secs(5)).await;
        *a.lock().unwrap() = Some(monitor.snapshot().await);
    }));
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(secs(10), Signal::Terminate);
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0);

    let during = during
        .lock()
        .unwrap()
        .take()
        .expect("a snapshot during the reload");
    assert!(during.reloading && during.reloads == 1, "{during:?}");
    assert!(during.live && during.ready, "{during:?}");
    let after = after
        .lock()
        .unwrap()
        .take()
        .expect("a snapshot after the reload");
    assert!(!after.reloading, "{after:?}");
    let last = after.last_reload.expect("the last reload");
    assert!(!last.complete);
    assert_eq!(last.failures, ["reload of http failed: injected failure"]);
    assert!(last.took >= secs(5) && last.ago >= secs(1), "{last:?}");
}

/// Requests made while the app starts (a slow start) make one reload, once it runs.
async fn requests_during_the_start_make_one_reload_once_running(h: Harness) {
    let app = App::builder()
        .add(
            h.wrap(part("db", &[]))
                .inject(Hook::Start, Fault::Sleep(secs(2))),
        )
        .build()
        .unwrap();
    let reload = app.reload_handle();
    let runtime = h.runtime().clone();
    runtime.clone().spawn(Box::pin(async move {
        for _ in 0..3 {
            runtime.sleep(Duration::from_millis(500)).await;
            reload.reload();
        }
    }));
    h.shutdown_after(secs(4), app.handle());
    let report = h.run(app).await;

    assert_eq!(report.reloads.len(), 1, "{report}");
    assert!(report.reloads[0].is_complete());
    assert!(
        report.reloads[0].began >= report.startup,
        "after the start: {:?} < {:?}",
        report.reloads[0].began,
        report.startup
    );
}

/// Fails once, 1 s after its first start: restarted after a 1 s backoff.
struct Crashy(Arc<std::sync::atomic::AtomicBool>);

#[async_trait]
impl Component for Crashy {
    fn name(&self) -> &str {
        "worker"
    }
    fn options(&self) -> Options {
        Options::new().restart(lifecycle::Restart::on_failure().backoff(secs(1), secs(1)))
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let runtime = ctx.runtime().clone();
            ctx.spawn_fallible(async move {
                runtime.sleep(secs(1)).await;
                Err("crashed")
            });
        }
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A reload requested during a restart's backoff waits for the restart, then runs once.
async fn a_reload_during_a_restart_runs_after_it(h: Harness) {
    let app = App::builder()
        .config(reloading())
        .add(h.wrap(Crashy(Arc::default())))
        .add(h.wrap(part("http", &["worker"])))
        .build()
        .unwrap();
    h.signal_after(Duration::from_millis(1500), Signal::Hangup); // in the backoff
    h.signal_after(Duration::from_millis(1700), Signal::Hangup);
    h.signal_after(secs(5), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    let restart = &report.restarts[0];
    assert!(restart.completed, "{report}");
    assert_eq!(report.reloads.len(), 1, "coalesced\n{report}");
    let reload = &report.reloads[0];
    assert!(reload.is_complete(), "{reload}");
    assert!(
        reload.began >= restart.began + restart.took,
        "the reload waited for the restart\n{report}"
    );
    assert_eq!(h.timeline().count("http", What::Reloaded), 1);
}

/// Provides in its reload a type it never declared.
struct Undeclared;

#[async_trait]
impl Component for Undeclared {
    fn name(&self) -> &str {
        "loose"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        ctx.provide(Settings(7));
        Ok(())
    }
}

/// A reload that provides an undeclared type fails, naming the type and the fix.
async fn providing_an_undeclared_type_fails_the_reload(h: Harness) {
    let app = App::builder()
        .config(reloading())
        .add(Undeclared)
        .build()
        .unwrap();
    h.signal_after(secs(1), Signal::Hangup);
    h.signal_after(secs(2), Signal::Terminate);
    let report = h.run(app).await;

    assert_eq!(
        report.reloads[0].failures(),
        [
            "reload of loose failed: `loose` provided a `Settings` without declaring it: \
          add `Options::new().provides::<Settings>()` to its options"
        ]
    );
}

lifecycle::scenarios!(
    dependencies_first_and_a_failure_skips_its_dependents,
    a_shutdown_abandons_a_slow_reload_and_keeps_its_budget,
    requests_during_a_reload_coalesce_into_one_more,
    sighup_reloads_only_when_asked_and_never_forces,
    a_reload_during_the_shutdown_is_ignored,
    a_failed_reload_keeps_what_it_provided,
    health_is_answered_during_a_slow_reload,
    requests_during_the_start_make_one_reload_once_running,
    a_reload_during_a_restart_runs_after_it,
    providing_an_undeclared_type_fails_the_reload,
);
