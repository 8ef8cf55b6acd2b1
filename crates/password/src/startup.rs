//! Builds the password service (pool, migrations check, listeners) and runs it until shutdown.

use std::{future::Future, net::SocketAddr};

use platform::{backing::Backing, server::GrpcServer};
use proto::password::v1::password_service_server::PasswordServiceServer;
use tonic::service::Routes;

use crate::{Settings, hasher::Hasher, service::Passwords};

/// A built, not yet serving, password service. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    backing: Backing,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: connects to the database, checks its schema, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let backing = Backing::attach(&settings.database, crate::migrator(), None).await?;
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

    /// Serves until `shutdown` resolves, drains within the grace period, then closes the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let routes = routes(&self.backing, &self.server, &self.settings)?;
        self.server.run(routes, cancel, self.settings.shutdown.grace_period()).await;
        self.backing.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The one place the gRPC server's services are listed.
fn routes(backing: &Backing, server: &GrpcServer, settings: &Settings) -> anyhow::Result<Routes> {
    let hashing = &settings.hashing;
    let hasher = Hasher::new(hashing.params.params()?, hashing.threads, hashing.queue_limit);
    hasher.warm_up();
    let service = PasswordServiceServer::new(Passwords::new(backing.pool.clone(), hasher));
    Ok(Routes::new(platform::grpc::health_service::<PasswordServiceServer<Passwords>>(server.readiness()))
        .add_service(platform::grpc::reflection_service()?)
        .add_service(service))
}
