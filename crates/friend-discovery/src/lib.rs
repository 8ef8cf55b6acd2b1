//! The friend-discovery service: "people you may know" from contacts uploaded at signup.
//!
//! Architecture invariant: contacts arrive, are stored and are compared only as keyed hashes; no plaintext
//! contact ever reaches this service.

mod consumer;
mod service;
mod settings;
mod startup;
mod store;

use platform::shutdown::CancellationToken;
use platform::{
    deadletters::RepairArgs,
    settings::{Ports, SettingsError},
};

pub use settings::Settings;
pub use startup::App;

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
    type Settings = Settings;
    type Admin = Admin;

    fn load() -> Result<Settings, SettingsError> {
        Settings::load()
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!()
    }

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        App::build(settings).await?.run_until(shutdown).await
    }

    async fn admin(settings: Settings, command: Admin) -> anyhow::Result<()> {
        let Admin::Repair(args) = command;
        platform::deadletters::repair_subscriber(&settings.common, &args, proto::Event::render).await
    }
}
