//! The password service: argon2id credential storage and verification over gRPC, with its own database.
//!
//! Architecture invariant: a plaintext password exists here only for the duration of one RPC; only PHC
//! strings are stored, and no password reaches a log line, an error or a trace.

mod consumer;
mod hasher;
mod service;
mod settings;
mod startup;
mod store;

pub use settings::{HashingSettings, ParamsSettings, Settings};
pub use startup::App;

/// The embedded schema migrations of the `password` database.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// The `migrate` subcommand: creates the database if missing, applies pending migrations, declares this
/// service's queue on the broker (so no `UserDeleted` published from now on can miss it), and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    platform::db::migrate_command(&settings.database, migrator()).await?;
    platform::events::declare_subscription(&settings.amqp, &settings.subscription).await
}

/// The `repair` admin process: credentials need no repair, so this lists dead letters and replays them as
/// asked.
pub async fn repair(settings: &Settings, args: &platform::cli::RepairArgs) -> anyhow::Result<()> {
    platform::deadletters::repair(&settings.amqp, &settings.subscription, args, proto::Event::render).await?;
    Ok(())
}
