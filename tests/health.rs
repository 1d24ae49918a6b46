//! Health from code: readiness by phase and aggregate, check timeout, cache TTL,
//! subscriptions; the drain's quiet period; stops that wait for work in flight.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::HarnessExt;
use common::{ms, Check, Checked, Harness, What};
use futures_util::future::join;
use lifecycle::prelude::*;
use lifecycle::{ComponentState, HealthMonitor, Phase, Status};

/// Waits until the app reaches `phase`.
async fn reach(monitor: &HealthMonitor, phase: Phase) {
    let mut changes = monitor.subscribe();
    while monitor.phase() < phase {
        changes.changed().await;
    }
}

/// Readiness is false while starting, follows the aggregate while running (critical
/// down: unready; non-critical down: degraded but ready), and is false from the
/// trigger on, before the drain delay ends, while liveness holds throughout.
async fn readiness_follows_phase_and_aggregate(h: Harness) {
    let (db, db_health, _) = Checked::new("db", Health::Up);
    let (cache, _, _) = Checked::new("cache", Health::Down("connection refused".into()));
    let app = App::builder()
        .add(db)
        .add_with(cache, Options::new().critical(false))
        .add(h.probe("slow").start(common::Act::Sleep(ms(300))))
        .config(
            Config::default()
                .drain_delay(ms(1000))
                .health_cache_ttl(ms(500)),
        )
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    assert_eq!(monitor.phase(), Phase::Starting);
    let runtime = h.runtime().clone();
    let script = async {
        runtime.sleep(ms(100)).await;
        assert_eq!(monitor.phase(), Phase::Starting);
        assert!(!monitor.snapshot().await.ready, "not ready while starting");
        assert!(monitor.is_live());

        reach(&monitor, Phase::Running).await;
        let snapshot = monitor.snapshot().await;
        assert_eq!(snapshot.status, Some(Status::Degraded), "{snapshot:?}");
        assert!(
            snapshot.ready,
            "a non-critical component down only degrades"
        );
        let cache = &snapshot.components[1];
        assert_eq!(&*cache.name, "cache");
        assert!(!cache.critical);
        assert_eq!(cache.state, ComponentState::Running);
        assert_eq!(
            cache.health,
            Some(Health::Down("connection refused".into()))
        );

        *db_health.lock().unwrap() = Health::Down("disk full".into());
        runtime.sleep(ms(600)).await; // past the cache TTL
        assert!(!monitor.snapshot().await.ready, "a critical component down");
        assert_eq!(monitor.cached().status, Some(Status::Down));
        assert!(
            monitor.is_live(),
            "a dead dependency makes the app unready, not dead"
        );

        *db_health.lock().unwrap() = Health::Up;
        runtime.sleep(ms(600)).await;
        assert!(
            monitor.snapshot().await.ready,
            "ready again once db is back"
        );

        handle.shutdown();
        reach(&monitor, Phase::Draining).await;
        let triggered = runtime.now();
        assert!(!monitor.snapshot().await.ready, "unready at the trigger");
        assert!(monitor.is_live(), "live while draining");
        let snapshot = monitor.cached();
        assert_eq!(snapshot.phase, Phase::Draining);
        assert!(
            snapshot
                .components
                .iter()
                .all(|c| c.state == ComponentState::Running),
            "everything still serves during the drain: {snapshot:?}"
        );
        reach(&monitor, Phase::Stopping).await;
        assert!(monitor.is_live(), "live while stopping");
        // `triggered` was read after waking up, a little after the trigger itself.
        assert!(
            runtime.now() - triggered >= ms(950),
            "the drain delay came after readiness went false"
        );
    };
    let (report, ()) = join(h.run(app), script).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let snapshot = monitor.cached();
    assert_eq!(snapshot.phase, Phase::Exited);
    assert!(snapshot
        .components
        .iter()
        .all(|c| c.state == ComponentState::Stopped));
}

/// A check that hangs is down "timed out" at the check timeout; one that panics is down
/// with the panic; neither blocks the probe or the engine.
async fn hanging_and_panicking_checks_are_down(h: Harness) {
    let app = App::builder()
        .add(Checked::failing("stuck", Check::Hang))
        .add_with(
            Checked::failing("broken", Check::Panic),
            Options::new().critical(false),
        )
        .config(Config::default().health_check_timeout(ms(200)))
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    let runtime = h.runtime().clone();
    let script = async {
        reach(&monitor, Phase::Running).await;
        let asked = runtime.now();
        let snapshot = monitor.snapshot().await;
        let waited = runtime.now() - asked;
        assert!(waited < ms(1000), "the probe waited {waited:?}");
        assert_eq!(
            snapshot.components[0].health,
            Some(Health::Down("health check timed out after 200ms".into()))
        );
        assert_eq!(
            snapshot.components[1].health,
            Some(Health::Down(
                "health check panicked: the check exploded".into()
            ))
        );
        assert_eq!(snapshot.status, Some(Status::Down));
        assert!(!snapshot.ready);
        assert!(snapshot.live, "the engine answered");
        handle.shutdown();
    };
    let (report, ()) = join(h.run(app), script).await;
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A storm of probes within the cache TTL costs one round of checks; the next round
/// runs once the TTL has passed.
async fn checks_are_cached_for_the_ttl(h: Harness) {
    let (db, _, calls) = Checked::new("db", Health::Up);
    let app = App::builder()
        .add(db)
        .config(Config::default().health_cache_ttl(ms(1000)))
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    let runtime = h.runtime().clone();
    let script = async {
        reach(&monitor, Phase::Running).await;
        let storm = futures_util::future::join_all((0..100).map(|_| monitor.snapshot())).await;
        assert!(storm.into_iter().all(|snapshot| snapshot.ready));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "100 probes, one check");
        runtime.sleep(ms(1100)).await;
        let storm = futures_util::future::join_all((0..100).map(|_| monitor.snapshot())).await;
        assert!(storm.into_iter().all(|snapshot| snapshot.ready));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "past the TTL, 100 concurrent probes run one new check"
        );
        handle.shutdown();
    };
    let (report, ()) = join(h.run(app), script).await;
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A subscriber sees the phases in order, ending with `Exited`.
async fn subscribers_see_the_phases_in_order(h: Harness) {
    let app = App::builder()
        .add(h.probe("db"))
        .config(Config::default().drain_delay(ms(200)))
        .build()
        .unwrap();
    let mut changes = app.health().subscribe();
    h.shutdown_after(ms(100), app.handle());
    let watcher = async {
        let mut seen = vec![];
        loop {
            let phase = changes.changed().await.phase;
            if seen.last() != Some(&phase) {
                seen.push(phase);
            }
            if phase == Phase::Exited {
                return seen;
            }
        }
    };
    let (report, seen) = join(h.run(app), watcher).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "phases in lifecycle order");
    for phase in [Phase::Running, Phase::Draining, Phase::Exited] {
        assert!(seen.contains(&phase), "{phase} not seen in {seen:?}");
    }
}

/// A component that takes an in-flight guard every 100 ms until `until` after start.
struct Traffic {
    until: Duration,
}

#[async_trait]
impl Component for Traffic {
    fn name(&self) -> &str {
        "http"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let in_flight = ctx.in_flight().clone();
        let runtime = ctx.runtime().clone();
        let end = runtime.now() + self.until;
        ctx.spawn(async move {
            while runtime.now() < end {
                drop(in_flight.enter());
                runtime.sleep(ms(100)).await;
            }
        });
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The drain delay ends early once no request has arrived for the quiet period, and not
/// while requests keep arriving.
async fn drain_ends_early_on_a_quiet_period(h: Harness) {
    let app = App::builder()
        .add(Traffic { until: ms(1000) })
        .add(h.probe("db"))
        .config(
            Config::default()
                .drain_delay(ms(10_000))
                .drain_quiet_period(ms(300))
                .shutdown_timeout(ms(20_000)),
        )
        .build()
        .unwrap();
    let monitor = app.health();
    h.shutdown_after(ms(300), app.handle());
    let runtime = h.runtime().clone();
    let origin = runtime.now();
    let stopping = async {
        reach(&monitor, Phase::Stopping).await;
        runtime.now() - origin
    };
    let (report, stopping) = join(h.run(app), stopping).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    // The last request arrives at ~900 ms; the drain ends one quiet period (at most 1.1
    // of it) after that, not at 10 s, and not two quiet periods after it.
    assert!(
        stopping >= ms(1190) && stopping < ms(1400),
        "stopping began at {stopping:?}"
    );
    assert!(h.timeline().time("db", What::StopBegan).unwrap() >= ms(1000));
}

/// A component whose every start launches one piece of work lasting `work`, counted in
/// flight; its stop waits for the work, keeping 100 ms of its deadline in hand.
struct Worker {
    work: Duration,
    finished: Arc<Mutex<Option<bool>>>,
}

#[async_trait]
impl Component for Worker {
    fn name(&self) -> &str {
        "worker"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let guard = ctx.in_flight().enter_owned();
        let runtime = ctx.runtime().clone();
        let work = self.work;
        ctx.spawn(async move {
            runtime.sleep(work).await;
            drop(guard);
        });
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let idle = ctx.in_flight().wait_idle();
        let finished = ctx
            .runtime()
            .timeout_at(ctx.deadline() - ms(100), idle)
            .await
            .is_ok();
        *self.finished.lock().unwrap() = Some(finished);
        Ok(())
    }
}

/// The stop waits for the work in flight and returns as soon as it is done.
async fn stop_waits_for_work_in_flight(h: Harness) {
    let finished = Arc::default();
    let app = App::builder()
        .add(Worker {
            work: ms(800),
            finished: Arc::clone(&finished),
        })
        .build()
        .unwrap();
    h.shutdown_after(ms(100), app.handle());
    let report = h.run(app).await;
    assert_eq!(*finished.lock().unwrap(), Some(true));
    let stop = &report.component("worker").unwrap().stop;
    let ended = stop.began.unwrap() + stop.took;
    assert!(
        ended >= ms(800) && ended < ms(1300),
        "the stop ended at {ended:?}, not when the work did"
    );
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// The stop stops waiting at its deadline when the work does not finish.
async fn stop_stops_waiting_at_its_deadline(h: Harness) {
    let finished = Arc::default();
    let app = App::builder()
        .add_with(
            Worker {
                work: ms(60_000),
                finished: Arc::clone(&finished),
            },
            Options::new().stop_timeout(ms(1000)),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(100), app.handle());
    let report = h.run(app).await;
    assert_eq!(*finished.lock().unwrap(), Some(false));
    let stop = &report.component("worker").unwrap().stop;
    assert_eq!(stop.outcome, lifecycle::Outcome::Completed);
    assert!(
        stop.took >= ms(900) && stop.took < ms(1000),
        "gave up after {:?}",
        stop.took
    );
    assert!(report.shutdown < ms(2000), "{:?}", report.shutdown);
}

/// A component whose n-th health check returns the n-th health of its script (the last
/// one after that), counting its calls.
struct Scripted {
    script: Vec<Health>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl Component for Scripted {
    fn name(&self) -> &str {
        "db"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn health(&self) -> Health {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.script[call.min(self.script.len() - 1)].clone()
    }
}

/// With background checks, a change is seen by a subscription with no probe asking:
/// the database goes down at its 4th check (300 ms), and a subscriber sees the app Down
/// at that round.
async fn background_checks_are_seen_without_a_probe(h: Harness) {
    let down = || Health::Down("disk full".into());
    let app = App::builder()
        .add(Scripted {
            script: vec![Health::Up, Health::Up, Health::Up, down()],
            calls: Arc::default(),
        })
        .config(Config::default().health_check_interval(ms(100)))
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    let runtime = h.runtime().clone();
    let watch = async move {
        reach(&monitor, Phase::Running).await;
        let began = runtime.now();
        let mut changes = monitor.subscribe();
        loop {
            let snapshot = changes.changed().await;
            if snapshot.status == Some(Status::Down) {
                handle.shutdown();
                return runtime.now() - began;
            }
        }
    };
    let (report, seen_after) = join(h.run(app), watch).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        seen_after >= ms(250) && seen_after < ms(450),
        "seen {seen_after:?} after the start"
    );
}

/// Thresholds with a flapping check (failures 3, successes 2): Down only after three
/// failed rounds in a row, Up again only after two good ones. Sampled halfway between
/// rounds, every 100 ms.
async fn thresholds_tame_a_flapping_check(h: Harness) {
    let (up, down) = (Health::Up, Health::Down("timeout".into()));
    let script = vec![
        up.clone(),
        down.clone(),
        down.clone(),
        up.clone(),
        down.clone(),
        down.clone(),
        down.clone(),
        up.clone(),
        up.clone(),
        up.clone(),
    ];
    let app = App::builder()
        .add_with(
            Scripted {
                script,
                calls: Arc::default(),
            },
            Options::new().failure_threshold(3).success_threshold(2),
        )
        .config(Config::default().health_check_interval(ms(100)))
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    let runtime = h.runtime().clone();
    let sample = async move {
        reach(&monitor, Phase::Running).await;
        let began = runtime.now();
        let mut seen = Vec::new();
        for k in 0..10u32 {
            runtime.sleep_until(began + ms(50) + ms(100) * k).await;
            let snapshot = monitor.cached();
            seen.push((
                snapshot.status,
                snapshot.components[0].streak,
                snapshot.ready,
            ));
        }
        handle.shutdown();
        seen
    };
    let (report, seen) = join(h.run(app), sample).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let statuses: Vec<Option<Status>> = seen.iter().map(|s| s.0).collect();
    let (up, down) = (Some(Status::Up), Some(Status::Down));
    assert_eq!(
        statuses,
        [up, up, up, up, up, up, down, down, up, up],
        "{seen:?}"
    );
    assert_eq!(
        seen[2].1,
        (2, 0),
        "two failures so far, not yet Down: {seen:?}"
    );
    assert_eq!(seen[6].1, (3, 0));
    assert_eq!(seen[7].1, (0, 1), "one good check: still Down");
    assert!(!seen[6].2 && seen[8].2, "readiness follows: {seen:?}");
}

/// A `Provider`'s health check runs on its open value, as its component's health:
/// readiness follows the database (down with the check's error), and a `Provider`
/// without a check is up. A `Background`'s check is its loop's health.
async fn closure_components_health_checks_drive_readiness(h: Harness) {
    #[derive(Clone)]
    struct Pool(Arc<Mutex<Result<(), String>>>);
    let state = Arc::new(Mutex::new(Ok(())));
    let db = {
        let state = state.clone();
        lifecycle::Provider::new(
            "db",
            move || {
                let pool = Pool(state.clone());
                async move { Ok::<_, BoxError>(pool) }
            },
            |_: Pool| async {},
        )
        .health_check(|pool: Pool| async move { pool.0.lock().unwrap().clone() })
    };
    let cache = lifecycle::Provider::new(
        "cache",
        || async { Ok::<_, BoxError>(7u32) },
        |_: u32| async {},
    );
    let worker_up = Arc::new(Mutex::new(true));
    let worker = {
        let up = worker_up.clone();
        lifecycle::Background::new("worker", |ctx: StartContext| async move {
            ctx.stop_token().wait().await;
            Ok::<(), BoxError>(())
        })
        .health_check(move || {
            let up = *up.lock().unwrap();
            async move { up.then_some(()).ok_or("the queue is gone") }
        })
    };
    let app = App::builder()
        .add(db)
        .add(cache)
        .add_with(worker, Options::new().critical(false))
        .build()
        .unwrap();
    let monitor = app.health();
    let handle = app.handle();
    let runtime = h.runtime().clone();
    let probe = async move {
        reach(&monitor, Phase::Running).await;
        let up = monitor.snapshot().await;
        *state.lock().unwrap() = Err("database is locked".to_owned());
        *worker_up.lock().unwrap() = false;
        runtime.sleep(ms(1100)).await; // past the cache TTL
        let down = monitor.snapshot().await;
        handle.shutdown();
        (up, down)
    };
    let (report, (up, down)) = join(h.run(app), probe).await;

    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(up.ready, "{up:?}");
    assert!(!down.ready, "{down:?}");
    let health = |snapshot: &lifecycle::Snapshot, name: &str| {
        snapshot
            .components
            .iter()
            .find(|c| &*c.name == name)
            .and_then(|c| c.health.clone())
    };
    assert_eq!(
        health(&down, "db"),
        Some(Health::Down("database is locked".into()))
    );
    assert_eq!(health(&down, "cache"), Some(Health::Up));
    assert_eq!(health(&up, "worker"), Some(Health::Up));
    assert_eq!(
        health(&down, "worker"),
        Some(Health::Down("the queue is gone".into()))
    );
}

scenarios!(
    closure_components_health_checks_drive_readiness,
    background_checks_are_seen_without_a_probe,
    thresholds_tame_a_flapping_check,
    readiness_follows_phase_and_aggregate,
    hanging_and_panicking_checks_are_down,
    checks_are_cached_for_the_ttl,
    subscribers_see_the_phases_in_order,
    drain_ends_early_on_a_quiet_period,
    stop_waits_for_work_in_flight,
    stop_stops_waiting_at_its_deadline,
);
