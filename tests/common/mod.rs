//! Test support: a scriptable component that records what happens to it, a runtime
//! wrapper that lets a test send signals, and `scenarios!`, which runs each scenario on
//! smol (real clock, generous bounds), on tokio (paused, virtual clock) and on tokio's
//! multi-threaded runtime (real clock, as `run()` builds it).
#![allow(dead_code)]

pub mod child;

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use lifecycle::prelude::*;
use lifecycle::runtime::{BoxFuture, Runtime, Signal, SignalStream};
use lifecycle::ShutdownHandle;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs each named `async fn(Harness)` scenario of the calling file as a test on both
/// runtimes: `mod smol { #[test] fn name() }`, `mod tokio` (virtual time) and
/// `mod tokio_threads` (real time, multi-threaded).
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod smol {
            $( #[test] fn $name() { $crate::common::on_smol(super::$name) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio {
            $( #[test] fn $name() { $crate::common::on_tokio(super::$name) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio_threads {
            $( #[test] fn $name() { $crate::common::on_tokio_threads(super::$name) } )*
        }
    };
}

/// A component that does nothing, named, with dependencies: for graph-shaped tests.
pub struct Named(pub &'static str, pub Vec<&'static str>);

#[async_trait]
impl Component for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn dependencies(&self) -> Vec<&str> {
        self.1.clone()
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// What a scenario gets: the runtime to run the app on, and a way to send it signals.
pub struct Harness {
    pub runtime: Arc<dyn Runtime>,
    signals: UnboundedSender<Signal>,
    pub log: Log,
}

impl Harness {
    fn new(inner: Arc<dyn Runtime>) -> Self {
        laptop();
        let (signals, receiver) = unbounded();
        let origin = inner.now();
        let runtime: Arc<dyn Runtime> = Arc::new(TestRuntime {
            inner,
            signals: Mutex::new(Some(receiver)),
        });
        let log = Log {
            runtime: runtime.clone(),
            origin,
            entries: Arc::default(),
        };
        Harness {
            runtime,
            signals,
            log,
        }
    }

    /// Sends `signal` to the app after `delay`.
    pub fn signal_after(&self, delay: Duration, signal: Signal) {
        let runtime = self.runtime.clone();
        let signals = self.signals.clone();
        self.runtime.spawn(Box::pin(async move {
            runtime.sleep(delay).await;
            let _ = signals.unbounded_send(signal);
        }));
    }

    /// A function that sends a signal to the app at once, for a component to call
    /// from inside a hook.
    pub fn signaller(&self) -> impl Fn(Signal) + Send + Sync + 'static {
        let signals = self.signals.clone();
        move |signal| {
            let _ = signals.unbounded_send(signal);
        }
    }

    /// Sends `signal` as soon as `name` logs `what`.
    pub fn signal_when(&self, name: &str, what: What, signal: Signal) {
        let runtime = self.runtime.clone();
        let signals = self.signals.clone();
        let log = self.log.clone();
        let name = name.to_owned();
        self.runtime.spawn(Box::pin(async move {
            while log.time(&name, what).is_none() {
                runtime.sleep(ms(1)).await;
            }
            let _ = signals.unbounded_send(signal);
        }));
    }

    /// Requests shutdown through `handle` after `delay`.
    pub fn shutdown_after(&self, delay: Duration, handle: ShutdownHandle) {
        let runtime = self.runtime.clone();
        self.runtime.spawn(Box::pin(async move {
            runtime.sleep(delay).await;
            handle.shutdown();
        }));
    }

    /// Runs `app` on this harness's runtime.
    pub async fn run(&self, app: App) -> Report {
        app.run_on(self.runtime.clone())
            .await
            .expect("the app runs")
    }

    /// A scriptable component named `name`, logging to this harness's log.
    pub fn probe(&self, name: &str) -> Probe {
        Probe {
            name: name.to_owned(),
            dependencies: Vec::new(),
            start: Act::Ok,
            stop: Act::Ok,
            flush: Act::Ok,
            task: None,
            log: self.log.clone(),
        }
    }
}

/// The scenarios assume a laptop: in Kubernetes the default drain delay is 5 s.
pub fn laptop() {
    std::env::remove_var("KUBERNETES_SERVICE_HOST");
}

pub fn on_smol<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    smol::block_on(scenario(Harness::new(Arc::new(
        lifecycle::SmolRuntime::new(),
    ))))
}

#[cfg(feature = "tokio")]
pub fn on_tokio<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime
        .block_on(async { scenario(Harness::new(Arc::new(lifecycle::TokioRuntime::new()))).await })
}

/// On the runtime `run()` builds: tokio, multi-threaded (two workers), real clock.
#[cfg(feature = "tokio")]
pub fn on_tokio_threads<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async { scenario(Harness::new(Arc::new(lifecycle::TokioRuntime::new()))).await })
}

/// Delegates to a real runtime, except that signals come from the test.
struct TestRuntime {
    inner: Arc<dyn Runtime>,
    signals: Mutex<Option<UnboundedReceiver<Signal>>>,
}

impl fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRuntime")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Runtime for TestRuntime {
    fn spawn(&self, future: BoxFuture<()>) {
        self.inner.spawn(future)
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        self.inner.sleep_until(deadline)
    }
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn signals(&self) -> io::Result<SignalStream> {
        let receiver = self
            .signals
            .lock()
            .unwrap()
            .take()
            .expect("signals are registered once");
        Ok(Box::pin(receiver))
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

/// Something that happened to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    StartBegan,
    Started,
    StartDropped,
    StopBegan,
    Stopped,
    StopDropped,
    Flushed,
    FlushDropped,
    TaskDropped,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: Duration,
    pub name: String,
    pub what: What,
}

/// The shared, timestamped record of what happened to every probe.
#[derive(Clone)]
pub struct Log {
    runtime: Arc<dyn Runtime>,
    origin: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Log {
    pub fn push(&self, name: &str, what: What) {
        let at = self.runtime.now() - self.origin;
        self.entries.lock().unwrap().push(Entry {
            at,
            name: name.to_owned(),
            what,
        });
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }

    /// Names that logged `what`, in the order they did.
    pub fn names(&self, what: What) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| e.what == what)
            .map(|e| e.name)
            .collect()
    }

    /// When `name` logged `what` (the first time).
    pub fn time(&self, name: &str, what: What) -> Option<Duration> {
        self.entries()
            .into_iter()
            .find(|e| e.name == name && e.what == what)
            .map(|e| e.at)
    }

    /// Index of the first `what` of `name` in the log.
    pub fn position(&self, name: &str, what: What) -> Option<usize> {
        self.entries()
            .iter()
            .position(|e| e.name == name && e.what == what)
    }

    pub fn count(&self, name: &str, what: What) -> usize {
        self.entries()
            .iter()
            .filter(|e| e.name == name && e.what == what)
            .count()
    }
}

/// A component whose hooks do what the test says and log what happens.
pub struct Probe {
    pub name: String,
    pub dependencies: Vec<String>,
    pub start: Act,
    pub stop: Act,
    pub flush: Act,
    pub task: Option<TaskAct>,
    pub log: Log,
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
    log: Log,
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
            self.log.push(&self.name, self.what);
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    fn dependencies(&self) -> Vec<&str> {
        self.dependencies.iter().map(String::as_str).collect()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.log.push(&self.name, What::StartBegan);
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
        self.log.push(&self.name, What::Started);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.log.push(&self.name, What::StopBegan);
        self.act(ctx.runtime(), &self.stop, "stop", What::StopDropped)
            .await?;
        self.log.push(&self.name, What::Stopped);
        Ok(())
    }

    async fn flush(&mut self, ctx: &FlushContext) -> Result<(), BoxError> {
        self.act(ctx.runtime(), &self.flush, "flush", What::FlushDropped)
            .await?;
        self.log.push(&self.name, What::Flushed);
        Ok(())
    }
}

/// Checks the ordering invariants on the log of a run whose graph is `edges`
/// (`(a, b)`: `a` depends on `b`): a node starts only after its dependencies started,
/// stops only after its dependents stopped, each started node stops once, nothing else
/// stops, and every flush comes after the last stop.
pub fn assert_ordering(log: &Log, edges: &[(&str, &str)]) {
    for &(a, b) in edges {
        if let Some(began) = log.position(a, What::StartBegan) {
            let started = log
                .position(b, What::Started)
                .unwrap_or_else(|| panic!("{a} began starting but {b} never started"));
            assert!(
                started < began,
                "{a} began starting before its dependency {b} started"
            );
        }
        if let (Some(stopped), Some(began)) = (
            log.position(a, What::Stopped),
            log.position(b, What::StopBegan),
        ) {
            assert!(
                stopped < began,
                "{b} began stopping before its dependent {a} stopped"
            );
        }
    }
    let started = log.names(What::Started);
    let mut stopped = log.names(What::Stopped);
    stopped.sort();
    let mut expected = started.clone();
    expected.sort();
    assert_eq!(
        stopped, expected,
        "exactly the started components stop, once each"
    );
    let entries = log.entries();
    let last_stop = entries
        .iter()
        .rposition(|e| matches!(e.what, What::Stopped | What::StopDropped));
    let first_flush = entries.iter().position(|e| e.what == What::Flushed);
    if let (Some(stop), Some(flush)) = (last_stop, first_flush) {
        assert!(stop < flush, "a flush ran before the last stop ended");
    }
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
