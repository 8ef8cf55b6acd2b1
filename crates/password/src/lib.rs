//! The password service: argon2id credential storage and verification over gRPC, with its own database.
//!
//! Architecture invariant: a plaintext password exists here only for the duration of one RPC; only PHC
//! strings are stored, and no password reaches a log line, an error or a trace.

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

/// The `migrate` subcommand: creates the database if missing, applies pending migrations, and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    platform::db::migrate_command(&settings.database, migrator()).await
}
