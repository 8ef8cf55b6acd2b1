//! The user-metadata service's configuration, from environment variables only.

use platform::settings::{
    AmqpSettings, DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings,
};

/// Everything the user-metadata service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50051) and `METRICS_PORT` (default 9051).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `user-metadata`) and pool settings.
    pub database: DatabaseSettings,
    /// `AMQP_URL` and `EVENTS_EXCHANGE`.
    pub amqp: AmqpSettings,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        Ok(Self {
            server: ServerSettings::load(50051, 9051)?,
            database: DatabaseSettings::load("user_metadata")?,
            amqp: AmqpSettings::load()?,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
