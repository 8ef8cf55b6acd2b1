//! CPU-bound work of a request, off the runtime's workers. The password policy's strength estimate (zxcvbn) grows
//! faster than the password: about 0.1 to 0.3 ms for a passphrase of 20 to 35 characters, 3 to 9 ms for one of 128
//! (release build, on the 2-CPU machine `make bench` runs on). On a worker it would hold up every request that worker
//! serves (sign-ins, refusals, health checks) for as long; on tokio's blocking pool it holds up nothing but itself.
//! Admission bounds the signups starting it at once (one whose client went away finishes its estimate all the same),
//! rate limits the password changes and resets.

use crate::error::ApiError;

/// Runs `work` on tokio's blocking pool and waits for it.
pub(crate) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let done = tokio::task::spawn_blocking(work).await;
    done.map_err(|error| ApiError::Internal(anyhow::anyhow!("CPU-bound work of the request failed: {error}")))
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::off_runtime;

    #[tokio::test(flavor = "current_thread")]
    async fn the_work_leaves_the_runtimes_thread_free() {
        let (signal, signalled) = mpsc::channel::<()>();
        // Run on the runtime's only thread, the work would wait for a signal that thread could never send.
        let work = tokio::spawn(off_runtime(move || signalled.recv_timeout(Duration::from_secs(10)).is_ok()));
        tokio::task::yield_now().await;
        let _ = signal.send(());
        assert_eq!(work.await.ok().and_then(Result::ok), Some(true), "the work ran on the runtime's thread");
    }
}
