//! OpenTelemetry's providers flushed and shut down last, within the flush reserve, on
//! any runtime (feature `otel`).
//!
//! Add [`Providers`] with the providers your exporters feed, in one line:
//!
//! ```
//! use lifecycle::otel::Providers;
//! use lifecycle::prelude::*;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! # fn main() -> Result<(), lifecycle::Error> {
//! // With your exporter: `.with_batch_exporter(opentelemetry_otlp::SpanExporter::..)`.
//! let tracer_provider = SdkTracerProvider::builder().build();
//! let report = App::builder()
//!     .add(Providers::new().tracer(tracer_provider.clone()))
//! #   .add(Background::new("job", |ctx: StartContext| async move {
//! #       ctx.shutdown_handle().shutdown(); // as SIGTERM would
//! #       Ok::<(), BoxError>(())
//! #   }))
//!     .run()?;
//! # assert_eq!(report.exit_code(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Why a component, and why a thread
//!
//! The SDK's `force_flush` and `shutdown` block their caller until the exporter is done.
//! Called on an executor thread they block it: on tokio's current-thread runtime an
//! exporter that needs that runtime (tonic's) never gets to run, and the shutdown
//! deadlocks (opentelemetry-rust #2583); on any runtime, a hung exporter holds the
//! thread, and the process, past every deadline (#868, #536). So [`Providers`]' flush
//! calls them on a thread of its own and awaits the result without blocking anything;
//! at the flush deadline the engine drops that wait: the flush is reported timed out
//! (exit code 1), the thread is abandoned to the exporter's own timeout, and the process
//! exits on time.
//!
//! Its flush runs last: the component starts before all others (`before_all`), so it
//! stops and flushes after them, and the spans of the shutdown itself (every stop, the
//! requests served during the drain) are exported. Other components that start first
//! too (the probe server, `SystemdNotify`) flush after it if they were added before it:
//! add it first. Spans still open then (the phase spans of the flush) are not exported:
//! OpenTelemetry exports a span when it ends.
//!
//! The providers are opentelemetry_sdk's, re-exported here as
//! [`opentelemetry_sdk`]: yours must be of the same
//! version (0.33).
//!
//! On the testing kit's paused tokio clock, the flush waits on a real thread while the
//! clock has nothing to wait for but the flush deadline, so it jumps there: the flush is
//! reported timed out. Test an app with `Providers` on a real clock.

use std::fmt;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::join_all;
use lifecycle_core::{async_trait, BoxError, Component, Options, StartContext, StopContext};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use opentelemetry_sdk;

/// A component whose flush flushes and shuts down OpenTelemetry's tracer, meter and
/// logger providers, without blocking the runtime and never past its deadline.
///
/// - **Flush**: each provider's `force_flush`, then (whether it failed or not)
///   `shutdown_with_timeout` with what is left of the flush, each provider on a thread of
///   its own, concurrently. Any error is the flush's (exit code 1), naming the provider.
/// - **Timeout**: the flush has its component's flush timeout (2 s by default; set
///   another with [`Options::flush_timeout`] at `add_with`), cut at the end of the flush
///   reserve. At the deadline the wait is dropped: the flush is reported `timed_out` and
///   the threads are abandoned to the exporters' own timeouts (the process does not wait
///   for them).
/// - **Panic**: a provider that panics fails the flush.
/// - **Start and stop** do nothing: the providers serve from before the app starts
///   (the first spans are the start's) until the flush.
#[must_use = "a component does nothing until added to an app"]
pub struct Providers {
    name: String,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("name", &self.name)
            .field("tracer", &self.tracer.is_some())
            .field("meter", &self.meter.is_some())
            .field("logger", &self.logger.is_some())
            .finish()
    }
}

impl Default for Providers {
    fn default() -> Self {
        Self::new()
    }
}

impl Providers {
    /// No providers yet, named `otel`.
    pub fn new() -> Self {
        Providers {
            name: "otel".to_owned(),
            tracer: None,
            meter: None,
            logger: None,
        }
    }

    /// Flushes and shuts down this tracer provider (pass a clone: it shares its state).
    pub fn tracer(mut self, provider: SdkTracerProvider) -> Self {
        self.tracer = Some(provider);
        self
    }

    /// Flushes and shuts down this meter provider (its readers export a last time).
    pub fn meter(mut self, provider: SdkMeterProvider) -> Self {
        self.meter = Some(provider);
        self
    }

    /// Flushes and shuts down this logger provider.
    pub fn logger(mut self, provider: SdkLoggerProvider) -> Self {
        self.logger = Some(provider);
        self
    }

    /// Names the component (`otel` by default).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// What a flush thread does with one provider, given the flush's deadline.
type Flush = Box<dyn FnOnce(Instant) -> OTelSdkResult + Send>;

/// The two calls the three providers have alike.
trait SdkProvider: Send + 'static {
    fn force_flush(&self) -> OTelSdkResult;
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult;
}

macro_rules! sdk_provider {
    ($($provider:ty),*) => {$(
        impl SdkProvider for $provider {
            fn force_flush(&self) -> OTelSdkResult {
                <$provider>::force_flush(self)
            }
            fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
                <$provider>::shutdown_with_timeout(self, timeout)
            }
        }
    )*};
}

sdk_provider!(SdkTracerProvider, SdkMeterProvider, SdkLoggerProvider);

/// Flushes what `provider` holds (its result says whether the last export got out;
/// the shutdown's does not), then shuts it down within the time left, whether the flush
/// failed or not (the shutdown drains what a failed export left queued).
fn flush_of(provider: impl SdkProvider) -> Flush {
    Box::new(move |deadline| {
        let flushed = provider.force_flush();
        let shut =
            provider.shutdown_with_timeout(deadline.saturating_duration_since(Instant::now()));
        flushed.and(shut)
    })
}

/// Runs `flush` on a thread of its own; the result, or why there is none.
async fn off_the_runtime(
    what: &'static str,
    flush: Flush,
    deadline: Instant,
) -> Result<(), String> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("lifecycle-otel-{what}"))
        .spawn(move || {
            let _ = done.send(flush(deadline));
        })
        .map_err(|error| format!("the {what} provider: no thread to flush it on: {error}"))?;
    match result.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("the {what} provider: {error}")),
        Err(oneshot::Canceled) => Err(format!("the {what} provider panicked")),
    }
}

#[async_trait]
impl Component for Providers {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        Options::new().before_all(true)
    }

    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let deadline = ctx.deadline();
        let flushes = [
            ("tracer", self.tracer.clone().map(flush_of)),
            ("meter", self.meter.clone().map(flush_of)),
            ("logger", self.logger.clone().map(flush_of)),
        ];
        let failures: Vec<String> = join_all(
            flushes
                .into_iter()
                .filter_map(|(what, flush)| Some(off_the_runtime(what, flush?, deadline))),
        )
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; ").into())
        }
    }
}
