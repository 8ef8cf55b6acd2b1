//! The events password acts on. `EmailVerified` promotes the verified attempt's credential to the account's
//! password (signup-api also asks at once; this makes it certain, whatever crashed in between),
//! `SignupAttemptedForExistingAccount` removes the credential of an attempt on a verified account (stored only so
//! every signup costs the same), and `UserDeleted` removes the account's credential, its sessions, its trusted devices
//! and its attempts' credentials. No other event reaches its queue (`EVENTS`), so a signup costs this service
//! nothing beyond storing the hash.

use platform::events::{Envelope, HandleError, Handler, transient, uuid_field as uuid};
use proto::Event;
use sqlx::PgConnection;

use crate::store::{self, Promotion};

/// Applies events to the password database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventHandler;

/// The event types this service acts on: its queue receives these and no others.
pub(crate) const EVENTS: &[&str] =
    &[Event::EMAIL_VERIFIED, Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT, Event::USER_DELETED];

impl Handler for EventHandler {
    /// A deletion deletes what is there, by the user's and its attempts' ids: the second time finds nothing to do.
    fn applies_twice_harmlessly(&self, event: &Event) -> bool {
        matches!(event, Event::UserDeleted(_) | Event::SignupAttemptedForExistingAccount(_))
    }

    async fn apply(&self, tx: &mut PgConnection, _: &Envelope, event: Event) -> Result<(), HandleError> {
        match event {
            // An event from before attempts were named carries no signup id: its credential is the account's already.
            Event::EmailVerified(event) if !event.signup_id.is_empty() => {
                let (user_id, signup_id) = (uuid("user_id", &event.user_id)?, uuid("signup_id", &event.signup_id)?);
                let promotion = store::promote(tx, user_id, signup_id).await.map_err(transient)?;
                if promotion == Promotion::Unknown {
                    tracing::warn!(%user_id, %signup_id, "verified attempt has no credential here; nothing promoted");
                }
            }
            Event::SignupAttemptedForExistingAccount(event) if !event.signup_id.is_empty() => {
                store::discard_attempt(tx, uuid("signup_id", &event.signup_id)?).await.map_err(transient)?;
            }
            Event::UserDeleted(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let signup_ids =
                    event.signup_ids.iter().map(|id| uuid("signup_ids", id)).collect::<Result<Vec<_>, _>>()?;
                store::delete_user(tx, user_id, &signup_ids).await.map_err(transient)?;
                tracing::info!(%user_id, attempts = signup_ids.len(), "credentials and sessions removed");
            }
            _ => {}
        }
        Ok(())
    }
}
