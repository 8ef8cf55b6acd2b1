//! The `signup-api` binary: parses the command line and wires the library together, nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signup_api::Settings;

#[derive(Parser)]
#[command(version, about = "The HTTP ingress of the signup system")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Default)]
enum Command {
    /// Serve HTTP on PORT (the default command).
    #[default]
    Serve,
    /// Probe the running server: exit 0 when `/readyz` on METRICS_PORT answers 200.
    Healthcheck {
        /// Probe `/livez` instead: for platforms that restart unhealthy tasks.
        #[arg(long)]
        live: bool,
    },
}

#[global_allocator]
static ALLOCATOR: platform::Allocator = platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::exit(run(Cli::parse().command.unwrap_or_default()).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Healthcheck { live } = command {
        return platform::healthcheck::http_ready(signup_api::PORTS, live).await;
    }
    platform::tls::init_mutual_tls()?;
    let settings = Settings::load()?;
    let telemetry = platform::telemetry::init("signup-api", &settings.telemetry)?;
    let shutdown = platform::shutdown::token_from(platform::shutdown::signal());
    let result = signup_api::serve(settings, shutdown).await;
    telemetry.shutdown();
    result
}
