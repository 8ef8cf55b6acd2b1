//! The email-verification service: consumes signup events, sends the verification email over SMTP, and
//! confirms tokens over gRPC.
//!
//! Architecture invariant: tokens are stored only as hashes, and a redelivered event never sends a second
//! email (a mail's id is the id of the event that caused it).

mod admin;
mod consumer;
mod mail;
mod sender;
mod service;
mod settings;
mod startup;
mod store;

pub use admin::{AdminSettings, DailyReport};
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

/// The `repair` admin process (see the `admin` module).
pub async fn repair(settings: &Settings, args: &platform::cli::RepairArgs) -> anyhow::Result<()> {
    let admin = AdminSettings::load()?;
    let pool = platform::db::admin_pool(&settings.database, migrator()).await?;
    let result = admin::repair(&pool, settings, &admin, args).await;
    pool.close().await;
    result
}

/// The `archive` admin process (see the `admin` module).
pub async fn archive(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let admin = AdminSettings::load()?;
    let pool = platform::db::admin_pool(&settings.database, migrator()).await?;
    let result = admin::archive(&pool, settings, &admin, dry_run).await;
    pool.close().await;
    result
}

/// The `report` admin process: gathers the day's figures, then mails them (or prints them with `stdout`).
#[allow(clippy::print_stdout, reason = "report --stdout prints the report: that is its output")]
pub async fn report(settings: &Settings, day: Option<chrono::NaiveDate>, stdout: bool) -> anyhow::Result<()> {
    let admin = AdminSettings::load()?;
    let day = day.unwrap_or_else(|| (chrono::Utc::now() - chrono::Duration::days(1)).date_naive());
    let pool = platform::db::admin_pool(&settings.database, migrator()).await?;
    let report = admin::gather(&pool, settings, &admin, day).await;
    pool.close().await;
    let report = report?;
    match stdout {
        true => print!("{}", report.render()),
        false => admin::send_report(settings, &admin, &report).await?,
    }
    Ok(())
}
