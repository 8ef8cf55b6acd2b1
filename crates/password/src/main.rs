//! The `password` binary: parses the command line and wires the library together, nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use password::{App, Settings};
use platform::settings::ServerSettings;

#[derive(Parser)]
#[command(version, about = "argon2id credential storage and verification over gRPC")]
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
    /// Probe the running server on PORT; exit 0 when it is ready.
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::exit(run(Cli::parse().command.unwrap_or_default()).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Healthcheck = command {
        return platform::healthcheck::grpc(ServerSettings::load(50052, 9052)?.port).await;
    }
    let settings = Settings::load()?;
    let telemetry = platform::telemetry::init("password", &settings.telemetry)?;
    let result = match command {
        Command::Migrate => password::migrate(&settings).await,
        _ => async { App::build(settings).await?.run_until(platform::shutdown::signal()).await }.await,
    };
    telemetry.shutdown();
    result
}
