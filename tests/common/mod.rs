//! Test support specific to this project: a scriptable component (`Probe`) that records
//! what happens to it on the testing kit's timeline, and components with scriptable
//! health checks. The harness, the timeline and `scenarios!` (each scenario on smol, on
//! tokio's paused clock and on tokio's multi-threaded runtime) are the public testing
//! kit's, `lifecycle::testing`.
#![allow(dead_code)]

pub mod child;
pub mod collector;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;
#[allow(unused_imports)] // each test binary uses some
pub use lifecycle::testing::{on_smol, Harness, Timeline, What};
#[cfg(feature = "tokio")]
#[allow(unused_imports)]
pub use lifecycle::testing::{on_tokio, on_tokio_threads};

/// Keeps a property test's deliberate panics (those whose message `deliberate` accepts)
/// out of its output; other panics print. Once per test binary.
pub fn quiet_panics(deliberate: fn(&str) -> bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(deliberate) {
                default(info);
            }
        }));
    });
}

/// A property test's configuration: `cases` cases (`PROPTEST_CASES` overrides), and no
/// failure file: the runs on virtual time are deterministic, a failure is a bug, not noise.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Each scenario of the calling file as a test on each runtime: the testing kit's macro.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        lifecycle::scenarios!($($name),*);
    };
}

/// A component that does nothing, named, with dependencies: for graph-shaped tests.
pub struct Named(pub &'static str, pub Vec<&'static str>);

#[async_trait]
impl Component for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn options(&self) -> Options {
        self.1.iter().fold(Options::new(), |o, d| o.depends_on(*d))
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The project's scripted component on a harness.
pub trait HarnessExt {
    /// A scriptable component named `name`, recording on this harness's timeline.
    fn probe(&self, name: &str) -> Probe;
}

impl HarnessExt for Harness {
    fn probe(&self, name: &str) -> Probe {
        Probe {
            name: name.to_owned(),
            dependencies: Vec::new(),
            start: Act::Ok,
            stop: Act::Ok,
            flush: Act::Ok,
            task: None,
            log: self.timeline().clone(),
        }
    }
}

/// What a probe's hook does.
#[derive(Debug, Clone)]
pub enum Act {
    Ok,
    Sleep(Duration),
    Fail,
    Panic,
    Hang,
}

/// What a probe's tracked task does.
#[derive(Debug, Clone)]
pub enum TaskAct {
    /// Runs until cancelled (logs `TaskDropped` when it is).
    Forever,
    FailAfter(Duration),
    PanicAfter(Duration),
    /// Fails after the delay while the counter is above zero (taking one off), then
    /// runs until cancelled: a component that fails its first runs.
    FailTimes(Arc<AtomicUsize>, Duration),
    /// Ends (returns) after the delay.
    EndAfter(Duration),
}

/// A component whose hooks do what the test says and log what happens.
pub struct Probe {
    pub name: String,
    pub dependencies: Vec<String>,
    pub start: Act,
    pub stop: Act,
    pub flush: Act,
    pub task: Option<TaskAct>,
    pub log: Timeline,
}

impl Probe {
    pub fn after(mut self, dependencies: &[&str]) -> Self {
        self.dependencies
            .extend(dependencies.iter().map(|d| d.to_string()));
        self
    }
    pub fn start(mut self, act: Act) -> Self {
        self.start = act;
        self
    }
    pub fn stop(mut self, act: Act) -> Self {
        self.stop = act;
        self
    }
    pub fn flush(mut self, act: Act) -> Self {
        self.flush = act;
        self
    }
    pub fn task(mut self, act: TaskAct) -> Self {
        self.task = Some(act);
        self
    }

    async fn act(
        &self,
        runtime: &Arc<dyn Runtime>,
        act: &Act,
        hook: &str,
        dropped: What,
    ) -> Result<(), BoxError> {
        let guard = DropLog {
            log: self.log.clone(),
            name: self.name.clone(),
            what: dropped,
            armed: true,
        };
        let result = match act {
            Act::Ok => Ok(()),
            Act::Sleep(duration) => {
                runtime.sleep(*duration).await;
                Ok(())
            }
            Act::Fail => Err(format!("{hook} of {} refused", self.name).into()),
            Act::Panic => panic!("{hook} of {} exploded", self.name),
            Act::Hang => std::future::pending().await,
        };
        guard.disarm();
        result
    }
}

/// Logs `what` if dropped while armed: proves a future was cancelled.
struct DropLog {
    log: Timeline,
    name: String,
    what: What,
    armed: bool,
}

impl DropLog {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DropLog {
    fn drop(&mut self) {
        if self.armed {
            self.log.record(&self.name, self.what);
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        self.dependencies
            .iter()
            .fold(Options::new(), |o, d| o.depends_on(d.as_str()))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.log.record(&self.name, What::StartBegan);
        if let Some(task) = self.task.clone() {
            let runtime = ctx.runtime().clone();
            let guard = DropLog {
                log: self.log.clone(),
                name: self.name.clone(),
                what: What::TaskDropped,
                armed: true,
            };
            ctx.spawn_fallible(async move {
                let guard = guard;
                match task {
                    TaskAct::Forever => std::future::pending().await,
                    TaskAct::FailAfter(after) => {
                        runtime.sleep(after).await;
                        Err("the task lost its connection")
                    }
                    TaskAct::PanicAfter(after) => {
                        runtime.sleep(after).await;
                        panic!("the task exploded")
                    }
                    TaskAct::FailTimes(left, after) => {
                        runtime.sleep(after).await;
                        let failing = left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if failing {
                            return Err("the task lost its connection");
                        }
                        std::future::pending().await
                    }
                    TaskAct::EndAfter(after) => {
                        runtime.sleep(after).await;
                        guard.disarm();
                        Ok(())
                    }
                }
            });
        }
        self.act(ctx.runtime(), &self.start, "start", What::StartDropped)
            .await?;
        self.log.record(&self.name, What::Started);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.log.record(&self.name, What::StopBegan);
        self.act(ctx.runtime(), &self.stop, "stop", What::StopDropped)
            .await?;
        self.log.record(&self.name, What::Stopped);
        Ok(())
    }

    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.act(ctx.runtime(), &self.flush, "flush", What::FlushDropped)
            .await?;
        self.log.record(&self.name, What::Flushed);
        Ok(())
    }
}

/// Checks the ordering invariants on the timeline of a run whose graph is `edges`.
pub fn assert_ordering(log: &Timeline, edges: &[(&str, &str)]) {
    log.assert_ordering(edges)
}

/// How a [`Checked`] component's health check behaves.
#[derive(Clone)]
pub enum Check {
    Report(Arc<Mutex<Health>>),
    Hang,
    Panic,
}

/// A component with a scriptable health check that counts its calls.
pub struct Checked {
    pub name: &'static str,
    pub check: Check,
    pub calls: Arc<AtomicUsize>,
}

impl Checked {
    pub fn new(name: &'static str, health: Health) -> (Self, Arc<Mutex<Health>>, Arc<AtomicUsize>) {
        let health = Arc::new(Mutex::new(health));
        let calls = Arc::new(AtomicUsize::new(0));
        let component = Checked {
            name,
            check: Check::Report(health.clone()),
            calls: calls.clone(),
        };
        (component, health, calls)
    }

    pub fn failing(name: &'static str, check: Check) -> Self {
        Checked {
            name,
            check,
            calls: Arc::default(),
        }
    }
}

#[async_trait]
impl Component for Checked {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn health(&self) -> Health {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.check {
            Check::Report(health) => health.lock().unwrap().clone(),
            Check::Hang => std::future::pending().await,
            Check::Panic => panic!("the check exploded"),
        }
    }
}

/// Spawns hyper's client tasks (HTTP/2 connections) on smol: the tests' clients run on
/// smol whatever the server's runtime.
#[derive(Debug, Clone, Copy)]
pub struct SmolExecutor;

impl<F: std::future::Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for SmolExecutor {
    fn execute(&self, future: F) {
        ::smol::spawn(future).detach();
    }
}

/// `GET path` for an HTTP/2 client.
#[cfg(feature = "http")]
pub fn h2_get(path: &str) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::builder()
        .uri(format!("http://test{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// An HTTP/2 (prior knowledge) connection to `addr`: its sender, and its task on smol.
#[cfg(feature = "http")]
pub async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    ::smol::Task<hyper::Result<()>>,
) {
    let stream = lifecycle::net::Stream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(SmolExecutor, stream.into_hyper())
            .await
            .unwrap();
    (sender, ::smol::spawn(connection))
}

/// Runs `app` to its end on `runtime` as `on_each_runtime!` names it: `run()` for smol,
/// `run_tokio()` for tokio.
pub fn run_app(runtime: &str, app: App) -> Report {
    match runtime {
        "smol" => app.run().unwrap(),
        #[cfg(feature = "tokio")]
        "tokio" => app.run_tokio().unwrap(),
        other => panic!("no runtime {other} in this build"),
    }
}

/// Runs `app` on its own thread on `runtime` ([`run_app`]), once it is running: returns
/// the thread, which ends with the report.
pub fn run_in_background(runtime: &'static str, app: App) -> std::thread::JoinHandle<Report> {
    let health = app.health();
    let app = std::thread::spawn(move || run_app(runtime, app));
    wait_running(&health);
    app
}

/// Waits until the app `health` watches is running; fails the test after 10 s.
fn wait_running(health: &lifecycle::HealthMonitor) {
    let began = std::time::Instant::now();
    while health.phase() != lifecycle::Phase::Running {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the app never ran"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What a [`run_watched`] app asked of its runtime.
#[derive(Debug, Default)]
pub struct Watch {
    /// The sleeps asked for.
    pub sleeps: AtomicUsize,
    /// The size of the largest future spawned, in bytes.
    pub largest_spawned: AtomicUsize,
}

/// The runtime a test names, noting in a [`Watch`] what is asked of it. It gives no
/// signals: a test's signals are its handle's.
#[derive(Debug)]
struct Watched {
    inner: Arc<dyn Runtime>,
    watch: Arc<Watch>,
}

impl Runtime for Watched {
    fn spawn(&self, future: lifecycle::runtime::BoxFuture<()>) {
        let size = std::mem::size_of_val(&*future);
        self.watch.largest_spawned.fetch_max(size, Ordering::SeqCst);
        self.inner.spawn(future)
    }
    fn sleep_until(&self, deadline: std::time::Instant) -> lifecycle::runtime::BoxFuture<()> {
        self.watch.sleeps.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep_until(deadline)
    }
    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }
    fn signals(&self) -> std::io::Result<lifecycle::runtime::SignalStream> {
        Ok(Box::pin(futures_util::stream::pending()))
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// Runs `app` on `runtime` (as `on_each_runtime!` names it), watched, on a thread of its
/// own, once it is running: returns the thread (which ends with the report) and what the
/// app asks of its runtime.
pub fn run_watched(
    runtime: &'static str,
    app: App,
) -> (std::thread::JoinHandle<Report>, Arc<Watch>) {
    let watch = Arc::new(Watch::default());
    let watching = watch.clone();
    let health = app.health();
    let app = std::thread::spawn(move || match runtime {
        "smol" => ::smol::block_on(app.run_on(Arc::new(Watched {
            inner: Arc::new(lifecycle::SmolRuntime::new()),
            watch: watching,
        })))
        .unwrap(),
        #[cfg(feature = "tokio")]
        "tokio" => {
            let tokio = ::tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = tokio.handle().clone();
            tokio
                .block_on(app.run_on(Arc::new(Watched {
                    inner: Arc::new(lifecycle::TokioRuntime::from_handle(handle)),
                    watch: watching,
                })))
                .unwrap()
        }
        other => panic!("no runtime {other} in this build"),
    });
    wait_running(&health);
    (app, watch)
}

/// Whether `future` (a client's connection task) ends within `within`.
pub async fn ends_within<F: std::future::Future + Unpin>(future: F, within: Duration) -> bool {
    let timer = async_io::Timer::after(within);
    matches!(
        futures_util::future::select(future, timer).await,
        futures_util::future::Either::Left(_)
    )
}

/// `GET path` on a new connection with `Connection: close`: the whole answer as text.
pub fn get_closing(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Polls `done` every 5 ms; fails the test, naming `what`, after 10 s.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let began = std::time::Instant::now();
    while !done() {
        assert!(began.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A component that only reloads, logging `settings reloaded`.
pub struct Reloads(pub String);

#[async_trait]
impl Component for Reloads {
    fn name(&self) -> &str {
        &self.0
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn reload(&mut self, _: &ReloadContext) -> Result<(), BoxError> {
        tracing::info!("settings reloaded");
        Ok(())
    }
}

/// The telemetry tests' app: `settings` (reloads), `worker` (restarted on failure after
/// 10 ms) and `http`, on a 10 s budget.
#[cfg(feature = "http")]
pub fn serving_reloading_restarting(
    settings: String,
    worker: Background,
    http: lifecycle::HttpServer,
) -> App {
    App::builder()
        .config(Config::default().shutdown_timeout(Duration::from_secs(10)))
        .add(Reloads(settings))
        .add_with(
            worker,
            Options::new().restart(
                Restart::on_failure().backoff(Duration::from_millis(10), Duration::from_millis(10)),
            ),
        )
        .add(http)
        .build()
        .unwrap()
}

/// Whether a component has been restarted once and every component runs again.
pub fn restarted_once(snapshot: &lifecycle::Snapshot) -> bool {
    snapshot.components.iter().any(|c| c.restarts == 1)
        && snapshot
            .components
            .iter()
            .all(|c| c.state == lifecycle::ComponentState::Running)
}
