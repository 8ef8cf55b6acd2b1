//! The password service's configuration, from environment variables only: what it shares with every service, and
//! its own sections, each deserialised with its defaults; what is left here is the checks that span fields.

use std::{
    num::{NonZeroU32, NonZeroU64, NonZeroUsize},
    time::Duration,
};

use argon2::Params;
use platform::settings::{Load, SettingsError};
use serde::Deserialize;

/// Everything the password service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// argon2id parameters and the bounds of the hashing pool.
    pub hashing: HashingSettings,
    /// How long sessions and unpromoted attempt credentials live.
    pub sessions: SessionSettings,
    /// When consecutive failed sign-ins slow down and then lock out an email.
    pub throttle: Throttle,
    /// How the relay publishes `PasswordChanged` (`OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_INTERVAL_MS`,
    /// `OUTBOX_LINGER_MS`, `OUTBOX_RETENTION_HOURS`).
    pub outbox: platform::outbox::OutboxSettings,
}

impl Load for Settings {
    fn load() -> Result<Self, SettingsError> {
        let hashing: HashingSettings = platform::settings::load()?;
        hashing.params()?;
        let sessions: SessionSettings = platform::settings::load()?;
        if sessions.session_max_lifetime_secs < sessions.session_idle_timeout_secs {
            return Err(SettingsError::invalid(
                "SESSION_MAX_LIFETIME_SECS",
                "must be at least SESSION_IDLE_TIMEOUT_SECS",
            ));
        }
        let throttle: Throttle = platform::settings::load()?;
        if throttle.login_lockout_after_failures.get() > 100 {
            return Err(SettingsError::invalid(
                "LOGIN_LOCKOUT_AFTER_FAILURES",
                "must be at most 100 (NIST SP 800-63B)",
            ));
        }
        if throttle.login_throttle_after_failures > throttle.login_lockout_after_failures.get() {
            return Err(SettingsError::invalid(
                "LOGIN_THROTTLE_AFTER_FAILURES",
                "must not exceed LOGIN_LOCKOUT_AFTER_FAILURES",
            ));
        }
        if throttle.login_trusted_client_days > 365 {
            return Err(SettingsError::invalid("LOGIN_TRUSTED_CLIENT_DAYS", "must be at most 365"));
        }
        let outbox = platform::outbox::OutboxSettings::load()?;
        Ok(Self { hashing, sessions, throttle, outbox })
    }
}

/// OWASP's least argon2id memory (7 MiB, with 5 iterations).
const MIN_MEMORY_KIB: u32 = 7168;
/// OWASP's least argon2id settings all cost about this much memory × iterations (KiB).
const MIN_MEMORY_TIMES_ITERATIONS: u64 = 35_840;

/// argon2id cost parameters (OWASP's by default) and how much hashing may run or wait at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct HashingSettings {
    /// `ARGON2_MEMORY_KIB` (19456).
    argon2_memory_kib: u32,
    /// `ARGON2_ITERATIONS` (2).
    argon2_iterations: u32,
    /// `ARGON2_PARALLELISM` (1).
    argon2_parallelism: u32,
    /// `HASHING_THREADS`: hashes computed at once (each holds `ARGON2_MEMORY_KIB`); the CPU count by default.
    hashing_threads: Option<NonZeroUsize>,
    /// `HASHING_QUEUE_LIMIT`: hashes of each kind (signups; sign-ins and confirms) allowed to wait for a thread;
    /// beyond it requests of that kind fail at once. Twice the thread count by default.
    hashing_queue_limit: Option<usize>,
}

impl Default for HashingSettings {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hashing_threads: None,
            hashing_queue_limit: None,
        }
    }
}

impl HashingSettings {
    /// The checked argon2 parameters; the error names the variable at fault. Nothing weaker than OWASP's least
    /// settings starts: every sign-in rehashes a stored password under the current parameters, so a typo here
    /// (`64` meant as MiB) would otherwise make each account that signs in cheap to crack, and stay so after the fix.
    pub fn params(&self) -> Result<Params, SettingsError> {
        let name = |e: argon2::Error| match e {
            argon2::Error::MemoryTooLittle | argon2::Error::MemoryTooMuch => "ARGON2_MEMORY_KIB",
            argon2::Error::TimeTooSmall => "ARGON2_ITERATIONS",
            _ => "ARGON2_PARALLELISM",
        };
        let (memory, iterations) = (self.argon2_memory_kib, self.argon2_iterations);
        if memory < MIN_MEMORY_KIB {
            return Err(SettingsError::invalid("ARGON2_MEMORY_KIB", format!("must be at least {MIN_MEMORY_KIB}")));
        }
        if u64::from(memory) * u64::from(iterations) < MIN_MEMORY_TIMES_ITERATIONS {
            return Err(SettingsError::invalid(
                "ARGON2_ITERATIONS",
                format!(
                    "with ARGON2_MEMORY_KIB {memory}, must be at least {} (memory × iterations at least \
                     {MIN_MEMORY_TIMES_ITERATIONS}, as OWASP's 19456 × 2, 12288 × 3, 9216 × 4, 7168 × 5)",
                    MIN_MEMORY_TIMES_ITERATIONS.div_ceil(u64::from(memory))
                ),
            ));
        }
        Params::new(memory, iterations, self.argon2_parallelism, None).map_err(|e| SettingsError::invalid(name(e), e))
    }

    /// Hashing threads.
    pub fn threads(&self) -> usize {
        self.hashing_threads.map_or_else(|| std::thread::available_parallelism().map_or(1, usize::from), usize::from)
    }

    /// Hashes of each kind allowed to wait.
    pub fn queue_limit(&self) -> usize {
        self.hashing_queue_limit.unwrap_or(2 * self.threads())
    }
}

/// Session lifetimes and how long an attempt's credential waits to be promoted.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// `SESSION_IDLE_TIMEOUT_SECS`: a session unused this long ends (86400, a day).
    session_idle_timeout_secs: NonZeroU64,
    /// `SESSION_MAX_LIFETIME_SECS`: a session ends this long after it was opened, however it is used (2592000,
    /// thirty days).
    session_max_lifetime_secs: NonZeroU64,
    /// `ATTEMPT_CREDENTIAL_TTL_DAYS`: an attempt's credential not promoted within this is removed (30, as long as
    /// user-metadata keeps unverified accounts).
    attempt_credential_ttl_days: NonZeroU64,
    /// `SESSIONS_PER_ACCOUNT`: the most sessions an account keeps; a sign-in beyond it ends the least recently used
    /// (100).
    sessions_per_account: NonZeroU32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        let days = |n: u64| NonZeroU64::new(n * 86_400).unwrap_or(NonZeroU64::MIN);
        Self {
            session_idle_timeout_secs: days(1),
            session_max_lifetime_secs: days(30),
            attempt_credential_ttl_days: NonZeroU64::new(30).unwrap_or(NonZeroU64::MIN),
            sessions_per_account: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl SessionSettings {
    /// How long a session lives without use.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_secs.get())
    }

    /// How long a session lives at most.
    pub fn absolute(&self) -> Duration {
        Duration::from_secs(self.session_max_lifetime_secs.get())
    }

    /// The most sessions an account keeps.
    pub fn per_account(&self) -> u32 {
        self.sessions_per_account.get()
    }

    /// How long an attempt's credential is kept for its link to be confirmed.
    pub fn attempt_ttl(&self) -> Duration {
        Duration::from_secs(self.attempt_credential_ttl_days.get() * 86_400)
    }
}

/// Sign-in throttling (NIST SP 800-63B-4 §3.2.2: at most 100 consecutive failures per account). Per email and
/// client: after `LOGIN_THROTTLE_AFTER_FAILURES` (10) consecutive failures each further attempt must wait
/// `LOGIN_THROTTLE_FIRST_DELAY_MS` (1000), doubling per failure up to `LOGIN_THROTTLE_MAX_DELAY_SECS` (300); after
/// `LOGIN_LOCKOUT_AFTER_FAILURES` (100), `LOGIN_LOCKOUT_SECS` (3600); a success forgets that client's failures. Per
/// email: once its failures from all clients reach `LOGIN_LOCKOUT_AFTER_FAILURES`, it is locked out as long, except
/// for devices that signed in to it within `LOGIN_TRUSTED_CLIENT_DAYS` (30), presenting the device token that
/// sign-in gave them (each held to its own count instead). Per client: after failing on
/// `LOGIN_CLIENT_ACCOUNTS_PER_HOUR` (30) emails within an hour, it may try no other until the hour has passed.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Throttle {
    login_throttle_after_failures: u32,
    login_throttle_first_delay_ms: u64,
    login_throttle_max_delay_secs: u64,
    login_lockout_after_failures: NonZeroU32,
    login_lockout_secs: u64,
    login_trusted_client_days: u32,
    login_client_accounts_per_hour: NonZeroU32,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            login_throttle_after_failures: 10,
            login_throttle_first_delay_ms: 1000,
            login_throttle_max_delay_secs: 300,
            login_lockout_after_failures: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            login_lockout_secs: 3600,
            login_trusted_client_days: 30,
            login_client_accounts_per_hour: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Throttle {
    /// Consecutive failures after which each further attempt must wait.
    pub fn slow_after(&self) -> u32 {
        self.login_throttle_after_failures
    }

    /// The first wait.
    pub fn first_delay(&self) -> Duration {
        Duration::from_millis(self.login_throttle_first_delay_ms)
    }

    /// The longest wait before the lockout.
    pub fn max_delay(&self) -> Duration {
        Duration::from_secs(self.login_throttle_max_delay_secs)
    }

    /// Consecutive failures after which the email is locked out.
    pub fn lock_after(&self) -> u32 {
        self.login_lockout_after_failures.get()
    }

    /// How long a lockout lasts.
    pub fn lockout(&self) -> Duration {
        Duration::from_secs(self.login_lockout_secs)
    }

    /// How long after its last sign-in a device escapes the per-email lockout.
    pub fn trusted_for(&self) -> Duration {
        Duration::from_secs(u64::from(self.login_trusted_client_days) * 86_400)
    }

    /// Other emails a client may fail on within an hour.
    pub fn client_accounts_per_hour(&self) -> u32 {
        self.login_client_accounts_per_hour.get()
    }

    /// How long failure counts are kept once nothing happens: long enough to outlast any delay they impose.
    pub fn memory(&self) -> Duration {
        self.lockout().max(self.max_delay()).max(Duration::from_secs(86_400))
    }
}
