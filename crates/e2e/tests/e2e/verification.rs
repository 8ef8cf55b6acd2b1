//! Email verification through the real stack and a real SMTP server on loopback: one mail per signup whose link
//! works once with that signup's password, resends, the notice for existing accounts, SMTP outages and refusals,
//! and `GET /v1/me` before and after confirming.

use e2e::{
    broker::{Tap, publish},
    poll::eventually,
    smtp::{Mode, Received},
    stack::{DELIVERY_TIMEOUT, Options, PUBLIC_BASE_URL, Stack},
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const SIGNED_UP: &str = "signup.events.v1.UserSignedUp";
const EXISTING: &str = "signup.events.v1.SignupAttemptedForExistingAccount";
const VERIFIED: &str = "signup.events.v1.EmailVerified";

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

async fn started(options: Options) -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

/// Signs up; returns the attempt's `signup_id`, as the `202` named it.
async fn sign_up(stack: &Stack, email: &str, password: &str, locale: Option<&str>) -> anyhow::Result<String> {
    let body = json!({ "email": email, "password": password, "display_name": "Ada Lovelace", "locale": locale });
    let response = stack.signup(&body, None).await?;
    anyhow::ensure!(response.status() == 202, "signup answered {}", response.status());
    let accepted: serde_json::Value = response.json().await?;
    accepted["signup_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no signup_id in {accepted}"))
}

/// The one mail to `email`, once it has arrived.
async fn the_mail(stack: &Stack, email: &str) -> anyhow::Result<Received> {
    let mut mails = stack.smtp.wait_for(email, 1, DELIVERY_TIMEOUT).await?;
    anyhow::ensure!(mails.len() == 1, "{} mails to {email}", mails.len());
    Ok(mails.remove(0))
}

/// Rows of email-verification's mail queue by status.
async fn mails(stack: &Stack, status: &str) -> anyhow::Result<i64> {
    let mut db = stack.database("email-verification").connect().await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM mails WHERE status = $1").bind(status).fetch_one(&mut db).await?)
}

/// Waits until nothing is left in the mail queue, so a count of delivered mail is final.
async fn queue_settled(stack: &Stack) -> anyhow::Result<()> {
    eventually(DELIVERY_TIMEOUT, || async {
        let pending = mails(stack, "pending").await?;
        anyhow::ensure!(pending == 0, "{pending} mail(s) still pending");
        Ok(())
    })
    .await
}

async fn email_verified(stack: &Stack, email: &str) -> anyhow::Result<bool> {
    email_verified_with(stack, email, PASSWORD).await
}

/// Signs in with `password` and reads `email_verified` from `GET /v1/me`; an account not verified yet does not sign
/// in (401).
async fn email_verified_with(stack: &Stack, email: &str, password: &str) -> anyhow::Result<bool> {
    let signed_in = stack.sign_in(email, password).await?;
    if signed_in.status() == 401 {
        return Ok(false);
    }
    let token = signed_in.json::<Value>().await?["token"].as_str().unwrap_or_default().to_owned();
    let response = stack.me(&token).await?;
    anyhow::ensure!(response.status() == 200, "GET /v1/me answered {}", response.status());
    let profile: Value = response.json().await?;
    profile["email_verified"].as_bool().ok_or_else(|| anyhow::anyhow!("no email_verified in {profile}"))
}

async fn problem(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    anyhow::ensure!(content_type == "application/problem+json", "content type {content_type}");
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn a_signup_gets_one_mail_whose_link_verifies_the_account_once() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("verify");

    sign_up(&stack, &email, PASSWORD, None).await?;
    let mail = the_mail(&stack, &email).await?;

    // The mail: addressed, in English, both parts, the display name, a link under PUBLIC_BASE_URL.
    let signed_up = tap.of_type(SIGNED_UP);
    assert_eq!(signed_up.len(), 1);
    let event_id = signed_up[0].header("cloudEvents_id").unwrap_or_default();
    assert_eq!(mail.header("Message-ID").as_deref(), Some(format!("<{event_id}@signup.localhost>").as_str()));
    assert_eq!(mail.header("Subject").as_deref(), Some("Confirm your email address"));
    assert!(mail.header("To").unwrap_or_default().contains(&email));
    let text = mail.part("text/plain").unwrap_or_default();
    let html = mail.part("text/html").unwrap_or_default();
    assert!(text.starts_with("Hello,") && html.contains("<p>Hello,</p>"), "a generic greeting");
    assert!(!mail.data.contains("Ada Lovelace"), "the requester's display name reached an unproven mailbox");
    assert!(text.contains("If you did not sign up, ignore this email"), "{text}");
    let token = mail.token().unwrap_or_default();
    assert_eq!(token.len(), 43);
    let link = format!("{PUBLIC_BASE_URL}/v1/email-verifications/confirm?token={token}");
    assert!(text.contains(&link) && html.contains(&link), "the link is in both parts");

    // Only the token's hash is stored.
    let dump = stack.database("email-verification").dump().await?;
    assert!(!dump.contains(&token), "the token is stored in plain");

    // Before confirming, the account is pending; opening the link changes nothing.
    assert!(!email_verified(&stack, &email).await?);
    let page =
        stack.http().get(format!("{}/v1/email-verifications/confirm?token={token}", stack.api_url())).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    // The address, token included, is never sent as `Referer`, not even with the page's own form post (an access
    // log would keep it): before, `same-origin` sent it there whole.
    assert_eq!(page.headers()["referrer-policy"], "strict-origin");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let page = page.text().await?;
    assert!(page.contains("<form method=\"post\" action=\"confirm\">") && page.contains(&token));
    assert!(page.contains("type=\"password\" id=\"password\" name=\"password\""), "the page asks for the password");
    assert!(!email_verified(&stack, &email).await?, "a GET consumed the token");

    // The confirm: 200, then verified at once and EmailVerified broadcast once.
    let confirmed = stack.confirm(&token, PASSWORD).await?;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(confirmed.json::<Value>().await?, json!({ "status": "verified" }));
    assert!(email_verified(&stack, &email).await?, "GET /v1/me does not show the verification");
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(!tap.of_type(VERIFIED).is_empty(), "EmailVerified not broadcast yet");
        Ok(())
    })
    .await?;

    // The same link again: the one answer for an invalid token.
    let (status, again) = problem(stack.confirm(&token, PASSWORD).await?).await?;
    assert_eq!((status, again["type"].as_str()), (400, Some("/problems/invalid-token")));

    queue_settled(&stack).await?;
    assert_eq!(stack.smtp.messages_to(&email).len(), 1, "more than one mail for one signup");
    assert_eq!(tap.of_type(VERIFIED).len(), 1);
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn the_confirm_page_posts_the_token_as_a_form_and_a_browser_gets_a_page() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("form");
    sign_up(&stack, &email, PASSWORD, None).await?;
    let token = the_mail(&stack, &email).await?.token().unwrap_or_default();

    let response = stack
        .http()
        .post(format!("{}/v1/email-verifications/confirm", stack.api_url()))
        .header("accept", "text/html,application/xhtml+xml")
        .form(&[("token", token.as_str()), ("password", PASSWORD)])
        .send()
        .await?;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str()?.starts_with("text/html"));
    assert!(response.text().await?.contains("Email verified"));
    assert!(email_verified(&stack, &email).await?);
    Ok(())
}

#[tokio::test]
async fn a_token_works_once_under_fifty_concurrent_confirms() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("race");
    sign_up(&stack, &email, PASSWORD, None).await?;
    let token = the_mail(&stack, &email).await?.token().unwrap_or_default();

    let attempts = (0..50).map(|_| stack.confirm(&token, PASSWORD));
    let responses = futures_util::future::join_all(attempts).await;

    let mut statuses = Vec::new();
    for response in responses {
        statuses.push(response?.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 49, "{statuses:?}");
    let mut users = stack.database("user-metadata").connect().await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(VERIFIED)
        .fetch_one(&mut users)
        .await?;
    assert_eq!(events, 1, "one EmailVerified in the outbox");
    Ok(())
}

#[tokio::test]
async fn unknown_used_and_expired_tokens_get_the_same_answer() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (used_email, expired_email) = (unique_email("used"), unique_email("expired"));
    sign_up(&stack, &used_email, PASSWORD, None).await?;
    sign_up(&stack, &expired_email, PASSWORD, None).await?;
    let used = the_mail(&stack, &used_email).await?.token().unwrap_or_default();
    let expired = the_mail(&stack, &expired_email).await?.token().unwrap_or_default();
    assert_eq!(stack.confirm(&used, PASSWORD).await?.status(), 200);
    // Controlled time: the token's expiry is moved to the past instead of waiting out its lifetime.
    let mut db = stack.database("email-verification").connect().await?;
    let moved = sqlx::query("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE user_id IN (SELECT user_id FROM accounts WHERE email = $1)")
        .bind(&expired_email)
        .execute(&mut db)
        .await?
        .rows_affected();
    assert_eq!(moved, 1);
    let unknown = "A".repeat(43);

    let answers = [
        problem(stack.confirm(&used, PASSWORD).await?).await?,
        problem(stack.confirm(&expired, PASSWORD).await?).await?,
        problem(stack.confirm(&unknown, PASSWORD).await?).await?,
        problem(stack.confirm("not even shaped like a token", PASSWORD).await?).await?,
    ];

    assert_eq!(answers[0].0, 400);
    assert_eq!(answers[0].1["type"], "/problems/invalid-token");
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }
    assert!(!email_verified(&stack, &expired_email).await?, "an expired token verified the account");
    let missing = problem(
        stack
            .http()
            .post(format!("{}/v1/email-verifications/confirm", stack.api_url()))
            .json(&json!({ "token": expired }))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(missing.0, 422, "a confirm without the password");
    Ok(())
}

#[tokio::test]
async fn a_resend_mails_a_new_link_for_its_signup_and_earlier_links_keep_working() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("resend");
    let signup_id = sign_up(&stack, &email, PASSWORD, Some("fr-FR")).await?;
    let first = the_mail(&stack, &email).await?;
    assert_eq!(first.header("Subject").as_deref(), Some("Confirmez votre adresse e-mail"), "the locale's language");
    let api = &stack;
    let resend = |address: String, signup_id: String| async move {
        anyhow::Ok(api.resend(&address, &signup_id).await?.status().as_u16())
    };

    assert_eq!(resend(email.to_uppercase(), signup_id.clone()).await?, 202);
    let second = stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?.remove(1);
    let unknown = resend(unique_email("unknown"), uuid::Uuid::now_v7().to_string()).await?;
    assert_eq!(unknown, 202, "an unknown address gets the same answer");
    // Another pending address, naming this signup: the same answer, and nothing for either.
    let other = unique_email("other");
    sign_up(&stack, &other, PASSWORD, None).await?;
    the_mail(&stack, &other).await?;
    assert_eq!(resend(other.clone(), signup_id.clone()).await?, 202, "another address's resend told it apart");

    assert_ne!(first.header("Message-ID"), second.header("Message-ID"));
    assert_eq!(second.header("Subject").as_deref(), Some("Confirmez votre adresse e-mail"));
    // Both links belong to the one signup: the earlier one still works, and then the account is verified.
    assert_eq!(stack.confirm(&first.token().unwrap_or_default(), PASSWORD).await?.status(), 200);
    assert!(email_verified(&stack, &email).await?);
    let (status, _) = problem(stack.confirm(&second.token().unwrap_or_default(), PASSWORD).await?).await?;
    assert_eq!(status, 400, "a link of a verified account still works");
    // Verified: a resend sends nothing.
    assert_eq!(resend(email.clone(), signup_id).await?, 202);
    let url = format!("{}/v1/email-verifications", stack.api_url());
    let (status, body) = problem(stack.http().post(url).json(&json!({ "email": "nope" })).send().await?).await?;
    assert_eq!(status, 422);
    let codes: Vec<_> = body["errors"].as_array().into_iter().flatten().map(|e| (&e["field"], &e["code"])).collect();
    assert_eq!(codes.len(), 2, "both fields' problems at once: {body}");
    assert_eq!(codes[1], (&json!("signup_id"), &json!("required")), "{body}");
    let (status, body) = problem(stack.resend(&email, "not-a-signup").await?).await?;
    assert_eq!((status, &body["errors"][0]["code"]), (422, &json!("invalid_signup_id")), "{body}");
    queue_settled(&stack).await?;
    assert_eq!(stack.smtp.messages_to(&email).len(), 2);
    assert_eq!(stack.smtp.messages_to(&other).len(), 1, "a resend mailed another account's address");
    Ok(())
}

#[tokio::test]
async fn a_signup_for_a_verified_account_sends_one_notice_per_interval() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("existing");
    sign_up(&stack, &email, PASSWORD, Some("fr")).await?;
    let token = the_mail(&stack, &email).await?.token().unwrap_or_default();
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200);

    // The notice goes to the account's owner, in the account's language.
    sign_up(&stack, &email, "another long passphrase here", Some("en")).await?;
    let notice = stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?.remove(1);
    sign_up(&stack, &email, "yet another long passphrase", None).await?;
    stack.wait_processed(EXISTING, 2).await?;
    queue_settled(&stack).await?;

    assert_eq!(notice.header("Subject").as_deref(), Some("Quelqu'un a tenté de s'inscrire avec votre adresse e-mail"));
    assert!(notice.part("text/plain").unwrap_or_default().contains("vous avez déjà un compte"));
    assert!(notice.token().is_none(), "a notice carries no verification link");
    assert_eq!(stack.smtp.messages_to(&email).len(), 2, "a second notice within the interval");
    Ok(())
}

#[tokio::test]
async fn mail_waits_out_an_smtp_outage_and_temporary_refusals_then_arrives_once() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (down, refused) = (unique_email("smtp-down"), unique_email("smtp-4xx"));

    stack.smtp.stop();
    sign_up(&stack, &down, PASSWORD, None).await?;
    retried(&stack, &down).await?;
    stack.smtp.resume().await?;
    let mail = the_mail(&stack, &down).await?;

    stack.smtp.set_mode(Mode::TemporaryFailure);
    sign_up(&stack, &refused, PASSWORD, None).await?;
    retried(&stack, &refused).await?;
    stack.smtp.set_mode(Mode::Accept);
    the_mail(&stack, &refused).await?;

    queue_settled(&stack).await?;
    assert_eq!(stack.smtp.messages_to(&down).len(), 1);
    assert_eq!(stack.smtp.messages_to(&refused).len(), 1);
    let token = mail.token().unwrap_or_default();
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200, "a retried mail's link works");
    Ok(())
}

#[tokio::test]
async fn a_recipient_whose_server_stops_answering_holds_up_no_one_else() -> anyhow::Result<()> {
    // One delivery slot for the stuck recipient, one for everyone else.
    let options =
        Options { env: vec![("email-verification", "MAIL_CONCURRENCY", "2".to_owned())], ..Options::default() };
    let stack = started(options).await?;
    let (stuck, others) = (unique_email("stuck"), [unique_email("other-a"), unique_email("other-b")]);
    stack.smtp.set_mode_for(&stuck, Mode::Stall);

    sign_up(&stack, &stuck, PASSWORD, None).await?;
    for email in &others {
        sign_up(&stack, email, PASSWORD, None).await?;
    }

    // The others arrive while the stuck recipient's session hangs, and its attempts time out and are retried.
    for email in &others {
        the_mail(&stack, email).await?;
    }
    retried(&stack, &stuck).await?;
    assert!(stack.smtp.messages_to(&stuck).is_empty());
    stack.smtp.set_mode_for(&stuck, Mode::Accept);
    the_mail(&stack, &stuck).await?;
    Ok(())
}

/// A delivery cut off by its timeout takes its connection with it. Pooled, it did not: lettre's pool takes back a
/// connection whose attempt was dropped, whatever its session was in the middle of, and the next mail, checking it
/// with a NOOP that the stalled session never answered, failed its attempt on it and waited for a retry. Before:
/// the next recipient's mail was delivered on its second attempt.
#[tokio::test]
async fn a_timed_out_delivery_hands_its_connection_to_no_other_mail() -> anyhow::Result<()> {
    let env = [
        ("MAIL_CONCURRENCY", "1"),
        ("SMTP_TIMEOUT_SECS", "3"),
        // The stalled mail is most likely not retried within the test (full jitter over ten minutes), so nothing
        // but the next mail would take the connection it left.
        ("MAIL_RETRY_BASE_MS", "600000"),
        ("MAIL_RETRY_MAX_SECS", "600"),
    ];
    let env = env.map(|(name, value)| ("email-verification", name, value.to_owned())).to_vec();
    let stack = started(Options { env, ..Options::default() }).await?;
    let (stalled, next) = (unique_email("stalled"), unique_email("next"));
    stack.smtp.set_mode_for(&stalled, Mode::Stall);
    let api = &stack;
    let attempts = |email: String| async move {
        let mut db = api.database("email-verification").connect().await?;
        let query = "SELECT attempts FROM mails WHERE recipient = $1";
        anyhow::Ok(sqlx::query_scalar::<_, i32>(query).bind(email).fetch_optional(&mut db).await?)
    };

    sign_up(&stack, &stalled, PASSWORD, None).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(attempts(stalled.clone()).await? == Some(1), "the stalled attempt has not timed out");
        Ok(())
    })
    .await?;
    sign_up(&stack, &next, PASSWORD, None).await?;
    the_mail(&stack, &next).await?;

    assert_eq!(attempts(next.clone()).await?, Some(1), "the next mail failed an attempt on the stalled connection");
    Ok(())
}

#[tokio::test]
async fn every_pending_signup_keeps_its_own_link_and_the_confirmed_one_sets_the_password() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("again");
    let second_password = "a different long passphrase";
    sign_up(&stack, &email, PASSWORD, None).await?;
    let first = the_mail(&stack, &email).await?.token().unwrap_or_default();

    sign_up(&stack, &email, second_password, None).await?;
    let second = stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?.remove(1).token().unwrap_or_default();

    // Each link goes with its own signup's password only.
    let (status, body) = problem(stack.confirm(&second, PASSWORD).await?).await?;
    assert_eq!((status, body["type"].as_str()), (400, Some("/problems/link-password-mismatch")));
    assert_eq!(stack.confirm(&first, PASSWORD).await?.status(), 200, "a later signup voided the earlier link");
    assert_eq!(problem(stack.confirm(&second, second_password).await?).await?.0, 400, "verified: other links are dead");
    assert!(email_verified_with(&stack, &email, PASSWORD).await?);
    let other = stack.sign_in(&email, second_password).await?;
    assert_eq!(other.status(), 401, "the other signup's password opens the account");
    Ok(())
}

/// Waits until the mail to `email` has failed at least twice and is still waiting to be retried.
async fn retried(stack: &Stack, email: &str) -> anyhow::Result<()> {
    eventually(DELIVERY_TIMEOUT, || async {
        let mut db = stack.database("email-verification").connect().await?;
        let row: Option<(i32, String, Option<String>)> =
            sqlx::query_as("SELECT attempts, status, last_error FROM mails WHERE recipient = $1")
                .bind(email)
                .fetch_optional(&mut db)
                .await?;
        let (attempts, status, error) = row.ok_or_else(|| anyhow::anyhow!("no mail queued yet"))?;
        anyhow::ensure!(attempts >= 2 && status == "pending" && error.is_some(), "{attempts} attempts, {status}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_permanent_refusal_is_recorded_not_retried_and_its_answer_keeps_no_address() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("smtp-5xx");
    stack.smtp.set_mode(Mode::PermanentFailure);

    sign_up(&stack, &email, PASSWORD, None).await?;
    let error = eventually(DELIVERY_TIMEOUT, || async {
        let mut db = stack.database("email-verification").connect().await?;
        let row: (String, Option<String>, i32) =
            sqlx::query_as("SELECT status, last_error, attempts FROM mails WHERE recipient = $1")
                .bind(&email)
                .fetch_one(&mut db)
                .await?;
        anyhow::ensure!(row.0 == "failed", "status {}", row.0);
        assert_eq!(row.2, 1, "attempts");
        Ok(row.1.unwrap_or_default())
    })
    .await?;

    assert!(error.contains("550"), "{error}");
    // The server's answer names the address; the error kept, and the log, do not.
    assert!(!error.to_lowercase().contains(&email), "the queue repeats the address the server named: {error}");
    let logged = eventually(DELIVERY_TIMEOUT, || async {
        let logged = stack.member("email-verification").all_stdout().join("\n").to_lowercase();
        anyhow::ensure!(logged.contains("user unknown"), "the server's answer is not in the log yet");
        Ok(logged)
    })
    .await?;
    assert!(!logged.contains(&email), "email-verification logged the address the server named");
    // The failure is committed and the row is no longer pending, so no later attempt can happen.
    assert_eq!(mails(&stack, "pending").await?, 0);
    assert_eq!(stack.smtp.recipients_offered(), 1, "a 5xx was retried");
    assert!(stack.smtp.messages().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_redelivered_signup_event_sends_no_second_mail() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("redelivery");
    sign_up(&stack, &email, PASSWORD, None).await?;
    the_mail(&stack, &email).await?;
    let original = tap.of_type(SIGNED_UP).into_iter().next().ok_or_else(|| anyhow::anyhow!("not tapped"))?;

    publish(&stack.exchange, original.properties.clone(), &original.data).await?;
    let member = stack.member("email-verification");
    eventually(DELIVERY_TIMEOUT, || async {
        let seen = member.all_stdout().iter().any(|l| l.contains("event already applied"));
        anyhow::ensure!(seen, "the redelivery has not been consumed yet");
        Ok(())
    })
    .await?;
    queue_settled(&stack).await?;

    assert_eq!(stack.smtp.messages_to(&email).len(), 1, "a redelivery sent a second mail");
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn file_transport_writes_mail_to_files_and_logs_the_file_not_the_link() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("e2e-mail-{}", uuid::Uuid::now_v7().simple()));
    let options = Options {
        env: vec![
            ("email-verification", "SMTP_URL", String::new()),
            ("email-verification", "MAIL_TRANSPORT", "file".to_owned()),
            ("email-verification", "MAIL_DIR", dir.display().to_string()),
        ],
        ..Options::default()
    };
    let stack = started(options).await?;
    let email = unique_email("files");

    sign_up(&stack, &email, PASSWORD, None).await?;
    let file = eventually(DELIVERY_TIMEOUT, || async {
        let entry = std::fs::read_dir(&dir)?.flatten().find(|e| e.path().extension().is_some_and(|x| x == "eml"));
        entry.map(|e| e.path()).ok_or_else(|| anyhow::anyhow!("no .eml yet"))
    })
    .await?;
    let written = std::fs::read_to_string(&file)?;
    let logged = eventually(DELIVERY_TIMEOUT, || async {
        let lines = stack.member("email-verification").all_stdout();
        lines
            .into_iter()
            .find(|l| l.contains("mail written to a file"))
            .ok_or_else(|| anyhow::anyhow!("not logged yet"))
    })
    .await?;

    assert!(written.contains(&email));
    let token = Received { from: String::new(), to: vec![], data: written }.token().unwrap_or_default();
    assert_eq!(token.len(), 43);
    assert!(logged.contains(&*file.display().to_string()), "the file is not in the log: {logged}");
    let lines = stack.member("email-verification").all_stdout();
    assert!(lines.iter().all(|line| !line.contains(&token)), "the token is in the log");
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An outage after the right password must not cost the link: user-metadata down at the confirm answers 503 (retry),
/// and the tries those confirms counted are given back, so the owner's link outlives more retries than a link has
/// tries. Before: the sixth confirm after user-metadata came back was 400 invalid-token.
#[tokio::test]
async fn confirms_during_an_outage_after_the_right_password_cost_the_link_nothing() -> anyhow::Result<()> {
    let mut stack = started(Options::default()).await?;
    let email = unique_email("outage");
    sign_up(&stack, &email, PASSWORD, None).await?;
    let token = the_mail(&stack, &email).await?.token().unwrap_or_default();

    stack.stop("user-metadata").await?;
    let mut during = Vec::new();
    for _ in 0..6 {
        during.push(stack.confirm(&token, PASSWORD).await?.status().as_u16());
    }
    stack.restart("user-metadata").await?;
    let after = stack.confirm(&token, PASSWORD).await?;

    assert!(during.iter().all(|status| *status == 503), "{during:?}");
    assert_eq!(after.status(), 200, "the outage spent the link: {}", after.text().await?);
    Ok(())
}
