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

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use lettre::message::{Mailbox, header::ContentType};
use platform::{archive::ColdStorage, cli::RepairArgs, deadletters, settings::SettingsError};
use proto::user_metadata::v1::{
    GetSignupStatsRequest, GetUserRequest, MarkEmailVerifiedRequest, UserStatus,
    user_metadata_service_client::UserMetadataServiceClient,
};
use serde::Deserialize;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::{Settings, mail::Transport};

/// What the admin processes read, on top of the service's own settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `REPAIR_LOOKBACK_DAYS` (7): how far back `repair` compares verifications with user-metadata.
    pub repair_lookback: Duration,
    /// `ARCHIVE_URL` (`file://<working directory>/.archive`): where archives go.
    pub archive_url: String,
    /// `ARCHIVE_TOKENS_AFTER_DAYS` (7): used or expired tokens older than this are archived.
    pub archive_tokens_after: Duration,
    /// `ARCHIVE_MAIL_LOG_AFTER_DAYS` (30): mail no longer pending and older than this is archived.
    pub archive_mail_log_after: Duration,
    /// `ARCHIVE_BATCH_SIZE` (1000): records per archive object.
    pub archive_batch_size: i64,
    /// `REPORT_TO`: who gets the daily report (required unless `report --stdout`).
    pub report_to: Option<Mailbox>,
    /// `REPORT_DEAD_LETTER_QUEUES`: the dead-letter queues the report counts (comma-separated; default: every
    /// subscriber's under the default queue names).
    pub report_dead_letter_queues: Vec<String>,
}

#[derive(Deserialize)]
struct RawAdmin {
    #[serde(default = "default_lookback_days")]
    repair_lookback_days: u64,
    archive_url: Option<String>,
    #[serde(default = "default_tokens_after_days")]
    archive_tokens_after_days: u64,
    #[serde(default = "default_mail_log_after_days")]
    archive_mail_log_after_days: u64,
    #[serde(default = "default_batch_size")]
    archive_batch_size: i64,
    report_to: Option<String>,
    #[serde(default = "default_dead_letter_queues")]
    report_dead_letter_queues: String,
}

fn default_lookback_days() -> u64 {
    7
}
fn default_tokens_after_days() -> u64 {
    7
}
fn default_mail_log_after_days() -> u64 {
    30
}
fn default_batch_size() -> i64 {
    1000
}
fn default_dead_letter_queues() -> String {
    "email-verification.signup-events.dlq,friend-discovery.signup-events.dlq,password.signup-events.dlq".to_owned()
}

const DAY: u64 = 24 * 60 * 60;

impl AdminSettings {
    /// Reads and checks the admin variables.
    pub fn load() -> Result<Self, SettingsError> {
        let raw: RawAdmin = platform::settings::load()?;
        if !(1..=100_000).contains(&raw.archive_batch_size) {
            return Err(SettingsError::invalid("ARCHIVE_BATCH_SIZE", "must be between 1 and 100000"));
        }
        let report_to = match raw.report_to.filter(|to| !to.trim().is_empty()) {
            Some(to) => {
                Some(to.parse().map_err(|e| SettingsError::invalid("REPORT_TO", format!("not a mailbox: {e}")))?)
            }
            None => None,
        };
        Ok(Self {
            repair_lookback: Duration::from_secs(raw.repair_lookback_days * DAY),
            archive_url: platform::archive::url_or_default(raw.archive_url)?,
            archive_tokens_after: Duration::from_secs(raw.archive_tokens_after_days * DAY),
            // The per-address mail budget counts the last day's mail log, so that much of it always stays.
            archive_mail_log_after: Duration::from_secs(raw.archive_mail_log_after_days.max(1) * DAY + 3600),
            archive_batch_size: raw.archive_batch_size,
            report_to,
            report_dead_letter_queues: raw
                .report_dead_letter_queues
                .split(',')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

fn users(settings: &Settings) -> anyhow::Result<UserMetadataServiceClient<platform::grpc::TracedChannel>> {
    Ok(UserMetadataServiceClient::new(platform::grpc::channel(
        &settings.user_metadata.url,
        settings.user_metadata.deadline,
    )?))
}

/// Marks verified in user-metadata what was verified here, and lists (and maybe replays) dead letters.
pub(crate) async fn repair(
    pool: &PgPool,
    settings: &Settings,
    admin: &AdminSettings,
    args: &RepairArgs,
) -> anyhow::Result<()> {
    let dry_run = args.dry_run;
    let verified: Vec<(Uuid, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT user_id, verified_at, coalesce(verified_signup_id, signup_id) FROM accounts \
         WHERE verified_at IS NOT NULL AND verified_at > now() - make_interval(secs => $1) ORDER BY verified_at",
    )
    .bind(admin.repair_lookback.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut users = users(settings)?;
    let mut fixed = 0usize;
    for (user_id, verified_at, signup_id) in verified {
        let user = match users.get_user(GetUserRequest { user_id: user_id.to_string() }).await {
            Ok(response) => response.into_inner().user,
            Err(status) if status.code() == Code::NotFound => continue,
            Err(status) => return Err(status.into()),
        };
        if user.is_none_or(|u| u.status() == UserStatus::Verified) {
            continue;
        }
        fixed += 1;
        if dry_run {
            tracing::info!(%user_id, "would mark verified in user-metadata (verified here)");
            continue;
        }
        let at = platform::time::to_proto(verified_at);
        let request = MarkEmailVerifiedRequest {
            user_id: user_id.to_string(),
            verified_at: Some(at),
            signup_id: signup_id.to_string(),
        };
        users.mark_email_verified(request).await?;
        tracing::info!(%user_id, "marked verified in user-metadata (verified here)");
    }

    let (letters, replayed) =
        deadletters::repair(&settings.amqp, &settings.subscription, args, proto::Event::render).await?;
    tracing::info!(verifications_fixed = fixed, dead_letters = letters, replayed, dry_run, "repair finished");
    Ok(())
}

/// Archives used and expired tokens and the old mail log, a batch per object and transaction; then drops
/// send-limit counters whose window ended (counters, not records: nothing to archive).
pub(crate) async fn archive(
    pool: &PgPool,
    settings: &Settings,
    admin: &AdminSettings,
    dry_run: bool,
) -> anyhow::Result<()> {
    let storage = ColdStorage::from_url(&admin.archive_url)?;
    let tokens = Batch {
        table: "tokens",
        // Used or expired, and old enough.
        select: "SELECT token_hash, to_jsonb(t) FROM tokens t \
                 WHERE (used_at IS NOT NULL OR expires_at < now()) AND created_at < now() - make_interval(secs => $1) \
                 ORDER BY created_at, token_hash LIMIT $2 FOR UPDATE SKIP LOCKED",
        delete: "DELETE FROM tokens WHERE token_hash = ANY($1)",
        age: admin.archive_tokens_after,
    };
    let mails = Batch {
        table: "mails",
        // Finished, old enough, and without tokens left (they reference it).
        select: "SELECT id, to_jsonb(m) FROM mails m \
                 WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1) \
                   AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.mail_id = m.id) \
                 ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        delete: "DELETE FROM mails WHERE id = ANY($1)",
        age: admin.archive_mail_log_after,
    };
    if dry_run {
        for batch in [&tokens, &mails] {
            let count = batch.count(pool).await?;
            tracing::info!(table = batch.table, records = count, to = storage.location(), "would archive");
        }
        return Ok(());
    }
    let archived_tokens = tokens.run::<Vec<u8>>(pool, &storage, admin.archive_batch_size).await?;
    let archived_mails = mails.run::<Uuid>(pool, &storage, admin.archive_batch_size).await?;
    let window = settings.policy.notice_interval;
    let counters = sqlx::query("DELETE FROM send_limits WHERE window_started_at < now() - make_interval(secs => $1)")
        .bind(window.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
    tracing::info!(
        tokens = archived_tokens,
        mails = archived_mails,
        expired_counters = counters,
        to = storage.location(),
        "archive finished"
    );
    Ok(())
}

/// One kind of record to archive: how to select a locked batch (key, record) and delete it by key.
struct Batch {
    table: &'static str,
    select: &'static str,
    delete: &'static str,
    age: Duration,
}

impl Batch {
    async fn count(&self, pool: &PgPool) -> sqlx::Result<i64> {
        let query = format!("SELECT count(*) FROM ({}) b", self.select.replace("FOR UPDATE SKIP LOCKED", ""));
        sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(self.age.as_secs_f64()).bind(i64::MAX).fetch_one(pool).await
    }

    /// Archives batch after batch until none is left; returns how many records went.
    async fn run<K>(&self, pool: &PgPool, storage: &ColdStorage, size: i64) -> anyhow::Result<usize>
    where
        K: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + sqlx::postgres::PgHasArrayType,
        K: sqlx::Encode<'static, sqlx::Postgres> + Send + Sync + Unpin + KeyName + 'static,
    {
        let mut total = 0;
        loop {
            let mut tx = pool.begin().await?;
            let rows: Vec<(K, serde_json::Value)> =
                sqlx::query_as(self.select).bind(self.age.as_secs_f64()).bind(size).fetch_all(&mut *tx).await?;
            let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else { break };
            let key = format!("email-verification/{}/{}-{}.jsonl.gz", self.table, first.key_name(), last.key_name());
            let records: Vec<serde_json::Value> = rows.iter().map(|(_, r)| r.clone()).collect();
            let object = storage.put_verified(&key, &records).await?;
            let count = rows.len();
            let keys: Vec<K> = rows.into_iter().map(|(k, _)| k).collect();
            sqlx::query(self.delete).bind(keys).execute(&mut *tx).await?;
            tx.commit().await?;
            total += count;
            tracing::info!(table = self.table, records = count, %object, "archived and removed");
        }
        Ok(total)
    }
}

/// A record key as it appears in an archive object's name.
trait KeyName {
    fn key_name(&self) -> String;
}

impl KeyName for Uuid {
    fn key_name(&self) -> String {
        self.simple().to_string()
    }
}

impl KeyName for Vec<u8> {
    fn key_name(&self) -> String {
        self.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
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
    settings: &Settings,
    admin: &AdminSettings,
    day: NaiveDate,
) -> anyhow::Result<DailyReport> {
    let from = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(|| anyhow::anyhow!("bad day"))?;
    let to = from + chrono::Duration::days(1);
    let stamp = platform::time::to_proto;
    let stats = users(settings)?
        .get_signup_stats(GetSignupStatsRequest { from: Some(stamp(from)), to: Some(stamp(to)) })
        .await?
        .into_inner();
    let (sent, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent' AND sent_at >= $1 AND sent_at < $2), \
                count(*) FILTER (WHERE status = 'failed' AND created_at >= $1 AND created_at < $2) FROM mails",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let mut dead_letters = 0u64;
    for queue in &admin.report_dead_letter_queues {
        dead_letters += u64::from(platform::deadletters::depth(&settings.amqp, queue).await?.unwrap_or(0));
    }
    Ok(DailyReport {
        day,
        signups: stats.signups,
        verifications: stats.verifications,
        verification_rate: if stats.signups == 0 {
            0.0
        } else {
            stats.verified_of_signups as f64 / stats.signups as f64
        },
        median_time_to_verify: (stats.verifications > 0)
            .then(|| Duration::from_secs_f64(stats.median_seconds_to_verify.max(0.0))),
        emails_sent: u64::try_from(sent).unwrap_or(0),
        emails_failed: u64::try_from(failed).unwrap_or(0),
        dead_letters,
    })
}

/// Mails the report to `REPORT_TO` through the configured transport.
pub(crate) async fn send_report(
    settings: &Settings,
    admin: &AdminSettings,
    report: &DailyReport,
) -> anyhow::Result<()> {
    let to =
        admin.report_to.clone().ok_or_else(|| anyhow::anyhow!("REPORT_TO is required (or use report --stdout)"))?;
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
