//! The signup events email-verification acts on. Each is applied at most once: its id is recorded in the same
//! transaction as its effect, and the message is acked only after that commits.

use platform::events::{Envelope, HandleError, Handler, record_once, transient};
use proto::Event;
use sqlx::PgPool;

/// Applies signup events to the email-verification database.
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
        // A body that does not decode as its type can never be applied: dead-letter it.
        Event::decode(&envelope.kind, &envelope.data)
            .map_err(|e| HandleError::Poison(anyhow::anyhow!("{} does not decode: {e}", envelope.kind)))?;
        let mut tx = self.pool.begin().await.map_err(transient)?;
        if !record_once(&mut tx, &envelope).await.map_err(transient)? {
            tracing::info!("event already applied; acknowledging the redelivery");
            return Ok(());
        }
        // Sending the verification email and the notice arrives with the email-verification issue; the event is
        // recorded so that none is ever applied twice.
        tx.commit().await.map_err(transient)
    }
}
