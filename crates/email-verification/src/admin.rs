//! email-verification's admin processes, one-off runs of the same binary with the same configuration:
//!
//! - `repair`: accounts verified here but not in user-metadata are marked verified there (confirm records
//!   user-metadata first, so this follows only a restore of one database from backup or a manual change); dead letters are listed with what can be read of them, and
//!   replayed into the queue with `--replay-dead-letters` (or one with `--replay <event id>`).
//! - `archive`: used and expired tokens, and the log of mail no longer pending, older than their configured ages,
//!   go to cold storage and are deleted only once the archive object has been read back.
//! - `report`: the daily report (signups, verifications, rate, median time to verify, mail sent and failed, dead
//!   letters), mailed to `REPORT_TO` through the same SMTP setup, or printed with `--stdout`.
//!
//! `--dry-run` logs what would change and changes nothing; a real run logs every change and is idempotent.

use std::{num::NonZeroI64, time::Duration};

use chrono::NaiveDate;
use lettre::message::{Mailbox, header::ContentType};
use platform::{
    archive::ColdStorage,
    deadletters::RepairArgs,
    grpc::TracedChannel,
    settings::{Common, SettingsError},
};
use proto::user_metadata::v1::{
    GetSignupStatsRequest, GetSignupStatsResponse, GetUserRequest, MarkEmailVerifiedRequest, UserStatus,
    user_metadata_service_client::UserMetadataServiceClient,
};
use serde::Deserialize;
use sqlx::PgPool;
use tonic::Code;

use crate::{
    Settings,
    mail::Transport,
    store::admin::{self as store, Verification},
};

const DAY: u64 = 24 * 60 * 60;

/// What the admin processes read, on top of the service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// `REPAIR_LOOKBACK_DAYS` (7): how far back `repair` compares verifications with user-metadata.
    repair_lookback_days: u64,
    /// `ARCHIVE_URL` (`file://<working directory>/.archive`): where archives go.
    archive_url: Option<String>,
    /// `ARCHIVE_TOKENS_AFTER_DAYS` (7): used or expired tokens older than this are archived.
    archive_tokens_after_days: u64,
    /// `ARCHIVE_MAIL_LOG_AFTER_DAYS` (30): mail no longer pending and older than this is archived (the last day's
    /// always stays: the per-address mail budget counts it).
    archive_mail_log_after_days: u64,
    /// `ARCHIVE_BATCH_SIZE` (1000): records per archive object.
    archive_batch_size: NonZeroI64,
    /// `REPORT_TO`: who gets the daily report (required unless `report --stdout`).
    report_to: Option<String>,
    /// `REPORT_DEAD_LETTER_QUEUES`: the dead-letter queues the report counts (comma-separated; default: every
    /// subscriber's under the default queue names).
    report_dead_letter_queues: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            repair_lookback_days: 7,
            archive_url: None,
            archive_tokens_after_days: 7,
            archive_mail_log_after_days: 30,
            archive_batch_size: NonZeroI64::new(1000).unwrap_or(NonZeroI64::MIN),
            report_to: None,
            report_dead_letter_queues:
                "email-verification.signup-events.dlq,friend-discovery.signup-events.dlq,password.signup-events.dlq"
                    .to_owned(),
        }
    }
}

impl AdminSettings {
    /// Reads and checks the admin variables.
    pub fn load() -> Result<Self, SettingsError> {
        let mut settings: Self = platform::settings::load()?;
        if !(1..=100_000).contains(&settings.archive_batch_size.get()) {
            return Err(SettingsError::invalid("ARCHIVE_BATCH_SIZE", "must be between 1 and 100000"));
        }
        settings.report_to()?;
        settings.archive_url = Some(platform::archive::url_or_default(settings.archive_url)?);
        Ok(settings)
    }

    /// `REPORT_TO` as a mailbox, if set.
    fn report_to(&self) -> Result<Option<Mailbox>, SettingsError> {
        let to = self.report_to.as_deref().map(str::trim).filter(|to| !to.is_empty());
        to.map(|to| to.parse().map_err(|e| SettingsError::invalid("REPORT_TO", format!("not a mailbox: {e}"))))
            .transpose()
    }

    fn days(days: u64) -> Duration {
        Duration::from_secs(days * DAY)
    }

    fn dead_letter_queues(&self) -> impl Iterator<Item = &str> {
        self.report_dead_letter_queues.split(',').map(str::trim).filter(|q| !q.is_empty())
    }
}

/// Marks verified in user-metadata what was verified here, and lists (and maybe replays) dead letters. A
/// verification that cannot be fixed is logged and the rest go on (one account restored from an old backup must not
/// keep the others, and the dead letters, from repair); the run then fails, so the scheduler shows it.
pub(crate) async fn repair(
    pool: &PgPool,
    (common, settings): (&Common, &Settings),
    admin: &AdminSettings,
    args: &RepairArgs,
) -> anyhow::Result<()> {
    let lookback = AdminSettings::days(admin.repair_lookback_days);
    let mut users = settings.user_metadata.client()?;
    let (mut fixed, mut unfixed) = (0usize, 0usize);
    for verification in store::recent_verifications(pool, lookback).await? {
        match fix_verification(&mut users, &verification, args.dry_run).await {
            Ok(done) => fixed += usize::from(done),
            Err(error) => {
                unfixed += 1;
                let user_id = verification.user_id;
                tracing::warn!(%user_id, error = format!("{error:#}"), "could not fix a verification; going on");
            }
        }
    }
    let subscription = common.subscription.as_ref().ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    let (letters, replayed) =
        platform::deadletters::repair(&common.amqp, subscription, args, proto::Event::render).await?;
    tracing::info!(
        verifications_fixed = fixed,
        verifications_unfixed = unfixed,
        dead_letters = letters,
        replayed,
        dry_run = args.dry_run,
        "repair finished"
    );
    anyhow::ensure!(unfixed == 0, "{unfixed} verifications could not be fixed (logged above)");
    Ok(())
}

/// Marks one verification in user-metadata if it is missing there; returns whether it was (or would be) fixed.
async fn fix_verification(
    users: &mut UserMetadataServiceClient<TracedChannel>,
    verification: &Verification,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let user_id = verification.user_id;
    let user = match users.get_user(GetUserRequest { user_id: user_id.to_string() }).await {
        Ok(response) => response.into_inner().user,
        Err(status) if status.code() == Code::NotFound => return Ok(false),
        Err(status) => return Err(status.into()),
    };
    if user.is_none_or(|u| u.status() == UserStatus::Verified) {
        return Ok(false);
    }
    if dry_run {
        tracing::info!(%user_id, "would mark verified in user-metadata (verified here)");
        return Ok(true);
    }
    let request = MarkEmailVerifiedRequest {
        user_id: user_id.to_string(),
        verified_at: Some(platform::time::to_proto(verification.verified_at)),
        signup_id: verification.signup_id.to_string(),
    };
    users.mark_email_verified(request).await?;
    tracing::info!(%user_id, "marked verified in user-metadata (verified here)");
    Ok(true)
}

/// Archives used and expired tokens and the old mail log, a batch per object and transaction; then drops
/// notice-interval counters whose window ended.
pub(crate) async fn archive(
    pool: &PgPool,
    settings: &Settings,
    admin: &AdminSettings,
    dry_run: bool,
) -> anyhow::Result<()> {
    let storage = ColdStorage::from_url(admin.archive_url.as_deref().unwrap_or_default())?;
    let tokens = store::tokens(AdminSettings::days(admin.archive_tokens_after_days));
    // The per-address mail budget counts the last day's mail log, so that much of it always stays.
    let mail_log_age = AdminSettings::days(admin.archive_mail_log_after_days.max(1)) + Duration::from_secs(3600);
    let mails = store::mails(mail_log_age);
    if dry_run {
        for batch in [&tokens, &mails] {
            let count = batch.count(pool).await?;
            tracing::info!(table = batch.table, records = count, to = storage.location(), "would archive");
        }
        return Ok(());
    }
    let size = admin.archive_batch_size.get();
    let archived_tokens = tokens.run(pool, &storage, size).await?;
    let archived_mails = mails.run(pool, &storage, size).await?;
    let counters = store::expire_counters(pool, settings.policy.notice_interval).await?;
    let location = storage.location();
    tracing::info!(
        tokens = archived_tokens,
        mails = archived_mails,
        expired_counters = counters,
        to = location,
        "archive finished"
    );
    Ok(())
}

/// The figures of one day.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyReport {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Accounts created that day.
    pub signups: u64,
    /// Accounts verified that day.
    pub verifications: u64,
    /// Of the accounts created that day, the share verified by now.
    pub verification_rate: f64,
    /// Median time from signup to verification of the accounts verified that day.
    pub median_time_to_verify: Option<Duration>,
    /// Mail delivered that day.
    pub emails_sent: u64,
    /// Mail given up on, queued that day.
    pub emails_failed: u64,
    /// Messages in the dead-letter queues now.
    pub dead_letters: u64,
}

impl DailyReport {
    /// The report as plain text.
    pub fn render(&self) -> String {
        let median = self.median_time_to_verify.map_or_else(|| "n/a".to_owned(), |d| format!("{} s", d.as_secs()));
        format!(
            "Signup daily report for {day} (UTC)\n\n\
             signups:                 {signups}\n\
             verifications:           {verifications}\n\
             verification rate:       {rate:.1}% of that day's signups\n\
             median time to verify:   {median}\n\
             emails sent:             {sent}\n\
             emails failed:           {failed}\n\
             dead letters (now):      {dead}\n",
            day = self.day,
            signups = self.signups,
            verifications = self.verifications,
            rate = self.verification_rate * 100.0,
            sent = self.emails_sent,
            failed = self.emails_failed,
            dead = self.dead_letters,
        )
    }
}

/// Gathers the figures of `day`: user figures from user-metadata (over gRPC), mail figures from this service's
/// own database, dead letters from the broker.
pub(crate) async fn gather(
    pool: &PgPool,
    (common, settings): (&Common, &Settings),
    admin: &AdminSettings,
    day: NaiveDate,
) -> anyhow::Result<DailyReport> {
    let from = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(|| anyhow::anyhow!("bad day"))?;
    let to = from + chrono::Duration::days(1);
    let stamp = platform::time::to_proto;
    let request = GetSignupStatsRequest { from: Some(stamp(from)), to: Some(stamp(to)) };
    let stats = settings.user_metadata.client()?.get_signup_stats(request).await?.into_inner();
    let (emails_sent, emails_failed) = store::mail_figures(pool, from, to).await?;
    let mut dead_letters = 0u64;
    // A queue that cannot be read is not a queue with no letters: the report fails, naming it.
    for queue in admin.dead_letter_queues() {
        let depth = platform::deadletters::depth(&common.amqp, queue).await?;
        let depth = depth.ok_or_else(|| {
            anyhow::anyhow!(
                "dead-letter queue {queue} cannot be read (missing, or not allowed): REPORT_DEAD_LETTER_QUEUES"
            )
        })?;
        dead_letters += u64::from(depth);
    }
    Ok(DailyReport::from_stats(day, &stats, (emails_sent, emails_failed), dead_letters))
}

impl DailyReport {
    fn from_stats(day: NaiveDate, stats: &GetSignupStatsResponse, mail: (u64, u64), dead_letters: u64) -> Self {
        let rate = if stats.signups == 0 { 0.0 } else { stats.verified_of_signups as f64 / stats.signups as f64 };
        let median =
            (stats.verifications > 0).then(|| Duration::from_secs_f64(stats.median_seconds_to_verify.max(0.0)));
        Self {
            day,
            signups: stats.signups,
            verifications: stats.verifications,
            verification_rate: rate,
            median_time_to_verify: median,
            emails_sent: mail.0,
            emails_failed: mail.1,
            dead_letters,
        }
    }
}

/// Mails the report to `REPORT_TO` through the configured transport.
pub(crate) async fn send_report(
    settings: &Settings,
    admin: &AdminSettings,
    report: &DailyReport,
) -> anyhow::Result<()> {
    let to = admin.report_to()?.ok_or_else(|| anyhow::anyhow!("REPORT_TO is required (or use report --stdout)"))?;
    let message = lettre::Message::builder()
        .message_id(Some(format!("<report-{}@{}>", report.day, settings.mail.from.email.domain())))
        .from(settings.mail.from.clone())
        .to(to)
        .subject(format!("Signup daily report for {}", report.day))
        .header(ContentType::TEXT_PLAIN)
        .body(report.render())?;
    Transport::from_settings(&settings.mail)?.send(message).await.map_err(anyhow::Error::from)?;
    tracing::info!(day = %report.day, "daily report sent");
    Ok(())
}
