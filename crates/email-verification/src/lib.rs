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
mod store;

use std::sync::Arc;

use platform::{
    db::MigrationFile,
    deadletters::RepairArgs,
    service::{Host, Worker},
    settings::{Common, Ports, SettingsError},
    shutdown::CancellationToken,
};
use proto::email_verification::v1::email_verification_service_server::EmailVerificationServiceServer;

use crate::{
    consumer::EventHandler,
    mail::{Templates, Transport},
    sender::Sender,
    service::Verifications,
};

pub use admin::{AdminSettings, DailyReport};
pub use settings::Settings;

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
    const EVENTS: &'static [&'static str] = consumer::EVENTS;
    const MIGRATIONS: &'static [MigrationFile] = platform::migrations![
        "20261126000001_processed_events",
        "20261126000002_verification",
        "20261126000003_archive_and_tombstones",
        "20261129000001_attempts_and_budgets",
        "20261129000002_mail_trace_context",
        "20261129000003_account_deleted_notice",
        "20261130000001_mailbox_budget",
        "20261201000001_mail_client",
        "20261201000002_confirm_tries",
        "20261203000001_reset_retry",
        "20261205000001_mailbox_inlined",
        "20261206000001_attempts_known",
        "20261207000001_mailbox_without_regexes",
    ];
    type Settings = Settings;
    type Admin = Admin;

    /// Where mail goes is checked before anything else, so a deployment that forgot `SMTP_URL` stops at once
    /// (and `migrate`, `repair` or `report --stdout`, which send nothing, do not need it).
    fn check_serve(settings: &Settings) -> Result<(), SettingsError> {
        settings.mail.smtp().map(drop)
    }

    /// Serves, consumes events and sends mail until `shutdown`; then drains all three within the grace period
    /// (the batch in hand is finished and acked, attempts in flight are recorded).
    async fn serve(host: Host, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (templates, transport) = (Templates::load()?, Transport::from_settings(&settings.mail)?);
        let pool = host.pool().clone();
        let (users, policy, mail) = (settings.user_metadata.client()?, settings.policy, settings.mail);
        let service = EmailVerificationServiceServer::new(Verifications { pool: pool.clone(), users, policy });
        let sender = Sender { pool, transport, templates, settings: mail, policy };
        let sender = Worker::new("mail sender", Arc::new(sender).run(shutdown.clone()));
        let consumer = host.consumer(EventHandler { policy }, &shutdown);
        host.run(service, [Some(sender), consumer].into_iter().flatten().collect(), shutdown).await
    }

    async fn admin(common: Common, settings: Settings, command: Admin) -> anyhow::Result<()> {
        let admin = AdminSettings::load()?;
        let pool = platform::db::admin_pool(&common.database, Self::MIGRATIONS).await?;
        let both = (&common, &settings);
        let result = match command {
            Admin::Repair(args) => admin::repair(&pool, both, &admin, &args).await,
            Admin::Archive { dry_run } => admin::archive(&pool, &settings, &admin, dry_run).await,
            Admin::Report { day, stdout } => report(&pool, both, &admin, day, stdout).await,
        };
        pool.close().await;
        result
    }
}

/// The `report` admin process: gathers the day's figures, then mails them (or prints them with `stdout`).
#[allow(clippy::print_stdout, reason = "report --stdout prints the report: that is its output")]
async fn report(
    pool: &sqlx::PgPool,
    (common, settings): (&Common, &Settings),
    admin: &AdminSettings,
    day: Option<chrono::NaiveDate>,
    stdout: bool,
) -> anyhow::Result<()> {
    let day = day.unwrap_or_else(|| (chrono::Utc::now() - chrono::Duration::days(1)).date_naive());
    let report = admin::gather(pool, (common, settings), admin, day).await?;
    match stdout {
        true => print!("{}", report.render()),
        false => admin::send_report(settings, admin, &report).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use platform::service::Service as _;

    #[tokio::test]
    async fn every_migration_file_is_embedded() -> anyhow::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        platform::db::check_embedded(&dir, super::EmailVerification::MIGRATIONS).await
    }
}
