//! Waiting without sleeping blindly: poll a condition until it holds or a deadline passes.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How often [`eventually`] retries.
const INTERVAL: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Ok`, or fails with the last error once `timeout` has passed.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

/// Waits until `counter` (counted by tasks running beside the caller) reaches `at_least`; `what` names it in the
/// error once `timeout` has passed.
pub async fn counted(
    counter: &std::sync::atomic::AtomicUsize,
    at_least: usize,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    eventually(timeout, || async {
        let count = counter.load(std::sync::atomic::Ordering::SeqCst);
        anyhow::ensure!(count >= at_least, "{what}: {count} of {at_least}");
        Ok(())
    })
    .await
}
