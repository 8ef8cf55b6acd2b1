//! The operational HTTP endpoints every process serves (`/livez`, `/readyz`, `/metrics`) and an axum server
//! that drains in-flight requests on shutdown.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{MatchedPath, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnRequest, MakeSpan, OnResponse, TraceLayer},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::health::Readiness;

/// `/livez`, `/readyz` and `/metrics`, for the platform rather than for users.
pub fn operational_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(readiness)
}

/// A server span per request, continuing the caller's W3C trace, and one log line per response.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, DefaultOnRequest, LogResponse>
{
    TraceLayer::new_for_http().make_span_with(RequestSpan).on_response(LogResponse)
}

/// Makes the server span of one HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
        let span = tracing::info_span!(
            "http.server",
            otel.kind = "server",
            otel.name = format!("{} {route}", request.method()),
            http.request.method = %request.method(),
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        );
        // A request without a valid traceparent simply starts a new trace.
        let _ = span.set_parent(crate::propagation::extract(request.headers()));
        span
    }
}

/// Logs one line per response, inside the request's span (so it carries the trace and span ids).
#[derive(Debug, Clone, Copy)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &http::Response<B>, latency: Duration, span: &tracing::Span) {
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        tracing::info!(status, elapsed_ms = latency.as_secs_f64() * 1000.0, "request completed");
    }
}

/// Serves `router` on `listener` until `cancel` fires, then until in-flight requests have finished; the caller
/// bounds that wait (`shutdown::drain`). Each request carries its TCP peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    use axum::serve::ListenerExt as _;
    // Responses go out in more than one write; without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to some.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(error) = axum::serve(listener, service).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(%error, "HTTP server failed");
    }
}

/// Alive means the process can answer at all; it checks no dependency, so a database outage never restarts us.
async fn livez() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct ReadyBody {
    status: &'static str,
    checks: std::collections::BTreeMap<&'static str, String>,
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let report = readiness.report();
    let checks =
        report.checks.iter().map(|(name, outcome)| (*name, outcome.clone().err().unwrap_or_else(|| "ok".into())));
    let body = ReadyBody {
        status: match (report.ready, report.degraded, report.draining) {
            (true, false, _) => "ready",
            (true, true, _) => "degraded",
            (false, _, true) => "draining",
            (false, _, false) => "not_ready",
        },
        checks: checks.collect(),
    };
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

async fn render_metrics() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}
