//! The friend-discovery service's configuration, from environment variables only.

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
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
