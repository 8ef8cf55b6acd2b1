//! Builds the friend-discovery service (database, listeners) and runs it until shutdown.

use std::net::SocketAddr;

use platform::service::{Host, Service as _};
use platform::shutdown::CancellationToken;
use proto::friend_discovery::v1::friend_discovery_service_server::FriendDiscoveryServiceServer;

use crate::{FriendDiscovery, Settings, consumer::EventHandler, service::Suggestions};

/// A built, not yet serving, friend-discovery service.
#[derive(Debug)]
pub struct App {
    host: Host,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, starts connecting to the broker, binds the
    /// listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::build(FriendDiscovery::NAME, &settings.common, FriendDiscovery::migrator()).await?;
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

    /// Serves and consumes events until `cancel` fires, then drains both within the grace period.
    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let pool = self.host.pool().clone();
        let service =
            FriendDiscoveryServiceServer::new(Suggestions::new(pool.clone(), self.settings.suggestions_per_day));
        let consumer = self.host.consumer(EventHandler::new(pool), &cancel);
        self.host.run(service, consumer.into_iter().collect(), cancel).await
    }
}
