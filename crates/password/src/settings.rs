//! The password service's configuration, from environment variables only.

use platform::settings::{DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings};

/// Everything the password service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50052) and `METRICS_PORT` (default 9052).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `password`) and pool settings.
    pub database: DatabaseSettings,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        Ok(Self {
            server: ServerSettings::load(50052, 9052)?,
            database: DatabaseSettings::load("password")?,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
