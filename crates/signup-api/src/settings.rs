//! signup-api's configuration, from environment variables only.

use std::time::Duration;

use platform::settings::{SettingsError, ShutdownSettings, TelemetrySettings};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::{
    domain::{password::PasswordPolicy, signup::SignupLimits},
    ratelimit::{Class, Policy, RateLimitSettings},
};

/// Everything signup-api reads at start.
#[derive(Clone)]
pub struct Settings {
    /// `PORT`: the API over HTTP, 8080 by default.
    pub port: u16,
    /// `METRICS_PORT`: `/livez`, `/readyz` and `/metrics`, 9050 by default, off the public port.
    pub metrics_port: u16,
    /// Where the gRPC services are and how long a call to them may take.
    pub upstreams: Upstreams,
    /// The limits signups are checked against.
    pub limits: SignupLimits,
    /// `MAX_BODY_BYTES`: largest request body accepted, 131072 by default.
    pub max_body_bytes: usize,
    /// `CONTACT_HASH_KEY`: the secret contacts and emails are hashed under (at least 32 bytes).
    pub contact_hash_key: SecretString,
    /// `IDEMPOTENCY_FINGERPRINT_KEY`: the secret an `Idempotency-Key`'s request fingerprint is made under (at
    /// least 32 bytes), separate from the contact key so each can be rotated on its own.
    pub fingerprint_key: SecretString,
    /// Per-client budgets for each kind of request, and which proxies to believe about the client.
    pub rate_limits: RateLimitSettings,
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
    #[serde(default = "default_metrics_port")]
    metrics_port: u16,
}

fn default_metrics_port() -> u16 {
    9050
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
    #[serde(default = "default_password_min_score")]
    password_min_score: u8,
    contact_hash_key: Option<SecretString>,
    idempotency_fingerprint_key: Option<SecretString>,
}

fn default_password_min_score() -> u8 {
    3
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

/// The checked limits and the two secrets.
struct Checked {
    limits: SignupLimits,
    max_body_bytes: usize,
    contact_hash_key: SecretString,
    fingerprint_key: SecretString,
}

impl RawLimits {
    fn check(self) -> Result<Checked, SettingsError> {
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
        if self.password_min_score > 4 {
            return Err(SettingsError::invalid("PASSWORD_MIN_SCORE", "must be between 0 and 4"));
        }
        let contact_hash_key = secret_key("CONTACT_HASH_KEY", self.contact_hash_key)?;
        let fingerprint_key = secret_key("IDEMPOTENCY_FINGERPRINT_KEY", self.idempotency_fingerprint_key)?;
        let limits = SignupLimits {
            password: PasswordPolicy {
                min_chars: self.password_min_length,
                max_chars: self.password_max_length,
                min_score: self.password_min_score,
            },
            display_name_max_chars: self.display_name_max_length,
            max_contacts: self.max_contacts,
        };
        Ok(Checked { limits, max_body_bytes: self.max_body_bytes, contact_hash_key, fingerprint_key })
    }
}

/// A required secret key of at least [`MIN_KEY_BYTES`]; the error never echoes it.
fn secret_key(variable: &str, key: Option<SecretString>) -> Result<SecretString, SettingsError> {
    let key = key.ok_or_else(|| SettingsError::invalid(variable, "is required"))?;
    if key.expose_secret().len() < MIN_KEY_BYTES {
        return Err(SettingsError::invalid(variable, format!("must be at least {MIN_KEY_BYTES} bytes")));
    }
    Ok(key)
}

#[derive(Deserialize)]
#[serde(default)]
struct RawRateLimits {
    rate_limit_signups: String,
    rate_limit_resends: String,
    rate_limit_confirms: String,
    rate_limit_sessions: String,
    rate_limit_reads: String,
    trusted_proxies: String,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        Self {
            rate_limit_signups: "30/600".to_owned(),
            rate_limit_resends: "10/600".to_owned(),
            rate_limit_confirms: "30/600".to_owned(),
            rate_limit_sessions: "30/60".to_owned(),
            rate_limit_reads: "300/60".to_owned(),
            trusted_proxies: String::new(),
        }
    }
}

impl RawRateLimits {
    fn check(self) -> Result<RateLimitSettings, SettingsError> {
        let policy = |variable: &str, class: Class, value: &str| {
            Policy::parse(class, value).map_err(|reason| SettingsError::invalid(variable, reason))
        };
        let trusted_proxies = self
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        SettingsError::invalid("TRUSTED_PROXIES", format!("{item} is not an IP address or CIDR"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(RateLimitSettings {
            policies: [
                policy("RATE_LIMIT_SIGNUPS", Class::Signups, &self.rate_limit_signups)?,
                policy("RATE_LIMIT_RESENDS", Class::Resends, &self.rate_limit_resends)?,
                policy("RATE_LIMIT_CONFIRMS", Class::Confirms, &self.rate_limit_confirms)?,
                policy("RATE_LIMIT_SESSIONS", Class::Sessions, &self.rate_limit_sessions)?,
                policy("RATE_LIMIT_READS", Class::Reads, &self.rate_limit_reads)?,
            ],
            trusted_proxies,
        })
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
        let checked = platform::settings::load::<RawLimits>()?.check()?;
        Ok(Self {
            port: raw.port,
            metrics_port: raw.metrics_port,
            upstreams,
            limits: checked.limits,
            max_body_bytes: checked.max_body_bytes,
            contact_hash_key: checked.contact_hash_key,
            fingerprint_key: checked.fingerprint_key,
            rate_limits: platform::settings::load::<RawRateLimits>()?.check()?,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }

    /// The `METRICS_PORT` alone, for the `healthcheck` subcommand.
    pub fn load_metrics_port() -> Result<u16, SettingsError> {
        Ok(platform::settings::load::<RawSettings>()?.metrics_port)
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .field("upstreams", &self.upstreams)
            .field("limits", &self.limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("contact_hash_key", &"[redacted]")
            .field("fingerprint_key", &"[redacted]")
            .field("rate_limits", &self.rate_limits)
            .finish()
    }
}
