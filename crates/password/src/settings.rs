//! The password service's configuration, from environment variables only.

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
    /// `HASHING_QUEUE_LIMIT`: hashes allowed to wait for a thread; beyond it requests fail at once. Twice the
    /// thread count by default.
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
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
