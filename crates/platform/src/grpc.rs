//! The parts of a gRPC server every service shares: `grpc.health.v1` following [`Readiness`], server
//! reflection, a span and metrics per call (continuing the caller's W3C trace), and a drain on shutdown.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::health::Readiness;

/// Builds `grpc.health.v1` for the whole server (service `""`) and for `S`, both following `readiness`.
pub fn health_service<S: NamedService>(
    readiness: &Readiness,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(follow_readiness(reporter, readiness.subscribe(), S::NAME));
    service
}

async fn follow_readiness(
    reporter: HealthReporter,
    mut reports: tokio::sync::watch::Receiver<crate::health::Report>,
    name: &'static str,
) {
    loop {
        let status = if reports.borrow_and_update().ready { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(name, status).await;
        if reports.changed().await.is_err() {
            return;
        }
    }
}

/// Server reflection over every contract in `proto/`, so `grpcurl` works without local files.
pub fn reflection_service() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// A channel to another service: every call gets a client span (named `package.Service/Method`, with the `rpc.*`
/// attributes and the numeric status) whose context travels in the call's metadata, so the callee continues the
/// caller's trace. Health checks are not traced.
#[derive(Debug, Clone)]
pub struct TracedChannel(tonic::transport::Channel);

/// A lazily connected channel to `url` with `deadline` on every call; it does no I/O until first used, and
/// reconnects by itself after failures. With mutual TLS ([`crate::tls::mutual_tls`]) `url` is `https://` and
/// the channel presents this service's certificate; without, `http://`. A URL of the other kind is refused here,
/// at start: an `https://` URL must never be spoken to in plain text, nor a certificate go unused.
pub fn channel(url: &str, deadline: Duration) -> anyhow::Result<TracedChannel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(deadline)
        .tcp_nodelay(true);
    let https = endpoint.uri().scheme_str().is_some_and(|scheme| scheme.eq_ignore_ascii_case("https"));
    let endpoint = match (crate::tls::mutual_tls(), https) {
        (Some(tls), true) => endpoint.tls_config(tls.client())?,
        (None, false) => endpoint,
        (Some(_), false) => anyhow::bail!("{url}: with GRPC_TLS_* set, every upstream URL must be https://"),
        (None, true) => anyhow::bail!("{url}: an https:// upstream needs GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA"),
    };
    Ok(TracedChannel(endpoint.connect_lazy()))
}

impl tower::Service<http::Request<tonic::body::Body>> for TracedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if is_probe(request.uri().path()) {
            return Box::pin(self.0.call(request));
        }
        let span = rpc_span("client", request.uri().path());
        crate::propagation::inject(&span, request.headers_mut());
        let call = tracing::Instrument::instrument(self.0.call(request), span.clone());
        Box::pin(async move {
            let response = call.await;
            // A call that never got an answer (refused, reset, timed out) is UNAVAILABLE to the caller.
            let code = response.as_ref().map_or(tonic::Code::Unavailable, |response| status_of(response.headers()));
            record_status(&span, code, true);
            response
        })
    }
}

/// Health checks and reflection: asked every few seconds by probes, never worth a trace.
fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.")
}

/// The span of one call, `kind` `client` or `server`, named as the OpenTelemetry RPC conventions say.
fn rpc_span(kind: &'static str, path: &str) -> tracing::Span {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    tracing::info_span!(
        "grpc",
        otel.name = name,
        otel.kind = kind,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The status of a response as far as its headers tell: failures are sent trailers-only, so their status is in the
/// headers; success streams it in trailers.
fn status_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Records `code` on `span`, marking it failed as the RPC conventions say: every error for a client, and for a
/// server only the codes that mean the server failed (not the caller).
fn record_status(span: &tracing::Span, code: tonic::Code, client: bool) {
    use tonic::Code::{DataLoss, DeadlineExceeded, Internal, Ok, Unavailable, Unimplemented, Unknown};
    span.record("rpc.grpc.status_code", code as i64);
    let failed = match code {
        Ok => false,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss => true,
        _ => client,
    };
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}

/// A readiness check that passes when the gRPC server behind `channel` reports SERVING.
pub fn readiness_check(
    channel: TracedChannel,
) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
    move || {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        Box::pin(async move {
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            let response = client.check(request).await.map_err(|status| status.message().to_owned())?;
            match response.into_inner().status() {
                tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                other => Err(other.as_str_name().to_lowercase()),
            }
        })
    }
}

/// Serves `routes` on `listener` until `cancel` fires, then until in-flight calls have finished; the caller bounds
/// that wait (`shutdown::drain`).
pub async fn serve(listener: TcpListener, routes: Routes, cancel: CancellationToken) {
    let mut builder = Server::builder();
    if let Some(tls) = crate::tls::mutual_tls() {
        builder = match builder.tls_config(tls.server()) {
            Ok(builder) => builder,
            Err(error) => return tracing::error!(%error, "gRPC server failed: its TLS does not configure"),
        };
    }
    let server = builder
        .layer(tower::layer::layer_fn(Observed))
        .add_routes(routes)
        // A response is headers, data and trailers in separate writes: without TCP_NODELAY, Nagle's algorithm and
        // the peer's delayed ACK hold the last of them for ~40 ms.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), cancel.cancelled_owned());
    if let Err(error) = server.await {
        tracing::error!(%error, "gRPC server failed");
    }
}

/// Wraps every call but probes in a server span whose parent is the caller's `traceparent`, and records its metrics.
#[derive(Debug, Clone)]
struct Observed<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let probe = is_probe(&method);
        let span = if probe { tracing::Span::none() } else { rpc_span("server", &method) };
        // A call without a valid traceparent simply starts a new trace.
        let _ = span.set_parent(crate::propagation::extract(request.headers()));
        let start = Instant::now();
        let call = tracing::Instrument::instrument(self.0.call(request), span.clone());
        Box::pin(async move {
            let Ok(response) = call.await;
            let code = status_of(response.headers());
            record_status(&span, code, false);
            let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
            // A call that succeeded is in the metrics and the trace; a line each would be most of the log (and of
            // its CPU). One that failed is worth a line; probes never are.
            if code == tonic::Code::Ok || probe {
                tracing::debug!(parent: &span, grpc_code = code as i32, elapsed_ms, "rpc completed");
            } else {
                tracing::info!(parent: &span, grpc_code = code as i32, elapsed_ms, "rpc completed");
            }
            crate::metrics::record_grpc(&method, code, start);
            Ok(response)
        })
    }
}

/// The status for a database error: UNAVAILABLE when the database cannot be reached or went away mid-call (a
/// restart: SQLSTATE classes 08 and 57P) or gave up the transaction for another's sake (class 40: a serialization
/// failure or a deadlock), worth a retry; INTERNAL otherwise. The error is logged here, where it becomes a status,
/// and never sent in detail.
pub fn database_status(error: sqlx::Error) -> tonic::Status {
    let code = error.as_database_error().and_then(|e| e.code());
    if code.as_deref().is_some_and(|c| c.starts_with("40")) {
        tracing::warn!(error = %error, "the transaction gave way to a concurrent one");
        return tonic::Status::unavailable("a concurrent change got in the way; try again");
    }
    let gone = code.as_deref().is_some_and(|c| c.starts_with("08") || c.starts_with("57P"));
    let unreachable =
        matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_));
    if gone || unreachable {
        tracing::warn!(error = %error, "the database is unavailable");
        return tonic::Status::unavailable("the database is unavailable");
    }
    tracing::error!(error = %error, "database error");
    tonic::Status::internal("the database failed")
}

/// Whether a status from a service we called means that it is unavailable, saturated or went away mid-call (the
/// process died: the connection broke, which the client reports as UNKNOWN or as an INTERNAL transport error),
/// rather than an answer: the caller should pass it on as UNAVAILABLE (or HTTP 503), and the client may retry.
pub fn is_unavailable(status: &tonic::Status) -> bool {
    use tonic::Code;
    let message = status.message().to_ascii_lowercase();
    let broken = ["transport", "h2 protocol", "connection reset", "broken pipe", "connection closed", "stream"]
        .iter()
        .any(|sign| message.contains(sign));
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::ResourceExhausted => true,
        Code::Unknown => true,
        Code::Internal => broken,
        _ => false,
    }
}

/// A `client_hash` argument: signup-api's keyed hash of the caller's network (32 bytes), or empty when unknown;
/// anything else is INVALID_ARGUMENT.
pub fn client_hash_argument<T: AsRef<[u8]>>(value: T) -> Result<T, tonic::Status> {
    match value.as_ref().len() {
        0 | 32 => Ok(value),
        _ => Err(tonic::Status::invalid_argument("client_hash must be empty or 32 bytes")),
    }
}

/// A UUID argument of a call; anything else is INVALID_ARGUMENT naming the field.
pub fn uuid_argument(field: &str, value: &str) -> Result<uuid::Uuid, tonic::Status> {
    uuid::Uuid::parse_str(value).map_err(|_| tonic::Status::invalid_argument(format!("{field} must be a UUID")))
}

/// A UUID argument that may be left empty (`None`); anything else is INVALID_ARGUMENT naming the field.
pub fn optional_uuid_argument(field: &str, value: &str) -> Result<Option<uuid::Uuid>, tonic::Status> {
    if value.is_empty() { Ok(None) } else { uuid_argument(field, value).map(Some) }
}
