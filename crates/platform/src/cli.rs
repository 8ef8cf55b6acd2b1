//! What every binary does with the outcome of its command: exit 0, or print the error with its cause chain
//! (to stderr, and as a log line when logging is up) and exit 1.

use std::process::ExitCode;

/// Turns a command's result into the process exit code.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "fatal");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The dead-letter flags of every subscriber's `repair` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct RepairArgs {
    /// Log what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replay every dead letter into the queue (once the cause is fixed).
    #[arg(long, conflicts_with = "replay")]
    pub replay_dead_letters: bool,
    /// Replay only the dead letter with this event id.
    #[arg(long, value_name = "EVENT_ID")]
    pub replay: Option<uuid::Uuid>,
    /// Also log the decoded content of the dead letter with this event id.
    #[arg(long, value_name = "EVENT_ID")]
    pub inspect: Option<uuid::Uuid>,
}

impl RepairArgs {
    /// What to do with dead letters beyond listing them.
    pub fn replay(&self) -> crate::deadletters::Replay {
        crate::deadletters::Replay::from_flags(self.replay_dead_letters, self.replay)
    }
}
