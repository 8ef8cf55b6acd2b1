//! `POST /v1/signups` through the real stack: a signup is accepted only once committed in user-metadata and
//! password, and every accepted signup reaches every subscriber exactly once in effect, whatever fails.

use std::time::Duration;

use e2e::{
    broker::{Tap, publish},
    poll::eventually,
    stack::{DELIVERY_TIMEOUT, Options, SUBSCRIBERS, Stack, subscribers_of, var},
};
use prost::Message as _;
use proto::events::v1::UserSignedUp;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const SIGNED_UP: &str = "signup.events.v1.UserSignedUp";
const EXISTING: &str = "signup.events.v1.SignupAttemptedForExistingAccount";

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

fn body(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password, "display_name": "Ada Lovelace" })
}

async fn started(options: Options) -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

/// Whether `POST /v1/sessions` takes `email` with `password` (201) or refuses it (401).
async fn signs_in(stack: &Stack, email: &str, password: &str) -> anyhow::Result<bool> {
    match stack.sign_in(email, password).await?.status().as_u16() {
        201 => Ok(true),
        401 => Ok(false),
        other => anyhow::bail!("POST /v1/sessions answered {other}"),
    }
}

async fn outbox_count(stack: &Stack, unpublished_only: bool) -> anyhow::Result<i64> {
    let mut connection = stack.database("user-metadata").connect().await?;
    let count = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE NOT $1 OR published_at IS NULL")
        .bind(unpublished_only)
        .fetch_one(&mut connection)
        .await?;
    Ok(count)
}

#[tokio::test]
async fn a_signup_is_committed_in_every_service_and_announced_once_to_each_subscriber() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("happy");
    let request = json!({
        "email": format!("  {}", email.to_uppercase()), "password": PASSWORD, "display_name": "Ada",
        "contacts": ["friend@example.com"], "locale": "en-GB"
    });

    let response = stack.signup(&request, None).await?;

    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await?;
    let answered = accepted["signup_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(accepted, json!({ "status": "verification_pending", "email": email, "signup_id": answered }));
    let mut users = stack.database("user-metadata").connect().await?;
    let (id, status): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, status FROM users WHERE email = $1").bind(&email).fetch_one(&mut users).await?;
    assert_eq!(status, "pending_verification");
    let signup_id: uuid::Uuid =
        sqlx::query_scalar("SELECT signup_id FROM users WHERE id = $1").bind(id).fetch_one(&mut users).await?;
    assert_eq!(answered, signup_id.to_string(), "the answer names another attempt than the one recorded");
    let mut passwords = stack.database("password").connect().await?;
    let phc: String = sqlx::query_scalar("SELECT phc FROM attempt_credentials WHERE signup_id = $1")
        .bind(signup_id)
        .fetch_one(&mut passwords)
        .await?;
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let promoted: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials").fetch_one(&mut passwords).await?;
    assert_eq!(promoted, 0, "an unconfirmed signup's password became an account's");
    stack.wait_processed(SIGNED_UP, 1).await?;
    for subscriber in SUBSCRIBERS {
        // password acts on no signup event: it acknowledges them without a transaction.
        let expected = i64::from(subscribers_of(SIGNED_UP).contains(&subscriber));
        assert_eq!(stack.processed(subscriber, None).await?, expected, "{subscriber}");
        let ops = stack.member(subscriber).ops_port;
        eventually(DELIVERY_TIMEOUT, || async {
            let readyz: Value = reqwest::get(format!("http://127.0.0.1:{ops}/readyz")).await?.json().await?;
            anyhow::ensure!(readyz["checks"]["consumer"] == "ok", "{subscriber}: {readyz}");
            anyhow::ensure!(readyz["status"] == "ready", "{subscriber}: {readyz}");
            Ok(())
        })
        .await?;
    }
    let seen = tap.of_type(SIGNED_UP);
    assert_eq!(seen.len(), 1);
    let event = UserSignedUp::decode(seen[0].data.as_slice())?;
    assert_eq!(seen[0].header("cloudEvents_id"), Some(event.event_id.clone()));
    assert_eq!(seen[0].header("cloudEvents_specversion").as_deref(), Some("1.0"));
    assert_eq!(seen[0].header("cloudEvents_source").as_deref(), Some("/user-metadata"));
    assert!(seen[0].header("cloudEvents_time").is_some());
    assert_eq!(seen[0].properties.content_type().as_ref().map(|c| c.as_str()), Some("application/protobuf"));
    assert_eq!(seen[0].properties.delivery_mode(), &Some(2));
    assert_eq!((event.user_id, event.email, event.locale), (id.to_string(), email, "en-GB".to_owned()));
    assert_eq!(event.signup_id, signup_id.to_string());
    assert_eq!(event.contact_hashes.len(), 1);
    assert_eq!(event.contact_hashes[0].len(), 32);
    assert_eq!(event.email_hash.len(), 32);
    assert!(event.discoverable);
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn a_signup_for_a_verified_email_keeps_its_password_and_announces_the_attempt() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("verified");
    let original = "the original owner's passphrase";
    let intruder = "an intruder's different passphrase";
    assert_eq!(stack.signup(&body(&email, original), None).await?.status(), 202);
    stack.mark_verified(&email).await?;
    // The verified signup's password becomes the account's once password has applied EmailVerified.
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(signs_in(&stack, &email, original).await?, "the owner's password does not sign in yet");
        Ok(())
    })
    .await?;

    let response = stack.signup(&body(&email, intruder), None).await?;

    assert_eq!(response.status(), 202);
    let mut accepted: Value = response.json().await?;
    let signup_id = accepted.as_object_mut().and_then(|a| a.remove("signup_id"));
    assert!(signup_id.as_ref().and_then(Value::as_str).is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()));
    assert_eq!(accepted, json!({ "status": "verification_pending", "email": email }), "the answer tells it apart");
    assert!(signs_in(&stack, &email, original).await?, "the owner's password must still work");
    assert!(!signs_in(&stack, &email, intruder).await?, "the attempt's password must not");
    stack.wait_processed(EXISTING, 1).await?;
    for subscriber in SUBSCRIBERS {
        let expected = |kind| i64::from(subscribers_of(kind).contains(&subscriber));
        assert_eq!(stack.processed(subscriber, Some(EXISTING)).await?, expected(EXISTING), "{subscriber}");
        assert_eq!(stack.processed(subscriber, Some(SIGNED_UP)).await?, expected(SIGNED_UP), "{subscriber}");
    }
    Ok(())
}

#[tokio::test]
async fn a_second_signup_for_a_pending_email_is_an_attempt_of_its_own() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("pending");
    let (first, second) = ("my first idea of a passphrase", "my second, better passphrase");

    assert_eq!(stack.signup(&body(&email, first), None).await?.status(), 202);
    assert_eq!(stack.signup(&body(&email, second), None).await?.status(), 202);

    // Until one attempt is confirmed, neither password is the account's: neither signs in.
    assert!(!signs_in(&stack, &email, second).await?);
    assert!(!signs_in(&stack, &email, first).await?);
    let mut passwords = stack.database("password").connect().await?;
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempt_credentials").fetch_one(&mut passwords).await?;
    let promoted: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials").fetch_one(&mut passwords).await?;
    assert_eq!((attempts, promoted), (2, 0));
    // Both are announced, each with its own signup id.
    stack.wait_processed(SIGNED_UP, 2).await?;
    Ok(())
}

#[tokio::test]
async fn with_the_password_service_down_a_signup_is_refused_then_succeeds_once_it_is_back() -> anyhow::Result<()> {
    let mut stack = started(Options::default()).await?;
    let email = unique_email("down");
    stack.stop("password").await?;

    let refused = stack.signup(&body(&email, PASSWORD), None).await?;

    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some(), "503 without Retry-After");
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert_eq!(outbox_count(&stack, false).await?, 0, "a refused signup was announced");
    let mut users = stack.database("user-metadata").connect().await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;
    assert_eq!(rows, 0, "a signup refused for its password wrote a user row");

    stack.restart("password").await?;
    let accepted = eventually(Duration::from_secs(20), || async {
        let response = stack.signup(&body(&email, PASSWORD), None).await?;
        anyhow::ensure!(response.status() == 202, "still {}", response.status());
        Ok(())
    })
    .await;

    accepted?;
    stack.wait_processed(SIGNED_UP, 1).await?;
    for subscriber in subscribers_of(SIGNED_UP) {
        assert_eq!(stack.processed(subscriber, Some(SIGNED_UP)).await?, 1, "{subscriber}");
    }
    Ok(())
}

#[tokio::test]
async fn a_signup_accepted_while_the_broker_is_unreachable_is_announced_after_recovery() -> anyhow::Result<()> {
    let stack = started(Options { proxy_user_metadata_broker: true, ..Options::default() }).await?;
    let proxy = stack.broker_proxy.as_ref().expect("proxy");
    proxy.cut();

    let user_metadata_ops = stack.member("user-metadata").ops_port;
    eventually(DELIVERY_TIMEOUT, || async {
        let body: Value = reqwest::get(format!("http://127.0.0.1:{user_metadata_ops}/readyz")).await?.json().await?;
        anyhow::ensure!(body["status"] == "degraded", "user-metadata not degraded yet: {body}");
        Ok(())
    })
    .await?;

    let response = stack.signup(&body(&unique_email("offline"), PASSWORD), None).await?;

    assert_eq!(response.status(), 202);
    assert_eq!(outbox_count(&stack, true).await?, 1, "the event must wait in the outbox");
    let api_ops = stack.member("signup-api").ops_port;
    let api_ready = stack.http().get(format!("http://127.0.0.1:{api_ops}/readyz")).send().await?.status();
    assert_eq!(api_ready, 200, "a broker outage must not take the API out of rotation");
    proxy.restore();
    stack.wait_processed(SIGNED_UP, 1).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(outbox_count(&stack, true).await? == 0, "outbox not drained");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_relay_forgets_events_published_before_the_retention_and_keeps_every_other() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    for label in ["old", "recent"] {
        assert_eq!(stack.signup(&body(&unique_email(label), PASSWORD), None).await?.status(), 202);
    }
    stack.wait_processed(SIGNED_UP, 2).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(outbox_count(&stack, true).await? == 0, "not marked published yet");
        Ok(())
    })
    .await?;
    let mut outbox = stack.database("user-metadata").connect().await?;
    // The first signup's event went out eight days ago (the retention is seven); an event as old that was never
    // published (due tomorrow) must stay until it is.
    let backdated = sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '8 days', published_at = now() - interval '8 days' \
         WHERE id = (SELECT id FROM outbox ORDER BY created_at LIMIT 1)",
    )
    .execute(&mut outbox)
    .await?;
    assert_eq!(backdated.rows_affected(), 1);
    sqlx::query(
        "INSERT INTO outbox (id, event_type, payload, created_at, next_attempt_at) \
         VALUES ($1, 'signup.events.v1.UserSignedUp', '', now() - interval '8 days', now() + interval '1 day')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut outbox)
    .await?;
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(outbox_count(&stack, false).await? == 2, "the event published eight days ago is still kept");
        Ok(())
    })
    .await?;
    let kept: Vec<(bool, bool)> = sqlx::query_as(
        "SELECT published_at IS NOT NULL, created_at > now() - interval '1 hour' FROM outbox ORDER BY created_at",
    )
    .fetch_all(&mut outbox)
    .await?;
    assert_eq!(kept, [(false, false), (true, true)], "the unpublished one and the recent one are kept");
    Ok(())
}

/// The relay's linger: the first event after a quiet spell goes out at once; the events written after it wait until
/// `OUTBOX_LINGER_MS` after that batch began, and those written meanwhile go out together, in one batch (one
/// transaction: one `published_at`). Every one of them is delivered.
#[tokio::test]
async fn events_written_while_the_relay_lingers_go_out_together_after_it() -> anyhow::Result<()> {
    let linger = chrono::TimeDelta::milliseconds(1000);
    let options = Options { env: vec![("user-metadata", "OUTBOX_LINGER_MS", "1000".to_owned())], ..Options::default() };
    let stack = started(options).await?;
    assert_eq!(stack.signup(&body(&unique_email("first"), PASSWORD), None).await?.status(), 202);
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(outbox_count(&stack, true).await? == 0, "the first event is not published yet");
        Ok(())
    })
    .await?;
    let later = 3;
    for i in 0..later {
        let response = stack.signup(&body(&unique_email(&format!("later{i}")), PASSWORD), None).await?;
        assert_eq!(response.status(), 202);
    }
    stack.wait_processed(SIGNED_UP, 1 + later).await?;

    let mut outbox = stack.database("user-metadata").connect().await?;
    let rows: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT created_at, published_at FROM outbox ORDER BY created_at")
            .fetch_all(&mut outbox)
            .await?;
    assert_eq!(rows.len() as i64, 1 + later);
    let first = rows[0].1;
    // A batch's `published_at` is the time its transaction began: at most a round trip after the relay's clock
    // for the linger started, hence the slack.
    let slack = chrono::TimeDelta::milliseconds(300);
    for (created, published) in &rows[1..] {
        assert!(
            *published - first >= linger - slack,
            "written {created}, published {published}: within the linger of {first}"
        );
    }
    // Written well within the linger (on a loaded machine maybe none is): committed before the next batch began,
    // so all in it.
    let within: Vec<_> =
        rows[1..].iter().filter(|(created, _)| *created - first < linger / 2).map(|(_, p)| p).collect();
    assert!(
        within.windows(2).all(|pair| pair[0] == pair[1]),
        "events written within the linger went out apart: {within:?}"
    );
    Ok(())
}

#[tokio::test]
async fn killing_the_relay_mid_stream_neither_loses_nor_duplicates_an_event() -> anyhow::Result<()> {
    let options = Options {
        proxy_user_metadata_broker: true,
        env: vec![("user-metadata", "OUTBOX_BATCH_SIZE", "1".to_owned())],
        ..Options::default()
    };
    let mut stack = started(options).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    stack.broker_proxy.as_ref().expect("proxy").cut();
    let total = 30;
    for i in 0..total {
        let response = stack.signup(&body(&unique_email(&format!("stream{i}")), PASSWORD), None).await?;
        assert_eq!(response.status(), 202);
    }

    let proxy = stack.broker_proxy.as_ref().expect("proxy");
    proxy.restore();
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(!tap.of_type(SIGNED_UP).is_empty(), "nothing published yet");
        Ok(())
    })
    .await?;
    // Cut the broker off again and crash the relay mid-stream: some events are out, the rest are not.
    proxy.cut();
    stack.kill("user-metadata").await?;
    let published_before_crash = tap.of_type(SIGNED_UP).len();
    stack.broker_proxy.as_ref().expect("proxy").restore();
    stack.restart("user-metadata").await?;

    stack.wait_processed(SIGNED_UP, total).await?;
    let mut outbox = stack.database("user-metadata").connect().await?;
    let mut announced: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(&mut outbox).await?;
    announced.sort();
    for subscriber in subscribers_of(SIGNED_UP) {
        let mut db = stack.database(subscriber).connect().await?;
        let mut applied: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM processed_events").fetch_all(&mut db).await?;
        applied.sort();
        assert_eq!(applied, announced, "{subscriber} must apply every announced event exactly once");
    }
    assert!(
        published_before_crash > 0 && published_before_crash < total as usize,
        "the crash was not mid-stream: {published_before_crash} of {total} published before it"
    );
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn a_redelivered_event_has_no_second_effect() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    assert_eq!(stack.signup(&body(&unique_email("redelivered"), PASSWORD), None).await?.status(), 202);
    stack.wait_processed(SIGNED_UP, 1).await?;
    let original = eventually(DELIVERY_TIMEOUT, || async {
        tap.of_type(SIGNED_UP).into_iter().next().ok_or_else(|| anyhow::anyhow!("not seen yet"))
    })
    .await?;

    publish(&stack.exchange, original.properties.clone(), &original.data).await?;

    for subscriber in subscribers_of(SIGNED_UP) {
        let member = stack.member(subscriber);
        eventually(DELIVERY_TIMEOUT, || async {
            let duplicate_seen = member.all_stdout().iter().any(|l| l.contains("event already applied"));
            anyhow::ensure!(duplicate_seen, "{subscriber} has not seen the redelivery yet");
            Ok(())
        })
        .await?;
        assert_eq!(stack.processed(subscriber, None).await?, 1, "{subscriber} applied the redelivery");
    }
    tap.close().await;
    Ok(())
}

/// A consumer's batch is recorded in one statement (`record_once`): an event is new once, the first time it appears
/// in the batch or in any batch before, and the users its events are about stay locked until the transaction ends.
#[tokio::test]
async fn a_batch_records_each_event_once_and_locks_its_users_until_it_commits() -> anyhow::Result<()> {
    let topology = e2e::broker::TestTopology::new();
    let database = e2e::database::TestDatabase::create("friend-discovery").await?;
    let mut env = vec![var("DATABASE_URL", database.url()), var("AMQP_URL", e2e::backing::amqp_url())];
    env.extend(topology.env("friend-discovery"));
    let migrated = e2e::process::ServiceProcess::run("friend-discovery", &["migrate"], &env).await?;
    anyhow::ensure!(migrated.status.success(), "migrate: {:?}", migrated.stderr);
    let event = || platform::events::Envelope {
        id: uuid::Uuid::now_v7(),
        kind: SIGNED_UP.to_owned(),
        source: "/e2e".to_owned(),
        time: chrono::Utc::now(),
        data: Vec::new(),
        trace: platform::propagation::TraceContext::default(),
    };
    let (first, second, third, user) = (event(), event(), event(), uuid::Uuid::now_v7());
    let user_locked = "SELECT NOT pg_try_advisory_xact_lock(hashtextextended($1::text, 0))";
    let (mut consumer, mut other) = (database.connect().await?, database.connect().await?);

    sqlx::query("BEGIN").execute(&mut consumer).await?;
    let batch = [(&first, Some(user)), (&second, None), (&first, Some(user))];
    let new = platform::events::record_once(&mut consumer, &batch).await?;
    assert_eq!(new, [true, true, false], "an event twice in one batch is new the first time only");
    let locked: bool = sqlx::query_scalar(user_locked).bind(user).fetch_one(&mut other).await?;
    assert!(locked, "the batch's user is not locked while its transaction is open");
    sqlx::query("COMMIT").execute(&mut consumer).await?;
    let locked: bool = sqlx::query_scalar(user_locked).bind(user).fetch_one(&mut other).await?;
    assert!(!locked, "the user is still locked after the commit");

    let new = platform::events::record_once(&mut consumer, &[(&second, None), (&third, Some(user))]).await?;
    assert_eq!(new, [false, true], "an event recorded by an earlier batch is new again");
    Ok(())
}

#[tokio::test]
async fn a_month_old_redelivery_is_a_duplicate_while_remembered_and_dead_lettered_once_forgotten() -> anyhow::Result<()>
{
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let email = unique_email("long-ago");
    assert_eq!(stack.signup(&body(&email, PASSWORD), None).await?.status(), 202);
    stack.wait_processed(SIGNED_UP, 1).await?;
    stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?;
    let original = eventually(DELIVERY_TIMEOUT, || async {
        tap.of_type(SIGNED_UP).into_iter().next().ok_or_else(|| anyhow::anyhow!("not seen yet"))
    })
    .await?;
    // It comes again as if 31 days later (the window is 30): a relay whose mark was lost, back after a month.
    let mut headers = original.properties.headers().clone().unwrap_or_default();
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(31)).to_rfc3339();
    headers.insert("cloudEvents_time".into(), lapin::types::AMQPValue::LongString(long_ago.as_str().into()));
    let redelivery = original.properties.clone().with_headers(headers);
    // While a subscriber still holds its record (kept an hour past the window), it is a duplicate, acknowledged.
    publish(&stack.exchange, redelivery.clone(), &original.data).await?;
    for subscriber in subscribers_of(SIGNED_UP) {
        let member = stack.member(subscriber);
        eventually(DELIVERY_TIMEOUT, || async {
            let duplicates = member.all_stdout().iter().filter(|l| l.contains("event already applied")).count();
            anyhow::ensure!(duplicates == 1, "{subscriber} has not acknowledged the redelivery as a duplicate");
            Ok(())
        })
        .await?;
    }
    // Once the subscribers have forgotten it, it comes once more.
    for subscriber in subscribers_of(SIGNED_UP) {
        let mut db = stack.database(subscriber).connect().await?;
        sqlx::query("DELETE FROM processed_events").execute(&mut db).await?;
    }
    publish(&stack.exchange, redelivery, &original.data).await?;

    for subscriber in subscribers_of(SIGNED_UP) {
        let dead_letters = format!("{}.dlq", stack.queue(subscriber));
        eventually(DELIVERY_TIMEOUT, || async {
            let depth = e2e::broker::queue_depth(&dead_letters).await?;
            anyhow::ensure!(depth == 1, "{dead_letters} holds {depth}, expected the expired event");
            Ok(())
        })
        .await?;
        assert_eq!(stack.processed(subscriber, None).await?, 0, "{subscriber} applied the event a second time");
    }
    assert_eq!(stack.smtp.messages_to(&email).len(), 1, "a second verification mail was sent");
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn a_consumer_forgets_the_records_of_events_past_the_dedup_window_and_keeps_every_other() -> anyhow::Result<()> {
    let mut stack = started(Options::default()).await?;
    assert_eq!(stack.signup(&body(&unique_email("recorded"), PASSWORD), None).await?.status(), 202);
    stack.wait_processed(SIGNED_UP, 1).await?;
    let days_ago = |days: u64| {
        let at = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
        let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, since_epoch.as_secs(), 0))
    };
    // Beside the signup's own record: one applied 32 days ago (past the 30-day window and its hour of margin),
    // one 29 days ago, and one an hour ago whose id (not a v7 one) sorts before every other.
    let (past, inside, low) = (days_ago(32), days_ago(29), uuid::Uuid::from_u128(1));
    for subscriber in subscribers_of(SIGNED_UP) {
        let mut db = stack.database(subscriber).connect().await?;
        for (id, age) in [(past, "32 days"), (inside, "29 days"), (low, "1 hour")] {
            sqlx::query(
                "INSERT INTO processed_events (event_id, event_type, processed_at) \
                 VALUES ($1, 'signup.events.v1.UserSignedUp', now() - $2::interval)",
            )
            .bind(id)
            .bind(age)
            .execute(&mut db)
            .await?;
        }
        // A consumer forgets when it starts, then every minute.
        stack.stop(subscriber).await?;
        stack.restart(subscriber).await?;
    }
    for subscriber in subscribers_of(SIGNED_UP) {
        let query = "SELECT count(*) FROM processed_events WHERE event_id = $1";
        eventually(DELIVERY_TIMEOUT, || async {
            let mut db = stack.database(subscriber).connect().await?;
            let count: i64 = sqlx::query_scalar(query).bind(past).fetch_one(&mut db).await?;
            anyhow::ensure!(count == 0, "{subscriber} still remembers the event applied 32 days ago");
            Ok(())
        })
        .await?;
        let mut db = stack.database(subscriber).connect().await?;
        let kept: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY event_id").fetch_all(&mut db).await?;
        assert_eq!(kept.len(), 3, "{subscriber} kept {kept:?}");
        assert!([low, inside].iter().all(|id| kept.contains(id)), "{subscriber} forgot a record inside the window");
    }
    Ok(())
}

#[tokio::test]
async fn an_idempotent_retry_creates_nothing_new_and_another_body_with_the_same_key_is_refused() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("idempotent");
    let key = format!("key-{}", uuid::Uuid::now_v7());

    let first = stack.signup(&body(&email, PASSWORD), Some(&key)).await?;
    let retry = stack.signup(&body(&email, PASSWORD), Some(&key)).await?;
    let changed = stack
        .signup(&json!({ "email": email, "password": PASSWORD, "display_name": "Someone Else" }), Some(&key))
        .await?;

    assert_eq!(first.status(), 202);
    assert_eq!(retry.status(), 202);
    let first: Value = first.json().await?;
    assert_eq!(first, retry.json::<Value>().await?, "the retry was not told the first answer, its signup_id included");
    assert_eq!(changed.status(), 422);
    let problem: Value = changed.json().await?;
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    let mut users = stack.database("user-metadata").connect().await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;
    assert_eq!(count, 1);
    let attempt: uuid::Uuid = sqlx::query_scalar("SELECT signup_id FROM signup_attempts").fetch_one(&mut users).await?;
    assert_eq!(first["signup_id"], attempt.to_string(), "the answer names another attempt than the one recorded");
    assert_eq!(outbox_count(&stack, false).await?, 1, "a retry announced a second signup");
    Ok(())
}

/// Attack: squatting an `Idempotency-Key`. Keys are the client's word, and some are predictable (the README's
/// example key, a counter, a timestamp): one signup of any address with a key made every later signup with that key
/// a 422 for a day, so a client's own signup failed until it changed keys. A key is now scoped to its email. Before:
/// the second signup was `422 /problems/idempotency-key-reused`.
#[tokio::test]
async fn a_key_someone_else_used_first_for_another_address_refuses_nothing() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (squatter, owner) = (unique_email("squatter"), unique_email("owner"));
    let key = "7f1c2a";

    let squatted = stack.signup(&body(&squatter, PASSWORD), Some(key)).await?.status();
    let owners = stack.signup(&body(&owner, PASSWORD), Some(key)).await?;
    let owners_status = owners.status();
    let owners_answer: Value = owners.json().await?;
    assert_eq!(squatted, 202);
    assert_eq!(owners_status, 202, "another address's earlier use of the key refused the owner: {owners_answer}");
    let retry = stack.signup(&body(&owner, PASSWORD), Some(key)).await?;
    let (retry_status, retry_answer): (_, Value) = (retry.status(), retry.json().await?);
    stack.smtp.wait_for(&owner, 1, DELIVERY_TIMEOUT).await?;

    assert_eq!((retry_status, &retry_answer), (owners_status, &owners_answer), "the owner's retry is not idempotent");
    assert_eq!(outbox_count(&stack, false).await?, 2, "a retry announced a second signup");
    Ok(())
}

/// A signup for an address with a verified account stores its password's hash (so it costs what any signup costs),
/// which nothing will use: password removes it once the attempt is announced, rather than keep a stranger's (or the
/// owner's) typed password for `ATTEMPT_CREDENTIAL_TTL_DAYS`, even past the account's deletion.
#[tokio::test]
async fn a_signup_for_a_verified_address_leaves_no_password_hash_behind() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("verified");
    assert_eq!(stack.signup(&body(&email, PASSWORD), None).await?.status(), 202);
    stack.mark_verified(&email).await?;
    stack.wait_processed(proto::Event::EMAIL_VERIFIED, 1).await?;
    let mut passwords = stack.database("password").connect().await?;
    let count = "SELECT count(*) FROM attempt_credentials";
    assert_eq!(sqlx::query_scalar::<_, i64>(count).fetch_one(&mut passwords).await?, 0, "the verified attempt's");

    let stranger = body(&email, "a stranger's battery staple horse");
    assert_eq!(stack.signup(&stranger, None).await?.status(), 202);
    stack.wait_processed(EXISTING, 1).await?;
    let left: i64 = sqlx::query_scalar(count).fetch_one(&mut passwords).await?;
    assert_eq!(left, 0, "the attempt's password hash outlived its announcement");
    Ok(())
}

/// A signup user-metadata does not record (a replay under its `Idempotency-Key`, or the key reused with another
/// body) leaves no password hash behind: no event names such an attempt, so nothing else would ever remove it, not
/// even the account's deletion.
#[tokio::test]
async fn a_replayed_or_refused_signup_leaves_no_password_hash_behind() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("replayed");
    let (client, key) = ("127.0.0.1", "a7f3-replayed");
    let first = signup_from(&stack, client, &body(&email, PASSWORD), key).await?;
    assert_eq!(first.0, 202);
    assert_eq!(signup_from(&stack, client, &body(&email, PASSWORD), key).await?, first, "not a replay");
    let other = signup_from(&stack, client, &body(&email, "another battery staple horse"), key).await?;
    assert_eq!((other.0, &other.1["type"]), (422, &json!("/problems/idempotency-key-reused")));

    let mut passwords = stack.database("password").connect().await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM attempt_credentials").fetch_one(&mut passwords).await?;
    assert_eq!(stored, 1, "the replay's or the refused signup's password hash was kept");
    // The one kept is the attempt user-metadata recorded.
    let mut users = stack.database("user-metadata").connect().await?;
    let recorded: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT signup_id FROM signup_attempts").fetch_all(&mut users).await?;
    let kept: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT signup_id FROM attempt_credentials").fetch_all(&mut passwords).await?;
    assert_eq!(kept, recorded);
    Ok(())
}

/// `POST /v1/signups` from `client` (as the trusted proxy in front says) with `key`; the status and the answer.
async fn signup_from(stack: &Stack, client: &str, body: &Value, key: &str) -> anyhow::Result<(u16, Value)> {
    let request = stack.http().post(format!("{}/v1/signups", stack.api_url()));
    let request = request.header("x-forwarded-for", client).header("idempotency-key", key).json(body);
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Attack: the victim's (predictable) `Idempotency-Key` sent from another network with the victim's address and
/// another body. Scoped to the email alone, the 422 told the attacker that the address had signed up that day (and,
/// knowing the rest of the body, whether a guessed password was the one sent), and a key used first made the
/// victim's own signup a 422. A key is now scoped to the client's network too. Before: both were
/// `422 /problems/idempotency-key-reused`.
#[tokio::test]
async fn the_victims_key_from_another_network_tells_nothing_and_blocks_nothing() -> anyhow::Result<()> {
    let env = vec![("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let (victim, attacker) = ("198.51.100.20", "203.0.113.20");
    let email = unique_email("victim");
    let (key, squatted_key) = ("7f1c2a", "7f1c2b");

    let first = signup_from(&stack, victim, &body(&email, PASSWORD), key).await?;
    assert_eq!(first.0, 202);
    let probe = signup_from(&stack, attacker, &body(&email, "a guessed battery staple horse"), key).await?;
    assert_eq!(probe.0, 202, "another network's use of the victim's key told it apart: {}", probe.1);
    let squat = signup_from(&stack, attacker, &body(&email, "a guessed battery staple horse"), squatted_key).await?;
    let owners = signup_from(&stack, victim, &body(&email, PASSWORD), squatted_key).await?;
    assert_eq!((squat.0, owners.0), (202, 202), "a key another network used first refused the owner: {}", owners.1);

    // The victim's own retry is still a replay: the same answer, nothing new announced.
    let retry = signup_from(&stack, victim, &body(&email, PASSWORD), key).await?;
    assert_eq!(retry, first, "the owner's retry is not idempotent");
    assert_eq!(outbox_count(&stack, false).await?, 4, "a retry announced another signup");
    Ok(())
}

#[tokio::test]
async fn canary_secrets_appear_in_no_log_line_database_or_message() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let password = format!("canary password {marker}");
    let contact = format!("canary-contact-{marker}@friends.example");
    let email = unique_email("canary");
    let request = json!({ "email": email, "password": password, "display_name": "Canary", "contacts": [contact] });

    assert_eq!(stack.signup(&request, None).await?.status(), 202);
    stack.wait_processed(SIGNED_UP, 1).await?;
    // The link's token, and the tokens of a sign-in (its session, its device), presented again.
    let link = stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?.remove(0).token().unwrap_or_default();
    assert_eq!(stack.confirm(&link, &password).await?.status(), 200);
    let url = format!("{}/v1/sessions", stack.api_url());
    let first: Value =
        stack.http().post(&url).json(&json!({ "email": email, "password": password })).send().await?.json().await?;
    let device = first["device_token"].as_str().unwrap_or_default().to_owned();
    let again = json!({ "email": email, "password": password, "device_token": device });
    let second: Value = stack.http().post(&url).json(&again).send().await?.json().await?;
    let sessions = [&first, &second].map(|answer| answer["token"].as_str().unwrap_or_default().to_owned());
    assert!([&link, &device, &sessions[0], &sessions[1]].iter().all(|token| token.len() == 43), "{first} {second}");
    assert_eq!(stack.me(&sessions[1]).await?.status(), 200, "the second session");

    let mut needles = vec![password.clone(), contact.clone(), hex(&password), hex(&contact)];
    needles.extend([link, device].into_iter().chain(sessions));
    for member in &stack.members {
        let output = [member.all_stdout(), member.process.stderr_lines()].concat().join("\n").to_lowercase();
        for needle in &needles {
            assert!(!output.contains(&needle.to_lowercase()), "{} logged a canary", member.process.name());
        }
    }
    for database in stack.databases() {
        let dump = database.dump().await?.to_lowercase();
        for needle in &needles {
            assert!(!dump.contains(&needle.to_lowercase()), "database {} holds a canary", database.name());
        }
    }
    for message in tap.seen() {
        let text = format!("{:?} {}", message.properties, String::from_utf8_lossy(&message.data)).to_lowercase();
        for needle in &needles {
            assert!(!text.contains(&needle.to_lowercase()), "a message carries a canary");
        }
    }
    tap.close().await;
    Ok(())
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The properties of an event of type `kind` as the relay sends them; with only the type when not `complete`.
fn event_properties(kind: &str, complete: bool) -> lapin::BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    let id = uuid::Uuid::now_v7().to_string();
    let time = chrono::Utc::now().to_rfc3339();
    let attributes = [
        ("cloudEvents_type", kind),
        ("cloudEvents_id", id.as_str()),
        ("cloudEvents_source", "/somewhere"),
        ("cloudEvents_time", time.as_str()),
    ];
    for (key, value) in attributes.into_iter().take(if complete { 4 } else { 1 }) {
        headers.insert(key.into(), lapin::types::AMQPValue::LongString(value.into()));
    }
    lapin::BasicProperties::default().with_headers(headers)
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_by_each_subscriber_and_applies_nothing() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    for subscriber in SUBSCRIBERS {
        // The queues exist once the consumers declared them; wait for that before publishing.
        eventually(DELIVERY_TIMEOUT, || e2e::broker::queue_depth(stack.queue(subscriber))).await?;
    }

    publish(&stack.exchange, event_properties(SIGNED_UP, true), b"\xff\xff not protobuf").await?;
    publish(&stack.exchange, event_properties(proto::Event::USER_DELETED, true), b"\xff\xff not protobuf").await?;
    publish(&stack.exchange, event_properties(proto::Event::USER_DELETED, false), b"no id, source or time").await?;

    for subscriber in SUBSCRIBERS {
        // Every subscriber acts on UserDeleted: it rejects the undecodable one and the malformed one. The signup
        // event reaches only its subscribers.
        let expected = if subscribers_of(SIGNED_UP).contains(&subscriber) { 3 } else { 2 };
        let dead_letters = format!("{}.dlq", stack.queue(subscriber));
        eventually(DELIVERY_TIMEOUT, || async {
            let depth = e2e::broker::queue_depth(&dead_letters).await?;
            anyhow::ensure!(depth == expected, "{dead_letters} holds {depth}, expected {expected}");
            let left = e2e::broker::queue_depth(stack.queue(subscriber)).await?;
            anyhow::ensure!(left == 0, "{subscriber} has {left} messages left");
            Ok(())
        })
        .await?;
        assert_eq!(stack.processed(subscriber, None).await?, 0, "{subscriber} applied a poison message");
    }
    Ok(())
}

#[tokio::test]
async fn a_queue_receives_only_the_event_types_its_service_acts_on() -> anyhow::Result<()> {
    let mut stack = started(Options::default()).await?;
    let queue = stack.queue("password").to_owned();
    // The queue as a release before the type filter left it: bound to the fanout itself. Declaring it again (at
    // start, as `migrate` does) removes that binding.
    e2e::broker::bind_queue(&queue, &stack.exchange).await?;
    stack.stop("password").await?;
    stack.restart("password").await?;
    // password stopped, what reaches its queue stays there to be counted.
    stack.stop("password").await?;
    assert_eq!(e2e::broker::queue_depth(&queue).await?, 0);

    let kinds = [SIGNED_UP, EXISTING, proto::Event::DISCOVERABILITY_CHANGED, proto::Event::USER_DELETED];
    for kind in kinds {
        publish(&stack.exchange, event_properties(kind, true), b"").await?;
    }
    // Published with confirms: each is routed and stored by the time its publish returns.
    let acted_on = kinds.iter().filter(|kind| subscribers_of(kind).contains(&"password")).count();
    assert_eq!(acted_on, 2, "of these, password acts on SignupAttemptedForExistingAccount and UserDeleted only");
    assert_eq!(e2e::broker::queue_depth(&queue).await?, 2, "password's queue took types it does not act on");
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_signups_in_flight_finish_before_signup_api_exits() -> anyhow::Result<()> {
    // Room for all ten in the hashing queue (this test is about draining, not load shedding), one hashing thread
    // and a slower hash (about 0.1 s), so most of them are still waiting for it when the signal arrives, however
    // busy the machine is. The last of them waits for nine hashes: on a busy machine longer than the default gRPC
    // deadline, which would answer it 503 before any signal (deadlines have tests of their own).
    let options = Options {
        env: vec![
            ("signup-api", "GRPC_DEADLINE_MS", "60000".to_owned()),
            ("password", "HASHING_QUEUE_LIMIT", "20".to_owned()),
            ("password", "HASHING_THREADS", "1".to_owned()),
            ("password", "ARGON2_ITERATIONS", "8".to_owned()),
        ],
        ..Options::default()
    };
    let mut stack = started(options).await?;
    let emails: Vec<String> = (0..10).map(|i| unique_email(&format!("inflight{i}"))).collect();
    let requests: Vec<_> = emails
        .iter()
        .map(|email| {
            let (client, url, body) =
                (stack.http().clone(), format!("{}/v1/signups", stack.api_url()), body(email, PASSWORD));
            tokio::spawn(async move { client.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Every request is inside the system once it is hashing, waiting for the one hashing thread, or committed; the
    // signal goes out when all ten are, some committed and the others still waiting for the hashing thread.
    let password_ops = stack.member("password").ops_port;
    let database = stack.database("user-metadata");
    eventually(DELIVERY_TIMEOUT, || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{password_ops}/metrics")).await?.text().await?;
        let hashing: Vec<&str> = metrics.lines().filter(|l| l.starts_with("password_hashing_in_progress")).collect();
        let waiting = hashing
            .iter()
            .filter(|l| l.contains("kind=\"signup\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        let mut users = database.connect().await?;
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;
        // All ten read by signup-api (a request it has not read yet is not in flight: the shutdown closes its
        // connection), some committed, the others in password's hands.
        let inside = committed as f64 + waiting;
        anyhow::ensure!(
            committed >= 1 && waiting >= 2.0 && inside >= 10.0,
            "{committed} committed, hashing: {hashing:?}"
        );
        Ok(())
    })
    .await?;
    let committed_before_signal = outbox_count(&stack, false).await?;

    stack.stop("signup-api").await?;

    assert!(committed_before_signal < 10, "nothing was in flight: all {committed_before_signal} already committed");
    for request in requests {
        assert_eq!(request.await??, 202, "an in-flight signup was cut off by the shutdown");
    }
    let exited = stack.member("signup-api").process.stdout_lines();
    assert!(exited.iter().any(|l| l.contains("\"stopped\"")), "signup-api did not stop cleanly");
    assert_eq!(outbox_count(&stack, false).await?, 10, "every accepted signup must be committed");
    Ok(())
}

#[tokio::test]
async fn an_outage_of_a_subscribers_own_database_delays_its_events_but_dead_letters_none() -> anyhow::Result<()> {
    let options = Options {
        env: vec![
            ("email-verification", "EVENTS_DELIVERY_LIMIT", "2".to_owned()),
            ("email-verification", "DATABASE_CONNECT_TIMEOUT_SECS", "1".to_owned()),
        ],
        ..Options::default()
    };
    let stack = started(options).await?;
    let database = stack.database("email-verification");
    database.cut_off().await?;

    assert_eq!(stack.signup(&body(&unique_email("outage"), PASSWORD), None).await?.status(), 202);
    let member = stack.member("email-verification");
    eventually(DELIVERY_TIMEOUT, || async {
        let retries = member.all_stdout().iter().filter(|l| l.contains("event not applied yet")).count();
        anyhow::ensure!(retries >= 3, "{retries} retries so far");
        Ok(())
    })
    .await?;
    database.restore().await?;

    stack.wait_processed(SIGNED_UP, 1).await?;
    let dead_letters = e2e::broker::queue_depth(&format!("{}.dlq", stack.queue("email-verification"))).await?;
    assert_eq!(dead_letters, 0, "a good event was dead-lettered during the outage");
    Ok(())
}

#[tokio::test]
async fn concurrent_retries_with_one_key_for_a_verified_account_announce_one_attempt() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("verified-key");
    assert_eq!(stack.signup(&body(&email, "the original owner's passphrase"), None).await?.status(), 202);
    stack.mark_verified(&email).await?;
    let key = format!("key-{}", uuid::Uuid::now_v7());
    let attempt = body(&email, "an intruder's different passphrase");

    let (first, second) = tokio::join!(stack.signup(&attempt, Some(&key)), stack.signup(&attempt, Some(&key)));

    assert_eq!((first?.status(), second?.status()), (reqwest::StatusCode::ACCEPTED, reqwest::StatusCode::ACCEPTED));
    let mut outbox = stack.database("user-metadata").connect().await?;
    let notices: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(EXISTING)
        .fetch_one(&mut outbox)
        .await?;
    assert_eq!(notices, 1, "one attempt, one notice");
    Ok(())
}
