//! Shutdown as one future: the binary waits for SIGTERM or Ctrl-C, and everything else receives a
//! [`CancellationToken`] derived from it, so servers, consumers and relays all stop on the same signal.

use std::{future::Future, time::Duration};

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// Returns a token cancelled when `shutdown` resolves, so one caller-provided future can stop many tasks.
pub fn token_from(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => trigger.cancel(),
            () = trigger.cancelled() => {}
        }
    });
    token
}

/// Waits for a task that is draining after `cancel`, but no longer than `grace`; past it the task is aborted.
/// Returns whether it finished in time.
pub async fn drain<T>(name: &str, task: tokio::task::JoinHandle<T>, grace: Duration) -> bool {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(task = name, grace_secs = grace.as_secs(), "drain exceeded the grace period; aborting");
            abort.abort();
            false
        }
    }
}

/// One deadline for a whole shutdown: the grace period starts when `cancel` fires, and every drain step
/// gets only what is left of it, so the steps together never exceed the grace period.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: std::sync::Arc<tokio::sync::OnceCell<tokio::time::Instant>>,
    cancel: CancellationToken,
    grace: Duration,
}

impl Deadline {
    /// A deadline `grace` after `cancel` fires. The clock starts at the moment it fires, however late
    /// [`Deadline::remaining`] is first asked.
    pub fn after(cancel: &CancellationToken, grace: Duration) -> Self {
        let deadline = Self { at: std::sync::Arc::default(), cancel: cancel.clone(), grace };
        let started = deadline.clone();
        tokio::spawn(async move {
            started.cancel.cancelled().await;
            let _ = started.at.set(tokio::time::Instant::now() + started.grace);
        });
        deadline
    }

    /// What is left of the grace period; waits for shutdown to have started.
    pub async fn remaining(&self) -> Duration {
        self.cancel.cancelled().await;
        let at = *self.at.get_or_init(|| async { tokio::time::Instant::now() + self.grace }).await;
        at.saturating_duration_since(tokio::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_signal_not_from_the_first_question() {
        let cancel = CancellationToken::new();
        let deadline = Deadline::after(&cancel, Duration::from_secs(20));

        cancel.cancel();
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(15)).await;

        assert_eq!(deadline.remaining().await, Duration::from_secs(5));
    }
}
