//! Builds signup-api (channels, listener) and runs it until shutdown.

use std::{future::Future, net::SocketAddr};

use platform::health::Readiness;
use tokio::net::TcpListener;

use crate::{Settings, contacts::ContactHasher, domain::signup::SignupLimits, upstream::Upstreams};

/// What every handler can reach. signup-api owns no database: all state lives behind its upstreams.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Readiness, reported on `/readyz`.
    pub readiness: Readiness,
    /// The gRPC services behind the API.
    pub upstreams: Upstreams,
    /// Hashes contacts, emails and idempotency fingerprints under `CONTACT_HASH_KEY`.
    pub hasher: ContactHasher,
    /// What signups are checked against.
    pub limits: SignupLimits,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

/// A built, not yet serving, signup-api. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: builds the upstream channels and binds `PORT` (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        platform::metrics::handle();
        let upstreams = Upstreams::new(&settings.upstreams)?;
        // Ready means a signup can be taken: the services on the signup path answer. The others degrade
        // their own endpoints only, so they do not take the whole API out of rotation.
        let readiness = Readiness::builder()
            .check("user-metadata", platform::grpc::readiness_check(upstreams.user_metadata_channel.clone()))
            .check("password", platform::grpc::readiness_check(upstreams.password_channel.clone()))
            .build();
        let listener = platform::server::bind(settings.port, "PORT").await?;
        let state = AppState {
            readiness,
            upstreams,
            hasher: ContactHasher::new(settings.contact_hash_key.clone()),
            limits: settings.limits,
            max_body_bytes: settings.max_body_bytes,
        };
        Ok(Self { listener, state, settings })
    }

    /// Where HTTP is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves: then reports not ready, stops accepting, and lets in-flight requests
    /// finish within the grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let grace = self.settings.shutdown.grace_period();
        let readiness = self.state.readiness.clone();
        let monitor = tokio::spawn(readiness.clone().monitor(cancel.clone()));
        let router = crate::routes::router(self.state);
        tracing::info!(http = %self.listener.local_addr()?, "serving");
        let server = tokio::spawn(platform::http::serve(self.listener, router, cancel.clone(), grace));

        cancel.cancelled().await;
        readiness.start_draining();
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        let _ = tokio::join!(monitor, server);
        tracing::info!("stopped");
        Ok(())
    }
}
