//! The user-metadata service's configuration, from environment variables only.

use platform::{
    outbox::RelaySettings,
    settings::{AmqpSettings, DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings},
};
use serde::Deserialize;

use crate::store::AttemptLimit;

/// Everything the user-metadata service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50051) and `METRICS_PORT` (default 9051).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `user_metadata`) and pool settings.
    pub database: DatabaseSettings,
    /// `AMQP_URL` and `EVENTS_EXCHANGE`.
    pub amqp: AmqpSettings,
    /// `OUTBOX_BATCH_SIZE` (100) and `OUTBOX_POLL_INTERVAL_MS` (1000): how the relay publishes.
    pub relay: RelaySettings,
    /// `IDEMPOTENCY_KEY_TTL_HOURS` (24): how long an `Idempotency-Key` is remembered.
    pub idempotency_key_ttl: std::time::Duration,
    /// `SIGNUP_ATTEMPTS_PER_ACCOUNT` (10) within `SIGNUP_ATTEMPT_WINDOW_HOURS` (24): how many signup attempts a
    /// pending account takes; beyond, new attempts are dropped (never earlier ones).
    pub attempts: AttemptLimit,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let amqp = AmqpSettings::load()?;
        Ok(Self {
            server: ServerSettings::load(50051, 9051)?,
            database: DatabaseSettings::load("user_metadata")?,
            relay: relay(&amqp)?,
            idempotency_key_ttl: key_ttl()?,
            attempts: attempt_limit()?,
            amqp,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}

#[derive(Deserialize)]
struct RawRelay {
    #[serde(default = "default_batch_size")]
    outbox_batch_size: i64,
    #[serde(default = "default_poll_interval_ms")]
    outbox_poll_interval_ms: u64,
}

fn default_batch_size() -> i64 {
    100
}

fn default_poll_interval_ms() -> u64 {
    1000
}

fn relay(amqp: &AmqpSettings) -> Result<RelaySettings, SettingsError> {
    let raw: RawRelay = platform::settings::load()?;
    if !(1..=10_000).contains(&raw.outbox_batch_size) {
        return Err(SettingsError::invalid("OUTBOX_BATCH_SIZE", "must be between 1 and 10000"));
    }
    if raw.outbox_poll_interval_ms == 0 {
        return Err(SettingsError::invalid("OUTBOX_POLL_INTERVAL_MS", "must be positive"));
    }
    Ok(RelaySettings {
        exchange: amqp.events_exchange.clone(),
        source: "/user-metadata".to_owned(),
        batch_size: raw.outbox_batch_size,
        poll_interval: std::time::Duration::from_millis(raw.outbox_poll_interval_ms),
    })
}

#[derive(Deserialize)]
struct RawKeys {
    #[serde(default = "default_key_ttl_hours")]
    idempotency_key_ttl_hours: u64,
}

fn default_key_ttl_hours() -> u64 {
    24
}

fn key_ttl() -> Result<std::time::Duration, SettingsError> {
    let raw: RawKeys = platform::settings::load()?;
    if raw.idempotency_key_ttl_hours == 0 {
        return Err(SettingsError::invalid("IDEMPOTENCY_KEY_TTL_HOURS", "must be at least 1"));
    }
    Ok(std::time::Duration::from_secs(raw.idempotency_key_ttl_hours * 3600))
}

#[derive(Deserialize)]
#[serde(default)]
struct RawAttempts {
    signup_attempts_per_account: i64,
    signup_attempt_window_hours: u64,
}

impl Default for RawAttempts {
    fn default() -> Self {
        Self { signup_attempts_per_account: 10, signup_attempt_window_hours: 24 }
    }
}

fn attempt_limit() -> Result<AttemptLimit, SettingsError> {
    let raw: RawAttempts = platform::settings::load()?;
    if !(1..=1000).contains(&raw.signup_attempts_per_account) {
        return Err(SettingsError::invalid("SIGNUP_ATTEMPTS_PER_ACCOUNT", "must be between 1 and 1000"));
    }
    if raw.signup_attempt_window_hours == 0 {
        return Err(SettingsError::invalid("SIGNUP_ATTEMPT_WINDOW_HOURS", "must be at least 1"));
    }
    Ok(AttemptLimit {
        limit: raw.signup_attempts_per_account,
        window: std::time::Duration::from_secs(raw.signup_attempt_window_hours * 3600),
    })
}
