//! Builds the password service (its hasher, database, listeners) and runs it until shutdown.

use std::{net::SocketAddr, time::Duration};

use platform::service::{Host, Service as _, Worker};
use platform::shutdown::CancellationToken;
use proto::password::v1::password_service_server::PasswordServiceServer;
use sqlx::PgPool;

use crate::{Password, Settings, consumer::EventHandler, hasher::Hasher, service::Passwords, store};

/// How often expired sessions, stale attempt credentials and old failure counts are removed.
const JANITOR_INTERVAL: Duration = Duration::from_secs(300);

/// A built, not yet serving, password service.
#[derive(Debug)]
pub struct App {
    host: Host,
    hasher: Hasher,
    settings: Settings,
}

impl App {
    /// Does all setup: starts the hashing threads (and the decoy hash), connects to the database, checks its
    /// schema, starts connecting to the broker, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hashing = &settings.hashing;
        let hasher = Hasher::new(hashing.params()?, hashing.threads(), hashing.queue_limit());
        hasher.warm_up();
        let host = Host::build(Password::NAME, &settings.common, Password::migrator()).await?;
        Ok(Self { host, hasher, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.host.ops_addr()
    }

    /// Serves, consumes events and removes what expired until `cancel` fires, then drains within the grace period.
    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let pool = self.host.pool().clone();
        let (sessions, throttle) = (self.settings.sessions, self.settings.throttle);
        let service = PasswordServiceServer::new(Passwords::new(pool.clone(), self.hasher, sessions, throttle));
        let janitor = janitor(pool.clone(), self.settings, cancel.clone());
        let workers = [self.host.consumer(EventHandler::new(pool), &cancel), Some(Worker::spawn("janitor", janitor))];
        self.host.run(service, workers.into_iter().flatten().collect(), cancel).await
    }
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
