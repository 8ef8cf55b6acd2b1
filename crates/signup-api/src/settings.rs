//! signup-api's configuration, from environment variables only.

use std::time::Duration;

use platform::settings::{SettingsError, ShutdownSettings, TelemetrySettings};
use serde::Deserialize;

/// Everything signup-api reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT`: HTTP, 8080 by default. `/metrics` is served here too.
    pub port: u16,
    /// Where the gRPC services are and how long a call to them may take.
    pub upstreams: Upstreams,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

/// The gRPC services signup-api calls.
#[derive(Debug, Clone, Deserialize)]
pub struct Upstreams {
    /// `USER_METADATA_URL`.
    #[serde(default = "default_user_metadata_url")]
    pub user_metadata_url: String,
    /// `PASSWORD_URL`.
    #[serde(default = "default_password_url")]
    pub password_url: String,
    /// `EMAIL_VERIFICATION_URL`.
    #[serde(default = "default_email_verification_url")]
    pub email_verification_url: String,
    /// `FRIEND_DISCOVERY_URL`.
    #[serde(default = "default_friend_discovery_url")]
    pub friend_discovery_url: String,
    /// `GRPC_DEADLINE_MS`: the deadline of every call, 5000 by default.
    #[serde(default = "default_deadline_ms")]
    grpc_deadline_ms: u64,
}

fn default_user_metadata_url() -> String {
    "http://127.0.0.1:50051".to_owned()
}
fn default_password_url() -> String {
    "http://127.0.0.1:50052".to_owned()
}
fn default_email_verification_url() -> String {
    "http://127.0.0.1:50053".to_owned()
}
fn default_friend_discovery_url() -> String {
    "http://127.0.0.1:50054".to_owned()
}
fn default_deadline_ms() -> u64 {
    5000
}

#[derive(Deserialize)]
struct RawSettings {
    #[serde(default = "default_port")]
    port: u16,
}

fn default_port() -> u16 {
    8080
}

impl Upstreams {
    /// The deadline applied to every gRPC call.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.grpc_deadline_ms)
    }

    fn check(&self) -> Result<(), SettingsError> {
        let urls = [
            ("USER_METADATA_URL", &self.user_metadata_url),
            ("PASSWORD_URL", &self.password_url),
            ("EMAIL_VERIFICATION_URL", &self.email_verification_url),
            ("FRIEND_DISCOVERY_URL", &self.friend_discovery_url),
        ];
        for (variable, url) in urls {
            let uri: http::Uri = url.parse().map_err(|e| SettingsError::invalid(variable, e))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(SettingsError::invalid(variable, "must be an http:// or https:// URL with a host"));
            }
        }
        if self.grpc_deadline_ms == 0 {
            return Err(SettingsError::invalid("GRPC_DEADLINE_MS", "must be positive"));
        }
        Ok(())
    }
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let raw: RawSettings = platform::settings::load()?;
        let upstreams: Upstreams = platform::settings::load()?;
        upstreams.check()?;
        Ok(Self {
            port: raw.port,
            upstreams,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }

    /// The `PORT` alone, for the `healthcheck` subcommand.
    pub fn load_port() -> Result<u16, SettingsError> {
        Ok(platform::settings::load::<RawSettings>()?.port)
    }
}
