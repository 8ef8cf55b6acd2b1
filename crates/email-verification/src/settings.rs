//! The email-verification service's configuration, from environment variables only.

use std::{path::PathBuf, time::Duration};

use lettre::{AsyncSmtpTransport, Tokio1Executor, message::Mailbox};
use platform::{
    events::Subscription,
    settings::{AmqpSettings, DatabaseSettings, ServerSettings, SettingsError, ShutdownSettings, TelemetrySettings},
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

/// Everything the email-verification service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (gRPC, default 50053) and `METRICS_PORT` (default 9053).
    pub server: ServerSettings,
    /// `DATABASE_URL` (default database `email_verification`) and pool settings.
    pub database: DatabaseSettings,
    /// `AMQP_URL` and `EVENTS_EXCHANGE`.
    pub amqp: AmqpSettings,
    /// `EVENTS_QUEUE`, `EVENTS_DELIVERY_LIMIT`, `EVENTS_PREFETCH`: this service's subscription to the events.
    pub subscription: Subscription,
    /// `USER_METADATA_URL` and `GRPC_DEADLINE_MS`: where a confirmed account is marked verified.
    pub user_metadata: Upstream,
    /// How mail is sent.
    pub mail: MailSettings,
    /// Token lifetime and the per-address limits.
    pub policy: Policy,
    /// `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub shutdown: ShutdownSettings,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_*`.
    pub telemetry: TelemetrySettings,
}

/// The user-metadata service.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `USER_METADATA_URL`, `http://127.0.0.1:50051` by default.
    pub url: String,
    /// `GRPC_DEADLINE_MS`, 5000 by default.
    pub deadline: Duration,
}

/// Where and how mail goes out.
#[derive(Clone)]
pub struct MailSettings {
    /// `SMTP_URL` (`smtp://`, `smtps://`, with `?tls=required` and credentials as lettre reads them). Required to
    /// send mail unless `MAIL_TRANSPORT=file`.
    pub smtp_url: Option<SecretString>,
    /// `MAIL_TRANSPORT`: `smtp` (the default) or `file`, which writes mail to files under `MAIL_DIR` instead (local
    /// development only: live links end up on disk and in the log). Never chosen by the absence of `SMTP_URL`.
    pub transport: TransportKind,
    /// `MAIL_DIR`: where mail goes without `SMTP_URL`, `.mail` by default.
    pub mail_dir: PathBuf,
    /// `MAIL_FROM`: the sender, `Signup <no-reply@signup.localhost>` by default. Its domain also names the
    /// Message-IDs.
    pub from: Mailbox,
    /// `PUBLIC_BASE_URL`: where signup-api is reached by people, `http://localhost:8080` by default.
    pub public_base_url: String,
    /// `SMTP_TIMEOUT_SECS` (10): the bound on one delivery attempt.
    pub smtp_timeout: Duration,
    /// `MAIL_CONCURRENCY` (4): deliveries in flight at once, so one slow recipient holds up no other.
    pub concurrency: usize,
    /// `MAIL_RETRY_BASE_MS` (1000): the first pause after a temporary failure; it doubles per attempt.
    pub retry_base: Duration,
    /// `MAIL_RETRY_MAX_SECS` (600): the longest pause between attempts.
    pub retry_max: Duration,
    /// `MAIL_MAX_ATTEMPTS` (50): attempts before a temporarily failing mail is given up and recorded as failed.
    pub max_attempts: i32,
    /// `MAIL_POLL_INTERVAL_MS` (1000): how often the queue is checked for due retries.
    pub poll_interval: Duration,
    /// `MAIL_GLOBAL_PER_MINUTE` (600): delivery attempts, to all addresses together, per minute; beyond, mail
    /// waits (nothing is lost), so an abuse wave cannot burn the sending domain's reputation.
    pub global_per_minute: i64,
}

/// How mail leaves the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Over SMTP to `SMTP_URL`.
    Smtp,
    /// To `.eml` files under `MAIL_DIR`.
    File,
}

impl TransportKind {
    fn parse(value: Option<&str>) -> Result<Self, SettingsError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None | Some("smtp") => Ok(Self::Smtp),
            Some("file") => Ok(Self::File),
            Some(_) => Err(SettingsError::invalid("MAIL_TRANSPORT", "must be smtp or file")),
        }
    }
}

impl MailSettings {
    /// The SMTP URL when mail goes over SMTP, `None` when it goes to files; an error names the variable when the
    /// two settings disagree, so a deployment that forgot `SMTP_URL` does not start writing live links to disk.
    pub fn smtp(&self) -> Result<Option<&SecretString>, SettingsError> {
        match (self.transport, &self.smtp_url) {
            (TransportKind::Smtp, Some(url)) => Ok(Some(url)),
            (TransportKind::File, None) => Ok(None),
            (TransportKind::Smtp, None) => Err(SettingsError::invalid(
                "SMTP_URL",
                "is required (or set MAIL_TRANSPORT=file to write mail to MAIL_DIR, for local development only)",
            )),
            (TransportKind::File, Some(_)) => {
                Err(SettingsError::invalid("MAIL_TRANSPORT", "is file, but SMTP_URL is set: choose one"))
            }
        }
    }
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("transport", &self.transport)
            .field("mail_dir", &self.mail_dir)
            .field("from", &self.from)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// What a token is worth and how much mail one address may receive.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `VERIFICATION_TOKEN_TTL_SECS` (86400): how long a verification link works.
    pub token_ttl: Duration,
    /// `CONFIRM_ATTEMPTS_PER_TOKEN` (5): confirms with a wrong password a link survives; then it is dead.
    pub confirm_attempts: i32,
    /// `EXISTING_ACCOUNT_NOTICE_INTERVAL_SECS` (86400): at most one "you already have an account" notice per
    /// address in this interval.
    pub notice_interval: Duration,
    /// The per-address mail budget every mail counts against, whatever caused it.
    pub budget: MailBudget,
}

/// At most `per_hour` mails to one address in any hour and `per_day` in any day: `MAIL_BUDGET_PER_HOUR` (3) and
/// `MAIL_BUDGET_PER_DAY` (10). Mail beyond is not sent, and nothing in any answer says so.
#[derive(Debug, Clone, Copy)]
pub struct MailBudget {
    /// Mails per address per hour.
    pub per_hour: i64,
    /// Mails per address per day.
    pub per_day: i64,
}

#[derive(Deserialize)]
struct RawSettings {
    #[serde(default = "default_user_metadata_url")]
    user_metadata_url: String,
    #[serde(default = "default_deadline_ms")]
    grpc_deadline_ms: u64,
    smtp_url: Option<SecretString>,
    #[serde(default)]
    mail_transport: Option<String>,
    #[serde(default = "default_mail_dir")]
    mail_dir: PathBuf,
    #[serde(default = "default_mail_from")]
    mail_from: String,
    #[serde(default = "default_public_base_url")]
    public_base_url: String,
    #[serde(default = "default_smtp_timeout_secs")]
    smtp_timeout_secs: u64,
    #[serde(default = "default_mail_concurrency")]
    mail_concurrency: usize,
    #[serde(default = "default_retry_base_ms")]
    mail_retry_base_ms: u64,
    #[serde(default = "default_retry_max_secs")]
    mail_retry_max_secs: u64,
    #[serde(default = "default_max_attempts")]
    mail_max_attempts: i32,
    #[serde(default = "default_poll_interval_ms")]
    mail_poll_interval_ms: u64,
    #[serde(default = "default_day_secs")]
    verification_token_ttl_secs: u64,
    #[serde(default = "default_day_secs")]
    existing_account_notice_interval_secs: u64,
    #[serde(default = "default_confirm_attempts")]
    confirm_attempts_per_token: i32,
    #[serde(default = "default_budget_per_hour")]
    mail_budget_per_hour: i64,
    #[serde(default = "default_budget_per_day")]
    mail_budget_per_day: i64,
    #[serde(default = "default_global_per_minute")]
    mail_global_per_minute: i64,
}

fn default_user_metadata_url() -> String {
    "http://127.0.0.1:50051".to_owned()
}
fn default_deadline_ms() -> u64 {
    5000
}
fn default_mail_dir() -> PathBuf {
    PathBuf::from(".mail")
}
fn default_mail_from() -> String {
    "Signup <no-reply@signup.localhost>".to_owned()
}
fn default_public_base_url() -> String {
    "http://localhost:8080".to_owned()
}
fn default_smtp_timeout_secs() -> u64 {
    10
}
fn default_mail_concurrency() -> usize {
    4
}
fn default_retry_base_ms() -> u64 {
    1000
}
fn default_retry_max_secs() -> u64 {
    600
}
fn default_max_attempts() -> i32 {
    50
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_day_secs() -> u64 {
    24 * 60 * 60
}
fn default_confirm_attempts() -> i32 {
    5
}
fn default_budget_per_hour() -> i64 {
    3
}
fn default_budget_per_day() -> i64 {
    10
}
fn default_global_per_minute() -> i64 {
    600
}

impl RawSettings {
    fn check(self) -> Result<(Upstream, MailSettings, Policy), SettingsError> {
        let uri: http::Uri =
            self.user_metadata_url.parse().map_err(|e| SettingsError::invalid("USER_METADATA_URL", e))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(SettingsError::invalid("USER_METADATA_URL", "must be an http:// or https:// URL with a host"));
        }
        positive("GRPC_DEADLINE_MS", self.grpc_deadline_ms)?;
        // An empty SMTP_URL (as `SMTP_URL=` in an env file) means unset.
        let smtp_url = self.smtp_url.filter(|url| !url.expose_secret().trim().is_empty());
        let transport = TransportKind::parse(self.mail_transport.as_deref())?;
        if let Some(url) = &smtp_url {
            // Parsing does no I/O; the error never echoes the URL, which may hold credentials.
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret()).map_err(|_| {
                SettingsError::invalid("SMTP_URL", "must be an smtp:// or smtps:// URL (e.g. smtp://mailpit:1025)")
            })?;
        }
        let from: Mailbox = self.mail_from.parse().map_err(|e| {
            SettingsError::invalid("MAIL_FROM", format!("not a mailbox ({e}); e.g. Signup <no-reply@example.com>"))
        })?;
        let base = self.public_base_url.trim_end_matches('/').to_owned();
        let base_uri: http::Uri = base.parse().map_err(|e| SettingsError::invalid("PUBLIC_BASE_URL", e))?;
        if !matches!(base_uri.scheme_str(), Some("http" | "https")) || base_uri.host().is_none() {
            return Err(SettingsError::invalid("PUBLIC_BASE_URL", "must be an http:// or https:// URL with a host"));
        }
        // The link goes into HTML unescaped, so it must need no escaping (and a query would break the link).
        if base.contains(['&', '<', '>', '"', '\'', '?', '#']) {
            return Err(SettingsError::invalid(
                "PUBLIC_BASE_URL",
                "must have no query, fragment or HTML special characters",
            ));
        }
        positive("SMTP_TIMEOUT_SECS", self.smtp_timeout_secs)?;
        positive("MAIL_CONCURRENCY", self.mail_concurrency as u64)?;
        positive("MAIL_RETRY_BASE_MS", self.mail_retry_base_ms)?;
        positive("MAIL_RETRY_MAX_SECS", self.mail_retry_max_secs)?;
        positive("MAIL_POLL_INTERVAL_MS", self.mail_poll_interval_ms)?;
        positive("VERIFICATION_TOKEN_TTL_SECS", self.verification_token_ttl_secs)?;
        positive("EXISTING_ACCOUNT_NOTICE_INTERVAL_SECS", self.existing_account_notice_interval_secs)?;
        if self.mail_max_attempts < 1 {
            return Err(SettingsError::invalid("MAIL_MAX_ATTEMPTS", "must be at least 1"));
        }
        if self.confirm_attempts_per_token < 1 {
            return Err(SettingsError::invalid("CONFIRM_ATTEMPTS_PER_TOKEN", "must be at least 1"));
        }
        if self.mail_budget_per_hour < 1 || self.mail_budget_per_day < self.mail_budget_per_hour {
            return Err(SettingsError::invalid(
                "MAIL_BUDGET_PER_DAY",
                "MAIL_BUDGET_PER_HOUR must be at least 1 and MAIL_BUDGET_PER_DAY at least MAIL_BUDGET_PER_HOUR",
            ));
        }
        positive("MAIL_GLOBAL_PER_MINUTE", u64::try_from(self.mail_global_per_minute).unwrap_or(0))?;
        let upstream = Upstream { url: self.user_metadata_url, deadline: Duration::from_millis(self.grpc_deadline_ms) };
        let mail = MailSettings {
            smtp_url,
            transport,
            mail_dir: self.mail_dir,
            from,
            public_base_url: base,
            smtp_timeout: Duration::from_secs(self.smtp_timeout_secs),
            concurrency: self.mail_concurrency,
            retry_base: Duration::from_millis(self.mail_retry_base_ms),
            retry_max: Duration::from_secs(self.mail_retry_max_secs),
            max_attempts: self.mail_max_attempts,
            poll_interval: Duration::from_millis(self.mail_poll_interval_ms),
            global_per_minute: self.mail_global_per_minute,
        };
        let policy = Policy {
            token_ttl: Duration::from_secs(self.verification_token_ttl_secs),
            confirm_attempts: self.confirm_attempts_per_token,
            notice_interval: Duration::from_secs(self.existing_account_notice_interval_secs),
            budget: MailBudget { per_hour: self.mail_budget_per_hour, per_day: self.mail_budget_per_day },
        };
        Ok((upstream, mail, policy))
    }
}

fn positive(variable: &str, value: u64) -> Result<(), SettingsError> {
    match value {
        0 => Err(SettingsError::invalid(variable, "must be positive")),
        _ => Ok(()),
    }
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let amqp = AmqpSettings::load()?;
        let (user_metadata, mail, policy) = platform::settings::load::<RawSettings>()?.check()?;
        Ok(Self {
            server: ServerSettings::load(50053, 9053)?,
            database: DatabaseSettings::load("email_verification")?,
            subscription: amqp.subscription("email-verification")?,
            amqp,
            user_metadata,
            mail,
            policy,
            shutdown: ShutdownSettings::load()?,
            telemetry: TelemetrySettings::load()?,
        })
    }
}
