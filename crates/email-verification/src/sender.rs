//! The sender: works through the mail queue, several deliveries at a time, each with its own retry schedule, so
//! a failing recipient holds up no other. Temporary failures are retried with capped exponential backoff and
//! full jitter; permanent ones (5xx) are recorded and never retried. Every outcome is committed to the queue.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use platform::{backoff::Backoff, token::Token};
use sqlx::{PgPool, postgres::PgListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    mail::{self, Kind, SendError, Templates, Transport},
    settings::{MailSettings, Policy},
    store::{self, Claimed, Outcome},
};

/// Restarting after the database failed: 1 s doubling to 30 s, jittered.
const RESTART: Backoff = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(30));

/// Retrying to record a mail's outcome: 0.2 s doubling to 5 s.
const RECORD_RETRY: Backoff = Backoff::jittered(Duration::from_millis(200), Duration::from_secs(5));

/// Recording stops this long before the mail's lease ends, when another claim may take it.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// How often the queue's size is exported.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// The global budget's log line is written at most this often while it holds mail back.
const HELD_BACK_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a delivery needs.
#[derive(Debug)]
pub(crate) struct Sender {
    pub(crate) pool: PgPool,
    pub(crate) transport: Transport,
    pub(crate) templates: Templates,
    pub(crate) settings: MailSettings,
    pub(crate) policy: Policy,
}

impl Sender {
    /// Sends due mail until `cancel` fires; the attempts in flight then finish (within the drain deadline).
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        RESTART.restart("mail sender", &cancel, || self.run_once(&cancel)).await;
    }

    /// Returns `Ok` when cancelled (after the attempts in flight finished), `Err` when the database failed.
    async fn run_once(self: &Arc<Self>, cancel: &CancellationToken) -> anyhow::Result<()> {
        let mut in_flight = JoinSet::new();
        let result = self.claim_and_send(&mut in_flight, cancel).await;
        // The attempts in hand finish and record their outcome (each is bounded by SMTP_TIMEOUT_SECS); the drain
        // deadline of shutdown bounds the whole.
        while in_flight.join_next().await.is_some() {}
        result
    }

    /// Claims only as many mails as there are free delivery slots, and, while more is due, claims again as soon as one
    /// frees up, so a slow recipient occupies one slot and no one else waits for it.
    async fn claim_and_send(
        self: &Arc<Self>,
        in_flight: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await.context("listening for queued mail")?;
        listener.listen(store::MAIL_CHANNEL).await?;
        let mut lag_recorded = tokio::time::Instant::now() - LAG_INTERVAL;
        let mut held_back_logged = None;
        while !cancel.is_cancelled() {
            let saturated = self.fill(in_flight, &mut held_back_logged).await?;
            if lag_recorded.elapsed() >= LAG_INTERVAL {
                if let Ok((pending, oldest)) = store::queue_lag(&self.pool).await {
                    metrics::gauge!("mail_queue_pending").set(pending as f64);
                    metrics::gauge!("mail_queue_oldest_pending_age_seconds").set(oldest.unwrap_or(0.0));
                }
                lag_recorded = tokio::time::Instant::now();
            }
            self.wait(saturated, &mut listener, in_flight, cancel).await?;
        }
        Ok(())
    }

    /// Claims as many due mails as there are free slots and starts delivering them; true when every slot is taken
    /// and more mail is due. Mail no longer needed (superseded in the claim) frees its slot at once, so the claim is
    /// repeated.
    async fn fill(
        self: &Arc<Self>,
        in_flight: &mut JoinSet<()>,
        held_back_logged: &mut Option<tokio::time::Instant>,
    ) -> anyhow::Result<bool> {
        loop {
            let free = self.settings.concurrency.saturating_sub(in_flight.len());
            if free == 0 {
                return Ok(true);
            }
            let budget = (i64::try_from(free).unwrap_or(i64::MAX), self.settings.global_per_minute);
            let ttls = (self.policy.token_ttl, self.policy.reset_token_ttl);
            let claim = store::claim_due(&self.pool, budget, self.lease(), ttls).await?;
            if claim.budget_bound {
                self.note_global_budget(held_back_logged).await;
            }
            let claimed = claim.mails.len();
            for mail in claim.mails {
                let sender = self.clone();
                in_flight.spawn(async move { sender.deliver(mail).await });
            }
            if claim.superseded == 0 {
                return Ok(claimed == free && claim.more_due);
            }
            let superseded = claim.superseded;
            tracing::info!(superseded, "the account was verified or removed before this mail went out; not sending");
        }
    }

    /// Waits for a reason to claim again: with every slot taken and more mail due, a slot freeing up; otherwise new
    /// mail or the next poll (for due retries). A slot freeing up then is no reason: the last claim took every mail
    /// that was due (or all the budget allowed), and claiming again would find none. Returns at once when cancelled.
    async fn wait(
        &self,
        saturated: bool,
        listener: &mut PgListener,
        in_flight: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        if saturated {
            tokio::select! {
                _ = in_flight.join_next() => {}
                () = cancel.cancelled() => {}
            }
            return Ok(());
        }
        let poll = tokio::time::sleep(self.settings.poll_interval);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                notification = listener.recv() => { notification.context("mail notifications")?; }
                // Reaped, so the free slots are counted right at the next claim.
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                () = &mut poll => {}
                () = cancel.cancelled() => {}
            }
            return Ok(());
        }
    }

    /// When the global budget is what keeps due mail waiting: counts it, and says so in the log once a minute.
    async fn note_global_budget(&self, logged: &mut Option<tokio::time::Instant>) {
        let per_minute = self.settings.global_per_minute;
        if !store::held_back(&self.pool).await.unwrap_or(false) {
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

    /// One attempt at one mail, its outcome committed, in the mail's `send` span.
    async fn deliver(&self, mail: Claimed) {
        let span = send_span(&mail);
        tracing::Instrument::instrument(self.deliver_in_span(mail), span).await;
    }

    /// [`Self::deliver`], inside its span. Database errors leave the claim to expire, so the mail is attempted again
    /// after its lease.
    async fn deliver_in_span(&self, mail: Claimed) {
        let start = tokio::time::Instant::now();
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
        outcome.report(&mail.kind, start);
        if !matches!(outcome, Outcome::Sent) {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        // A lost outcome means the mail is attempted again once its lease ends (sent twice, if it was sent): keep
        // trying until shortly before then, through a database restart or failover.
        let until = start + self.lease().saturating_sub(RECORD_MARGIN);
        for attempt in 1.. {
            let Err(error) = store::record(&self.pool, mail.id, &outcome).await else { return };
            let pause = RECORD_RETRY.delay(attempt);
            if tokio::time::Instant::now() + pause >= until {
                tracing::error!(error = %error, attempt, "recording the mail's outcome failed; it will be attempted again");
                return;
            }
            tracing::warn!(error = %error, attempt, "recording the mail's outcome failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Renders, addresses and sends the mail; `None` when a verification mail is no longer needed.
    async fn attempt(&self, mail: &Claimed) -> anyhow::Result<Option<Outcome>> {
        let Some(kind) = Kind::parse(&mail.kind) else {
            return Ok(Some(Outcome::Failed(format!("unknown mail kind {}", mail.kind))));
        };
        let Some(context) = self.context(kind, mail.token.as_ref()) else { return Ok(None) };
        let rendered = self.templates.render(kind, &mail.locale, context)?;
        let message = match mail::compose(mail.id, &self.settings.from, &mail.recipient, rendered) {
            Ok(message) => message,
            Err(SendError::Permanent(error) | SendError::Temporary(error)) => return Ok(Some(Outcome::Failed(error))),
        };
        // lettre bounds connecting, not a server that stops answering: the whole attempt gets the bound.
        let sent = tokio::time::timeout(self.settings.smtp_timeout, self.transport.send(message))
            .await
            .unwrap_or_else(|_| Err(SendError::Temporary("the SMTP server did not answer in time".to_owned())))
            .map_err(|error| error.naming_no_address(&mail.recipient));
        if let (true, Ok(Some(file))) = (self.transport.is_files(), &sent) {
            // Development only (MAIL_TRANSPORT=file): the mail went to a file, so show where (not the link: a token
            // is never logged).
            tracing::info!(file = %file.display(), "mail written to a file");
        }
        Ok(Some(self.outcome(mail, sent.map(|_| ()))))
    }

    /// What the mail's template is given: its link (a verification or a reset link, with the token issued for it),
    /// the reset page, and how long links work. `None` when a mail that needs a link has none: its account is no
    /// longer pending (or verified), so it is not needed.
    fn context(&self, kind: Kind, token: Option<&Token>) -> Option<minijinja::Value> {
        let base = &self.settings.public_base_url;
        let link = match (kind, token) {
            (Kind::Verification, Some(token)) => {
                Some(format!("{base}/v1/email-verifications/confirm?token={}", token.expose()))
            }
            (Kind::PasswordReset, Some(token)) => {
                Some(format!("{base}/v1/password-resets/confirm?token={}", token.expose()))
            }
            (Kind::Verification | Kind::PasswordReset, None) => return None,
            _ => None,
        };
        // Safe as is: PUBLIC_BASE_URL has no HTML special characters and the token is base64url.
        Some(minijinja::context! {
            link => link.map(minijinja::Value::from_safe_string),
            reset_page => minijinja::Value::from_safe_string(format!("{base}/v1/password-resets")),
            expires_in_hours => self.policy.token_ttl.as_secs().div_ceil(3600),
            expires_in_minutes => self.policy.reset_token_ttl.as_secs().div_ceil(60),
        })
    }

    /// What a delivery attempt's result means for the mail: sent, failed for good, or to retry after a pause.
    fn outcome(&self, mail: &Claimed, sent: Result<(), SendError>) -> Outcome {
        match sent {
            Ok(()) => Outcome::Sent,
            Err(SendError::Permanent(error)) => Outcome::Failed(error),
            Err(SendError::Temporary(error)) if mail.attempts >= self.settings.max_attempts => {
                Outcome::Failed(format!("gave up after {} attempts: {error}", mail.attempts))
            }
            Err(SendError::Temporary(error)) => {
                Outcome::Retry(self.settings.retry.delay(u32::try_from(mail.attempts).unwrap_or(1)), error)
            }
        }
    }
}

impl Outcome {
    /// Counts the outcome and logs it.
    fn report(&self, kind: &str, start: tokio::time::Instant) {
        let label = match self {
            Outcome::Sent => "sent",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(..) => "retry",
        };
        let labels = [("kind", kind.to_owned()), ("outcome", label.to_owned())];
        metrics::counter!("mail_attempts_total", &labels).increment(1);
        metrics::histogram!("mail_send_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
        match self {
            Outcome::Sent => tracing::info!("mail sent"),
            Outcome::Failed(error) => tracing::warn!(%error, "mail failed permanently; not retrying"),
            Outcome::Retry(pause, error) => {
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "mail failed temporarily; will retry")
            }
        }
    }
}

/// The span of one delivery attempt (an SMTP client span): a child of the trace of the event that queued the mail,
/// and linked to it. It names the mail, never its recipient or its link.
fn send_span(mail: &Claimed) -> tracing::Span {
    let span = tracing::info_span!(
        "mail.send",
        otel.name = "send",
        otel.kind = "client",
        network.protocol.name = "smtp",
        mail_id = %mail.id,
        kind = %mail.kind,
        attempt = mail.attempts,
        otel.status_code = tracing::field::Empty,
    );
    mail.trace.continue_in(&span);
    span
}
