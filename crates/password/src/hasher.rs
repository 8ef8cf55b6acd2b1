//! argon2id hashing on a bounded pool of blocking threads, never on the async runtime. A hash holds
//! `ARGON2_MEMORY_KIB` of memory for tens of milliseconds, so the pool bounds both CPU and memory, and a short
//! queue in front of it turns overload into an immediate "try later" instead of a growing pile of requests.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OnceCell, Semaphore};

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    /// Every thread is busy and the queue is full.
    #[error("password hashing is at capacity")]
    Saturated,
    /// The stored hash is not a PHC string we can read, or the hasher failed.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The outcome of checking a password.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// The password matches the stored hash.
    pub(crate) valid: bool,
    /// A fresh hash under the current parameters, when the stored one used other parameters.
    pub(crate) rehashed: Option<String>,
}

/// The bounded argon2id hasher. Cloning shares the pool.
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    params: Params,
    /// Permits to compute a hash now: the pool's threads.
    running: Arc<Semaphore>,
    /// Permits to be in the hasher at all, computing or waiting: threads plus queue.
    admitted: Arc<Semaphore>,
    /// A hash of a random password, verified against when a user has none, so both cases cost the same.
    decoy: Arc<OnceCell<String>>,
}

impl Hasher {
    /// A hasher with `threads` concurrent hashes and room for `queue_limit` more to wait.
    pub(crate) fn new(params: Params, threads: usize, queue_limit: usize) -> Self {
        Self {
            params,
            running: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(Semaphore::new(threads + queue_limit)),
            decoy: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes `password` into a PHC string with a fresh random salt.
    pub(crate) async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(move |argon2| hash_with(argon2, &password)).await?
    }

    /// Checks `password` against `stored`, or against a decoy of equal cost when there is no stored hash.
    pub(crate) async fn verify(&self, password: SecretString, stored: Option<String>) -> Result<Verified, HashError> {
        let has_credential = stored.is_some();
        let phc = match stored {
            Some(phc) => phc,
            None => self.decoy().await?,
        };
        let params = self.params.clone();
        let verified = self
            .run(move |argon2| {
                let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Internal(e.to_string()))?;
                let valid = argon2.verify_password(password.expose_secret().as_bytes(), &parsed).is_ok();
                let rehashed =
                    if valid && !uses(&parsed, &params) { Some(hash_with(argon2, &password)?) } else { None };
                Ok::<_, HashError>(Verified { valid, rehashed })
            })
            .await??;
        Ok(Verified { valid: verified.valid && has_credential, ..verified })
    }

    async fn decoy(&self) -> Result<String, HashError> {
        let hasher = self.clone();
        let decoy = self
            .decoy
            .get_or_try_init(|| async move {
                let random: [u8; 32] = rand::random();
                hasher.hash(SecretString::from(format!("{random:?}"))).await
            })
            .await?;
        Ok(decoy.clone())
    }

    /// Runs `work` on a blocking thread once a pool permit is free; fails at once when the queue is full.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&Argon2<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("password_hashing_rejected_total").increment(1);
            HashError::Saturated
        })?;
        let running = self.running.clone().acquire_owned().await.map_err(|e| HashError::Internal(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let result = work(&argon2);
            drop((running, admitted));
            result
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?;
        metrics::histogram!("password_hash_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(result)
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &SecretString) -> Result<String, HashError> {
    argon2
        .hash_password(password.expose_secret().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}

/// Whether `hash` was made as argon2id with exactly `params`.
fn uses(hash: &PasswordHash, params: &Params) -> bool {
    let same_algorithm = hash.algorithm.as_str() == Algorithm::Argon2id.ident().as_str();
    match Params::try_from(hash) {
        Ok(stored) => {
            same_algorithm
                && stored.m_cost() == params.m_cost()
                && stored.t_cost() == params.t_cost()
                && stored.p_cost() == params.p_cost()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(1024, 1, 1, None).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = Hasher::new(cheap(), 2, 2);
        let phc = hasher.hash(SecretString::from("correct horse battery staple")).await.unwrap();

        let right = hasher.verify(SecretString::from("correct horse battery staple"), Some(phc.clone())).await.unwrap();
        let wrong = hasher.verify(SecretString::from("incorrect horse"), Some(phc.clone())).await.unwrap();

        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(right.valid && right.rehashed.is_none());
        assert!(!wrong.valid && wrong.rehashed.is_none());
    }

    #[tokio::test]
    async fn a_user_without_a_credential_never_verifies() {
        let hasher = Hasher::new(cheap(), 1, 1);

        let verified = hasher.verify(SecretString::from("anything at all"), None).await.unwrap();

        assert!(!verified.valid);
    }

    #[tokio::test]
    async fn a_hash_made_with_other_parameters_is_rehashed_on_successful_verify() {
        let old = Hasher::new(Params::new(512, 1, 1, None).unwrap(), 1, 1);
        let phc = old.hash(SecretString::from("a long enough passphrase")).await.unwrap();
        let current = Hasher::new(cheap(), 1, 1);

        let verified = current.verify(SecretString::from("a long enough passphrase"), Some(phc)).await.unwrap();

        let rehashed = verified.rehashed.expect("a rehash");
        assert!(verified.valid);
        assert!(rehashed.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{rehashed}");
    }

    #[tokio::test]
    async fn beyond_threads_and_queue_requests_are_refused_at_once() {
        let hasher = Hasher::new(Params::new(65_536, 4, 1, None).unwrap(), 1, 1);
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(SecretString::from("p")).await })
            })
            .collect();
        // Both admitted calls hold their permits from the moment they are spawned and start running.
        crate::hasher::tests::wait_until(|| hasher.admitted.available_permits() == 0).await;

        let refused = hasher.hash(SecretString::from("p")).await;

        assert!(matches!(refused, Err(HashError::Saturated)), "{refused:?}");
        for task in busy {
            assert!(task.await.unwrap().is_ok());
        }
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not reached");
            tokio::task::yield_now().await;
        }
    }
}
