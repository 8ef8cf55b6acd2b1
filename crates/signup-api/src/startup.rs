//! Builds signup-api (channels, listeners) and serves it until shutdown.

use std::time::Duration;

use platform::{health::Readiness, service::Worker, shutdown::CancellationToken};

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
    /// How suggestions name other members and seal page tokens, per viewer (its keys derive from the fingerprint key).
    pub(crate) suggestion_seal: std::sync::Arc<crate::friends::SuggestionSeal>,
    /// What signups are checked against.
    pub limits: SignupLimits,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// How long a body may take to arrive.
    pub request_body_timeout: std::time::Duration,
    /// Per-client budgets.
    pub rate_limits: RateLimits,
    /// How many signups password takes at a time, as learned from its refusals.
    pub admission: crate::admission::Admission,
    /// Sessions checked within the last moment (a cache: losing it loses nothing).
    pub(crate) sessions: crate::auth::SessionCache,
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
        let fingerprints = KeyedHasher::new(settings.fingerprint_key.clone());
        Ok(Self {
            readiness,
            upstreams,
            hasher: KeyedHasher::new(settings.contact_hash_key.clone()),
            suggestion_seal: std::sync::Arc::new(crate::friends::SuggestionSeal::new(&fingerprints)?),
            fingerprints,
            limits: settings.limits,
            max_body_bytes: settings.max_body_bytes,
            request_body_timeout: settings.request_body_timeout,
            rate_limits: RateLimits::new(&settings.rate_limits),
            admission: crate::admission::Admission::default(),
            sessions: crate::auth::SessionCache::new(settings.session_cache.ttl(), settings.session_cache.capacity()),
        })
    }
}

/// Builds the upstream channels, binds `PORT` and `METRICS_PORT` (port 0 allowed) and serves until `cancel`
/// fires: then reports not ready, stops accepting, and lets in-flight requests finish until the grace period after
/// that moment.
pub async fn serve(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    platform::metrics::handle();
    let state = AppState::new(&settings)?;
    let listener = platform::server::bind(settings.server.port, "PORT").await?;
    let ops = platform::server::bind(settings.server.metrics_port, "METRICS_PORT").await?;
    let readiness = state.readiness.clone();
    let monitor = tokio::spawn(readiness.clone().monitor(cancel.clone()));
    let limits = state.rate_limits.clone();
    let mut forget = Worker::every("idle client janitor", FORGET_IDLE_CLIENTS_EVERY, cancel.clone(), move || {
        limits.forget_idle();
        std::future::ready(())
    });
    forget.start();
    tracing::info!(http = %listener.local_addr()?, ops = %ops.local_addr()?, "{}", platform::server::SERVING);
    let api = tokio::spawn(platform::http::serve(listener, crate::routes::router(state), cancel.clone()));
    let ops_router = platform::http::operational_router(readiness.clone());
    let ops = tokio::spawn(platform::http::serve(ops, ops_router, cancel.clone()));

    cancel.cancelled().await;
    let grace = settings.shutdown.grace_period();
    let deadline = tokio::time::Instant::now() + grace;
    readiness.start_draining();
    tracing::info!(grace_secs = grace.as_secs(), "draining");
    platform::shutdown::drain("HTTP server", api, deadline).await;
    platform::shutdown::drain("operational HTTP server", ops, deadline).await;
    forget.drain(deadline).await;
    let _ = monitor.await;
    tracing::info!("stopped");
    Ok(())
}
