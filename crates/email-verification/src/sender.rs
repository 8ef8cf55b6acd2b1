//! The sender: works through the mail queue, several deliveries at a time, each with its own retry schedule, so
//! a failing recipient holds up no other. Temporary failures are retried with capped exponential backoff and
//! full jitter; permanent ones (5xx) are recorded and never retried. Every outcome is committed to the queue.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{
    mail::{self, Kind, SendError, Templates, Transport},
    settings::{MailSettings, Policy},
    store::{self, Claimed, Outcome},
};

/// How often the queue's size is exported.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// The global budget's log line is written at most this often while it holds mail back.
const HELD_BACK_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a delivery needs.
#[derive(Debug)]
pub(crate) struct Sender {
    pool: PgPool,
    transport: Transport,
    templates: Templates,
    settings: MailSettings,
    policy: Policy,
}

impl Sender {
    /// A sender over `pool` through `transport`.
    pub(crate) fn new(
        pool: PgPool,
        transport: Transport,
        templates: Templates,
        settings: MailSettings,
        policy: Policy,
    ) -> Self {
        Self { pool, transport, templates, settings, policy }
    }

    /// Sends due mail until `cancel` fires; the attempts in flight then finish (within the drain deadline).
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            match self.run_once(&cancel).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(error = format!("{error:#}"), "mail sender interrupted; restarting"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Returns `Ok` when cancelled (after the attempts in flight finished), `Err` when the database failed.
    /// Claims only as many mails as there are free delivery slots, and claims again as soon as one frees up, so
    /// a slow recipient occupies one slot and no one else waits for it.
    async fn run_once(self: &Arc<Self>, cancel: &CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await.context("listening for queued mail")?;
        listener.listen(store::MAIL_CHANNEL).await?;
        let mut lag_recorded = tokio::time::Instant::now() - LAG_INTERVAL;
        let mut held_back_logged: Option<tokio::time::Instant> = None;
        let mut in_flight = tokio::task::JoinSet::new();
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            let free = self.settings.concurrency.saturating_sub(in_flight.len());
            let mut claimed_all = false;
            if free > 0 {
                let limit = i64::try_from(free).unwrap_or(i64::MAX);
                let per_minute = self.settings.global_per_minute;
                let claimed = match store::claim_due(&self.pool, limit, self.lease(), per_minute).await {
                    Ok(claimed) => claimed,
                    Err(error) => break Err(error.into()),
                };
                claimed_all = claimed.len() == free;
                if !claimed_all {
                    self.note_global_budget(&mut held_back_logged).await;
                }
                for mail in claimed {
                    let sender = self.clone();
                    in_flight.spawn(async move { sender.deliver(mail).await });
                }
            }
            if lag_recorded.elapsed() >= LAG_INTERVAL {
                if let Ok((pending, oldest)) = store::queue_lag(&self.pool).await {
                    metrics::gauge!("mail_queue_pending").set(pending as f64);
                    metrics::gauge!("mail_queue_oldest_pending_age_seconds").set(oldest.unwrap_or(0.0));
                }
                lag_recorded = tokio::time::Instant::now();
            }
            // Every slot taken: wait for one to free. Otherwise wait for new mail or the next due retry.
            if claimed_all || in_flight.len() >= self.settings.concurrency {
                tokio::select! {
                    _ = in_flight.join_next() => {}
                    () = cancel.cancelled() => break Ok(()),
                }
                continue;
            }
            tokio::select! {
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        break Err(anyhow::Error::from(error).context("mail notifications"));
                    }
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = cancel.cancelled() => break Ok(()),
            }
        };
        // The attempts in hand finish and record their outcome (each is bounded by SMTP_TIMEOUT_SECS); the drain
        // deadline of shutdown bounds the whole.
        while in_flight.join_next().await.is_some() {}
        result
    }

    /// When the global budget is what keeps due mail waiting: counts it, and says so in the log once a minute.
    async fn note_global_budget(&self, logged: &mut Option<tokio::time::Instant>) {
        let per_minute = self.settings.global_per_minute;
        if !store::held_back(&self.pool, per_minute).await.unwrap_or(false) {
            return;
        }
        metrics::counter!("mail_global_budget_waits_total").increment(1);
        if logged.is_none_or(|at| at.elapsed() >= HELD_BACK_LOG_INTERVAL) {
            tracing::warn!(per_minute, "the global mail budget is spent for this minute; due mail waits");
            *logged = Some(tokio::time::Instant::now());
        }
    }

    /// How long a claim keeps a mail from others: longer than any attempt can take.
    fn lease(&self) -> Duration {
        self.settings.smtp_timeout * 2 + Duration::from_secs(30)
    }

    /// One attempt at one mail, its outcome committed. Database errors leave the claim to expire, so the mail
    /// is attempted again after its lease.
    #[tracing::instrument(skip_all, fields(mail_id = %mail.id, kind = %mail.kind, attempt = mail.attempts))]
    async fn deliver(&self, mail: Claimed) {
        let outcome = match self.attempt(&mail).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                tracing::info!("the account was verified or removed before this mail went out; not sending");
                return;
            }
            Err(error) if mail.attempts >= self.settings.max_attempts => {
                Outcome::Failed(format!("gave up after {} attempts: {error:#}", mail.attempts))
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "mail attempt failed before sending; will retry");
                return;
            }
        };
        let kind = mail.kind.clone();
        let label = match &outcome {
            Outcome::Sent => "sent",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(..) => "retry",
        };
        metrics::counter!("mail_attempts_total", "kind" => kind, "outcome" => label).increment(1);
        match &outcome {
            Outcome::Sent => tracing::info!("mail sent"),
            Outcome::Failed(error) => tracing::warn!(%error, "mail failed permanently; not retrying"),
            Outcome::Retry(pause, error) => {
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "mail failed temporarily; will retry")
            }
        }
        // A lost outcome means the mail is attempted again after its lease (sent twice, if it was sent): try hard.
        for attempt in 1..=5u32 {
            match store::record(&self.pool, mail.id, &outcome).await {
                Ok(()) => return,
                Err(error) if attempt == 5 => {
                    tracing::error!(error = %error, "recording the mail's outcome failed; it will be attempted again")
                }
                Err(error) => {
                    tracing::warn!(error = %error, attempt, "recording the mail's outcome failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
            }
        }
    }

    /// Renders, addresses and sends the mail; `None` when a verification mail is no longer needed.
    async fn attempt(&self, mail: &Claimed) -> anyhow::Result<Option<Outcome>> {
        let Some(kind) = Kind::parse(&mail.kind) else {
            return Ok(Some(Outcome::Failed(format!("unknown mail kind {}", mail.kind))));
        };
        let mut link = None;
        let context = match kind {
            Kind::Verification => {
                let Some(token) = store::issue_token(&self.pool, mail, self.policy.token_ttl).await? else {
                    return Ok(None);
                };
                let url = format!(
                    "{}/v1/email-verifications/confirm?token={}",
                    self.settings.public_base_url,
                    token.expose()
                );
                link = Some(url.clone());
                minijinja::context! {
                    // Safe as is: PUBLIC_BASE_URL has no HTML special characters and the token is base64url.
                    link => minijinja::Value::from_safe_string(url),
                    expires_in_hours => self.policy.token_ttl.as_secs().div_ceil(3600),
                }
            }
            Kind::ExistingAccountNotice => minijinja::context! {},
        };
        let rendered = self.templates.render(kind, &mail.locale, context)?;
        let message = match mail::compose(mail.id, &self.settings.from, &mail.recipient, rendered) {
            Ok(message) => message,
            Err(SendError::Permanent(error) | SendError::Temporary(error)) => return Ok(Some(Outcome::Failed(error))),
        };
        // lettre bounds connecting, not a server that stops answering: the whole attempt gets the bound.
        let sent = tokio::time::timeout(self.settings.smtp_timeout, self.transport.send(message))
            .await
            .unwrap_or_else(|_| Err(SendError::Temporary("the SMTP server did not answer in time".to_owned())));
        let outcome = match sent {
            Ok(file) => {
                if let (true, Some(file)) = (self.transport.is_files(), file) {
                    // Development only (no SMTP_URL): the mail went to a file, so show where, and the link.
                    tracing::info!(file = %file.display(), link = link.as_deref().unwrap_or(""), "mail written to a file");
                }
                Outcome::Sent
            }
            Err(SendError::Permanent(error)) => Outcome::Failed(error),
            Err(SendError::Temporary(error)) if mail.attempts >= self.settings.max_attempts => {
                Outcome::Failed(format!("gave up after {} attempts: {error}", mail.attempts))
            }
            Err(SendError::Temporary(error)) => {
                Outcome::Retry(self.settings.retry.delay(u32::try_from(mail.attempts).unwrap_or(1)), error)
            }
        };
        Ok(Some(outcome))
    }
}
