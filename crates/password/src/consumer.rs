//! The events password acts on. `EmailVerified` promotes the verified attempt's credential to the account's
//! password (signup-api also asks at once; this makes it certain, whatever crashed in between), and `UserDeleted`
//! removes the account's credential and sessions. Each is recorded in the transaction of its effect and acked
//! after the commit, so a redelivery changes nothing. Every other event is acknowledged untouched (`acts_on`).

use platform::events::{Envelope, HandleError, Handler, begin_once, transient};
use proto::Event;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, Promotion};

/// Applies events to the password database.
#[derive(Debug, Clone)]
pub(crate) struct EventHandler {
    pool: PgPool,
}

impl EventHandler {
    /// A handler over `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Handler for EventHandler {
    fn acts_on(&self, kind: &str) -> bool {
        [Event::EMAIL_VERIFIED, Event::USER_DELETED].contains(&kind)
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandleError> {
        let event = Event::decode(&envelope.kind, &envelope.data)
            .map_err(|e| HandleError::Poison(anyhow::anyhow!("{} does not decode: {e}", envelope.kind)))?;
        let Some(mut tx) = begin_once(&self.pool, &envelope).await? else { return Ok(()) };
        match event {
            // An event from before attempts were named carries no signup id: its credential is the account's already.
            Event::EmailVerified(event) if !event.signup_id.is_empty() => {
                let (user_id, signup_id) = (uuid("user_id", &event.user_id)?, uuid("signup_id", &event.signup_id)?);
                let promotion = store::promote(&mut tx, user_id, signup_id).await.map_err(transient)?;
                if promotion == Promotion::Unknown {
                    tracing::warn!(%user_id, %signup_id, "verified attempt has no credential here; nothing promoted");
                }
            }
            Event::UserDeleted(event) => {
                let user_id = uuid("user_id", &event.user_id)?;
                let signup_ids =
                    event.signup_ids.iter().map(|id| uuid("signup_ids", id)).collect::<Result<Vec<_>, _>>()?;
                store::delete_user(&mut tx, user_id, &signup_ids).await.map_err(transient)?;
                tracing::info!(%user_id, attempts = signup_ids.len(), "credentials and sessions removed");
            }
            _ => {}
        }
        tx.commit().await.map_err(transient)
    }
}

fn uuid(field: &str, value: &str) -> Result<Uuid, HandleError> {
    value.parse().map_err(|_| HandleError::Poison(anyhow::anyhow!("{field} is not a UUID")))
}
