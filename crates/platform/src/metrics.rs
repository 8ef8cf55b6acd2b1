//! Prometheus metrics: one recorder per process, rendered by `/metrics`, and the request metrics every server
//! records the same way (RED: rate, errors, duration).

use std::{sync::OnceLock, time::Instant};

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from a cache hit to an argon2 hash under load.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How old an event is when applied: milliseconds normally, minutes to hours behind a broker outage or a backlog.
const AGE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Renders every metric, the `process_*` ones (CPU, memory, open files, threads) read fresh for this scrape.
pub fn render() -> String {
    let handle = handle();
    let process = PROCESS.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    });
    process.collect();
    handle.render()
}

/// Installs the process-wide recorder on first use and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("event_age_seconds".to_owned()), AGE_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    metrics::gauge!("build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    handle
                }
                // Another recorder is installed (a test harness): keep an unattached one so rendering works.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// A request's method as a label or span attribute: HTTP's own methods by name, any other `_OTHER` (as OpenTelemetry's
/// HTTP conventions say). A method is any token the client likes; as a label, each new one was a time series kept
/// for the life of the process.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => OTHER,
    }
}

/// The label of what a caller named but the server does not know: a method, a gRPC service or method.
pub const OTHER: &str = "_OTHER";

/// axum middleware: counts HTTP requests and times them by method, route template and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("http_server_requests_total", &labels).increment(1);
    metrics::histogram!("http_server_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}

/// Counts and times one gRPC call to `path` (`/package.Service/Method`) by service, method and status code. A call
/// the server does not implement is counted under [`OTHER`]: its path is whatever the caller sent.
pub fn record_grpc(path: &str, code: tonic::Code, start: Instant) {
    let (service, method) = match code {
        tonic::Code::Unimplemented => (OTHER, OTHER),
        _ => path.trim_start_matches('/').split_once('/').unwrap_or((path, "")),
    };
    let code = (code as i32).to_string();
    let labels = [("grpc_service", service.to_owned()), ("grpc_method", method.to_owned()), ("grpc_code", code)];
    metrics::counter!("grpc_server_handled_total", &labels).increment(1);
    metrics::histogram!("grpc_server_handling_seconds", &labels).record(start.elapsed().as_secs_f64());
}
