//! The `users` and `idempotency_keys` tables. Every function that changes a user and announces it does both in
//! one transaction, through the outbox.

use chrono::{DateTime, Utc};
use platform::outbox::OutboxEvent;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Where a user is in the signup lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Created; password not yet stored; never announced.
    Registering,
    /// Announced; email not yet proven.
    PendingVerification,
    /// Email proven.
    Verified,
}

impl Status {
    fn parse(value: &str) -> Self {
        match value {
            "verified" => Self::Verified,
            "pending_verification" => Self::PendingVerification,
            _ => Self::Registering,
        }
    }
}

/// One row of `users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) locale: String,
    pub(crate) discoverable: bool,
    status: String,
    pub(crate) signup_id: Uuid,
    announced_signup_id: Option<Uuid>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) verified_at: Option<DateTime<Utc>>,
}

impl User {
    pub(crate) fn status(&self) -> Status {
        Status::parse(&self.status)
    }
}

/// What a new signup attempt brings.
#[derive(Debug, Clone)]
pub(crate) struct NewSignup {
    pub(crate) key_ttl: std::time::Duration,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) locale: String,
    pub(crate) discoverable: bool,
    pub(crate) idempotency: Option<(String, Vec<u8>)>,
}

/// The outcome of registering an attempt.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) user: User,
    pub(crate) signup_id: Uuid,
    pub(crate) created: bool,
    pub(crate) replayed: bool,
}

/// Why an operation on a user was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("idempotency key was used with a different request")]
    KeyReused,
    #[error("no such user")]
    NotFound,
    #[error("a newer signup for this email superseded this one")]
    Superseded,
    #[error("the user has not completed signup")]
    NotAnnounced,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The columns of [`User`], spliced into queries at compile time (sqlx accepts only literal SQL).
macro_rules! columns {
    () => {
        "id, email, display_name, locale, discoverable, status, signup_id, announced_signup_id, \
         created_at, updated_at, verified_at"
    };
}

// The queries, as literals (sqlx accepts only literal SQL) with the column list spliced in at compile time.
const UPSERT_USER: &str = concat!(
    "INSERT INTO users (id, email, display_name, locale, discoverable, signup_id) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (email) DO UPDATE SET signup_id = EXCLUDED.signup_id, display_name = EXCLUDED.display_name, \
         locale = EXCLUDED.locale, discoverable = EXCLUDED.discoverable, updated_at = now() \
     WHERE users.status <> 'verified' \
     RETURNING ",
    columns!(),
    ", (xmax = 0) AS created"
);
const ANNOUNCE_USER: &str = concat!(
    "UPDATE users SET status = 'pending_verification', announced_signup_id = signup_id, updated_at = now() \
     WHERE id = $1 RETURNING ",
    columns!()
);
const VERIFY_USER: &str = concat!(
    "UPDATE users SET status = 'verified', verified_at = $2, updated_at = now() WHERE id = $1 RETURNING ",
    columns!()
);
const LOCK_USER: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1 FOR UPDATE");
const USER_BY_ID: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
const USER_BY_EMAIL: &str = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");

/// Registers an attempt: claims the idempotency key first (a concurrent request with the same key waits for
/// this transaction), then creates the user or supersedes the pending attempt, in one transaction.
pub(crate) async fn register(pool: &PgPool, signup: NewSignup) -> Result<Registered, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some((key, fingerprint)) = &signup.idempotency
        && let Some(replay) = claim_key(&mut tx, key, fingerprint, signup.key_ttl).await?
    {
        return Ok(replay);
    }
    let signup_id = Uuid::now_v7();
    let upserted: Option<(User, bool)> = sqlx::query_as::<_, UserCreated>(UPSERT_USER)
        .bind(Uuid::now_v7())
        .bind(&signup.email)
        .bind(&signup.display_name)
        .bind(&signup.locale)
        .bind(signup.discoverable)
        .bind(signup_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| (row.user, row.created));
    let registered = match upserted {
        Some((user, created)) => Registered { signup_id: user.signup_id, user, created, replayed: false },
        // The email belongs to a verified user: nothing changes; the attempt gets an id of its own.
        None => {
            Registered { user: by_email(&mut *tx, &signup.email).await?, signup_id, created: false, replayed: false }
        }
    };
    if let Some((key, _)) = &signup.idempotency {
        sqlx::query("UPDATE idempotency_keys SET user_id = $2, signup_id = $3 WHERE key = $1")
            .bind(key)
            .bind(registered.user.id)
            .bind(registered.signup_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(registered)
}

#[derive(sqlx::FromRow)]
struct UserCreated {
    #[sqlx(flatten)]
    user: User,
    created: bool,
}

/// Claims `key` for this request, or returns the earlier request's answer if it had the same fingerprint.
async fn claim_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    fingerprint: &[u8],
    ttl: std::time::Duration,
) -> Result<Option<Registered>, StoreError> {
    // An expired key is a new key.
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND created_at < now() - make_interval(secs => $2)")
        .bind(key)
        .bind(ttl.as_secs_f64())
        .execute(&mut **tx)
        .await?;
    let claimed = sqlx::query("INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(key)
        .bind(fingerprint)
        .execute(&mut **tx)
        .await?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let (stored, user_id, signup_id, completed): (Vec<u8>, Option<Uuid>, Option<Uuid>, bool) =
        sqlx::query_as("SELECT fingerprint, user_id, signup_id, completed FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
    if stored != fingerprint {
        return Err(StoreError::KeyReused);
    }
    let (Some(user_id), Some(signup_id)) = (user_id, signup_id) else { return Err(StoreError::NotFound) };
    let user = by_id(&mut **tx, user_id).await?;
    Ok(Some(Registered { user, signup_id, created: false, replayed: completed }))
}

/// What completing a signup announces, built by the caller once it knows the user.
pub(crate) type Announce = dyn Fn(&User, bool) -> OutboxEvent + Send + Sync;

/// Completes an attempt in one transaction: a registering or pending user moves to pending and `announce`'s
/// event (with `existing = false`) is written; a verified user is unchanged and its event has
/// `existing = true`. Completing an already announced attempt, or an attempt whose idempotency key has
/// completed, writes nothing.
pub(crate) async fn complete(
    pool: &PgPool,
    user_id: Uuid,
    signup_id: Uuid,
    idempotency_key: Option<&str>,
    announce: &Announce,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let user = lock(&mut tx, user_id).await?;
    if let Some(key) = idempotency_key
        && key_completed(&mut tx, key).await?
    {
        return Ok(user);
    }
    let user = match user.status() {
        Status::Verified => {
            platform::outbox::enqueue(&mut tx, &announce(&user, true)).await?;
            user
        }
        _ if user.signup_id != signup_id => return Err(StoreError::Superseded),
        _ if user.announced_signup_id == Some(signup_id) => user,
        _ => {
            let user: User = sqlx::query_as(ANNOUNCE_USER).bind(user_id).fetch_one(&mut *tx).await?;
            platform::outbox::enqueue(&mut tx, &announce(&user, false)).await?;
            user
        }
    };
    if let Some(key) = idempotency_key {
        sqlx::query("UPDATE idempotency_keys SET completed = true WHERE key = $1").bind(key).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Marks a pending user verified and writes `announce`'s event in one transaction. A verified user is returned
/// as it is, with no second event.
pub(crate) async fn mark_verified(
    pool: &PgPool,
    user_id: Uuid,
    verified_at: DateTime<Utc>,
    announce: impl Fn(&User) -> OutboxEvent,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let user = lock(&mut tx, user_id).await?;
    let user = match user.status() {
        Status::Verified => user,
        Status::Registering => return Err(StoreError::NotAnnounced),
        Status::PendingVerification => {
            let user: User = sqlx::query_as(VERIFY_USER).bind(user_id).bind(verified_at).fetch_one(&mut *tx).await?;
            platform::outbox::enqueue(&mut tx, &announce(&user)).await?;
            user
        }
    };
    tx.commit().await?;
    Ok(user)
}

/// Whether the attempt holding idempotency key `key` has completed, locking the key until `tx` ends: two
/// concurrent requests with one key complete (and announce) once.
async fn key_completed(tx: &mut Transaction<'_, Postgres>, key: &str) -> Result<bool, StoreError> {
    let completed: Option<bool> =
        sqlx::query_scalar("SELECT completed FROM idempotency_keys WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(completed.unwrap_or(false))
}

/// Reads a user and locks its row until `tx` ends, so concurrent completions and verifications serialise.
async fn lock(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> Result<User, StoreError> {
    sqlx::query_as(LOCK_USER).bind(user_id).fetch_optional(&mut **tx).await?.ok_or(StoreError::NotFound)
}

/// Deletes idempotency keys older than `ttl`; returns how many.
pub(crate) async fn expire_keys(pool: &PgPool, ttl: std::time::Duration) -> sqlx::Result<u64> {
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
        .bind(ttl.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// One user by id.
pub(crate) async fn by_id<'e>(executor: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<User, StoreError> {
    sqlx::query_as(USER_BY_ID).bind(id).fetch_optional(executor).await?.ok_or(StoreError::NotFound)
}

/// One user by normalised email.
pub(crate) async fn by_email<'e>(executor: impl sqlx::PgExecutor<'e>, email: &str) -> Result<User, StoreError> {
    sqlx::query_as(USER_BY_EMAIL).bind(email).fetch_optional(executor).await?.ok_or(StoreError::NotFound)
}

/// The daily report's user figures over `[from, to)`.
pub(crate) async fn signup_stats(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<proto::user_metadata::v1::GetSignupStatsResponse> {
    let (signups, verified_of_signups, verifications, median): (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT \
           count(*) FILTER (WHERE created_at >= $1 AND created_at < $2 AND status <> 'registering'), \
           count(*) FILTER (WHERE created_at >= $1 AND created_at < $2 AND status = 'verified'), \
           count(*) FILTER (WHERE verified_at >= $1 AND verified_at < $2), \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM verified_at - created_at)::float8) \
             FILTER (WHERE verified_at >= $1 AND verified_at < $2) \
         FROM users WHERE (created_at >= $1 AND created_at < $2) OR (verified_at >= $1 AND verified_at < $2)",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(proto::user_metadata::v1::GetSignupStatsResponse {
        signups: count(signups),
        verified_of_signups: count(verified_of_signups),
        verifications: count(verifications),
        median_seconds_to_verify: median.unwrap_or(0.0),
    })
}
