//! The password service's configuration, from environment variables only.

use std::time::Duration;

use argon2::Params;
use platform::{
    events::Subscription,
    settings::{AmqpSettings, DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings},
};
use serde::Deserialize;

/// Everything the password service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50052) and `METRICS_PORT` (default 9052).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `password`) and pool settings.
    pub database: DatabaseSettings,
    /// `AMQP_URL` and `EVENTS_EXCHANGE`: password consumes `UserDeleted` to forget removed accounts.
    pub amqp: AmqpSettings,
    /// `EVENTS_QUEUE`, `EVENTS_DELIVERY_LIMIT`, `EVENTS_PREFETCH`: this service's subscription to the events.
    pub subscription: Subscription,
    /// argon2id parameters and the bounds of the hashing pool.
    pub hashing: HashingSettings,
    /// How long sessions and unpromoted attempt credentials live.
    pub sessions: SessionSettings,
    /// When consecutive failed sign-ins slow down and then lock out an email.
    pub throttle: Throttle,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

/// argon2id cost parameters (OWASP's by default) and how much hashing may run or wait at once.
#[derive(Debug, Clone, Copy)]
pub struct HashingSettings {
    /// The argon2id parameters new hashes are made with.
    pub params: ParamsSettings,
    /// `HASHING_THREADS`: hashes computed at once (each holds `ARGON2_MEMORY_KIB`); the CPU count by default.
    pub threads: usize,
    /// `HASHING_QUEUE_LIMIT`: hashes of each kind (signups; sign-ins and confirms) allowed to wait for a thread;
    /// beyond it requests of that kind fail at once. Twice the thread count by default.
    pub queue_limit: usize,
}

/// `ARGON2_MEMORY_KIB` (19456), `ARGON2_ITERATIONS` (2), `ARGON2_PARALLELISM` (1).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ParamsSettings {
    #[serde(default = "default_memory_kib")]
    argon2_memory_kib: u32,
    #[serde(default = "default_iterations")]
    argon2_iterations: u32,
    #[serde(default = "default_parallelism")]
    argon2_parallelism: u32,
}

fn default_memory_kib() -> u32 {
    19_456
}
fn default_iterations() -> u32 {
    2
}
fn default_parallelism() -> u32 {
    1
}

impl ParamsSettings {
    /// The checked argon2 parameters.
    pub fn params(&self) -> Result<Params, SettingsError> {
        let name = |e: argon2::Error| match e {
            argon2::Error::MemoryTooLittle | argon2::Error::MemoryTooMuch => "ARGON2_MEMORY_KIB",
            argon2::Error::TimeTooSmall => "ARGON2_ITERATIONS",
            _ => "ARGON2_PARALLELISM",
        };
        Params::new(self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism, None)
            .map_err(|e| SettingsError::invalid(name(e), e))
    }
}

#[derive(Deserialize)]
struct RawPool {
    hashing_threads: Option<usize>,
    hashing_queue_limit: Option<usize>,
}

impl HashingSettings {
    /// Loads and checks the hashing variables.
    pub fn load() -> Result<Self, SettingsError> {
        let params: ParamsSettings = platform::settings::load()?;
        params.params()?;
        let pool: RawPool = platform::settings::load()?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = pool.hashing_threads.unwrap_or(cpus);
        if threads == 0 {
            return Err(SettingsError::invalid("HASHING_THREADS", "must be at least 1"));
        }
        Ok(Self { params, threads, queue_limit: pool.hashing_queue_limit.unwrap_or(2 * threads) })
    }
}

/// Session lifetimes and how long an attempt's credential waits to be promoted.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// `SESSION_IDLE_TIMEOUT_SECS`: a session unused this long ends (86400, a day).
    session_idle_timeout_secs: u64,
    /// `SESSION_MAX_LIFETIME_SECS`: a session ends this long after it was opened, however it is used (2592000,
    /// thirty days).
    session_max_lifetime_secs: u64,
    /// `ATTEMPT_CREDENTIAL_TTL_DAYS`: an attempt's credential not promoted within this is removed (30, as long as
    /// user-metadata keeps unverified accounts).
    attempt_credential_ttl_days: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            session_idle_timeout_secs: 86_400,
            session_max_lifetime_secs: 30 * 86_400,
            attempt_credential_ttl_days: 30,
        }
    }
}

impl SessionSettings {
    fn load() -> Result<Self, SettingsError> {
        let settings: Self = platform::settings::load()?;
        if settings.session_idle_timeout_secs == 0 {
            return Err(SettingsError::invalid("SESSION_IDLE_TIMEOUT_SECS", "must be positive"));
        }
        if settings.session_max_lifetime_secs < settings.session_idle_timeout_secs {
            return Err(SettingsError::invalid(
                "SESSION_MAX_LIFETIME_SECS",
                "must be at least SESSION_IDLE_TIMEOUT_SECS",
            ));
        }
        if settings.attempt_credential_ttl_days == 0 {
            return Err(SettingsError::invalid("ATTEMPT_CREDENTIAL_TTL_DAYS", "must be positive"));
        }
        Ok(settings)
    }

    /// How long a session lives without use.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_secs)
    }

    /// How long a session lives at most.
    pub fn absolute(&self) -> Duration {
        Duration::from_secs(self.session_max_lifetime_secs)
    }

    /// How long an attempt's credential is kept for its link to be confirmed.
    pub fn attempt_ttl(&self) -> Duration {
        Duration::from_secs(self.attempt_credential_ttl_days * 86_400)
    }
}

/// Sign-in throttling per email (NIST SP 800-63B-4 §3.2.2: at most 100 consecutive failures): after
/// `slow_after` consecutive failures each further attempt must wait `first_delay`, doubling per failure up to
/// `max_delay`; after `lock_after` failures, `lockout`. A success forgets the failures.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// `LOGIN_THROTTLE_AFTER_FAILURES` (10).
    pub slow_after: u32,
    /// `LOGIN_THROTTLE_FIRST_DELAY_MS` (1000).
    pub first_delay: Duration,
    /// `LOGIN_THROTTLE_MAX_DELAY_SECS` (300).
    pub max_delay: Duration,
    /// `LOGIN_LOCKOUT_AFTER_FAILURES` (100, the most NIST allows).
    pub lock_after: u32,
    /// `LOGIN_LOCKOUT_SECS` (3600).
    pub lockout: Duration,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawThrottle {
    login_throttle_after_failures: u32,
    login_throttle_first_delay_ms: u64,
    login_throttle_max_delay_secs: u64,
    login_lockout_after_failures: u32,
    login_lockout_secs: u64,
}

impl Default for RawThrottle {
    fn default() -> Self {
        Self {
            login_throttle_after_failures: 10,
            login_throttle_first_delay_ms: 1000,
            login_throttle_max_delay_secs: 300,
            login_lockout_after_failures: 100,
            login_lockout_secs: 3600,
        }
    }
}

impl Throttle {
    fn load() -> Result<Self, SettingsError> {
        let raw: RawThrottle = platform::settings::load()?;
        if !(1..=100).contains(&raw.login_lockout_after_failures) {
            return Err(SettingsError::invalid("LOGIN_LOCKOUT_AFTER_FAILURES", "must be between 1 and 100"));
        }
        if raw.login_throttle_after_failures > raw.login_lockout_after_failures {
            return Err(SettingsError::invalid(
                "LOGIN_THROTTLE_AFTER_FAILURES",
                "must not exceed LOGIN_LOCKOUT_AFTER_FAILURES",
            ));
        }
        Ok(Self {
            slow_after: raw.login_throttle_after_failures,
            first_delay: Duration::from_millis(raw.login_throttle_first_delay_ms),
            max_delay: Duration::from_secs(raw.login_throttle_max_delay_secs),
            lock_after: raw.login_lockout_after_failures,
            lockout: Duration::from_secs(raw.login_lockout_secs),
        })
    }

    /// How long failure counts are kept once nothing happens: long enough to outlast any delay they impose.
    pub fn memory(&self) -> Duration {
        self.lockout.max(self.max_delay).max(Duration::from_secs(86_400))
    }
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let amqp = AmqpSettings::load()?;
        Ok(Self {
            server: ServerSettings::load(50052, 9052)?,
            database: DatabaseSettings::load("password")?,
            subscription: amqp.subscription("password")?,
            amqp,
            hashing: HashingSettings::load()?,
            sessions: SessionSettings::load()?,
            throttle: Throttle::load()?,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
