//! The user-metadata service: user records (email, display name, status) over gRPC, and the transactional
//! outbox through which every committed signup is announced on the broker.
//!
//! Architecture invariant: an event is written to the outbox in the same transaction as the change it
//! describes, and nothing is published that was not committed.

mod admin;
mod events;
mod service;
mod settings;
mod startup;
mod store;

use platform::settings::{Ports, SettingsError};
use platform::shutdown::CancellationToken;

pub use admin::AdminSettings;
pub use settings::Settings;
pub use startup::App;
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
        let admin = AdminSettings::load()?;
        let pool = platform::db::admin_pool(&settings.common.database, Self::migrator()).await?;
        let result = match command {
            Admin::Repair { dry_run } => admin::repair(&pool, &admin, dry_run).await,
            Admin::Archive { dry_run } => admin::archive(&pool, &admin, dry_run).await,
        };
        pool.close().await;
        result
    }
}
