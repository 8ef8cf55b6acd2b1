//! A dying peer is a 503, never a 500: signups in flight when password or user-metadata is killed (`kill -9`)
//! are answered 503 with `Retry-After`, and a retry under the same `Idempotency-Key` succeeds once the peer is
//! back, leaving one account per email.

use std::time::Duration;

use e2e::{
    poll::eventually,
    stack::{DELIVERY_TIMEOUT, Options, Stack},
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// Signups sent at once.
const IN_FLIGHT: usize = 8;

/// A stack whose password service hashes slowly on one thread with room for every signup in its queue, so signups
/// are held inside the system long enough to kill a peer under them.
async fn slow_hashing_stack() -> anyhow::Result<Stack> {
    let env = |name: &'static str, value: &str| ("password", name, value.to_owned());
    let env = vec![env("HASHING_THREADS", "1"), env("HASHING_QUEUE_LIMIT", "20"), env("ARGON2_ITERATIONS", "8")];
    let mut stack = Stack::start_with(Options { env, ..Options::default() }).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

fn signup(n: usize) -> (String, Value) {
    let email = format!("peer{n}-{}@example.com", uuid::Uuid::now_v7().simple());
    let key = format!("peer-test-{}", uuid::Uuid::now_v7().simple());
    (key, json!({ "email": email, "password": PASSWORD, "display_name": "Ada" }))
}

/// Sends every signup at once; returns the tasks answering each one's status, `Retry-After` and content type.
fn send_all(stack: &Stack, signups: &[(String, Value)]) -> Vec<tokio::task::JoinHandle<anyhow::Result<Answer>>> {
    signups
        .iter()
        .map(|(key, body)| {
            let (client, url) = (reqwest::Client::new(), format!("{}/v1/signups", stack.api_url()));
            let request = client.post(url).header("Idempotency-Key", key).json(body);
            tokio::spawn(async move {
                let response = request.send().await?;
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok(Answer {
                    status: response.status().as_u16(),
                    retry_after: header("retry-after"),
                    content_type: header("content-type"),
                })
            })
        })
        .collect()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
}

/// Waits until password is hashing or holding at least two signups.
async fn hashing(stack: &Stack) -> anyhow::Result<()> {
    let ops = stack.member("password").ops_port;
    eventually(DELIVERY_TIMEOUT, || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{ops}/metrics")).await?.text().await?;
        let in_password: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("password_hashing_in_progress") && l.contains("kind=\"signup\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::ensure!(in_password >= 2.0, "{in_password} signups in password");
        Ok(())
    })
    .await
}

/// Every answer is a 202 or a retryable 503 problem, and at least one was cut off by the death; the 503s are
/// retried under their keys until accepted; then every email has exactly one account and one announcement.
async fn answered_then_retried(stack: &Stack, signups: &[(String, Value)], answers: Vec<Answer>) -> anyhow::Result<()> {
    assert!(answers.iter().all(|a| a.status == 202 || a.status == 503), "not 202 or 503: {answers:?}");
    let refused: Vec<usize> = (0..answers.len()).filter(|i| answers[*i].status == 503).collect();
    assert!(!refused.is_empty(), "no signup was in flight when the peer died: {answers:?}");
    for i in &refused {
        let answer = &answers[*i];
        assert!(answer.retry_after.is_some(), "503 without Retry-After: {answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"), "{answer:?}");
    }
    for i in refused {
        let (key, body) = &signups[i];
        eventually(Duration::from_secs(30), || async {
            let response = stack.signup(body, Some(key)).await?;
            anyhow::ensure!(response.status() == 202, "the retry answered {}", response.status());
            Ok(())
        })
        .await?;
    }
    let mut users = stack.database("user-metadata").connect().await?;
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;
    let announced: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(proto::Event::USER_SIGNED_UP)
        .fetch_one(&mut users)
        .await?;
    assert_eq!((accounts, announced), (IN_FLIGHT as i64, IN_FLIGHT as i64), "one account and one event per email");
    Ok(())
}

#[tokio::test]
async fn killing_password_under_signups_in_flight_answers_503_and_the_retries_succeed() -> anyhow::Result<()> {
    let mut stack = slow_hashing_stack().await?;
    let signups: Vec<(String, Value)> = (0..IN_FLIGHT).map(signup).collect();
    let requests = send_all(&stack, &signups);
    hashing(&stack).await?;

    stack.kill("password").await?;
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await??);
    }
    stack.restart("password").await?;

    answered_then_retried(&stack, &signups, answers).await
}

#[tokio::test]
async fn killing_user_metadata_under_signups_in_flight_answers_503_and_the_retries_succeed() -> anyhow::Result<()> {
    let mut stack = slow_hashing_stack().await?;
    let signups: Vec<(String, Value)> = (0..IN_FLIGHT).map(signup).collect();
    let requests = send_all(&stack, &signups);
    hashing(&stack).await?;

    // The signups still hashing reach user-metadata after it died.
    stack.kill("user-metadata").await?;
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await??);
    }
    stack.restart("user-metadata").await?;

    answered_then_retried(&stack, &signups, answers).await
}
