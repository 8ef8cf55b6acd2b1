//! The `users`, `signup_attempts` and `idempotency_keys` tables. Every function that changes a user and
//! announces it does both in one transaction, through the outbox.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::outbox::OutboxEvent;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Where a user is in the signup lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Left by releases that registered and announced a signup in two steps; never written now.
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
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) locale: String,
    pub(crate) discoverable: bool,
    status: String,
    /// The newest attempt of a pending user, or the attempt that verified the account.
    pub(crate) signup_id: Uuid,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) verified_at: Option<DateTime<Utc>>,
}

platform::from_row!(User {
    id,
    email,
    display_name,
    locale,
    discoverable,
    status,
    signup_id,
    created_at,
    updated_at,
    verified_at
});

impl User {
    pub(crate) fn status(&self) -> Status {
        Status::parse(&self.status)
    }
}

/// What one signup attempt brings, as the user chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) display_name: String,
    pub(crate) locale: String,
    pub(crate) discoverable: bool,
}

platform::from_row!(Profile { display_name, locale, discoverable });

/// How many attempts a pending account may have at once: beyond `limit` within `window`, new ones are dropped.
/// Earlier attempts are never pushed out, so nobody signing up after the owner can void the owner's link.
#[derive(Debug, Clone, Copy)]
pub struct AttemptLimit {
    /// Live attempts a pending account may have.
    pub limit: i64,
    /// Of which one client's (a known one: attempts from an unknown client count only towards `limit`).
    pub per_client: i64,
    /// How long an attempt counts as live.
    pub window: Duration,
}

/// A new signup attempt.
#[derive(Debug, Clone)]
pub(crate) struct NewSignup {
    pub(crate) email: String,
    pub(crate) signup_id: Uuid,
    pub(crate) profile: Profile,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) key_ttl: Duration,
    pub(crate) attempts: AttemptLimit,
    /// The requesting client's keyed hash, or empty.
    pub(crate) client_hash: Vec<u8>,
}

/// A client's `Idempotency-Key` and the keyed fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub(crate) struct Idempotency {
    pub(crate) key: String,
    pub(crate) fingerprint: Vec<u8>,
}

/// What registering an attempt did.
#[derive(Debug, Clone)]
pub(crate) enum Registered {
    /// The attempt is recorded and announced (`existing` = the account was verified already: nothing changed but
    /// the announcement of the attempt).
    Announced { user: User, existing: bool },
    /// The account has as many live attempts as it may: nothing was written.
    Dropped { user_id: Uuid },
    /// The idempotency key was used before for the same request: nothing was written. `signup_id` is the first
    /// request's attempt (`None` for a key stored before keys kept it).
    Replayed { user_id: Uuid, signup_id: Option<Uuid> },
}

/// Why an operation on a user was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("idempotency key was used with another email")]
    KeyUsedForOtherEmail,
    #[error("idempotency key was used with a different request")]
    KeyReused,
    #[error("no such user")]
    NotFound,
    #[error("the account has no such signup attempt")]
    UnknownAttempt,
    #[error("another signup attempt verified this account")]
    VerifiedByAnotherAttempt,
    #[error("the account's email is not verified")]
    NotVerified,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The columns of [`User`], spliced into queries at compile time (sqlx accepts only literal SQL).
macro_rules! columns {
    () => {
        "id, email, display_name, locale, discoverable, status, signup_id, created_at, updated_at, verified_at"
    };
}

// The queries, as literals with the column list spliced in at compile time.
/// Creates the user, or locks the one with the email. A new user is registered whole in this statement: its first
/// attempt, its `UserSignedUp` (`$8`..`$12`) and the idempotency key `$13`, if any, written with it.
const LOCK_OR_CREATE_USER: &str = concat!(
    "WITH u AS ( \
       INSERT INTO users (id, email, display_name, locale, discoverable, signup_id, status) \
       VALUES ($1, $2, $3, $4, $5, $6, 'pending_verification') \
       ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email \
       RETURNING ",
    columns!(),
    ", (xmax = 0) AS created), \
     first_attempt AS ( \
       INSERT INTO signup_attempts (signup_id, user_id, display_name, locale, discoverable, client_hash) \
       SELECT signup_id, id, display_name, locale, discoverable, $7 FROM u WHERE created), \
     announced AS (",
    platform::outbox_insert!(),
    " SELECT $8, $9, $10, $11, $12, id FROM u WHERE created), \
     keyed AS ( \
       UPDATE idempotency_keys k SET user_id = u.id, signup_id = u.signup_id FROM u WHERE k.key = $13 AND u.created) \
     SELECT * FROM u"
);
const ADD_ATTEMPT_TO_USER: &str = concat!(
    "UPDATE users SET signup_id = $2, display_name = $3, locale = $4, discoverable = $5, \
       status = 'pending_verification', updated_at = now() \
     WHERE id = $1 RETURNING ",
    columns!()
);
const VERIFY_USER: &str = concat!(
    "UPDATE users SET status = 'verified', verified_at = $2, signup_id = $3, display_name = $4, locale = $5, \
       discoverable = $6, updated_at = now() \
     WHERE id = $1 RETURNING ",
    columns!()
);
const SET_DISCOVERABLE: &str =
    concat!("UPDATE users SET discoverable = $2, updated_at = now() WHERE id = $1 RETURNING ", columns!());
const LOCK_USER: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1 FOR UPDATE");
const USER_BY_ID: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
const USER_BY_EMAIL: &str = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");

/// What an attempt announces, built by the caller once it knows the user: `UserSignedUp`, or
/// `SignupAttemptedForExistingAccount` when `existing`.
pub(crate) type Announce<'a> = dyn Fn(&User, &Profile, bool) -> OutboxEvent + Send + Sync + 'a;

/// Registers and announces one attempt in one transaction (see the `RegisterSignup` contract). The idempotency
/// key is claimed first, so a concurrent request with the same key waits for this transaction. A new account is
/// one statement in it, a verified one's announcement two (its event names the account): the same round trips but
/// one, whether an account exists or not. (Without a key the new account's statement could be the transaction on
/// its own, two round trips less, but then a verified address would answer measurably slower than a new one.)
pub(crate) async fn register(
    pool: &PgPool,
    signup: &NewSignup,
    announce: &Announce<'_>,
) -> Result<Registered, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(idempotency) = &signup.idempotency
        && let Some((user_id, signup_id)) = claim_key(&mut tx, idempotency, &signup.email, signup.key_ttl).await?
    {
        tx.commit().await?;
        return Ok(Registered::Replayed { user_id, signup_id });
    }
    let (registered, keyed) = add_attempt(&mut tx, signup, announce).await?;
    if let Some(idempotency) = signup.idempotency.as_ref().filter(|_| !keyed) {
        let user_id = match &registered {
            Registered::Announced { user, .. } => user.id,
            Registered::Dropped { user_id } | Registered::Replayed { user_id, .. } => *user_id,
        };
        sqlx::query("UPDATE idempotency_keys SET user_id = $2, signup_id = $3 WHERE key = $1")
            .bind(&idempotency.key)
            .bind(user_id)
            .bind(signup.signup_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(registered)
}

struct UserCreated {
    user: User,
    created: bool,
}

platform::from_row!(UserCreated { created; flatten user });

/// What [`create_or_lock`] found.
enum Created {
    /// A new user, registered whole: attempt, announcement and idempotency key.
    New(User),
    /// The user with the email, locked until the transaction ends: nothing about it changed.
    Existing(User),
}

/// Creates the user with its attempt, announcement and idempotency key, or locks the user with the email.
async fn create_or_lock(conn: &mut PgConnection, signup: &NewSignup, announce: &Announce<'_>) -> sqlx::Result<Created> {
    let profile = &signup.profile;
    let id = Uuid::now_v7();
    // What a new user is announced with, written only if the user is new: then its row is this (its times aside,
    // which no event carries).
    let now = Utc::now();
    let new = User {
        id,
        email: signup.email.clone(),
        display_name: profile.display_name.clone(),
        locale: profile.locale.clone(),
        discoverable: profile.discoverable,
        status: "pending_verification".to_owned(),
        signup_id: signup.signup_id,
        created_at: now,
        updated_at: now,
        verified_at: None,
    };
    let event = announce(&new, profile, false);
    let query = sqlx::query_as(LOCK_OR_CREATE_USER)
        .bind(id)
        .bind(&signup.email)
        .bind(&profile.display_name)
        .bind(&profile.locale)
        .bind(profile.discoverable)
        .bind(signup.signup_id)
        .bind(&signup.client_hash);
    let key = signup.idempotency.as_ref().map(|idempotency| &idempotency.key);
    let UserCreated { user, created } =
        platform::outbox::bind_event(query, &event).bind(key).fetch_one(&mut *conn).await?;
    Ok(if created { Created::New(user) } else { Created::Existing(user) })
}

/// Creates the user or locks the existing one, then records and announces the attempt as the user's state allows;
/// whether the idempotency key was recorded with it.
async fn add_attempt(
    tx: &mut Transaction<'_, Postgres>,
    signup: &NewSignup,
    announce: &Announce<'_>,
) -> Result<(Registered, bool), StoreError> {
    let profile = &signup.profile;
    let user = match create_or_lock(tx, signup, announce).await? {
        Created::New(user) => return Ok((Registered::Announced { user, existing: false }, true)),
        Created::Existing(user) => user,
    };
    if user.status() == Status::Verified {
        platform::outbox::enqueue(tx, &announce(&user, profile, true)).await?;
        return Ok((Registered::Announced { user, existing: true }, false));
    }
    if !room_for_attempt(tx, user.id, signup).await? {
        return Ok((Registered::Dropped { user_id: user.id }, false));
    }
    let user: User = sqlx::query_as(ADD_ATTEMPT_TO_USER)
        .bind(user.id)
        .bind(signup.signup_id)
        .bind(&profile.display_name)
        .bind(&profile.locale)
        .bind(profile.discoverable)
        .fetch_one(&mut **tx)
        .await?;
    record_attempt(tx, user.id, signup).await?;
    platform::outbox::enqueue(tx, &announce(&user, profile, false)).await?;
    Ok((Registered::Announced { user, existing: false }, false))
}

/// Keeps the attempt's profile, for the verification that names it.
async fn record_attempt(conn: &mut PgConnection, user_id: Uuid, signup: &NewSignup) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO signup_attempts (signup_id, user_id, display_name, locale, discoverable, client_hash) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(signup.signup_id)
    .bind(user_id)
    .bind(&signup.profile.display_name)
    .bind(&signup.profile.locale)
    .bind(signup.profile.discoverable)
    .bind(&signup.client_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the account takes another attempt: fewer live ones than the account's limit, and, from a known client,
/// fewer of that client's than its share.
async fn room_for_attempt(conn: &mut PgConnection, user_id: Uuid, signup: &NewSignup) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT count(*) < $3 AND (octet_length($4) = 0 OR count(*) FILTER (WHERE client_hash = $4) < $5) \
         FROM signup_attempts WHERE user_id = $1 AND created_at > now() - make_interval(secs => $2)",
    )
    .bind(user_id)
    .bind(signup.attempts.window.as_secs_f64())
    .bind(signup.attempts.limit)
    .bind(&signup.client_hash)
    .bind(signup.attempts.per_client)
    .fetch_one(conn)
    .await
}

/// Claims the key for this request, or returns the account and attempt of the earlier request if it was the same
/// one.
async fn claim_key(
    tx: &mut Transaction<'_, Postgres>,
    idempotency: &Idempotency,
    email: &str,
    ttl: Duration,
) -> Result<Option<(Uuid, Option<Uuid>)>, StoreError> {
    // An expired key is a new key.
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND created_at < now() - make_interval(secs => $2)")
        .bind(&idempotency.key)
        .bind(ttl.as_secs_f64())
        .execute(&mut **tx)
        .await?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint, email) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&idempotency.key)
    .bind(&idempotency.fingerprint)
    .bind(email)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let (stored_email, fingerprint, user_id, signup_id): (Option<String>, Vec<u8>, Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("SELECT email, fingerprint, user_id, signup_id FROM idempotency_keys WHERE key = $1 FOR UPDATE")
            .bind(&idempotency.key)
            .fetch_one(&mut **tx)
            .await?;
    if stored_email.is_some_and(|stored| stored != email) {
        return Err(StoreError::KeyUsedForOtherEmail);
    }
    if fingerprint != idempotency.fingerprint {
        return Err(StoreError::KeyReused);
    }
    user_id.map(|user_id| Some((user_id, signup_id))).ok_or(StoreError::NotFound)
}

/// Marks a pending user verified through attempt `signup_id`, in one transaction with `announce`'s event: the
/// attempt's profile becomes the account's and every attempt is removed. Verifying again through the same
/// attempt returns the user unchanged with no second event.
pub(crate) async fn mark_verified(
    pool: &PgPool,
    user_id: Uuid,
    signup_id: Uuid,
    verified_at: DateTime<Utc>,
    announce: impl Fn(&User) -> OutboxEvent,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let user = lock(&mut tx, user_id).await?;
    if user.status() == Status::Verified {
        return if user.signup_id == signup_id { Ok(user) } else { Err(StoreError::VerifiedByAnotherAttempt) };
    }
    let profile = match attempt_profile(&mut tx, user_id, signup_id).await? {
        Some(profile) => profile,
        // An account from before attempts were recorded: its one attempt is the user row itself.
        None if user.signup_id == signup_id => {
            Profile { display_name: user.display_name, locale: user.locale, discoverable: user.discoverable }
        }
        None => return Err(StoreError::UnknownAttempt),
    };
    let user: User = sqlx::query_as(VERIFY_USER)
        .bind(user_id)
        .bind(verified_at)
        .bind(signup_id)
        .bind(&profile.display_name)
        .bind(&profile.locale)
        .bind(profile.discoverable)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM signup_attempts WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    platform::outbox::enqueue(&mut tx, &announce(&user)).await?;
    tx.commit().await?;
    Ok(user)
}

async fn attempt_profile(conn: &mut PgConnection, user_id: Uuid, signup_id: Uuid) -> sqlx::Result<Option<Profile>> {
    sqlx::query_as(
        "SELECT display_name, locale, discoverable FROM signup_attempts WHERE signup_id = $1 AND user_id = $2",
    )
    .bind(signup_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Sets whether a verified user may be suggested to others, announcing a change with `announce` in the same
/// transaction. Setting what is already set writes nothing.
pub(crate) async fn set_discoverable(
    pool: &PgPool,
    user_id: Uuid,
    discoverable: bool,
    announce: impl Fn(&User) -> OutboxEvent,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let user = lock(&mut tx, user_id).await?;
    if user.status() != Status::Verified {
        return Err(StoreError::NotVerified);
    }
    if user.discoverable == discoverable {
        return Ok(user);
    }
    let user: User = sqlx::query_as(SET_DISCOVERABLE).bind(user_id).bind(discoverable).fetch_one(&mut *tx).await?;
    platform::outbox::enqueue(&mut tx, &announce(&user)).await?;
    tx.commit().await?;
    Ok(user)
}

/// Reads a user and locks its row until `tx` ends, so concurrent verifications and changes serialise.
async fn lock(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> Result<User, StoreError> {
    sqlx::query_as(LOCK_USER).bind(user_id).fetch_optional(&mut **tx).await?.ok_or(StoreError::NotFound)
}

/// Deletes idempotency keys older than `ttl`, and logs what it did.
pub(crate) async fn expire_keys(pool: PgPool, ttl: Duration) {
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
        .bind(ttl.as_secs_f64())
        .execute(&pool)
        .await;
    match deleted.map(|done| done.rows_affected()) {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
        Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
    }
}

/// One user by id.
pub(crate) async fn by_id<'e>(executor: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<User, StoreError> {
    sqlx::query_as(USER_BY_ID).bind(id).fetch_optional(executor).await?.ok_or(StoreError::NotFound)
}

/// One user by normalised email.
pub(crate) async fn by_email<'e>(executor: impl sqlx::PgExecutor<'e>, email: &str) -> Result<User, StoreError> {
    sqlx::query_as(USER_BY_EMAIL).bind(email).fetch_optional(executor).await?.ok_or(StoreError::NotFound)
}
/// Accounts never verified by `age` after their last signup attempt: what `archive --dry-run` would remove.
pub(crate) async fn unverified_count(pool: &PgPool, age: Duration) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE status <> 'verified' AND updated_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// An account to archive: its id, its row as JSON without the address or the name (what goes to cold storage: ids,
/// states and times, which no deletion needs to reach), and its signup attempts.
#[derive(Debug)]
pub(crate) struct Archived {
    pub(crate) id: Uuid,
    pub(crate) record: serde_json::Value,
    signup_ids: Vec<Uuid>,
}

/// Up to `limit` accounts never verified by `age` after their last attempt, locked until `tx` ends (replicas of
/// the job skip each other's).
pub(crate) async fn lock_unverified(
    tx: &mut Transaction<'_, Postgres>,
    age: Duration,
    limit: usize,
) -> sqlx::Result<Vec<Archived>> {
    let rows: Vec<(Uuid, serde_json::Value, Vec<Uuid>)> = sqlx::query_as(
        "SELECT id, to_jsonb(u) - ARRAY['email', 'display_name'], \
                ARRAY(SELECT signup_id FROM signup_attempts a WHERE a.user_id = u.id) FROM users u \
         WHERE status <> 'verified' AND updated_at < now() - make_interval(secs => $1) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(age.as_secs_f64())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, record, signup_ids)| Archived { id, record, signup_ids }).collect())
}

/// Deletes archived accounts (their attempts and keys with them) and announces `UserDeleted` for each, naming its
/// attempts, in `tx`.
pub(crate) async fn delete_archived(tx: &mut Transaction<'_, Postgres>, accounts: &[Archived]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = ANY($1)").bind(&ids).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM users WHERE id = ANY($1)").bind(&ids).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM outbox WHERE user_id = ANY($1)").bind(&ids).execute(&mut **tx).await?;
    for account in accounts {
        platform::outbox::enqueue(tx, &crate::events::deleted(account.id, &account.signup_ids)).await?;
    }
    Ok(())
}

/// Deletes the account `user_id` at its owner's request (its attempts and keys with it) and announces `UserDeleted`
/// naming its attempts, in one transaction; returns whether there was an account to delete.
pub(crate) async fn delete_user(pool: &PgPool, user_id: Uuid) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let attempts: Option<Vec<Uuid>> = sqlx::query_scalar(
        "SELECT ARRAY(SELECT signup_id FROM signup_attempts a WHERE a.user_id = u.id) FROM users u WHERE id = $1          FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(signup_ids) = attempts else { return Ok(false) };
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
    // The events about the account go too (published or not: UserDeleted, below, supersedes them all).
    sqlx::query("DELETE FROM outbox WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    platform::outbox::enqueue(&mut tx, &crate::events::deleted(user_id, &signup_ids)).await?;
    tx.commit().await?;
    Ok(true)
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
