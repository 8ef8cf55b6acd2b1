//! The email-verification service's configuration, from environment variables only: what it shares with every
//! service, and its own variables with their defaults; what is left here is turning them into the types the
//! service uses, and the checks that span fields.

use std::{
    num::{NonZeroI32, NonZeroI64, NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use lettre::{AsyncSmtpTransport, Tokio1Executor, message::Mailbox};
use platform::{
    backoff::Backoff,
    grpc::TracedChannel,
    settings::{GrpcUrl, Load, SettingsError},
};
use proto::user_metadata::v1::user_metadata_service_client::UserMetadataServiceClient;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

/// Everything the email-verification service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `USER_METADATA_URL` and `GRPC_DEADLINE_MS`: where a confirmed account is marked verified.
    pub user_metadata: Upstream,
    /// How mail is sent.
    pub mail: MailSettings,
    /// Token lifetime, confirm tries and the mail budgets.
    pub policy: Policy,
}

/// The user-metadata service.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `USER_METADATA_URL`, `http://127.0.0.1:50051` by default.
    pub url: GrpcUrl,
    deadline_ms: NonZeroU64,
}

impl Upstream {
    /// A client of user-metadata, with `GRPC_DEADLINE_MS` (5000 by default) on every call; connects lazily.
    pub fn client(&self) -> anyhow::Result<UserMetadataServiceClient<TracedChannel>> {
        let channel = platform::grpc::channel(self.url.as_str(), Duration::from_millis(self.deadline_ms.get()))?;
        Ok(UserMetadataServiceClient::new(channel))
    }
}

/// How mail leaves the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Over SMTP to `SMTP_URL`.
    Smtp,
    /// To `.eml` files under `MAIL_DIR`.
    File,
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
    /// `MAIL_DIR`: where mail goes with `MAIL_TRANSPORT=file`, `.mail` by default.
    pub mail_dir: PathBuf,
    /// `MAIL_FROM`: the sender, `Signup <no-reply@signup.localhost>` by default. Its domain also names the
    /// Message-IDs.
    pub from: Mailbox,
    /// `PUBLIC_BASE_URL`: where signup-api is reached by people, `http://localhost:8080` by default.
    pub public_base_url: String,
    /// `SMTP_TIMEOUT_SECS` (10): the bound on one delivery attempt.
    pub smtp_timeout: Duration,
    /// `MAIL_CONCURRENCY` (8): deliveries in flight at once, so one slow recipient holds up no other.
    pub concurrency: usize,
    /// `MAIL_RETRY_BASE_MS` (1000) and `MAIL_RETRY_MAX_SECS` (600): the pause after a temporary failure doubles
    /// from the first up to the second, with full jitter.
    pub retry: Backoff,
    /// `MAIL_MAX_ATTEMPTS` (50): attempts before a temporarily failing mail is given up and recorded as failed.
    pub max_attempts: i32,
    /// `MAIL_POLL_INTERVAL_MS` (1000): how often the queue is checked for due retries.
    pub poll_interval: Duration,
    /// `MAIL_GLOBAL_PER_MINUTE` (600): delivery attempts, to all addresses together, per minute; beyond, mail
    /// waits (nothing is lost), so an abuse wave cannot burn the sending domain's reputation.
    pub global_per_minute: i64,
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
    /// `PASSWORD_RESET_TOKEN_TTL_SECS` (3600): how long a password-reset link works.
    pub reset_token_ttl: Duration,
    /// `CONFIRM_ATTEMPTS_PER_TOKEN` (5): confirms with a wrong password a link survives; then it is dead.
    pub confirm_attempts: i32,
    /// `CONFIRM_ATTEMPTS_PER_SIGNUP` (10): confirms a signup attempt survives over all its links (a resend is a new
    /// link for the same attempt, and must not be five more guesses at its password); then no link of it works.
    pub confirm_attempts_per_signup: i32,
    /// `EXISTING_ACCOUNT_NOTICE_INTERVAL_SECS` (86400): at most one "you already have an account" notice per
    /// address in this interval.
    pub notice_interval: Duration,
    /// The per-address mail budget every mail counts against, whatever caused it.
    pub budget: MailBudget,
}

/// At most `per_hour` mails to one address in any hour and `per_day` in any day: `MAIL_BUDGET_PER_HOUR` (3) and
/// `MAIL_BUDGET_PER_DAY` (10), of which at most `per_client_per_day` asked for by one client in a day,
/// `MAIL_BUDGET_PER_CLIENT_PER_DAY` (3), and never all of an hour's. Mail beyond is not sent, and nothing in any answer
/// says so.
#[derive(Debug, Clone, Copy)]
pub struct MailBudget {
    /// Mails per address per hour.
    pub per_hour: i64,
    /// Mails per address per day.
    pub per_day: i64,
    /// Mails per address per day that one (known) client may ask for.
    pub per_client_per_day: i64,
    /// Mails per address per hour that one (known) client may ask for: all but one of the hour's when the day is
    /// shared, so one stays for others.
    pub per_client_per_hour: i64,
}

/// The variables as they come, with their defaults.
#[derive(Deserialize)]
#[serde(default)]
struct Own {
    user_metadata_url: GrpcUrl,
    grpc_deadline_ms: NonZeroU64,
    smtp_url: Option<SecretString>,
    mail_transport: TransportKind,
    mail_dir: PathBuf,
    mail_from: String,
    public_base_url: String,
    smtp_timeout_secs: NonZeroU64,
    mail_concurrency: NonZeroUsize,
    mail_retry_base_ms: NonZeroU64,
    mail_retry_max_secs: NonZeroU64,
    mail_max_attempts: NonZeroI32,
    mail_poll_interval_ms: NonZeroU64,
    mail_global_per_minute: NonZeroI64,
    verification_token_ttl_secs: NonZeroU64,
    password_reset_token_ttl_secs: NonZeroU64,
    confirm_attempts_per_token: NonZeroI32,
    confirm_attempts_per_signup: NonZeroI32,
    existing_account_notice_interval_secs: NonZeroU64,
    mail_budget_per_hour: NonZeroI64,
    mail_budget_per_day: NonZeroI64,
    mail_budget_per_client_per_day: NonZeroI64,
}

impl Default for Own {
    fn default() -> Self {
        let n = |value: u64| NonZeroU64::new(value).unwrap_or(NonZeroU64::MIN);
        let i = |value: i64| NonZeroI64::new(value).unwrap_or(NonZeroI64::MIN);
        let i32 = |value: i32| NonZeroI32::new(value).unwrap_or(NonZeroI32::MIN);
        Self {
            user_metadata_url: GrpcUrl::from("http://127.0.0.1:50051"),
            grpc_deadline_ms: n(5000),
            smtp_url: None,
            mail_transport: TransportKind::Smtp,
            mail_dir: PathBuf::from(".mail"),
            mail_from: "Signup <no-reply@signup.localhost>".to_owned(),
            public_base_url: "http://localhost:8080".to_owned(),
            smtp_timeout_secs: n(10),
            mail_concurrency: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            mail_retry_base_ms: n(1000),
            mail_retry_max_secs: n(600),
            mail_max_attempts: i32(50),
            mail_poll_interval_ms: n(1000),
            mail_global_per_minute: i(600),
            verification_token_ttl_secs: n(86_400),
            password_reset_token_ttl_secs: n(3600),
            confirm_attempts_per_token: i32(5),
            confirm_attempts_per_signup: i32(10),
            existing_account_notice_interval_secs: n(86_400),
            mail_budget_per_hour: i(3),
            mail_budget_per_day: i(10),
            mail_budget_per_client_per_day: i(3),
        }
    }
}

impl Load for Settings {
    fn load() -> Result<Self, SettingsError> {
        let own: Own = platform::settings::load()?;
        let (policy, user_metadata) =
            (own.policy()?, Upstream { url: own.user_metadata_url.clone(), deadline_ms: own.grpc_deadline_ms });
        Ok(Self { user_metadata, mail: own.mail()?, policy })
    }
}

impl Own {
    fn mail(self) -> Result<MailSettings, SettingsError> {
        // An empty SMTP_URL (as `SMTP_URL=` in an env file) means unset.
        let smtp_url = self.smtp_url.filter(|url| !url.expose_secret().trim().is_empty());
        if let Some(url) = &smtp_url {
            // Parsing does no I/O; the error never echoes the URL, which may hold credentials.
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret()).map_err(|_| {
                SettingsError::invalid("SMTP_URL", "must be an smtp:// or smtps:// URL (e.g. smtp://mailpit:1025)")
            })?;
        }
        let from: Mailbox = self.mail_from.parse().map_err(|e| {
            SettingsError::invalid("MAIL_FROM", format!("not a mailbox ({e}); e.g. Signup <no-reply@example.com>"))
        })?;
        Ok(MailSettings {
            smtp_url,
            transport: self.mail_transport,
            mail_dir: self.mail_dir,
            from,
            public_base_url: public_base_url(&self.public_base_url)?,
            smtp_timeout: Duration::from_secs(self.smtp_timeout_secs.get()),
            concurrency: self.mail_concurrency.get(),
            retry: Backoff::jittered(
                Duration::from_millis(self.mail_retry_base_ms.get()),
                Duration::from_secs(self.mail_retry_max_secs.get()),
            ),
            max_attempts: self.mail_max_attempts.get().max(1),
            poll_interval: Duration::from_millis(self.mail_poll_interval_ms.get()),
            global_per_minute: self.mail_global_per_minute.get().max(1),
        })
    }

    fn policy(&self) -> Result<Policy, SettingsError> {
        let (per_hour, per_day) = (self.mail_budget_per_hour.get(), self.mail_budget_per_day.get());
        let per_client_per_day = self.mail_budget_per_client_per_day.get();
        let shared = per_client_per_day < per_day;
        let per_client_per_hour = if shared { per_hour - 1 } else { per_hour };
        let budget = MailBudget { per_hour, per_day, per_client_per_day, per_client_per_hour };
        if budget.per_client_per_day < 1 {
            return Err(SettingsError::invalid("MAIL_BUDGET_PER_CLIENT_PER_DAY", "must be at least 1"));
        }
        if budget.per_hour < 1 || budget.per_day < budget.per_hour {
            return Err(SettingsError::invalid(
                "MAIL_BUDGET_PER_DAY",
                "MAIL_BUDGET_PER_HOUR must be at least 1 and MAIL_BUDGET_PER_DAY at least MAIL_BUDGET_PER_HOUR",
            ));
        }
        // One mail an hour left no share for others: one client could take every hour's.
        if shared && per_hour < 2 {
            return Err(SettingsError::invalid(
                "MAIL_BUDGET_PER_HOUR",
                "must be at least 2 while clients share the day (MAIL_BUDGET_PER_CLIENT_PER_DAY below \
                 MAIL_BUDGET_PER_DAY): one client may never take all of an hour's mail",
            ));
        }
        Ok(Policy {
            token_ttl: Duration::from_secs(self.verification_token_ttl_secs.get()),
            reset_token_ttl: Duration::from_secs(self.password_reset_token_ttl_secs.get()),
            confirm_attempts: self.confirm_attempts_per_token.get().max(1),
            confirm_attempts_per_signup: self.confirm_attempts_per_signup.get().max(1),
            notice_interval: Duration::from_secs(self.existing_account_notice_interval_secs.get()),
            budget,
        })
    }
}

/// `PUBLIC_BASE_URL` without a trailing slash. The link goes into HTML unescaped, so it must need no escaping
/// (and a query would break the link).
fn public_base_url(raw: &str) -> Result<String, SettingsError> {
    let base = raw.trim_end_matches('/').to_owned();
    let uri: http::Uri = base.parse().map_err(|e| SettingsError::invalid("PUBLIC_BASE_URL", e))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(SettingsError::invalid("PUBLIC_BASE_URL", "must be an http:// or https:// URL with a host"));
    }
    if base.contains(['&', '<', '>', '"', '\'', '?', '#']) {
        return Err(SettingsError::invalid(
            "PUBLIC_BASE_URL",
            "must have no query, fragment or HTML special characters",
        ));
    }
    Ok(base)
}
