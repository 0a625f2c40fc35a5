//! Installing the process's logging and tracing.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use marketplace_config::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::logs::JsonLines;

/// Keeps the trace exporter running; dropping it sends the spans still
/// buffered.
#[derive(Debug)]
#[must_use = "dropping the guard stops the trace export"]
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Installs logging and tracing for a process running `service`
/// (`gateway`, `order`, ..., or `marketplace` for several).
///
/// - Logs: `RUST_LOG` filters (default `info`); JSON lines or pretty text
///   as `config.log_format` says, on standard output.
/// - Traces: every span of the marketplace's own crates becomes an
///   OpenTelemetry span (so log lines have trace ids and outbound calls
///   carry `traceparent`), exported over OTLP/gRPC in batches when
///   `config.otlp_endpoint` is set.
///
/// Must be called inside the Tokio runtime when an endpoint is set.
pub fn init(service: &'static str, config: &TelemetryConfig) -> anyhow::Result<Guard> {
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .event_format(JsonLines { service })
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed()
    }
    .with_filter(filter);

    let mut provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if let Some(endpoint) = config
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("the OTLP endpoint {endpoint:?} cannot be used"))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("marketplace"))
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.is_span() && metadata.target().starts_with("marketplace")
        }));

    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("logging is already set up")?;
    Ok(Guard { provider })
}
