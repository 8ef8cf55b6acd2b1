//! Typed settings read from environment variables only, with errors that name the variable at fault.
//!
//! Every service loads its own section structs through [`load`]; the sections every service shares (telemetry,
//! shutdown, database, broker) live here. Loading only reads and parses: it opens no connection.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use sqlx::postgres::PgConnectOptions;
use tracing_subscriber::filter::{LevelFilter, Targets};

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

/// A service's own settings: read from the environment and checked, with an error that names the first bad
/// variable.
pub trait Load: Sized {
    /// Reads and checks every variable.
    fn load() -> Result<Self, SettingsError>;
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

/// How spans are exported over OTLP (`OTEL_EXPORTER_OTLP_PROTOCOL`, or `_TRACES_PROTOCOL`, which wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317), the default here: what the collector in compose and Kubernetes listens on.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Logging and tracing: `RUST_LOG`, `LOG_FORMAT`, `TRACES_FILTER` and the standard `OTEL_*` variables we act on
/// (the SDK reads `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` and the exporter's
/// `OTEL_EXPORTER_OTLP_*` headers and timeouts itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// `RUST_LOG`: per-target levels for log lines only; `info` when unset.
    #[serde(deserialize_with = "targets")]
    pub rust_log: Targets,
    /// `TRACES_FILTER`: per-target levels for the spans exported, apart from the logs; `info` when unset.
    #[serde(deserialize_with = "targets")]
    pub traces_filter: Targets,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL; spans are exported when it or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the URL spans are sent to, as it is.
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otel_exporter_otlp_protocol: Option<OtlpProtocol>,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`.
    pub otel_exporter_otlp_traces_protocol: Option<OtlpProtocol>,
    /// `OTEL_SERVICE_NAME`: overrides the service's own name in exported traces.
    pub otel_service_name: Option<String>,
}

/// Per-target levels as `RUST_LOG` and `TRACES_FILTER` write them: `info,sqlx=warn,user_metadata=debug`.
fn targets<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Targets, D::Error> {
    String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            rust_log: Targets::new().with_default(LevelFilter::INFO),
            traces_filter: Targets::new().with_default(LevelFilter::INFO),
            log_format: LogFormat::Json,
            otel_exporter_otlp_endpoint: None,
            otel_exporter_otlp_traces_endpoint: None,
            otel_exporter_otlp_protocol: None,
            otel_exporter_otlp_traces_protocol: None,
            otel_service_name: None,
        }
    }
}

impl TelemetrySettings {
    /// Whether spans are exported: an OTLP endpoint is configured.
    pub fn exports_traces(&self) -> bool {
        self.otel_exporter_otlp_endpoint.is_some() || self.otel_exporter_otlp_traces_endpoint.is_some()
    }

    /// The protocol spans are exported with.
    pub fn otlp_protocol(&self) -> OtlpProtocol {
        self.otel_exporter_otlp_traces_protocol.or(self.otel_exporter_otlp_protocol).unwrap_or_default()
    }
}

/// A service's default ports: `PORT` for its protocol, `METRICS_PORT` for `/livez`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The protocol's port (gRPC, or the API's HTTP).
    pub grpc: u16,
    /// Operational HTTP.
    pub ops: u16,
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
    pub fn load(defaults: Ports) -> Result<Self, SettingsError> {
        let raw: RawServerSettings = load()?;
        Ok(Self { port: raw.port.unwrap_or(defaults.grpc), metrics_port: raw.metrics_port.unwrap_or(defaults.ops) })
    }
}

/// The bound on draining in-flight work after SIGTERM: `SHUTDOWN_GRACE_PERIOD_SECS`, 20 by default.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    shutdown_grace_period_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { shutdown_grace_period_secs: 20 }
    }
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

/// What every gRPC service reads: its ports, its own database, the broker, its subscription to the events (for
/// the services that consume them), the shutdown bound and telemetry.
#[derive(Debug, Clone)]
pub struct Common {
    /// `PORT`, `METRICS_PORT`.
    pub server: ServerSettings,
    /// `DATABASE_URL` (or the `PG*` variables) and the pool.
    pub database: DatabaseSettings,
    /// `AMQP_URL`, `EVENTS_EXCHANGE`.
    pub amqp: AmqpSettings,
    /// `EVENTS_QUEUE`, `EVENTS_DELIVERY_LIMIT`, `EVENTS_PREFETCH`, `EVENTS_DEDUP_WINDOW_HOURS`, for a subscriber.
    pub subscription: Option<crate::events::Subscription>,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

impl Common {
    /// Loads the shared variables of service `name`: its default `ports`, its default database (`name` with `_` for
    /// `-`), and, when it acts on some `events`, its queue (`<name>.signup-events` by default).
    pub fn load(name: &str, ports: Ports, events: &'static [&'static str]) -> Result<Self, SettingsError> {
        let amqp = AmqpSettings::load()?;
        let subscribes = !events.is_empty();
        let subscription = subscribes.then(|| crate::events::Subscription::load(&amqp, name, events)).transpose()?;
        Ok(Self {
            server: ServerSettings::load(ports)?,
            database: DatabaseSettings::load(&name.replace('-', "_"))?,
            amqp,
            subscription,
            shutdown: ShutdownSettings::load()?,
            telemetry: load()?,
        })
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
#[serde(default)]
struct RawDatabaseSettings {
    database_url: Option<SecretString>,
    database_max_connections: std::num::NonZeroU32,
    database_connect_timeout_secs: u64,
    migrate_on_start: bool,
    pghost: String,
    pgport: u16,
    pguser: String,
    pgpassword: Option<SecretString>,
    pgsslmode: Option<String>,
    pgdatabase: Option<String>,
}

impl Default for RawDatabaseSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_max_connections: std::num::NonZeroU32::MIN.saturating_add(9),
            database_connect_timeout_secs: 5,
            migrate_on_start: false,
            pghost: "127.0.0.1".to_owned(),
            pgport: 5432,
            pguser: "postgres".to_owned(),
            pgpassword: None,
            pgsslmode: None,
            pgdatabase: None,
        }
    }
}

impl RawDatabaseSettings {
    /// The URL of database `name` from the standard libpq variables, when `DATABASE_URL` is unset: so one
    /// `PGPASSWORD` serves every service, each in its own database.
    fn libpq_url(&self, name: &str) -> SecretString {
        let host = if self.pghost.contains(':') { format!("[{}]", self.pghost) } else { self.pghost.clone() };
        let Ok(mut url) = url::Url::parse(&format!("postgres://{host}:{}/{name}", self.pgport)) else {
            // Not a host a URL can hold: DATABASE_URL's check then names the problem.
            return SecretString::from(format!("postgres://{host}/{name}"));
        };
        let _ = url.set_username(&self.pguser);
        if let Some(password) = &self.pgpassword {
            let _ = url.set_password(Some(password.expose_secret()));
        }
        if let Some(mode) = &self.pgsslmode {
            url.query_pairs_mut().append_pair("sslmode", mode);
        }
        SecretString::from(String::from(url))
    }
}

impl DatabaseSettings {
    /// Loads `DATABASE_URL` (default: database `default_database` at `PGHOST`:`PGPORT` as `PGUSER` with
    /// `PGPASSWORD` and `PGSSLMODE`, by default `postgres@127.0.0.1:5432`) and the pool variables.
    pub fn load(default_database: &str) -> Result<Self, SettingsError> {
        let raw: RawDatabaseSettings = load()?;
        let url = match &raw.database_url {
            Some(url) => url.clone(),
            // PGDATABASE, set for one service, names its database instead of its own name.
            None => raw.libpq_url(raw.pgdatabase.as_deref().unwrap_or(default_database)),
        };
        let settings = Self {
            url,
            max_connections: raw.database_max_connections.get(),
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

/// The RabbitMQ broker and the name of the exchange events are broadcast on.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// `AMQP_URL`, with credentials.
    pub amqp_url: SecretString,
    /// `EVENTS_EXCHANGE`: the durable fanout exchange events are broadcast on.
    pub events_exchange: String,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            amqp_url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            events_exchange: "signup.events".to_owned(),
        }
    }
}

impl AmqpSettings {
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

/// The URL of another service's gRPC endpoint: `http://` or, with mutual TLS (`GRPC_TLS_*`), `https://`, with a
/// host. Checked when read, so a bad value stops the process at start naming its variable; which of the two
/// schemes goes with the process's TLS, [`crate::grpc::channel`] checks at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcUrl(String);

impl GrpcUrl {
    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for GrpcUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        let uri: http::Uri = url.parse().map_err(serde::de::Error::custom)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(serde::de::Error::custom("must be an http:// or https:// URL with a host"));
        }
        Ok(Self(url))
    }
}

impl From<&str> for GrpcUrl {
    /// A URL known to be well-formed (a default).
    fn from(url: &str) -> Self {
        Self(url.to_owned())
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

    #[derive(Debug, Deserialize)]
    struct Upstreams {
        user_metadata_url: GrpcUrl,
        #[serde(default)]
        pool: Option<std::num::NonZeroU32>,
    }

    #[test]
    fn a_bad_grpc_url_or_a_zero_where_positive_is_required_names_its_variable() {
        let bad_url = load_from::<Upstreams>(&vars(&[("USER_METADATA_URL", "ftp://x")])).unwrap_err();
        let zero = load_from::<Upstreams>(&vars(&[("USER_METADATA_URL", "http://x:1"), ("POOL", "0")])).unwrap_err();
        assert_eq!((bad_url.variable(), zero.variable()), ("USER_METADATA_URL", "POOL"), "{bad_url} / {zero}");
        let good = load_from::<Upstreams>(&vars(&[("USER_METADATA_URL", "http://x:1"), ("POOL", "3")])).unwrap();
        assert_eq!((good.user_metadata_url.as_str(), good.pool.map(u32::from)), ("http://x:1", Some(3)));
    }

    #[test]
    fn the_default_database_url_comes_from_the_libpq_variables() {
        let raw: RawDatabaseSettings = load_from(&vars(&[
            ("PGHOST", "db.internal"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "p@ss word"),
            ("PGSSLMODE", "require"),
        ]))
        .unwrap();
        assert_eq!(
            raw.libpq_url("password").expose_secret(),
            "postgres://app:p%40ss%20word@db.internal:5432/password?sslmode=require"
        );
        let default: RawDatabaseSettings = load_from(&vars(&[])).unwrap();
        assert_eq!(
            default.libpq_url("user_metadata").expose_secret(),
            "postgres://postgres@127.0.0.1:5432/user_metadata"
        );
    }

    #[test]
    fn well_formed_values_parse() {
        let sample = load_from::<Sample>(&vars(&[("PORT", "8080"), ("FLAG", "true")])).unwrap();
        assert_eq!(sample.port, 8080);
        assert!(sample.flag);
    }
}
