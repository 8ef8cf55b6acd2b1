//! The service's own Postgres database: a pool that fails fast with a clear message, and the embedded
//! migrations, which `serve` checks and `migrate` applies.
//!
//! Migrations are embedded with [`migrations!`](crate::migrations) and rows read with
//! [`from_row!`](crate::from_row), not with sqlx's proc macros: those compile a second copy of sqlx, tokio and
//! rustls for the compiler's own use (about 10 s of a two-minute clean build on two CPUs).

use std::{collections::HashSet, path::Path};

use anyhow::{Context as _, bail, ensure};
use secrecy::ExposeSecret as _;
use sqlx::{
    PgPool, Postgres, SqlSafeStr as _,
    migrate::{MigrateDatabase as _, Migration, MigrationType, Migrator},
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

/// One embedded migration: its file name in the service's `migrations/` directory, without `.sql`
/// (`<version>_<description>`, as sqlx names them), and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    /// `<version>_<description>`.
    pub name: &'static str,
    /// The file's contents.
    pub sql: &'static str,
}

/// The calling crate's migrations, embedded from its `migrations/` directory by file name (without `.sql`), oldest
/// first. [`check_embedded`], called from a unit test of each service, keeps the list and the directory in step.
#[macro_export]
macro_rules! migrations {
    ($($name:literal),+ $(,)?) => {
        &[$($crate::db::MigrationFile {
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $name, ".sql")),
        }),+]
    };
}

/// Implements `sqlx::FromRow` for a struct by reading each named field from the column of the same name, and each
/// field after `flatten` from the same row through its own `FromRow`. Every field must be named: the struct
/// literal it expands to does not compile otherwise.
#[macro_export]
macro_rules! from_row {
    ($type:ident { $($field:ident),* $(; flatten $($nested:ident),+)? $(,)? }) => {
        impl<'r> ::sqlx::FromRow<'r, ::sqlx::postgres::PgRow> for $type {
            fn from_row(row: &'r ::sqlx::postgres::PgRow) -> ::sqlx::Result<Self> {
                use ::sqlx::Row as _;
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?,)*
                    $($($nested: ::sqlx::FromRow::from_row(row)?,)+)?
                })
            }
        }
    };
}

/// The migrator for `files`, as sqlx builds one from their directory (same versions, descriptions and checksums,
/// so databases migrated by either agree).
pub fn migrator(files: &[MigrationFile]) -> anyhow::Result<Migrator> {
    let migrations = files
        .iter()
        .map(|file| {
            let (version, description) = file
                .name
                .split_once('_')
                .with_context(|| format!("migration {}: no _ after the version", file.name))?;
            let version = version.parse().with_context(|| format!("migration {}: version", file.name))?;
            let no_tx = file.sql.starts_with("-- no-transaction");
            let sql = file.sql.into_sql_str();
            Ok(Migration::new(version, description.replace('_', " ").into(), MigrationType::Simple, sql, no_tx))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Migrator::with_migrations(migrations))
}

/// Fails unless `files` are exactly the migrations sqlx reads from `dir`, byte for byte (test support: a
/// migration added to the directory but not to the list fails its service's unit tests).
pub async fn check_embedded(dir: &Path, files: &[MigrationFile]) -> anyhow::Result<()> {
    let identity = |m: &Migration| (m.version, m.description.to_string(), m.checksum.to_vec(), m.no_tx);
    let on_disk: Vec<_> = Migrator::new(dir).await?.iter().map(identity).collect();
    let embedded: Vec<_> = migrator(files)?.iter().map(identity).collect();
    ensure!(on_disk == embedded, "the embedded migrations differ from {}: list every file there", dir.display());
    Ok(())
}

/// The `migrate` subcommand: creates the database if it is missing (and the role may), then applies pending
/// migrations.
pub async fn migrate_command(settings: &DatabaseSettings, migrations: &[MigrationFile]) -> anyhow::Result<()> {
    let migrator = migrator(migrations)?;
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
pub async fn admin_pool(settings: &DatabaseSettings, migrations: &[MigrationFile]) -> anyhow::Result<PgPool> {
    let pool = connect(settings).await?;
    ensure_migrated(&pool, migrations, false).await?;
    Ok(pool)
}

/// Before serving: migrate when asked to, otherwise refuse to serve a schema older than this binary.
pub async fn ensure_migrated(
    pool: &PgPool,
    migrations: &[MigrationFile],
    migrate_on_start: bool,
) -> anyhow::Result<()> {
    let migrator = migrator(migrations)?;
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
