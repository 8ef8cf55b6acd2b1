//! The `user-metadata` binary: parses the command line and wires the library together, nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use platform::settings::ServerSettings;
use user_metadata::{App, Settings};

#[derive(Parser)]
#[command(version, about = "user records and the outbox of signup events, over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Default)]
enum Command {
    /// Serve gRPC on PORT (the default command).
    #[default]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Find and fix broken states: abandoned signups, stuck outbox events. Idempotent.
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
    /// Probe the running server: exit 0 when it is ready (gRPC health on PORT).
    Healthcheck {
        /// Probe liveness instead (`/livez` on METRICS_PORT): for platforms that restart unhealthy tasks.
        #[arg(long)]
        live: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::exit(run(Cli::parse().command.unwrap_or_default()).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Healthcheck { live } = command {
        let ports = ServerSettings::load(50051, 9051)?;
        return match live {
            true => platform::healthcheck::http(ports.metrics_port, "/livez").await,
            false => platform::healthcheck::grpc(ports.port).await,
        };
    }
    let settings = Settings::load()?;
    let telemetry = platform::telemetry::init("user-metadata", &settings.telemetry)?;
    let result = match command {
        Command::Migrate => user_metadata::migrate(&settings).await,
        Command::Repair { dry_run } => user_metadata::repair(&settings, dry_run).await,
        Command::Archive { dry_run } => user_metadata::archive(&settings, dry_run).await,
        _ => async { App::build(settings).await?.run_until(platform::shutdown::signal()).await }.await,
    };
    telemetry.shutdown();
    result
}
