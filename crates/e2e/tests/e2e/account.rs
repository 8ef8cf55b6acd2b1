//! The rest of an account's life, through the real stack: leaving (`DELETE /v1/me`).

use e2e::{
    broker::{Tap, publish_to_queue, queue_depth},
    otlp::Collector,
    poll::eventually,
    smtp::Mode,
    stack::{DELIVERY_TIMEOUT, GRPC_SERVICES, Options, Stack},
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const PASSWORD: &str = "correct horse battery staple";

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

/// Signs `email` up with a contact, confirms the mailed link, and returns the user id.
async fn verified_account(stack: &Stack, email: &str) -> anyhow::Result<String> {
    let body =
        json!({ "email": email, "password": PASSWORD, "display_name": "Ada", "contacts": ["charles@example.com"] });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    let mail = stack.smtp.wait_for(email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let token = mail.token().ok_or_else(|| anyhow::anyhow!("no token in the mail"))?;
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200);
    let session = stack.session(email, PASSWORD).await?;
    let me: Value = stack.me(&session).await?.json().await?;
    me["user_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no user_id in {me}"))
}

async fn leave(stack: &Stack, session: &str, password: &str) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}/v1/me", stack.api_url());
    Ok(stack.http().delete(url).bearer_auth(session).json(&json!({ "password": password })).send().await?)
}

/// Rows in any table of `service`'s database that mention `user_id` (as text, or inside a protobuf body), apart from
/// the tombstones: `deleted_users`, and the published `UserDeleted` event itself, which hold only ids.
async fn rows_about(stack: &Stack, service: &str, user_id: &str) -> anyhow::Result<Vec<String>> {
    let mut db = stack.database(service).connect().await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name NOT IN ('deleted_users', '_sqlx_migrations')",
    )
    .fetch_all(&mut db)
    .await?;
    let mut found = Vec::new();
    for table in tables {
        let query = format!(
            "SELECT t::text FROM \"{table}\" t WHERE (strpos(t::text, $1) > 0 \
             OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0) \
             AND NOT (to_jsonb(t) ->> 'event_type' IS NOT DISTINCT FROM 'signup.events.v1.UserDeleted')"
        );
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(user_id).fetch_all(&mut db).await?;
        found.extend(rows.into_iter().map(|row| format!("{service}.{table}: {row}")));
    }
    Ok(found)
}

#[tokio::test]
async fn leaving_ends_the_account_at_once_and_every_service_forgets_it() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("leaving");
    let user_id = verified_account(&stack, &email).await?;
    let (first, second) = (stack.session(&email, PASSWORD).await?, stack.session(&email, PASSWORD).await?);
    let mut before = Vec::new();
    for service in GRPC_SERVICES {
        before.extend(rows_about(&stack, service, &user_id).await?);
    }

    // A session alone deletes nothing: the password is asked, and a wrong one is the sign-in's 401.
    let wrong = leave(&stack, &first, "not the password at all").await?;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await?["type"], "/problems/invalid-credentials");
    assert_eq!(stack.me(&second).await?.status(), 200, "a wrong password changed something");

    let left = leave(&stack, &first, PASSWORD).await?;
    assert_eq!(left.status(), 202);
    assert_eq!(left.json::<Value>().await?["status"], "deleted");
    // At once: every session ended, sign-ins refused.
    assert_eq!(stack.me(&second).await?.status(), 401);
    assert_eq!(stack.sign_in(&email, PASSWORD).await?.status(), 401);
    // Within seconds, no service holds a row about the user but its tombstones.
    eventually(DELIVERY_TIMEOUT, || async {
        let mut rows = Vec::new();
        for service in GRPC_SERVICES {
            rows.extend(rows_about(&stack, service, &user_id).await?);
        }
        anyhow::ensure!(rows.is_empty(), "still held: {rows:#?}");
        Ok(())
    })
    .await?;
    // A suggestions request that passed signup-api's check just before the deletion reaches friend-discovery after
    // it: it leaves nothing behind either.
    let url = format!("http://127.0.0.1:{}", stack.member("friend-discovery").port);
    let mut friends =
        proto::friend_discovery::v1::friend_discovery_service_client::FriendDiscoveryServiceClient::connect(url)
            .await?;
    let late = proto::friend_discovery::v1::GetSuggestionsRequest { user_id: user_id.clone(), ..Default::default() };
    let code = friends.get_suggestions(late).await.err().map(|status| status.code());
    assert_eq!(code, Some(tonic::Code::ResourceExhausted), "a deleted user had a budget of suggestions");
    let held = rows_about(&stack, "friend-discovery", &user_id).await?;
    assert!(held.is_empty(), "a late suggestions request left rows about the deleted user: {held:#?}");
    // The last mail, and the email is free again.
    let mails = stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?;
    assert!(mails.iter().any(|m| m.header("Subject").is_some_and(|s| s.contains("deleted"))), "no deletion mail");
    let again = json!({ "email": email, "password": PASSWORD, "display_name": "Ada again" });
    assert_eq!(stack.signup(&again, None).await?.status(), 202);
    stack.smtp.wait_for(&email, 3, DELIVERY_TIMEOUT).await?;
    assert!(before.len() >= 4, "the scan finds rows about a live account: {before:#?}");
    Ok(())
}

/// Attack on a leaver's privacy: an event about the account that email-verification had not applied when the
/// account was deleted (dead-lettered during an outage and replayed by `repair --replay-dead-letters`, or held by
/// another replica's retry) arrives after the deletion. A signup's existing-account notice was queued all the same:
/// the deleted address was mailed and its mail row, address included, was kept for good. Now a deleted user gets
/// nothing, as a late signup event already did.
#[tokio::test]
async fn an_event_replayed_after_the_account_left_mails_it_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("replayed-notice");
    let user_id = verified_account(&stack, &email).await?;
    let session = stack.session(&email, PASSWORD).await?;
    assert_eq!(leave(&stack, &session, PASSWORD).await?.status(), 202);
    stack.wait_processed(proto::Event::USER_DELETED, 1).await?;

    let notice = proto::events::v1::SignupAttemptedForExistingAccount {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.clone(),
        email: email.clone(),
        signup_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let envelope = platform::events::Envelope {
        id: uuid::Uuid::now_v7(),
        kind: proto::Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT.to_owned(),
        source: "/e2e/replay".to_owned(),
        time: chrono::Utc::now(),
        data: prost::Message::encode_to_vec(&notice),
        trace: Default::default(),
    };
    publish_to_queue(stack.queue("email-verification"), envelope.properties(), &envelope.data).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        let kind = Some(proto::Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT);
        let applied = stack.processed("email-verification", kind).await?;
        anyhow::ensure!(applied == 1, "the replayed event is not applied yet");
        Ok(())
    })
    .await?;

    // Applied (its id is recorded with its effects, in one transaction): whatever it queued is there now.
    let held = rows_about(&stack, "email-verification", &user_id).await?;
    assert!(held.is_empty(), "the replayed event wrote about the deleted user: {held:#?}");
    Ok(())
}

/// Privacy (a leaver's): the last mail to a deleted account kept no address once sent, but kept it when the server
/// refused the mail, in the mail log and so in its archives, for good. Before: the address stayed in
/// email-verification's database.
#[tokio::test]
async fn a_deleted_accounts_address_is_not_kept_when_its_last_mail_fails() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("refused");
    verified_account(&stack, &email).await?;
    let session = stack.session(&email, PASSWORD).await?;
    stack.smtp.set_mode_for(&email, Mode::PermanentFailure);
    assert_eq!(leave(&stack, &session, PASSWORD).await?.status(), 202);

    let database = stack.database("email-verification");
    eventually(DELIVERY_TIMEOUT, || async {
        let mut db = database.connect().await?;
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mails WHERE kind = 'account_deleted' AND status = 'failed'")
                .fetch_one(&mut db)
                .await?;
        anyhow::ensure!(failed == 1, "the last mail has not failed yet");
        anyhow::ensure!(!database.dump().await?.contains(&email), "the deleted account's address is still held");
        Ok(())
    })
    .await?;
    Ok(())
}

/// A deletion that reaches a subscriber after the dedup window (it was down for a month, or its dead letter was
/// replayed late) still deletes: applying it twice does nothing more. Before, it was dead-lettered as expired however
/// often it was replayed, and friend-discovery kept suggesting the deleted member under its name.
#[tokio::test]
async fn a_deletion_older_than_the_dedup_window_still_deletes() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("late-leaver");
    let user_id = verified_account(&stack, &email).await?;
    let friends = stack.database("friend-discovery");
    let members = "SELECT count(*) FROM members WHERE user_id = $1::uuid";
    let member: String = sqlx::query_scalar("SELECT row_to_json(m)::text FROM members m WHERE user_id = $1::uuid")
        .bind(&user_id)
        .fetch_one(&mut friends.connect().await?)
        .await?;
    let session = stack.session(&email, PASSWORD).await?;
    assert_eq!(leave(&stack, &session, PASSWORD).await?.status(), 202);
    let deletion = eventually(DELIVERY_TIMEOUT, || async {
        tap.of_type("signup.events.v1.UserDeleted").into_iter().next().ok_or_else(|| anyhow::anyhow!("not seen yet"))
    })
    .await?;
    eventually(DELIVERY_TIMEOUT, || async {
        let left: i64 = sqlx::query_scalar(members).bind(&user_id).fetch_one(&mut friends.connect().await?).await?;
        anyhow::ensure!(left == 0, "friend-discovery has not applied the deletion yet");
        Ok(())
    })
    .await?;

    // As if friend-discovery had missed it: the member back, and no record of having applied anything.
    let mut db = friends.connect().await?;
    sqlx::query("INSERT INTO members SELECT * FROM json_populate_record(NULL::members, $1::json)")
        .bind(&member)
        .execute(&mut db)
        .await?;
    sqlx::query("DELETE FROM processed_events").execute(&mut db).await?;
    // The deletion again, 31 days old (the window is 30), as a replayed dead letter.
    let mut headers = deletion.properties.headers().clone().unwrap_or_default();
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(31)).to_rfc3339();
    headers.insert("cloudEvents_time".into(), lapin::types::AMQPValue::LongString(long_ago.as_str().into()));
    let queue = stack.queue("friend-discovery");
    publish_to_queue(queue, deletion.properties.clone().with_headers(headers), &deletion.data).await?;

    eventually(DELIVERY_TIMEOUT, || async {
        let left: i64 = sqlx::query_scalar(members).bind(&user_id).fetch_one(&mut friends.connect().await?).await?;
        anyhow::ensure!(left == 0, "the month-old deletion did not delete the member");
        Ok(())
    })
    .await?;
    assert_eq!(queue_depth(&format!("{queue}.dlq")).await?, 0, "the deletion was dead-lettered");
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn an_export_holds_each_services_part_and_no_secret() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("exporting");
    let user_id = verified_account(&stack, &email).await?;
    let session = stack.session(&email, PASSWORD).await?;
    let mail = stack.smtp.messages_to(&email).remove(0);
    let link_token = mail.token().unwrap_or_default();
    // friend-discovery learns of the verification from the event: the export shows it once it has.
    let export: Value = eventually(DELIVERY_TIMEOUT, || async {
        let response = stack.get_as(&session, "/v1/me/export").await?;
        anyhow::ensure!(response.status() == 200, "export answered {}", response.status());
        let export: Value = response.json().await?;
        anyhow::ensure!(export["discovery"]["member"] == true, "not a member yet: {export}");
        Ok(export)
    })
    .await?;

    assert_eq!(export["profile"]["user_id"], user_id.as_str());
    assert_eq!(export["profile"]["email"], email.as_str());
    assert_eq!(export["password"]["has_password"], true);
    assert_eq!(export["password"]["algorithm"], "argon2id");
    assert!(export["password"]["parameters"].as_str().is_some_and(|p| p.contains("m=")), "{export}");
    assert!(export["password"]["sessions"].as_array().is_some_and(|s| s.len() >= 2), "{export}");
    let devices = export["password"]["devices_signed_in_at"].as_array().cloned().unwrap_or_default();
    assert!(!devices.is_empty() && devices.iter().all(Value::is_string), "the devices signed in from: {export}");
    let mails = export["mail"]["mails"].as_array().cloned().unwrap_or_default();
    assert!(mails.iter().any(|m| m["kind"] == "verification" && m["status"] == "sent"), "{export}");
    assert!(export["mail"]["verified_at"].is_string(), "{export}");
    assert_eq!(export["discovery"]["contact_hashes"], 1);
    assert_eq!(export["discovery"]["email_hash_stored"], true);
    let text = export.to_string();
    let phc: String = {
        let mut db = stack.database("password").connect().await?;
        sqlx::query_scalar("SELECT phc FROM credentials").fetch_one(&mut db).await?
    };
    let hash = phc.rsplit('$').next().unwrap_or_default().to_owned();
    for secret in [PASSWORD, session.as_str(), link_token.as_str(), "charles@example.com", hash.as_str(), "$argon2"] {
        assert!(!secret.is_empty() && !text.contains(secret), "the export holds a secret ({secret}): {text}");
    }
    Ok(())
}

/// An account keeps at most `SESSIONS_PER_ACCOUNT` sessions. Signing in over and over (one address's sign-in budget
/// allows tens of thousands a day) used to pile up a session each, every one of them read and listed by each export.
#[tokio::test]
async fn signing_in_over_and_over_keeps_only_the_newest_sessions() -> anyhow::Result<()> {
    let env = vec![("password", "SESSIONS_PER_ACCOUNT", "3".to_owned())];
    let mut stack = Stack::start_with(e2e::stack::Options { env, ..Default::default() }).await?;
    stack.wait_ready().await?;
    let email = unique_email("sessions");
    verified_account(&stack, &email).await?;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(stack.session(&email, PASSWORD).await?);
    }
    for (i, session) in sessions.iter().enumerate() {
        let expected = if i < 2 { 401 } else { 200 };
        assert_eq!(stack.me(session).await?.status(), expected, "session {i} of 5");
    }
    let export: Value = stack.get_as(&sessions[4], "/v1/me/export").await?.json().await?;
    let listed = export["password"]["sessions"].as_array().map(Vec::len);
    assert_eq!(listed, Some(3), "{export}");
    Ok(())
}

async fn change_password(stack: &Stack, session: &str, current: &str, new: &str) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}/v1/me/password", stack.api_url());
    let body = json!({ "current_password": current, "new_password": new });
    Ok(stack.http().put(url).bearer_auth(session).json(&body).send().await?)
}

#[tokio::test]
async fn changing_the_password_takes_the_current_one_ends_the_other_sessions_and_mails_a_notice() -> anyhow::Result<()>
{
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("changing");
    verified_account(&stack, &email).await?;
    let (this, other) = (stack.session(&email, PASSWORD).await?, stack.session(&email, PASSWORD).await?);
    let new = "a quite different battery staple horse";

    // A session alone changes nothing: a wrong current password is the sign-in's 401, a weak new one a 422.
    let wrong = change_password(&stack, &this, "not the password at all", new).await?;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await?["type"], "/problems/invalid-credentials");
    let weak = change_password(&stack, &this, PASSWORD, "password1234567").await?;
    assert_eq!(weak.status(), 422);
    let weak: Value = weak.json().await?;
    assert!(weak["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["field"] == "new_password")), "{weak}");
    assert_eq!(stack.me(&other).await?.status(), 200, "a refused change ended a session");

    assert_eq!(change_password(&stack, &this, PASSWORD, new).await?.status(), 204);
    assert_eq!(stack.me(&this).await?.status(), 200, "the session that changed it stays");
    assert_eq!(stack.me(&other).await?.status(), 401, "another session survived the change");
    assert_eq!(stack.sign_in(&email, PASSWORD).await?.status(), 401, "the old password still works");
    assert_eq!(stack.sign_in(&email, new).await?.status(), 201);
    // PasswordChanged, from password's outbox, reaches email-verification: the owner is told.
    let mails = stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?;
    assert!(mails.iter().any(|m| m.header("Subject").is_some_and(|s| s.contains("password was changed"))), "no notice");
    Ok(())
}

/// Four attackers who know the password sign in over and over until `end` (the owner's change of the password)
/// has answered; then every session they opened must be refused.
async fn sign_ins_racing<F>(stack: &Stack, email: &str, end: F) -> anyhow::Result<u16>
where
    F: std::future::Future<Output = anyhow::Result<u16>>,
{
    let (opened, ended) = (AtomicUsize::new(0), AtomicBool::new(false));
    let attacker = || async {
        let mut sessions = Vec::new();
        while !ended.load(Ordering::SeqCst) {
            let response = stack.sign_in(email, PASSWORD).await?;
            if response.status() == 201 {
                let body: Value = response.json().await?;
                sessions.push(body["token"].as_str().unwrap_or_default().to_owned());
                opened.fetch_add(1, Ordering::SeqCst);
            }
        }
        anyhow::Ok(sessions)
    };
    let owner = async {
        // Every attacker is signing in, one after another, by the time the change begins.
        e2e::poll::counted(&opened, 8, DELIVERY_TIMEOUT, "sessions the attackers opened").await?;
        let answer = end.await;
        ended.store(true, Ordering::SeqCst);
        answer
    };
    let (sessions, answer) = tokio::join!(futures_util::future::try_join_all((0..4).map(|_| attacker())), owner);
    for session in sessions?.concat() {
        let status = stack.me(&session).await?.status();
        assert_eq!(status, 401, "a session opened with the old password outlived the change");
    }
    answer
}

/// Attack: someone who knows the password keeps signing in while its owner changes it. A sign-in whose check had
/// passed before the change committed used to open its session after the change had ended the others, and keep it.
#[tokio::test]
async fn a_sign_in_under_way_when_the_password_changes_keeps_no_session() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("racing");
    verified_account(&stack, &email).await?;
    let owner = stack.session(&email, PASSWORD).await?;
    let change = async {
        let new = "a quite different battery staple horse";
        Ok(change_password(&stack, &owner, PASSWORD, new).await?.status().as_u16())
    };
    assert_eq!(sign_ins_racing(&stack, &email, change).await?, 204);
    Ok(())
}

/// The same attack against a reset: the owner, locked out of an account whose password leaked, resets it through
/// the mailed link while the attacker keeps signing in. No session opened with the old password survives.
#[tokio::test]
async fn a_sign_in_under_way_when_the_password_is_reset_keeps_no_session() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("racing-reset");
    verified_account(&stack, &email).await?;
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let token = reset_token(&stack, &email, 2).await?;
    let reset = async { Ok(reset(&stack, &token, "a quite different battery staple horse").await?.0) };
    assert_eq!(sign_ins_racing(&stack, &email, reset).await?, 200);
    Ok(())
}

/// After an `ARGON2_*` change, the first sign-ins rehash the password under the new parameters. Several at once for
/// one account race to store their rehash; the password is the same, so every one of them opens a session (only a
/// new password may refuse a sign-in under way).
#[tokio::test]
async fn sign_ins_racing_to_rehash_a_password_all_open_sessions() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("rehashed");
    verified_account(&stack, &email).await?;
    stack.stop("password").await?;
    let password = stack.members.iter_mut().find(|m| m.process.name() == "password");
    let password = password.ok_or_else(|| anyhow::anyhow!("no password member"))?;
    password.env.retain(|(name, _)| name != "ARGON2_ITERATIONS");
    password.env.push(("ARGON2_ITERATIONS".to_owned(), "3".to_owned()));
    stack.restart("password").await?;

    let sign_ins = futures_util::future::try_join_all((0..4).map(|_| async {
        let response = stack.sign_in(&email, PASSWORD).await?;
        anyhow::Ok((response.status().as_u16(), response.text().await?))
    }))
    .await?;
    let refused: Vec<&(u16, String)> = sign_ins.iter().filter(|(status, _)| *status != 201).collect();
    assert!(refused.is_empty(), "a right password was refused while another sign-in rehashed it: {refused:?}");
    let mut db = stack.database("password").connect().await?;
    let phc: String = sqlx::query_scalar("SELECT phc FROM credentials").fetch_one(&mut db).await?;
    assert!(phc.contains("t=3"), "the password was not rehashed: {phc}");
    Ok(())
}

/// A request from `client` (as the trusted proxy in front says), with `session` when given: its status.
async fn from_client(
    stack: &Stack,
    client: &str,
    (method, path): (reqwest::Method, &str),
    session: Option<&str>,
    body: &Value,
) -> anyhow::Result<u16> {
    let request = stack.http().request(method, format!("{}{path}", stack.api_url())).header("x-forwarded-for", client);
    let request = match session {
        Some(session) => request.bearer_auth(session),
        None => request,
    };
    Ok(request.json(body).send().await?.status().as_u16())
}

/// A stack whose signup-api trusts the loopback proxy's `X-Forwarded-For` and whose password locks an email out
/// after four failures from all clients, slowing each client after two (for a minute).
async fn throttled_stack() -> anyhow::Result<Stack> {
    let mut env = vec![("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned())];
    for (name, value) in [
        ("LOGIN_LOCKOUT_AFTER_FAILURES", "4"),
        ("LOGIN_THROTTLE_AFTER_FAILURES", "2"),
        ("LOGIN_THROTTLE_FIRST_DELAY_MS", "60000"),
    ] {
        env.push(("password", name, value.to_owned()));
    }
    let mut stack = Stack::start_with(e2e::stack::Options { env, ..Default::default() }).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

/// Attack: strangers fail to sign in to the victim's email from a few networks until the email is locked out, as
/// the throttle means to (a guesser spread over many networks). Its owner, signed in but on a new network (a phone),
/// could then neither change the password nor leave: those checked the current password as a sign-in from that
/// network, and got the lockout's `429`. Now a signed-in owner's check counts against the session.
#[tokio::test]
async fn strangers_locking_the_email_out_do_not_stop_its_signed_in_owner() -> anyhow::Result<()> {
    let stack = throttled_stack().await?;
    let email = unique_email("locked-out-owner");
    verified_account(&stack, &email).await?;
    let sign_in = (reqwest::Method::POST, "/v1/sessions");
    let owner = stack.session(&email, PASSWORD).await?;
    for stranger in ["203.0.113.1", "203.0.113.2"] {
        for _ in 0..2 {
            let guess = json!({ "email": email, "password": "a guessed battery staple horse" });
            assert_eq!(from_client(&stack, stranger, sign_in.clone(), None, &guess).await?, 401);
        }
    }
    let right = json!({ "email": email, "password": PASSWORD });
    assert_eq!(from_client(&stack, "192.0.2.50", sign_in, None, &right).await?, 429, "the email is not locked out");

    let new = "a quite different battery staple horse";
    let change = json!({ "current_password": PASSWORD, "new_password": new });
    let changed = from_client(&stack, "192.0.2.77", (reqwest::Method::PUT, "/v1/me/password"), Some(&owner), &change);
    assert_eq!(changed.await?, 204, "the signed-in owner could not change the password");
    let leave = json!({ "password": new });
    let left = from_client(&stack, "192.0.2.78", (reqwest::Method::DELETE, "/v1/me"), Some(&owner), &leave);
    assert_eq!(left.await?, 202, "the signed-in owner could not leave");
    Ok(())
}

/// Attack: a link used for what it is not. Whoever reads a verification mail (a shared inbox) must not reset the
/// account's password with its token, and a reset link must not confirm a signup. Each is refused as an unknown
/// token, uses nothing up, and still does its own job afterwards. (Each half also meets an account in the wrong
/// state, pending for the reset and verified for the confirm, so it holds by the mail's kind and by that state;
/// the test fails only with both checks removed.)
#[tokio::test]
async fn a_verification_link_never_resets_and_a_reset_link_never_verifies() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("crossed-links");
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    let mail = stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let verification = mail.token().ok_or_else(|| anyhow::anyhow!("no token in the mail"))?;

    let (status, problem) = reset(&stack, &verification, "a quite different battery staple horse").await?;
    assert_eq!((status, &problem["type"]), (400, &json!("/problems/invalid-token")), "{problem}");
    assert_eq!(stack.confirm(&verification, PASSWORD).await?.status(), 200, "the verification link was used up");

    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let reset_link = reset_token(&stack, &email, 2).await?;
    let confirmed = stack.confirm(&reset_link, PASSWORD).await?;
    assert_eq!(confirmed.status(), 400, "a reset link was taken as a verification link");
    assert_eq!(confirmed.json::<Value>().await?["type"], "/problems/invalid-token");
    let new = "a quite different battery staple horse";
    assert_eq!(reset(&stack, &reset_link, new).await?.0, 200, "the reset link was used up");
    assert_eq!(stack.sign_in(&email, new).await?.status(), 201);
    Ok(())
}

/// Strangers' failed sign-ins lock the email out (as the throttle means to, against a guesser spread over many
/// networks); the owner, on a network of their own, cannot sign in. A reset through the mailed link proves the
/// mailbox, so it forgets every failure: the owner signs in with the new password at once, from anywhere.
#[tokio::test]
async fn a_reset_lifts_the_lockout_that_strangers_caused() -> anyhow::Result<()> {
    let stack = throttled_stack().await?;
    let email = unique_email("locked-out-resets");
    verified_account(&stack, &email).await?;
    let sign_in = (reqwest::Method::POST, "/v1/sessions");
    for stranger in ["203.0.113.21", "203.0.113.22"] {
        for _ in 0..2 {
            let guess = json!({ "email": email, "password": "a guessed battery staple horse" });
            assert_eq!(from_client(&stack, stranger, sign_in.clone(), None, &guess).await?, 401);
        }
    }
    let right = json!({ "email": email, "password": PASSWORD });
    assert_eq!(from_client(&stack, "192.0.2.60", sign_in.clone(), None, &right).await?, 429, "not locked out");

    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let token = reset_token(&stack, &email, 2).await?;
    let new = "a quite different battery staple horse";
    assert_eq!(reset(&stack, &token, new).await?.0, 200);

    let after = json!({ "email": email, "password": new });
    assert_eq!(from_client(&stack, "192.0.2.61", sign_in, None, &after).await?, 201, "the reset left the lockout");
    Ok(())
}

/// Attack: someone who stole a session guesses the account's password (to change it and keep the account) from one
/// network after another. Each network used to get its own count of failures; now the session's failures are one
/// count, wherever they come from, for changing the password and leaving alike.
#[tokio::test]
async fn a_stolen_session_gets_no_more_password_guesses_from_more_networks() -> anyhow::Result<()> {
    let stack = throttled_stack().await?;
    let email = unique_email("stolen-session");
    verified_account(&stack, &email).await?;
    let stolen = stack.session(&email, PASSWORD).await?;
    let change = |guess: &str| json!({ "current_password": guess, "new_password": "the thief's battery staple horse" });
    let put = (reqwest::Method::PUT, "/v1/me/password");
    for (network, guess) in
        [("203.0.113.10", "first guess staple horse"), ("203.0.113.11", "second guess staple horse")]
    {
        assert_eq!(from_client(&stack, network, put.clone(), Some(&stolen), &change(guess)).await?, 401);
    }
    let third = from_client(&stack, "203.0.113.12", put, Some(&stolen), &change("third guess staple horse")).await?;
    assert_eq!(third, 429, "a new network gave the stolen session more guesses");
    let leave = json!({ "password": "fourth guess staple horse" });
    let left = from_client(&stack, "203.0.113.13", (reqwest::Method::DELETE, "/v1/me"), Some(&stolen), &leave);
    assert_eq!(left.await?, 429, "leaving gave the stolen session more guesses");
    assert_eq!(stack.sign_in(&email, PASSWORD).await?.status(), 201, "the password changed");
    Ok(())
}

async fn ask_reset(stack: &Stack, email: &str) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/v1/password-resets", stack.api_url());
    let response = stack.http().post(url).json(&json!({ "email": email })).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn reset(stack: &Stack, token: &str, new_password: &str) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/v1/password-resets/confirm", stack.api_url());
    let response = stack.http().post(url).json(&json!({ "token": token, "new_password": new_password })).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// The token of the newest reset link among the first `count` mails to `email`, once they have arrived.
async fn reset_token(stack: &Stack, email: &str, count: usize) -> anyhow::Result<String> {
    let mails = stack.smtp.wait_for(email, count, DELIVERY_TIMEOUT).await?;
    let is_reset = |m: &&e2e::smtp::Received| {
        m.part("text/plain").is_some_and(|text| text.contains("/v1/password-resets/confirm?token="))
    };
    let newest = mails.iter().rev().find(is_reset).ok_or_else(|| anyhow::anyhow!("no reset mail among {count}"))?;
    newest.token().ok_or_else(|| anyhow::anyhow!("no token in the reset mail"))
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_a_single_use_link_and_nothing_tells_accounts_apart() -> anyhow::Result<()>
{
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let (verified, pending, unknown) = (unique_email("verified"), unique_email("pending"), unique_email("unknown"));
    verified_account(&stack, &verified).await?;
    let old_session = stack.session(&verified, PASSWORD).await?;
    // Used: signup-api now remembers the session, and the reset must make it forget.
    assert_eq!(stack.me(&old_session).await?.status(), 200);
    let body = json!({ "email": pending, "password": PASSWORD, "display_name": "Pending" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    stack.smtp.wait_for(&pending, 1, DELIVERY_TIMEOUT).await?;

    // One answer for all three addresses.
    let answers =
        [ask_reset(&stack, &verified).await?, ask_reset(&stack, &pending).await?, ask_reset(&stack, &unknown).await?];
    assert_eq!(answers[0], (202, json!({ "status": "accepted" })));
    assert!(answers.iter().all(|answer| *answer == answers[0]), "{answers:?}");
    // The verified account gets a reset link; the pending one a notice without one; the unknown address nothing.
    let token = reset_token(&stack, &verified, 2).await?;
    let notice = stack.smtp.wait_for(&pending, 2, DELIVERY_TIMEOUT).await?.remove(1);
    let notice_text = notice.part("text/plain").unwrap_or_default();
    assert!(notice_text.contains("sign up") && !notice_text.contains("token="), "{notice_text}");
    let queued_for_unknown: i64 = {
        let mut db = stack.database("email-verification").connect().await?;
        sqlx::query_scalar("SELECT count(*) FROM mails WHERE recipient = $1").bind(&unknown).fetch_one(&mut db).await?
    };
    assert_eq!(queued_for_unknown, 0);

    // Opening the link uses nothing; a weak password is refused and the link still works.
    let page = stack.http().get(format!("{}/v1/password-resets/confirm?token={token}", stack.api_url())).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("name=\"new_password\""));
    // A second link before the first is used: the reset ends it too (an older mail must not take the account back).
    assert_eq!(ask_reset(&stack, &verified).await?.0, 202);
    let other = reset_token(&stack, &verified, 3).await?;
    assert_ne!(other, token);
    let (status, weak) = reset(&stack, &token, "password1234567").await?;
    assert_eq!(status, 422, "{weak}");
    let new = "a quite different battery staple horse";
    assert_eq!(reset(&stack, &token, new).await?, (200, json!({ "status": "password_changed" })));

    // Every session ended; the old password is gone, the new one works; the owner is told.
    assert_eq!(stack.me(&old_session).await?.status(), 401);
    assert_eq!(stack.sign_in(&verified, PASSWORD).await?.status(), 401);
    assert_eq!(stack.sign_in(&verified, new).await?.status(), 201);
    let mails = stack.smtp.wait_for(&verified, 4, DELIVERY_TIMEOUT).await?;
    assert!(mails.iter().any(|m| m.header("Subject").is_some_and(|s| s.contains("password was changed"))), "no notice");

    // The link works once, the other link died with the reset, and an expired one fails the same way.
    let (used_status, used) = reset(&stack, &token, "yet another battery staple horse").await?;
    let (other_status, other_answer) = reset(&stack, &other, "yet another battery staple horse").await?;
    assert_eq!(ask_reset(&stack, &verified).await?.0, 202);
    let second = reset_token(&stack, &verified, 5).await?;
    {
        let mut db = stack.database("email-verification").connect().await?;
        sqlx::query("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
            .execute(&mut db)
            .await?;
    }
    let (expired_status, expired) = reset(&stack, &second, "yet another battery staple horse").await?;
    assert_eq!((used_status, &used["type"]), (400, &json!("/problems/invalid-token")), "{used}");
    assert_eq!((other_status, &other_answer["type"]), (used_status, &used["type"]), "{other_answer}");
    assert_eq!((expired_status, &expired["type"], &expired["detail"]), (used_status, &used["type"], &used["detail"]));
    assert_eq!(stack.sign_in(&verified, new).await?.status(), 201, "a refused reset changed the password");
    Ok(())
}

/// Two reset links of one account used at the same moment. Each use locked its own link and then ended the
/// account's other links, so each waited for the other's: Postgres broke the deadlock by failing one, and its
/// request was answered 500. The test holds the mail queue against writes (`LOCK TABLE mails IN SHARE MODE`: reads
/// go on) until both uses wait, so the two meet every time; on the code before, one of them got a 500 in every run.
/// A use now takes the account's lock first: one link resets the password and the other is refused as used.
#[tokio::test]
async fn two_reset_links_used_at_once_reset_once_and_fail_no_request() -> anyhow::Result<()> {
    // The sender claims only when mail is queued, so no claim of its own waits on the test's lock.
    let env = vec![("email-verification", "MAIL_POLL_INTERVAL_MS", "600000".to_owned())];
    let mut stack = Stack::start_with(Options { env, ..Options::default() }).await?;
    stack.wait_ready().await?;
    let email = unique_email("reset-race");
    verified_account(&stack, &email).await?;
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let first = reset_token(&stack, &email, 2).await?;
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let second = reset_token(&stack, &email, 3).await?;
    let ev = stack.database("email-verification");
    eventually(DELIVERY_TIMEOUT, || async {
        let mut db = ev.connect().await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mails WHERE status = 'pending'").fetch_one(&mut db).await?;
        anyhow::ensure!(pending == 0, "{pending} mails not yet recorded as sent");
        Ok(())
    })
    .await?;
    let mut holder = ev.connect().await?;
    sqlx::raw_sql("BEGIN; LOCK TABLE mails IN SHARE MODE").execute(&mut holder).await?;

    let passwords = ["the first link's battery staple", "the second link's battery staple"];
    let released = async {
        eventually(DELIVERY_TIMEOUT, || async {
            let mut watcher = ev.connect().await?;
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut watcher)
            .await?;
            anyhow::ensure!(waiting >= 2, "{waiting} of the two uses waiting");
            Ok(())
        })
        .await?;
        sqlx::query("COMMIT").execute(&mut holder).await?;
        anyhow::Ok(())
    };
    let (one, other, released) =
        tokio::join!(reset(&stack, &first, passwords[0]), reset(&stack, &second, passwords[1]), released);
    released?;
    let answers = [one?, other?];

    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    let won = answers.iter().position(|(status, _)| *status == 200);
    assert!(statuses.iter().all(|status| *status < 500), "a use failed: {answers:?}");
    let won = won.ok_or_else(|| anyhow::anyhow!("no link reset the password: {answers:?}"))?;
    assert_eq!(answers[1 - won].1["type"], json!("/problems/invalid-token"), "{answers:?}");
    assert_eq!(stack.sign_in(&email, passwords[won]).await?.status(), 201, "the winning link's password");
    assert_eq!(stack.sign_in(&email, passwords[1 - won]).await?.status(), 401, "the refused link's password");
    Ok(())
}

/// user-metadata's `user_reads_total` for `source` (remembered or database), from its metrics.
/// Attack: from one network, sign up the victim's verified address (its owner is told: the existing-account notice)
/// and ask for resets. The notice was charged to no client, so with the client's own share of the hour (all but
/// one mail) it took the whole hour's budget, and the owner's own reset request that hour mailed nothing. The notice
/// now counts in the share of the client that signed up.
#[tokio::test]
async fn one_client_cannot_spend_an_hours_mail_with_a_notice_and_resets() -> anyhow::Result<()> {
    let mut env = vec![("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned())];
    // The defaults: three mails an hour, ten a day, three a day per client (and so two an hour per client).
    for (name, value) in
        [("MAIL_BUDGET_PER_HOUR", "3"), ("MAIL_BUDGET_PER_DAY", "10"), ("MAIL_BUDGET_PER_CLIENT_PER_DAY", "3")]
    {
        env.push(("email-verification", name, value.to_owned()));
    }
    let mut stack = Stack::start_with(e2e::stack::Options { env, ..Default::default() }).await?;
    stack.wait_ready().await?;
    let email = unique_email("notice-budget");
    verified_account(&stack, &email).await?;
    // The owner's verification mail leaves the hour: the hour's budget (3) is the attacker's to try.
    let mut db = stack.database("email-verification").connect().await?;
    sqlx::query("UPDATE mails SET created_at = created_at - interval '2 hours' WHERE recipient = $1")
        .bind(&email)
        .execute(&mut db)
        .await?;

    let attacker = "203.0.113.30";
    let signup = json!({ "email": email, "password": "the attacker's battery staple", "display_name": "Ada" });
    assert_eq!(from_client(&stack, attacker, (reqwest::Method::POST, "/v1/signups"), None, &signup).await?, 202);
    stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await?;
    let ask = json!({ "email": email });
    for _ in 0..2 {
        assert_eq!(
            from_client(&stack, attacker, (reqwest::Method::POST, "/v1/password-resets"), None, &ask).await?,
            202
        );
    }
    let owner = "198.51.100.30";
    assert_eq!(from_client(&stack, owner, (reqwest::Method::POST, "/v1/password-resets"), None, &ask).await?, 202);
    // A reset request queues its mail before it answers: one for the attacker (its share then spent), one for the
    // owner.
    let clients: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT client_hash) FROM mails WHERE recipient = $1 AND kind = 'password_reset'",
    )
    .bind(&email)
    .fetch_one(&mut db)
    .await?;
    assert_eq!(clients, 2, "the owner's reset was not queued: the attacker's notice and resets took the hour");
    Ok(())
}

/// Attack: a flood of signups keeps password's hashing full while the victim uses a reset link. The link is used
/// up before the new password is hashed; the hash was refused with the signups' (a `503`), and the retry found the
/// link used: the flood cost the owner the reset. The owner's new password now waits its turn with the checks.
#[tokio::test]
async fn a_signup_flood_does_not_cost_the_owner_a_used_reset_link() -> anyhow::Result<()> {
    let env = ["HASHING_THREADS", "HASHING_QUEUE_LIMIT"].map(|name| ("password", name, "1".to_owned())).to_vec();
    let mut stack = Stack::start_with(e2e::stack::Options { env, ..Default::default() }).await?;
    stack.wait_ready().await?;
    let email = unique_email("flooded");
    verified_account(&stack, &email).await?;
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    let token = reset_token(&stack, &email, 2).await?;

    let (refused, done) = (AtomicUsize::new(0), AtomicBool::new(false));
    let flood = || async {
        while !done.load(Ordering::SeqCst) {
            let body = json!({ "email": unique_email("flood"), "password": PASSWORD, "display_name": "F" });
            if stack.signup(&body, None).await?.status() == 503 {
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }
        anyhow::Ok(())
    };
    let victim = async {
        // The flood is refused for capacity: hashing is full.
        e2e::poll::counted(&refused, 20, DELIVERY_TIMEOUT, "signups refused for capacity").await?;
        let answer = reset(&stack, &token, "a quite different battery staple horse").await;
        done.store(true, Ordering::SeqCst);
        answer
    };
    let (flooded, answer) = tokio::join!(futures_util::future::try_join_all((0..10).map(|_| flood())), victim);
    flooded?;
    let (status, answer) = answer?;
    assert_eq!(status, 200, "the reset failed under the flood: {answer}");
    assert_eq!(stack.sign_in(&email, "a quite different battery staple horse").await?.status(), 201);
    Ok(())
}

/// Whether email-verification still holds `token` usable by a retry of its reset (used by it, not ended).
async fn half_used(stack: &Stack, token: &str) -> anyhow::Result<bool> {
    let hash = platform::token::Token::parse(token).map(|token| token.hash()).unwrap_or_default();
    let mut db = stack.database("email-verification").connect().await?;
    let query = "SELECT EXISTS (SELECT 1 FROM tokens WHERE token_hash = $1 AND consumed_at IS NOT NULL)";
    Ok(sqlx::query_scalar(query).bind(hash).fetch_one(&mut db).await?)
}

/// Asks for a reset of `email`'s password and uses its link (in the `mails`-th mail) while password is down: a
/// `503`, and a browser's page says the link still works. Returns the link's token, password running again.
async fn reset_while_password_is_down(
    stack: &mut Stack,
    email: &str,
    mails: usize,
    new: &str,
) -> anyhow::Result<String> {
    assert_eq!(ask_reset(stack, email).await?.0, 202);
    let token = reset_token(stack, email, mails).await?;
    stack.stop("password").await?;
    let (status, answer) = reset(stack, &token, new).await?;
    assert_eq!(status, 503, "{answer}");
    let url = format!("{}/v1/password-resets/confirm", stack.api_url());
    let form = [("token", token.as_str()), ("new_password", new)];
    let page = stack.http().post(url).header("accept", "text/html").form(&form).send().await?;
    assert_eq!(page.status(), 503);
    let page = page.text().await?;
    assert!(page.contains("Your link still works"), "the browser is not told to retry: {page}");
    stack.restart("password").await?;
    Ok(token)
}

/// A reset whose new password password never set (it was down: a `503`) can be retried with the same link, which
/// then sets one password and no more, even used twice at once. A link used that way sets nothing once the password
/// changed after it was asked for: left half-used, it cannot take the account back from a later change. Both hold
/// in password itself: email-verification is cut off from events, so no `PasswordChanged` ends the link there.
#[tokio::test]
async fn a_reset_that_password_never_set_can_be_retried_with_its_link_and_sets_one_password() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("retried-reset");
    verified_account(&stack, &email).await?;
    e2e::broker::cut_off(stack.queue("email-verification"), &stack.exchange).await?;
    let (new, newer) = ("a quite different battery staple horse", "yet another battery staple horse");

    let token = reset_while_password_is_down(&mut stack, &email, 2, "a first battery staple horse").await?;
    let (first, second) = tokio::join!(reset(&stack, &token, new), reset(&stack, &token, newer));
    let mut answers = [first?, second?];
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!(answers[0].0, 200, "the retry found the link spent by a reset that set nothing: {answers:?}");
    assert_eq!((answers[1].0, &answers[1].1["type"]), (400, &json!("/problems/invalid-token")), "{answers:?}");
    let set = if stack.sign_in(&email, new).await?.status() == 201 { new } else { newer };
    assert_eq!(stack.sign_in(&email, set).await?.status(), 201, "neither password was set");
    // Whatever the databases' clocks say: as if password's ran far behind email-verification's, the link that set
    // the password still sets nothing. (email-verification still holds it usable: the refusal is password's.)
    assert!(half_used(&stack, &token).await?, "email-verification ended the link: the test would prove nothing");
    let mut passwords = stack.database("password").connect().await?;
    sqlx::query("UPDATE credentials SET set_at = '-infinity'").execute(&mut passwords).await?;
    let (status, answer) = reset(&stack, &token, "a third battery staple horse").await?;
    assert_eq!((status, &answer["type"]), (400, &json!("/problems/invalid-token")), "the link set a second password");
    assert_eq!(stack.sign_in(&email, set).await?.status(), 201);

    // A link its reset left half-used, then a change by the owner: the link is stale.
    let stale = reset_while_password_is_down(&mut stack, &email, 3, "the attacker's battery staple horse").await?;
    let owner = stack.session(&email, set).await?;
    let changed = "the owner's battery staple horse";
    assert_eq!(change_password(&stack, &owner, set, changed).await?.status(), 204);
    assert!(half_used(&stack, &stale).await?, "email-verification ended the link: the test would prove nothing");
    let (status, answer) = reset(&stack, &stale, "the attacker's battery staple horse").await?;
    assert_eq!(status, 400, "a link asked for before the change set the password after it: {answer}");
    assert_eq!(stack.sign_in(&email, changed).await?.status(), 201);
    Ok(())
}

/// `SELECT count(*) FROM mails WHERE recipient = $1 AND {condition}` in email-verification's database.
async fn mails_to(stack: &Stack, email: &str, condition: &str) -> anyhow::Result<i64> {
    let mut db = stack.database("email-verification").connect().await?;
    let query = format!("SELECT count(*) FROM mails WHERE recipient = $1 AND {condition}");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(email).fetch_one(&mut db).await?)
}

/// Attack: someone asks for a reset of the victim's account while its mail server defers (greylisting), so the
/// reset mail waits for a retry; the owner changes the password meanwhile. The mail used to get a fresh, live link
/// at its next try, and that link took the account back; now the change ends the mail with the links.
#[tokio::test]
async fn a_reset_mail_still_queued_when_the_password_changes_carries_no_live_link() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("greylisted");
    verified_account(&stack, &email).await?;
    let owner = stack.session(&email, PASSWORD).await?;
    stack.smtp.set_mode_for(&email, Mode::TemporaryFailure);
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    eventually(DELIVERY_TIMEOUT, || async {
        let tried = mails_to(&stack, &email, "kind = 'password_reset' AND attempts > 0").await?;
        anyhow::ensure!(tried == 1, "the reset mail has not been tried yet");
        Ok(())
    })
    .await?;

    let new = "a quite different battery staple horse";
    assert_eq!(change_password(&stack, &owner, PASSWORD, new).await?.status(), 204);
    stack.wait_processed(proto::Event::PASSWORD_CHANGED, 1).await?;
    stack.smtp.set_mode_for(&email, Mode::Accept);
    eventually(DELIVERY_TIMEOUT, || async {
        let left = mails_to(&stack, &email, "status = 'pending'").await?;
        anyhow::ensure!(left == 0, "{left} mails to the owner still queued");
        Ok(())
    })
    .await?;
    let superseded = mails_to(&stack, &email, "kind = 'password_reset' AND status = 'superseded'").await?;
    assert_eq!(superseded, 1, "the change did not end the reset mail still queued");
    let is_reset = |mail: &e2e::smtp::Received| mail.part("text/plain").is_some_and(|t| t.contains("password-resets"));
    for mail in stack.smtp.wait_for(&email, 2, DELIVERY_TIMEOUT).await? {
        if let Some(token) = mail.token().filter(|_| is_reset(&mail)) {
            let (status, answer) = reset(&stack, &token, "the attacker's battery staple horse").await?;
            assert_eq!(status, 400, "a reset link mailed after the change took the account: {answer}");
        }
    }
    assert_eq!(stack.sign_in(&email, new).await?.status(), 201);
    Ok(())
}

/// A `PasswordChanged` that arrives late (email-verification was down, the broker slow) ends the reset mails asked
/// for before the change, not one the owner asked for after it: that one still arrives, and its link works.
#[tokio::test]
async fn a_late_password_change_spares_a_reset_asked_for_after_it() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("late-change");
    verified_account(&stack, &email).await?;
    let owner = stack.session(&email, PASSWORD).await?;
    let changed_to = "a quite different battery staple horse";
    assert_eq!(change_password(&stack, &owner, PASSWORD, changed_to).await?.status(), 204);
    let changed = eventually(DELIVERY_TIMEOUT, || async {
        tap.of_type(proto::Event::PASSWORD_CHANGED).into_iter().next().ok_or_else(|| anyhow::anyhow!("not seen yet"))
    })
    .await?;
    stack.wait_processed(proto::Event::PASSWORD_CHANGED, 1).await?;

    // The owner asks for a reset after the change; then the change arrives again, as if for the first time.
    stack.smtp.set_mode_for(&email, Mode::TemporaryFailure);
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(mails_to(&stack, &email, "kind = 'password_reset'").await? == 1, "no reset mail queued yet");
        Ok(())
    })
    .await?;
    let mut db = stack.database("email-verification").connect().await?;
    sqlx::query("DELETE FROM processed_events").execute(&mut db).await?;
    publish_to_queue(stack.queue("email-verification"), changed.properties.clone(), &changed.data).await?;
    stack.wait_processed(proto::Event::PASSWORD_CHANGED, 1).await?;

    stack.smtp.set_mode_for(&email, Mode::Accept);
    let token = reset_token(&stack, &email, 3).await?;
    let (status, answer) = reset(&stack, &token, "yet another battery staple horse").await?;
    assert_eq!(status, 200, "the reset asked for after the change was ended by it: {answer}");
    tap.close().await;
    Ok(())
}

async fn user_reads(stack: &Stack, source: &str) -> anyhow::Result<u64> {
    let url = format!("http://127.0.0.1:{}/metrics", stack.member("user-metadata").ops_port);
    let text = reqwest::get(&url).await?.text().await?;
    let prefix = format!("user_reads_total{{source=\"{source}\"}} ");
    Ok(text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// The display name `/v1/me` answers for `session`, once it answers `expected`.
async fn shows_name(stack: &Stack, session: &str, expected: &str) -> anyhow::Result<()> {
    eventually(DELIVERY_TIMEOUT, || async {
        let me: Value = stack.me(session).await?.json().await?;
        anyhow::ensure!(me["display_name"] == expected, "the profile still says {}", me["display_name"]);
        Ok(())
    })
    .await
}

/// user-metadata answers repeated reads of a user from memory, and a change to the row made anywhere (here by
/// SQL behind its back, as another replica or the archive command would make it) shows at the next reads, also
/// after the connection that hears of changes was cut.
#[tokio::test]
async fn a_remembered_profile_follows_every_change_to_the_account_wherever_it_is_made() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    let email = unique_email("remembered");
    verified_account(&stack, &email).await?;
    let session = stack.session(&email, PASSWORD).await?;
    let remembered = user_reads(&stack, "remembered").await?;
    shows_name(&stack, &session, "Ada").await?;
    shows_name(&stack, &session, "Ada").await?;
    assert!(user_reads(&stack, "remembered").await? > remembered, "no read was answered from memory");

    let mut db = stack.database("user-metadata").connect().await?;
    let rename = |name: &'static str| {
        sqlx::query("UPDATE users SET display_name = $2 WHERE email = $1").bind(email.clone()).bind(name)
    };
    assert_eq!(rename("Changed behind its back").execute(&mut db).await?.rows_affected(), 1);
    shows_name(&stack, &session, "Changed behind its back").await?;

    // Every connection of the service cut, the listener's among them: it reconnects and forgets what it held.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .execute(&mut db)
        .await?;
    shows_name(&stack, &session, "Changed behind its back").await?;
    shows_name(&stack, &session, "Changed behind its back").await?;
    assert_eq!(rename("Changed again").execute(&mut db).await?.rows_affected(), 1);
    shows_name(&stack, &session, "Changed again").await?;
    Ok(())
}

/// Every place a process writes down what it did, in one list: `(where, text)`.
async fn written_down(stack: &Stack, tap: &Tap, collector: &Collector) -> anyhow::Result<Vec<(String, String)>> {
    let mut places = Vec::new();
    for member in &stack.members {
        let output = [member.all_stdout(), member.process.stderr_lines()].concat().join("\n");
        places.push((format!("{}'s log", member.process.name()), output));
    }
    for database in stack.databases() {
        places.push((format!("database {}", database.name()), database.dump().await?));
    }
    for message in tap.seen() {
        let text = format!("{:?} {}", message.properties, String::from_utf8_lossy(&message.data));
        places.push(("a broker message".to_owned(), text));
    }
    for span in collector.spans() {
        places.push((format!("{}'s span {}", span.service, span.name), format!("{span:?}")));
    }
    Ok(places)
}

/// Whoever reads what the system writes down (logs with the services at debug, traces, tables, events) learns no
/// secret of an account's whole life: the passwords of the signup, of a wrong sign-in, of a change and of a reset,
/// the verification and reset links' tokens (opened as pages too, the token in the address), and the sessions.
/// The signup canary (signup.rs) covers the signup alone.
#[tokio::test]
async fn no_secret_of_an_accounts_whole_life_is_written_down_anywhere() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let mut options = Options::default();
    let ours = "info,signup_api=debug,user_metadata=debug,password=debug,email_verification=debug,\
                friend_discovery=debug,platform=debug";
    for service in GRPC_SERVICES.into_iter().chain(["signup-api"]) {
        options.env.extend([
            (service, "OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            (service, "OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
            (service, "RUST_LOG", ours.to_owned()),
        ]);
    }
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let [first, wrong, changed, reset_to] =
        ["first", "wrong", "changed", "reset"].map(|which| format!("canary {which} battery staple {marker}"));
    let email = unique_email("secrets");
    let api = stack.api_url();

    let body = json!({ "email": email, "password": first, "display_name": "Ada" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    let mail = stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let link = mail.token().ok_or_else(|| anyhow::anyhow!("no token in the mail"))?;
    let page = stack.http().get(format!("{api}/v1/email-verifications/confirm?token={link}")).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(stack.confirm(&link, &first).await?.status(), 200);
    assert_eq!(stack.sign_in(&email, &wrong).await?.status(), 401);
    let session = stack.session(&email, &first).await?;
    assert_eq!(change_password(&stack, &session, &first, &changed).await?.status(), 204);
    assert_eq!(ask_reset(&stack, &email).await?.0, 202);
    // The verification, the notice of the change and the reset.
    let reset_link = reset_token(&stack, &email, 3).await?;
    let page = stack.http().get(format!("{api}/v1/password-resets/confirm?token={reset_link}")).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(reset(&stack, &reset_link, &reset_to).await?.0, 200);
    let last = stack.session(&email, &reset_to).await?;
    let before_leaving = written_down(&stack, &tap, &collector).await?;
    assert_eq!(leave(&stack, &last, &reset_to).await?.status(), 202);
    stack.wait_processed(proto::Event::USER_DELETED, 1).await?;
    // Every process has exported the spans of its part (the deletion's processing is the last of each).
    eventually(DELIVERY_TIMEOUT, || async {
        let spans = collector.spans();
        for service in e2e::stack::subscribers_of(proto::Event::USER_DELETED) {
            let processed = spans.iter().any(|s| {
                s.service == *service && s.attribute("cloudevents.event_type") == Some(proto::Event::USER_DELETED)
            });
            anyhow::ensure!(processed, "no span of {service} processing the deletion yet");
        }
        Ok(())
    })
    .await?;

    let secrets = [&first, &wrong, &changed, &reset_to, &link, &reset_link, &session, &last];
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let needles: Vec<String> = secrets.iter().flat_map(|s| [s.to_lowercase(), hex(s)]).collect();
    let places = [before_leaving, written_down(&stack, &tap, &collector).await?].concat();
    let found: Vec<&String> = places
        .iter()
        .filter(|(_, text)| needles.iter().any(|needle| text.to_lowercase().contains(needle.as_str())))
        .map(|(place, _)| place)
        .collect();
    assert!(places.iter().any(|(place, _)| place.contains("span")), "no span was exported");
    assert!(found.is_empty(), "a secret was written down in: {found:?}");
    tap.close().await;
    Ok(())
}
