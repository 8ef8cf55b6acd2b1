//! The user-metadata service's own configuration, from environment variables only (the shared part is
//! `platform::settings::Common`).

use std::{
    num::{NonZeroU64, NonZeroUsize},
    time::Duration,
};

use platform::{
    outbox::RelaySettings,
    service::Service as _,
    settings::{Load, SettingsError},
};
use serde::Deserialize;

use crate::{UserMetadata, store::AttemptLimit};

/// What the user-metadata service reads at start beyond what every service reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `OUTBOX_BATCH_SIZE` (100): events published per transaction.
    outbox_batch_size: NonZeroUsize,
    /// `OUTBOX_POLL_INTERVAL_MS` (1000): how often due events are looked for when no notification arrives.
    outbox_poll_interval_ms: NonZeroU64,
    /// `IDEMPOTENCY_KEY_TTL_HOURS` (24): how long an `Idempotency-Key` is remembered.
    idempotency_key_ttl_hours: NonZeroU64,
    /// `SIGNUP_ATTEMPTS_PER_ACCOUNT` (10) within `SIGNUP_ATTEMPT_WINDOW_HOURS` (24): how many signup attempts a
    /// pending account takes; beyond, new attempts are dropped (never earlier ones).
    signup_attempts_per_account: NonZeroUsize,
    signup_attempt_window_hours: NonZeroU64,
}

impl Default for Settings {
    fn default() -> Self {
        let u = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let u64 = |n: u64| NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN);
        Self {
            outbox_batch_size: u(100),
            outbox_poll_interval_ms: u64(1000),
            idempotency_key_ttl_hours: u64(24),
            signup_attempts_per_account: u(10),
            signup_attempt_window_hours: u64(24),
        }
    }
}

impl Load for Settings {
    fn load() -> Result<Self, SettingsError> {
        let own: Self = platform::settings::load()?;
        if own.outbox_batch_size.get() > 10_000 {
            return Err(SettingsError::invalid("OUTBOX_BATCH_SIZE", "must be at most 10000"));
        }
        if own.signup_attempts_per_account.get() > 1000 {
            return Err(SettingsError::invalid("SIGNUP_ATTEMPTS_PER_ACCOUNT", "must be at most 1000"));
        }
        Ok(own)
    }
}

impl Settings {
    /// How the relay publishes to `exchange`.
    pub fn relay(&self, exchange: &str) -> RelaySettings {
        RelaySettings {
            exchange: exchange.to_owned(),
            source: format!("/{}", UserMetadata::NAME),
            batch_size: i64::try_from(self.outbox_batch_size.get()).unwrap_or(i64::MAX),
            poll_interval: Duration::from_millis(self.outbox_poll_interval_ms.get()),
        }
    }

    /// How long an `Idempotency-Key` is remembered.
    pub fn idempotency_key_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_ttl_hours.get() * 3600)
    }

    /// How many signup attempts a pending account takes.
    pub fn attempts(&self) -> AttemptLimit {
        AttemptLimit {
            limit: i64::try_from(self.signup_attempts_per_account.get()).unwrap_or(i64::MAX),
            window: Duration::from_secs(self.signup_attempt_window_hours.get() * 3600),
        }
    }
}
