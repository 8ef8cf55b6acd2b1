//! What this replica learned recently about session tokens, so a client's burst of requests costs one session
//! check, not one per request.
//!
//! A remembered session answers for at most the configured time-to-live (and never past the session's own
//! expiry). Whatever ends sessions through this replica (signing out, changing or resetting the password,
//! deleting the account) forgets them here at once; a session ended any other way (through another replica, or
//! by an administrator) still opens this replica's requests for at most the time-to-live. Sessions of unverified
//! accounts' signup attempts, which end when another attempt is verified, are never remembered. Every account
//! read still asks user-metadata, so a deleted account is refused whatever is remembered.
//!
//! A check that was already asking the password service when this replica forgot sessions may have been answered
//! before they ended: its answer is not remembered. Every check starts from the count of forgettings so far
//! ([`SessionCache::check_begins`]), and an answer is remembered only if no forgetting came since, decided under the
//! lock that forgetting takes. Forgetting is rare (signing out, a password changed), so a check that loses that race
//! costs one more lookup, never a revoked session.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use moka::sync::Cache;
use sha2::{Digest as _, Sha256};

/// The cache's key: a token's SHA-256, so no live token stays in memory after its request.
type TokenHash = [u8; 32];

#[derive(Debug, Clone)]
struct Remembered {
    user_id: String,
    /// The session's own end, if sooner than the time-to-live.
    until: Instant,
}

/// How many times sessions were forgotten, and the lock that orders forgetting and remembering.
type Forgettings = Arc<Mutex<u64>>;

/// Recently checked sessions, bounded in number and age, and their [`Forgettings`]; `None` inside when the
/// time-to-live is zero.
#[derive(Debug, Clone)]
pub(crate) struct SessionCache(Option<(Cache<TokenHash, Remembered>, Forgettings)>);

/// When a session check began, in forgettings: see the module's documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckBegan(u64);

impl SessionCache {
    /// Remembers up to `capacity` sessions for `ttl` each; a zero `ttl` remembers nothing.
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        let build = || {
            let cache = Cache::builder().max_capacity(capacity).time_to_live(ttl).support_invalidation_closures();
            (cache.build(), Arc::new(Mutex::new(0)))
        };
        Self((!ttl.is_zero()).then(build))
    }

    /// Marks the start of a check whose answer may be remembered.
    pub(crate) fn check_begins(&self) -> CheckBegan {
        CheckBegan(self.0.as_ref().and_then(|(_, forgotten)| forgotten.lock().ok().map(|n| *n)).unwrap_or(u64::MAX))
    }

    /// The account of the session `token` opens, if this replica checked it within the time-to-live.
    pub(crate) fn user_id(&self, token: &str) -> Option<String> {
        let (cache, _) = self.0.as_ref()?;
        let key = key(token);
        let remembered = cache.get(&key)?;
        if remembered.until <= Instant::now() {
            cache.invalidate(&key);
            return None;
        }
        Some(remembered.user_id)
    }

    /// Remembers that `token` opens `user_id`'s session, which lasts at most `lasts` longer, as a check that
    /// `began` found it, unless sessions were forgotten since.
    pub(crate) fn remember(&self, began: CheckBegan, token: &str, user_id: &str, lasts: Duration) {
        let Some((cache, forgotten)) = &self.0 else { return };
        let Ok(forgotten) = forgotten.lock() else { return };
        if *forgotten == began.0 {
            let remembered = Remembered { user_id: user_id.to_owned(), until: Instant::now() + lasts };
            cache.insert(key(token), remembered);
        }
    }

    /// Forgets the session `token` opens.
    pub(crate) fn forget(&self, token: &str) {
        self.forgetting(|cache| cache.invalidate(&key(token)));
    }

    /// Forgets every session of `user_id`.
    pub(crate) fn forget_account(&self, user_id: &str) {
        let user_id = user_id.to_owned();
        self.forgetting(move |cache| {
            if cache.invalidate_entries_if(move |_, remembered| remembered.user_id == user_id).is_err() {
                // Only a cache built without invalidation closures refuses; forget everything rather than too little.
                cache.invalidate_all();
            }
        });
    }

    /// Runs `forget` on the cache under the lock that counts forgettings, counting one more.
    fn forgetting(&self, forget: impl FnOnce(&Cache<TokenHash, Remembered>)) {
        let Some((cache, forgotten)) = &self.0 else { return };
        // A poisoned lock means a panic elsewhere while holding it; forgetting must still happen, and the count
        // must still move, or an answer from before would be remembered.
        let mut forgotten = forgotten.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *forgotten = forgotten.wrapping_add(1);
        forget(cache);
    }
}

fn key(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const OTHER: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn a_session_is_remembered_until_forgotten_alone_or_with_its_account() {
        let cache = SessionCache::new(Duration::from_secs(60), 100);
        cache.remember(cache.check_begins(), TOKEN, "ada", Duration::from_secs(60));
        cache.remember(cache.check_begins(), OTHER, "ada", Duration::from_secs(60));
        assert_eq!(cache.user_id(TOKEN).as_deref(), Some("ada"));
        cache.forget(TOKEN);
        assert_eq!(cache.user_id(TOKEN), None);
        assert_eq!(cache.user_id(OTHER).as_deref(), Some("ada"));
        cache.forget_account("ada");
        assert_eq!(cache.user_id(OTHER), None);
    }

    #[test]
    fn nothing_outlives_the_session_or_a_zero_time_to_live() {
        let cache = SessionCache::new(Duration::from_secs(60), 100);
        cache.remember(cache.check_begins(), TOKEN, "ada", Duration::ZERO);
        assert_eq!(cache.user_id(TOKEN), None);
        let off = SessionCache::new(Duration::ZERO, 100);
        off.remember(off.check_begins(), TOKEN, "ada", Duration::from_secs(60));
        assert_eq!(off.user_id(TOKEN), None);
    }

    /// Attack (a race): a request authenticated by a check that was in flight while the account's sessions ended
    /// (a password change, a sign-out) put the ended session back into the cache, where it opened requests for up
    /// to the time-to-live on the very replica that promised to forget it.
    #[test]
    fn a_check_in_flight_while_sessions_are_forgotten_is_not_remembered() {
        let cache = SessionCache::new(Duration::from_secs(60), 100);
        let began = cache.check_begins();
        cache.forget_account("ada");
        cache.remember(began, TOKEN, "ada", Duration::from_secs(60));
        assert_eq!(cache.user_id(TOKEN), None, "an answer from before the forgetting was remembered");
        let began = cache.check_begins();
        cache.forget(OTHER);
        cache.remember(began, TOKEN, "ada", Duration::from_secs(60));
        assert_eq!(cache.user_id(TOKEN), None);
        cache.remember(cache.check_begins(), TOKEN, "ada", Duration::from_secs(60));
        assert_eq!(cache.user_id(TOKEN).as_deref(), Some("ada"), "a check begun after is remembered");
    }
}
