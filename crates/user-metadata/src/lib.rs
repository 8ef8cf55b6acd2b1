//! The user-metadata service: user records (email, display name, status) over gRPC, and the transactional
//! outbox through which every committed signup is announced on the broker.
//!
//! Architecture invariant: an event is written to the outbox in the same transaction as the change it
//! describes, and nothing is published that was not committed.

mod admin;
mod events;
mod service;
mod settings;
mod startup;
mod store;

pub use admin::AdminSettings;
pub use settings::Settings;
pub use startup::App;
pub use store::AttemptLimit;

/// The embedded schema migrations of the `user-metadata` database.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// The `migrate` subcommand: creates the database if missing, applies pending migrations, and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    platform::db::migrate_command(&settings.database, migrator()).await
}

/// The `repair` admin process (see [`admin::repair`]).
pub async fn repair(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let admin = AdminSettings::load()?;
    let pool = platform::db::admin_pool(&settings.database, migrator()).await?;
    let result = admin::repair(&pool, &admin, dry_run).await;
    pool.close().await;
    result
}

/// The `archive` admin process (see [`admin::archive`]).
pub async fn archive(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let admin = AdminSettings::load()?;
    let pool = platform::db::admin_pool(&settings.database, migrator()).await?;
    let result = admin::archive(&pool, &admin, dry_run).await;
    pool.close().await;
    result
}
