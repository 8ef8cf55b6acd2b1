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

use platform::{
    deadletters::RepairArgs,
    settings::{Ports, SettingsError},
    shutdown::CancellationToken,
};

pub use admin::{AdminSettings, DailyReport};
pub use settings::Settings;
pub use startup::App;

/// The email-verification service, as the platform's service skeleton runs it.
#[derive(Debug)]
pub struct EmailVerification;

/// email-verification's admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Find and fix broken states: verifications user-metadata missed; list dead letters, and replay them. Idempotent.
    Repair(RepairArgs),
    /// Move used and expired tokens and the old mail log to cold storage (ARCHIVE_URL).
    Archive {
        /// Log what would be archived, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daily report for a day (default: yesterday, UTC), mailed to REPORT_TO.
    Report {
        /// The day, as YYYY-MM-DD.
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
        /// Print the report instead of mailing it.
        #[arg(long)]
        stdout: bool,
    },
}

impl platform::service::Service for EmailVerification {
    const NAME: &'static str = "email-verification";
    const ABOUT: &'static str = "verification tokens and email, confirm and resend, over gRPC";
    const PORTS: Ports = Ports { grpc: 50053, ops: 9053 };
    type Settings = Settings;
    type Admin = Admin;

    fn load() -> Result<Settings, SettingsError> {
        Settings::load()
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!()
    }

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        App::build(settings).await?.run_until(shutdown).await
    }

    async fn admin(settings: Settings, command: Admin) -> anyhow::Result<()> {
        let admin = AdminSettings::load()?;
        let pool = platform::db::admin_pool(&settings.common.database, Self::migrator()).await?;
        let result = match command {
            Admin::Repair(args) => admin::repair(&pool, &settings, &admin, &args).await,
            Admin::Archive { dry_run } => admin::archive(&pool, &settings, &admin, dry_run).await,
            Admin::Report { day, stdout } => report(&pool, &settings, &admin, day, stdout).await,
        };
        pool.close().await;
        result
    }
}

/// The `report` admin process: gathers the day's figures, then mails them (or prints them with `stdout`).
#[allow(clippy::print_stdout, reason = "report --stdout prints the report: that is its output")]
async fn report(
    pool: &sqlx::PgPool,
    settings: &Settings,
    admin: &AdminSettings,
    day: Option<chrono::NaiveDate>,
    stdout: bool,
) -> anyhow::Result<()> {
    let day = day.unwrap_or_else(|| (chrono::Utc::now() - chrono::Duration::days(1)).date_naive());
    let report = admin::gather(pool, settings, admin, day).await?;
    match stdout {
        true => print!("{}", report.render()),
        false => admin::send_report(settings, admin, &report).await?,
    }
    Ok(())
}
