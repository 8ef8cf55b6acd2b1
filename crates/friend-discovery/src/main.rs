//! The `friend-discovery` binary: parses the command line and wires the library together, nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use friend_discovery::{App, Settings};
use platform::settings::ServerSettings;

#[derive(Parser)]
#[command(version, about = "private people-you-may-know suggestions, over gRPC")]
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
    /// List dead letters, and replay them once their cause is fixed.
    Repair(platform::cli::RepairArgs),
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
        let ports = ServerSettings::load(50054, 9054)?;
        return match live {
            true => platform::healthcheck::http(ports.metrics_port, "/livez").await,
            false => platform::healthcheck::grpc(ports.port).await,
        };
    }
    let settings = Settings::load()?;
    let telemetry = platform::telemetry::init("friend-discovery", &settings.telemetry)?;
    let result = match command {
        Command::Migrate => friend_discovery::migrate(&settings).await,
        Command::Repair(args) => friend_discovery::repair(&settings, &args).await,
        _ => async { App::build(settings).await?.run_until(platform::shutdown::signal()).await }.await,
    };
    telemetry.shutdown();
    result
}
