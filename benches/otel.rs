//! SIGTERM to exit with OpenTelemetry (feature `otel`) and 10,000 spans buffered, against
//! the same app without telemetry, on smol, tokio and tokio's current-thread runtime, in
//! one run:
//!
//! - **with otel**: a tracer provider whose batch processor holds 10,000 ended spans
//!   (batch size and queue above that, a one-hour timer, so nothing leaves before the
//!   flush), exporting with opentelemetry-otlp over HTTP to a collector on loopback that
//!   decodes every request; `lifecycle::otel::Providers` flushes it;
//! - **without**: the same app, no provider;
//! - **the exporter alone**: the same 10,000 spans flushed by `force_flush` + `shutdown`
//!   called directly on a thread, no app: the exporter's own time.
//!
//! A real `SIGTERM` is sent to this process once the app runs; the time is until `run`
//! returns. The difference between the first two should be the third; the collector
//! must have received every span.
//!
//! `cargo bench --all-features --bench otel`. Without `--bench` (as `cargo test
//! --benches` runs it) it does one short round.

#[allow(dead_code)] // the tests use all of it
#[path = "../tests/common/collector.rs"]
mod collector;
mod common;

use std::thread;
use std::time::{Duration, Instant};

use lifecycle::otel::Providers;
use lifecycle::prelude::*;
use lifecycle::Run;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use collector::{Collect, Collector};
use common::{human, median};

const SPANS: usize = 10_000;

/// A provider holding `SPANS` ended spans, exporting to `collector`.
fn buffered(collector: &Collector) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", collector.url()))
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(2 * SPANS)
                .with_max_export_batch_size(2 * SPANS)
                .with_scheduled_delay(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || {
        for n in 0..SPANS {
            let _span = tracing::info_span!("request", n).entered();
        }
    });
    provider
}

/// Runs an app of one idle component (and `providers`) on `runtime`, sends SIGTERM once
/// it runs, and returns the time from the signal to the end of `run`.
fn sigterm_to_exit(runtime: &str, providers: Option<Providers>) -> Duration {
    let idle = Background::new("idle", |ctx: StartContext| async move {
        ctx.shutdown_token().wait().await;
        Ok::<(), BoxError>(())
    });
    let builder = App::builder().add(idle);
    let builder = match providers {
        Some(providers) => builder.add(providers),
        None => builder,
    };
    let app = builder.build().unwrap();
    let monitor = app.health();
    let runtime = runtime.to_owned();
    let running = thread::spawn(move || {
        let report = match runtime.as_str() {
            "smol" => app.run(),
            "tokio" => app.run_tokio(),
            _ => {
                let tokio = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tokio.block_on(app.run_async())
            }
        }
        .unwrap();
        (report, Instant::now())
    });
    while monitor.phase() != lifecycle::Phase::Running {
        thread::sleep(Duration::from_millis(1));
    }
    let signalled = Instant::now();
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .expect("SIGTERM to self");
    let (report, exited) = running.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    exited - signalled
}

/// The exporter's own time: `force_flush` and `shutdown` of `provider`, on this thread.
fn exporter_alone(provider: &SdkTracerProvider) -> Duration {
    let began = Instant::now();
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
    began.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 15 } else { 1 };
    // SIGTERM comes through the handler lifecycle registers, on every runtime.
    lifecycle::signals::catch().unwrap();
    println!("| runtime | rounds | SIGTERM to exit, no telemetry | with otel, {SPANS} spans buffered | difference | the exporter alone | spans received |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for runtime in ["smol", "tokio", "tokio-current-thread"] {
        let collector = Collector::start(Collect::Answer);
        let (mut without, mut with, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            without.push(sigterm_to_exit(runtime, None));
            let provider = buffered(&collector);
            with.push(sigterm_to_exit(
                runtime,
                Some(Providers::new().tracer(provider.clone())),
            ));
            let provider = buffered(&collector);
            alone.push(exporter_alone(&provider));
        }
        let received = collector.spans().len();
        assert_eq!(received, 2 * rounds * SPANS, "spans lost");
        let (without, with, alone) = (median(&mut without), median(&mut with), median(&mut alone));
        println!(
            "| {runtime} | {rounds} | {} | {} | {} | {} | {received} of {} |",
            human(without),
            human(with),
            human(with.saturating_sub(without)),
            human(alone),
            2 * rounds * SPANS
        );
    }
}
