//! gRPC health with a real gRPC client (tonic's, over HTTP/2 prior knowledge): `Check`
//! of the whole app and of one component, and `Watch` seeing SERVING, then NOT_SERVING
//! at the trigger while the server still serves the drain, then the stream ending
//! cleanly; all with the default check interval. Also: a health change before the
//! publisher task first runs is not lost, a `Watch` stream spawns no task of its own,
//! and `grpc-health` restarts with what it depends on. The app runs on each runtime.
#![cfg(all(feature = "grpc", feature = "tokio"))]

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{ms, Checked};
use lifecycle::grpc::{GrpcHealth, GrpcHealthService};
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use lifecycle::runtime::{BoxFuture, Runtime, SignalStream};
use lifecycle::{ComponentState, HealthMonitor, Restart, SmolRuntime, TokioRuntime};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn check(service: &str) -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

fn scenario(runtime: &'static str) {
    let (db, db_health, _) = Checked::new("db", Health::Up);
    let grpc = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .named("grpc")
        .serve_with(|health: GrpcHealthService| health);
    let addr: SocketAddr = grpc.local_addr();
    let app = App::builder()
        .config(Config::default().drain_delay(Duration::from_millis(600)))
        .add(db)
        .add(GrpcHealth::new())
        .add(grpc)
        .build()
        .unwrap();
    let handle = app.handle();
    let monitor = app.health();
    let app = thread::spawn(move || match runtime {
        "smol" => app.run().unwrap(),
        _ => app.run_tokio().unwrap(),
    });
    let began = Instant::now();
    while monitor.phase() != lifecycle::Phase::Running {
        assert!(began.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(2));
    }

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("an HTTP/2 connection");
        let mut client = HealthClient::new(channel);
        let overall = client.check(check("")).await.unwrap().into_inner();
        assert_eq!(overall.status(), ServingStatus::Serving);
        let db = client.check(check("db")).await.unwrap().into_inner();
        assert_eq!(db.status(), ServingStatus::Serving);
        let unknown = client.check(check("nobody")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // db down: its own status and the app's follow (db is critical), once a `Check`
        // has run the checks (within the cache TTL).
        *db_health.lock().unwrap() = Health::Down("disk full".into());
        let mut watch_db = client.watch(check("db")).await.unwrap().into_inner();
        check_until(&mut client, "", ServingStatus::NotServing).await;
        let mut seen = Vec::new();
        while let Some(message) = watch_db.message().await.unwrap() {
            seen.push(message.status());
            if message.status() == ServingStatus::NotServing {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "{seen:?}");
        *db_health.lock().unwrap() = Health::Up;
        check_until(&mut client, "", ServingStatus::Serving).await;

        // Watch the app: SERVING again, then NOT_SERVING at the trigger, while the
        // server still answers (the drain).
        let mut watch = client.watch(check("")).await.unwrap().into_inner();
        loop {
            let message = watch.message().await.unwrap().expect("a status");
            if message.status() == ServingStatus::Serving {
                break;
            }
        }
        let triggered = Instant::now();
        handle.shutdown();
        let message = watch.message().await.unwrap().expect("a status");
        assert_eq!(message.status(), ServingStatus::NotServing);
        assert!(
            triggered.elapsed() < Duration::from_millis(300),
            "NOT_SERVING {:?} after the trigger",
            triggered.elapsed()
        );
        // The stream then ends cleanly (OK), so it holds neither the stop nor the exit.
        let ended = watch.message().await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert!(triggered.elapsed() < Duration::from_millis(600));
        // The connection got a GOAWAY at the trigger; a new one, during the drain, is
        // answered NOT_SERVING.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("a connection during the drain");
        let during_drain = HealthClient::new(channel)
            .check(check(""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(during_drain.status(), ServingStatus::NotServing);
    });
    drop(client_runtime);
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn on_smol() {
    scenario("smol");
}

#[test]
fn on_tokio() {
    scenario("tokio");
}

/// How long a status may take to show: far past what any of these apps needs.
const BOUND: Duration = Duration::from_secs(5);

/// A gRPC health client of the server at `addr`.
async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("an HTTP/2 connection");
    HealthClient::new(channel)
}

/// Checks `service` until it answers `wanted`, for at most [`BOUND`].
async fn check_until(client: &mut HealthClient<Channel>, service: &str, wanted: ServingStatus) {
    let began = Instant::now();
    let mut seen = Vec::new();
    loop {
        let status = client
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        if status == wanted {
            return;
        }
        assert!(
            began.elapsed() < BOUND,
            "Check of {service:?} did not answer {wanted:?} within {BOUND:?}: it answered {seen:?}"
        );
        tokio::time::sleep(ms(10)).await;
    }
}

/// Watches `service` until it says `wanted`, for at most [`BOUND`]; returns the stream.
async fn watch_until(
    client: &mut HealthClient<Channel>,
    service: &str,
    wanted: ServingStatus,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut watch = client.watch(check(service)).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(BOUND, async {
        while let Some(message) = watch.message().await.unwrap() {
            seen.push(message.status());
            if message.status() == wanted {
                return;
            }
        }
        panic!("the Watch of {service:?} ended: saw {seen:?}");
    })
    .await;
    assert!(
        waited.is_ok(),
        "the Watch of {service:?} did not say {wanted:?} within {BOUND:?}: saw {seen:?}"
    );
    watch
}

/// An app of a checked `db`, `grpc-health` and its server, with the default check
/// interval; and the server's address, and what db's check says.
fn app() -> (App, SocketAddr, Arc<Mutex<Health>>) {
    let (db, db_health, _) = Checked::new("db", Health::Up);
    let grpc = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .named("grpc")
        .serve_with(|health: GrpcHealthService| health);
    let addr = grpc.local_addr();
    let app = App::builder()
        .add(db)
        .add(GrpcHealth::new())
        .add(grpc)
        .build()
        .unwrap();
    (app, addr, db_health)
}

/// Runs `scenario` with a client runtime of its own (tokio, current thread).
fn as_client<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario);
}

/// With the default check interval (checks run when asked), a `Check` answers what the
/// checks say now, as the HTTP readiness probe does: SERVING once the app runs, and a
/// component's failed check seen by the next `Check`, not only by the next interval.
fn default_check_interval(runtime: &'static str) {
    let (app, addr, db_health) = app();
    let handle = app.handle();
    let app = common::run_in_background(runtime, app);
    as_client(async move {
        let mut client = client(addr).await;
        check_until(&mut client, "", ServingStatus::Serving).await;
        check_until(&mut client, "db", ServingStatus::Serving).await;
        *db_health.lock().unwrap() = Health::Down("disk full".into());
        check_until(&mut client, "db", ServingStatus::NotServing).await;
        check_until(&mut client, "", ServingStatus::NotServing).await;
        *db_health.lock().unwrap() = Health::Up;
        check_until(&mut client, "", ServingStatus::Serving).await;
    });
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn serving_with_the_default_check_interval_on_smol() {
    default_check_interval("smol");
}

#[test]
fn serving_with_the_default_check_interval_on_tokio() {
    default_check_interval("tokio");
}

/// A runtime around smol's or tokio's that counts the tasks spawned on it and, if asked,
/// holds each task back (unpolled) until the app is ready.
#[derive(Debug)]
struct Observed {
    inner: Arc<dyn Runtime>,
    spawned: Arc<AtomicUsize>,
    hold_until_ready: Option<HealthMonitor>,
}

impl Runtime for Observed {
    fn spawn(&self, future: BoxFuture<()>) {
        self.spawned.fetch_add(1, Ordering::SeqCst);
        let Some(monitor) = self.hold_until_ready.clone() else {
            return self.inner.spawn(future);
        };
        let runtime = self.inner.clone();
        self.inner.spawn(Box::pin(async move {
            while !monitor.is_ready() {
                runtime.sleep(ms(1)).await;
            }
            future.await;
        }));
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        self.inner.sleep_until(deadline)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn signals(&self) -> io::Result<SignalStream> {
        Ok(Box::pin(futures_util::stream::pending())) // these tests send none
    }
}

/// Runs `app` on its own thread on an [`Observed`] `runtime` until it is running;
/// returns the thread and the count of spawned tasks.
fn run_observed(
    runtime: &'static str,
    app: App,
    hold_until_ready: bool,
) -> (thread::JoinHandle<Report>, Arc<AtomicUsize>) {
    let spawned = Arc::new(AtomicUsize::new(0));
    let monitor = app.health();
    let observed = {
        let (spawned, monitor) = (spawned.clone(), monitor.clone());
        move |inner: Arc<dyn Runtime>| {
            Arc::new(Observed {
                inner,
                spawned,
                hold_until_ready: hold_until_ready.then_some(monitor),
            })
        }
    };
    let app = thread::spawn(move || match runtime {
        "smol" => smol::block_on(app.run_on(observed(Arc::new(SmolRuntime::new())))).unwrap(),
        _ => {
            let tokio = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let inner = Arc::new(TokioRuntime::from_handle(tokio.handle().clone()));
            tokio.block_on(app.run_on(observed(inner))).unwrap()
        }
    });
    let began = Instant::now();
    while monitor.phase() != lifecycle::Phase::Running {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the app never ran"
        );
        thread::sleep(ms(2));
    }
    (app, spawned)
}

/// The app becomes ready (running, first round of checks done) before the publisher
/// task of `grpc-health` first runs: that change comes between the first publish and
/// anything the task does, and must still reach the statuses. No check runs after it
/// (the default check interval), and the `Watch` runs none.
fn change_before_the_publisher_runs(runtime: &'static str) {
    let (app, addr, _) = app();
    let handle = app.handle();
    let (app, _) = run_observed(runtime, app, true);
    as_client(async move {
        let mut client = client(addr).await;
        watch_until(&mut client, "", ServingStatus::Serving).await;
        watch_until(&mut client, "db", ServingStatus::Serving).await;
    });
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn a_change_between_the_first_publish_and_the_subscription_is_kept_on_smol() {
    change_before_the_publisher_runs("smol");
}

#[test]
fn a_change_between_the_first_publish_and_the_subscription_is_kept_on_tokio() {
    change_before_the_publisher_runs("tokio");
}

/// A pending `Watch` stream costs the server no more tasks than a `Check` (hyper's task
/// for the HTTP/2 stream): nothing of its own waits for the trigger.
fn watch_spawns_nothing_of_its_own(runtime: &'static str) {
    let (app, addr, _) = app();
    let handle = app.handle();
    let (app, spawned) = run_observed(runtime, app, false);
    let spawns = move || spawned.load(Ordering::SeqCst);
    as_client(async move {
        let mut client = client(addr).await;
        check_until(&mut client, "", ServingStatus::Serving).await;
        // Whatever the server spawns a while after answering, it has spawned by then.
        let settled = || tokio::time::sleep(ms(100));
        settled().await;
        let before = spawns();
        client.check(check("")).await.unwrap();
        settled().await;
        let by_check = spawns() - before;
        let before = spawns();
        let mut watches = Vec::new();
        for _ in 0..10 {
            watches.push(watch_until(&mut client, "", ServingStatus::Serving).await);
        }
        settled().await;
        let by_watches = spawns() - before;
        assert_eq!(
            by_watches,
            10 * by_check,
            "10 pending Watch streams spawned {by_watches} tasks, one Check {by_check}"
        );
    });
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn a_watch_stream_spawns_no_task_of_its_own_on_smol() {
    watch_spawns_nothing_of_its_own("smol");
}

#[test]
fn a_watch_stream_spawns_no_task_of_its_own_on_tokio() {
    watch_spawns_nothing_of_its_own("tokio");
}

/// Fails a task of its first start, once; restarts on failure.
struct Flaky(Arc<AtomicUsize>);

#[async_trait]
impl Component for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn options(&self) -> Options {
        Options::new().restart(Restart::on_failure().backoff(ms(10), ms(10)))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            let runtime = ctx.runtime().clone();
            ctx.spawn_fallible(async move {
                runtime.sleep(ms(200)).await;
                Err::<(), BoxError>("lost its connection".into())
            });
        }
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// `grpc-health` depends on `flaky`, so flaky's restart restarts it and the server that
/// serves it, as a user writes it: its second start works as the first did, the server
/// serves the new service on the same port, and the statuses follow the app again.
fn restarted(runtime: &'static str) {
    let grpc = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .named("grpc")
        .serve_with(|health: GrpcHealthService| health);
    let addr = grpc.local_addr();
    let app = App::builder()
        .add(Flaky(Arc::default()))
        .add_with(GrpcHealth::new(), Options::new().depends_on("flaky"))
        .add(grpc)
        .build()
        .unwrap();
    let (handle, monitor) = (app.handle(), app.health());
    let app = common::run_in_background(runtime, app);
    let began = Instant::now();
    let restarted = |name: &str| {
        monitor.cached().components.iter().any(|component| {
            &*component.name == name
                && component.restarts == 1
                && component.state == ComponentState::Running
        })
    };
    while !(restarted("grpc-health") && restarted("grpc")) {
        assert!(
            began.elapsed() < BOUND,
            "grpc-health never ran again after a restart"
        );
        thread::sleep(ms(2));
    }
    as_client(async move {
        let mut client = client(addr).await;
        check_until(&mut client, "", ServingStatus::Serving).await;
        check_until(&mut client, "flaky", ServingStatus::Serving).await;
        watch_until(&mut client, "grpc-health", ServingStatus::Serving).await;
    });
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.restarts.len(), 1, "{report}");
    assert!(report.restarts[0].completed, "{report}");
}

#[test]
fn restarts_with_what_it_depends_on_on_smol() {
    restarted("smol");
}

#[test]
fn restarts_with_what_it_depends_on_on_tokio() {
    restarted("tokio");
}
