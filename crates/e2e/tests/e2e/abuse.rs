//! Abuse controls, tried as a hostile client would, through the public API of the real stack: sessions instead of
//! a password per request, sign-in throttling per email (known or not), per-client rate limits behind trusted and
//! untrusted proxies, and hashing that a flood of one kind cannot take from the other.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use e2e::{
    poll::eventually,
    process::{Probe, ServiceProcess},
    stack::{DELIVERY_TIMEOUT, Options, READY_TIMEOUT, Stack, var},
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// How long signup-api remembers a checked session by default (`SESSION_CACHE_TTL_MS`).
const SESSION_CACHE_TTL: Duration = Duration::from_secs(2);

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

async fn started(options: Options) -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

/// Signs `email` up and confirms its link.
async fn verified_account(stack: &Stack, email: &str) -> anyhow::Result<()> {
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
    anyhow::ensure!(stack.signup(&body, None).await?.status() == 202, "signup");
    let mail = stack.smtp.wait_for(email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let confirmed = stack.confirm(&mail.token().unwrap_or_default(), PASSWORD).await?;
    anyhow::ensure!(confirmed.status() == 200, "confirm answered {}", confirmed.status());
    Ok(())
}

async fn sessions(stack: &Stack) -> anyhow::Result<sqlx::PgConnection> {
    stack.database("password").connect().await
}

#[tokio::test]
async fn a_session_token_opens_the_account_until_it_expires_or_is_revoked() -> anyhow::Result<()> {
    let mut stack = started(Options::default()).await?;
    let email = unique_email("session");
    verified_account(&stack, &email).await?;

    let created = stack.sign_in(&email, PASSWORD).await?;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let body: Value = created.json().await?;
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!((token.len(), body["token_type"].as_str()), (43, Some("Bearer")));
    assert!(body["expires_at"].is_string() && body["idle_expires_at"].is_string(), "{body}");

    let me = stack.me(&token).await?;
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["cache-control"], "no-store");
    assert_eq!(me.json::<Value>().await?["email"], email.as_str());
    // Only the token's hash is stored.
    assert!(!stack.database("password").dump().await?.contains(&token), "the token is stored in plain");
    // Sessions live in the password service's database: restarts of any process keep them.
    stack.kill("password").await?;
    stack.restart("password").await?;
    stack.stop("signup-api").await?;
    stack.restart("signup-api").await?;
    assert_eq!(stack.me(&token).await?.status(), 200, "a restart ended the session");

    // Revoked: the token no longer works.
    let url = format!("{}/v1/sessions/current", stack.api_url());
    assert_eq!(stack.http().delete(&url).bearer_auth(&token).send().await?.status(), 204);
    let gone = stack.me(&token).await?;
    assert_eq!(gone.status(), 401);
    assert_eq!(gone.headers()["www-authenticate"], r#"Bearer realm="signup""#);
    assert_eq!(stack.http().delete(&url).bearer_auth(&token).send().await?.status(), 401);

    // Expired (idle, then absolute): controlled time moves the expiry into the past instead of waiting. The change
    // is made behind the API's back, as an administrator's would be: signup-api may answer from what it remembers
    // of the session for its time-to-live (SESSION_CACHE_TTL_MS, 2 s), not longer.
    for column in ["idle_expires_at", "expires_at"] {
        let token = stack.session(&email, PASSWORD).await?;
        assert_eq!(stack.me(&token).await?.status(), 200);
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sessions SET {column} = now() - interval '1 second' WHERE token_hash = sha256($1::bytea)"
        )))
        .bind(token.as_bytes())
        .execute(&mut sessions(&stack).await?)
        .await?
        .rows_affected();
        assert_eq!(moved, 1);
        eventually(SESSION_CACHE_TTL + Duration::from_secs(3), || async {
            let status = stack.me(&token).await?.status();
            anyhow::ensure!(status == 401, "a session past its {column} still works: {status}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_unknown_email_a_wrong_password_and_an_unverified_account_get_one_answer() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (verified, pending) = (unique_email("verified"), unique_email("pending"));
    verified_account(&stack, &verified).await?;
    let body = json!({ "email": pending, "password": PASSWORD, "display_name": "Pending" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);

    let wrong = stack.sign_in(&verified, "not the password at all").await?;
    let unknown = stack.sign_in(&unique_email("nobody"), PASSWORD).await?;
    let too_long = stack.sign_in(&verified, &"x".repeat(5000)).await?;
    // An empty password is no one's either: once a 500 (password refused it as an invalid argument).
    let empty = stack.sign_in(&verified, "").await?;
    // The password of a signup not confirmed yet opens nothing either.
    let unverified = stack.sign_in(&pending, PASSWORD).await?;

    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let content_type = r.headers()["content-type"].to_str().map(str::to_owned);
        anyhow::Ok((status, content_type?, r.json::<Value>().await?))
    };
    let wrong = answer(wrong).await?;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1, "application/problem+json");
    assert_eq!(wrong.2["type"], "/problems/invalid-credentials");
    assert_eq!(answer(unknown).await?, wrong, "an unknown email is told apart from a wrong password");
    assert_eq!(answer(too_long).await?, wrong, "an over-long password is not a 401 like the others");
    assert_eq!(answer(empty).await?, wrong, "an empty password is not a 401 like the others");
    assert_eq!(
        answer(unverified).await?,
        wrong,
        "an unverified account's signup password is not a 401 like the others"
    );
    // No session, a malformed one, Basic credentials: one 401.
    for authorization in [None, Some("Bearer nonsense".to_owned()), Some(format!("Basic {}", "YTpi"))] {
        let mut request = stack.http().get(format!("{}/v1/me", stack.api_url()));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        assert_eq!(request.send().await?.status(), 401);
    }
    Ok(())
}

/// Someone on the owner's network (a shared NAT) spends its sign-in budget; the owner could then not sign out
/// (signing out was counted with signing in) and their session stayed open on a shared device. Signing out costs
/// no hash and counts with the reads.
#[tokio::test]
async fn a_spent_sign_in_budget_does_not_keep_anyone_from_signing_out() -> anyhow::Result<()> {
    let env = vec![("signup-api", "RATE_LIMIT_SESSIONS", "2/600".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let email = unique_email("signing-out");
    verified_account(&stack, &email).await?;
    let owner = stack.session(&email, PASSWORD).await?;
    assert_eq!(stack.sign_in(&email, "a guessed battery staple horse").await?.status(), 401);
    assert_eq!(stack.sign_in(&email, PASSWORD).await?.status(), 429, "the sign-in budget is not spent");
    let url = format!("{}/v1/sessions/current", stack.api_url());
    assert_eq!(stack.http().delete(&url).bearer_auth(&owner).send().await?.status(), 204, "could not sign out");
    assert_eq!(stack.me(&owner).await?.status(), 401);
    Ok(())
}

/// Moves an email's last failed sign-in `secs` into the past: controlled time instead of waiting out a delay.
async fn time_passes(stack: &Stack, secs: u32) -> anyhow::Result<()> {
    sqlx::query("UPDATE sign_in_failures SET last_failure_at = last_failure_at - make_interval(secs => $1)")
        .bind(f64::from(secs))
        .execute(&mut sessions(stack).await?)
        .await?;
    Ok(())
}

/// Signs in once and returns the status and, for a 429, its `Retry-After`.
async fn attempt(stack: &Stack, email: &str, password: &str) -> anyhow::Result<(u16, Option<u64>)> {
    let response = stack.sign_in(email, password).await?;
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    Ok((response.status().as_u16(), retry))
}

/// Attack: guessing an account's password. After three failures each try must wait (30 s, then 60 s...), after
/// six the email is locked out for an hour; the right password is refused while throttled, works after the
/// time-out, and a success forgets the failures. An email without an account gets exactly the same answers.
#[tokio::test]
async fn sign_ins_slow_down_then_lock_out_per_email_and_recover_after_the_time_out() -> anyhow::Result<()> {
    let env = vec![
        ("password", "LOGIN_THROTTLE_AFTER_FAILURES", "3".to_owned()),
        ("password", "LOGIN_THROTTLE_FIRST_DELAY_MS", "30000".to_owned()),
        ("password", "LOGIN_THROTTLE_MAX_DELAY_SECS", "600".to_owned()),
        ("password", "LOGIN_LOCKOUT_AFTER_FAILURES", "6".to_owned()),
        ("password", "LOGIN_LOCKOUT_SECS", "3600".to_owned()),
    ];
    let stack = started(Options { env, ..Options::default() }).await?;
    let (account, nobody) = (unique_email("guessed"), unique_email("nobody"));
    verified_account(&stack, &account).await?;
    let wrong = "a wrong guess at the passphrase";

    let mut transcripts = Vec::new();
    for email in [&account, &nobody] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(attempt(&stack, email, wrong).await?);
        }
        seen.push(attempt(&stack, email, PASSWORD).await?); // throttled: not even the right one is checked
        time_passes(&stack, 31).await?;
        seen.push(attempt(&stack, email, wrong).await?); // the fourth failure
        seen.push(attempt(&stack, email, wrong).await?); // must wait 60 s now
        time_passes(&stack, 61).await?;
        seen.push(attempt(&stack, email, wrong).await?); // the fifth
        time_passes(&stack, 121).await?;
        seen.push(attempt(&stack, email, wrong).await?); // the sixth: locked out from here
        seen.push(attempt(&stack, email, PASSWORD).await?);
        time_passes(&stack, 601).await?;
        seen.push(attempt(&stack, email, PASSWORD).await?); // still locked: the lockout is an hour
        transcripts.push(seen);
    }

    let statuses: Vec<u16> = transcripts[0].iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [401, 401, 401, 429, 401, 429, 401, 401, 429, 429]);
    let retries: Vec<u64> = transcripts[0].iter().filter_map(|(_, retry)| *retry).collect();
    assert!((25..=30).contains(&retries[0]) && (55..=60).contains(&retries[1]), "{retries:?}");
    assert!((3000..=3600).contains(&retries[2]), "{retries:?}");
    let unknown: Vec<u16> = transcripts[1].iter().map(|(status, _)| *status).collect();
    assert_eq!(unknown, statuses, "an email without an account is throttled differently");

    time_passes(&stack, 3601).await?;
    assert_eq!(attempt(&stack, &account, PASSWORD).await?.0, 201, "the owner is locked out for good");
    assert_eq!(attempt(&stack, &account, wrong).await?.0, 401, "a success did not forget the failures");
    Ok(())
}

/// Signs in once as `client` (behind a trusted proxy) and returns the status and, for a 429, its `Retry-After`.
async fn attempt_from(stack: &Stack, client: &str, email: &str, password: &str) -> anyhow::Result<(u16, Option<u64>)> {
    let request = stack.http().post(format!("{}/v1/sessions", stack.api_url()));
    let request = request.header("x-forwarded-for", client).json(&json!({ "email": email, "password": password }));
    let response = request.send().await?;
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    Ok((response.status().as_u16(), retry))
}

/// Signs in once as `client` (behind a trusted proxy), presenting `device` if given: the status and, for a 201, the
/// device token to present next time.
async fn sign_in_on_device(
    stack: &Stack,
    client: &str,
    email: &str,
    password: &str,
    device: Option<&str>,
) -> anyhow::Result<(u16, Option<String>)> {
    let request = stack.http().post(format!("{}/v1/sessions", stack.api_url())).header("x-forwarded-for", client);
    let body = json!({ "email": email, "password": password, "device_token": device });
    let response = request.json(&body).send().await?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await?;
    Ok((status, answer["device_token"].as_str().map(str::to_owned)))
}

fn throttle_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str, String)> {
    let mut env = vec![
        ("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()),
        ("password", "LOGIN_THROTTLE_AFTER_FAILURES", "3".to_owned()),
        ("password", "LOGIN_THROTTLE_FIRST_DELAY_MS", "30000".to_owned()),
        ("password", "LOGIN_LOCKOUT_AFTER_FAILURES", "10".to_owned()),
    ];
    env.extend(extra.iter().map(|(name, value)| ("password", *name, (*value).to_owned())));
    env
}

/// Attacks: (1) locking the owner out by failing on purpose: a guesser's failures slowed every client of the email,
/// the owner's right password included, and one more failure an hour kept it so. (2) Learning when the owner signs
/// in: a success forgot every client's failures, so a guesser whose next tries were no longer slowed knew the
/// account exists and was just used. Now failures count per email and client: the guesser slows only themselves,
/// and the owner's success forgets only the owner's. Guessing from many clients is still bounded: the email's
/// failures from every client lock it out, except for the devices the owner has signed in from. Before: the owner
/// got 429, and the account's probe answered `[401, 401]` against the unknown address's `[401, 429]`.
#[tokio::test]
async fn a_guesser_elsewhere_neither_locks_the_owner_out_nor_learns_when_they_sign_in() -> anyhow::Result<()> {
    let stack = started(Options { env: throttle_env(&[]), ..Options::default() }).await?;
    let (account, nobody) = (unique_email("owner"), unique_email("nobody"));
    verified_account(&stack, &account).await?;
    let (home, travelling, guesser) = ("198.51.100.1", "198.51.100.2", "203.0.113.1");
    let wrong = "a wrong guess at the passphrase";
    let (status, device) = sign_in_on_device(&stack, home, &account, PASSWORD, None).await?;
    assert_eq!(status, 201);

    let mut guesses = Vec::new();
    for email in [&account, &nobody] {
        for _ in 0..4 {
            guesses.push(attempt_from(&stack, guesser, email, wrong).await?.0);
        }
    }
    let owner_meanwhile = attempt_from(&stack, travelling, &account, PASSWORD).await?.0;
    time_passes(&stack, 31).await?;
    let owner_later = attempt_from(&stack, travelling, &account, PASSWORD).await?.0;
    let mut probes = Vec::new();
    for email in [&account, &nobody] {
        let first = attempt_from(&stack, guesser, email, wrong).await?.0;
        probes.push([first, attempt_from(&stack, guesser, email, wrong).await?.0]);
    }
    // Many clients, two failures each (under their own slow-down): the email's failures reach the lockout.
    for i in 0..3 {
        for _ in 0..2 {
            attempt_from(&stack, &format!("203.0.113.{}", 10 + i), &account, wrong).await?;
        }
    }
    let stranger = attempt_from(&stack, "192.0.2.77", &account, PASSWORD).await?;
    let owner_at_home = sign_in_on_device(&stack, home, &account, PASSWORD, device.as_deref()).await?.0;

    assert_eq!(guesses, [401, 401, 401, 429, 401, 401, 401, 429], "the guesser was not slowed down");
    assert_eq!(probes[0], probes[1], "the guesser's probe tells that the owner signed in");
    assert_eq!(probes[1], [401, 429]);
    assert_eq!(owner_meanwhile, 201, "a guesser elsewhere locked the owner out");
    assert_eq!(owner_later, 201);
    assert_eq!(stranger.0, 429, "guessing from many clients is not bounded per email");
    assert!(stranger.1.is_some_and(|retry| (3000..=3600).contains(&retry)), "{stranger:?}");
    assert_eq!(owner_at_home, 201, "the owner's own device was locked out with the strangers");
    Ok(())
}

/// Attack: guessing from the owner's network (an office, a carrier's NAT or shared address) once the email is
/// locked out. The network the owner signed in from was trusted: held only to its own count, it kept guessing while
/// every other client was locked out. Now trust is a device's: the sign-in answers a device token, and only a
/// sign-in presenting it to that account escapes the lockout (held to that device's own failures); a token the
/// client chose (copied from an example, say) is never the one trusted, and one account's device is nobody else's.
/// Before: the guesser on the owner's network was checked (401) after the lockout.
#[tokio::test]
async fn a_guesser_on_the_owners_network_is_locked_out_with_the_rest_and_the_owners_device_is_not() -> anyhow::Result<()>
{
    let stack = started(Options { env: throttle_env(&[]), ..Options::default() }).await?;
    let (account, other_account) = (unique_email("shared-nat"), unique_email("elsewhere"));
    verified_account(&stack, &account).await?;
    verified_account(&stack, &other_account).await?;
    let (nat, wrong) = ("198.51.100.9", "a wrong guess at the passphrase");
    // The owner's client sends a token it made up (or copied); the answer is a fresh one, which it keeps.
    let chosen = "A".repeat(43);
    let (status, device) = sign_in_on_device(&stack, nat, &account, PASSWORD, Some(&chosen)).await?;
    assert_eq!(status, 201);
    let device = device.ok_or_else(|| anyhow::anyhow!("no device token"))?;
    let other_device = sign_in_on_device(&stack, "192.0.2.50", &other_account, PASSWORD, None).await?.1;
    // A token the service issued stays its device's on another account (one browser, two accounts).
    let shared = sign_in_on_device(&stack, "192.0.2.50", &other_account, PASSWORD, Some(&device)).await?.1;
    // Guessers elsewhere, two failures each (under their own slow-down), and two from the owner's network: the
    // email's failures reach the lockout (ten).
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", nat] {
        for _ in 0..2 {
            attempt_from(&stack, client, &account, wrong).await?;
        }
    }

    let guesser_on_the_nat = attempt_from(&stack, nat, &account, wrong).await?.0;
    let chosen_again = sign_in_on_device(&stack, nat, &account, wrong, Some(&chosen)).await?.0;
    let another_accounts_device = sign_in_on_device(&stack, nat, &account, wrong, other_device.as_deref()).await?.0;
    let owner_without_device = attempt_from(&stack, nat, &account, PASSWORD).await?.0;
    let owner_elsewhere = sign_in_on_device(&stack, "192.0.2.5", &account, PASSWORD, Some(&device)).await?;

    assert_ne!(device, chosen, "the token the client chose became the trusted one");
    assert_eq!(shared.as_deref(), Some(device.as_str()), "a device lost its token signing in to another account");
    assert_eq!(guesser_on_the_nat, 429, "a guesser sharing the owner's network was not locked out");
    assert_eq!(chosen_again, 429, "the token the owner's client chose escaped the lockout");
    assert_eq!(another_accounts_device, 429, "another account's device escaped this account's lockout");
    assert_eq!(owner_without_device, 429, "the network, not the device, was trusted");
    assert_eq!(owner_elsewhere, (201, Some(device)), "the owner's device was locked out, or given another token");
    Ok(())
}

/// A device's trust ends `LOGIN_TRUSTED_CLIENT_DAYS` after its last sign-in, and at once when the password changes
/// (whoever knew the old one trusts no device with it, but the device of the session that changed it): then it is
/// locked out with everyone else.
#[tokio::test]
async fn a_devices_trust_ends_with_its_days_and_with_the_password() -> anyhow::Result<()> {
    let env = throttle_env(&[("LOGIN_TRUSTED_CLIENT_DAYS", "1")]);
    let stack = started(Options { env, ..Options::default() }).await?;
    let (aged, changed) = (unique_email("aged"), unique_email("changed"));
    let wrong = "a wrong guess at the passphrase";
    let mut devices = Vec::new();
    for email in [&aged, &changed] {
        verified_account(&stack, email).await?;
        let (status, device) = sign_in_on_device(&stack, "198.51.100.7", email, PASSWORD, None).await?;
        anyhow::ensure!(status == 201, "sign-in answered {status}");
        devices.push(device.unwrap_or_default());
    }
    // Two days pass for the first account's device; the second account's owner changes the password.
    let aged_by = "UPDATE trusted_devices SET signed_in_at = now() - interval '2 days' \
                   WHERE device_hash = sha256(convert_to($1, 'UTF8'))";
    let aged_rows = sqlx::query(aged_by).bind(&devices[0]).execute(&mut sessions(&stack).await?).await?;
    assert_eq!(aged_rows.rows_affected(), 1, "the first device's trust");
    let url = format!("{}/v1/sessions", stack.api_url());
    let body = json!({ "email": changed, "password": PASSWORD });
    let opened: Value = stack.http().post(url).json(&body).send().await?.json().await?;
    let (session, changers_device) = (&opened["token"], opened["device_token"].as_str().unwrap_or_default());
    let session = session.as_str().unwrap_or_default();
    let new_password = "a brand new passphrase for this account";
    let body = json!({ "current_password": PASSWORD, "new_password": new_password });
    let url = format!("{}/v1/me/password", stack.api_url());
    let put = stack.http().put(url).bearer_auth(session).json(&body).send().await?.status();
    assert_eq!(put, 204, "the password change");
    for (i, email) in [&aged, &changed].into_iter().enumerate() {
        for client in 0..5 {
            for _ in 0..2 {
                attempt_from(&stack, &format!("203.0.113.{}", 20 * i + client), email, wrong).await?;
            }
        }
    }

    let aged_device = sign_in_on_device(&stack, "192.0.2.5", &aged, PASSWORD, Some(&devices[0])).await?.0;
    let changed_device = sign_in_on_device(&stack, "192.0.2.5", &changed, new_password, Some(&devices[1])).await?.0;
    let changers = sign_in_on_device(&stack, "192.0.2.5", &changed, new_password, Some(changers_device)).await?.0;

    assert_eq!(aged_device, 429, "a device trusted two days ago (for one day) escaped the lockout");
    assert_eq!(changed_device, 429, "a device trusted with the old password escaped the lockout");
    assert_eq!(changers, 201, "the device the password was changed on was locked out with the guessers");
    Ok(())
}

/// Attack: credential stuffing, one guess per account from one client, under every per-email limit. A client that
/// failed on `LOGIN_CLIENT_ACCOUNTS_PER_HOUR` emails within the hour may try no other (an IPv6 client is its /48,
/// whatever /64 in it each guess comes from);
/// other clients are unaffected, and so is an owner who signed in from the same network before (an office, a
/// carrier's NAT) on the device they sign in from. Before: every guess was checked (401).
#[tokio::test]
async fn one_client_guessing_across_many_accounts_is_stopped() -> anyhow::Result<()> {
    let env = throttle_env(&[("LOGIN_CLIENT_ACCOUNTS_PER_HOUR", "3")]);
    let stack = started(Options { env, ..Options::default() }).await?;
    let emails: Vec<String> = (0..5).map(|i| unique_email(&format!("stuffed{i}"))).collect();
    let wrong = "password from a leaked list";
    let stuffer = ["2001:db8:1:2::1", "2001:db8:1:3::2", "2001:db8:1:ff00::3", "2001:db8:1:4::9"];
    let neighbour = unique_email("neighbour");
    verified_account(&stack, &neighbour).await?;
    let (status, device) = sign_in_on_device(&stack, "2001:db8:1:2::77", &neighbour, PASSWORD, None).await?;
    assert_eq!(status, 201);

    let mut answers = Vec::new();
    for (email, client) in emails.iter().zip(stuffer) {
        answers.push(attempt_from(&stack, client, email, wrong).await?);
    }
    let again = attempt_from(&stack, stuffer[0], &emails[0], wrong).await?.0;
    let other = attempt_from(&stack, "2001:db8:2::1", &emails[4], wrong).await?.0;
    let neighbour_again =
        sign_in_on_device(&stack, "2001:db8:1:2::78", &neighbour, PASSWORD, device.as_deref()).await?.0;
    // A burst at once: the checks and the counts take turns, so no guess slips past the limit.
    let burst: Vec<String> = (0..8).map(|i| unique_email(&format!("burst{i}"))).collect();
    let guesses = burst.iter().map(|email| attempt_from(&stack, "2001:db8:3::1", email, wrong));
    let burst: Vec<u16> = futures_util::future::try_join_all(guesses).await?.into_iter().map(|(s, _)| s).collect();

    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [401, 401, 401, 429], "a fourth account was guessed at from the same /48");
    assert!(answers[3].1.is_some_and(|retry| (3000..=3600).contains(&retry)), "{answers:?}");
    assert_eq!(again, 401, "an email the client already failed on falls under its own limits only");
    assert_eq!(other, 401, "another client was stopped");
    assert_eq!(neighbour_again, 201, "an owner who signs in from that network was stopped with the stuffer");
    assert_eq!(burst.iter().filter(|s| **s == 401).count(), 3, "a burst slipped past the limit: {burst:?}");
    assert!(burst.iter().all(|s| [401, 429].contains(s)), "{burst:?}");
    Ok(())
}

/// Attack: keep password's signup hashing full (from anywhere: its other callers), so every signup is refused for
/// capacity with `Retry-After: 1`. A client that retried as told spent its signup budget on those 503s and met a
/// 429 once the overload was over; a signup refused for capacity now counts against nothing.
#[tokio::test]
async fn signups_refused_for_capacity_do_not_spend_the_clients_budget() -> anyhow::Result<()> {
    let env = vec![
        ("password", "HASHING_THREADS", "1".to_owned()),
        ("password", "HASHING_QUEUE_LIMIT", "1".to_owned()),
        ("signup-api", "RATE_LIMIT_SIGNUPS", "6/600".to_owned()),
        ("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()),
    ];
    let stack = started(Options { env, ..Options::default() }).await?;
    let (busy, done) = (AtomicUsize::new(0), AtomicBool::new(false));
    // password's other callers: hashes back to back, more than it takes at once.
    let filler = || async {
        let mut passwords = stack.passwords().await?;
        while !done.load(Ordering::SeqCst) {
            let request = proto::password::v1::StoreAttemptCredentialRequest {
                signup_id: uuid::Uuid::now_v7().to_string(),
                email_hash: vec![7; 32],
                password: PASSWORD.to_owned(),
            };
            if passwords.store_attempt_credential(request).await.is_err() {
                busy.fetch_add(1, Ordering::SeqCst);
            }
        }
        anyhow::Ok(())
    };
    let signup = |email: String| {
        let request =
            stack.http().post(format!("{}/v1/signups", stack.api_url())).header("x-forwarded-for", "198.51.100.30");
        async move {
            let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
            anyhow::Ok(request.json(&body).send().await?.status().as_u16())
        }
    };
    let client = async {
        e2e::poll::counted(&busy, 10, DELIVERY_TIMEOUT, "calls password refused for capacity").await?;
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(signup(unique_email("retrying")).await?);
        }
        done.store(true, Ordering::SeqCst);
        anyhow::Ok(statuses)
    };
    let (filled, statuses) = tokio::join!(futures_util::future::try_join_all((0..6).map(|_| filler())), client);
    filled?;
    // One that found password with room between two of the others' hashes is a signup like any other (202).
    let statuses = statuses?;
    assert!(!statuses.contains(&429), "signups refused for capacity were counted against the client: {statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 503).count() >= 8, "password was not full: {statuses:?}");
    // Overload over: the client's budget is whole (its next signup gets through once password is probed again).
    eventually(DELIVERY_TIMEOUT, || async {
        let status = signup(unique_email("after")).await?;
        anyhow::ensure!(status == 202, "answered {status}");
        Ok(())
    })
    .await
}

/// Attack: one client hammering an endpoint. It gets its budget, then 429s with the standard headers; another
/// client is unaffected; `X-Forwarded-For` picks the client only when the peer is a trusted proxy, and only from
/// what that proxy wrote (attack: varying the left of the header behind a proxy that writes ports).
#[tokio::test]
async fn a_client_over_its_budget_gets_429s_and_other_clients_do_not() -> anyhow::Result<()> {
    let env = vec![
        ("signup-api", "RATE_LIMIT_READS", "3/60".to_owned()),
        ("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()),
    ];
    let stack = started(Options { env, ..Options::default() }).await?;
    let read = |api: String, client: &'static str| {
        let request =
            stack.http().get(format!("{api}/v1/me")).header("x-forwarded-for", format!("{client}, 127.0.0.1"));
        async move { anyhow::Ok(request.send().await?) }
    };

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(read(stack.api_url(), "198.51.100.7").await?.status().as_u16());
    }
    let limited = read(stack.api_url(), "198.51.100.7").await?;
    let other = read(stack.api_url(), "198.51.100.8").await?;

    assert_eq!(statuses, [401, 401, 401, 429], "the budget is three reads a minute");
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
    assert_eq!(limited.headers()["ratelimit-policy"], "\"reads\";q=3;w=60");
    assert!(limited.headers()["ratelimit"].to_str()?.starts_with("\"reads\";r=0;t="));
    let retry: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.json::<Value>().await?["type"], "/problems/rate-limited");
    assert_eq!(other.status(), 401, "another client was limited");
    assert_eq!(other.headers()["ratelimit"].to_str()?, "\"reads\";r=2;t=20");

    // Behind a proxy that appends the client with its port, the left of the header is still the client's word:
    // varying it buys no fresh budget. Before, the entry with a port was skipped and the client's own word counted.
    let mut spoofed = Vec::new();
    for i in 0..4 {
        let request = stack.http().get(format!("{}/v1/me", stack.api_url()));
        let request = request.header("x-forwarded-for", format!("203.0.113.{i}, 198.51.100.9:40000"));
        spoofed.push(request.send().await?.status().as_u16());
    }
    assert_eq!(spoofed, [401, 401, 401, 429], "varying the left of X-Forwarded-For bought a fresh budget");

    // Nor do bytes that are not text on the left of the line the proxy appends to: they used to spoil the whole
    // line, the proxy's entry with it, and make the proxy the client (a fresh budget per proxy).
    let mut unreadable = Vec::new();
    for left in [&b"198.51.100.10"[..], b"198.51.100.10", b"198.51.100.10", b"\xff"] {
        let line = reqwest::header::HeaderValue::from_bytes(&[left, b", 198.51.100.10"].concat())?;
        let request = stack.http().get(format!("{}/v1/me", stack.api_url())).header("x-forwarded-for", line);
        unreadable.push(request.send().await?.status().as_u16());
    }
    assert_eq!(unreadable, [401, 401, 401, 429], "unreadable bytes in X-Forwarded-For bought a fresh budget");

    // The same API without trusted proxies: the header is the client's word, and every request counts against the
    // peer, whatever it claims.
    let mut env = stack.member("signup-api").env.clone();
    env.retain(|(name, _)| !["PORT", "METRICS_PORT", "TRUSTED_PROXIES"].contains(&name.as_str()));
    env.extend([var("PORT", 0), var("METRICS_PORT", 0)]);
    let mut untrusting = ServiceProcess::serve("signup-api", &env).await?;
    untrusting.process.wait_ready(Probe::Http(untrusting.ops_port), READY_TIMEOUT).await?;
    let api = format!("http://127.0.0.1:{}", untrusting.port);
    let mut statuses = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        statuses.push(read(api.clone(), client).await?.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429], "X-Forwarded-For was believed from an untrusted peer");
    Ok(())
}

/// Attack: whoever holds an IPv6 /48 (a tunnel broker gives them away) signs up from one /64 after another, each
/// a fresh client with a fresh budget: 65,536 budgets of hashing, enough to fill password for everyone. The /64s of
/// one /48 now share `RATE_LIMIT_IPV6_48_CLIENTS` (16) clients' budgets. Before, the seventeenth /64 got a 202.
#[tokio::test]
async fn the_64s_of_one_ipv6_48_share_a_bounded_signup_budget() -> anyhow::Result<()> {
    let env = vec![
        ("signup-api", "RATE_LIMIT_SIGNUPS", "1/600".to_owned()),
        ("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()),
    ];
    let stack = started(Options { env, ..Options::default() }).await?;
    let signup = |client: String| {
        let request = stack.http().post(format!("{}/v1/signups", stack.api_url())).header("x-forwarded-for", client);
        let body = json!({ "email": unique_email("per-48"), "password": PASSWORD, "display_name": "Ada" });
        async move { anyhow::Ok(request.json(&body).send().await?) }
    };

    let mut statuses = Vec::new();
    for subnet in 1..=16 {
        statuses.push(signup(format!("2001:db8:48:{subnet:x}::1")).await?.status().as_u16());
    }
    let seventeenth = signup("2001:db8:48:11::1".to_owned()).await?;
    let elsewhere = signup("2001:db8:49:1::1".to_owned()).await?.status();

    assert_eq!(statuses, [202; 16], "each /64 has a budget of one signup, and the /48 sixteen");
    assert_eq!(seventeenth.status(), 429, "the seventeenth /64 of one /48 got a fresh budget");
    assert_eq!(seventeenth.headers()["ratelimit-policy"], "\"signups-ipv6-48\";q=16;w=600");
    assert!(seventeenth.headers().contains_key("retry-after"));
    let problem: Value = seventeenth.json().await?;
    assert_eq!(problem["type"], "/problems/rate-limited");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("/48"), "{problem}");
    assert_eq!(elsewhere, 202, "another /48 was limited");
    Ok(())
}

/// Attack: another site's page makes its visitors' browsers post the API's own reset form (a cross-site form post
/// needs no CORS), so the victim's mailbox is mailed from thousands of addresses, each within its own budget. A
/// browser's cross-site post is refused before anything is done; the API's own page and a non-browser client are
/// served. Before, the forged post was accepted (202) and queued a mail.
#[tokio::test]
async fn another_sites_form_cannot_make_its_visitors_ask_for_password_resets() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("forged");
    verified_account(&stack, &email).await?;
    let mut mails = stack.database("email-verification").connect().await?;
    let mut queued = async || -> anyhow::Result<i64> {
        let count = "SELECT count(*) FROM mails WHERE recipient = $1";
        Ok(sqlx::query_scalar(count).bind(&email).fetch_one(&mut mails).await?)
    };
    let form = |site: Option<&'static str>, origin: Option<&'static str>| {
        let mut request = stack.http().post(format!("{}/v1/password-resets", stack.api_url()));
        request = request.header("content-type", "application/x-www-form-urlencoded");
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.body(format!("email={}", email.replace('+', "%2B").replace('@', "%40"))).send()
    };

    let forged = form(Some("cross-site"), Some("https://evil.example")).await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.headers()["content-type"], "application/problem+json");
    assert_eq!(forged.json::<Value>().await?["type"], "/problems/cross-site-request");
    let old_browser = form(None, Some("https://evil.example")).await?;
    assert_eq!(old_browser.status(), 403, "a browser that sends only Origin was believed");
    assert_eq!(queued().await?, 1, "a forged post queued a mail (only the verification should be there)");

    let own_page = form(Some("same-origin"), None).await?;
    assert_eq!(own_page.status(), 202, "the API's own page was refused");
    assert_eq!(queued().await?, 2);
    let curl = stack.http().post(format!("{}/v1/password-resets", stack.api_url())).json(&json!({ "email": email }));
    assert_eq!(curl.send().await?.status(), 202, "a client that is not a browser was refused");
    assert_eq!(queued().await?, 3);
    Ok(())
}

/// The same refusal on every route that changes something: another site's page can post a form or send a
/// `fetch` with the visitor's cookies to none of them (no route takes cookies today, but a form post needs no
/// CORS). Each is refused with the same 403 problem.
#[tokio::test]
async fn no_route_that_changes_something_takes_another_sites_request() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let routes = [
        ("POST", "/v1/signups"),
        ("POST", "/v1/email-verifications"),
        ("POST", "/v1/email-verifications/confirm"),
        ("POST", "/v1/password-resets"),
        ("POST", "/v1/password-resets/confirm"),
        ("POST", "/v1/sessions"),
        ("DELETE", "/v1/sessions/current"),
        ("PATCH", "/v1/me"),
        ("DELETE", "/v1/me"),
        ("PUT", "/v1/me/password"),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let request = stack.http().request(method.clone(), format!("{}{path}", stack.api_url()));
        let request = request.header("sec-fetch-site", "cross-site").header("origin", "https://evil.example");
        let response = request.header("content-type", "application/x-www-form-urlencoded").body("a=b").send().await?;
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_eq!(response.json::<Value>().await?["type"], "/problems/cross-site-request", "{method} {path}");
    }
    Ok(())
}

/// Attack: a small request for a large answer. A body of thousands of made-up fields got a 422 naming every one
/// (about 800 KB back for 100 KB sent), and one long made-up name came back whole. A 422 now names ten, each cut
/// short, and counts the rest; the JSON route and the form route alike.
#[tokio::test]
async fn a_body_of_made_up_fields_gets_a_short_answer() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let mut body = serde_json::Map::new();
    for i in 0..10_000 {
        body.insert(format!("k{i:05}"), json!(0));
    }
    body.insert("x".repeat(1000), json!(0));
    let form: String = (0..5_000).map(|i| format!("k{i:05}=0&")).collect();
    let requests = [
        stack.http().post(format!("{}/v1/signups", stack.api_url())).json(&body),
        stack.http().post(format!("{}/v1/sessions", stack.api_url())).json(&body),
        stack
            .http()
            .post(format!("{}/v1/password-resets", stack.api_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    ];
    for request in requests {
        let response = request.send().await?;
        assert_eq!(response.status(), 422);
        let answer = response.bytes().await?;
        assert!(answer.len() < 4096, "a {} byte answer", answer.len());
        let problem: Value = serde_json::from_slice(&answer)?;
        let unknown: Vec<&Value> =
            problem["errors"].as_array().into_iter().flatten().filter(|e| e["code"] == "unknown_field").collect();
        assert_eq!(unknown.len(), 11, "ten named and one counting the rest: {problem}");
        assert!(unknown[10]["detail"].as_str().unwrap_or_default().contains(" more fields"), "{problem}");
    }
    // A thousand contacts that are not addresses, two bytes each: each was named.
    let body = json!({ "email": unique_email("contacts"), "password": PASSWORD, "display_name": "Ada",
                       "contacts": vec![0; 1000] });
    let response = stack.signup(&body, None).await?;
    assert_eq!(response.status(), 422);
    let answer = response.bytes().await?;
    assert!(answer.len() < 4096, "a {} byte answer to bad contacts", answer.len());
    let problem: Value = serde_json::from_slice(&answer)?;
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(11), "{problem}");
    Ok(())
}

/// Attack: a flood of signups meant to starve sign-ins (and so lock everyone out). Signup hashing saturates and
/// refuses at once; sign-ins have a lane of their own and are served meanwhile. A refused signup wrote nothing.
#[tokio::test]
async fn a_signup_flood_leaves_sign_ins_served() -> anyhow::Result<()> {
    let env =
        vec![("password", "HASHING_THREADS", "1".to_owned()), ("password", "HASHING_QUEUE_LIMIT", "2".to_owned())];
    let stack = Arc::new(started(Options { env, ..Options::default() }).await?);
    let email = unique_email("signs-in");
    verified_account(&stack, &email).await?;
    let (stop, refused, accepted) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (stack, stop, refused, accepted) = (stack.clone(), stop.clone(), refused.clone(), accepted.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({ "email": unique_email("flood"), "password": PASSWORD, "display_name": "F" });
                    match stack.signup(&body, None).await.map(|r| r.status().as_u16()) {
                        Ok(503) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(202) => accepted.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(20), || async {
        anyhow::ensure!(refused.load(Ordering::Relaxed) >= 5, "signup hashing not saturated yet");
        Ok(())
    })
    .await?;

    let signed_in = stack.sign_in(&email, PASSWORD).await?.status().as_u16();
    let refused_during = refused.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await?;
    }

    assert_eq!(signed_in, 201, "a sign-in was starved by the signup flood");
    assert!(refused_during >= 5, "the flood was not refusing signups while the sign-in ran");
    let mut users = stack.database("user-metadata").connect().await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;
    assert_eq!(rows as usize, accepted.load(Ordering::Relaxed) + 1, "a refused signup wrote a user row");
    Ok(())
}

/// The sum of the samples of `metric` (with `label` in their labels) that `port`'s `/metrics` shows.
async fn metric(port: u16, metric: &str, label: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?.text().await?;
    let samples = text.lines().filter(|l| l.starts_with(metric) && l.contains(label));
    Ok(samples.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum())
}

/// A stack whose password hashes one signup at a time (`iterations` passes each) with one waiting place, so two
/// signups fill it, and whose signup-api waits `deadline_ms` for an upstream; with signup-api's and password's
/// operational ports.
async fn two_signups_fill_password(iterations: u32, deadline_ms: u32) -> anyhow::Result<(Arc<Stack>, u16, u16)> {
    let password = |name: &'static str, value: String| ("password", name, value);
    let env = vec![
        password("HASHING_THREADS", "1".to_owned()),
        password("HASHING_QUEUE_LIMIT", "1".to_owned()),
        password("ARGON2_ITERATIONS", iterations.to_string()),
        ("signup-api", "GRPC_DEADLINE_MS", deadline_ms.to_string()),
    ];
    let stack = Arc::new(started(Options { env, ..Options::default() }).await?);
    let ports = (stack.member("signup-api").ops_port, stack.member("password").ops_port);
    Ok((stack, ports.0, ports.1))
}

/// Attack: a signup flood meant to burn CPU. Once password has refused one signup for capacity, signup-api refuses
/// the excess itself, before reading the body: the flood's requests (even malformed ones) get a 503 and never reach
/// password, the strength check or any database.
#[tokio::test]
async fn a_signup_flood_is_refused_before_its_body_is_read() -> anyhow::Result<()> {
    // A hash of about half a second: two signups fill password. The second waits for the first: on a busy machine
    // longer than the default gRPC deadline, which would answer it 503 (deadlines have tests of their own).
    let (stack, api, password) = two_signups_fill_password(50, 60_000).await?;
    let filling: Vec<_> = (0..2)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let body = json!({ "email": unique_email("fill"), "password": PASSWORD, "display_name": "F" });
                stack.signup(&body, None).await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    eventually(Duration::from_secs(10), || async {
        let held = metric(password, "password_hashing_in_progress", "kind=\"signup\"").await?;
        anyhow::ensure!(held >= 2.0, "password holds {held} signups");
        Ok(())
    })
    .await?;
    let body = json!({ "email": unique_email("third"), "password": PASSWORD, "display_name": "F" });
    let third = stack.signup(&body, None).await?.status().as_u16();

    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(stack.signup(&json!({ "email": "not an address" }), None).await?.status().as_u16());
    }
    let shed = metric(api, "signups_shed_total", "").await?;
    let refused_by_password = metric(password, "password_hashing_rejected_total", "kind=\"signup\"").await?;
    let filled: Vec<u16> = futures_util::future::try_join_all(filling).await?.into_iter().collect::<Result<_, _>>()?;

    assert_eq!(third, 503, "password did not refuse the third signup");
    assert_eq!(flood, vec![503; 20], "a flooding request was read (422) or served");
    assert_eq!((shed, refused_by_password), (20.0, 1.0), "the flood reached password");
    assert_eq!(filled, vec![202, 202], "the signups password held were not served");
    Ok(())
}

/// Attack: once password has refused a signup for capacity, signup-api admits only as many signups at a time as
/// password took. Requests that sent their head and then trickled their body held those places for as long as they
/// trickled, and every other signup was refused. A place is now taken once the body is here, and a body must arrive
/// within `REQUEST_BODY_TIMEOUT_MS` (then 408).
#[tokio::test]
async fn signups_whose_bodies_trickle_hold_no_place_and_end_at_the_body_deadline() -> anyhow::Result<()> {
    let env = [
        ("password", "HASHING_THREADS", "1"),
        ("password", "HASHING_QUEUE_LIMIT", "1"),
        ("password", "ARGON2_ITERATIONS", "50"),
        ("signup-api", "GRPC_DEADLINE_MS", "60000"),
        ("signup-api", "REQUEST_BODY_TIMEOUT_MS", "5000"),
    ];
    let env = env.into_iter().map(|(service, name, value)| (service, name, value.to_owned())).collect();
    let stack = Arc::new(started(Options { env, ..Options::default() }).await?);
    // password holds two signups: four at once teach signup-api a limit below five.
    let teaching = (0..4).map(|_| {
        let stack = stack.clone();
        let body = json!({ "email": unique_email("teach"), "password": PASSWORD, "display_name": "T" });
        tokio::spawn(async move { stack.signup(&body, None).await.map(|r| r.status().as_u16()) })
    });
    let taught: Vec<u16> = futures_util::future::try_join_all(teaching).await?.into_iter().collect::<Result<_, _>>()?;
    assert!(taught.contains(&503), "password refused none of {taught:?}: nothing was learned");

    let port = stack.member("signup-api").port;
    let mut trickles = Vec::new();
    for _ in 0..5 {
        trickles.push(trickle(port).await?);
    }
    // Each head has been read and its body is awaited: signup-api says `100 Continue` (or refuses it at once).
    let mut waiting = Vec::new();
    for stream in &mut trickles {
        waiting.push(status_line(stream).await?);
        use tokio::io::AsyncWriteExt as _;
        stream.write_all(b"{\"email\":").await?;
    }
    // A signup refused only for want of a place: an invalid body is 422 once admitted (nothing is hashed), 503 if not.
    let invalid = stack.signup(&json!({ "email": "not an address" }), None).await?.status().as_u16();
    let mut ended = Vec::new();
    for stream in &mut trickles {
        ended.push(status_line(stream).await.unwrap_or_else(|error| format!("{error:#}")));
    }

    assert_eq!(invalid, 422, "a signup was refused while bodies trickled (they were answered {waiting:?})");
    assert!(waiting.iter().all(|line| line.starts_with("HTTP/1.1 100")), "a trickle was not read: {waiting:?}");
    assert!(ended.iter().all(|line| line.starts_with("HTTP/1.1 408")), "a trickle outlived the deadline: {ended:?}");
    Ok(())
}

/// Attack: slowloris. Connections that send part of a request's head and then nothing were held open for as long
/// as the client liked (`axum::serve` gives hyper no timer, so its header timeout never ran): enough of them take
/// every file descriptor. Now a head must arrive within 10 s, and the connection is closed.
#[tokio::test]
async fn a_connection_whose_request_head_trickles_is_closed() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stack = started(Options::default()).await?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.member("signup-api").port)).await?;
    stream.write_all(b"POST /v1/signups HTTP/1.1\r\nHost: localhost\r\n").await?;

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;

    assert!(closed.is_ok(), "the connection is still open after 30 s");
    Ok(())
}

/// Attack: slowloris over HTTP/2 without TLS (h2c, which a client may open with the connection preface). The head
/// timeout bounds HTTP/1 only: a connection that sent the preface and part of a request's headers was held open for
/// as long as the client liked. The API now speaks HTTP/1.1 only and refuses the preface at once.
#[tokio::test]
async fn a_connection_that_trickles_an_http2_request_is_closed() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stack = started(Options::default()).await?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.member("signup-api").port)).await?;
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, then a HEADERS frame on stream 1 without END_HEADERS: more headers are to follow.
    frames.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    frames.extend([0, 0, 1, 0x1, 0, 0, 0, 0, 1, 0x82]);
    stream.write_all(&frames).await?;

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;

    assert!(closed.is_ok(), "the HTTP/2 connection is still open after 30 s");
    Ok(())
}

/// A signup whose head asks to go on (`Expect: 100-continue`), on its own connection.
async fn trickle(port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = "POST /v1/signups HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 200\r\nExpect: 100-continue\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

/// The status line of the next answer on `stream` (the rest of that answer is read and dropped).
async fn status_line(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    let mut buffer = [0; 1];
    // Byte by byte up to the end of the head, so nothing of a later answer is consumed.
    while !answer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer)).await??;
        anyhow::ensure!(read > 0, "the connection closed without an answer");
        answer.push(buffer[0]);
    }
    Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned())
}

/// A stack as [`two_signups_fill_password`] makes it, with password full of two signups signup-api gave up on and
/// its window closed: a hash of seconds and a one-second gRPC deadline, so the two filling signups are answered 503
/// long before password is done with them, and a third is refused by password with nothing in flight here.
async fn window_closed_by_others_work() -> anyhow::Result<(Arc<Stack>, u16, u16)> {
    let (stack, api, password) = two_signups_fill_password(400, 1000).await?;
    let signup = |name: &str| json!({ "email": unique_email(name), "password": PASSWORD, "display_name": "F" });
    let filling = [signup("fill"), signup("fill")].map(|body| {
        let stack = stack.clone();
        tokio::spawn(async move { stack.signup(&body, None).await.map(|r| r.status().as_u16()) })
    });
    let filled: Vec<u16> = futures_util::future::try_join_all(filling).await?.into_iter().collect::<Result<_, _>>()?;
    anyhow::ensure!(filled == [503, 503], "the filling signups were not given up at the deadline: {filled:?}");
    let held = metric(password, "password_hashing_in_progress", "kind=\"signup\"").await?;
    anyhow::ensure!(held == 2.0, "password no longer holds the signups given up on ({held})");
    let third = stack.signup(&signup("third"), None).await?.status();
    anyhow::ensure!(third == 503, "password did not refuse the third signup ({third})");
    Ok((stack, api, password))
}

/// Attack: a signup flood while password is full of signups this signup-api no longer holds (their callers gave
/// up at the gRPC deadline, or another replica sent them). Nothing is in flight here, so the learned limit alone
/// would let every flooding signup through to the strength check and to password, one refusal after another; the
/// closed window lets one probe per interval through and refuses the rest itself.
#[tokio::test]
async fn a_signup_flood_against_a_password_service_full_of_others_work_is_refused_here() -> anyhow::Result<()> {
    let (stack, api, password) = window_closed_by_others_work().await?;
    let signup = |name: &str| json!({ "email": unique_email(name), "password": PASSWORD, "display_name": "F" });
    let started_at = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(stack.signup(&signup("flood"), None).await?.status().as_u16());
    }
    let probes_due = 1.0 + (started_at.elapsed().as_millis() / PROBE_INTERVAL.as_millis()) as f64;
    let refused_by_password = metric(password, "password_hashing_rejected_total", "kind=\"signup\"").await?;
    let shed = metric(api, "signups_shed_total", "").await?;

    assert_eq!(flood, vec![503; 20], "a flooding signup was served");
    assert!(
        refused_by_password - 1.0 <= probes_due,
        "{refused_by_password} refusals by password: the flood got through"
    );
    assert!(shed >= 20.0 - probes_due, "signup-api refused only {shed} of the flood itself");
    Ok(())
}

/// Attack: keeping signups shut with invalid ones. While the window is closed, one signup per interval goes through
/// to probe password; an invalid signup (422) took that place without ever reaching password, so one per interval
/// kept every valid signup refused (503) after password had room again. A probe that never reached password is
/// now no probe: the next signup probes at once. On the code before, signup-api refused the valid signup right
/// after the invalid one itself, and it never reached password.
#[tokio::test]
async fn invalid_signups_do_not_keep_the_window_closed_once_password_has_room() -> anyhow::Result<()> {
    let (stack, api, password) = window_closed_by_others_work().await?;
    let signup = |name: &str| json!({ "email": unique_email(name), "password": PASSWORD, "display_name": "F" });
    eventually(Duration::from_secs(120), || async {
        let held = metric(password, "password_hashing_in_progress", "kind=\"signup\"").await?;
        anyhow::ensure!(held == 0.0, "password still holds {held} signups");
        Ok(())
    })
    .await?;

    // password has room; the probe is due. An invalid signup takes it, and a valid one follows at once (its hash
    // outlasts the deadline here, so it is answered 503 either way: what tells is whether signup-api refused it).
    let shed_before = metric(api, "signups_shed_total", "").await?;
    let invalid = stack.signup(&json!({ "email": "not an address" }), None).await?.status();
    stack.signup(&signup("valid"), None).await?;
    let shed = metric(api, "signups_shed_total", "").await? - shed_before;
    let hashed = metric(password, "password_hashing_in_progress", "kind=\"signup\"").await?;

    assert_eq!(invalid, 422, "the invalid signup was not admitted");
    assert_eq!(shed, 0.0, "signup-api refused the valid signup after an invalid one took the probe");
    assert_eq!(hashed, 1.0, "the valid signup did not reach password");
    Ok(())
}

/// With the window closed, how often signup-api lets one signup through to probe password (admission.rs).
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

#[tokio::test]
async fn operational_endpoints_are_served_off_the_public_port() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let api = stack.member("signup-api");

    for path in ["/readyz", "/livez", "/metrics"] {
        let public = reqwest::get(format!("http://127.0.0.1:{}{path}", api.port)).await?;
        let ops = reqwest::get(format!("http://127.0.0.1:{}{path}", api.ops_port)).await?;
        assert_eq!(public.status(), 404, "{path} is served on the public port");
        assert_eq!(ops.status(), 200, "{path} is not served on METRICS_PORT");
    }
    Ok(())
}

/// The values of `label` in the samples of `metric` that `port`'s `/metrics` shows.
async fn label_values(port: u16, metric: &str, label: &str) -> anyhow::Result<Vec<String>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?.text().await?;
    let pattern = format!("{label}=\"");
    let values =
        text.lines().filter(|l| l.starts_with(metric)).filter_map(|l| l.split(&pattern).nth(1)?.split('"').next());
    Ok(values.map(str::to_owned).collect())
}

/// Attack: requests under methods of the client's own naming, a new one each time. signup-api labelled its request
/// metrics with the method as sent, so each was a new time series kept for the life of the process (memory without
/// bound, and a `/metrics` page to match): on the code before, 40 requests left 40 `PROBE…` labels. A method that is
/// not HTTP's own is counted as `_OTHER`.
#[tokio::test]
async fn methods_of_the_clients_naming_add_no_metric_series() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let client = reqwest::Client::new();
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("PROBE{i}").as_bytes())?;
        let status = client.request(method, format!("{}/v1/signups", stack.api_url())).send().await?.status();
        assert_eq!(status, 405, "PROBE{i} answered {status}");
    }

    let methods = label_values(stack.member("signup-api").ops_port, "http_server_requests_total", "method").await?;
    assert!(!methods.iter().any(|m| m.starts_with("PROBE")), "the client's methods became labels: {methods:?}");
    assert!(methods.iter().any(|m| m == "_OTHER"), "the requests were not counted: {methods:?}");
    Ok(())
}

/// Attack: gRPC calls to paths of the caller's own naming (a new service or method each time), on a service's gRPC
/// port. Each such call's path became a time series of its own; on the code before, 40 calls left 40. A call that
/// the server does not implement is counted under `_OTHER`.
#[tokio::test]
async fn grpc_paths_of_the_callers_naming_add_no_metric_series() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let users = stack.member("user-metadata");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", users.port))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..40 {
        grpc.ready().await?;
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!("/probe{i}.Service/Method{i}"))?;
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let code =
            grpc.unary(tonic::Request::new(()), path, codec).await.map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        assert_eq!(code, tonic::Code::Unimplemented, "call {i}");
    }

    let services = label_values(users.ops_port, "grpc_server_handled_total", "grpc_service").await?;
    assert!(!services.iter().any(|s| s.starts_with("probe")), "the caller's paths became labels: {services:?}");
    assert!(services.iter().any(|s| s == "_OTHER"), "the calls were not counted: {services:?}");
    Ok(())
}

/// Every route counts against the budget of its kind, and only that one: with a budget of one request of every
/// kind, each route's second request from a fresh client is a 429 naming the route's kind. A route moved to another
/// kind (a confirm among the reads, a reset request in no budget) fails here; the other tests set one kind each.
#[tokio::test]
async fn every_route_counts_against_its_own_kind_of_budget() -> anyhow::Result<()> {
    let kinds =
        ["RATE_LIMIT_SIGNUPS", "RATE_LIMIT_RESENDS", "RATE_LIMIT_CONFIRMS", "RATE_LIMIT_SESSIONS", "RATE_LIMIT_READS"];
    let mut env: Vec<_> = kinds.map(|name| ("signup-api", name, "1/600".to_owned())).into();
    env.push(("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()));
    let stack = started(Options { env, ..Options::default() }).await?;
    let token = "A".repeat(43);
    let routes = [
        ("POST", "/v1/signups".to_owned(), "signups"),
        ("POST", "/v1/email-verifications".to_owned(), "resends"),
        ("GET", "/v1/password-resets".to_owned(), "resends"),
        ("POST", "/v1/password-resets".to_owned(), "resends"),
        ("GET", format!("/v1/email-verifications/confirm?token={token}"), "confirms"),
        ("POST", "/v1/email-verifications/confirm".to_owned(), "confirms"),
        ("GET", format!("/v1/password-resets/confirm?token={token}"), "confirms"),
        ("POST", "/v1/password-resets/confirm".to_owned(), "confirms"),
        ("POST", "/v1/sessions".to_owned(), "sessions"),
        ("PUT", "/v1/me/password".to_owned(), "sessions"),
        ("DELETE", "/v1/me".to_owned(), "sessions"),
        ("GET", "/v1/me".to_owned(), "reads"),
        ("PATCH", "/v1/me".to_owned(), "reads"),
        ("GET", "/v1/me/export".to_owned(), "reads"),
        ("GET", "/v1/me/friend-suggestions".to_owned(), "reads"),
        ("DELETE", "/v1/sessions/current".to_owned(), "reads"),
    ];
    for (i, (method, path, kind)) in routes.iter().enumerate() {
        let send = || {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let request = stack.http().request(method, format!("{}{path}", stack.api_url()));
            // A fresh client per route; what the body says does not matter to the budget.
            let request = request.header("x-forwarded-for", format!("198.51.100.{}", 100 + i)).bearer_auth("x");
            request.json(&json!({ "email": "nobody@example.com" })).send()
        };
        let first = send().await?;
        let second = send().await?;
        assert_ne!(first.status(), 429, "{method} {path}: the first request of its client was limited");
        assert_eq!(second.status(), 429, "{method} {path}: the second request within a budget of one");
        let policy = second.headers().get("ratelimit-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(policy, format!("\"{kind}\";q=1;w=600"), "{method} {path}");
    }
    Ok(())
}
