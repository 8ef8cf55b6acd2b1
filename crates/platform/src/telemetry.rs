//! Logs and traces, set up once per process: JSON lines on stdout carrying trace and span ids, filtered by
//! `RUST_LOG`, and OTLP export of spans when an OTLP endpoint is set, filtered by `TRACES_FILTER` and sampled as
//! `OTEL_TRACES_SAMPLER` says (parent-based by default). The two filters are apart: turning logs down never turns
//! traces off. Spans get ids even without an exporter, so log lines can be correlated across services from the
//! first day.

use anyhow::Context as _;
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, OtlpProtocol, TelemetrySettings};

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

    // Without the thread attributes (an async span moves between threads: they mean little and cost an allocation
    // per span) and without busy/idle timings (two clock reads at every poll of every span).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(settings.traces_filter.clone());
    // Boxed, not `Option`: `Option<Layer>` does not forward `on_register_dispatch`, which the JSON layer needs
    // to find each span's OpenTelemetry ids.
    let output: Box<dyn Layer<_> + Send + Sync> = match settings.log_format {
        LogFormat::Json => Box::new(json_layer()),
        LogFormat::Pretty => Box::new(tracing_subscriber::fmt::layer().with_target(true)),
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(output.with_filter(settings.rust_log.clone()))
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
    // The default configuration reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
    let builder = SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(name).build());
    if !settings.exports_traces() {
        return Ok(builder.build());
    }
    // The exporter reads the endpoints, headers and timeouts from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = match settings.otlp_protocol() {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
        OtlpProtocol::HttpProtobuf => {
            crate::tls::install_provider();
            opentelemetry_otlp::SpanExporter::builder().with_http().build()
        }
    };
    let exporter = exporter.context("OTEL_EXPORTER_OTLP_*: cannot build the OTLP span exporter")?;
    Ok(builder.with_batch_exporter(exporter).build())
}
