//! The signup events email-verification acts on. Each is applied at most once: its id is recorded in the same
//! transaction as its effect (a queued mail, whose id is the event's), and the message is acked only after that
//! commits. Sending happens later, in the sender, so a slow or failing SMTP server never holds up the queue.

use platform::events::{Envelope, HandleError, Handler, begin_once, transient};
use proto::Event;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    mail::Kind,
    settings::Policy,
    store::{self, NewMail, Queued, SignedUp},
};

/// Applies signup events to the email-verification database.
#[derive(Debug, Clone)]
pub(crate) struct EventHandler {
    pool: PgPool,
    policy: Policy,
}

impl EventHandler {
    /// A handler over `pool`, limiting notices by `policy`.
    pub(crate) fn new(pool: PgPool, policy: Policy) -> Self {
        Self { pool, policy }
    }
}

impl Handler for EventHandler {
    fn acts_on(&self, kind: &str) -> bool {
        [
            Event::USER_SIGNED_UP,
            Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT,
            Event::EMAIL_VERIFIED,
            Event::USER_DELETED,
        ]
        .contains(&kind)
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandleError> {
        // A body that does not decode as its type can never be applied: dead-letter it.
        let event = Event::decode(&envelope.kind, &envelope.data)
            .map_err(|e| HandleError::Poison(anyhow::anyhow!("{} does not decode: {e}", envelope.kind)))?;
        let Some(mut tx) = begin_once(&self.pool, &envelope).await? else { return Ok(()) };
        match event {
            Event::UserSignedUp(event) => {
                let attempt = SignedUp {
                    user_id: uuid("user_id", &event.user_id)?,
                    signup_id: uuid("signup_id", &event.signup_id)?,
                    email: &event.email,
                    locale: &event.locale,
                };
                let queued =
                    store::signed_up(&mut tx, envelope.id, &attempt, self.policy.budget).await.map_err(transient)?;
                count(Kind::Verification, queued);
                tracing::info!(user_id = %attempt.user_id, signup_id = %attempt.signup_id, queued = queued.label(), "signup attempt");
            }
            Event::SignupAttemptedForExistingAccount(event) => {
                let mail = NewMail {
                    id: envelope.id,
                    kind: Kind::ExistingAccountNotice,
                    user_id: uuid("user_id", &event.user_id)?,
                    recipient: &event.email,
                    locale: &event.locale,
                    signup_id: None,
                };
                let (interval, budget) = (self.policy.notice_interval, self.policy.budget);
                let queued = store::existing_account(&mut tx, &mail, interval, budget).await.map_err(transient)?;
                count(Kind::ExistingAccountNotice, queued);
                tracing::info!(user_id = %mail.user_id, queued = queued.label(), "existing-account notice");
            }
            Event::EmailVerified(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let signup_id = event.signup_id.parse().ok();
                let at = platform::time::from_proto(event.verified_at).unwrap_or(envelope.time);
                store::mark_verified(&mut tx, user_id, at, signup_id).await.map_err(transient)?;
            }
            Event::UserDeleted(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                store::delete_user(&mut tx, user_id).await.map_err(transient)?;
                tracing::info!(%user_id, "user removed");
            }
            // Never delivered here: `acts_on` leaves them out.
            Event::DiscoverabilityChanged(_) | Event::Unknown(_) => {}
        }
        tx.commit().await.map_err(transient)
    }
}

/// Mail not sent because the address's budget was spent is counted, so operators see an abuse wave.
fn count(kind: Kind, queued: Queued) {
    if queued == Queued::OverBudget {
        metrics::counter!("mail_over_budget_total", "kind" => kind.as_str()).increment(1);
    }
}

fn uuid(field: &str, value: &str) -> Result<Uuid, HandleError> {
    value.parse().map_err(|_| HandleError::Poison(anyhow::anyhow!("{field} is not a UUID")))
}
