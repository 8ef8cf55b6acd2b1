//! Builds the password service (pool, migrations check, listeners) and runs it until shutdown.

use std::{future::Future, net::SocketAddr, time::Duration};

use platform::{backing::Backing, events::ConsumerStatus, server::GrpcServer};
use proto::password::v1::password_service_server::PasswordServiceServer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{Settings, consumer::EventHandler, hasher::Hasher, service::Passwords, store};

/// How often expired sessions, stale attempt credentials and old failure counts are removed.
const JANITOR_INTERVAL: Duration = Duration::from_secs(300);

/// A built, not yet serving, password service. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    backing: Backing,
    consumer: ConsumerStatus,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, starts connecting to the broker, binds
    /// the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.database.migrate_on_start {
            platform::events::declare_subscription(&settings.amqp, &settings.subscription).await?;
        }
        let backing =
            Backing::attach(&settings.database, crate::migrator(), Some((&settings.amqp, "password"))).await?;
        let consumer = ConsumerStatus::default();
        let readiness = backing.readiness().inform("consumer", consumer.readiness_check()).build();
        let server = GrpcServer::bind(&settings.server, readiness).await?;
        Ok(Self { server, backing, consumer, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.server.ops_addr()
    }

    /// Serves and consumes events until `shutdown` resolves, drains both within the grace period, then closes
    /// the broker connection and the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let routes = routes(&self.backing, &self.server, &self.settings)?;
        let handler = EventHandler::new(self.backing.pool.clone());
        let consumer = self.backing.spawn_consumer(&self.settings.subscription, handler, &self.consumer, &cancel);
        let janitor = tokio::spawn(janitor(self.backing.pool.clone(), self.settings.clone(), cancel.clone()));
        let grace = self.settings.shutdown.grace_period();
        let deadline = platform::shutdown::Deadline::after(&cancel, grace);
        self.server.run(routes, cancel, grace).await;
        let _ = janitor.await;
        self.backing.drain_and_close(consumer, &deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The one place the gRPC server's services are listed.
fn routes(backing: &Backing, server: &GrpcServer, settings: &Settings) -> anyhow::Result<Routes> {
    let hashing = &settings.hashing;
    let hasher = Hasher::new(hashing.params.params()?, hashing.threads, hashing.queue_limit);
    hasher.warm_up();
    let passwords = Passwords::new(backing.pool.clone(), hasher, settings.sessions, settings.throttle);
    let service = PasswordServiceServer::new(passwords);
    Ok(Routes::new(platform::grpc::health_service::<PasswordServiceServer<Passwords>>(server.readiness()))
        .add_service(platform::grpc::reflection_service()?)
        .add_service(service))
}

/// Removes what has expired, every [`JANITOR_INTERVAL`], until `cancel` fires. Expiry is also checked wherever a
/// row is read, so this only keeps the tables small.
async fn janitor(pool: PgPool, settings: Settings, cancel: CancellationToken) {
    loop {
        match store::purge(&pool, settings.sessions.attempt_ttl(), settings.throttle.memory()).await {
            Ok(purged) => tracing::debug!(
                sessions = purged.sessions,
                attempts = purged.attempts,
                failures = purged.failures,
                "expired rows removed"
            ),
            Err(error) => tracing::warn!(%error, "could not remove expired rows; will try again"),
        }
        tokio::select! {
            () = tokio::time::sleep(JANITOR_INTERVAL) => {}
            () = cancel.cancelled() => return,
        }
    }
}
