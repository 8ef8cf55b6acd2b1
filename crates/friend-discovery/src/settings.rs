//! The friend-discovery service's configuration, from environment variables only.

use serde::Deserialize;

use platform::{
    events::Subscription,
    settings::{AmqpSettings, DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings},
};

/// Everything the friend-discovery service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50054) and `METRICS_PORT` (default 9054).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `friend_discovery`) and pool settings.
    pub database: DatabaseSettings,
    /// `AMQP_URL` and `EVENTS_EXCHANGE`.
    pub amqp: AmqpSettings,
    /// `EVENTS_QUEUE`, `EVENTS_DELIVERY_LIMIT`, `EVENTS_PREFETCH`: this service's subscription to the events.
    pub subscription: Subscription,
    /// `SUGGESTIONS_PER_DAY` (500): suggestions one asker is served per day (UTC); beyond, the answer is
    /// RESOURCE_EXHAUSTED. Bounds how fast anyone can learn who is a member.
    pub suggestions_per_day: i32,
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
            server: ServerSettings::load(50054, 9054)?,
            database: DatabaseSettings::load("friend_discovery")?,
            subscription: amqp.subscription("friend-discovery")?,
            amqp,
            suggestions_per_day: suggestions_per_day()?,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawSuggestions {
    suggestions_per_day: i32,
}

impl Default for RawSuggestions {
    fn default() -> Self {
        Self { suggestions_per_day: 500 }
    }
}

fn suggestions_per_day() -> Result<i32, SettingsError> {
    let raw: RawSuggestions = platform::settings::load()?;
    if raw.suggestions_per_day < 1 {
        return Err(SettingsError::invalid("SUGGESTIONS_PER_DAY", "must be at least 1"));
    }
    Ok(raw.suggestions_per_day)
}
