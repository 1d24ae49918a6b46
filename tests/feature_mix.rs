//! Property test of features used together, as a service uses them: each case is an app
//! of the library's own components (a `Provider` pool, a `Background` worker, an axum app
//! on `HttpServer` with live clients, a `ProbeServer`) and hand-written ones, on a random
//! graph, with random restart policies, random task failures (restarts of built-ins and of
//! hand-written components, with slow stops), handler panics, one random trigger (a
//! signal, the handle, or a task failure) and zero to two extra signals after it.
//!
//! After each run:
//! - the shutdown kept its budget, and every component that started was flushed (the
//!   flush reserve held);
//! - `/health/live` answered 200 every time it answered;
//! - the trigger is the planned one: a handler's panic never ended the app (and was
//!   counted), no restart escalated;
//! - every restart of a built-in succeeded (no failed attempt), unless the shutdown cut
//!   the last one short;
//! - an extra signal forced the exit only after a signal began the shutdown (else it took
//!   two);
//! - every incarnation of every component that started was stopped exactly once (or
//!   skipped by a forced exit), never stopped without having started.
//!
//! smol and tokio (multi-threaded) each run 100 cases on the real clock, side by side
//! (about two minutes); `PROPTEST_CASES=1000 cargo test --all-features --test feature_mix`
//! is the stress run. Each invariant was seen to fail with its fix taken out (the signal
//! count, health answered during a restart, the restart's stops cut at the shutdown's
//! stop end).
#![cfg(all(feature = "http", feature = "tokio"))]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use common::{Harness, HarnessExt, TaskAct};
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use lifecycle::testing::{Fault, Hook, What};
use lifecycle::{Background, Outcome, ProbeServer, Provider, Restart, Signal, Trigger};
use proptest::prelude::*;

/// Short, so that a restart's slow stop (up to 2 s) overruns it unless the shutdown cuts it.
const BUDGET: Duration = Duration::from_millis(1500);
const DRAIN: Duration = Duration::from_millis(150);

/// What the pool provider hands to `worker` and `http`.
#[derive(Clone)]
struct Pool;

#[derive(Debug, Clone, Copy)]
enum Planned {
    Signal(Signal),
    Handle,
    /// The task of `failer`, which has no restart policy, fails.
    TaskFailure,
}

#[derive(Debug, Clone, Copy)]
enum NetPolicy {
    OnFailure,
    Always,
}

#[derive(Debug, Clone)]
struct Case {
    /// Whether `db`, `worker` and `http` depend on `net`.
    on_net: [bool; 3],
    /// How many times `net`'s task fails (each restarts `net` and its dependents).
    net_failures: usize,
    net_policy: NetPolicy,
    net_fails_after: u64,
    /// `net`'s stop (ms): up to 2 s, longer than liveness's patience (750 ms) and than
    /// the shutdown's stop phase.
    net_stop: u64,
    /// Whether the worker's loop fails once (it is then restarted), and when.
    worker_fails: Option<u64>,
    /// Slow stops of the built-ins (ms): db, worker, http.
    stops: [u64; 3],
    /// Hand-written components: their dependencies (indices into `net`, `db`, then the
    /// earlier ones) and stop times.
    extra: Vec<(Vec<usize>, u64)>,
    keep_alive_clients: usize,
    handler_panics: usize,
    planned: Planned,
    trigger_at: u64,
    extra_signals: usize,
}

fn case() -> impl Strategy<Value = Case> {
    let planned = prop_oneof![
        Just(Planned::Signal(Signal::Terminate)),
        Just(Planned::Signal(Signal::Interrupt)),
        Just(Planned::Handle),
        Just(Planned::TaskFailure),
    ];
    let extra = prop::collection::vec((prop::collection::vec(0usize..6, 0..3), 0u64..150), 0..4);
    (
        (
            any::<[bool; 3]>(),
            0usize..3,
            prop_oneof![Just(NetPolicy::OnFailure), Just(NetPolicy::Always)],
            20u64..150,
            0u64..2000,
            prop::option::of(20u64..200),
            [0u64..150, 0u64..150, 0u64..150],
        ),
        (
            extra,
            0usize..3,
            0usize..4,
            planned,
            150u64..1200,
            0usize..3,
        ),
    )
        .prop_map(
            |(
                (on_net, net_failures, net_policy, net_fails_after, net_stop, worker_fails, stops),
                (extra, keep_alive_clients, handler_panics, planned, trigger_at, extra_signals),
            )| Case {
                on_net,
                net_failures,
                net_policy,
                net_fails_after,
                net_stop,
                worker_fails,
                stops,
                extra,
                keep_alive_clients,
                handler_panics,
                planned,
                trigger_at,
                extra_signals,
            },
        )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Keeps the panics this test causes on purpose out of the output.
fn quiet_handler_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if message != "a handler's bug" {
                default(info);
            }
        }));
    });
}

/// HTTP clients for the length of a run: keep-alive GETs of `/ok`, `panics` GETs of
/// `/panic`, and a prober asking `/health/ready` then `/health/live`, which records every
/// status liveness answers.
struct Clients {
    done: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    live: Arc<Mutex<Vec<u16>>>,
    panics_answered: Arc<AtomicUsize>,
}

impl Clients {
    fn start(http: SocketAddr, probes: SocketAddr, keep_alive: usize, panics: usize) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let panics_answered = Arc::new(AtomicUsize::new(0));
        let agent = || {
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(2))
                .build()
        };
        let mut threads = Vec::new();
        for _ in 0..keep_alive {
            let (done, agent) = (done.clone(), agent());
            threads.push(thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let _ = agent.get(&format!("http://{http}/ok")).call();
                    thread::sleep(ms(5));
                }
            }));
        }
        {
            let (done, agent, answered) = (done.clone(), agent(), panics_answered.clone());
            threads.push(thread::spawn(move || {
                for _ in 0..panics {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    thread::sleep(ms(40));
                    if let Err(ureq::Error::Status(500, _)) =
                        agent.get(&format!("http://{http}/panic")).call()
                    {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        {
            let (done, live) = (done.clone(), live.clone());
            threads.push(thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(2))
                    .build();
                while !done.load(Ordering::SeqCst) {
                    // As a kubelet does: readiness (which runs the checks) and liveness.
                    let _ = agent.get(&format!("http://{probes}/health/ready")).call();
                    match agent.get(&format!("http://{probes}/health/live")).call() {
                        Ok(response) => live.lock().unwrap().push(response.status()),
                        Err(ureq::Error::Status(status, _)) => live.lock().unwrap().push(status),
                        Err(ureq::Error::Transport(_)) => {} // not serving (yet, or any more)
                    }
                    thread::sleep(ms(20));
                }
            }));
        }
        Clients {
            done,
            threads,
            live,
            panics_answered,
        }
    }

    fn stop(self) -> (Vec<u16>, usize) {
        self.done.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let live = self.live.lock().unwrap().clone();
        (live, self.panics_answered.load(Ordering::SeqCst))
    }
}

async fn run_case(h: Harness, case: Case) {
    quiet_handler_panics();
    let quick = |restart: Restart| {
        restart
            .limit(1000, Duration::from_secs(60))
            .backoff(ms(10), ms(30))
    };
    let on_net = |i: usize, options: Options| {
        if case.on_net[i] {
            options.depends_on("net")
        } else {
            options
        }
    };

    let net_policy = match case.net_policy {
        NetPolicy::OnFailure => Restart::on_failure(),
        NetPolicy::Always => Restart::always(),
    };
    let net_task = TaskAct::FailTimes(
        Arc::new(AtomicUsize::new(case.net_failures)),
        ms(case.net_fails_after),
    );
    let db = Provider::new(
        "db",
        || async { Ok::<_, BoxError>(Pool) },
        |_: Pool| async {},
    );
    let worker_fails = case.worker_fails;
    let worker_runs = Arc::new(AtomicUsize::new(0));
    let worker = Background::new("worker", move |ctx: StartContext, _pool: Pool| {
        let first = worker_runs.fetch_add(1, Ordering::SeqCst) == 0;
        let (token, runtime) = (ctx.shutdown_token(), ctx.runtime().clone());
        async move {
            match worker_fails.filter(|_| first) {
                Some(after) => {
                    if runtime.timeout(ms(after), token.wait()).await.is_err() {
                        return Err("the worker lost its queue");
                    }
                }
                None => token.wait().await,
            }
            Ok(())
        }
    });
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve_with(|pool: Pool| {
            axum::Router::new()
                .route("/ok", get(|State(_pool): State<Pool>| async { "ok" }))
                .route(
                    "/panic",
                    get(|| async {
                        std::panic::panic_any::<&str>("a handler's bug");
                        #[allow(unreachable_code)]
                        "unreachable"
                    }),
                )
                .with_state(pool)
        });
    let http_addr = http.local_addr();
    let probes = ProbeServer::bind("127.0.0.1:0").unwrap();
    let probes_addr = probes.local_addr();

    let mut builder = App::builder()
        .config(
            Config::default()
                .shutdown_timeout(BUDGET)
                .flush_reserve(ms(300))
                .drain_delay(DRAIN)
                // An engine that does not answer is not live after 300 + 250 ms: well
                // within a restart's slow stop, well above a loaded machine's hiccups.
                .health_check_timeout(ms(300))
                .health_cache_ttl(ms(50))
                .stop_timeout(Duration::from_secs(2)),
        )
        .add(h.wrap(probes))
        .add_with(
            h.probe("net")
                .task(net_task)
                .stop(common::Act::Sleep(ms(case.net_stop))),
            Options::new().restart(quick(net_policy)),
        )
        .add_with(
            h.wrap(db)
                .inject(Hook::Stop, Fault::Sleep(ms(case.stops[0]))),
            on_net(0, Options::new()),
        )
        .add_with(
            h.wrap(worker)
                .inject(Hook::Stop, Fault::Sleep(ms(case.stops[1]))),
            on_net(1, Options::new()).restart(quick(Restart::on_failure())),
        )
        .add_with(
            h.wrap(http)
                .inject(Hook::Stop, Fault::Sleep(ms(case.stops[2]))),
            on_net(2, Options::new()),
        );
    let mut names = vec!["net".to_owned(), "db".to_owned()];
    for (i, (deps, stop)) in case.extra.iter().enumerate() {
        let name = format!("extra{i}");
        let mut deps: Vec<&str> = deps
            .iter()
            .map(|&d| names[d % names.len()].as_str())
            .collect();
        deps.sort();
        deps.dedup();
        builder = builder.add(
            h.probe(&name)
                .after(&deps)
                .stop(common::Act::Sleep(ms(*stop))),
        );
        names.push(name);
    }
    if let Planned::TaskFailure = case.planned {
        builder = builder.add(
            h.probe("failer")
                .task(TaskAct::FailAfter(ms(case.trigger_at))),
        );
    }
    // The built-ins record on the timeline through the testing kit's wrapper, the
    // hand-written ones (`h.probe`) by themselves.
    let app = builder.build().unwrap();
    match case.planned {
        Planned::Signal(signal) => h.signal_after(ms(case.trigger_at), signal),
        Planned::Handle => h.shutdown_after(ms(case.trigger_at), app.handle()),
        Planned::TaskFailure => {}
    }
    for n in 1..=case.extra_signals as u64 {
        h.signal_after(ms(case.trigger_at + 30 * n), Signal::Terminate);
    }
    let clients = Clients::start(
        http_addr,
        probes_addr,
        case.keep_alive_clients,
        case.handler_panics,
    );
    let report = h.run(app).await;
    let (live, panics_answered) = clients.stop();

    // The budget, and the flush reserve.
    lifecycle::testing::assert_within_budget(&report, BUDGET);
    let timeline = h.timeline();
    for component in &report.components {
        if timeline.count(&component.name, What::Started) > 0 {
            assert_eq!(
                component.flush.outcome,
                Outcome::Completed,
                "{} was not flushed: {report}",
                component.name
            );
        }
    }
    // Liveness.
    assert!(
        live.iter().all(|&status| status == 200),
        "liveness answered {live:?}: {report}"
    );
    // The planned trigger, not a handler's panic nor an escalated restart.
    let expected = match case.planned {
        Planned::Signal(signal) => Trigger::Signal(signal),
        Planned::Handle => Trigger::Requested,
        Planned::TaskFailure => Trigger::TaskFailed {
            component: "failer".into(),
            outcome: Outcome::Failed("the task lost its connection".into()),
        },
    };
    assert_eq!(report.trigger, expected, "{report}");
    let http = report.component("http").unwrap();
    assert!(http.task_failures.is_empty(), "{report}");
    assert!(
        http.handled_panics >= panics_answered as u64,
        "{panics_answered} panics answered 500, {} counted: {report}",
        http.handled_panics
    );
    // Restarts of built-ins succeed; only the last may be cut short by the shutdown.
    for restart in &report.restarts {
        assert!(restart.failed_attempts.is_empty(), "{report}");
    }
    if let Some((_, before)) = report.restarts.split_last() {
        assert!(before.iter().all(|r| r.completed), "{report}");
    }
    // One signal forces only after a signal began the shutdown.
    let signals_to_force = match case.planned {
        Planned::Signal(_) => 1,
        _ => 2,
    };
    assert_eq!(
        report.forced_by.is_some(),
        case.extra_signals >= signals_to_force,
        "{} extra signals after {:?}: {report}",
        case.extra_signals,
        case.planned
    );
    // Every incarnation stopped exactly once, never without having started.
    let entries = timeline.entries();
    for component in &report.components {
        let mut running = false;
        for entry in entries.iter().filter(|e| e.name == component.name) {
            match entry.what {
                What::Started => {
                    assert!(!running, "{} started twice: {report}", component.name);
                    running = true;
                }
                What::StopBegan => {
                    assert!(
                        running,
                        "{} stopped while not running: {report}",
                        component.name
                    );
                    running = false;
                }
                _ => {}
            }
        }
        assert!(
            !running || component.stop.outcome == Outcome::Skipped,
            "{} was left running: {report}",
            component.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(100)))]

    #[test]
    fn smol_features_hold_together(case in case()) {
        common::on_smol(|h| run_case(h, case));
    }

    #[test]
    fn tokio_features_hold_together(case in case()) {
        common::on_tokio_threads(|h| run_case(h, case));
    }
}

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}
