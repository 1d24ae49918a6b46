//! Run an application as a graph of components, and shut it down gracefully.
//!
//! Implement [`Component`] for your database pool, cache, HTTP server and metrics
//! exporter; declare who depends on whom; and [`Run::run`] does the rest: start in
//! dependency order (independent components concurrently), serve, and on `SIGTERM` or
//! `SIGINT` stop in reverse order within one shutdown budget, cancelling whatever hangs,
//! flush logs and metrics last, and return a [`Report`] that maps to an exit code.
//!
//! ```
//! use lifecycle::prelude::*;
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
//! struct Http;
//!
//! #[async_trait]
//! impl Component for Http {
//!     fn name(&self) -> &str { "http" }
//!     fn options(&self) -> Options { Options::new().depends_on("db") }
//!     async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
//!         // A real server would bind here and serve from a tracked task; this one, the
//!         // last to start, asks the app to stop once running, as SIGTERM would.
//!         ctx.shutdown_handle().shutdown();
//!         Ok(())
//!     }
//!     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
//! }
//!
//! # fn main() -> Result<(), lifecycle::Error> {
//! let report = App::builder().add(Db).add(Http).run()?;
//! assert_eq!(report.exit_code(), 0);
//! assert_eq!(report.components[0].name, "db"); // started first, stopped last
//! # Ok(())
//! # }
//! ```
//!
//! # Runtimes
//!
//! The engine ([`lifecycle_core`]) knows no runtime. Three calls run an app, and which
//! runtime it runs on never depends on which features a dependency enabled:
//!
//! - [`Run::run`] (feature `smol`, the default) blocks on smol (`LIFECYCLE_RUNTIME=tokio`
//!   or `tokio-current-thread` lets an operator pick tokio when it is compiled in);
//! - [`Run::run_tokio`] (feature `tokio`) blocks on a new multi-threaded tokio runtime;
//! - [`Run::run_async`] runs inside the runtime you already have (`#[tokio::main]`):
//!   tokio's if called in a tokio context, else smol's.
//!
//! [`App::run_on`] takes any [`Runtime`].
//!
//! # Features
//!
//! - `smol` (default), `tokio`: the runtimes.
//! - `http` (default): `ProbeServer` (module `probe`), serving liveness, readiness,
//!   health and your own endpoints (`/metrics`) over HTTP on either runtime; and the
//!   runtime-neutral sockets of module `net`.
//! - `serde`: `Serialize` for the [`Report`] (`serde_json::to_string(&report)`):
//!   durations in milliseconds, outcomes with a stable `kind`, and the exit code.
//! - `grpc`: module `grpc`, gRPC health (`grpc.health.v1`) fed by the health monitor,
//!   served by the HTTP component.
//! - `testing`: module `testing`, a kit to test your components' lifecycle on virtual
//!   time, with injected signals and faults and a timeline to assert on.
//! - `metrics`: lifecycle metrics (hook durations, restarts, reloads, health, handler
//!   panics, the shutdown, HTTP requests in flight) through the `metrics` facade, to the
//!   recorder you install; the list is in [`telemetry`].
//! - `otel`: module `otel`, OpenTelemetry's providers flushed and shut down last, off
//!   the runtime (no deadlock on tokio's current-thread runtime), within the flush
//!   reserve, abandoned at its deadline if the exporter hangs.
//! - `systemd` (Unix): module `systemd`, with `SystemdNotify` (`READY=1`, `STOPPING=1`,
//!   `STATUS=`, watchdog pings, `EXTEND_TIMEOUT_USEC`) and socket activation
//!   (`LISTEN_FDS`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

#[cfg(all(feature = "http", not(any(feature = "smol", feature = "tokio"))))]
compile_error!("lifecycle's `http` feature serves on a runtime: enable `smol` or `tokio` too");

use std::future::Future;
use std::io;
use std::sync::Arc;

// Explicit, so that what this crate offers is written here (and a new item of the core
// is a decision, not a side effect).
/// The spans the engine opens and the metrics it records (feature `metrics`).
pub use lifecycle_core::telemetry;
pub use lifecycle_core::{
    aggregate, async_trait, config, runtime, App, Background, BoxError, BuildError, Builder,
    Component, ComponentHealth, ComponentReport, ComponentState, Config, Error, Explanation,
    Health, HealthMonitor, HealthSubscription, InFlight, InFlightGuard, LastReload, Options,
    Outcome, OwnedInFlightGuard, PanicCounter, Phase, Plan, PlannedComponent, Provider,
    ReloadContext, ReloadHandle, ReloadReport, ReloadTrigger, Report, ResourceError, ResourceType,
    Restart, RestartReport, Runtime, Settings, ShutdownHandle, ShutdownToken, Signal, Snapshot,
    Spawner, StartContext, StartFn, Status, Step, StopContext, Task, TaskError, Trigger,
    WaitForShutdown, WaitForShutdownOwned, WithContext,
};
#[cfg(feature = "smol")]
pub use lifecycle_smol::SmolRuntime;
#[cfg(feature = "tokio")]
pub use lifecycle_tokio::TokioRuntime;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod net;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "http")]
pub mod probe;
pub mod signals;
#[cfg(all(unix, feature = "systemd"))]
pub mod systemd;
#[cfg(feature = "testing")]
pub mod testing;
// The components, at the root with `Provider` and `Background`; their modules hold
// what goes with them.
#[cfg(feature = "grpc")]
pub use grpc::GrpcHealth;
#[cfg(feature = "http")]
pub use http::HttpServer;
#[cfg(feature = "http")]
pub use probe::ProbeServer;

/// Everything a component author and an app's `main` need: `use lifecycle::prelude::*;`.
pub mod prelude {
    pub use crate::{
        async_trait, App, Background, BoxError, Component, Config, Health, Options, Provider,
        ReloadContext, Report, Restart, Run, ShutdownToken, StartContext, StopContext,
    };
    #[cfg(feature = "http")]
    pub use crate::{HttpServer, ProbeServer};
}

/// Running an app (or a builder, which is built first) on a runtime.
pub trait Run: Sized + Send + 'static {
    /// Builds the app, if this is a builder.
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of an invalid graph or configuration.
    fn into_app(self) -> Result<App, BuildError>;

    /// Runs the app on smol, blocking the current thread until it has exited, and
    /// returns the report.
    ///
    /// The runtime never changes because a dependency enabled a feature (cargo unifies
    /// features across the build): `run()` is smol's. Tokio apps call
    /// [`run_tokio`](Run::run_tokio), or [`run_async`](Run::run_async) in `#[tokio::main]`.
    /// An operator may still choose: `LIFECYCLE_RUNTIME=tokio` runs it on a multi-threaded
    /// tokio runtime, `LIFECYCLE_RUNTIME=tokio-current-thread` on a current-thread one,
    /// when that feature is compiled in (`smol`, or unset, is smol).
    ///
    /// # Errors
    ///
    /// A build error, a runtime that cannot be created, or signal handlers that cannot be
    /// registered; [`Error::InsideRuntime`] when called inside a tokio runtime (whose
    /// worker it would block). Everything after the first start is in the [`Report`].
    #[cfg(feature = "smol")]
    fn run(self) -> Result<Report, Error> {
        #[cfg(feature = "tokio")]
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InsideRuntime(INSIDE_TOKIO));
        }
        match chosen_runtime()? {
            RuntimeKind::Smol => {
                let app = self.into_app()?;
                signals::catch_for(&app)?;
                lifecycle_smol::block_on(app.run_on(Arc::new(CaughtSignals(SmolRuntime::new()))))
            }
            #[cfg(feature = "tokio")]
            RuntimeKind::Tokio => self.run_tokio(),
            #[cfg(feature = "tokio")]
            RuntimeKind::TokioCurrentThread => {
                block_on_tokio(self, tokio::runtime::Builder::new_current_thread())
            }
        }
    }

    /// Runs the app on a new multi-threaded tokio runtime, blocking the current thread.
    ///
    /// # Errors
    ///
    /// A build error, a runtime that cannot be created, or signal handlers that cannot be
    /// registered; [`Error::InsideRuntime`] when called inside a tokio runtime, where
    /// blocking is not allowed ([`run_async`](Run::run_async) is the call there).
    #[cfg(feature = "tokio")]
    fn run_tokio(self) -> Result<Report, Error> {
        block_on_tokio(self, tokio::runtime::Builder::new_multi_thread())
    }

    /// Runs the app inside the runtime the caller already has: tokio's when called in a
    /// tokio context (and the `tokio` feature is on), else smol's.
    ///
    /// # Errors
    ///
    /// As [`Run::run_tokio`]; also when only the `tokio` feature is on and there is no tokio
    /// context, and when the tokio runtime lacks IO or timers (build it with
    /// `enable_all()`; `#[tokio::main]` does).
    fn run_async(self) -> impl Future<Output = Result<Report, Error>> + Send {
        async move {
            let app = self.into_app()?;
            signals::catch_for(&app)?;
            app.run_on(ambient_runtime()?).await
        }
    }
}

/// Runs `app` on a new tokio runtime from `builder`, blocking the current thread.
#[cfg(feature = "tokio")]
fn block_on_tokio(app: impl Run, mut builder: tokio::runtime::Builder) -> Result<Report, Error> {
    let app = app.into_app()?;
    signals::catch_for(&app)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InsideRuntime(INSIDE_TOKIO));
    }
    let runtime = builder.enable_all().build().map_err(Error::Runtime)?;
    let report = runtime.block_on(app.run_on(Arc::new(CaughtSignals(TokioRuntime::from_handle(
        runtime.handle().clone(),
    )))));
    // Tracked tasks were cancelled; do not wait for blocking work left behind.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    report
}

/// What [`Error::InsideRuntime`] says in `#[tokio::main]`.
#[cfg(feature = "tokio")]
const INSIDE_TOKIO: &str = "run() and run_tokio() block the thread, and were called inside a \
    tokio runtime (`#[tokio::main]`?): call `run_async().await` there, or drop \
    `#[tokio::main]` and call `run_tokio()` from a plain `fn main`";

impl Run for Builder {
    fn into_app(self) -> Result<App, BuildError> {
        self.build()
    }
}

impl Run for App {
    fn into_app(self) -> Result<App, BuildError> {
        Ok(self)
    }
}

#[cfg(feature = "smol")]
enum RuntimeKind {
    Smol,
    #[cfg(feature = "tokio")]
    Tokio,
    #[cfg(feature = "tokio")]
    TokioCurrentThread,
}

/// The runtime `run()` uses: smol, unless `LIFECYCLE_RUNTIME` names tokio (compiled in).
#[cfg(feature = "smol")]
fn chosen_runtime() -> Result<RuntimeKind, Error> {
    let requested = std::env::var("LIFECYCLE_RUNTIME").ok();
    match requested.as_deref().map(str::trim) {
        None | Some("" | "smol") => Ok(RuntimeKind::Smol),
        #[cfg(feature = "tokio")]
        Some("tokio") => Ok(RuntimeKind::Tokio),
        #[cfg(feature = "tokio")]
        Some("tokio-current-thread") => Ok(RuntimeKind::TokioCurrentThread),
        Some(other) => Err(Error::Runtime(io::Error::other(format!(
            "LIFECYCLE_RUNTIME={other:?} is not a runtime this program was built with (built with: {})",
            [
                cfg!(feature = "smol").then_some("smol"),
                cfg!(feature = "tokio").then_some("tokio, tokio-current-thread"),
            ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        )))),
    }
}

fn ambient_runtime() -> Result<Arc<dyn Runtime>, Error> {
    #[cfg(feature = "tokio")]
    if let Ok(runtime) = TokioRuntime::try_current() {
        return Ok(Arc::new(CaughtSignals(runtime)));
    }
    #[cfg(feature = "smol")]
    return Ok(Arc::new(CaughtSignals(SmolRuntime::new())));
    #[allow(unreachable_code)]
    Err(Error::Runtime(io::Error::other(
        "run_async found no runtime: call it inside a tokio runtime, or enable the `smol` feature",
    )))
}

/// A runtime whose termination signals come from [`signals::catch`], which may have
/// caught them before the runtime existed.
#[cfg(any(feature = "smol", feature = "tokio"))]
#[derive(Debug)]
struct CaughtSignals<R>(R);

/// What the facade checks of a backend before a run.
#[cfg(any(feature = "smol", feature = "tokio"))]
trait Backend: Runtime {
    /// An error when the runtime cannot run the engine (tokio without its time driver).
    fn check(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "smol")]
impl Backend for SmolRuntime {}

#[cfg(feature = "tokio")]
impl Backend for TokioRuntime {
    fn check(&self) -> io::Result<()> {
        self.check_drivers()
    }
}

#[cfg(any(feature = "smol", feature = "tokio"))]
impl<R: Backend> Runtime for CaughtSignals<R> {
    fn spawn(&self, future: runtime::BoxFuture<()>) {
        self.0.spawn(future)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> runtime::BoxFuture<()> {
        self.0.sleep_until(deadline)
    }

    fn now(&self) -> std::time::Instant {
        self.0.now()
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn signals(&self) -> io::Result<runtime::SignalStream> {
        if signals::THROUGH_HUB {
            self.0.check()?;
            Ok(signals::subscribe())
        } else {
            self.0.signals()
        }
    }
}
