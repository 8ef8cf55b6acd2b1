//! One trace from the HTTP request to the SMTP server: every process exports its spans over OTLP/gRPC to a real
//! receiver in this test, with logs turned down to warnings (which must not turn traces off), and the test follows
//! one signup and its confirm through HTTP, gRPC, the outbox, AMQP and SMTP by their parent and link relations.

use anyhow::ensure;
use e2e::{
    otlp::{Collector, ReceivedSpan},
    poll::eventually,
    stack::{DELIVERY_TIMEOUT, GRPC_SERVICES, Options, Stack},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const SIGNED_UP: &str = "signup.events.v1.UserSignedUp";
const VERIFIED: &str = "signup.events.v1.EmailVerified";
const SIGNUP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CONFIRM_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// Every process exports to `collector`, quickly, and logs only warnings (and the line the harness waits for);
/// signup-api continues the trace of the test, which stands for a proxy of ours.
fn exporting_to(collector: &Collector) -> Options {
    let mut options = Options::default();
    options.env.push(("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()));
    for service in GRPC_SERVICES.into_iter().chain(["signup-api"]) {
        options.env.extend([
            (service, "OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            (service, "OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
            (service, "RUST_LOG", "warn,platform::server=info,signup_api::startup=info".to_owned()),
        ]);
    }
    options
}

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CALLER_SPAN}-01")
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    test: impl Fn(&ReceivedSpan) -> bool,
) -> anyhow::Result<&'a ReceivedSpan> {
    spans.iter().find(|span| test(span)).ok_or_else(|| anyhow::anyhow!("no {what} span among {}", names(spans)))
}

fn names(spans: &[ReceivedSpan]) -> String {
    spans.iter().map(|s| format!("{}:{}", s.service, s.name)).collect::<Vec<_>>().join(", ")
}

/// Whether `ancestor` is `span`'s parent, grandparent, ... within `spans`.
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut parent = span.parent_span_id.clone();
    while let Some(next) = spans.iter().find(|s| s.span_id == parent) {
        if next.span_id == ancestor.span_id {
            return true;
        }
        parent = next.parent_span_id.clone();
    }
    false
}

fn is_publish_of(span: &ReceivedSpan, kind: &str) -> bool {
    span.kind == SpanKind::Producer && span.attribute("cloudevents.event_type") == Some(kind)
}

fn is_process_in(span: &ReceivedSpan, service: &str, kind: &str) -> bool {
    span.service == service && span.kind == SpanKind::Consumer && span.attribute("cloudevents.event_type") == Some(kind)
}

/// The publish span of `kind` in `spans` and the process span of each of `consumers`, once all have arrived.
fn published_and_processed<'a>(
    spans: &'a [ReceivedSpan],
    kind: &str,
    consumers: &[&str],
) -> anyhow::Result<(&'a ReceivedSpan, Vec<&'a ReceivedSpan>)> {
    let publish = find(spans, "publish", |s| is_publish_of(s, kind))?;
    let processes = consumers
        .iter()
        .map(|consumer| find(spans, &format!("{consumer} process"), |s| is_process_in(s, consumer, kind)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((publish, processes))
}

/// A publish span is a producer span of the exchange in the trace of the request (linked to the context the outbox
/// stored), and each process span is the child of that publication and linked to it.
fn check_event_hop(
    spans: &[ReceivedSpan],
    publish: &ReceivedSpan,
    processes: &[&ReceivedSpan],
    trace: &str,
) -> anyhow::Result<()> {
    ensure!(publish.name.starts_with("publish ") && publish.service == "user-metadata", "{publish:?}");
    ensure!(publish.links.contains(&(trace.to_owned(), publish.parent_span_id.clone())), "unlinked: {publish:?}");
    let server = find(spans, "user-metadata server", |s| s.service == "user-metadata" && s.kind == SpanKind::Server)?;
    ensure!(descends_from(spans, publish, server), "publish outside the call: {publish:?}");
    for process in processes {
        ensure!(process.parent_span_id == publish.span_id, "not a child of the publish span: {process:?}");
        ensure!(process.links.contains(&(trace.to_owned(), publish.span_id.clone())), "unlinked: {process:?}");
        ensure!(process.name.starts_with("process "), "{process:?}");
        ensure!(process.attribute("messaging.system") == Some("rabbitmq"), "{process:?}");
        for key in ["messaging.message.id", "messaging.destination.name"] {
            ensure!(process.attribute(key) == publish.attribute(key), "{key} differs: {process:?} {publish:?}");
        }
    }
    Ok(())
}

/// Every gRPC client span of the trace has its server span, a child of it in the callee, under the same name.
fn check_grpc_pairs(spans: &[ReceivedSpan], expected: &[&str]) -> anyhow::Result<()> {
    let is_client = |s: &&ReceivedSpan| s.kind == SpanKind::Client && s.attribute("rpc.system").is_some();
    let clients: Vec<_> = spans.iter().filter(is_client).collect();
    for name in expected {
        ensure!(clients.iter().any(|c| c.name == *name), "no client span {name} among {}", names(spans));
    }
    for client in clients {
        let server = spans.iter().find(|s| s.kind == SpanKind::Server && s.parent_span_id == client.span_id);
        let server = server.ok_or_else(|| anyhow::anyhow!("no server span for {client:?}"))?;
        ensure!(server.name == client.name && server.service != client.service, "{server:?} for {client:?}");
        let (service, method) = client.name.split_once('/').unwrap_or_default();
        for span in [client, server] {
            ensure!(span.attribute("rpc.system") == Some("grpc"), "{span:?}");
            ensure!(span.attribute("rpc.service") == Some(service), "{span:?}");
            ensure!(span.attribute("rpc.method") == Some(method), "{span:?}");
            ensure!(span.attribute("rpc.grpc.status_code") == Some("0"), "{span:?}");
        }
    }
    Ok(())
}

/// The HTTP server span of signup-api answering `route`, a child of the caller's span.
fn check_http(spans: &[ReceivedSpan], route: &str) -> anyhow::Result<()> {
    let http = find(spans, "http", |s| s.kind == SpanKind::Server && s.service == "signup-api")?;
    ensure!(http.name == route && http.parent_span_id == CALLER_SPAN, "{http:?}");
    Ok(())
}

/// The signup's trace: HTTP, the gRPC pairs, the publication of UserSignedUp, both subscribers' processing, and the
/// mail's send under email-verification's, all carrying the caller's tracestate.
fn check_signup(spans: &[ReceivedSpan]) -> anyhow::Result<()> {
    check_http(spans, "POST /v1/signups")?;
    check_grpc_pairs(
        spans,
        &[
            "signup.password.v1.PasswordService/StoreAttemptCredential",
            "signup.user_metadata.v1.UserMetadataService/RegisterSignup",
        ],
    )?;
    let (publish, processes) = published_and_processed(spans, SIGNED_UP, &["email-verification", "friend-discovery"])?;
    check_event_hop(spans, publish, &processes, SIGNUP_TRACE)?;
    let send = find(spans, "send", |s| s.name == "send")?;
    ensure!((send.service.as_str(), send.kind) == ("email-verification", SpanKind::Client), "{send:?}");
    ensure!(descends_from(spans, send, processes[0]), "the send span is not under the event that queued it");
    // The caller's tracestate travelled with the context, across AMQP and through the mail queue.
    for span in [publish, processes[0], processes[1], send] {
        ensure!(span.trace_state == "vendor=opaque", "tracestate lost: {span:?}");
    }
    Ok(())
}

/// The confirm's trace: HTTP, the gRPC pairs, the publication of EmailVerified and its three subscribers.
fn check_confirm(spans: &[ReceivedSpan]) -> anyhow::Result<()> {
    check_http(spans, "POST /v1/email-verifications/confirm")?;
    check_grpc_pairs(
        spans,
        &[
            "signup.email_verification.v1.EmailVerificationService/ConfirmEmail",
            "signup.user_metadata.v1.UserMetadataService/MarkEmailVerified",
        ],
    )?;
    let (publish, processes) =
        published_and_processed(spans, VERIFIED, &["password", "email-verification", "friend-discovery"])?;
    check_event_hop(spans, publish, &processes, CONFIRM_TRACE)
}

#[tokio::test]
async fn one_signup_is_one_trace_from_the_http_request_to_the_smtp_server() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let mut stack = Stack::start_with(exporting_to(&collector)).await?;
    stack.wait_ready().await?;
    let email = format!("traced-{}@example.com", uuid::Uuid::now_v7().simple());
    let contact = format!("contact-{}@example.com", uuid::Uuid::now_v7().simple());
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada", "contacts": [contact] });

    let response = stack
        .http()
        .post(format!("{}/v1/signups", stack.api_url()))
        .header("traceparent", traceparent(SIGNUP_TRACE))
        .header("tracestate", "vendor=opaque")
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let mail = stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let token = mail.token().ok_or_else(|| anyhow::anyhow!("the mail has no token"))?;
    // Spans arrive as each process exports them: wait until the whole trace holds, or fail with what is missing.
    eventually(DELIVERY_TIMEOUT, || async { check_signup(&collector.trace(SIGNUP_TRACE)) }).await?;

    // The confirm is a trace of its own, through the same hops to the subscribers of EmailVerified.
    let response = stack
        .http()
        .post(format!("{}/v1/email-verifications/confirm", stack.api_url()))
        .header("traceparent", traceparent(CONFIRM_TRACE))
        .json(&json!({ "token": token, "password": PASSWORD }))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    eventually(DELIVERY_TIMEOUT, || async { check_confirm(&collector.trace(CONFIRM_TRACE)) }).await?;

    // Nothing secret or personal in any span, and no span for a health check (the harness and signup-api's
    // readiness monitor probed every service throughout).
    let all = collector.spans();
    for secret in [PASSWORD, token.as_str(), contact.as_str()] {
        let leaks: Vec<_> = all.iter().filter(|span| span.mentions(secret)).collect();
        assert!(leaks.is_empty(), "spans carry a secret: {leaks:?}");
    }
    let probes: Vec<_> = all.iter().filter(|span| span.mentions("grpc.health")).collect();
    assert!(probes.is_empty(), "health checks were traced: {probes:?}");
    Ok(())
}

/// Attack: a client's own trace context, sent straight to signup-api. It was continued, so the client decided
/// whether its requests were traced: with a `traceparent` marked not sampled, nothing of this signup reached the
/// collector, in any service. Its `tracestate` was stored with the outbox row, carried by the events and kept with
/// the mail. Now only a proxy of ours passes a trace on: the request starts a trace of its own, sampled like any
/// other, with a link to what the client sent and none of its `tracestate`.
#[tokio::test]
async fn a_clients_own_trace_context_is_linked_not_continued() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let mut options = exporting_to(&collector);
    options.env.retain(|(_, name, _)| *name != "TRUSTED_PROXIES");
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    let email = format!("untrusted-{}@example.com", uuid::Uuid::now_v7().simple());
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });

    let response = stack
        .http()
        .post(format!("{}/v1/signups", stack.api_url()))
        .header("traceparent", format!("00-{SIGNUP_TRACE}-{CALLER_SPAN}-00"))
        .header("tracestate", "client=chosen")
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?;
    let server = eventually(DELIVERY_TIMEOUT, || async {
        let spans = collector.spans();
        let server = spans.into_iter().find(|s| s.service == "signup-api" && s.name == "POST /v1/signups");
        server.ok_or_else(|| anyhow::anyhow!("no span of the signup reached the collector"))
    })
    .await?;
    let mut outbox = stack.database("user-metadata").connect().await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE tracestate LIKE '%client=chosen%'")
        .fetch_one(&mut outbox)
        .await?;

    assert!(server.parent_span_id.is_empty() && server.trace_id != SIGNUP_TRACE, "the client's trace was continued");
    assert_eq!(server.links, vec![(SIGNUP_TRACE.to_owned(), CALLER_SPAN.to_owned())], "no link to the client's");
    assert!(collector.trace(SIGNUP_TRACE).is_empty(), "a span joined the client's trace");
    assert!(collector.spans().iter().all(|span| !span.trace_state.contains("client=")), "a span kept its tracestate");
    assert_eq!(stored, 0, "the client's tracestate was stored with the event");
    Ok(())
}

/// An event whose producer sends the plain W3C `traceparent` (not the binding's `cloudEvents_traceparent`), into a
/// stack exporting over OTLP/HTTP to the URL of `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it is.
#[tokio::test]
async fn a_plain_traceparent_is_continued_and_spans_can_go_over_otlp_http() -> anyhow::Result<()> {
    let collector = Collector::start_http().await?;
    let mut options = Options::default();
    for service in GRPC_SERVICES.into_iter().chain(["signup-api"]) {
        options.env.extend([
            (service, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{}/v1/traces", collector.endpoint())),
            (service, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
            (service, "OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ]);
    }
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    let event = proto::events::v1::DiscoverabilityChanged {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: uuid::Uuid::now_v7().to_string(),
        discoverable: false,
        occurred_at: None,
    };
    let envelope = platform::events::Envelope {
        id: event.event_id.parse()?,
        kind: proto::Event::DISCOVERABILITY_CHANGED.to_owned(),
        source: "/e2e".to_owned(),
        time: chrono::Utc::now(),
        data: prost::Message::encode_to_vec(&event),
        trace: Default::default(),
    };
    let properties = envelope.properties();
    let mut headers = properties.headers().clone().unwrap_or_default();
    let plain = lapin::types::AMQPValue::LongString(traceparent(CONFIRM_TRACE).into());
    headers.insert("traceparent".into(), plain);
    e2e::broker::publish(&stack.exchange, properties.with_headers(headers), &envelope.data).await?;

    let process = eventually(DELIVERY_TIMEOUT, || async {
        let spans = collector.trace(CONFIRM_TRACE);
        let found =
            spans.into_iter().find(|s| is_process_in(s, "friend-discovery", proto::Event::DISCOVERABILITY_CHANGED));
        found.ok_or_else(|| anyhow::anyhow!("no process span yet among {}", names(&collector.spans())))
    })
    .await?;
    assert_eq!(process.parent_span_id, CALLER_SPAN);
    assert!(process.links.contains(&(CONFIRM_TRACE.to_owned(), CALLER_SPAN.to_owned())), "{process:?}");
    Ok(())
}
