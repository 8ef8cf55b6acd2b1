//! Builds signup-api (channels, listeners) and runs it until shutdown.

use std::{net::SocketAddr, time::Duration};

use platform::{health::Readiness, shutdown::CancellationToken};
use tokio::net::TcpListener;

use crate::{
    Settings, contacts::KeyedHasher, domain::signup::SignupLimits, ratelimit::RateLimits, upstream::Upstreams,
};

/// How often clients whose buckets are full again are forgotten.
const FORGET_IDLE_CLIENTS_EVERY: Duration = Duration::from_secs(60);

/// What every handler can reach. signup-api owns no database: all state lives behind its upstreams (the rate
/// limiter's buckets are per process, by design).
#[derive(Debug, Clone)]
pub struct AppState {
    /// Readiness, reported on `/readyz`.
    pub readiness: Readiness,
    /// The gRPC services behind the API.
    pub upstreams: Upstreams,
    /// Hashes contacts and emails under `CONTACT_HASH_KEY`.
    pub hasher: KeyedHasher,
    /// Fingerprints idempotent requests under `IDEMPOTENCY_FINGERPRINT_KEY`.
    pub fingerprints: KeyedHasher,
    /// What signups are checked against.
    pub limits: SignupLimits,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Per-client budgets.
    pub rate_limits: RateLimits,
}

impl AppState {
    /// The state `settings` describe, with lazily connected upstreams: no I/O.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let upstreams = Upstreams::new(&settings.upstreams)?;
        // Ready means a signup can be taken: the services on the signup path answer. The others degrade
        // their own endpoints only, so they do not take the whole API out of rotation.
        let readiness = Readiness::builder()
            .check("user-metadata", platform::grpc::readiness_check(upstreams.user_metadata_channel.clone()))
            .check("password", platform::grpc::readiness_check(upstreams.password_channel.clone()))
            .build();
        Ok(Self {
            readiness,
            upstreams,
            hasher: KeyedHasher::new(settings.contact_hash_key.clone()),
            fingerprints: KeyedHasher::new(settings.fingerprint_key.clone()),
            limits: settings.limits,
            max_body_bytes: settings.max_body_bytes,
            rate_limits: RateLimits::new(&settings.rate_limits),
        })
    }
}

/// A built, not yet serving, signup-api. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    ops: TcpListener,
    state: AppState,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: builds the upstream channels and binds `PORT` and `METRICS_PORT` (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        platform::metrics::handle();
        let state = AppState::new(&settings)?;
        let listener = platform::server::bind(settings.server.port, "PORT").await?;
        let ops = platform::server::bind(settings.server.metrics_port, "METRICS_PORT").await?;
        Ok(Self { listener, ops, state, settings })
    }

    /// Where the API is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `cancel` fires: then reports not ready, stops accepting, and lets in-flight requests finish
    /// until the grace period after that moment.
    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let grace = self.settings.shutdown.grace_period();
        let readiness = self.state.readiness.clone();
        let monitor = tokio::spawn(readiness.clone().monitor(cancel.clone()));
        let forget = tokio::spawn(forget_idle_clients(self.state.rate_limits.clone(), cancel.clone()));
        let (http, ops) = (self.local_addr(), self.ops_addr());
        let api = crate::routes::router(self.state);
        let ops_router = crate::routes::operational_router(readiness.clone());
        let server = tokio::spawn(platform::http::serve(self.listener, api, cancel.clone()));
        let ops_server = tokio::spawn(platform::http::serve(self.ops, ops_router, cancel.clone()));
        tracing::info!(%http, %ops, "{}", platform::server::SERVING);

        cancel.cancelled().await;
        let deadline = tokio::time::Instant::now() + grace;
        readiness.start_draining();
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        platform::shutdown::drain("HTTP server", server, deadline).await;
        platform::shutdown::drain("operational HTTP server", ops_server, deadline).await;
        let _ = tokio::join!(monitor, forget);
        tracing::info!("stopped");
        Ok(())
    }
}

async fn forget_idle_clients(limits: RateLimits, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FORGET_IDLE_CLIENTS_EVERY) => limits.forget_idle(),
            () = cancel.cancelled() => return,
        }
    }
}
