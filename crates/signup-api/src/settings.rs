//! signup-api's configuration, from environment variables only: its sections deserialise with their defaults, and
//! what is left here is turning them into the types the API uses, and the checks that span fields.

use std::{
    num::{NonZeroU32, NonZeroU64, NonZeroUsize},
    time::Duration,
};

use platform::settings::{GrpcUrl, Ports, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::{
    domain::{password::PasswordPolicy, signup::SignupLimits},
    ratelimit::{Class, Policy, RateLimitSettings},
};

/// signup-api's default ports: the API on 8080, `/livez`, `/readyz` and `/metrics` on 9050.
pub const PORTS: Ports = Ports { grpc: 8080, ops: 9050 };

/// Everything signup-api reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (the API) and `METRICS_PORT` (`/livez`, `/readyz`, `/metrics`, off the public port).
    pub server: ServerSettings,
    /// Where the gRPC services are and how long a call to them may take.
    pub upstreams: Upstreams,
    /// The limits signups are checked against.
    pub limits: SignupLimits,
    /// `MAX_BODY_BYTES`: largest request body accepted, 131072 by default.
    pub max_body_bytes: usize,
    /// `REQUEST_BODY_TIMEOUT_MS`: how long a request's body may take to arrive, from its head on, 10000 by default.
    pub request_body_timeout: std::time::Duration,
    /// `CONTACT_HASH_KEY`: the secret contacts and emails are hashed under (at least 32 bytes).
    pub contact_hash_key: SecretString,
    /// `IDEMPOTENCY_FINGERPRINT_KEY`: the secret an `Idempotency-Key`'s request fingerprint is made under (at
    /// least 32 bytes), separate from the contact key so each can be rotated on its own.
    pub fingerprint_key: SecretString,
    /// Per-client budgets for each kind of request, and which proxies to believe about the client.
    pub rate_limits: RateLimitSettings,
    /// How long and how many checked sessions this replica remembers.
    pub session_cache: SessionCacheSettings,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

/// The gRPC services signup-api calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    /// `USER_METADATA_URL`.
    pub user_metadata_url: GrpcUrl,
    /// `PASSWORD_URL`.
    pub password_url: GrpcUrl,
    /// `EMAIL_VERIFICATION_URL`.
    pub email_verification_url: GrpcUrl,
    /// `FRIEND_DISCOVERY_URL`.
    pub friend_discovery_url: GrpcUrl,
    /// `GRPC_DEADLINE_MS`: the deadline of every call, 5000 by default.
    grpc_deadline_ms: NonZeroU64,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            user_metadata_url: GrpcUrl::from("http://127.0.0.1:50051"),
            password_url: GrpcUrl::from("http://127.0.0.1:50052"),
            email_verification_url: GrpcUrl::from("http://127.0.0.1:50053"),
            friend_discovery_url: GrpcUrl::from("http://127.0.0.1:50054"),
            grpc_deadline_ms: NonZeroU64::new(5000).unwrap_or(NonZeroU64::MIN),
        }
    }
}

impl Upstreams {
    /// The deadline applied to every gRPC call.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.grpc_deadline_ms.get())
    }
}

/// How long a checked session answers without asking the password service again, and how many are remembered.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct SessionCacheSettings {
    /// `SESSION_CACHE_TTL_MS`: 2000 by default; a session ended through another replica (or by an
    /// administrator) still opens this replica's requests for at most this long. 0 remembers nothing.
    session_cache_ttl_ms: u64,
    /// `SESSION_CACHE_CAPACITY`: 100000 sessions by default (about 150 bytes each).
    session_cache_capacity: NonZeroU64,
}

impl Default for SessionCacheSettings {
    fn default() -> Self {
        Self { session_cache_ttl_ms: 2000, session_cache_capacity: NonZeroU64::new(100_000).unwrap_or(NonZeroU64::MIN) }
    }
}

impl SessionCacheSettings {
    /// The most `SESSION_CACHE_TTL_MS` may be: a session ended through another replica (a reset, which is the
    /// owner's remedy against a stolen session) works here for that long.
    const MAX_TTL_MS: u64 = 10_000;

    /// Reads `SESSION_CACHE_TTL_MS` and `SESSION_CACHE_CAPACITY`; a time-to-live over ten seconds is refused.
    fn load() -> Result<Self, SettingsError> {
        let settings: Self = platform::settings::load()?;
        if settings.session_cache_ttl_ms > Self::MAX_TTL_MS {
            let reason =
                format!("must be at most {} (a session ended elsewhere works here that long)", Self::MAX_TTL_MS);
            return Err(SettingsError::invalid("SESSION_CACHE_TTL_MS", reason));
        }
        Ok(settings)
    }

    /// How long a checked session is remembered.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.session_cache_ttl_ms)
    }

    /// How many sessions are remembered at most.
    pub fn capacity(&self) -> u64 {
        self.session_cache_capacity.get()
    }
}

/// The variables that shape a signup, and the two secrets, as they come.
#[derive(Deserialize)]
#[serde(default)]
struct Limits {
    max_body_bytes: NonZeroUsize,
    request_body_timeout_ms: NonZeroU64,
    max_contacts: usize,
    password_min_length: usize,
    password_max_length: usize,
    display_name_max_length: NonZeroUsize,
    password_min_score: u8,
    contact_hash_key: Option<SecretString>,
    idempotency_fingerprint_key: Option<SecretString>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: NonZeroUsize::new(128 * 1024).unwrap_or(NonZeroUsize::MIN),
            request_body_timeout_ms: NonZeroU64::new(10_000).unwrap_or(NonZeroU64::MIN),
            max_contacts: 1000,
            password_min_length: 15,
            password_max_length: 128,
            display_name_max_length: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            password_min_score: 3,
            contact_hash_key: None,
            idempotency_fingerprint_key: None,
        }
    }
}

/// The shortest key accepted: 256 bits.
const MIN_KEY_BYTES: usize = 32;

impl Limits {
    fn check(&self) -> Result<(), SettingsError> {
        if self.password_min_length < 8 {
            return Err(SettingsError::invalid("PASSWORD_MIN_LENGTH", "must be at least 8"));
        }
        if self.password_max_length < self.password_min_length
            || self.password_max_length > crate::domain::password::PRESENTED_MAX_CHARS
        {
            return Err(SettingsError::invalid("PASSWORD_MAX_LENGTH", "must be between PASSWORD_MIN_LENGTH and 1024"));
        }
        if self.max_body_bytes.get() < 1024 {
            return Err(SettingsError::invalid("MAX_BODY_BYTES", "must be at least 1024"));
        }
        if self.password_min_score > 4 {
            return Err(SettingsError::invalid("PASSWORD_MIN_SCORE", "must be between 0 and 4"));
        }
        Ok(())
    }

    fn signup(&self) -> SignupLimits {
        SignupLimits {
            password: PasswordPolicy {
                min_chars: self.password_min_length,
                max_chars: self.password_max_length,
                min_score: self.password_min_score,
            },
            display_name_max_chars: self.display_name_max_length.get(),
            max_contacts: self.max_contacts,
        }
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

/// The per-client budgets as they come: `<requests>/<seconds>` each.
#[derive(Deserialize)]
#[serde(default)]
struct RateLimits {
    rate_limit_signups: String,
    rate_limit_resends: String,
    rate_limit_confirms: String,
    rate_limit_sessions: String,
    rate_limit_reads: String,
    rate_limit_ipv6_48_clients: NonZeroU32,
    trusted_proxies: String,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            rate_limit_signups: "30/600".to_owned(),
            rate_limit_resends: "10/600".to_owned(),
            rate_limit_confirms: "30/600".to_owned(),
            rate_limit_sessions: "30/60".to_owned(),
            rate_limit_reads: "300/60".to_owned(),
            rate_limit_ipv6_48_clients: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            trusted_proxies: String::new(),
        }
    }
}

impl RateLimits {
    fn check(self) -> Result<RateLimitSettings, SettingsError> {
        let policy = |variable: &str, class: Class, value: &str| {
            Policy::parse(class, value).map_err(|reason| SettingsError::invalid(variable, reason))
        };
        if self.rate_limit_ipv6_48_clients.get() > 1 << 16 {
            return Err(SettingsError::invalid("RATE_LIMIT_IPV6_48_CLIENTS", "must be at most 65536 (a /48's /64s)"));
        }
        Ok(RateLimitSettings {
            ipv6_48_clients: self.rate_limit_ipv6_48_clients,
            policies: [
                policy("RATE_LIMIT_SIGNUPS", Class::Signups, &self.rate_limit_signups)?,
                policy("RATE_LIMIT_RESENDS", Class::Resends, &self.rate_limit_resends)?,
                policy("RATE_LIMIT_CONFIRMS", Class::Confirms, &self.rate_limit_confirms)?,
                policy("RATE_LIMIT_SESSIONS", Class::Sessions, &self.rate_limit_sessions)?,
                policy("RATE_LIMIT_READS", Class::Reads, &self.rate_limit_reads)?,
            ],
            trusted_proxies: trusted_proxies(&self.trusted_proxies)?,
        })
    }
}

/// `TRUSTED_PROXIES`: comma-separated addresses or CIDRs.
fn trusted_proxies(list: &str) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| SettingsError::invalid("TRUSTED_PROXIES", format!("{item} is not an IP address or CIDR")))
        })
        .collect()
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let server = ServerSettings::load(PORTS)?;
        let upstreams: Upstreams = platform::settings::load()?;
        let limits: Limits = platform::settings::load()?;
        limits.check()?;
        let signup = limits.signup();
        Ok(Self {
            server,
            upstreams,
            limits: signup,
            max_body_bytes: limits.max_body_bytes.get(),
            request_body_timeout: std::time::Duration::from_millis(limits.request_body_timeout_ms.get()),
            contact_hash_key: secret_key("CONTACT_HASH_KEY", limits.contact_hash_key)?,
            fingerprint_key: secret_key("IDEMPOTENCY_FINGERPRINT_KEY", limits.idempotency_fingerprint_key)?,
            rate_limits: platform::settings::load::<RateLimits>()?.check()?,
            session_cache: SessionCacheSettings::load()?,
            shutdown: ShutdownSettings::load()?,
            telemetry: platform::settings::load()?,
        })
    }
}

#[cfg(test)]
impl Settings {
    /// The defaults, with test keys, a small body limit (2048 bytes, 2 contacts), a body deadline of 200 ms and
    /// upstreams nobody listens on (port 1 refuses at once): for the router's in-process tests.
    pub(crate) fn for_tests() -> Self {
        let limits = Limits {
            max_body_bytes: NonZeroUsize::new(2048).unwrap_or(NonZeroUsize::MIN),
            max_contacts: 2,
            ..Limits::default()
        };
        let nowhere = GrpcUrl::from("http://127.0.0.1:1");
        Self {
            server: ServerSettings { port: 0, metrics_port: 0 },
            upstreams: Upstreams {
                user_metadata_url: nowhere.clone(),
                password_url: nowhere.clone(),
                email_verification_url: nowhere.clone(),
                friend_discovery_url: nowhere,
                grpc_deadline_ms: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            },
            limits: limits.signup(),
            max_body_bytes: limits.max_body_bytes.get(),
            request_body_timeout: std::time::Duration::from_millis(200),
            contact_hash_key: SecretString::from("test-contact-hash-key-0123456789abcdef"),
            fingerprint_key: SecretString::from("test-fingerprint-key-0123456789abcdefgh"),
            rate_limits: RateLimits::default().check().unwrap_or_else(|e| panic!("default rate limits: {e}")),
            session_cache: SessionCacheSettings::default(),
            shutdown: ShutdownSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}
