//! Readiness: named checks on the process's backing services, evaluated in the background and published to
//! `/readyz` and to `grpc.health.v1`. Shutdown flips it to not ready at once, before draining.
//!
//! A check is either *critical* (the process cannot serve without it: its database) or *informational* (the
//! process serves degraded without it: the broker, whose outage the outbox exists to absorb). Only critical
//! checks decide readiness; informational ones are reported, so an outage of the broker never takes the
//! services that accept signups out of rotation.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the checks run: often while not ready, so a starting process turns ready within a fraction of a
/// second of its dependencies, and calmly once ready. And how long one check may take before it fails.
const READY_INTERVAL: Duration = Duration::from_secs(2);
const NOT_READY_INTERVAL: Duration = Duration::from_millis(100);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The outcome of the latest round of checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// True when every critical check passed and the process is not shutting down.
    pub ready: bool,
    /// True when an informational check failed: serving, but without something it normally has.
    pub degraded: bool,
    /// Each check's name and its error, if it failed.
    pub checks: BTreeMap<&'static str, Result<(), String>>,
    /// True once shutdown has started.
    pub draining: bool,
}

/// Cloneable handle on the process's readiness.
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<Vec<Check>>,
    report: Arc<watch::Sender<Report>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("report", &*self.report.borrow()).finish()
    }
}

struct Check {
    name: &'static str,
    critical: bool,
    run: CheckFn,
}

/// Collects the checks of a [`Readiness`].
#[derive(Default)]
pub struct ReadinessBuilder {
    checks: Vec<Check>,
}

impl std::fmt::Debug for ReadinessBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.checks.iter().map(|check| check.name)).finish()
    }
}

impl ReadinessBuilder {
    /// Adds a critical check; it passes when the future returns `Ok` within a second. Errors must not contain
    /// secrets.
    pub fn check<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name, true, check)
    }

    /// Adds an informational check: reported, and `degraded` when failing, but never making the process
    /// unready.
    pub fn inform<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name, false, check)
    }

    fn add<F, Fut>(mut self, name: &'static str, critical: bool, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push(Check { name, critical, run: Arc::new(move || Box::pin(check()) as CheckFuture) });
        self
    }

    /// Finishes the set. The process starts not ready until the first round of checks passes.
    pub fn build(self) -> Readiness {
        let (report, _) = watch::channel(Report::default());
        Readiness { checks: Arc::new(self.checks), report: Arc::new(report) }
    }
}

impl Readiness {
    /// Starts describing the checks.
    pub fn builder() -> ReadinessBuilder {
        ReadinessBuilder::default()
    }

    /// The latest report.
    pub fn report(&self) -> Report {
        self.report.borrow().clone()
    }

    /// A receiver that sees every change of the report.
    pub fn subscribe(&self) -> watch::Receiver<Report> {
        self.report.subscribe()
    }

    /// Reports not ready from now on, whatever the checks say: load balancers stop sending new work.
    pub fn start_draining(&self) {
        self.report.send_modify(|report| {
            report.draining = true;
            report.ready = false;
        });
    }

    /// Runs the checks now, then again every 100 ms while any check fails and every 2 s once all pass, until
    /// `cancel` fires.
    pub async fn monitor(self, cancel: CancellationToken) {
        loop {
            let checks = self.run_checks().await;
            self.publish(checks);
            let settled = {
                let report = self.report.borrow();
                report.ready && !report.degraded
            };
            if !crate::backoff::pause(if settled { READY_INTERVAL } else { NOT_READY_INTERVAL }, &cancel).await {
                return;
            }
        }
    }

    async fn run_checks(&self) -> BTreeMap<&'static str, Result<(), String>> {
        let rounds = self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.run)()).await {
                Ok(outcome) => outcome,
                Err(_) => Err("timed out".to_owned()),
            };
            (check.name, outcome)
        });
        futures_util::future::join_all(rounds).await.into_iter().collect()
    }

    fn publish(&self, checks: BTreeMap<&'static str, Result<(), String>>) {
        self.report.send_if_modified(|report| {
            if report.draining {
                return false;
            }
            let passed = |critical: bool| {
                self.checks
                    .iter()
                    .filter(|c| c.critical == critical)
                    .all(|c| checks.get(c.name).is_some_and(Result::is_ok))
            };
            let (ready, degraded) = (passed(true), !passed(false));
            if report.checks == checks && report.ready == ready {
                return false;
            }
            log_changes(&report.checks, &checks);
            for (name, outcome) in &checks {
                metrics::gauge!("dependency_up", "dependency" => *name).set(if outcome.is_ok() { 1.0 } else { 0.0 });
            }
            *report = Report { ready, degraded, checks, draining: false };
            true
        });
    }
}

fn log_changes(
    before: &BTreeMap<&'static str, Result<(), String>>,
    after: &BTreeMap<&'static str, Result<(), String>>,
) {
    for (name, outcome) in after {
        match (before.get(name).map(Result::is_ok), outcome) {
            (Some(true) | None, Err(error)) => tracing::warn!(check = name, %error, "dependency not ready"),
            (Some(false) | None, Ok(())) => tracing::info!(check = name, "dependency ready"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn readiness_follows_its_checks_and_draining_overrides_them() {
        let healthy = Arc::new(AtomicBool::new(false));
        let flag = healthy.clone();
        let readiness = Readiness::builder()
            .check("dependency", move || {
                let ok = flag.load(Ordering::SeqCst);
                async move { if ok { Ok(()) } else { Err("down".to_owned()) } }
            })
            .build();
        assert!(!readiness.report().ready, "not ready before the first round");

        readiness.publish(readiness.run_checks().await);
        assert!(!readiness.report().ready);
        assert_eq!(readiness.report().checks["dependency"], Err("down".to_owned()));

        healthy.store(true, Ordering::SeqCst);
        readiness.publish(readiness.run_checks().await);
        assert!(readiness.report().ready);
        assert!(!readiness.report().degraded);

        readiness.start_draining();
        readiness.publish(readiness.run_checks().await);
        assert!(!readiness.report().ready, "draining wins over passing checks");
    }

    #[tokio::test]
    async fn a_failing_informational_check_degrades_but_does_not_unready() {
        let readiness = Readiness::builder()
            .check("database", || async { Ok(()) })
            .inform("broker", || async { Err("not connected".to_owned()) })
            .build();

        readiness.publish(readiness.run_checks().await);

        let report = readiness.report();
        assert!(report.ready && report.degraded, "{report:?}");
        assert_eq!(report.checks["broker"], Err("not connected".to_owned()));
    }
}
