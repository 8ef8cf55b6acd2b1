//! argon2id hashing on a fixed pool of dedicated threads, never on the async runtime. A hash holds
//! `ARGON2_MEMORY_KIB` of memory for tens of milliseconds, so the pool bounds both CPU and memory, and a short
//! queue in front of it turns overload into an immediate "try later" instead of a growing pile of requests.
//!
//! Two kinds of work share the threads: hashing a new signup's password, and checking a password (sign-in,
//! confirm; an owner's new password, after a reset or a change, is hashed with the checks). Each has its own queue
//! and its own admission limit, and a free thread takes from the two queues in turn, so a flood of one kind can
//! neither shut the other out nor take more than half the threads from it.
//!
//! Memory is allocated once: each thread owns one block buffer of `ARGON2_MEMORY_KIB` and reuses it for every
//! hash. Letting argon2 allocate per hash (64-byte aligned, zeroed) fragmented the allocator's heaps until the
//! process held hundreds of MiB; now it holds threads x `ARGON2_MEMORY_KIB` and stays there.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OnceCell, Semaphore, oneshot};

/// How long an owner's new password waits for a place in a full lane before the answer is "try later".
const OWNER_WAIT: Duration = Duration::from_secs(2);

/// Work for a hashing thread.
type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// The two kinds of hashing work, admitted and queued separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Hashing the password of a new signup attempt.
    Signup,
    /// Checking a password: signing in, confirming an email; and an owner's new password.
    Check,
}

impl Lane {
    fn label(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Check => "check",
        }
    }
}

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    /// Every thread is busy and this kind's queue is full.
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

/// Lowers the calling hashing thread's priority (nice about 10): hashing is the bulk of the machine's CPU and
/// nobody waits on one hash in particular, so the short work around it (answering, refusing, committing, in this
/// process or another on the same cores) runs first, and answers stay quick while every core hashes. Throughput
/// is unchanged: the cores still do nothing but hash when nothing else is runnable.
fn yield_to_short_work() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};
    let lower = ThreadPriorityValue::try_from(25u8).map(ThreadPriority::Crossplatform);
    if let Err(error) =
        lower.map_err(|e| e.to_string()).and_then(|p| set_current_thread_priority(p).map_err(|e| e.to_string()))
    {
        tracing::warn!(%error, "could not lower a hashing thread's priority; hashing competes with answering");
    }
}

/// The bounded argon2id hasher. Cloning shares the pool; the threads end when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Hasher {
    params: Params,
    pool: Arc<Pool>,
    /// Permits to be in the hasher at all, computing or waiting: threads plus queue, per lane.
    signups: Arc<Semaphore>,
    checks: Arc<Semaphore>,
    /// A hash of a random password, verified against when a user has none, so both cases cost the same.
    decoy: Arc<OnceCell<String>>,
}

impl Hasher {
    /// A hasher with `threads` concurrent hashes and room for `queue_limit` more of each kind to wait.
    pub(crate) fn new(params: Params, threads: usize, queue_limit: usize) -> Self {
        let shared = Arc::new(Shared::default());
        for i in 0..threads {
            let shared = shared.clone();
            let params = params.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                yield_to_short_work();
                shared.work(&mut Engine::new(params));
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a hashing thread");
            }
        }
        Self {
            params,
            pool: Arc::new(Pool(shared)),
            signups: Arc::new(Semaphore::new(threads + queue_limit)),
            checks: Arc::new(Semaphore::new(threads + queue_limit)),
            decoy: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes `password` into a PHC string with a fresh random salt.
    pub(crate) async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(Lane::Signup, None, move |engine| engine.hash(&password)).await?
    }

    /// Hashes the new password of an account whose owner proved the right to set it (a reset link used, the current
    /// password already checked), in the check lane, waiting up to [`OWNER_WAIT`] for a place rather than
    /// failing at once: a flood of signups or sign-ins must not make the owner try again.
    pub(crate) async fn hash_for_owner(&self, password: SecretString) -> Result<String, HashError> {
        self.run(Lane::Check, Some(OWNER_WAIT), move |engine| engine.hash(&password)).await?
    }

    /// Checks `password` against `stored`, or against a decoy of equal cost when there is no stored hash.
    pub(crate) async fn verify(&self, password: SecretString, stored: Option<String>) -> Result<Verified, HashError> {
        let has_credential = stored.is_some();
        let phc = match stored {
            Some(phc) => phc,
            None => self.decoy().await?,
        };
        let verified = self
            .run(Lane::Check, None, move |engine| {
                let parsed = PasswordHash::new(&phc).map_err(internal)?;
                let valid = engine.verify(&password, &parsed)?;
                let rehashed =
                    if valid && !uses(&parsed, &engine.params) { Some(engine.hash(&password)?) } else { None };
                Ok::<_, HashError>(Verified { valid, rehashed })
            })
            .await??;
        Ok(Verified { valid: verified.valid && has_credential, ..verified })
    }

    /// Computes the decoy hash in the background now, so the first unknown user does not pay for it.
    pub(crate) fn warm_up(&self) {
        let hasher = self.clone();
        tokio::spawn(async move {
            if let Err(error) = hasher.decoy().await {
                tracing::warn!(%error, "could not prepare the decoy hash; it will be made on first use");
            }
        });
    }

    async fn decoy(&self) -> Result<String, HashError> {
        let hasher = self.clone();
        let decoy = self
            .decoy
            .get_or_try_init(|| async move {
                let random: [u8; 32] = rand::random();
                let password = SecretString::from(format!("{random:?}"));
                hasher.run(Lane::Check, None, move |engine| engine.hash(&password)).await?
            })
            .await?;
        Ok(decoy.clone())
    }

    /// Runs `work` on a hashing thread in `lane`, waiting in its queue if needed; when the lane is full, fails at
    /// once, or once `patience` has passed without a place.
    async fn run<T, F>(&self, lane: Lane, patience: Option<Duration>, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&mut Engine) -> T + Send + 'static,
        T: Send + 'static,
    {
        let permits = match lane {
            Lane::Signup => self.signups.clone(),
            Lane::Check => self.checks.clone(),
        };
        let admitted = match patience {
            None => permits.try_acquire_owned().ok(),
            Some(patience) => tokio::time::timeout(patience, permits.acquire_owned()).await.ok().and_then(Result::ok),
        };
        let admitted = admitted.ok_or_else(|| {
            metrics::counter!("password_hashing_rejected_total", "kind" => lane.label()).increment(1);
            HashError::Saturated
        })?;
        let (reply, result) = oneshot::channel();
        let started = std::time::Instant::now();
        let in_progress = metrics::gauge!("password_hashing_in_progress", "kind" => lane.label());
        in_progress.increment(1.0);
        let job: Job = Box::new(move |engine| {
            let result = work(engine);
            // The slot is free once the work is done, before the caller hears of it: a client that moves on to
            // its next request at once must find it free.
            drop(admitted);
            in_progress.decrement(1.0);
            let _ = reply.send(result);
        });
        self.pool.0.push(lane, job)?;
        let result = result.await.map_err(|_| HashError::Internal("hashing thread failed".into()))?;
        metrics::histogram!("password_hash_duration_seconds", "kind" => lane.label())
            .record(started.elapsed().as_secs_f64());
        Ok(result)
    }
}

/// The queues the hashing threads take work from, and the signal that wakes them.
#[derive(Default)]
struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

#[derive(Default)]
struct Queues {
    signups: VecDeque<Job>,
    checks: VecDeque<Job>,
    /// Whose turn it is when both queues hold work.
    checks_next: bool,
    closed: bool,
}

impl Shared {
    fn push(&self, lane: Lane, job: Job) -> Result<(), HashError> {
        let mut queues = self.queues.lock().map_err(|_| HashError::Internal("hashing pool poisoned".into()))?;
        match lane {
            Lane::Signup => queues.signups.push_back(job),
            Lane::Check => queues.checks.push_back(job),
        }
        drop(queues);
        self.ready.notify_one();
        Ok(())
    }

    /// A hashing thread: takes jobs, the two lanes in turn, until the pool is dropped.
    fn work(&self, engine: &mut Engine) {
        loop {
            let Some(job) = self.next() else { return };
            job(engine);
        }
    }

    fn next(&self) -> Option<Job> {
        let mut queues = self.queues.lock().ok()?;
        loop {
            if queues.closed {
                return None;
            }
            let checks_first = queues.checks_next || queues.signups.is_empty();
            let job = if checks_first { queues.checks.pop_front() } else { queues.signups.pop_front() };
            let job = job.or_else(|| queues.signups.pop_front()).or_else(|| queues.checks.pop_front());
            if let Some(job) = job {
                queues.checks_next = !checks_first;
                return Some(job);
            }
            queues = self.ready.wait(queues).ok()?;
        }
    }
}

/// Owns the threads' work source: dropping the last hasher closes it and the threads end.
struct Pool(Arc<Shared>);

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut queues) = self.0.queues.lock() {
            queues.closed = true;
        }
        self.0.ready.notify_all();
    }
}

/// One hashing thread's argon2id instance and the memory it hashes in.
pub(crate) struct Engine {
    params: Params,
    argon2: Argon2<'static>,
    blocks: Vec<Block>,
}

impl Engine {
    fn new(params: Params) -> Self {
        let blocks = vec![Block::default(); params.block_count()];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        Self { params, argon2, blocks }
    }

    /// A PHC string for `password` with a fresh 16-byte random salt, hashed in this thread's memory.
    fn hash(&mut self, password: &SecretString) -> Result<String, HashError> {
        let salt = Salt::new(&rand::random::<[u8; Salt::RECOMMENDED_LENGTH]>()).map_err(internal)?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let pwd = password.expose_secret().as_bytes();
        self.argon2.hash_password_into_with_memory(pwd, &salt, &mut out, &mut self.blocks).map_err(internal)?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(internal)?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(internal)?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches `stored`, recomputed with the stored parameters and compared in constant time.
    fn verify(&mut self, password: &SecretString, stored: &PasswordHash) -> Result<bool, HashError> {
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return Err(HashError::Internal("stored hash has no salt or output".into()));
        };
        let algorithm = Algorithm::try_from(stored.algorithm.as_str()).map_err(internal)?;
        let version = stored.version.map(Version::try_from).transpose().map_err(internal)?.unwrap_or_default();
        let params = Params::try_from(stored).map_err(internal)?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let pwd = password.expose_secret().as_bytes();
        let computed = if params.block_count() == self.blocks.len() {
            argon2.hash_password_into_with_memory(pwd, salt, &mut out, &mut self.blocks)
        } else {
            // A hash made under other parameters (before a change): rare, so it may allocate.
            argon2.hash_password_into(pwd, salt, &mut out)
        };
        computed.map_err(internal)?;
        // `Output` compares in constant time.
        Ok(Output::new(&out).map_err(internal)? == *expected)
    }
}

fn internal(error: impl std::fmt::Display) -> HashError {
    HashError::Internal(error.to_string())
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("free_signup_slots", &self.signups.available_permits())
            .field("free_check_slots", &self.checks.available_permits())
            .finish()
    }
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
    async fn our_phc_strings_verify_with_the_reference_implementation() {
        use argon2::PasswordVerifier as _;
        let hasher = Hasher::new(cheap(), 1, 1);

        let phc = hasher.hash(SecretString::from("interoperable passphrase")).await.unwrap();

        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"interoperable passphrase", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"another passphrase", &parsed).is_err());
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
        crate::hasher::tests::wait_until(|| hasher.signups.available_permits() == 0).await;

        let refused = hasher.hash(SecretString::from("p")).await;

        assert!(matches!(refused, Err(HashError::Saturated)), "{refused:?}");
        for task in busy {
            assert!(task.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn a_flood_of_signups_leaves_room_for_a_check_and_the_reverse() {
        let hasher = Hasher::new(Params::new(65_536, 4, 1, None).unwrap(), 1, 2);
        let phc = hasher.hash(SecretString::from("a passphrase to check")).await.unwrap();
        let flood: Vec<_> = (0..3)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(SecretString::from("p")).await })
            })
            .collect();
        crate::hasher::tests::wait_until(|| hasher.signups.available_permits() == 0).await;

        let refused = hasher.hash(SecretString::from("p")).await;
        let checked = hasher.verify(SecretString::from("a passphrase to check"), Some(phc.clone())).await;

        assert!(matches!(refused, Err(HashError::Saturated)), "{refused:?}");
        assert!(checked.unwrap().valid, "a check is admitted and served while signups saturate their lane");
        for task in flood {
            assert!(task.await.unwrap().is_ok());
        }
    }

    #[test]
    fn a_free_thread_takes_the_two_lanes_in_turn() {
        let shared = Shared::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        for (lane, label) in [(Lane::Signup, "s1"), (Lane::Signup, "s2"), (Lane::Signup, "s3"), (Lane::Check, "c1")] {
            let order = order.clone();
            shared.push(lane, Box::new(move |_| order.lock().unwrap().push(label))).unwrap();
        }
        let mut engine = Engine::new(cheap());

        for _ in 0..4 {
            shared.next().unwrap()(&mut engine);
        }

        assert_eq!(*order.lock().unwrap(), ["s1", "c1", "s2", "s3"]);
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not reached");
            tokio::task::yield_now().await;
        }
    }
}
