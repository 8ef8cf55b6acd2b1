//! Stateful services own their schema: `migrate` creates and migrates the database, idempotently, and `serve`
//! refuses a schema older than the binary unless told to migrate on start.

use std::time::Duration;

use e2e::{
    broker::TestTopology,
    database::TestDatabase,
    process::{Probe, ServiceProcess, Serving},
    stack::{READY_TIMEOUT, var},
};

const STATEFUL: [&str; 4] = ["user-metadata", "password", "email-verification", "friend-discovery"];

#[tokio::test]
async fn serve_refuses_a_schema_behind_the_binary_until_migrate_has_run() -> anyhow::Result<()> {
    let topology = TestTopology::new();
    for name in STATEFUL {
        let database = TestDatabase::create(name).await?;
        let mut env = vec![
            var("DATABASE_URL", database.url()),
            var("AMQP_URL", e2e::backing::amqp_url()),
            var("MAIL_TRANSPORT", "file"),
            var("MAIL_DIR", std::env::temp_dir().join("e2e-migrations-mail").display()),
        ];
        env.extend(topology.env(name));

        let refused = ServiceProcess::run(name, &["serve"], &env).await?;
        let migrated = ServiceProcess::run(name, &["migrate"], &env).await?;
        let mut served = ServiceProcess::serve(name, &env).await?;
        let ready = served.process.wait_ready(Probe::Grpc(served.port), READY_TIMEOUT).await;

        let refusal = refused.stderr.join("\n");
        assert_eq!(refused.status.code(), Some(1), "{name}: {refusal}");
        assert!(refusal.contains("pending migrations") && refusal.contains("migrate"), "{name}: {refusal}");
        assert!(migrated.status.success(), "{name} migrate: {:?}", migrated.stderr);
        ready?;
        served.process.sigterm()?;
        assert!(served.process.wait(Duration::from_secs(10)).await?.success());
    }
    Ok(())
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_is_idempotent() -> anyhow::Result<()> {
    let topology = TestTopology::new();
    for name in STATEFUL {
        let database = TestDatabase::reserve(name);
        let mut env = vec![
            var("DATABASE_URL", database.url()),
            var("AMQP_URL", e2e::backing::amqp_url()),
            var("MAIL_TRANSPORT", "file"),
            var("MAIL_DIR", std::env::temp_dir().join("e2e-migrations-mail").display()),
        ];
        env.extend(topology.env(name));

        let first = ServiceProcess::run(name, &["migrate"], &env).await?;
        let second = ServiceProcess::run(name, &["migrate"], &env).await?;

        assert!(first.status.success(), "{name} first migrate: {:?}", first.stderr);
        assert!(second.status.success(), "{name} second migrate: {:?}", second.stderr);
        let mut connection = database.connect().await?;
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut connection)
            .await?;
        assert!(applied >= 1, "{name}: no migration recorded");
    }
    for subscriber in ["email-verification", "friend-discovery"] {
        let declared = e2e::broker::queue_depth(&topology.queue(subscriber)).await;
        assert!(declared.is_ok(), "{subscriber} migrate did not declare its queue: {declared:?}");
    }
    Ok(())
}

#[tokio::test]
async fn migrate_on_start_lets_serve_bring_a_fresh_database_up_to_date() -> anyhow::Result<()> {
    let database = TestDatabase::create("password").await?;
    let env = vec![var("DATABASE_URL", database.url()), var("MIGRATE_ON_START", "true")];

    let Serving { process: mut served, port, .. } = ServiceProcess::serve("password", &env).await?;
    served.wait_ready(Probe::Grpc(port), READY_TIMEOUT).await?;

    let mut connection = database.connect().await?;
    let credentials: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('credentials')::text").fetch_one(&mut connection).await?;
    assert_eq!(credentials.as_deref(), Some("credentials"));
    served.sigterm()?;
    assert!(served.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}

/// A database of email-verification's that its `migrate` brought up to date, and the broker topology it declared.
async fn migrated_email_verification() -> anyhow::Result<(TestTopology, TestDatabase)> {
    let topology = TestTopology::new();
    let database = TestDatabase::create("email-verification").await?;
    let mut env = vec![var("DATABASE_URL", database.url()), var("AMQP_URL", e2e::backing::amqp_url())];
    env.extend(topology.env("email-verification"));
    let migrated = ServiceProcess::run("email-verification", &["migrate"], &env).await?;
    anyhow::ensure!(migrated.status.success(), "migrate: {:?}", migrated.stderr);
    Ok((topology, database))
}

/// email-verification's `mailbox()` was redefined in a form the planner inlines (20261205000001), then without
/// regular expressions (20261207000001): the index on `mailbox(recipient)` built with the first form stays valid
/// only if every form gives every address the same key. The first form, taken from its migration, is compared with
/// the one `migrate` leaves, over awkward addresses and twenty thousand made ones; and after each redefinition the
/// form left is inlined (no call of `mailbox` left in a plan), and the budget's query still uses the index, in a new
/// connection and in one that read the index before the redefinition.
#[tokio::test]
async fn mailbox_keeps_its_rule() -> anyhow::Result<()> {
    const FIRST: &str = include_str!("../../../email-verification/migrations/20261130000001_mailbox_budget.sql");
    let (_topology, database) = migrated_email_verification().await?;

    let start = FIRST.find("CREATE FUNCTION mailbox(").ok_or_else(|| anyhow::anyhow!("no first form"))?;
    let end = start + FIRST[start..].find("$$;").ok_or_else(|| anyhow::anyhow!("no end of the first form"))? + 3;
    let first = &FIRST[start..end];
    let mut connection = database.connect().await?;
    // The first form, from our own migration file.
    let renamed = first.replacen("FUNCTION mailbox(", "FUNCTION mailbox_first(", 1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(renamed)).execute(&mut connection).await?;
    let awkward = [
        "",
        "@",
        "a@",
        "@b",
        "a@b@c",
        "plain",
        "A.B+C@GMAIL.COM",
        "x+@googlemail.com",
        "Ä.ö+z@É.com",
        "İx@X.org",
        "a+b+c@d+e.com",
        "new\nline@x.com",
        "a@gmail.com.evil",
        "..+@gmail.com",
        "+@+",
        "a.b@GoogleMail.Com",
    ];
    let differing: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "WITH addresses(a) AS ( \
           SELECT unnest($1::text[]) UNION ALL SELECT NULL UNION ALL \
           SELECT upper(left(md5(i::text), i % 7)) || CASE WHEN i % 5 = 0 THEN '.' ELSE '' END || md5(i::text) \
             || CASE i % 4 WHEN 0 THEN '+t' WHEN 1 THEN '+' ELSE '' END \
             || (ARRAY['@gmail.com', '@GoogleMail.com', '@Example.COM', '@x@y.org', ''])[i % 5 + 1] \
           FROM generate_series(1, 20000) i) \
         SELECT a, mailbox(a), mailbox_first(a) FROM addresses \
         WHERE mailbox(a) IS DISTINCT FROM mailbox_first(a) LIMIT 5",
    )
    .bind(&awkward[..])
    .fetch_all(&mut connection)
    .await?;
    assert!(differing.is_empty(), "mailbox() as migrated gives other keys: (address, migrated, first) {differing:?}");

    // A connection of the previous release, open across the migration: it read the index with the first form.
    const INLINED: &str = include_str!("../../../email-verification/migrations/20261205000001_mailbox_inlined.sql");
    const SPLIT: &str =
        include_str!("../../../email-verification/migrations/20261207000001_mailbox_without_regexes.sql");
    let restored = first.replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(restored)).execute(&mut connection).await?;
    let mut previous = database.connect().await?;
    let before = budget_plan(&mut previous).await?;
    assert!(looks_up_mailbox(&before), "the first form's index unused: {before}");
    for (migration, body) in [(INLINED, "substring"), (SPLIT, "reverse(")] {
        // The open connection read the index with the form before this one (its last plan used it).
        sqlx::raw_sql(migration).execute(&mut connection).await?;
        for (who, plan) in [
            ("an open connection", budget_plan(&mut previous).await?),
            ("a new one", budget_plan(&mut database.connect().await?).await?),
        ] {
            assert!(!plan.contains("mailbox("), "{who}: mailbox() is still called, not inlined: {plan}");
            let holds = plan.to_lowercase().contains(body);
            assert!(holds, "{who}: the plan does not hold the form just defined: {plan}");
            assert!(looks_up_mailbox(&plan), "{who}: the budget's query no longer looks the mailbox up: {plan}");
        }
    }
    Ok(())
}

/// Whether `plan` looks the mailbox up in the index (the index's first column: the recipient appears in its
/// condition), not only the time (its second), filtering every mail of the day.
fn looks_up_mailbox(plan: &str) -> bool {
    plan.lines().any(|line| line.contains("Index Cond") && line.contains("recipient"))
}

/// The plan of the mail budget's query (the shape of email-verification's), with sequential scans ruled out unless
/// nothing else can answer it.
async fn budget_plan(connection: &mut sqlx::PgConnection) -> anyhow::Result<String> {
    sqlx::query("SET enable_seqscan = off").execute(&mut *connection).await?;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN VERBOSE SELECT count(*) FROM mails WHERE mailbox(recipient) = mailbox($1) \
         AND created_at > now() - interval '1 day'",
    )
    .bind("ada@example.com")
    .fetch_all(connection)
    .await?;
    Ok(plan.join("\n"))
}

/// A resend names its attempt, and email-verification resends only attempts it knows: those of accounts pending when
/// `20261206000001_attempts_known` runs must be known after it (applied by the previous release until then), or
/// their resends would mail nothing. It records each pending account's newest attempt and every attempt a
/// verification mail was queued for, each in its own language, keeps the tries already counted, and records nothing
/// of a verified account.
#[tokio::test]
async fn attempts_of_accounts_pending_before_the_migration_stay_resendable() -> anyhow::Result<()> {
    const KNOWN: &str = include_str!("../../../email-verification/migrations/20261206000001_attempts_known.sql");
    let (_topology, database) = migrated_email_verification().await?;

    let mut connection = database.connect().await?;
    let [pending, verified] = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    let [older, guessed, newest, verifieds] = [(); 4].map(|()| uuid::Uuid::now_v7());
    // The schema before the migration, holding what the previous release wrote.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE confirm_tries DROP COLUMN locale; \
         INSERT INTO accounts (user_id, email, display_name, locale, signup_id, verified_at) VALUES \
           ('{pending}', 'p@example.com', '', 'en-GB', '{newest}', NULL), \
           ('{verified}', 'v@example.com', '', 'fr', '{verifieds}', now()); \
         INSERT INTO mails (id, kind, user_id, recipient, locale, signup_id) VALUES \
           (gen_random_uuid(), 'verification', '{pending}', 'p@example.com', 'fr', '{older}'), \
           (gen_random_uuid(), 'verification', '{pending}', 'p@example.com', 'de', '{guessed}'), \
           (gen_random_uuid(), 'verification', '{pending}', 'p@example.com', 'de', '{guessed}'), \
           (gen_random_uuid(), 'verification', '{pending}', 'p@example.com', 'en-GB', '{newest}'), \
           (gen_random_uuid(), 'verification', '{verified}', 'v@example.com', 'fr', '{verifieds}'); \
         INSERT INTO confirm_tries (signup_id, user_id, tries) VALUES ('{guessed}', '{pending}', 3);"
    )))
    .execute(&mut connection)
    .await?;
    sqlx::raw_sql(KNOWN).execute(&mut connection).await?;
    let known: Vec<(uuid::Uuid, uuid::Uuid, i32, String)> =
        sqlx::query_as("SELECT signup_id, user_id, tries, locale FROM confirm_tries ORDER BY signup_id")
            .fetch_all(&mut connection)
            .await?;

    let expected = [(older, 0, "fr"), (guessed, 3, "de"), (newest, 0, "en-GB")];
    assert_eq!(known, expected.map(|(attempt, tries, locale)| (attempt, pending, tries, locale.to_owned())));
    Ok(())
}
