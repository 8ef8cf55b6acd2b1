//! The operational HTTP endpoints every process serves (`/livez`, `/readyz`, `/metrics`) and the HTTP server of an
//! axum router: a request's head must arrive in time, and in-flight requests drain on shutdown.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{ConnectInfo, MatchedPath, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
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

/// A server span per request, continuing the caller's W3C trace (a public server takes a client's off first:
/// [`crate::propagation::take_untrusted`]), and one log line per response.
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
        let method = crate::metrics::method_label(request.method());
        // A method of the client's own naming is not in the span's name either (OpenTelemetry says `HTTP`).
        let name = if method == crate::metrics::OTHER { "HTTP" } else { method };
        let span = tracing::info_span!(
            "http.server",
            otel.kind = "server",
            otel.name = format!("{name} {route}"),
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        );
        // A request without a valid traceparent simply starts a new trace; one a client sent from outside is a link.
        let _ = span.set_parent(crate::propagation::extract(request.headers()));
        if let Some(crate::propagation::Untrusted(sent)) = request.extensions().get() {
            span.add_link(sent.clone());
        }
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

/// How long a client may take to send a request's head before its connection is closed: one that trickles its head
/// would otherwise hold a connection (and a file descriptor) for as long as it likes.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over HTTP/1.1 on `listener` until `cancel` fires, then until in-flight requests have finished;
/// the caller bounds that wait (`shutdown::drain`). Each request carries its TCP peer as `ConnectInfo<SocketAddr>`.
/// A request's head must arrive within [`HEADER_READ_TIMEOUT`] (what `axum::serve` leaves unbounded: it sets hyper
/// no timer). HTTP/1.1 only: HTTP/2 without TLS (h2c, which a client may open with its preface) has no bound on how
/// long a request's headers may take, and nothing in front of an HTTP port speaks it (load balancers end TLS and
/// speak HTTP/1.1 to their targets; probes and scrapers speak HTTP/1.1; gRPC is served by tonic).
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors, say: wait a moment rather than spin; the connections in hand go on.
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                match crate::backoff::pause(Duration::from_millis(100), &cancel).await {
                    true => continue,
                    false => break,
                }
            }
        };
        // Responses go out in more than one write; without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to some.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
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
