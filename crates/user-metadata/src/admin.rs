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

use std::{
    num::{NonZeroU64, NonZeroUsize},
    time::Duration,
};

use platform::{archive::ColdStorage, settings::SettingsError};
use serde::Deserialize;
use sqlx::PgPool;

use crate::store;

/// What the admin processes read, on top of the service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// `REPAIR_STUCK_OUTBOX_AFTER_SECS` (300): an event unpublished after this is due at once.
    repair_stuck_outbox_after_secs: u64,
    /// `ARCHIVE_URL` (`file://<working directory>/.archive`): where archives go.
    archive_url: Option<String>,
    /// `ARCHIVE_UNVERIFIED_AFTER_DAYS` (30): accounts never verified within this are archived and removed.
    archive_unverified_after_days: NonZeroU64,
    /// `ARCHIVE_BATCH_SIZE` (1000): records per archive object.
    archive_batch_size: NonZeroUsize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            repair_stuck_outbox_after_secs: 300,
            archive_url: None,
            archive_unverified_after_days: NonZeroU64::new(30).unwrap_or(NonZeroU64::MIN),
            archive_batch_size: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl AdminSettings {
    /// Reads and checks the admin variables.
    pub fn load() -> Result<Self, SettingsError> {
        let mut settings: Self = platform::settings::load()?;
        if settings.archive_batch_size.get() > 100_000 {
            return Err(SettingsError::invalid("ARCHIVE_BATCH_SIZE", "must be between 1 and 100000"));
        }
        settings.archive_url = Some(platform::archive::url_or_default(settings.archive_url)?);
        Ok(settings)
    }

    fn unverified_age(&self) -> Duration {
        Duration::from_secs(self.archive_unverified_after_days.get() * 24 * 60 * 60)
    }

    fn storage(&self) -> anyhow::Result<ColdStorage> {
        ColdStorage::from_url(self.archive_url.as_deref().unwrap_or_default())
    }
}

/// Finds outbox rows stuck behind a long backoff and makes them due at once.
pub(crate) async fn repair(pool: &PgPool, settings: &AdminSettings, dry_run: bool) -> anyhow::Result<()> {
    let age = Duration::from_secs(settings.repair_stuck_outbox_after_secs);
    let stuck = platform::outbox::stuck(pool, age).await?;
    for event in &stuck {
        let (event_id, kind, attempts) = (event.id, &event.event_type, event.attempts);
        if dry_run {
            tracing::info!(%event_id, %kind, attempts, "would make a stuck outbox event due now");
            continue;
        }
        platform::outbox::make_due(pool, event_id).await?;
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
    let storage = settings.storage()?;
    let age = settings.unverified_age();
    if dry_run {
        let count = store::unverified_count(pool, age).await?;
        tracing::info!(accounts = count, to = storage.location(), "would archive and remove never-verified accounts");
        return Ok(());
    }
    let mut total = 0usize;
    loop {
        let mut tx = pool.begin().await?;
        let batch = store::lock_unverified(&mut tx, age, settings.archive_batch_size.get()).await?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { break };
        let key = format!("user-metadata/users/{}-{}.jsonl.gz", first.id.simple(), last.id.simple());
        let records: Vec<serde_json::Value> = batch.iter().map(|user| user.record.clone()).collect();
        let object = storage.put_verified(&key, &records).await?;
        store::delete_archived(&mut tx, &batch).await?;
        tx.commit().await?;
        total += batch.len();
        tracing::info!(accounts = batch.len(), %object, "archived and removed never-verified accounts");
    }
    tracing::info!(accounts = total, to = storage.location(), "archive finished");
    Ok(())
}
