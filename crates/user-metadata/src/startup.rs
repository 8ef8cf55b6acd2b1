//! Builds the user-metadata service (pool, migrations check, listeners) and runs it until shutdown.

use std::{future::Future, net::SocketAddr};

use platform::{backing::Backing, server::GrpcServer};
use proto::user_metadata::v1::user_metadata_service_server::UserMetadataServiceServer;
use tonic::service::Routes;

use crate::{Settings, service::Users};

/// A built, not yet serving, user-metadata service. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    backing: Backing,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, starts
    /// connecting to the broker, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let backing =
            Backing::attach(&settings.database, crate::migrator(), Some((&settings.amqp, "user-metadata"))).await?;
        let server = GrpcServer::bind(&settings.server, backing.readiness().build()).await?;
        Ok(Self { server, backing, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.server.ops_addr()
    }

    /// Serves and relays the outbox until `shutdown` resolves, drains both within the grace period, then closes
    /// the broker connection and the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let routes = routes(&self.backing, &self.server, &self.settings)?;
        let relay = self.backing.spawn_broker_worker("outbox relay", |broker, pool| {
            platform::outbox::relay(pool, broker, self.settings.relay.clone(), cancel.clone())
        });
        let janitor =
            tokio::spawn(expire_keys(self.backing.pool.clone(), self.settings.idempotency_key_ttl, cancel.clone()));
        let grace = self.settings.shutdown.grace_period();
        let deadline = platform::shutdown::Deadline::after(&cancel, grace);
        self.server.run(routes, cancel, grace).await;
        let _ = janitor.await;
        self.backing.drain_and_close(relay, &deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The one place the gRPC server's services are listed.
fn routes(backing: &Backing, server: &GrpcServer, settings: &Settings) -> anyhow::Result<Routes> {
    let service = UserMetadataServiceServer::new(Users::new(
        backing.pool.clone(),
        settings.idempotency_key_ttl,
        settings.attempts,
    ));
    Ok(Routes::new(platform::grpc::health_service::<UserMetadataServiceServer<Users>>(server.readiness()))
        .add_service(platform::grpc::reflection_service()?)
        .add_service(service))
}

/// Deletes expired idempotency keys every ten minutes until `cancel` fires.
async fn expire_keys(pool: sqlx::PgPool, ttl: std::time::Duration, cancel: platform::shutdown::CancellationToken) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = interval.tick() => match crate::store::expire_keys(&pool, ttl).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
            },
            () = cancel.cancelled() => return,
        }
    }
}
