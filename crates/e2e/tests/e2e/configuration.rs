//! Configuration comes from the environment only, and a bad value stops the process at start with a message
//! that names the variable and never echoes a secret.

use e2e::{
    database::TestDatabase,
    process::{Finished, ServiceProcess, free_port},
    stack::var,
};

type Env = Vec<(String, String)>;

const ALL: [&str; 5] = ["signup-api", "user-metadata", "password", "email-verification", "friend-discovery"];

fn assert_rejected(finished: &Finished, variable: &str, context: &str) {
    let stderr = finished.stderr.join("\n");
    assert!(!finished.status.success(), "{context}: started anyway");
    assert_eq!(finished.status.code(), Some(1), "{context}: {stderr}");
    assert!(stderr.contains(variable), "{context}: error does not name {variable}: {stderr}");
}

#[tokio::test]
async fn a_malformed_port_stops_every_binary_naming_port() -> anyhow::Result<()> {
    for name in ALL {
        let finished = ServiceProcess::run(name, &["serve"], &[var("PORT", "eighty")]).await?;

        assert_rejected(&finished, "PORT", name);
    }
    Ok(())
}

#[tokio::test]
async fn a_database_url_that_is_not_postgres_stops_serve_and_migrate_naming_it() -> anyhow::Result<()> {
    for name in ["user-metadata", "password", "email-verification", "friend-discovery"] {
        for command in ["serve", "migrate"] {
            // A valid configuration but for the database (email-verification also needs to know where mail goes).
            let env = [var("DATABASE_URL", "mysql://root:hunter2-canary@127.0.0.1/db"), var("MAIL_TRANSPORT", "file")];

            let finished = ServiceProcess::run(name, &[command], &env).await?;

            assert_rejected(&finished, "DATABASE_URL", &format!("{name} {command}"));
            assert!(!finished.stderr.join("\n").contains("hunter2-canary"), "{name} echoed the password");
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_without_leaking_its_password() -> anyhow::Result<()> {
    let closed = free_port()?;
    let env = [
        var("PORT", free_port()?),
        var("METRICS_PORT", free_port()?),
        var("DATABASE_URL", format!("postgres://app:hunter2-canary@127.0.0.1:{closed}/password")),
        var("DATABASE_CONNECT_TIMEOUT_SECS", 2),
    ];

    let finished = ServiceProcess::run("password", &["serve"], &env).await?;

    assert_rejected(&finished, "DATABASE_URL", "unreachable database");
    let all_output = [finished.stdout.join("\n"), finished.stderr.join("\n")].concat();
    assert!(all_output.contains(&format!("127.0.0.1:{closed}")), "error does not say where: {all_output}");
    assert!(!all_output.contains("hunter2-canary"), "the password leaked: {all_output}");
    Ok(())
}

#[tokio::test]
async fn malformed_values_of_other_variables_are_named() -> anyhow::Result<()> {
    let database = TestDatabase::create("config").await?;
    let keys = || vec![var("CONTACT_HASH_KEY", "k".repeat(32)), var("IDEMPOTENCY_FINGERPRINT_KEY", "f".repeat(32))];
    let with_keys = |extra: (String, String)| [keys(), vec![extra]].concat();
    let cases: [(&str, Env, &str); 31] = [
        ("signup-api", vec![var("USER_METADATA_URL", "not a url")], "USER_METADATA_URL"),
        ("signup-api", vec![var("PASSWORD_URL", "ftp://127.0.0.1:1")], "PASSWORD_URL"),
        ("signup-api", with_keys(var("SHUTDOWN_GRACE_PERIOD_SECS", "soon")), "SHUTDOWN_GRACE_PERIOD_SECS"),
        ("signup-api", vec![var("CONTACT_HASH_KEY", "too-short")], "CONTACT_HASH_KEY"),
        ("signup-api", vec![var("CONTACT_HASH_KEY", "k".repeat(32))], "IDEMPOTENCY_FINGERPRINT_KEY"),
        ("signup-api", with_keys(var("PASSWORD_MIN_SCORE", 5)), "PASSWORD_MIN_SCORE"),
        ("signup-api", with_keys(var("RATE_LIMIT_SIGNUPS", "lots")), "RATE_LIMIT_SIGNUPS"),
        ("signup-api", with_keys(var("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")), "TRUSTED_PROXIES"),
        ("email-verification", vec![var("SMTP_URL", "")], "SMTP_URL"),
        ("email-verification", vec![var("MAIL_TRANSPORT", "pigeon")], "MAIL_TRANSPORT"),
        (
            "signup-api",
            vec![var("CONTACT_HASH_KEY", "k".repeat(32)), var("PASSWORD_MIN_LENGTH", 6)],
            "PASSWORD_MIN_LENGTH",
        ),
        ("password", vec![var("ARGON2_MEMORY_KIB", 1)], "ARGON2_MEMORY_KIB"),
        // Weaker than OWASP's least: every account that signed in would be rehashed cheap to crack.
        ("password", vec![var("ARGON2_MEMORY_KIB", 64)], "ARGON2_MEMORY_KIB"),
        ("password", vec![var("ARGON2_ITERATIONS", 1)], "ARGON2_ITERATIONS"),
        // Mutual TLS is all three variables or none, each of them PEM; an https:// upstream needs it (it would
        // otherwise be spoken to in plain text).
        ("password", vec![var("GRPC_TLS_CERT", "not a certificate")], "GRPC_TLS_KEY"),
        (
            "password",
            vec![var("GRPC_TLS_CERT", "not a certificate"), var("GRPC_TLS_KEY", "no key"), var("GRPC_TLS_CA", "no")],
            "GRPC_TLS_CERT",
        ),
        ("signup-api", with_keys(var("PASSWORD_URL", "https://127.0.0.1:1")), "GRPC_TLS_CERT"),
        // A session ended through another replica would work here for an hour.
        ("signup-api", with_keys(var("SESSION_CACHE_TTL_MS", 3_600_000)), "SESSION_CACHE_TTL_MS"),
        ("password", vec![var("DATABASE_URL", database.url()), var("MIGRATE_ON_START", "perhaps")], "MIGRATE_ON_START"),
        ("user-metadata", vec![var("DATABASE_URL", database.url()), var("AMQP_URL", "http://nope")], "AMQP_URL"),
        ("friend-discovery", vec![var("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        ("friend-discovery", vec![var("RUST_LOG", "info,sqlx=loud")], "RUST_LOG"),
        ("password", vec![var("TRACES_FILTER", "debug,lapin=chatty")], "TRACES_FILTER"),
        ("friend-discovery", vec![var("EVENTS_DEDUP_WINDOW_HOURS", 4_000_000_000_u32)], "EVENTS_DEDUP_WINDOW_HOURS"),
        ("password", vec![var("EVENTS_DEDUP_WINDOW_HOURS", 0)], "EVENTS_DEDUP_WINDOW_HOURS"),
        ("email-verification", vec![var("EVENTS_BATCH_LINGER_MS", 1001)], "EVENTS_BATCH_LINGER_MS"),
        ("password", vec![var("LOGIN_TRUSTED_CLIENT_DAYS", 366)], "LOGIN_TRUSTED_CLIENT_DAYS"),
        ("password", vec![var("LOGIN_CLIENT_ACCOUNTS_PER_HOUR", 0)], "LOGIN_CLIENT_ACCOUNTS_PER_HOUR"),
        ("user-metadata", vec![var("SIGNUP_ATTEMPTS_PER_CLIENT", 1001)], "SIGNUP_ATTEMPTS_PER_CLIENT"),
        ("email-verification", vec![var("MAIL_BUDGET_PER_CLIENT_PER_DAY", 0)], "MAIL_BUDGET_PER_CLIENT_PER_DAY"),
        // With one mail an hour and the day shared, one client's share of the hour would be all of it.
        ("email-verification", vec![var("MAIL_BUDGET_PER_HOUR", 1)], "MAIL_BUDGET_PER_HOUR"),
    ];
    for (name, env, variable) in cases {
        let finished = ServiceProcess::run(name, &["serve"], &env).await?;

        assert_rejected(&finished, variable, &format!("{name} with bad {variable}"));
    }
    Ok(())
}

/// A role with a password, as a stock Postgres wants: the libpq variables alone (no `DATABASE_URL`) take a service
/// to its database as that role, which creates the database, migrates it and serves. (Where pg_hba trusts
/// loopback, as on this machine and in CI, the password is sent but not checked; the role and database are.)
#[tokio::test]
async fn the_libpq_variables_take_a_service_to_its_database_as_a_password_role() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (role, database, exchange) = (format!("e2e_role_{id}"), format!("e2e_libpq_{id}"), format!("e2e.{id}"));
    let admin_url = e2e::backing::postgres_url();
    let options: sqlx::postgres::PgConnectOptions = admin_url.parse()?;
    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
    let create = format!("CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'e2e-libpq-secret'");
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await?;
    let env = vec![
        var("PGHOST", options.get_host()),
        var("PGPORT", options.get_port()),
        var("PGUSER", &role),
        var("PGPASSWORD", "e2e-libpq-secret"),
        var("PGDATABASE", &database),
        var("PORT", 0),
        var("METRICS_PORT", 0),
        var("EVENTS_EXCHANGE", &exchange),
    ];

    let migrated = ServiceProcess::run("user-metadata", &["migrate"], &env).await?;
    let mut serving = ServiceProcess::spawn("user-metadata", &["serve"], &env)?;
    let (port, _) = serving.serving_ports(e2e::stack::READY_TIMEOUT).await?;
    let ready = serving.wait_ready(e2e::process::Probe::Grpc(port), e2e::stack::READY_TIMEOUT).await;
    drop(serving);
    let owner: Option<String> =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
            .bind(&database)
            .fetch_optional(&mut admin)
            .await?;
    let users_owner: Option<String> = {
        let url =
            format!("postgres://{role}:e2e-libpq-secret@{}:{}/{database}", options.get_host(), options.get_port());
        let mut db = sqlx::PgConnection::connect(&url).await?;
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'users'")
            .fetch_optional(&mut db)
            .await?
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
        .execute(&mut admin)
        .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}"))).execute(&mut admin).await;
    let _ = e2e::broker::delete_topology(&exchange, &[]).await;

    assert!(migrated.status.success(), "migrate: {:?}", migrated.stderr);
    ready?;
    assert_eq!(owner.as_deref(), Some(role.as_str()), "the database was not created by the role");
    assert_eq!(users_owner.as_deref(), Some(role.as_str()), "the tables were not migrated by the role");
    Ok(())
}
