//! A kit to test your own components' lifecycle (cargo feature `testing`): run an app on
//! tokio's paused clock (a 25 s shutdown tests in milliseconds) or on a real clock, on
//! either runtime; send it signals at chosen times or when something happens; wrap any
//! component to record its hooks on a [`Timeline`] and inject faults (hang, fail, panic,
//! sleep, at the n-th call) without editing it; and assert on orders, outcomes, the exit
//! code and the budget.
//!
//! # Examples
//!
//! Does my worker finish its item on SIGTERM, and does the shutdown keep its budget? On
//! tokio's paused clock the 30 s below take no real time:
//!
//! ```
//! use std::time::Duration;
//! use lifecycle::prelude::*;
//! use lifecycle::testing::{Fault, Harness, Hook, What};
//! use lifecycle::Signal;
//!
//! /// The component under test: its stop takes 2 s to finish its item.
//! struct Worker;
//!
//! #[async_trait]
//! impl Component for Worker {
//!     fn name(&self) -> &str { "worker" }
//!     fn options(&self) -> Options { Options::new().depends_on("db") }
//!     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
//!     async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
//!         ctx.runtime().sleep(Duration::from_secs(2)).await; // finishing the item
//!         Ok(())
//!     }
//! }
//!
//! struct Db;
//!
//! #[async_trait]
//! impl Component for Db {
//!     fn name(&self) -> &str { "db" }
//!     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
//!     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
//! }
//!
//! let began = std::time::Instant::now();
//! lifecycle::testing::on_tokio(|h: Harness| async move {
//!     let app = App::builder()
//!         .config(Config::default().shutdown_timeout(Duration::from_secs(25)))
//!         .add(h.wrap(Db))
//!         .add(h.wrap(Worker))
//!         .build()
//!         .unwrap();
//!     h.signal_after(Duration::from_secs(30), Signal::Terminate);
//!     let report = h.run(app).await;
//!
//!     assert_eq!(report.exit_code(), 0);
//!     let timeline = h.timeline();
//!     timeline.assert_before(("worker", What::Stopped), ("db", What::StopBegan));
//!     assert_eq!(timeline.time("worker", What::Stopped), Some(Duration::from_secs(32)));
//!     lifecycle::testing::assert_within_budget(&report, Duration::from_secs(25));
//! });
//! assert!(began.elapsed() < Duration::from_secs(1), "virtual time");
//! ```
//!
//! Faults go into any component, at the call you choose:
//!
//! ```
//! # use std::time::Duration;
//! # use lifecycle::prelude::*;
//! # use lifecycle::testing::{Fault, Harness, Hook, What};
//! # struct Db;
//! # #[async_trait]
//! # impl Component for Db {
//! #     fn name(&self) -> &str { "db" }
//! #     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
//! #     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
//! # }
//! lifecycle::testing::on_tokio(|h: Harness| async move {
//!     // The db's start hangs: it times out after 30 s, and nothing else runs.
//!     let app = App::builder().add(h.wrap(Db).inject(Hook::Start, Fault::Hang)).build().unwrap();
//!     let report = h.run(app).await;
//!     assert_eq!(report.exit_code(), 1);
//!     assert_eq!(report.failures(), ["start of db timed out after 30s"]);
//!     assert_eq!(h.timeline().count("db", What::StartDropped), 1);
//! });
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};

use crate::runtime::{BoxFuture, Runtime, SignalStream};
use crate::{
    async_trait, App, BoxError, Component, Health, Options, ReloadContext, Report, ShutdownHandle,
    Signal, StartContext, StopContext,
};

/// Runs each named `async fn(Harness)` scenario of the calling file as a test on each
/// runtime compiled in: `mod smol` (real clock), `mod tokio` (paused, virtual clock) and
/// `mod tokio_threads` (multi-threaded, real clock: what `run_tokio()` builds).
///
/// ```
/// async fn my_drain(h: lifecycle::testing::Harness) {
///     // build an app with h.wrap(...), run it with h.run(app).await, assert
/// }
///
/// lifecycle::scenarios!(my_drain);
/// ```
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "smol")]
        mod smol {
            $( #[test] fn $name() { $crate::testing::on_smol(super::$name) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio {
            $( #[test] fn $name() { $crate::testing::on_tokio(super::$name) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio_threads {
            $( #[test] fn $name() { $crate::testing::on_tokio_threads(super::$name) } )*
        }
    };
}

/// Runs `scenario` on smol, on the real clock.
#[cfg(feature = "smol")]
pub fn on_smol<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    lifecycle_smol::block_on(scenario(Harness::new(Arc::new(crate::SmolRuntime::new()))))
}

/// Runs `scenario` on a current-thread tokio runtime whose clock is paused: time advances
/// only when every task waits, straight to the next timer, so timeouts of seconds run in
/// microseconds and every duration is exact.
#[cfg(feature = "tokio")]
pub fn on_tokio<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async { scenario(Harness::new(Arc::new(crate::TokioRuntime::new()))).await })
}

/// Runs `scenario` on tokio's multi-threaded runtime (two workers), on the real clock.
#[cfg(feature = "tokio")]
pub fn on_tokio_threads<F: Future<Output = ()>>(scenario: impl FnOnce(Harness) -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async { scenario(Harness::new(Arc::new(crate::TokioRuntime::new()))).await })
}

/// What a scenario gets: a runtime whose signals come from the test, a [`Timeline`] of
/// what happened to the wrapped components, and helpers to send signals and requests.
pub struct Harness {
    runtime: Arc<dyn Runtime>,
    signals: UnboundedSender<Signal>,
    timeline: Timeline,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness on `runtime` (the `on_*` functions make one for you).
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        let (signals, receiver) = unbounded();
        let origin = runtime.now();
        let runtime: Arc<dyn Runtime> = Arc::new(TestRuntime {
            inner: runtime,
            signals: Mutex::new(Some(receiver)),
        });
        let timeline = Timeline {
            runtime: runtime.clone(),
            origin,
            entries: Arc::default(),
        };
        Harness {
            runtime,
            signals,
            timeline,
        }
    }

    /// The runtime the app runs on: sleep on its clock, spawn on it.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// What happened to the wrapped components, in order, with times since the harness
    /// was made.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Wraps `component` so its hooks are recorded on the timeline; add faults with
    /// [`Faulty::inject`].
    pub fn wrap<C: Component>(&self, component: C) -> Faulty<C> {
        Faulty {
            inner: component,
            faults: Vec::new(),
            calls: Default::default(),
            timeline: self.timeline.clone(),
        }
    }

    /// Records every component of `builder` on the timeline (an app assembled by your own
    /// code, untouched), and lets faults be injected into them by name.
    ///
    /// ```
    /// # use lifecycle::prelude::*;
    /// # use lifecycle::testing::{Fault, Hook, What};
    /// # struct Db;
    /// # #[async_trait]
    /// # impl Component for Db {
    /// #     fn name(&self) -> &str { "db" }
    /// #     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
    /// #     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// # fn my_app() -> lifecycle::Builder { App::builder().add(Db) }
    /// lifecycle::testing::on_tokio(|h| async move {
    ///     let app = h.instrument(my_app()).inject("db", Hook::Start, Fault::Fail).build().unwrap();
    ///     let report = h.run(app).await;
    ///     assert_eq!(report.failures(), ["start of db failed: injected failure"]);
    /// });
    /// ```
    pub fn instrument(&self, builder: crate::Builder) -> Instrumented<'_> {
        Instrumented {
            harness: self,
            builder,
            faults: Vec::new(),
        }
    }

    /// Sends `signal` to the app after `delay` (on the app's clock).
    pub fn signal_after(&self, delay: Duration, signal: Signal) {
        let runtime = self.runtime.clone();
        let signals = self.signals.clone();
        self.runtime.spawn(Box::pin(async move {
            runtime.sleep(delay).await;
            let _ = signals.unbounded_send(signal);
        }));
    }

    /// Sends `signal` as soon as `component` has recorded `what` on the timeline.
    pub fn signal_when(&self, component: &str, what: What, signal: Signal) {
        let runtime = self.runtime.clone();
        let signals = self.signals.clone();
        let timeline = self.timeline.clone();
        let component = component.to_owned();
        self.runtime.spawn(Box::pin(async move {
            while timeline.time(&component, what).is_none() {
                runtime.sleep(Duration::from_millis(1)).await;
            }
            let _ = signals.unbounded_send(signal);
        }));
    }

    /// A function that sends a signal to the app at once, to call from inside a hook.
    pub fn signaller(&self) -> impl Fn(Signal) + Send + Sync + 'static {
        let signals = self.signals.clone();
        move |signal| {
            let _ = signals.unbounded_send(signal);
        }
    }

    /// Requests shutdown through `handle` after `delay`.
    pub fn shutdown_after(&self, delay: Duration, handle: ShutdownHandle) {
        let runtime = self.runtime.clone();
        self.runtime.spawn(Box::pin(async move {
            runtime.sleep(delay).await;
            handle.shutdown();
        }));
    }

    /// Runs `app` on this harness's runtime, to its report.
    ///
    /// # Panics
    ///
    /// When the app cannot run at all (it can run only once per harness: the signals
    /// are registered once).
    pub async fn run(&self, app: App) -> Report {
        app.run_on(self.runtime.clone())
            .await
            .expect("the app runs (once per harness)")
    }
}

/// An app's builder whose components are recorded on a harness's timeline, with faults
/// injected by component name; made by [`Harness::instrument`].
#[must_use = "build it into the app to run"]
pub struct Instrumented<'h> {
    harness: &'h Harness,
    builder: crate::Builder,
    faults: Vec<(String, Hook, Fault, Option<usize>)>,
}

impl fmt::Debug for Instrumented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl Instrumented<'_> {
    /// Injects `fault` into every call of `hook` of the component named `component`.
    pub fn inject(mut self, component: &str, hook: Hook, fault: Fault) -> Self {
        self.faults.push((component.to_owned(), hook, fault, None));
        self
    }

    /// Injects `fault` into the `nth` call (the first is 1) of `hook` of `component`.
    pub fn inject_at(mut self, component: &str, hook: Hook, fault: Fault, nth: usize) -> Self {
        self.faults
            .push((component.to_owned(), hook, fault, Some(nth)));
        self
    }

    /// Builds the app, every component wrapped.
    ///
    /// # Errors
    ///
    /// The app's own [`BuildError`](crate::BuildError).
    pub fn build(self) -> Result<App, crate::BuildError> {
        let Instrumented {
            harness,
            builder,
            faults,
        } = self;
        builder
            .wrap_each(|component| {
                let mut wrapped = harness.wrap(component);
                let name = wrapped.inner.name().to_owned();
                for (_, hook, fault, nth) in faults.iter().filter(|f| f.0 == name) {
                    wrapped.faults.push((*hook, *fault, *nth));
                }
                Box::new(wrapped)
            })
            .build()
    }
}

/// Delegates to a real runtime, except that signals come from the harness.
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
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn signals(&self) -> io::Result<SignalStream> {
        let receiver = self
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| io::Error::other("a harness runs one app: its signals are taken"))?;
        Ok(Box::pin(receiver))
    }
}

/// Something that happened to a component, on the [`Timeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum What {
    /// Its start began.
    StartBegan,
    /// Its start returned `Ok`.
    Started,
    /// Its start's future was dropped before it returned (a timeout, an abort).
    StartDropped,
    /// Its stop began.
    StopBegan,
    /// Its stop returned `Ok`.
    Stopped,
    /// Its stop's future was dropped before it returned.
    StopDropped,
    /// Its flush returned `Ok`.
    Flushed,
    /// Its flush's future was dropped before it returned.
    FlushDropped,
    /// Its reload began.
    ReloadBegan,
    /// Its reload returned `Ok`.
    Reloaded,
    /// Its reload's future was dropped before it returned (a timeout, a shutdown).
    ReloadDropped,
    /// A hook returned an error or panicked (the report says which and how).
    HookFailed,
    /// A tracked task of it was dropped (cancelled) before it ended.
    TaskDropped,
}

/// One event of the [`Timeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When, since the harness was made, on the app's clock.
    pub at: Duration,
    /// The component.
    pub name: String,
    /// What happened.
    pub what: What,
}

/// The shared, timestamped record of what happened to the wrapped components. Cheap to
/// clone. Its assertions panic with a message that shows what differed.
#[derive(Clone)]
pub struct Timeline {
    runtime: Arc<dyn Runtime>,
    origin: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl fmt::Debug for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

impl Timeline {
    /// Records that `name` did `what`, now.
    pub fn record(&self, name: &str, what: What) {
        let at = self.runtime.now() - self.origin;
        self.lock().push(Entry {
            at,
            name: name.to_owned(),
            what,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every entry so far, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// The components that did `what`, in the order they did.
    pub fn names(&self, what: What) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|e| e.what == what)
            .map(|e| e.name.clone())
            .collect()
    }

    /// When `name` first did `what`.
    pub fn time(&self, name: &str, what: What) -> Option<Duration> {
        self.lock()
            .iter()
            .find(|e| e.name == name && e.what == what)
            .map(|e| e.at)
    }

    /// The index of the first time `name` did `what`.
    pub fn position(&self, name: &str, what: What) -> Option<usize> {
        self.lock()
            .iter()
            .position(|e| e.name == name && e.what == what)
    }

    /// How many times `name` did `what`.
    pub fn count(&self, name: &str, what: What) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.name == name && e.what == what)
            .count()
    }

    /// Asserts that `first` happened, then `then`.
    ///
    /// # Panics
    ///
    /// Naming which did not happen, or both with their positions, and the timeline.
    #[track_caller]
    pub fn assert_before(&self, first: (&str, What), then: (&str, What)) {
        let a = self.position(first.0, first.1);
        let b = self.position(then.0, then.1);
        match (a, b) {
            (Some(a), Some(b)) if a < b => {}
            (Some(a), Some(b)) => panic!(
                "expected {} {:?} before {} {:?}, but it came after (#{a} after #{b}):\n{self:#?}",
                first.0, first.1, then.0, then.1
            ),
            (None, _) => panic!("{} never did {:?}:\n{self:#?}", first.0, first.1),
            (_, None) => panic!("{} never did {:?}:\n{self:#?}", then.0, then.1),
        }
    }

    /// Asserts the ordering rules on a run whose graph is `edges` (`(a, b)`: `a`
    /// depends on `b`): a component began starting only after its dependencies had
    /// started, began stopping only after its dependents had stopped; every started
    /// component stopped once and nothing else stopped; flushes came after the last stop.
    ///
    /// # Panics
    ///
    /// Naming the rule broken and the components.
    #[track_caller]
    pub fn assert_ordering(&self, edges: &[(&str, &str)]) {
        for &(a, b) in edges {
            if let Some(began) = self.position(a, What::StartBegan) {
                let started = self
                    .position(b, What::Started)
                    .unwrap_or_else(|| panic!("{a} began starting but {b} never started"));
                assert!(
                    started < began,
                    "{a} began starting before its dependency {b} started"
                );
            }
            if let (Some(stopped), Some(began)) = (
                self.position(a, What::Stopped),
                self.position(b, What::StopBegan),
            ) {
                assert!(
                    stopped < began,
                    "{b} began stopping before its dependent {a} stopped"
                );
            }
        }
        let mut started = self.names(What::Started);
        let mut stopped = self.names(What::Stopped);
        started.sort();
        stopped.sort();
        assert_eq!(
            stopped, started,
            "exactly the started components stop, once each"
        );
        let entries = self.entries();
        let last_stop = entries
            .iter()
            .rposition(|e| matches!(e.what, What::Stopped | What::StopDropped));
        let first_flush = entries.iter().position(|e| e.what == What::Flushed);
        if let (Some(stop), Some(flush)) = (last_stop, first_flush) {
            assert!(stop < flush, "a flush ran before the last stop ended");
        }
    }
}

/// Asserts that the shutdown of `report` kept `budget` (the app's
/// [`Config::shutdown_timeout`](crate::Config::shutdown_timeout)): from the trigger to the end of the flush, plus 100 ms
/// of slack for a real clock.
///
/// # Panics
///
/// Showing the shutdown's duration, the budget and the report.
#[track_caller]
pub fn assert_within_budget(report: &Report, budget: Duration) {
    assert!(
        report.shutdown <= budget + Duration::from_millis(100),
        "the shutdown took {:?}, over its budget of {budget:?}:\n{report}",
        report.shutdown,
    );
}

/// A hook of a component, where a [`Fault`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hook {
    /// [`Component::start`].
    Start,
    /// [`Component::stop`].
    Stop,
    /// [`Component::flush`].
    Flush,
    /// [`Component::health`].
    Health,
    /// [`Component::reload`].
    Reload,
}

/// What an injected fault does to a hook, before (instead of) the component's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Never returns (the engine's timeout drops it). A health check hangs.
    Hang,
    /// Returns an error, `"injected failure"`. A health check reports Down.
    Fail,
    /// Panics, `"injected panic"`.
    Panic,
    /// Sleeps this long on the app's clock, then runs the component's own hook.
    Sleep(Duration),
}

/// A component wrapped by [`Harness::wrap`]: its hooks recorded on the timeline, faults
/// injected into them.
pub struct Faulty<C> {
    inner: C,
    /// (hook, fault, the call it applies to: `None` for every call).
    faults: Vec<(Hook, Fault, Option<usize>)>,
    calls: [AtomicUsize; 5],
    timeline: Timeline,
}

impl<C> fmt::Debug for Faulty<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<C: Component> Faulty<C> {
    /// Injects `fault` into every call of `hook`.
    #[must_use]
    pub fn inject(mut self, hook: Hook, fault: Fault) -> Self {
        self.faults.push((hook, fault, None));
        self
    }

    /// Injects `fault` into the `nth` call of `hook` only (the first is 1): the second
    /// start (after a restart), the third health check.
    #[must_use]
    pub fn inject_at(mut self, hook: Hook, fault: Fault, nth: usize) -> Self {
        self.faults.push((hook, fault, Some(nth)));
        self
    }

    /// The fault for this call of `hook`, counting the call.
    fn fault(&self, hook: Hook) -> Option<Fault> {
        let call = self.calls[hook as usize].fetch_add(1, Ordering::AcqRel) + 1;
        self.faults
            .iter()
            .find(|(h, _, nth)| *h == hook && nth.is_none_or(|nth| nth == call))
            .map(|&(_, fault, _)| fault)
    }

    /// Runs one hook: records it, applies its fault, else calls the component's own.
    async fn run_hook<'a, F, Fut>(
        &'a mut self,
        hook: Hook,
        runtime: &Arc<dyn Runtime>,
        call: F,
    ) -> Result<(), BoxError>
    where
        F: FnOnce(&'a mut C) -> Fut,
        Fut: Future<Output = Result<(), BoxError>> + 'a,
    {
        let fault = self.fault(hook);
        let Faulty {
            inner, timeline, ..
        } = self;
        let name = inner.name().to_owned();
        let (began, done, dropped) = match hook {
            Hook::Start => (Some(What::StartBegan), What::Started, What::StartDropped),
            Hook::Stop => (Some(What::StopBegan), What::Stopped, What::StopDropped),
            Hook::Reload => (Some(What::ReloadBegan), What::Reloaded, What::ReloadDropped),
            Hook::Flush | Hook::Health => (None, What::Flushed, What::FlushDropped),
        };
        if let Some(began) = began {
            timeline.record(&name, began);
        }
        let guard = DropRecord {
            timeline,
            name: &name,
            what: dropped,
            armed: true,
        };
        let result = match fault {
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Fail) => Err("injected failure".into()),
            Some(Fault::Panic) => panic!("injected panic"),
            Some(Fault::Sleep(duration)) => {
                runtime.sleep(duration).await;
                call(inner).await
            }
            None => call(inner).await,
        };
        guard.disarm();
        match &result {
            Ok(()) => timeline.record(&name, done),
            Err(_) => timeline.record(&name, What::HookFailed),
        }
        result
    }
}

/// Records `what` if dropped while armed: the hook's future was cancelled.
struct DropRecord<'a> {
    timeline: &'a Timeline,
    name: &'a str,
    what: What,
    armed: bool,
}

impl DropRecord<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DropRecord<'_> {
    fn drop(&mut self) {
        // A panic unwinding through the hook is not a cancellation.
        if self.armed && !std::thread::panicking() {
            self.timeline.record(self.name, self.what);
        }
    }
}

#[async_trait]
impl<C: Component> Component for Faulty<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn options(&self) -> Options {
        self.inner.options()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.run_hook(Hook::Start, ctx.runtime(), |inner| inner.start(ctx))
            .await
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.run_hook(Hook::Stop, ctx.runtime(), |inner| inner.stop(ctx))
            .await
    }

    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        self.run_hook(Hook::Flush, ctx.runtime(), |inner| inner.flush(ctx))
            .await
    }

    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        self.run_hook(Hook::Reload, ctx.runtime(), |inner| inner.reload(ctx))
            .await
    }

    async fn health(&self) -> Health {
        match self.fault(Hook::Health) {
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Fail) => Health::Down("injected failure".into()),
            Some(Fault::Panic) => panic!("injected panic"),
            Some(Fault::Sleep(duration)) => {
                self.timeline.runtime.sleep(duration).await;
                self.inner.health().await
            }
            None => self.inner.health().await,
        }
    }
}
