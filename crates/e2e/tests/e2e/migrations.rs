//! Stateful services own their schema: `migrate` creates and migrates the database, idempotently, and `serve`
//! refuses a schema older than the binary unless told to migrate on start.

use std::time::Duration;

use e2e::{
    database::TestDatabase,
    process::{Probe, ServiceProcess, free_port},
    stack::{READY_TIMEOUT, var},
};

const STATEFUL: [&str; 4] = ["user-metadata", "password", "email-verification", "friend-discovery"];

#[tokio::test]
async fn serve_refuses_a_schema_behind_the_binary_until_migrate_has_run() -> anyhow::Result<()> {
    for name in STATEFUL {
        let database = TestDatabase::create(name).await?;
        let port = free_port()?;
        let env = vec![
            var("PORT", port),
            var("METRICS_PORT", free_port()?),
            var("DATABASE_URL", database.url()),
            var("AMQP_URL", e2e::backing::amqp_url()),
        ];

        let refused = ServiceProcess::run(name, &["serve"], &env).await?;
        let migrated = ServiceProcess::run(name, &["migrate"], &env).await?;
        let mut served = ServiceProcess::spawn(name, &["serve"], &env)?;
        let ready = served.wait_ready(Probe::Grpc(port), READY_TIMEOUT).await;

        let refusal = refused.stderr.join("\n");
        assert_eq!(refused.status.code(), Some(1), "{name}: {refusal}");
        assert!(refusal.contains("pending migrations") && refusal.contains("migrate"), "{name}: {refusal}");
        assert!(migrated.status.success(), "{name} migrate: {:?}", migrated.stderr);
        ready?;
        served.sigterm()?;
        assert!(served.wait(Duration::from_secs(10)).await?.success());
    }
    Ok(())
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_is_idempotent() -> anyhow::Result<()> {
    for name in STATEFUL {
        let database = TestDatabase::reserve(name);
        let env = vec![var("DATABASE_URL", database.url())];

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
    Ok(())
}

#[tokio::test]
async fn migrate_on_start_lets_serve_bring_a_fresh_database_up_to_date() -> anyhow::Result<()> {
    let database = TestDatabase::create("password").await?;
    let port = free_port()?;
    let env = vec![
        var("PORT", port),
        var("METRICS_PORT", free_port()?),
        var("DATABASE_URL", database.url()),
        var("MIGRATE_ON_START", "true"),
    ];

    let mut served = ServiceProcess::spawn("password", &["serve"], &env)?;
    served.wait_ready(Probe::Grpc(port), READY_TIMEOUT).await?;

    let mut connection = database.connect().await?;
    let credentials: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('credentials')::text").fetch_one(&mut connection).await?;
    assert_eq!(credentials.as_deref(), Some("credentials"));
    served.sigterm()?;
    assert!(served.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}
