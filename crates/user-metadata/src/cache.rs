//! Users as `GetUser` last read them, remembered exactly as long as nothing changed them, so a signed-in reader
//! costs no query. Every change to a `users` row notifies `users_changed` at commit (a trigger, whoever made the
//! change: this replica, another, a consumer, the `archive` command), and a listener forgets that user. This
//! replica's own writes forget at once as well, so it reads its writes; another replica serves a change once its
//! listener has heard of it (milliseconds). While the listener is not connected nothing is remembered, and
//! whatever was remembered before it (re)connected is forgotten: a notification it missed cannot leave a user stale.
//! A connection that dies without a word (a failover that resets nothing) is not noticed until the operating system
//! gives up on it, so nothing is remembered longer than [`REMEMBER_AT_MOST`] either.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use moka::sync::Cache;
use platform::{backoff::Backoff, shutdown::CancellationToken};
use sqlx::{PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::store::{self, StoreError, User};

/// The channel the `users_changed` trigger notifies, with the changed user's id.
const CHANNEL: &str = "users_changed";

/// How the listener reconnects after losing its connection.
const RECONNECT: Backoff = Backoff::jittered(std::time::Duration::from_millis(100), std::time::Duration::from_secs(5));

/// How long a user is remembered at most, whatever the listener heard: the bound on how stale a silently lost
/// listener can leave one.
const REMEMBER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

/// The users `GetUser` read, while a listener keeps them true. Cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct UserCache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `None` when `USER_CACHE_CAPACITY` is 0.
    users: Option<Cache<Uuid, User>>,
    /// The listener is connected: what is remembered is true.
    live: AtomicBool,
    /// Counts forgettings, so a read that raced a change does not remember what it read.
    epoch: AtomicU64,
}

impl UserCache {
    /// Remembers up to `capacity` users (none when 0) once [`UserCache::listen`] runs.
    pub(crate) fn new(capacity: u64) -> Self {
        let users =
            (capacity > 0).then(|| Cache::builder().max_capacity(capacity).time_to_live(REMEMBER_AT_MOST).build());
        Self(Arc::new(Inner { users, live: AtomicBool::new(false), epoch: AtomicU64::new(0) }))
    }

    /// The user `id`, remembered or read from `pool`.
    pub(crate) async fn user(&self, pool: &PgPool, id: Uuid) -> Result<User, StoreError> {
        let Some(users) = self.0.users.as_ref().filter(|_| self.live()) else {
            return store::by_id(pool, id).await;
        };
        if let Some(user) = users.get(&id) {
            metrics::counter!("user_reads_total", "source" => "remembered").increment(1);
            return Ok(user);
        }
        metrics::counter!("user_reads_total", "source" => "database").increment(1);
        let epoch = self.0.epoch.load(Ordering::Acquire);
        let user = store::by_id(pool, id).await?;
        // Nothing was forgotten while the query ran: no change committed since it began can be missing from it. A
        // forgetting between that check and the insert would leave the insert behind it, so the check is made again
        // after the insert, which is undone if anything was forgotten meanwhile.
        let unchanged = || self.live() && self.0.epoch.load(Ordering::Acquire) == epoch;
        if unchanged() {
            users.insert(id, user.clone());
            if !unchanged() {
                users.invalidate(&id);
            }
        }
        Ok(user)
    }

    /// Forgets the user `id` (this replica changed it).
    pub(crate) fn forget(&self, id: Uuid) {
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(users) = &self.0.users {
            users.invalidate(&id);
        }
    }

    fn forget_all(&self) {
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(users) = &self.0.users {
            users.invalidate_all();
        }
    }

    fn live(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }

    /// Follows `users_changed` until `cancel` fires, reconnecting after a lost connection.
    pub(crate) async fn listen(self, pool: PgPool, cancel: CancellationToken) {
        if self.0.users.is_none() {
            return;
        }
        RECONNECT.restart("user cache listener", &cancel, || self.follow(&pool, &cancel)).await;
    }

    /// One connection's worth of notifications: `Ok` when cancelled, `Err` when the connection failed.
    async fn follow(&self, pool: &PgPool, cancel: &CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        self.forget_all();
        self.0.live.store(true, Ordering::Release);
        let ended = loop {
            let notification = tokio::select! {
                notification = listener.try_recv() => notification,
                () = cancel.cancelled() => break Ok(()),
            };
            match notification {
                Ok(Some(notification)) => match Uuid::parse_str(notification.payload()) {
                    Ok(id) => self.forget(id),
                    Err(_) => self.forget_all(),
                },
                Ok(None) => break Err(anyhow::anyhow!("the connection to the database was lost")),
                Err(error) => break Err(error.into()),
            }
        };
        self.0.live.store(false, Ordering::Release);
        self.forget_all();
        ended
    }
}
