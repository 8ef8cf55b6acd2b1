//! user-metadata's admin processes, one-off runs of the same binary with the same configuration:
//!
//! - `repair` finds outbox rows that have waited too long and resets their backoff so the relay publishes them at
//!   once. (A signup is registered and announced in one transaction, so no half-made signup can linger; rows
//!   left `registering` by earlier releases are never verified, so `archive` removes them.)
//! - `archive` moves accounts never verified within `ARCHIVE_UNVERIFIED_AFTER_DAYS` of their last signup attempt to
//!   cold storage, deletes them only once the archive object has been read back, and announces `UserDeleted` so
//!   every service forgets them.
//!
//! `--dry-run` logs what would change and changes nothing; a real run logs every change and is idempotent.

use std::time::Duration;

use platform::{archive::ColdStorage, settings::SettingsError};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What the admin processes read, on top of the service's own settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `REPAIR_STUCK_OUTBOX_AFTER_SECS` (300): an event unpublished after this is due at once.
    pub stuck_outbox_after: Duration,
    /// `ARCHIVE_URL` (`file://<working directory>/.archive`): where archives go.
    pub archive_url: String,
    /// `ARCHIVE_UNVERIFIED_AFTER_DAYS` (30): accounts never verified within this are archived and removed.
    pub archive_unverified_after: Duration,
    /// `ARCHIVE_BATCH_SIZE` (1000): records per archive object.
    pub archive_batch_size: i64,
}

#[derive(Deserialize)]
struct RawAdmin {
    #[serde(default = "default_stuck_outbox_after_secs")]
    repair_stuck_outbox_after_secs: u64,
    archive_url: Option<String>,
    #[serde(default = "default_unverified_after_days")]
    archive_unverified_after_days: u64,
    #[serde(default = "default_batch_size")]
    archive_batch_size: i64,
}

fn default_stuck_outbox_after_secs() -> u64 {
    300
}
fn default_unverified_after_days() -> u64 {
    30
}
fn default_batch_size() -> i64 {
    1000
}

impl AdminSettings {
    /// Reads and checks the admin variables.
    pub fn load() -> Result<Self, SettingsError> {
        let raw: RawAdmin = platform::settings::load()?;
        if !(1..=100_000).contains(&raw.archive_batch_size) {
            return Err(SettingsError::invalid("ARCHIVE_BATCH_SIZE", "must be between 1 and 100000"));
        }
        Ok(Self {
            stuck_outbox_after: Duration::from_secs(raw.repair_stuck_outbox_after_secs),
            archive_url: platform::archive::url_or_default(raw.archive_url)?,
            archive_unverified_after: Duration::from_secs(raw.archive_unverified_after_days * 24 * 60 * 60),
            archive_batch_size: raw.archive_batch_size,
        })
    }
}

/// Finds outbox rows stuck behind a long backoff and makes them due at once.
pub(crate) async fn repair(pool: &PgPool, settings: &AdminSettings, dry_run: bool) -> anyhow::Result<()> {
    let stuck: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, event_type, attempts FROM outbox \
         WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1) ORDER BY created_at",
    )
    .bind(settings.stuck_outbox_after.as_secs_f64())
    .fetch_all(pool)
    .await?;
    for (event_id, kind, attempts) in &stuck {
        if dry_run {
            tracing::info!(%event_id, %kind, attempts, "would make a stuck outbox event due now");
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE outbox SET next_attempt_at = now() WHERE id = $1 AND published_at IS NULL")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify('outbox', '')").execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(
            %event_id, %kind, attempts,
            "made a stuck outbox event due now; the relay publishes it (if this repeats, check the relay and broker)"
        );
    }
    tracing::info!(stuck_events = stuck.len(), dry_run, "repair finished");
    Ok(())
}

/// Archives and removes accounts never verified in time, a batch at a time; each batch is one transaction that
/// deletes only after its archive object was read back, and announces `UserDeleted` for each account.
pub(crate) async fn archive(pool: &PgPool, settings: &AdminSettings, dry_run: bool) -> anyhow::Result<()> {
    let storage = ColdStorage::from_url(&settings.archive_url)?;
    let age = settings.archive_unverified_after.as_secs_f64();
    if dry_run {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM users WHERE status <> 'verified' AND updated_at < now() - make_interval(secs => $1)",
        )
        .bind(age)
        .fetch_one(pool)
        .await?;
        tracing::info!(accounts = count, to = storage.location(), "would archive and remove never-verified accounts");
        return Ok(());
    }
    let mut total = 0usize;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT id, to_jsonb(u) FROM users u \
             WHERE status <> 'verified' AND updated_at < now() - make_interval(secs => $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(age)
        .bind(settings.archive_batch_size)
        .fetch_all(&mut *tx)
        .await?;
        let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else { break };
        let key = format!("user-metadata/users/{}-{}.jsonl.gz", first.simple(), last.simple());
        let records: Vec<serde_json::Value> = rows.iter().map(|(_, record)| record.clone()).collect();
        let object = storage.put_verified(&key, &records).await?;
        let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
        let attempts: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT user_id, signup_id FROM signup_attempts WHERE user_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE user_id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM users WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        for id in &ids {
            let signup_ids: Vec<Uuid> = attempts.iter().filter(|(user, _)| user == id).map(|(_, s)| *s).collect();
            platform::outbox::enqueue(&mut tx, &crate::events::deleted(*id, &signup_ids)).await?;
        }
        tx.commit().await?;
        total += ids.len();
        tracing::info!(accounts = ids.len(), %object, "archived and removed never-verified accounts");
    }
    tracing::info!(accounts = total, to = storage.location(), "archive finished");
    Ok(())
}
