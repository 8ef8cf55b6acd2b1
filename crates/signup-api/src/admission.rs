//! Admission of signups. password refuses a signup at once when its signup hashing is saturated
//! (`RESOURCE_EXHAUSTED`); signup-api learns from those refusals how many signups password takes at a time and
//! refuses the excess itself, before reading the body, checking the password's strength or calling anyone: under
//! overload, a refused signup costs next to nothing anywhere.
//!
//! The limit on signups in flight (admitted and not yet answered by password) is learned the way TCP learns its
//! window: a refusal by password sets it to what password was holding then; every signup password takes raises it
//! by 1/limit, so it probes for room about once per `limit` signups and follows password when it scales. It starts
//! unlimited: nothing is refused here before password has refused something.
//!
//! A refusal while this process held nothing else means password is full with work it did not get from here
//! (other replicas' signups, or ones whose callers gave up): then the window is closed, and one signup per
//! [`PROBE_INTERVAL`] goes through to find out when password has room again (as TCP probes a zero window), so the
//! others are refused here rather than one after another by password. A probe that never reaches password (its body
//! is invalid, its client goes away) is no probe: the next signup may probe at once.
//!
//! Whether there is room is asked before the body is read ([`Admission::has_room`]), so a refused signup costs
//! nothing; the place is taken only once the body has arrived ([`Admission::admit`]), so a client that trickles its
//! body holds no place while it does.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The learned limit never exceeds this (it starts here: unlimited in practice).
const UNLIMITED: f64 = 1_000_000.0;

/// With the window closed, how often one signup goes through to password to probe for room.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The admission state of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission(Arc<Mutex<Window>>);

#[derive(Debug)]
struct Window {
    in_flight: usize,
    limit: f64,
    /// While the window is closed: when the next probe may go through.
    next_probe: Option<Instant>,
}

impl Default for Admission {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Window { in_flight: 0, limit: UNLIMITED, next_probe: None })))
    }
}

impl Admission {
    /// Whether a signup would be admitted now; counts it as shed when not. Takes nothing.
    pub(crate) fn has_room(&self) -> bool {
        let window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        window.has_room(Instant::now()) || shed()
    }

    /// A ticket for one signup, or `None` when as many are in flight as password was last seen to take, or the
    /// window is closed and this is not the moment for a probe.
    pub(crate) fn admit(&self) -> Option<Ticket> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<Ticket> {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !window.has_room(now) {
            shed();
            return None;
        }
        if window.next_probe.is_some() {
            window.next_probe = Some(now + PROBE_INTERVAL);
        }
        window.in_flight += 1;
        Some(Ticket { admission: self.clone(), asked: false })
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

impl Window {
    /// Fewer in flight than the limit, and, with the window closed, a probe due.
    fn has_room(&self, now: Instant) -> bool {
        (self.in_flight as f64) < self.limit && self.next_probe.is_none_or(|at| now >= at)
    }
}

/// Counts a signup refused here; false, for `||`.
fn shed() -> bool {
    metrics::counter!("signups_shed_total").increment(1);
    false
}

/// One admitted signup, until password has answered it (dropping the ticket).
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Admission,
    /// Whether the signup went to password. With the window closed, one that never did (its body was invalid, its
    /// client went away) was no probe, and the next signup may probe at once: otherwise a stream of invalid
    /// signups, one per interval, would take every probe and keep the window closed after password had room.
    asked: bool,
}

impl Ticket {
    /// The signup goes to password now.
    pub(crate) fn asking(&mut self) {
        self.asked = true;
    }

    /// password took the signup: there may be room for one more (and the window is open).
    pub(crate) fn taken(&self) {
        self.admission.with(|w| {
            w.limit = (w.limit + 1.0 / w.limit).min(UNLIMITED);
            w.next_probe = None;
        });
    }

    /// password refused the signup for capacity: it holds the others in flight, and no more. Holding none, the
    /// window closes until a probe is taken.
    pub(crate) fn refused_for_capacity(&self) {
        self.refused_for_capacity_at(Instant::now());
    }

    fn refused_for_capacity_at(&self, now: Instant) {
        self.admission.with(|w| {
            let held = w.in_flight.saturating_sub(1);
            w.limit = (held as f64).max(1.0);
            if held == 0 {
                w.next_probe = Some(now + PROBE_INTERVAL);
            }
        });
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let asked = self.asked;
        self.admission.with(|w| {
            w.in_flight = w.in_flight.saturating_sub(1);
            if !asked && let Some(at) = w.next_probe.as_mut() {
                *at = (*at).min(Instant::now());
            }
        });
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

    /// Admission after password refused a probe while nothing else was in flight: the window closed at `start`.
    fn closed() -> (Admission, Instant) {
        let admission = Admission::default();
        let start = Instant::now();
        let mut probe = admission.admit_at(start).expect("unlimited before any refusal");
        probe.asking();
        probe.refused_for_capacity_at(start);
        drop(probe);
        (admission, start)
    }

    #[test]
    fn refused_while_holding_nothing_one_probe_per_interval_goes_through_until_password_takes_one() {
        let (admission, start) = closed();
        let soon = start + PROBE_INTERVAL / 2;
        assert!(admission.admit_at(soon).is_none(), "password is full: refused here until the next probe");

        let later = start + PROBE_INTERVAL;
        let mut probe = admission.admit_at(later).expect("one probe per interval");
        probe.asking();
        drop(probe);
        assert!(admission.admit_at(later).is_none(), "only one probe per interval, even once it has finished");

        let mut probe = admission.admit_at(later + PROBE_INTERVAL).expect("the next interval's probe");
        probe.asking();
        probe.taken();
        drop(probe);
        let open: Vec<Ticket> = (0..2).filter_map(|_| admission.admit_at(later + PROBE_INTERVAL)).collect();
        assert_eq!(open.len(), 2, "the window opens once password takes a probe");
    }

    #[test]
    fn a_probe_that_never_went_to_password_lets_the_next_signup_probe_at_once() {
        let (admission, start) = closed();

        let later = start + PROBE_INTERVAL;
        let invalid = admission.admit_at(later).expect("the interval's probe");
        drop(invalid);
        let mut probe = admission.admit_at(later).expect("an invalid signup took the probe");
        probe.asking();
        drop(probe);
        assert!(admission.admit_at(later).is_none(), "a probe that asked password is the interval's only one");
    }
}
