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
