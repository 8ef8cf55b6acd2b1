//! One retry policy for everything that waits before trying again (the broker connection, the outbox relay, an
//! event handler's transient failure, a mail's next delivery attempt): capped exponential backoff, with full jitter
//! where many clients retry at once and would otherwise come back in step.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// A run that lasted this long was healthy: its next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Capped exponential backoff: attempt 1 waits `base`, each further attempt twice the one before, never more than
/// `max`. With jitter the wait is uniform in `[0, that]` ("full jitter"), which spreads retries out best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Whether waits are drawn uniformly from `[0, cap]` rather than taken as the cap.
    pub jitter: bool,
}

impl Backoff {
    /// Full-jitter backoff from `base` up to `max`.
    pub const fn jittered(base: Duration, max: Duration) -> Self {
        Self { base, max, jitter: true }
    }

    /// Backoff without jitter, for one client alone (a single reconnecting connection).
    pub const fn exact(base: Duration, max: Duration) -> Self {
        Self { base, max, jitter: false }
    }

    /// The cap of attempt `attempt` (1 for the first retry): `base * 2^(attempt - 1)`, at most `max`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// How long to wait before attempt `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt);
        if self.jitter { cap.mul_f64(rand::random::<f64>()) } else { cap }
    }

    /// Runs `run` until it returns `Ok` (it was cancelled) or `cancel` fires, starting it again after this
    /// backoff each time it fails (a broker channel or a database connection lost), and logging why as `what`.
    pub async fn restart<F, Fut>(&self, what: &str, cancel: &CancellationToken, mut run: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut attempt = 0;
        loop {
            let started = tokio::time::Instant::now();
            let Err(error) = run().await else { return };
            attempt = if started.elapsed() > HEALTHY_RUN { 1 } else { attempt + 1 };
            let retry_in = self.delay(attempt);
            let (error, retry_in_ms) = (format!("{error:#}"), retry_in.as_millis() as u64);
            tracing::warn!(error, retry_in_ms, "{what} interrupted; restarting");
            if !pause(retry_in, cancel).await {
                return;
            }
        }
    }
}

/// Waits `duration`; false when `cancel` fired first.
pub async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    cancel.run_until_cancelled(tokio::time::sleep(duration)).await.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_base_up_to_the_cap() {
        let backoff = Backoff::exact(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u128> = (1..=6).map(|a| backoff.delay(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_varies() {
        let backoff = Backoff::jittered(Duration::from_millis(100), Duration::from_secs(30));
        let waits: Vec<Duration> = (0..200).map(|_| backoff.delay(4)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(800)));
        assert!(
            waits.iter().any(|w| *w < Duration::from_millis(400))
                && waits.iter().any(|w| *w > Duration::from_millis(400))
        );
    }
}
