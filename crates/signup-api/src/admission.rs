//! Admission of signups. password refuses a signup at once when its signup hashing is saturated
//! (`RESOURCE_EXHAUSTED`); signup-api learns from those refusals how many signups password takes at a time and
//! refuses the excess itself, before reading the body, checking the password's strength or calling anyone: under
//! overload, a refused signup costs next to nothing anywhere.
//!
//! The limit on signups in flight (admitted and not yet answered by password) is learned the way TCP learns its
//! window: a refusal by password sets it to what password was holding then; every signup password takes raises it
//! by 1/limit, so it probes for room about once per `limit` signups and follows password when it scales. It starts
//! unlimited: nothing is refused here before password has refused something.

use std::sync::{Arc, Mutex, PoisonError};

/// The learned limit never exceeds this (it starts here: unlimited in practice).
const UNLIMITED: f64 = 1_000_000.0;

/// The admission state of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission(Arc<Mutex<Window>>);

#[derive(Debug)]
struct Window {
    in_flight: usize,
    limit: f64,
}

impl Default for Admission {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Window { in_flight: 0, limit: UNLIMITED })))
    }
}

impl Admission {
    /// A ticket for one signup, or `None` when as many are in flight as password was last seen to take.
    pub(crate) fn admit(&self) -> Option<Ticket> {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if window.in_flight as f64 >= window.limit {
            metrics::counter!("signups_shed_total").increment(1);
            return None;
        }
        window.in_flight += 1;
        Some(Ticket(self.clone()))
    }

    fn with(&self, change: impl FnOnce(&mut Window)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The limit now (for tests).
    #[cfg(test)]
    fn limit(&self) -> f64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).limit
    }
}

/// One admitted signup, until password has answered it (dropping the ticket).
#[derive(Debug)]
pub(crate) struct Ticket(Admission);

impl Ticket {
    /// password took the signup: there may be room for one more.
    pub(crate) fn taken(&self) {
        self.0.with(|w| w.limit = (w.limit + 1.0 / w.limit).min(UNLIMITED));
    }

    /// password refused the signup for capacity: it holds the others in flight, and no more.
    pub(crate) fn refused_for_capacity(&self) {
        self.0.with(|w| w.limit = (w.in_flight.saturating_sub(1) as f64).max(1.0));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.with(|w| w.in_flight = w.in_flight.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capacity_refusal_sets_the_limit_to_what_was_held_and_successes_probe_for_more() {
        let admission = Admission::default();
        let held: Vec<Ticket> = (0..6).filter_map(|_| admission.admit()).collect();
        let refused = admission.admit().expect("unlimited before any refusal");
        refused.refused_for_capacity();
        drop(refused);
        assert_eq!(admission.limit(), 6.0);
        assert!(admission.admit().is_none(), "a seventh signup is refused here, without calling password");

        held[0].taken();
        drop(held);
        assert!(admission.limit() > 6.0 && admission.limit() < 7.0, "{}", admission.limit());
        let again: Vec<Ticket> = (0..7).filter_map(|_| admission.admit()).collect();
        assert_eq!(again.len(), 7, "room again once password took one and the others finished");
    }
}
