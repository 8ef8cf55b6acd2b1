//! The admin processes (`repair`, `archive`, `report`) as one-off runs of the real binaries against the real
//! Postgres, RabbitMQ and SMTP of a running stack: each fixes what it claims to, leaves healthy data alone, and
//! can simply be run again.

use e2e::{
    broker::publish_to_queue,
    poll::eventually,
    process::{Finished, ServiceProcess},
    stack::{DELIVERY_TIMEOUT, Options, Stack, var},
};
use platform::{archive::ColdStorage, events::Envelope};
use prost::Message as _;
use proto::{events::v1::UserSignedUp, user_metadata::v1::GetUserByEmailRequest};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

async fn started() -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(Options::default()).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

async fn sign_up(stack: &Stack, email: &str) -> anyhow::Result<()> {
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
    let status = stack.signup(&body, None).await?.status();
    anyhow::ensure!(status == 202, "signup answered {status}");
    Ok(())
}

fn succeeded(run: &Finished) -> anyhow::Result<String> {
    let output = run.stdout.join("\n");
    anyhow::ensure!(run.status.success(), "exit {:?}: {output}\n{}", run.status, run.stderr.join("\n"));
    Ok(output)
}

async fn scalar(stack: &Stack, service: &str, query: &str) -> anyhow::Result<i64> {
    let mut db = stack.database(service).connect().await?;
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&mut db).await?)
}

async fn execute(stack: &Stack, service: &str, statement: &str) -> anyhow::Result<u64> {
    let mut db = stack.database(service).connect().await?;
    Ok(sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut db).await?.rows_affected())
}

#[tokio::test]
async fn user_metadata_repair_unsticks_the_outbox_and_leaves_healthy_data_alone() -> anyhow::Result<()> {
    let stack = started().await?;
    let healthy = unique_email("healthy");
    sign_up(&stack, &healthy).await?;
    stack.wait_processed(proto::Event::USER_SIGNED_UP, 1).await?;
    // An event that has waited an hour behind a long backoff.
    let stuck = execute(
        &stack,
        "user-metadata",
        "UPDATE outbox SET published_at = NULL, created_at = now() - interval '1 hour', \
         next_attempt_at = now() + interval '1 day', attempts = 12",
    )
    .await?;
    assert_eq!(stuck, 1);

    let dry = succeeded(&stack.admin("user-metadata", &["repair", "--dry-run"], &[]).await?)?;
    assert!(dry.contains("would make a stuck outbox event due now"), "{dry}");
    assert_eq!(scalar(&stack, "user-metadata", "SELECT count(*) FROM outbox WHERE published_at IS NULL").await?, 1);

    let real = succeeded(&stack.admin("user-metadata", &["repair"], &[]).await?)?;
    assert!(real.contains("made a stuck outbox event due now"), "{real}");
    eventually(DELIVERY_TIMEOUT, || async {
        let unpublished =
            scalar(&stack, "user-metadata", "SELECT count(*) FROM outbox WHERE published_at IS NULL").await?;
        anyhow::ensure!(unpublished == 0, "the stuck event is still unpublished");
        Ok(())
    })
    .await?;
    let user = stack.users().await?.get_user_by_email(GetUserByEmailRequest { email: healthy }).await?;
    assert!(user.into_inner().user.is_some(), "a healthy user was touched");

    let again = succeeded(&stack.admin("user-metadata", &["repair"], &[]).await?)?;
    assert!(again.contains("\"stuck_events\":0"), "{again}");
    Ok(())
}

async fn verified(stack: &Stack, email: &str) -> anyhow::Result<bool> {
    let request = GetUserByEmailRequest { email: email.to_owned() };
    let user = stack.users().await?.get_user_by_email(request).await?.into_inner().user;
    Ok(user.is_some_and(|u| u.verified_at.is_some()))
}

fn good_recipient(letter: &Envelope) -> anyhow::Result<String> {
    Ok(UserSignedUp::decode(letter.data.as_slice())?.email)
}

/// A UserSignedUp for a user only the events know, enveloped as user-metadata would.
fn synthetic_signup(email: &str) -> Envelope {
    let user_id = uuid::Uuid::now_v7().to_string();
    let event = UserSignedUp {
        user_id: user_id.clone(),
        signup_id: user_id,
        email: email.to_owned(),
        display_name: "Replayed".to_owned(),
        email_hash: vec![7; 32],
        discoverable: true,
        ..Default::default()
    };
    let time = chrono::Utc::now();
    let id = uuid::Uuid::now_v7();
    let kind = proto::Event::USER_SIGNED_UP.to_owned();
    Envelope { id, kind, source: "/e2e".to_owned(), time, data: event.encode_to_vec(), trace: Default::default() }
}

#[tokio::test]
async fn email_verification_repair_fixes_missed_verifications_and_replays_dead_letters() -> anyhow::Result<()> {
    let stack = started().await?;
    let email = unique_email("missed");
    sign_up(&stack, &email).await?;
    stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?;
    // Verified here through its attempt, never recorded in user-metadata.
    let verify = "UPDATE accounts SET verified_at = now(), verified_signup_id = signup_id WHERE email = ";
    execute(&stack, "email-verification", &format!("{verify}'{email}'")).await?;
    // One verified before the attempt was recorded is left alone: its newest attempt may be a stranger's.
    let legacy = unique_email("legacy");
    sign_up(&stack, &legacy).await?;
    stack.smtp.wait_for(&legacy, 1, DELIVERY_TIMEOUT).await?;
    execute(&stack, "email-verification", &format!("UPDATE accounts SET verified_at = now() WHERE email = '{legacy}'"))
        .await?;
    let dead = unique_email("dead-letter");
    let letter = synthetic_signup(&dead);
    let dlq = format!("{}.dlq", stack.queue("email-verification"));
    publish_to_queue(&dlq, letter.properties(), &letter.data).await?;

    let id = letter.id.to_string();
    let dry = succeeded(&stack.admin("email-verification", &["repair", "--dry-run", "--inspect", &id], &[]).await?)?;
    let user_id = UserSignedUp::decode(letter.data.as_slice())?.user_id;
    assert!(dry.contains("dead letter content") && dry.contains(&user_id), "inspecting shows the event: {dry}");
    // What it prints goes to the logs, which no deletion reaches: no address, no name.
    assert!(!dry.contains(&dead) && !dry.contains("Replayed"), "inspecting logged who the event is about: {dry}");
    assert!(dry.contains("would mark verified in user-metadata"), "{dry}");
    assert!(dry.contains("dead letter") && dry.contains(&letter.id.to_string()), "{dry}");
    assert!(!verified(&stack, &email).await?, "a dry run changed user-metadata");
    assert_eq!(e2e::broker::queue_depth(&dlq).await?, 1, "listing took the dead letter");

    let real = succeeded(&stack.admin("email-verification", &["repair", "--replay", &id], &[]).await?)?;
    assert!(real.contains("marked verified in user-metadata"), "{real}");
    assert!(verified(&stack, &email).await?);
    assert!(!verified(&stack, &legacy).await?, "verified through an attempt nobody confirmed");
    assert!(real.contains("dead letter replayed"), "{real}");
    assert_eq!(e2e::broker::queue_depth(&dlq).await?, 0);
    // The replayed event is applied: its verification mail goes out.
    let mail = stack.smtp.wait_for(&dead, 1, DELIVERY_TIMEOUT).await?;
    assert_eq!(mail.len(), 1);

    let again = succeeded(&stack.admin("email-verification", &["repair"], &[]).await?)?;
    assert!(again.contains("\"verifications_fixed\":0") && again.contains("\"dead_letters\":0"), "{again}");

    // Replaying everything when one is still poison: the run ends, the good one is applied, the poison is back.
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = stack.admin("email-verification", &["repair", "--replay", &unknown], &[]).await?;
    assert!(!missing.status.success(), "replaying an unknown dead letter succeeded");
    let good = synthetic_signup(&unique_email("replayed"));
    let mut poison = synthetic_signup(&unique_email("poison"));
    poison.data = b"\xff\xff not protobuf".to_vec();
    for letter in [&good, &poison] {
        publish_to_queue(&dlq, letter.properties(), &letter.data).await?;
    }
    let all = succeeded(&stack.admin("email-verification", &["repair", "--replay-dead-letters"], &[]).await?)?;
    assert!(all.contains("\"replayed\":2"), "{all}");
    stack.smtp.wait_for(&good_recipient(&good)?, 1, DELIVERY_TIMEOUT).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        let depth = e2e::broker::queue_depth(&dlq).await?;
        anyhow::ensure!(depth == 1, "{depth} dead letters, expected the poison back");
        Ok(())
    })
    .await?;
    for service in ["password", "friend-discovery"] {
        succeeded(&stack.admin(service, &["repair"], &[]).await?)?;
    }
    Ok(())
}

async fn archived_records(url: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let storage = ColdStorage::from_url(url)?;
    let dir = url.trim_start_matches("file://");
    let mut records = Vec::new();
    let mut pending = vec![std::path::PathBuf::from(dir)];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(".jsonl.gz") {
                let relative = path.strip_prefix(dir)?.to_string_lossy().into_owned();
                records.extend(storage.read(&relative).await?);
            }
        }
    }
    Ok(records)
}

#[tokio::test]
async fn archive_moves_old_unverified_accounts_to_cold_storage_and_every_service_forgets_them() -> anyhow::Result<()> {
    let stack = started().await?;
    let dir = std::env::temp_dir().join(format!("e2e-archive-{}", uuid::Uuid::now_v7().simple()));
    let url = format!("file://{}", dir.display());
    let old: Vec<String> = (0..3).map(|i| unique_email(&format!("old{i}"))).collect();
    let recent = unique_email("recent");
    for email in old.iter().chain([&recent]) {
        sign_up(&stack, email).await?;
    }
    stack.wait_processed(proto::Event::USER_SIGNED_UP, 4).await?;
    execute(
        &stack,
        "user-metadata",
        "UPDATE users SET created_at = now() - interval '40 days', updated_at = now() - interval '40 days' \
         WHERE email LIKE 'old%'",
    )
    .await?;
    let env = [var("ARCHIVE_URL", &url), var("ARCHIVE_BATCH_SIZE", 2)];
    let mut expected: Vec<String> = {
        let mut db = stack.database("user-metadata").connect().await?;
        sqlx::query_scalar("SELECT id::text FROM users WHERE email LIKE 'old%'").fetch_all(&mut db).await?
    };
    expected.sort();

    let dry = succeeded(&stack.admin("user-metadata", &["archive", "--dry-run"], &env).await?)?;
    assert!(
        dry.contains("would archive and remove never-verified accounts") && dry.contains("\"accounts\":3"),
        "{dry}"
    );
    assert_eq!(scalar(&stack, "user-metadata", "SELECT count(*) FROM users").await?, 4);

    succeeded(&stack.admin("user-metadata", &["archive"], &env).await?)?;
    let left: Vec<String> = {
        let mut db = stack.database("user-metadata").connect().await?;
        sqlx::query_scalar("SELECT email FROM users").fetch_all(&mut db).await?
    };
    assert_eq!(left, std::slice::from_ref(&recent));
    let records = archived_records(&url).await?;
    let mut archived: Vec<String> = records.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect();
    archived.sort();
    assert_eq!(archived, expected, "the archive holds exactly the removed accounts");
    // Ids, states and times: no address or name, which a deletion (or the address's owner) would have to reach.
    let text = serde_json::to_string(&records)?;
    assert!(old.iter().all(|email| !text.contains(email.as_str())), "an address is archived: {text}");
    assert!(!text.contains("display_name"), "a name is archived: {text}");
    // UserDeleted reaches every service.
    stack.wait_processed(proto::Event::USER_DELETED, 3).await?;
    assert_eq!(scalar(&stack, "password", "SELECT count(*) FROM attempt_credentials").await?, 1);
    assert_eq!(scalar(&stack, "email-verification", "SELECT count(*) FROM accounts").await?, 1);
    assert_eq!(scalar(&stack, "friend-discovery", "SELECT count(*) FROM pending_signups").await?, 1);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn an_archive_killed_half_way_loses_nothing_and_simply_runs_again() -> anyhow::Result<()> {
    let stack = started().await?;
    let dir = std::env::temp_dir().join(format!("e2e-archive-{}", uuid::Uuid::now_v7().simple()));
    let url = format!("file://{}", dir.display());
    // Enough accounts, one per batch, that the kill lands mid-run; seeded straight into the table.
    let seeded = execute(
        &stack,
        "user-metadata",
        "INSERT INTO users (id, email, display_name, status, signup_id, created_at, updated_at) \
         SELECT id, 'old' || n || '@example.com', 'Old', 'pending_verification', id, \
                now() - interval '40 days', now() - interval '40 days' \
           FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, 400) AS n) AS seeds",
    )
    .await?;
    assert_eq!(seeded, 400);
    let mut old: Vec<String> = {
        let mut db = stack.database("user-metadata").connect().await?;
        sqlx::query_scalar("SELECT id::text FROM users").fetch_all(&mut db).await?
    };
    old.sort();
    let mut env = stack.member("user-metadata").env.clone();
    env.extend([var("ARCHIVE_URL", &url), var("ARCHIVE_BATCH_SIZE", 1)]);

    let mut first = ServiceProcess::spawn("user-metadata", &["archive"], &env)?;
    eventually(DELIVERY_TIMEOUT, || async {
        let objects = archived_records(&url).await.map(|r| r.len()).unwrap_or(0);
        anyhow::ensure!(objects >= 1, "no archive object yet");
        Ok(())
    })
    .await?;
    first.sigkill()?;
    first.wait(std::time::Duration::from_secs(10)).await?;
    let remaining = scalar(&stack, "user-metadata", "SELECT count(*) FROM users").await?;
    assert!(remaining > 0, "the run finished before it was killed; nothing was tested");
    // Whatever was deleted is in the archive already.
    let archived_so_far = archived_records(&url).await?.len() as i64;
    assert!(archived_so_far + remaining >= old.len() as i64, "{archived_so_far} archived, {remaining} left");

    succeeded(&ServiceProcess::run("user-metadata", &["archive"], &env).await?)?;
    assert_eq!(scalar(&stack, "user-metadata", "SELECT count(*) FROM users").await?, 0);
    let mut archived: Vec<String> =
        archived_records(&url).await?.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect();
    archived.sort();
    assert_eq!(archived, old, "every account archived exactly once");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn email_verification_archive_moves_used_tokens_and_the_sent_mail_log() -> anyhow::Result<()> {
    let stack = started().await?;
    let dir = std::env::temp_dir().join(format!("e2e-archive-{}", uuid::Uuid::now_v7().simple()));
    let url = format!("file://{}", dir.display());
    let (confirmed, pending) = (unique_email("confirmed"), unique_email("pending"));
    sign_up(&stack, &confirmed).await?;
    sign_up(&stack, &pending).await?;
    let token = stack.smtp.wait_for(&confirmed, 1, DELIVERY_TIMEOUT).await?.remove(0).token().unwrap_or_default();
    stack.smtp.wait_for(&pending, 1, DELIVERY_TIMEOUT).await?;
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200);
    // The mail of the last day always stays (the per-address budget counts it): age everything by two days.
    for table in ["mails", "tokens"] {
        execute(&stack, "email-verification", &format!("UPDATE {table} SET created_at = now() - interval '2 days'"))
            .await?;
    }
    let env = [var("ARCHIVE_URL", &url), var("ARCHIVE_TOKENS_AFTER_DAYS", 0), var("ARCHIVE_MAIL_LOG_AFTER_DAYS", 0)];

    succeeded(&stack.admin("email-verification", &["archive"], &env).await?)?;

    // The used token and its mail went; the pending account's live token and its mail stay.
    assert_eq!(scalar(&stack, "email-verification", "SELECT count(*) FROM tokens").await?, 1);
    assert_eq!(scalar(&stack, "email-verification", "SELECT count(*) FROM mails").await?, 1);
    let records = archived_records(&url).await?;
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().any(|r| r["kind"] == "verification" && r["status"] == "sent"), "{records:?}");
    assert!(records.iter().any(|r| r["used_at"].is_string()));
    // No address (a deleted account's would stay there for good), no token's hash, no client.
    let text = serde_json::to_string(&records)?;
    for held in [confirmed.as_str(), "recipient", "token_hash", "client_hash"] {
        assert!(!text.contains(held), "{held} is archived: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn the_daily_report_matches_a_seeded_day_on_stdout_and_by_mail() -> anyhow::Result<()> {
    let stack = started().await?;
    let day = "2026-01-15";
    // Created that day: two verified that day (60 s, 180 s), one verified the next day, one pending, one still
    // registering (not counted). Created the day before, verified that day after 7200 s. And noise on other days.
    let users = [
        ("'2026-01-15 08:00:00+00'", "'2026-01-15 08:01:00+00'", "verified"),
        ("'2026-01-15 09:00:00+00'", "'2026-01-15 09:03:00+00'", "verified"),
        ("'2026-01-15 23:00:00+00'", "'2026-01-16 23:00:00+00'", "verified"),
        ("'2026-01-15 10:00:00+00'", "NULL", "pending_verification"),
        ("'2026-01-15 11:00:00+00'", "NULL", "registering"),
        ("'2026-01-14 22:30:00+00'", "'2026-01-15 00:30:00+00'", "verified"),
        ("'2026-01-13 12:00:00+00'", "'2026-01-13 12:05:00+00'", "verified"),
    ];
    for (i, (created, verified, status)) in users.iter().enumerate() {
        let id = uuid::Uuid::now_v7();
        execute(
            &stack,
            "user-metadata",
            &format!(
                "INSERT INTO users (id, email, display_name, status, signup_id, created_at, verified_at) \
                 VALUES ('{id}', 'seeded{i}@example.com', 'Seeded', '{status}', '{id}', {created}, {verified})"
            ),
        )
        .await?;
    }
    let mails = [
        ("sent", "'2026-01-15 08:00:00+00'", "'2026-01-15 08:00:05+00'"),
        ("sent", "'2026-01-15 09:00:00+00'", "'2026-01-15 09:00:05+00'"),
        ("sent", "'2026-01-14 23:59:59+00'", "'2026-01-15 00:00:09+00'"),
        ("failed", "'2026-01-15 12:00:00+00'", "NULL"),
        ("sent", "'2026-01-16 08:00:00+00'", "'2026-01-16 08:00:05+00'"),
    ];
    for (status, created, sent) in mails {
        let id = uuid::Uuid::now_v7();
        execute(
            &stack,
            "email-verification",
            &format!(
                "INSERT INTO mails (id, kind, user_id, recipient, status, created_at, sent_at) \
                 VALUES ('{id}', 'verification', '{id}', 'x@example.com', '{status}', {created}, {sent})"
            ),
        )
        .await?;
    }
    let letter = synthetic_signup(&unique_email("dead"));
    publish_to_queue(&format!("{}.dlq", stack.queue("friend-discovery")), letter.properties(), &letter.data).await?;
    let queues = ["password", "email-verification", "friend-discovery"].map(|s| format!("{}.dlq", stack.queue(s)));
    let env = [var("REPORT_DEAD_LETTER_QUEUES", queues.join(",")), var("REPORT_TO", "Ops <ops@example.com>")];

    let printed = succeeded(&stack.admin("email-verification", &["report", "--day", day, "--stdout"], &env).await?)?;

    for line in [
        "Signup daily report for 2026-01-15 (UTC)",
        "signups:                 4",
        "verifications:           3",
        "verification rate:       75.0% of that day's signups",
        "median time to verify:   180 s",
        "emails sent:             3",
        "emails failed:           1",
        "dead letters (now):      1",
    ] {
        assert!(printed.contains(line), "missing {line:?} in\n{printed}");
    }

    // A queue it cannot read is not counted as empty: the report fails and names it.
    let missing = format!("{}.nowhere.dlq", stack.queue("password"));
    let wrong = [var("REPORT_DEAD_LETTER_QUEUES", &missing), var("REPORT_TO", "Ops <ops@example.com>")];
    let failed = stack.admin("email-verification", &["report", "--day", day, "--stdout"], &wrong).await?;
    assert!(!failed.status.success(), "a report counted a queue it could not read as empty");
    let named = failed.stderr.iter().chain(&failed.stdout).any(|line| line.contains(&missing));
    assert!(named, "the queue is not named: {:?}", failed.stderr);

    succeeded(&stack.admin("email-verification", &["report", "--day", day], &env).await?)?;
    let mail = stack.smtp.wait_for("ops@example.com", 1, DELIVERY_TIMEOUT).await?.remove(0);
    assert_eq!(mail.header("Subject").as_deref(), Some("Signup daily report for 2026-01-15"));
    let body = mail.part("text/plain").unwrap_or_default();
    assert!(body.contains("signups:                 4") && body.contains("median time to verify:   180 s"), "{body}");
    Ok(())
}
