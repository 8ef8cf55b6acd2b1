//! The password service: argon2id credential storage and verification, and the sessions a right password opens,
//! over gRPC, with its own database.
//!
//! Architecture invariant: a plaintext password exists here only for the duration of one RPC; only PHC
//! strings and token hashes are stored, and no password reaches a log line, an error or a trace.

mod consumer;
mod hasher;
mod service;
mod settings;
mod startup;
mod store;

use platform::shutdown::CancellationToken;
use platform::{
    deadletters::RepairArgs,
    settings::{Ports, SettingsError},
};

pub use settings::{HashingSettings, SessionSettings, Settings, Throttle};
pub use startup::App;

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
