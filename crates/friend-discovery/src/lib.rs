//! The friend-discovery service: "people you may know" from contacts uploaded at signup.
//!
//! Architecture invariant: contacts arrive, are stored and are compared only as keyed hashes; no plaintext
//! contact ever reaches this service.

mod consumer;
mod service;
mod settings;
mod startup;
mod store;

pub use settings::Settings;
pub use startup::App;

/// The embedded schema migrations of the `friend-discovery` database.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// The `migrate` subcommand: creates the database if missing, applies pending migrations, declares this
/// service's queue on the broker (so no event published from now on can miss it), and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    platform::db::migrate_command(&settings.database, migrator()).await?;
    platform::events::declare_subscription(&settings.amqp, &settings.subscription).await
}

/// The `repair` admin process: the graph needs no repair (every effect commutes and is idempotent), so this
/// lists dead letters and replays them as asked.
pub async fn repair(settings: &Settings, args: &platform::cli::RepairArgs) -> anyhow::Result<()> {
    platform::deadletters::repair(&settings.amqp, &settings.subscription, args, proto::Event::render).await?;
    Ok(())
}
