//! Builds the user-metadata service (database, listeners) and runs it, with its outbox relay, until shutdown.

use std::{net::SocketAddr, time::Duration};

use platform::service::{Host, Service as _, Worker};
use platform::shutdown::CancellationToken;
use proto::user_metadata::v1::user_metadata_service_server::UserMetadataServiceServer;
use sqlx::PgPool;

use crate::{Settings, UserMetadata, service::Users};

/// How often expired idempotency keys are deleted.
const EXPIRE_KEYS_EVERY: Duration = Duration::from_secs(600);

/// A built, not yet serving, user-metadata service.
#[derive(Debug)]
pub struct App {
    host: Host,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, starts connecting to the broker, binds the
    /// listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::build(UserMetadata::NAME, &settings.common, UserMetadata::migrator()).await?;
        Ok(Self { host, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.host.ops_addr()
    }

    /// Serves and relays the outbox until `cancel` fires, then drains both within the grace period.
    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let pool = self.host.pool().clone();
        let service = UserMetadataServiceServer::new(Users::new(
            pool.clone(),
            self.settings.idempotency_key_ttl(),
            self.settings.attempts(),
        ));
        let relay_settings = self.settings.relay(&self.settings.common.amqp.events_exchange);
        let relay_cancel = cancel.clone();
        let relay = self.host.broker_worker("outbox relay", move |broker, pool| {
            platform::outbox::relay(pool, broker, relay_settings, relay_cancel)
        });
        let janitor = expire_keys(pool, self.settings.idempotency_key_ttl(), cancel.clone());
        let workers = [relay, Some(Worker::spawn("idempotency key janitor", janitor))];
        self.host.run(service, workers.into_iter().flatten().collect(), cancel).await
    }
}

/// Deletes expired idempotency keys every [`EXPIRE_KEYS_EVERY`] until `cancel` fires.
async fn expire_keys(pool: PgPool, ttl: Duration, cancel: CancellationToken) {
    loop {
        match crate::store::expire_keys(&pool, ttl).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
        }
        tokio::select! {
            () = tokio::time::sleep(EXPIRE_KEYS_EVERY) => {}
            () = cancel.cancelled() => return,
        }
    }
}
