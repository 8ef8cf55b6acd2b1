//! Logs and traces, set up once per process: JSON lines on stdout carrying trace and span ids, and OTLP export of
//! spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Spans get ids even without an exporter, so log lines can be
//! correlated across services from the first day.

use anyhow::Context as _;
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, TelemetrySettings};

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes pending spans and stops exporting. Call it last, after the server has drained.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber, tracer provider and W3C trace-context propagator.
pub fn init(service_name: &'static str, settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    let provider = tracer_provider(service_name, settings)?;
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());

    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    let filter = EnvFilter::try_new(&settings.rust_log).context("RUST_LOG")?;
    // Boxed, not `Option`: `Option<Layer>` does not forward `on_register_dispatch`, which the JSON layer needs
    // to find each span's OpenTelemetry ids.
    let output: Box<dyn Layer<_> + Send + Sync> = match settings.log_format {
        LogFormat::Json => Box::new(json_layer()),
        LogFormat::Pretty => Box::new(tracing_subscriber::fmt::layer().with_target(true)),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(output)
        .try_init()
        .context("a global tracing subscriber is already installed")?;
    Ok(Telemetry { provider })
}

fn json_layer<S>() -> json_subscriber::fmt::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    json_subscriber::fmt::layer()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_opentelemetry_ids(true)
}

fn tracer_provider(service_name: &'static str, settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let name = settings.otel_service_name.clone().unwrap_or_else(|| service_name.to_owned());
    let builder = SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(name).build());
    let Some(_endpoint) = &settings.otel_exporter_otlp_endpoint else {
        return Ok(builder.build());
    };
    // The exporter reads the endpoint, headers and timeouts from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter")?;
    Ok(builder.with_batch_exporter(exporter).build())
}
