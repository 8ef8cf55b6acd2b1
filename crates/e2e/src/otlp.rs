//! A real OTLP trace receiver in the test process, keeping every span it is sent, flattened for assertions: over
//! gRPC, the collector's `TraceService` from `opentelemetry-proto` served by tonic; over HTTP, `POST /v1/traces`
//! with a protobuf body, served by axum.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};
use tokio::task::JoinHandle;

/// One received span, with the name of the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// The trace id, hex.
    pub trace_id: String,
    /// The span id, hex.
    pub span_id: String,
    /// The W3C `tracestate` the span carries.
    pub trace_state: String,
    /// The parent's span id, hex; empty for a root.
    pub parent_span_id: String,
    /// The `(trace id, span id)` of each link, hex.
    pub links: Vec<(String, String)>,
    /// Every attribute, values as text.
    pub attributes: Vec<(String, String)>,
    /// Every event's name and attributes, as text.
    pub events: Vec<String>,
}

impl ReceivedSpan {
    /// The value of attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether `text` occurs in the span's name, any attribute or any event.
    pub fn mentions(&self, text: &str) -> bool {
        self.name.contains(text)
            || self.attributes.iter().any(|(_, value)| value.contains(text))
            || self.events.iter().any(|event| event.contains(text))
    }
}

/// The receiver: dropping it stops the server.
#[derive(Debug)]
pub struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: JoinHandle<()>,
}

impl Collector {
    /// Serves OTLP/gRPC on a kernel-chosen port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Receiver(spans.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        Ok(Self { port, spans, server })
    }

    /// Serves OTLP/HTTP (`POST /v1/traces`, protobuf) on a kernel-chosen port of 127.0.0.1.
    pub async fn start_http() -> anyhow::Result<Self> {
        use prost::Message as _;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let receiver = Arc::new(Receiver(spans.clone()));
        let export = move |body: axum::body::Bytes| async move {
            let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
            };
            receiver.keep(request);
            let response = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
            (axum::http::StatusCode::OK, response)
        };
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(export));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { port, spans, server })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().map(|spans| spans.clone()).unwrap_or_default()
    }

    /// The spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|span| span.trace_id == trace_id).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Receiver(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        for resource in request.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = flatten(&attributes).into_iter().find(|(k, _)| k == "service.name").map(|(_, v)| v);
            for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(ReceivedSpan {
                    service: service.clone().unwrap_or_default(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state.clone(),
                    links: span.links.iter().map(|link| (hex(&link.trace_id), hex(&link.span_id))).collect(),
                    attributes: flatten(&span.attributes),
                    events: span.events.iter().map(|e| format!("{} {:?}", e.name, flatten(&e.attributes))).collect(),
                    name: span.name,
                });
            }
        }
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(received);
        }
    }
}

fn flatten(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
