//! Typed settings read from environment variables only, with errors that name the variable at fault.
//!
//! Every service loads its own section structs through [`load`]; the sections every service shares (telemetry,
//! shutdown, database, broker) live here. Loading only reads and parses: it opens no connection.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use sqlx::postgres::PgConnectOptions;

/// A configuration value that is missing or malformed, with the environment variable it came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct SettingsError {
    variable: String,
    reason: String,
}

impl SettingsError {
    /// Reports `variable` as invalid for `reason`. The reason must not contain the value if it may be secret.
    pub fn invalid(variable: &str, reason: impl fmt::Display) -> Self {
        Self { variable: variable.to_owned(), reason: reason.to_string() }
    }

    /// The environment variable at fault, as a user would type it.
    pub fn variable(&self) -> &str {
        &self.variable
    }
}

/// Deserialises `T` from the process environment. Field `foo_bar` reads variable `FOO_BAR`.
pub fn load<T: DeserializeOwned>() -> Result<T, SettingsError> {
    from_source(config::Environment::default())
}

/// Deserialises `T` from explicit variables instead of the process environment (tests, tools).
pub fn load_from<T: DeserializeOwned>(vars: &HashMap<String, String>) -> Result<T, SettingsError> {
    from_source(config::Environment::default().source(Some(vars.clone().into_iter().collect())))
}

fn from_source<T: DeserializeOwned>(env: config::Environment) -> Result<T, SettingsError> {
    config::Config::builder()
        .add_source(env)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(from_config_error)
}

/// Rewrites `config`'s errors so they name the environment variable rather than the lower-cased key.
fn from_config_error(error: config::ConfigError) -> SettingsError {
    use config::ConfigError;
    match error {
        ConfigError::NotFound(key) => SettingsError::invalid(&key.to_uppercase(), "is required"),
        ConfigError::Type { unexpected, expected, key: Some(key), .. } => {
            SettingsError::invalid(&key.to_uppercase(), format!("expected {expected}, got {unexpected}"))
        }
        ConfigError::At { error, key: Some(key), .. } => {
            SettingsError::invalid(&key.to_uppercase(), from_config_error(*error).reason)
        }
        ConfigError::Message(message) => match backticked(&message) {
            Some(key) if message.starts_with("missing field") => {
                SettingsError::invalid(&key.to_uppercase(), "is required")
            }
            _ => SettingsError::invalid("environment", message),
        },
        other => SettingsError::invalid("environment", other),
    }
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    #[default]
    Json,
    /// Human-readable lines, for people at a terminal.
    Pretty,
}

/// Logging and tracing: `RUST_LOG`, `LOG_FORMAT` and the standard `OTEL_*` variables we act on.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `RUST_LOG` directives; `info` when unset.
    #[serde(default = "default_rust_log")]
    pub rust_log: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: traces are exported over OTLP/gRPC only when set.
    #[serde(default)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`: overrides the service's own name in exported traces.
    #[serde(default)]
    pub otel_service_name: Option<String>,
}

fn default_rust_log() -> String {
    "info".to_owned()
}

impl TelemetrySettings {
    /// Loads and checks the telemetry variables.
    pub fn load() -> Result<Self, SettingsError> {
        let settings: Self = load()?;
        tracing_subscriber::EnvFilter::try_new(&settings.rust_log)
            .map_err(|e| SettingsError::invalid("RUST_LOG", e))?;
        Ok(settings)
    }
}

/// The ports a server binds: `PORT` for its protocol, `METRICS_PORT` for operational HTTP.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// `PORT`.
    pub port: u16,
    /// `METRICS_PORT`: `/livez`, `/readyz` and `/metrics`, off the port the service's protocol is served on.
    pub metrics_port: u16,
}

#[derive(Deserialize)]
struct RawServerSettings {
    port: Option<u16>,
    metrics_port: Option<u16>,
}

impl ServerSettings {
    /// Loads `PORT` and `METRICS_PORT`, falling back to the service's defaults.
    pub fn load(default_port: u16, default_metrics_port: u16) -> Result<Self, SettingsError> {
        let raw: RawServerSettings = load()?;
        Ok(Self {
            port: raw.port.unwrap_or(default_port),
            metrics_port: raw.metrics_port.unwrap_or(default_metrics_port),
        })
    }
}

/// The bound on draining in-flight work after SIGTERM: `SHUTDOWN_GRACE_PERIOD_SECS`, 20 by default.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ShutdownSettings {
    #[serde(default = "default_grace_secs")]
    shutdown_grace_period_secs: u64,
}

fn default_grace_secs() -> u64 {
    20
}

impl ShutdownSettings {
    /// Loads `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub fn load() -> Result<Self, SettingsError> {
        load()
    }

    /// How long in-flight work may take to finish once shutdown starts.
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_period_secs)
    }
}

/// The service's own Postgres database.
#[derive(Clone)]
pub struct DatabaseSettings {
    url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`: pool size, 10 by default.
    pub max_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT_SECS`: how long to wait for a connection, 5 by default.
    pub connect_timeout: Duration,
    /// `MIGRATE_ON_START`: run pending migrations before serving instead of refusing to start.
    pub migrate_on_start: bool,
}

#[derive(Deserialize)]
struct RawDatabaseSettings {
    database_url: Option<SecretString>,
    #[serde(default = "default_max_connections")]
    database_max_connections: u32,
    #[serde(default = "default_connect_timeout_secs")]
    database_connect_timeout_secs: u64,
    #[serde(default)]
    migrate_on_start: bool,
}

fn default_max_connections() -> u32 {
    10
}

fn default_connect_timeout_secs() -> u64 {
    5
}

impl DatabaseSettings {
    /// Loads `DATABASE_URL` (default: database `default_database` on the local server) and the pool variables.
    pub fn load(default_database: &str) -> Result<Self, SettingsError> {
        let raw: RawDatabaseSettings = load()?;
        let url = raw
            .database_url
            .unwrap_or_else(|| SecretString::from(format!("postgres://postgres@127.0.0.1:5432/{default_database}")));
        let settings = Self {
            url,
            max_connections: raw.database_max_connections.max(1),
            connect_timeout: Duration::from_secs(raw.database_connect_timeout_secs),
            migrate_on_start: raw.migrate_on_start,
        };
        settings.connect_options()?;
        Ok(settings)
    }

    /// The parsed connection options. The error names `DATABASE_URL` and never echoes it (it holds a password).
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(SettingsError::invalid("DATABASE_URL", "must be a postgres:// URL"));
        }
        PgConnectOptions::from_str(url).map_err(|e| SettingsError::invalid("DATABASE_URL", e))
    }

    /// The URL itself, password included: hand it only to the database driver.
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// Host, port and database name, safe to log.
    pub fn redacted(&self) -> String {
        match self.connect_options() {
            Ok(o) => format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("")),
            Err(_) => "<invalid>".to_owned(),
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.redacted())
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The RabbitMQ broker and the names of the topology on it.
#[derive(Clone, Deserialize)]
pub struct AmqpSettings {
    /// `AMQP_URL`, with credentials.
    #[serde(default = "default_amqp_url")]
    pub amqp_url: SecretString,
    /// `EVENTS_EXCHANGE`: the durable fanout exchange events are broadcast on.
    #[serde(default = "default_events_exchange")]
    pub events_exchange: String,
}

fn default_amqp_url() -> SecretString {
    SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f")
}

fn default_events_exchange() -> String {
    "signup.events".to_owned()
}

/// How a subscriber consumes: `EVENTS_QUEUE` (default `<service>.signup-events`), `EVENTS_DELIVERY_LIMIT`
/// (10 deliveries before dead-lettering) and `EVENTS_PREFETCH` (16 unacked messages in flight).
#[derive(Debug, Clone, Deserialize)]
struct RawSubscription {
    events_queue: Option<String>,
    #[serde(default = "default_delivery_limit")]
    events_delivery_limit: u32,
    #[serde(default = "default_prefetch")]
    events_prefetch: u16,
}

fn default_delivery_limit() -> u32 {
    10
}

fn default_prefetch() -> u16 {
    16
}

impl AmqpSettings {
    /// The subscription of the service whose queue is `<service>.signup-events` unless `EVENTS_QUEUE` says
    /// otherwise.
    pub fn subscription(&self, service: &str) -> Result<crate::events::Subscription, SettingsError> {
        let raw: RawSubscription = load()?;
        if raw.events_delivery_limit == 0 {
            return Err(SettingsError::invalid("EVENTS_DELIVERY_LIMIT", "must be at least 1"));
        }
        if raw.events_prefetch == 0 {
            return Err(SettingsError::invalid("EVENTS_PREFETCH", "must be at least 1"));
        }
        Ok(crate::events::Subscription {
            exchange: self.events_exchange.clone(),
            queue: raw.events_queue.unwrap_or_else(|| format!("{service}.signup-events")),
            delivery_limit: raw.events_delivery_limit,
            prefetch: raw.events_prefetch,
        })
    }

    /// Loads and checks `AMQP_URL` and `EVENTS_EXCHANGE`.
    pub fn load() -> Result<Self, SettingsError> {
        let settings: Self = load()?;
        settings.uri()?;
        Ok(settings)
    }

    /// The parsed broker URI. The error names `AMQP_URL` and never echoes it.
    pub fn uri(&self) -> Result<lapin::uri::AMQPUri, SettingsError> {
        lapin::uri::AMQPUri::from_str(self.amqp_url.expose_secret()).map_err(|e| SettingsError::invalid("AMQP_URL", e))
    }

    /// Host, port and vhost, safe to log.
    pub fn redacted(&self) -> String {
        match self.uri() {
            Ok(u) => format!("{}:{}/{}", u.authority.host, u.authority.port, u.vhost),
            Err(_) => "<invalid>".to_owned(),
        }
    }
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("amqp_url", &self.redacted())
            .field("events_exchange", &self.events_exchange)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        port: u16,
        #[serde(default)]
        flag: bool,
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_malformed_number_names_its_variable() {
        let error = load_from::<Sample>(&vars(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(error.variable(), "PORT");
    }

    #[test]
    fn a_missing_required_value_names_its_variable() {
        let error = load_from::<Sample>(&vars(&[])).unwrap_err();
        assert_eq!(error.variable(), "PORT");
        assert!(error.to_string().contains("required"), "{error}");
    }

    #[test]
    fn a_malformed_bool_names_its_variable() {
        let error = load_from::<Sample>(&vars(&[("PORT", "1"), ("FLAG", "maybe")])).unwrap_err();
        assert_eq!(error.variable(), "FLAG");
    }

    #[test]
    fn well_formed_values_parse() {
        let sample = load_from::<Sample>(&vars(&[("PORT", "8080"), ("FLAG", "true")])).unwrap();
        assert_eq!(sample.port, 8080);
        assert!(sample.flag);
    }
}
