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
