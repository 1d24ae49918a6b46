//! Traces over OTLP (`--otlp-endpoint URL`, feature `otel`): every span, the lifecycle's
//! (each hook run, each request) and the handlers', exported in batches from
//! OpenTelemetry's own thread over HTTP (protobuf), and flushed last at shutdown by
//! `lifecycle::otel::Providers`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

/// A tracer provider exporting to `endpoint` (the collector's base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` takes it: `/v1/traces` is appended).
pub fn provider(endpoint: &str) -> Result<(SdkTracerProvider, SdkTracer), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| format!("--otlp-endpoint {endpoint}: {error}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                // A request is a span: the default queue (2,048) drops spans under load
                // before its 5 s timer fires; a batch goes as soon as it is full anyway.
                .with_max_queue_size(65_536)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("lifecycle-service")
                .build(),
        )
        .with_span_processor(batches)
        .build();
    let tracer = provider.tracer("lifecycle-service");
    Ok((provider, tracer))
}
