//! The five binaries as a platform runs them: ready fast, healthy by their own `healthcheck`, observable, and
//! stopped cleanly by SIGTERM.

use std::time::Duration;

use e2e::{
    process::ServiceProcess,
    stack::{GRACE, GRPC_SERVICES, Stack},
};
use futures_util::StreamExt as _;
use serde_json::Value;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn every_process_turns_ready_and_its_healthcheck_subcommand_agrees() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;

    let times = stack.wait_ready().await?;

    for (name, took) in &times {
        eprintln!("exec-to-ready {name}: {} ms", took.as_millis());
    }
    for member in &stack.members {
        let check = ServiceProcess::run(member.process.name(), &["healthcheck"], &member.env).await?;
        assert!(check.status.success(), "{} healthcheck: {:?}", member.process.name(), check.stderr);
    }
    Ok(())
}

#[tokio::test]
async fn every_grpc_service_serves_health_per_service_and_reflection() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;

    for (name, package) in GRPC_SERVICES.iter().zip([
        "signup.user_metadata.v1.UserMetadataService",
        "signup.password.v1.PasswordService",
        "signup.email_verification.v1.EmailVerificationService",
        "signup.friend_discovery.v1.FriendDiscoveryService",
    ]) {
        let member = stack.member(name);
        let channel = e2e::process::grpc_channel(member.port).await?;

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let request = tonic_health::pb::HealthCheckRequest { service: package.to_owned() };
        let status = health.check(request).await?.into_inner().status();
        let services = list_services(channel).await?;

        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving, "{name}");
        assert!(services.iter().any(|s| s == package), "{name} reflection lists {services:?}");
        assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "{name} reflection lists {services:?}");
    }
    Ok(())
}

#[tokio::test]
async fn every_process_exposes_prometheus_metrics_and_liveness() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;

    for member in &stack.members {
        let base = format!("http://127.0.0.1:{}", member.ops_port);
        let livez = reqwest::get(format!("{base}/livez")).await?.status();
        let metrics = reqwest::get(format!("{base}/metrics")).await?;
        let content_type = metrics.headers()["content-type"].to_str()?.to_owned();
        let body = metrics.text().await?;

        assert_eq!(livez, 200, "{}", member.process.name());
        assert!(content_type.starts_with("text/plain"), "{}: {content_type}", member.process.name());
        assert!(body.contains("build_info"), "{} metrics: {body}", member.process.name());
        assert!(body.contains("process_cpu_seconds_total"), "{} metrics: {body}", member.process.name());
        assert!(body.contains("process_resident_memory_bytes"), "{} metrics: {body}", member.process.name());
    }
    Ok(())
}

/// The figures an operator alerts on follow one signup: gRPC calls by service and method, the outbox's publish
/// time, each subscriber's events by type, queue and outcome with their processing time and age, the mail's send
/// time by outcome.
#[tokio::test]
async fn one_signup_shows_in_the_metrics_an_operator_alerts_on() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = format!("metered-{}@example.com", uuid::Uuid::now_v7().simple());
    let body = serde_json::json!({ "email": email, "password": "correct horse battery staple", "display_name": "Ada" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    stack.smtp.wait_for(&email, 1, e2e::stack::DELIVERY_TIMEOUT).await?;
    let signed_up = "event_type=\"signup.events.v1.UserSignedUp\"";
    let expected: [(&str, &[&str]); 3] = [
        (
            "user-metadata",
            &[
                "grpc_server_handled_total{grpc_service=\"signup.user_metadata.v1.UserMetadataService\",grpc_method=\"RegisterSignup\",grpc_code=\"0\"} 1",
                "outbox_publish_duration_seconds_count",
            ],
        ),
        (
            "email-verification",
            &[
                "mail_send_duration_seconds_bucket{kind=\"verification\",outcome=\"sent\"",
                "event_age_seconds_bucket{queue=",
                "event_processing_duration_seconds_bucket{queue=",
            ],
        ),
        ("friend-discovery", &["events_consumed_total{queue=", "event_age_seconds_count{queue="]),
    ];
    for (service, lines) in expected {
        let url = format!("http://127.0.0.1:{}/metrics", stack.member(service).ops_port);
        let metrics = e2e::poll::eventually(e2e::stack::DELIVERY_TIMEOUT, || async {
            let text = reqwest::get(&url).await?.text().await?;
            let missing: Vec<_> = lines.iter().filter(|line| !text.contains(**line)).collect();
            anyhow::ensure!(missing.is_empty(), "{service} lacks {missing:?}");
            anyhow::ensure!(text.contains(signed_up) || service == "user-metadata", "{service}: no {signed_up}");
            Ok(text)
        })
        .await?;
        if service != "user-metadata" {
            let applied = metrics.lines().find(|l| l.starts_with("events_consumed_total") && l.contains(signed_up));
            assert!(applied.is_some_and(|l| l.contains("outcome=\"applied\"") && l.ends_with(" 1")), "{metrics}");
        }
    }
    Ok(())
}

/// Every line is JSON; a request's line carries the trace a proxy of ours passed on (here the test is the proxy).
#[tokio::test]
async fn logs_are_json_lines_that_carry_the_callers_trace() -> anyhow::Result<()> {
    let env = vec![("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned())];
    let mut stack = Stack::start_with(e2e::stack::Options { env, ..Default::default() }).await?;
    stack.wait_ready().await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let response = reqwest::Client::new()
        .get(format!("{}/v1/no-such-thing", stack.api_url()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    let problem: Value = response.json().await?;
    stop_all(&mut stack).await?;

    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 404);
    assert!(problem["type"].is_string() && problem["title"].is_string(), "{problem}");
    for member in &stack.members {
        let lines = member.process.stdout_lines();
        assert!(!lines.is_empty(), "{} logged nothing", member.process.name());
        for line in &lines {
            let entry: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
            for field in ["timestamp", "level", "message", "target"] {
                assert!(entry.get(field).is_some(), "{} line without {field}: {line}", member.process.name());
            }
        }
    }
    let api = stack.member("signup-api");
    let traced = api
        .process
        .stdout_lines()
        .into_iter()
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|entry| entry["message"] == "request completed")
        .expect("a request log line");
    assert_eq!(traced["openTelemetry"]["traceId"], trace_id, "{traced}");
    assert_eq!(traced["openTelemetry"]["spanId"].as_str().map(str::len), Some(16), "{traced}");
    Ok(())
}

#[tokio::test]
async fn sigterm_makes_every_process_exit_zero_within_the_grace_period() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;

    let mut outcomes = Vec::new();
    for member in &mut stack.members {
        member.process.sigterm()?;
        let status = member.process.wait(GRACE + Duration::from_secs(2)).await?;
        outcomes.push((member.process.name().to_owned(), status));
    }

    for (name, status) in &outcomes {
        assert!(status.success(), "{name} exited with {status}");
    }
    for member in &stack.members {
        let lines = member.process.stdout_lines();
        assert!(lines.iter().any(|l| l.contains("\"draining\"")), "{} did not drain: {lines:?}", member.process.name());
        assert!(lines.iter().any(|l| l.contains("\"stopped\"")), "{} did not stop: {lines:?}", member.process.name());
        let after = ServiceProcess::run(member.process.name(), &["healthcheck"], &member.env).await?;
        assert!(!after.status.success(), "{} healthcheck passes after exit", member.process.name());
    }
    Ok(())
}

async fn stop_all(stack: &mut Stack) -> anyhow::Result<()> {
    for member in &mut stack.members {
        member.process.sigterm()?;
        member.process.wait(GRACE + Duration::from_secs(2)).await?;
    }
    Ok(())
}

async fn list_services(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(futures_util::stream::iter([request])).await?.into_inner();
    let Some(response) = responses.next().await.transpose()? else { anyhow::bail!("no reflection response") };
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => anyhow::bail!("unexpected reflection response {other:?}"),
    }
}
