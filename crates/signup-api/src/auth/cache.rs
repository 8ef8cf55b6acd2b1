//! What this replica learned recently about session tokens, so a client's burst of requests costs one session
//! check, not one per request.
//!
//! A remembered session answers for at most the configured time-to-live (and never past the session's own
//! expiry). Whatever ends sessions through this replica (signing out, changing or resetting the password,
//! deleting the account) forgets them here at once; a session ended any other way (through another replica, or
//! by an administrator) still opens this replica's requests for at most the time-to-live. Sessions of unverified
//! accounts' signup attempts, which end when another attempt is verified, are never remembered. Every account
//! read still asks user-metadata, so a deleted account is refused whatever is remembered.

use std::time::{Duration, Instant};

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

/// Recently checked sessions, bounded in number and age; `None` inside when the time-to-live is zero.
#[derive(Debug, Clone)]
pub(crate) struct SessionCache(Option<Cache<TokenHash, Remembered>>);

impl SessionCache {
    /// Remembers up to `capacity` sessions for `ttl` each; a zero `ttl` remembers nothing.
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        let build =
            || Cache::builder().max_capacity(capacity).time_to_live(ttl).support_invalidation_closures().build();
        Self((!ttl.is_zero()).then(build))
    }

    /// The account of the session `token` opens, if this replica checked it within the time-to-live.
    pub(crate) fn user_id(&self, token: &str) -> Option<String> {
        let cache = self.0.as_ref()?;
        let key = key(token);
        let remembered = cache.get(&key)?;
        if remembered.until <= Instant::now() {
            cache.invalidate(&key);
            return None;
        }
        Some(remembered.user_id)
    }

    /// Remembers that `token` opens `user_id`'s session, which lasts at most `lasts` longer.
    pub(crate) fn remember(&self, token: &str, user_id: &str, lasts: Duration) {
        if let Some(cache) = &self.0 {
            let remembered = Remembered { user_id: user_id.to_owned(), until: Instant::now() + lasts };
            cache.insert(key(token), remembered);
        }
    }

    /// Forgets the session `token` opens.
    pub(crate) fn forget(&self, token: &str) {
        if let Some(cache) = &self.0 {
            cache.invalidate(&key(token));
        }
    }

    /// Forgets every session of `user_id`.
    pub(crate) fn forget_account(&self, user_id: &str) {
        if let Some(cache) = &self.0 {
            let user_id = user_id.to_owned();
            if cache.invalidate_entries_if(move |_, remembered| remembered.user_id == user_id).is_err() {
                // Only a cache built without invalidation closures refuses; forget everything rather than too little.
                cache.invalidate_all();
            }
        }
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
        cache.remember(TOKEN, "ada", Duration::from_secs(60));
        cache.remember(OTHER, "ada", Duration::from_secs(60));
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
        cache.remember(TOKEN, "ada", Duration::ZERO);
        assert_eq!(cache.user_id(TOKEN), None);
        let off = SessionCache::new(Duration::ZERO, 100);
        off.remember(TOKEN, "ada", Duration::from_secs(60));
        assert_eq!(off.user_id(TOKEN), None);
    }
}
