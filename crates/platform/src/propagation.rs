//! W3C trace context across process boundaries: read from incoming HTTP/gRPC headers, written into outgoing
//! ones, stored with what waits in a table (an outbox row, a queued mail) and carried by events, so one trace spans
//! HTTP, gRPC, the outbox, AMQP and SMTP.

use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
    trace::{SpanContext, TraceContextExt as _},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace context carried by `headers`, or an empty one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// A trace context a client sent from outside the proxies we trust. It is not continued: the client would decide
/// whether its requests are traced (a `traceparent` marked not sampled hides them) and its `tracestate` would be
/// stored with everything they cause. The request's span links to it instead (without its `tracestate`).
#[derive(Debug, Clone)]
pub struct Untrusted(pub SpanContext);

/// Takes the trace context off a request from outside (`traceparent` and `tracestate`): what to link to, if it was
/// valid.
pub fn take_untrusted(headers: &mut http::HeaderMap) -> Option<Untrusted> {
    let sent = extract(headers).span().span_context().clone();
    headers.remove("traceparent");
    headers.remove("tracestate");
    let bare = SpanContext::new(sent.trace_id(), sent.span_id(), sent.trace_flags(), true, Default::default());
    sent.is_valid().then_some(Untrusted(bare))
}

/// Writes `span`'s trace context into outgoing HTTP (or gRPC) headers.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut HeaderInjector(headers)));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// A trace context at rest: what is stored with an outbox row or a queued mail, and what an event carries, so the
/// work that picks it up later continues the trace that caused it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// W3C `traceparent`; `None` outside a trace.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, kept as the caller sent it.
    pub tracestate: Option<String>,
}

crate::from_row!(TraceContext { traceparent, tracestate });

impl TraceContext {
    /// The context of `span`.
    pub fn of(span: &tracing::Span) -> Self {
        let context = span.context();
        let mut carrier = Self::default();
        global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
        carrier
    }

    /// The context of the current span.
    pub fn current() -> Self {
        Self::of(&tracing::Span::current())
    }

    /// The context to continue: a new span whose parent this is belongs to the same trace.
    pub fn context(&self) -> Context {
        global::get_text_map_propagator(|propagator| propagator.extract(self))
    }

    /// The span this context names, if it is valid: what a span link points at.
    pub fn span_context(&self) -> Option<SpanContext> {
        let context = self.context();
        let span = context.span().span_context().clone();
        span.is_valid().then_some(span)
    }

    /// Makes `span` a child of this context and links it to the same span (the messaging conventions' producer
    /// link, which survives a backend that re-roots consumer spans). Without a context `span` stays a root.
    pub fn continue_in(&self, span: &tracing::Span) {
        if let Some(producer) = self.span_context() {
            let _ = span.set_parent(self.context());
            span.add_link(producer);
        }
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}
