//! The service's own Postgres database: a pool that fails fast with a clear message, and the embedded
//! migrations, which `serve` checks and `migrate` applies.

use std::collections::HashSet;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret as _;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase as _, Migrator},
    postgres::PgPoolOptions,
};

use crate::settings::DatabaseSettings;

/// Opens the pool and proves one connection works, so a bad `DATABASE_URL` fails at start, not on first use.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = settings.connect_options()?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at DATABASE_URL ({})", settings.redacted()))
}

/// The `migrate` subcommand: creates the database if it is missing (and the role may), then applies pending
/// migrations.
pub async fn migrate_command(settings: &DatabaseSettings, migrator: Migrator) -> anyhow::Result<()> {
    let url = settings.url().expose_secret();
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("cannot connect to the database server at DATABASE_URL ({})", settings.redacted()))?;
    if !exists {
        Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create database {}", settings.redacted()))?;
        tracing::info!(database = %settings.redacted(), "database created");
    }
    let pool = connect(settings).await?;
    let pending = pending_migrations(&pool, &migrator).await?;
    migrate(&pool, migrator).await?;
    tracing::info!(applied = ?pending, "database is up to date");
    pool.close().await;
    Ok(())
}

/// Migration versions embedded in this binary that the database has not applied. One connection: at start every
/// new connection is a handshake the process waits for.
pub async fn pending_migrations(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<Vec<i64>> {
    let mut conn = pool.acquire().await.context("cannot read the migration history")?;
    let table_exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .context("cannot read the migration history")?;
    let applied: HashSet<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await
            .context("cannot read the migration history")?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect())
}

/// Applies pending migrations. Safe to run repeatedly and concurrently: sqlx takes an advisory lock, and
/// migrations the database has but this binary does not know (a newer release) are left alone.
pub async fn migrate(pool: &PgPool, mut migrator: Migrator) -> anyhow::Result<()> {
    migrator.set_ignore_missing(true).set_locking(true);
    migrator.run(pool).await.context("migration failed")?;
    Ok(())
}

/// A pool for an admin process: connected, and refusing (like `serve`) a schema behind the binary.
pub async fn admin_pool(settings: &DatabaseSettings, migrator: Migrator) -> anyhow::Result<PgPool> {
    let pool = connect(settings).await?;
    ensure_migrated(&pool, migrator, false).await?;
    Ok(pool)
}

/// Before serving: migrate when asked to, otherwise refuse to serve a schema older than this binary.
pub async fn ensure_migrated(pool: &PgPool, migrator: Migrator, migrate_on_start: bool) -> anyhow::Result<()> {
    if migrate_on_start {
        return migrate(pool, migrator).await;
    }
    let pending = pending_migrations(pool, &migrator).await?;
    if !pending.is_empty() {
        bail!(
            "the database schema is behind this binary (pending migrations: {pending:?}); \
             run the `migrate` subcommand first, or set MIGRATE_ON_START=true"
        );
    }
    Ok(())
}
