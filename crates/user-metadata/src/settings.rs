//! The user-metadata service's own configuration, from environment variables only (the shared part is
//! `platform::settings::Common`).

use std::{
    num::{NonZeroU64, NonZeroUsize},
    time::Duration,
};

use platform::{
    outbox::{OutboxSettings, RelaySettings},
    service::Service as _,
    settings::{Load, SettingsError},
};
use serde::Deserialize;

use crate::{UserMetadata, store::AttemptLimit};

/// What the user-metadata service reads at start beyond what every service reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_INTERVAL_MS`, `OUTBOX_LINGER_MS`, `OUTBOX_RETENTION_HOURS`: how the relay
    /// publishes and how long it keeps what it published (loaded on their own).
    #[serde(skip)]
    outbox: OutboxSettings,
    /// `IDEMPOTENCY_KEY_TTL_HOURS` (24): how long an `Idempotency-Key` is remembered.
    idempotency_key_ttl_hours: NonZeroU64,
    /// `SIGNUP_ATTEMPTS_PER_ACCOUNT` (10) within `SIGNUP_ATTEMPT_WINDOW_HOURS` (24): how many signup attempts a
    /// pending account takes; beyond, new attempts are dropped (never earlier ones).
    signup_attempts_per_account: NonZeroUsize,
    signup_attempt_window_hours: NonZeroU64,
    /// `SIGNUP_ATTEMPTS_PER_CLIENT` (3): how many of those one client's attempts may be, so that no single client
    /// fills an account's attempts and drops its owner's.
    signup_attempts_per_client: NonZeroUsize,
    /// `USER_CACHE_CAPACITY` (100000): how many users `GetUser` remembers between changes; 0 remembers none.
    user_cache_capacity: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let u = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let u64 = |n: u64| NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN);
        Self {
            outbox: OutboxSettings::default(),
            idempotency_key_ttl_hours: u64(24),
            signup_attempts_per_account: u(10),
            signup_attempt_window_hours: u64(24),
            signup_attempts_per_client: u(3),
            user_cache_capacity: 100_000,
        }
    }
}

impl Load for Settings {
    fn load() -> Result<Self, SettingsError> {
        let mut own: Self = platform::settings::load()?;
        own.outbox = OutboxSettings::load()?;
        if own.signup_attempts_per_account.get() > 1000 {
            return Err(SettingsError::invalid("SIGNUP_ATTEMPTS_PER_ACCOUNT", "must be at most 1000"));
        }
        if own.signup_attempts_per_client.get() > 1000 {
            return Err(SettingsError::invalid("SIGNUP_ATTEMPTS_PER_CLIENT", "must be at most 1000"));
        }
        Ok(own)
    }
}

impl Settings {
    /// How the relay publishes to `exchange`.
    pub fn relay(&self, exchange: &str) -> RelaySettings {
        self.outbox.relay(exchange, UserMetadata::NAME)
    }

    /// How long an `Idempotency-Key` is remembered.
    pub fn idempotency_key_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_ttl_hours.get() * 3600)
    }

    /// How many users `GetUser` remembers between changes (0: none).
    pub fn user_cache_capacity(&self) -> u64 {
        self.user_cache_capacity
    }

    /// How many signup attempts a pending account takes.
    pub fn attempts(&self) -> AttemptLimit {
        AttemptLimit {
            limit: i64::try_from(self.signup_attempts_per_account.get()).unwrap_or(i64::MAX),
            per_client: i64::try_from(self.signup_attempts_per_client.get()).unwrap_or(i64::MAX),
            window: Duration::from_secs(self.signup_attempt_window_hours.get() * 3600),
        }
    }
}
