//! Shutdown as one future: the binary waits for SIGTERM or Ctrl-C, and everything else receives a
//! [`CancellationToken`] derived from it, so servers, consumers and relays all stop on the same signal.

use std::future::Future;

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
        trigger.run_until_cancelled(shutdown).await;
        trigger.cancel();
    });
    token
}

/// Waits for a task that is draining after the shutdown signal, until `deadline` (the moment draining began plus
/// the grace period: one clock for every step of a shutdown); past it the task is aborted. Returns whether it
/// finished in time.
pub async fn drain<T>(name: &str, task: tokio::task::JoinHandle<T>, deadline: tokio::time::Instant) -> bool {
    let abort = task.abort_handle();
    match tokio::time::timeout_at(deadline, task).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(task = name, "drain exceeded the grace period; aborting");
            abort.abort();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_past_the_deadline_is_aborted_and_one_within_it_finishes() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let quick = tokio::spawn(tokio::time::sleep(std::time::Duration::from_secs(4)));
        let slow = tokio::spawn(tokio::time::sleep(std::time::Duration::from_secs(60)));

        assert!(drain("quick", quick, deadline).await);
        assert!(!drain("slow", slow, deadline).await);
        assert_eq!(tokio::time::Instant::now(), deadline);
    }
}
