//! The `email-verification` binary: parses the command line and wires the library together, nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use email_verification::{App, Settings};
use platform::settings::ServerSettings;

#[derive(Parser)]
#[command(version, about = "verification tokens and email, confirm and resend, over gRPC")]
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
    /// Find and fix broken states: verifications user-metadata missed; list dead letters, and replay them. Idempotent.
    Repair(platform::cli::RepairArgs),
    /// Move used and expired tokens and the old mail log to cold storage (ARCHIVE_URL).
    Archive {
        /// Log what would be archived, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daily report for a day (default: yesterday, UTC), mailed to REPORT_TO.
    Report {
        /// The day, as YYYY-MM-DD.
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
        /// Print the report instead of mailing it.
        #[arg(long)]
        stdout: bool,
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
        let ports = ServerSettings::load(50053, 9053)?;
        return match live {
            true => platform::healthcheck::http(ports.metrics_port, "/livez").await,
            false => platform::healthcheck::grpc(ports.port).await,
        };
    }
    let settings = Settings::load()?;
    let telemetry = platform::telemetry::init("email-verification", &settings.telemetry)?;
    let result = match command {
        Command::Migrate => email_verification::migrate(&settings).await,
        Command::Repair(args) => email_verification::repair(&settings, &args).await,
        Command::Archive { dry_run } => email_verification::archive(&settings, dry_run).await,
        Command::Report { day, stdout } => email_verification::report(&settings, day, stdout).await,
        _ => async { App::build(settings).await?.run_until(platform::shutdown::signal()).await }.await,
    };
    telemetry.shutdown();
    result
}
