//! The signup events email-verification acts on. Each is applied at most once: its id is recorded in the same
//! transaction as its effect (a queued mail, whose id is the event's), and the message is acked only after that
//! commits. Sending happens later, in the sender, so a slow or failing SMTP server never holds up the queue.

use platform::events::{Envelope, HandleError, Handler, transient, uuid_field as uuid};
use proto::{
    Event,
    events::v1::{SignupAttemptedForExistingAccount, UserSignedUp},
};
use sqlx::PgConnection;

use crate::{
    mail::Kind,
    settings::Policy,
    store::{self, NewMail, Queued, SignedUp},
};

/// Applies signup events to the email-verification database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventHandler {
    /// What limits mail.
    pub(crate) policy: Policy,
}

/// The event types this service acts on: its queue receives these and no others.
pub(crate) const EVENTS: &[&str] = &[
    Event::USER_SIGNED_UP,
    Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT,
    Event::EMAIL_VERIFIED,
    Event::USER_DELETED,
    Event::PASSWORD_CHANGED,
];

impl Handler for EventHandler {
    async fn apply(&self, tx: &mut PgConnection, envelope: &Envelope, event: Event) -> Result<(), HandleError> {
        match event {
            Event::UserSignedUp(event) => self.signed_up(tx, envelope, &event).await?,
            Event::SignupAttemptedForExistingAccount(event) => self.existing_account(tx, envelope, &event).await?,
            Event::EmailVerified(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let signup_id = event.signup_id.parse().ok();
                let at = platform::time::from_proto(event.verified_at).unwrap_or(envelope.time);
                store::mark_verified(tx, user_id, at, signup_id).await.map_err(transient)?;
            }
            Event::UserDeleted(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                store::delete_user(tx, user_id).await.map_err(transient)?;
                tracing::info!(%user_id, "user removed");
            }
            // Never delivered here: not in `EVENTS`.
            Event::PasswordChanged(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let changed_at = platform::time::from_proto(event.occurred_at);
                let queued = store::password_changed(tx, envelope.id, user_id, changed_at).await.map_err(transient)?;
                count(Kind::PasswordChanged, queued);
            }
            Event::DiscoverabilityChanged(_) | Event::Unknown(_) => {}
        }
        Ok(())
    }
}

impl EventHandler {
    /// Queues the verification mail of a signup attempt, within the address's budget.
    async fn signed_up(
        &self,
        tx: &mut PgConnection,
        envelope: &Envelope,
        event: &UserSignedUp,
    ) -> Result<(), HandleError> {
        let attempt = SignedUp {
            user_id: uuid("user_id", &event.user_id)?,
            signup_id: uuid("signup_id", &event.signup_id)?,
            email: &event.email,
            locale: &event.locale,
            client_hash: &event.client_hash,
        };
        let queued = store::signed_up(tx, envelope.id, &attempt, self.policy.budget).await.map_err(transient)?;
        count(Kind::Verification, queued);
        tracing::info!(user_id = %attempt.user_id, signup_id = %attempt.signup_id, queued = queued.label(), "signup attempt");
        Ok(())
    }

    /// Queues the "you already have an account" notice, at most one per interval and within the budget, charged to
    /// the client that signed up.
    async fn existing_account(
        &self,
        tx: &mut PgConnection,
        envelope: &Envelope,
        event: &SignupAttemptedForExistingAccount,
    ) -> Result<(), HandleError> {
        let user_id = uuid("user_id", &event.user_id)?;
        let mail = NewMail {
            id: envelope.id,
            kind: Kind::ExistingAccountNotice,
            user_id: Some(user_id),
            recipient: &event.email,
            locale: &event.locale,
            signup_id: None,
            client_hash: &event.client_hash,
        };
        let (interval, budget) = (self.policy.notice_interval, self.policy.budget);
        let queued = store::existing_account(tx, &mail, interval, budget).await.map_err(transient)?;
        count(Kind::ExistingAccountNotice, queued);
        tracing::info!(%user_id, queued = queued.label(), "existing-account notice");
        Ok(())
    }
}

/// Mail not sent because the address's budget was spent is counted, so operators see an abuse wave.
fn count(kind: Kind, queued: Queued) {
    if queued == Queued::OverBudget {
        metrics::counter!("mail_over_budget_total", "kind" => kind.as_str()).increment(1);
    }
}
