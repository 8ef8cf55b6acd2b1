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

/// axum middleware: counts HTTP requests and times them by method, route template and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("http_server_requests_total", &labels).increment(1);
    metrics::histogram!("http_server_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}

/// Counts and times one gRPC call to `path` (`/package.Service/Method`) by service, method and status code.
pub fn record_grpc(path: &str, code: &str, start: Instant) {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let labels =
        [("grpc_service", service.to_owned()), ("grpc_method", method.to_owned()), ("grpc_code", code.to_owned())];
    metrics::counter!("grpc_server_handled_total", &labels).increment(1);
    metrics::histogram!("grpc_server_handling_seconds", &labels).record(start.elapsed().as_secs_f64());
}
