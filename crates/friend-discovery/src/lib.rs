//! The friend-discovery service: "people you may know" from contacts uploaded at signup.
//!
//! Architecture invariant: contacts arrive, are stored and are compared only as keyed hashes; no plaintext
//! contact ever reaches this service.

mod consumer;
mod service;
mod settings;
mod store;

use platform::{
    db::MigrationFile,
    deadletters::RepairArgs,
    service::Host,
    settings::{Common, Ports},
    shutdown::CancellationToken,
};
use proto::friend_discovery::v1::friend_discovery_service_server::FriendDiscoveryServiceServer;

use crate::{consumer::EventHandler, service::Suggestions};

pub use settings::Settings;

/// The friend-discovery service, as the platform's service skeleton runs it.
#[derive(Debug)]
pub struct FriendDiscovery;

/// friend-discovery's admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// List dead letters, and replay them once their cause is fixed (the graph needs no repair: every effect
    /// commutes and is idempotent).
    Repair(RepairArgs),
}

impl platform::service::Service for FriendDiscovery {
    const NAME: &'static str = "friend-discovery";
    const ABOUT: &'static str = "\"people you may know\" from hashed contacts, over gRPC";
    const PORTS: Ports = Ports { grpc: 50054, ops: 9054 };
    const EVENTS: &'static [&'static str] = consumer::EVENTS;
    const MIGRATIONS: &'static [MigrationFile] = platform::migrations![
        "20261126000001_processed_events",
        "20261126000002_graph",
        "20261129000001_attempts_and_budget",
        "20261204000001_discoverable_since_changes_only",
    ];
    type Settings = Settings;
    type Admin = Admin;

    async fn serve(host: Host, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = host.pool().clone();
        let per_day = i32::try_from(settings.suggestions_per_day.get()).unwrap_or(i32::MAX);
        let sources = i64::from(settings.suggestion_sources.get());
        let service = FriendDiscoveryServiceServer::new(Suggestions { pool: pool.clone(), per_day, sources });
        let consumer = host.consumer(EventHandler, &shutdown);
        host.run(service, consumer.into_iter().collect(), shutdown).await
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
        platform::db::check_embedded(&dir, super::FriendDiscovery::MIGRATIONS).await
    }
}
