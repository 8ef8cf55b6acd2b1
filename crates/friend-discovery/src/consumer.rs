//! The signup events friend-discovery acts on. Each is applied at most once: its id is recorded in the same
//! transaction as its effect, and the message is acked only after that commits. The effects commute: attempts wait
//! until one of them is verified, a verification that overtakes its attempt is filled in when the attempt arrives,
//! and the member's own discoverability changes win over the choice made at signup (the later change wins among
//! them), so the graph is the same whatever the order.

use platform::events::{Envelope, HandleError, Handler, transient, uuid_field as uuid};
use proto::Event;
use sqlx::PgConnection;

use crate::store::{self, SignedUp};

/// Applies signup events to the friend-discovery database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventHandler;

/// The event types this service acts on: its queue receives these and no others.
pub(crate) const EVENTS: &[&str] =
    &[Event::USER_SIGNED_UP, Event::EMAIL_VERIFIED, Event::DISCOVERABILITY_CHANGED, Event::USER_DELETED];

impl Handler for EventHandler {
    async fn apply(&self, tx: &mut PgConnection, envelope: &Envelope, event: Event) -> Result<(), HandleError> {
        match event {
            Event::UserSignedUp(event) => {
                if event.email_hash.len() != 32 || event.contact_hashes.iter().any(|h| h.len() != 32) {
                    return Err(HandleError::Poison(anyhow::anyhow!("a hash is not 32 bytes")));
                }
                let attempt = SignedUp {
                    user_id: uuid("user_id", &event.user_id)?,
                    signup_id: uuid("signup_id", &event.signup_id)?,
                    email_hash: &event.email_hash,
                    display_name: &event.display_name,
                    discoverable: event.discoverable,
                    contact_hashes: &event.contact_hashes,
                };
                let applied = store::signed_up(tx, &attempt).await.map_err(transient)?;
                let contacts = attempt.contact_hashes.len();
                tracing::info!(user_id = %attempt.user_id, ?applied, contacts, "signup attempt");
            }
            Event::EmailVerified(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let signup_id = event.signup_id.parse().ok();
                let at = platform::time::from_proto(event.verified_at).unwrap_or(envelope.time);
                store::verified(tx, user_id, signup_id, at).await.map_err(transient)?;
                tracing::info!(%user_id, "verified: discoverable to others unless opted out");
            }
            Event::DiscoverabilityChanged(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                store::discoverability(tx, user_id, event.discoverable, envelope.id).await.map_err(transient)?;
                tracing::info!(%user_id, discoverable = event.discoverable, "discoverability changed");
            }
            Event::UserDeleted(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                store::deleted(tx, user_id).await.map_err(transient)?;
                tracing::info!(%user_id, "user and edges removed");
            }
            // Never delivered here: not in `EVENTS`.
            Event::SignupAttemptedForExistingAccount(_) | Event::PasswordChanged(_) | Event::Unknown(_) => {}
        }
        Ok(())
    }
}
