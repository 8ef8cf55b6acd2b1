//! signup-api's configuration, from environment variables only.

use std::time::Duration;

use platform::settings::{SettingsError, ShutdownSettings, TelemetrySettings};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::domain::{password::PasswordPolicy, signup::SignupLimits};

/// Everything signup-api reads at start.
#[derive(Clone)]
pub struct Settings {
    /// `PORT`: HTTP, 8080 by default. `/metrics` is served here too.
    pub port: u16,
    /// Where the gRPC services are and how long a call to them may take.
    pub upstreams: Upstreams,
    /// The limits signups are checked against.
    pub limits: SignupLimits,
    /// `MAX_BODY_BYTES`: largest request body accepted, 131072 by default.
    pub max_body_bytes: usize,
    /// `CONTACT_HASH_KEY`: the secret contacts and emails are hashed under (at least 32 bytes).
    pub contact_hash_key: SecretString,
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

#[derive(Deserialize)]
struct RawLimits {
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_max_contacts")]
    max_contacts: usize,
    #[serde(default = "default_password_min_length")]
    password_min_length: usize,
    #[serde(default = "default_password_max_length")]
    password_max_length: usize,
    #[serde(default = "default_display_name_max_length")]
    display_name_max_length: usize,
    contact_hash_key: Option<SecretString>,
}

fn default_max_body_bytes() -> usize {
    128 * 1024
}
fn default_max_contacts() -> usize {
    1000
}
fn default_password_min_length() -> usize {
    15
}
fn default_password_max_length() -> usize {
    128
}
fn default_display_name_max_length() -> usize {
    100
}

/// The shortest `CONTACT_HASH_KEY` accepted: 256 bits.
const MIN_KEY_BYTES: usize = 32;

impl RawLimits {
    fn check(self) -> Result<(SignupLimits, usize, SecretString), SettingsError> {
        if self.password_min_length < 8 {
            return Err(SettingsError::invalid("PASSWORD_MIN_LENGTH", "must be at least 8"));
        }
        if self.password_max_length < self.password_min_length || self.password_max_length > 1024 {
            return Err(SettingsError::invalid("PASSWORD_MAX_LENGTH", "must be between PASSWORD_MIN_LENGTH and 1024"));
        }
        if self.display_name_max_length == 0 {
            return Err(SettingsError::invalid("DISPLAY_NAME_MAX_LENGTH", "must be positive"));
        }
        if self.max_body_bytes < 1024 {
            return Err(SettingsError::invalid("MAX_BODY_BYTES", "must be at least 1024"));
        }
        let key = self.contact_hash_key.ok_or_else(|| SettingsError::invalid("CONTACT_HASH_KEY", "is required"))?;
        if key.expose_secret().len() < MIN_KEY_BYTES {
            return Err(SettingsError::invalid("CONTACT_HASH_KEY", format!("must be at least {MIN_KEY_BYTES} bytes")));
        }
        let limits = SignupLimits {
            password: PasswordPolicy { min_chars: self.password_min_length, max_chars: self.password_max_length },
            display_name_max_chars: self.display_name_max_length,
            max_contacts: self.max_contacts,
        };
        Ok((limits, self.max_body_bytes, key))
    }
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
        let (limits, max_body_bytes, contact_hash_key) = platform::settings::load::<RawLimits>()?.check()?;
        Ok(Self {
            port: raw.port,
            upstreams,
            limits,
            max_body_bytes,
            contact_hash_key,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }

    /// The `PORT` alone, for the `healthcheck` subcommand.
    pub fn load_port() -> Result<u16, SettingsError> {
        Ok(platform::settings::load::<RawSettings>()?.port)
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("port", &self.port)
            .field("upstreams", &self.upstreams)
            .field("limits", &self.limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("contact_hash_key", &"[redacted]")
            .finish()
    }
}
