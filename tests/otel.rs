//! `lifecycle::otel::Providers` in an app, on each runtime: its flush runs last (after
//! every other component's, whatever the order they were added in), and a provider that
//! fails or panics fails the flush, naming it (exit code 1); and on tokio's current-thread
//! runtime, an exporter that needs that runtime to export (as tonic's does) gets it
//! during the flush, where a flush blocking the runtime's only thread deadlocks. The real
//! exporter and the hung collector are in `service.rs` (`otlp::`).
#![cfg(feature = "otel")]

mod common;

use std::time::Duration;

use lifecycle::otel::Providers;
use lifecycle::prelude::*;
use lifecycle::{Outcome, Report};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};

/// A span processor whose flush does `act`.
#[derive(Debug)]
struct Flushing(fn() -> OTelSdkResult);

impl SpanProcessor for Flushing {
    fn on_start(&self, _: &mut Span, _: &opentelemetry::Context) {}
    fn on_end(&self, _: SpanData) {}
    fn force_flush(&self) -> OTelSdkResult {
        (self.0)()
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A component with a flush of its own, added before `otel`.
struct Logs;

#[async_trait]
impl Component for Logs {
    fn name(&self) -> &str {
        "logs"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.shutdown_handle().shutdown(); // as SIGTERM would, once running
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn flush(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

fn run_with(runtime: &str, flush: fn() -> OTelSdkResult) -> Report {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Flushing(flush))
        .build();
    // Added last: it still flushes last.
    let app = App::builder()
        .add(Logs)
        .add(Providers::new().tracer(provider))
        .build()
        .unwrap();
    common::run_app(runtime, app)
}

fn flushes_last(runtime: &str) {
    let report = run_with(runtime, || Ok(()));
    assert_eq!(report.exit_code(), 0, "{report}");
    let step = |name: &str| {
        let component = report.components.iter().find(|c| c.name == name).unwrap();
        (component.flush.began.unwrap(), component.flush.took)
    };
    let (logs_began, logs_took) = step("logs");
    let (otel_began, _) = step("otel");
    assert!(otel_began >= logs_began + logs_took, "{report}");
    assert_eq!(report.components[0].name, "otel", "starts first: {report}");
}

fn a_failing_provider_fails_the_flush_naming_it(runtime: &str) {
    let report = run_with(runtime, || {
        Err(OTelSdkError::InternalFailure("the disk is full".into()))
    });
    assert_eq!(report.exit_code(), 1, "{report}");
    let otel = report.components.iter().find(|c| c.name == "otel").unwrap();
    match &otel.flush.outcome {
        Outcome::Failed(why) => {
            assert!(why.contains("the tracer provider"), "{why}");
            assert!(why.contains("the disk is full"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

fn a_panicking_provider_fails_the_flush(runtime: &str) {
    common::quiet_panics(|message| message.contains("the exporter's bug"));
    let report = run_with(runtime, || panic!("the exporter's bug"));
    assert_eq!(report.exit_code(), 1, "{report}");
    let otel = report.components.iter().find(|c| c.name == "otel").unwrap();
    assert_eq!(
        otel.flush.outcome,
        Outcome::Failed("the tracer provider panicked".into()),
        "{report}"
    );
}

/// An exporter that exports on the app's runtime, as a gRPC exporter does: it needs the
/// runtime's thread free while the batch processor's thread waits for it.
#[cfg(feature = "tokio")]
#[derive(Debug)]
struct OnTheAppsRuntime {
    runtime: tokio::runtime::Handle,
    exported: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(feature = "tokio")]
impl opentelemetry_sdk::trace::SpanExporter for OnTheAppsRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let sent = self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            batch.len()
        });
        let exported = self.exported.clone();
        async move {
            let n = sent
                .await
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
            exported.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }
}

#[cfg(feature = "tokio")]
#[test]
fn an_exporter_on_a_current_thread_runtime_gets_it_during_the_flush() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let exported = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = std::time::Instant::now();
    let report = runtime.block_on(async {
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(OnTheAppsRuntime {
                runtime: tokio::runtime::Handle::current(),
                exported: exported.clone(),
            })
            .build();
        // Ended, and buffered until the flush (the batch timer is 5 s).
        provider.tracer("test").in_span("served", |_| {});
        App::builder()
            .add(Logs)
            .add(Providers::new().tracer(provider))
            .run_async()
            .await
            .unwrap()
    });
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(exported.load(Ordering::SeqCst), 1, "the span was exported");
    // A flush blocking the runtime's thread waits out the SDK's 5 s flush timeout.
    assert!(began.elapsed() < Duration::from_secs(2), "{report}");
}

macro_rules! on_both {
    ($($scenario:ident),*) => {$(
        mod $scenario {
            #[test]
            fn smol() {
                super::$scenario("smol");
            }
            #[cfg(feature = "tokio")]
            #[test]
            fn tokio() {
                super::$scenario("tokio");
            }
        }
    )*};
}

on_both!(
    flushes_last,
    a_failing_provider_fails_the_flush_naming_it,
    a_panicking_provider_fails_the_flush
);
