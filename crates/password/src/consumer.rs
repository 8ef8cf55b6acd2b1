//! The one event password acts on: `UserDeleted` removes the account's credential. It is recorded in the
//! transaction of that effect and acked after the commit, so a redelivery changes nothing. Every other event is
//! acknowledged untouched (`acts_on`): a signup costs this service no transaction beyond storing the hash.

use platform::events::{Envelope, HandleError, Handler, begin_once, transient};
use proto::Event;
use sqlx::PgPool;
use uuid::Uuid;

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
        kind == Event::USER_DELETED
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandleError> {
        let event = Event::decode(&envelope.kind, &envelope.data)
            .map_err(|e| HandleError::Poison(anyhow::anyhow!("{} does not decode: {e}", envelope.kind)))?;
        let Some(mut tx) = begin_once(&self.pool, &envelope).await? else { return Ok(()) };
        if let Event::UserDeleted(event) = event {
            let user_id: Uuid =
                event.user_id.parse().map_err(|_| HandleError::Poison(anyhow::anyhow!("user_id is not a UUID")))?;
            sqlx::query("DELETE FROM credentials WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(transient)?;
            tracing::info!(%user_id, "credential removed");
        }
        tx.commit().await.map_err(transient)
    }
}
