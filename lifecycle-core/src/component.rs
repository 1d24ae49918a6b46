//! The `Component` trait and the contexts its hooks receive.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::Options;
use crate::error::BoxError;
use crate::health::{Health, HealthMonitor};
use crate::report::ReloadTrigger;
use crate::resources::Staged;
use crate::resources::{ResourceError, Resources};
use crate::runtime::{timeout_at, Runtime, Timeout};
use crate::shutdown::{InFlight, ReloadHandle, ShutdownHandle, ShutdownToken};
use crate::task::{Spawner, Task, TaskSet};

/// A part of an application with a lifecycle: a database pool, a cache, an HTTP server,
/// a metrics exporter.
///
/// The engine calls [`start`](Component::start) once all the component's dependencies
/// have started, [`stop`](Component::stop) once all its dependents have stopped, and
/// [`flush`](Component::flush) after every stop has ended. Each call runs under a
/// timeout; a call that errors, panics or times out is recorded in the
/// [`Report`](crate::Report) and, on timeout, its future is dropped.
///
/// Hooks must not block the thread (use your runtime's `spawn_blocking` or `unblock`
/// for blocking work): a hook that blocks the thread cannot be cancelled.
///
/// # Cancellation
///
/// A hook's future may be dropped at any `.await`: a start at its own timeout, when
/// another start fails, or when a signal or shutdown request arrives during startup; a
/// stop at its deadline or when a second signal forces the exit; every hook when the
/// app's run future itself is dropped. A component whose start was dropped is not
/// stopped (it never started), so cleanup that must happen whatever the outcome belongs
/// in `Drop` of what the start acquired, not in `stop`.
///
/// # Timeouts
///
/// Each hook runs under a deadline (its context's `deadline()`): the component's own
/// timeout ([`Options`]), cut shorter by what is left of the shutdown budget for stops
/// and flushes. At the deadline the future is dropped and the step reported as timed
/// out. The contexts' `until_deadline` runs part of a hook under the same deadline, so
/// a hook can say what did not finish.
///
/// # Panics
///
/// A panic in a hook is caught and reported like an error ("start of db panicked:
/// ..."); a panic in a start aborts the start like a failure. A panic in a tracked task
/// triggers shutdown, naming the component.
///
/// # Tracked tasks
///
/// Work spawned with [`StartContext::spawn`] is the component's: it runs in the
/// component's span, and once the component's `stop` has returned (or timed out) what
/// is left of it is cancelled, before the components it depends on begin to stop. A
/// stop that wants its loops to finish their current item awaits their [`Task`]s (or
/// [`StopContext::tasks_ended`]) before returning.
///
/// # Health
///
/// [`health`](Component::health) runs under the health check timeout; a check that
/// times out or panics reports [`Health::Down`], because a component that cannot say it
/// is well must not be trusted with traffic.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{async_trait, BoxError, Component, Options, StartContext, StopContext};
///
/// struct Db {
///     connected: bool,
/// }
///
/// #[async_trait]
/// impl Component for Db {
///     fn name(&self) -> &str {
///         "db"
///     }
///
///     fn options(&self) -> Options {
///         Options::new().depends_on("metrics")
///     }
///
///     async fn start(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
///         self.connected = true; // connect the pool here
///         Ok(())
///     }
///
///     async fn stop(&mut self, _ctx: &StopContext) -> Result<(), BoxError> {
///         self.connected = false; // wait for queries in flight, then close
///         Ok(())
///     }
/// }
/// # assert_eq!(Db { connected: false }.options().dependencies(), ["metrics"]);
/// ```
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// The component's unique name, used for dependencies, logs and the report.
    fn name(&self) -> &str;

    /// What this component declares for itself: the components it depends on
    /// ([`depends_on`](Options::depends_on), by name), the resources it provides and uses
    /// ([`provides`](Options::provides), [`uses`](Options::uses), by type), and timeouts
    /// and flags that suit it. The default declares nothing.
    ///
    /// The app can add options at registration
    /// ([`Builder::add_with`](crate::Builder::add_with)): their dependencies, provides and
    /// uses add to these; a timeout or flag they set replaces the component's. That is
    /// the whole precedence; [`App::explain`](crate::App::explain) shows the result.
    fn options(&self) -> Options {
        Options::new()
    }

    /// Makes the component ready for its dependents: bind the listener, connect the
    /// pool. Long-running work (an accept loop, a ticker) goes to
    /// [`StartContext::spawn`], not into this future, which must return.
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError>;

    /// Stops the component: finish or hand off work in progress, release resources.
    /// Should return by [`StopContext::deadline`]; the engine drops the future there.
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError>;

    /// The component's health, checked while the app runs (see [`HealthMonitor`]): under
    /// the check timeout, concurrently with the other components' checks, and cached
    /// briefly. Keep it cheap (a ping, a pool's state). The default is [`Health::Up`].
    async fn health(&self) -> Health {
        Health::Up
    }

    /// Re-reads what can change without a restart (a configuration file, a certificate,
    /// a log filter) and applies it, while the app keeps serving. The default does
    /// nothing.
    ///
    /// A reload ([`ReloadHandle::reload`](crate::ReloadHandle::reload), or `SIGHUP` with
    /// [`Config::reload_on_sighup`](crate::Config::reload_on_sighup)) calls it on every
    /// running component, each as soon as the components it depends on have reloaded
    /// (independent ones concurrently), under the component's reload timeout
    /// ([`Options::reload_timeout`]). What it [provides](ReloadContext::provide) replaces
    /// what its dependents get from [`resource`](ReloadContext::resource) in their own
    /// reload.
    ///
    /// A reload that errors, panics or times out must leave the component as it was
    /// (validate the new state before swapping it in): the engine keeps what it provided
    /// before, does not reload its dependents (their reload may rely on the new state),
    /// and reports it; the app goes on serving, and the exit code is not affected.
    ///
    /// # Cancellation
    ///
    /// The future is dropped at the reload timeout, and at once when a shutdown is
    /// triggered during the reload (the shutdown keeps its whole budget): swap the new
    /// state in with one assignment at the end, so a dropped reload changes nothing.
    ///
    /// ```
    /// use lifecycle_core::{async_trait, BoxError, Component, ReloadContext, StartContext, StopContext};
    ///
    /// struct Cache {
    ///     ttl: std::time::Duration,
    /// }
    ///
    /// #[async_trait]
    /// impl Component for Cache {
    ///     fn name(&self) -> &str { "cache" }
    ///     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
    ///     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
    ///     async fn reload(&mut self, _: &ReloadContext) -> Result<(), BoxError> {
    ///         let text = "30"; // read from the configuration file
    ///         let ttl = text.parse::<u64>().map_err(|e| format!("cache ttl: {e}"))?;
    ///         self.ttl = std::time::Duration::from_secs(ttl); // the swap, once all is checked
    ///         Ok(())
    ///     }
    /// }
    /// ```
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Writes out what is buffered (logs, metrics). Runs after every stop has ended,
    /// in reverse dependency order, within the budget's reserved flush time. The default
    /// does nothing.
    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }
}

/// A boxed component is a component (what [`Builder::wrap_each`](crate::Builder::wrap_each)
/// hands out).
#[async_trait]
impl Component for Box<dyn Component> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn options(&self) -> Options {
        (**self).options()
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        (**self).start(ctx).await
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        (**self).stop(ctx).await
    }
    async fn health(&self) -> Health {
        (**self).health().await
    }
    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        (**self).flush(ctx).await
    }
    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        (**self).reload(ctx).await
    }
}

/// Counts the panics a component caught and survived: a request handler's panic that
/// failed only its own request, where a panic of a tracked task would have failed the
/// component. The count is in the health snapshot
/// ([`ComponentHealth::handled_panics`](crate::ComponentHealth::handled_panics)) and the
/// report ([`ComponentReport::handled_panics`](crate::ComponentReport::handled_panics));
/// it does not make the exit unclean. From
/// [`StartContext::panic_counter`]; cheap to clone.
#[derive(Clone)]
pub struct PanicCounter {
    shared: Arc<crate::health::Shared>,
    node: usize,
}

impl fmt::Debug for PanicCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicCounter")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl PanicCounter {
    /// Counts one more panic.
    pub fn record(&self) {
        self.shared.count_handled_panic(self.node);
    }

    /// How many panics were counted.
    pub fn count(&self) -> u64 {
        self.shared.handled_panics(self.node)
    }
}

/// What [`Component::start`] receives: the component's name, a way to spawn tracked
/// tasks, the shutdown token and handle, the runtime and the start deadline.
pub struct StartContext {
    pub(crate) name: Arc<str>,
    pub(crate) spawner: Spawner,
    pub(crate) resources: Arc<Resources>,
    pub(crate) handle: ShutdownHandle,
    /// The app's token, or this component's own when it is stopped before the app.
    pub(crate) token: ShutdownToken,
    /// This component's stop.
    pub(crate) stop_token: ShutdownToken,
    pub(crate) health: HealthMonitor,
    pub(crate) in_flight: InFlight,
    pub(crate) deadline: Instant,
    pub(crate) shutdown_budget: Duration,
}

impl StartContext {
    /// A second handle on this context, for a closure component's closure (see
    /// [`StartFn`](crate::StartFn)). Not `Clone`: a `StartContext` argument must not read
    /// as a resource.
    pub(crate) fn duplicate(&self) -> StartContext {
        StartContext {
            name: self.name.clone(),
            spawner: self.spawner.clone(),
            resources: self.resources.clone(),
            handle: self.handle.clone(),
            token: self.token.clone(),
            stop_token: self.stop_token.clone(),
            health: self.health.clone(),
            in_flight: self.in_flight.clone(),
            deadline: self.deadline,
            shutdown_budget: self.shutdown_budget,
        }
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Spawns one of the component's own tasks (its loop, its accept loop): it runs in
    /// this component's `task` span, is cancelled when the component has stopped (or when
    /// the app's run future is dropped), and a panic in it while the app runs triggers
    /// shutdown, naming this component. Its end is the component's end under
    /// [`Restart::always`](crate::Restart::always); for tasks whose end is not (one per
    /// connection), use [`helper_spawner`](StartContext::helper_spawner). The returned
    /// [`Task`] can be awaited (in `stop`, until the deadline) or aborted; dropping it
    /// detaches the task.
    ///
    /// # Examples
    ///
    /// ```
    /// # use lifecycle_core::{StartContext, BoxError};
    /// # use std::time::Duration;
    /// # fn start(ctx: &StartContext) {
    /// let runtime = ctx.runtime().clone();
    /// ctx.spawn(async move {
    ///     loop {
    ///         runtime.sleep(Duration::from_secs(10)).await;
    ///         // refresh a cache, export metrics...
    ///     }
    /// });
    /// # }
    /// ```
    pub fn spawn<F>(&self, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawner.spawn(task)
    }

    /// A counter of the panics this component catches and survives (a request handler's
    /// panic that fails only its request), shown in the health snapshot and the report.
    ///
    /// ```
    /// # fn start(ctx: &lifecycle_core::StartContext) {
    /// let panics = ctx.panic_counter();
    /// let handled = std::panic::catch_unwind(|| panic!("a handler's bug"));
    /// if handled.is_err() {
    ///     panics.record();
    /// }
    /// assert_eq!(panics.count(), 1);
    /// # }
    /// ```
    pub fn panic_counter(&self) -> PanicCounter {
        PanicCounter {
            shared: self.health.0.clone(),
            node: self.spawner.shared.node,
        }
    }

    /// Spawns a tracked task that can fail: an error it returns, or a panic, while the
    /// app runs triggers shutdown naming this component.
    pub fn spawn_fallible<F, E>(&self, task: F) -> Task
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.spawner.spawn_fallible(task)
    }

    /// Hands `value` to the components that depend on this one, replacing what this
    /// component provided before. The type must be declared with
    /// [`Options::provides`]; a start that provides an undeclared type, or does not
    /// provide a declared one, fails, naming the type. The engine drops its copy once
    /// this component has stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::{async_trait, BoxError, Component, Options, StartContext, StopContext};
    ///
    /// #[derive(Clone)]
    /// struct Pool(std::sync::Arc<String>);
    ///
    /// struct Db;
    ///
    /// #[async_trait]
    /// impl Component for Db {
    ///     fn name(&self) -> &str { "db" }
    ///     fn options(&self) -> Options { Options::new().provides::<Pool>() }
    ///     async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
    ///         ctx.provide(Pool(std::sync::Arc::new("sqlite://data.db".into())));
    ///         Ok(())
    ///     }
    ///     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
    /// }
    ///
    /// struct Http { pool: Option<Pool> }
    ///
    /// #[async_trait]
    /// impl Component for Http {
    ///     fn name(&self) -> &str { "http" }
    ///     // Using the pool is what makes `http` depend on `db`.
    ///     fn options(&self) -> Options { Options::new().uses::<Pool>() }
    ///     async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
    ///         self.pool = Some(ctx.resource::<Pool>()?);
    ///         Ok(())
    ///     }
    ///     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
    /// }
    ///
    /// let app = lifecycle_core::App::builder().add(Http { pool: None }).add(Db).build()?;
    /// assert_eq!(app.plan().start_order(), ["db", "http"]);
    /// # Ok::<(), lifecycle_core::BuildError>(())
    /// ```
    pub fn provide<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.resources.provide(self.spawner.shared.node, value)
    }

    /// The `T` provided by a component this one depends on: the provider its
    /// [`Options::uses`] resolved to, else the one component among its dependencies
    /// (direct or transitive) that provides a `T`. A clone: keep it for as long as the
    /// component runs.
    ///
    /// # Errors
    ///
    /// A [`ResourceError`] naming this component and the type when no dependency provides
    /// one, or several do ([`resource_from`](StartContext::resource_from) names one).
    pub fn resource<T: Clone + Send + Sync + 'static>(&self) -> Result<T, ResourceError> {
        self.resources.get(self.spawner.shared.node, None)
    }

    /// The `T` provided by `provider`, a component this one depends on (directly or
    /// transitively), for a type that several dependencies provide.
    ///
    /// # Errors
    ///
    /// A [`ResourceError`] when `provider` is not a dependency providing a `T`.
    pub fn resource_from<T: Clone + Send + Sync + 'static>(
        &self,
        provider: &str,
    ) -> Result<T, ResourceError> {
        self.resources.get(self.spawner.shared.node, Some(provider))
    }

    /// Runs `future` until this start's [`deadline`](StartContext::deadline); on the
    /// deadline the future is dropped and [`Elapsed`](crate::runtime::Elapsed) returned
    /// (the engine would drop the whole start there anyway, so this is for work that must
    /// end a little earlier, or that wants to say what timed out).
    pub fn until_deadline<F: Future>(&self, future: F) -> Timeout<F> {
        timeout_at(&**self.runtime(), self.deadline, future)
    }

    /// A cloneable spawner for the component's helper tasks, to keep beyond `start`:
    /// an accept loop's task per connection, an upgraded socket. They are tracked like
    /// [`spawn`](StartContext::spawn)'s (cancelled after the stop; an error or panic fails
    /// the component), with one difference: their end is not the component's end. Under
    /// [`Restart::always`](crate::Restart::always), a component restarts when a task of
    /// `spawn` ends, never when a helper does (connections end all the time).
    pub fn helper_spawner(&self) -> Spawner {
        Spawner {
            main: false,
            ..self.spawner.clone()
        }
    }

    /// A token that resolves when shutdown begins, or when this component is stopped
    /// before the app (by a [restart](crate::Restart) of it or of a dependency): the
    /// signal for its loops and long responses to finish what they do and end. A
    /// restarted component gets a new token.
    pub fn shutdown_token(&self) -> ShutdownToken {
        self.token.clone()
    }

    /// A token that resolves when this component's stop begins: in the shutdown, at its
    /// turn, once every component that depends on it has stopped (after the drain); or
    /// when a [restart](crate::Restart) stops it. For a loop that its dependents rely on
    /// until they have stopped (a queue worker whose jobs the HTTP server enqueues: it runs
    /// through the drain), where [`shutdown_token`](StartContext::shutdown_token) ends a
    /// loop at the trigger. A forced exit (a second signal) skips the stops: the tracked
    /// tasks are cancelled instead.
    ///
    /// ```
    /// # fn start(ctx: &lifecycle_core::StartContext) {
    /// let stop = ctx.stop_token();
    /// ctx.spawn(async move {
    ///     while !stop.is_triggered() {
    ///         // take a job, do it
    /// #       break;
    ///     }
    /// });
    /// # }
    /// ```
    pub fn stop_token(&self) -> ShutdownToken {
        self.stop_token.clone()
    }

    /// A handle that triggers shutdown, for a component that decides the app must stop.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// A handle that reloads the app ([`ReloadHandle`]), for an admin endpoint or a
    /// file watcher that a component runs.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            notices: self.handle.notices.clone(),
        }
    }

    /// The app's runtime: sleep on its clock, spawn untracked tasks.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.spawner.shared.runtime
    }

    /// The app's health: phase, readiness, liveness, checks.
    pub fn health(&self) -> HealthMonitor {
        self.health.clone()
    }

    /// This component's in-flight counter: take a guard per request or job, and wait
    /// for it in `stop` ([`StopContext::in_flight`] is the same counter). Its arrivals
    /// are what ends the drain early on a quiet period. Clone it to keep it (clones
    /// share the count).
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// When the engine gives up on this start.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The whole shutdown budget, from the trigger to the exit
    /// ([`Config::shutdown_timeout`](crate::Config::shutdown_timeout)): what a
    /// supervisor must be told to wait for.
    pub fn shutdown_budget(&self) -> Duration {
        self.shutdown_budget
    }
}

impl fmt::Debug for StartContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartContext")
            .field("name", &self.name)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// What [`Component::stop`] and [`Component::flush`] receive: the component's name, the
/// runtime, and the deadline by which the hook should return.
#[derive(Debug)]
pub struct StopContext {
    pub(crate) name: Arc<str>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) in_flight: InFlight,
    pub(crate) tasks: Arc<TaskSet>,
    pub(crate) deadline: Instant,
    /// The app's token: triggered once the app shuts down.
    pub(crate) app_shutdown: ShutdownToken,
}

impl StopContext {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The app's runtime: sleep on its clock.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Whether the app is shutting down: `false` when this stop is a
    /// [restart](crate::Restart)'s, and the component will be started again (a server
    /// keeps its socket bound then). A shutdown that begins during a restart's stop makes
    /// it `true`: nothing is started again after that.
    ///
    /// ```
    /// # use lifecycle_core::{BoxError, StopContext};
    /// # struct Server { socket: Option<std::net::TcpListener> }
    /// # impl Server {
    /// async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
    ///     if ctx.is_shutdown() {
    ///         self.socket = None; // the port closes; a restart keeps it
    ///     }
    ///     Ok(())
    /// }
    /// # }
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.app_shutdown.is_triggered()
    }

    /// This component's in-flight counter (the one from [`StartContext::in_flight`]).
    ///
    /// ```
    /// # use lifecycle_core::{BoxError, StopContext};
    /// # async fn stop(ctx: &StopContext) -> Result<(), BoxError> {
    /// // Let requests in flight finish until the deadline.
    /// if ctx.until_deadline(ctx.in_flight().wait_idle()).await.is_err() {
    ///     return Err(format!("{} requests still running", ctx.in_flight().count()).into());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Runs `future` until this hook's [`deadline`](StopContext::deadline); on the
    /// deadline the future is dropped and [`Elapsed`](crate::runtime::Elapsed) returned,
    /// so the hook can still say what did not finish before the engine drops it.
    pub fn until_deadline<F: Future>(&self, future: F) -> Timeout<F> {
        timeout_at(&*self.runtime, self.deadline, future)
    }

    /// Completes once every tracked task of this component has ended. The engine cancels
    /// what is left once the stop returns: awaiting this (under the deadline:
    /// `ctx.until_deadline(ctx.tasks_ended())`) is how a stop lets a loop finish its
    /// current item.
    pub async fn tasks_ended(&self) {
        self.tasks.idle().await
    }

    /// When the engine drops this hook's future: `min(the component's timeout, what is
    /// left of the shutdown budget for this phase)`. A stop that waits for work in
    /// flight should give up a little before this.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// What [`Component::reload`] receives: the component's name, the runtime, the deadline,
/// what began the reload, the resources of its dependencies (as they reloaded), and a way
/// to replace what it provides.
pub struct ReloadContext {
    pub(crate) name: Arc<str>,
    pub(crate) node: usize,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) resources: Arc<Resources>,
    pub(crate) deadline: Instant,
    pub(crate) trigger: ReloadTrigger,
    pub(crate) staged: Staged,
}

impl ReloadContext {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The app's runtime: sleep on its clock, spawn untracked tasks.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// When the engine gives up on this reload (its reload timeout).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `future` until this reload's [`deadline`](ReloadContext::deadline); on the
    /// deadline the future is dropped and [`Elapsed`](crate::runtime::Elapsed) returned.
    pub fn until_deadline<F: Future>(&self, future: F) -> Timeout<F> {
        timeout_at(&*self.runtime, self.deadline, future)
    }

    /// What began this reload: `SIGHUP` or a [`ReloadHandle`].
    pub fn trigger(&self) -> ReloadTrigger {
        self.trigger
    }

    /// The `T` a dependency provides, as [`StartContext::resource`] finds it: what the
    /// dependency provided last (its reload, which has ended, may have replaced it).
    ///
    /// # Errors
    ///
    /// As [`StartContext::resource`].
    pub fn resource<T: Clone + Send + Sync + 'static>(&self) -> Result<T, ResourceError> {
        self.resources.get(self.node, None)
    }

    /// The `T` provided by `provider`, as [`StartContext::resource_from`] finds it.
    ///
    /// # Errors
    ///
    /// As [`StartContext::resource_from`].
    pub fn resource_from<T: Clone + Send + Sync + 'static>(
        &self,
        provider: &str,
    ) -> Result<T, ResourceError> {
        self.resources.get(self.node, Some(provider))
    }

    /// Replaces the `T` this component hands to its dependents (declared with
    /// [`Options::provides`]), once this reload completes: a reload that fails, panics,
    /// times out or is abandoned changes nothing. Providing an undeclared type fails the
    /// reload, naming the type. Dependents see the new value when they take it again
    /// (in their own reload, which comes after this one).
    ///
    /// ```
    /// # use lifecycle_core::{BoxError, ReloadContext};
    /// # #[derive(Clone)] struct Settings { greeting: String }
    /// # async fn reload(ctx: &ReloadContext) -> Result<(), BoxError> {
    /// ctx.provide(Settings { greeting: "hello again".into() });
    /// # Ok(())
    /// # }
    /// ```
    pub fn provide<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.staged.provide(value)
    }
}

impl fmt::Debug for ReloadContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadContext")
            .field("name", &self.name)
            .field("trigger", &self.trigger)
            .field("deadline", &self.deadline)
            .finish()
    }
}
