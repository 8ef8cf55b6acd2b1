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
