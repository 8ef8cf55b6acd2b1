//! The email-verification service: consumes signup events, sends the verification email over SMTP, and
//! confirms tokens over gRPC.
//!
//! Architecture invariant: tokens are stored only as hashes, and a redelivered event never sends a second
//! email (a mail's id is the id of the event that caused it).

mod consumer;
mod mail;
mod sender;
mod service;
mod settings;
mod startup;
mod store;

pub use settings::Settings;
pub use startup::App;

/// The embedded schema migrations of the `email-verification` database.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// The `migrate` subcommand: creates the database if missing, applies pending migrations, declares this
/// service's queue on the broker (so no event published from now on can miss it), and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    platform::db::migrate_command(&settings.database, migrator()).await?;
    platform::events::declare_subscription(&settings.amqp, &settings.subscription).await
}
