//! The password service: argon2id credential storage and verification, and the sessions a right password opens,
//! over gRPC, with its own database.
//!
//! Architecture invariant: a plaintext password exists here only for the duration of one RPC; only PHC
//! strings and token hashes are stored, and no password reaches a log line, an error or a trace.

mod consumer;
mod events;
mod hasher;
mod service;
mod settings;
mod store;

use std::time::Duration;

use platform::{
    db::MigrationFile,
    deadletters::RepairArgs,
    service::{Host, Worker},
    settings::{Common, Ports},
    shutdown::CancellationToken,
};
use proto::password::v1::password_service_server::PasswordServiceServer;

use crate::{consumer::EventHandler, hasher::Hasher, service::Passwords};

/// How often expired sessions, stale attempt credentials and old failure counts are removed.
const JANITOR_INTERVAL: Duration = Duration::from_secs(300);

pub use settings::{HashingSettings, SessionSettings, Settings, Throttle};

/// The password service, as the platform's service skeleton runs it.
#[derive(Debug)]
pub struct Password;

/// password's admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// List dead letters, and replay them once their cause is fixed (credentials need no repair).
    Repair(RepairArgs),
}

impl platform::service::Service for Password {
    const NAME: &'static str = "password";
    const ABOUT: &'static str = "argon2id credential storage and verification, and sessions, over gRPC";
    const PORTS: Ports = Ports { grpc: 50052, ops: 9052 };
    const EVENTS: &'static [&'static str] = consumer::EVENTS;
    const MIGRATIONS: &'static [MigrationFile] = platform::migrations![
        "20261126000001_credentials",
        "20261126000002_processed_events",
        "20261129000001_attempts_sessions_throttling",
        "20261129000002_outbox",
        "20261130000001_outbox_retention",
        "20261130000002_no_attempt_sessions",
        "20261201000001_sign_in_failures_per_client",
        "20261201000002_sign_in_failures_carried_over",
        "20261202000001_credential_generation",
        "20261203000001_credential_set_at",
        "20261206000001_trusted_devices",
    ];
    type Settings = Settings;
    type Admin = Admin;

    async fn serve(host: Host, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        let hashing = &settings.hashing;
        let hasher = Hasher::new(hashing.params()?, hashing.threads(), hashing.queue_limit());
        hasher.warm_up();
        let pool = host.pool().clone();
        let (sessions, throttle) = (settings.sessions, settings.throttle);
        let service = PasswordServiceServer::new(Passwords { pool: pool.clone(), hasher, sessions, throttle });
        let janitor = Worker::every("janitor", JANITOR_INTERVAL, shutdown.clone(), move || {
            store::purge(pool.clone(), sessions.attempt_ttl(), throttle)
        });
        let (relay_settings, relay_cancel) =
            (settings.outbox.relay(&host.common().amqp.events_exchange, Self::NAME), shutdown.clone());
        let relay = host.broker_worker("outbox relay", move |broker, pool| {
            platform::outbox::relay(pool, broker, relay_settings, relay_cancel)
        });
        let workers = [host.consumer(EventHandler, &shutdown), relay, Some(janitor)];
        host.run(service, workers.into_iter().flatten().collect(), shutdown).await
    }

    async fn admin(common: Common, _: Settings, command: Admin) -> anyhow::Result<()> {
        let Admin::Repair(args) = command;
        platform::deadletters::repair_subscriber(&common, &args, proto::Event::render).await
    }
}

#[cfg(test)]
mod tests {
    use platform::service::Service as _;

    #[tokio::test]
    async fn every_migration_file_is_embedded() -> anyhow::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        platform::db::check_embedded(&dir, super::Password::MIGRATIONS).await
    }
}
