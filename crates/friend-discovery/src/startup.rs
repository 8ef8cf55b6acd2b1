//! Builds the friend-discovery service (pool, migrations check, listeners) and runs it until shutdown.

use std::{future::Future, net::SocketAddr};

use platform::{backing::Backing, events::ConsumerStatus, server::GrpcServer};
use proto::friend_discovery::v1::friend_discovery_service_server::FriendDiscoveryServiceServer;
use tonic::service::Routes;

use crate::{Settings, consumer::EventHandler, service::Suggestions};

/// A built, not yet serving, friend-discovery service. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    backing: Backing,
    consumer: ConsumerStatus,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, starts
    /// connecting to the broker, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.database.migrate_on_start {
            platform::events::declare_subscription(&settings.amqp, &settings.subscription).await?;
        }
        let backing =
            Backing::attach(&settings.database, crate::migrator(), Some((&settings.amqp, "friend-discovery"))).await?;
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

    /// Serves and consumes events until `shutdown` resolves, drains both within the grace period (the message
    /// in hand is finished and acked), then closes the broker connection and the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let routes = routes(&self.backing, &self.server, self.settings.suggestions_per_day)?;
        let handler = EventHandler::new(self.backing.pool.clone());
        let consumer = self.backing.spawn_consumer(&self.settings.subscription, handler, &self.consumer, &cancel);
        let grace = self.settings.shutdown.grace_period();
        let deadline = platform::shutdown::Deadline::after(&cancel, grace);
        self.server.run(routes, cancel, grace).await;
        self.backing.drain_and_close(consumer, &deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The one place the gRPC server's services are listed.
fn routes(backing: &Backing, server: &GrpcServer, suggestions_per_day: i32) -> anyhow::Result<Routes> {
    let service = FriendDiscoveryServiceServer::new(Suggestions::new(backing.pool.clone(), suggestions_per_day));
    Ok(Routes::new(platform::grpc::health_service::<FriendDiscoveryServiceServer<Suggestions>>(server.readiness()))
        .add_service(platform::grpc::reflection_service()?)
        .add_service(service))
}
