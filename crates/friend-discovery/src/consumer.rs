//! The signup events friend-discovery acts on. Each is applied at most once: its id is recorded in the same
//! transaction as its effect, and the message is acked only after that commits.

use platform::events::{Envelope, HandleError, Handler, record_once, transient};
use prost::Message as _;
use proto::events::v1::{EmailVerified, SignupAttemptedForExistingAccount, UserDeleted, UserSignedUp};
use sqlx::PgPool;

/// Applies signup events to the friend-discovery database.
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
    async fn handle(&self, envelope: Envelope) -> Result<(), HandleError> {
        decode(&envelope)?;
        let mut tx = self.pool.begin().await.map_err(transient)?;
        if !record_once(&mut tx, &envelope).await.map_err(transient)? {
            tracing::info!("event already applied; acknowledging the redelivery");
            return Ok(());
        }
        // Building the contact graph arrives with the friend-discovery issue; the event is
        // recorded so that none is ever applied twice.
        tx.commit().await.map_err(transient)
    }
}

/// Refuses a body that does not decode as the type it claims: no retry can fix it.
fn decode(envelope: &Envelope) -> Result<(), HandleError> {
    let data = envelope.data.as_slice();
    let decoded = match envelope.kind.as_str() {
        "signup.events.v1.UserSignedUp" => UserSignedUp::decode(data).map(drop),
        "signup.events.v1.SignupAttemptedForExistingAccount" => {
            SignupAttemptedForExistingAccount::decode(data).map(drop)
        }
        "signup.events.v1.EmailVerified" => EmailVerified::decode(data).map(drop),
        "signup.events.v1.UserDeleted" => UserDeleted::decode(data).map(drop),
        // Types from a newer producer are recorded and skipped, so old consumers keep up.
        _ => Ok(()),
    };
    decoded.map_err(|e| HandleError::Poison(anyhow::anyhow!("{} does not decode: {e}", envelope.kind)))
}
