//! The user-metadata service: user records (email, display name, status) over gRPC, and the transactional
//! outbox through which every committed signup is announced on the broker.
//!
//! Architecture invariant: an event is written to the outbox in the same transaction as the change it
//! describes, and nothing is published that was not committed.

mod admin;
mod cache;
mod events;
mod service;
mod settings;
mod store;

use std::time::Duration;

use platform::{
    db::MigrationFile,
    service::{Host, Worker},
    settings::{Common, Ports},
    shutdown::CancellationToken,
};
use proto::user_metadata::v1::user_metadata_service_server::UserMetadataServiceServer;

use crate::{cache::UserCache, service::Users};

/// How often expired idempotency keys are deleted.
const EXPIRE_KEYS_EVERY: Duration = Duration::from_secs(600);

pub use admin::AdminSettings;
pub use settings::Settings;
pub use store::AttemptLimit;

/// The user-metadata service, as the platform's service skeleton runs it.
#[derive(Debug)]
pub struct UserMetadata;

/// user-metadata's admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Make outbox events stuck behind a long backoff due at once. Idempotent.
    Repair {
        /// Log what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move accounts never verified in time to cold storage (ARCHIVE_URL), then remove them everywhere.
    Archive {
        /// Log what would be archived, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl platform::service::Service for UserMetadata {
    const NAME: &'static str = "user-metadata";
    const ABOUT: &'static str = "user records and the outbox of signup events, over gRPC";
    const PORTS: Ports = Ports { grpc: 50051, ops: 9051 };
    const EVENTS: &'static [&'static str] = &[];
    const MIGRATIONS: &'static [MigrationFile] = platform::migrations![
        "20261126000001_users_and_outbox",
        "20261126000002_report_indexes",
        "20261126000003_archive_index",
        "20261129000001_signup_attempts",
        "20261129000002_outbox_tracestate",
        "20261129000003_outbox_user",
        "20261129000004_users_changed",
        "20261130000001_outbox_retention",
        "20261201000001_attempt_client",
        "20261204000001_idempotency_keys_user",
        "20261206000001_idempotency_key_attempt",
    ];
    type Settings = Settings;
    type Admin = Admin;

    async fn serve(host: Host, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = host.pool().clone();
        let key_ttl = settings.idempotency_key_ttl();
        let cache = UserCache::new(settings.user_cache_capacity());
        let listener = Worker::new("user cache listener", cache.clone().listen(pool.clone(), shutdown.clone()));
        let users = Users { pool: pool.clone(), key_ttl, attempts: settings.attempts(), cache };
        let service = UserMetadataServiceServer::new(users);
        let (relay_settings, relay_cancel) = (settings.relay(&host.common().amqp.events_exchange), shutdown.clone());
        let relay = host.broker_worker("outbox relay", move |broker, pool| {
            platform::outbox::relay(pool, broker, relay_settings, relay_cancel)
        });
        let janitor = Worker::every("idempotency key janitor", EXPIRE_KEYS_EVERY, shutdown.clone(), move || {
            store::expire_keys(pool.clone(), key_ttl)
        });
        host.run(service, [relay, Some(janitor), Some(listener)].into_iter().flatten().collect(), shutdown).await
    }

    async fn admin(common: Common, _: Settings, command: Admin) -> anyhow::Result<()> {
        let admin = AdminSettings::load()?;
        let pool = platform::db::admin_pool(&common.database, Self::MIGRATIONS).await?;
        let result = match command {
            Admin::Repair { dry_run } => admin::repair(&pool, &admin, dry_run).await,
            Admin::Archive { dry_run } => admin::archive(&pool, &admin, dry_run).await,
        };
        pool.close().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use platform::service::Service as _;

    #[tokio::test]
    async fn every_migration_file_is_embedded() -> anyhow::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        platform::db::check_embedded(&dir, super::UserMetadata::MIGRATIONS).await
    }
}
