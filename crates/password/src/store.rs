//! The password database: each account's own credential, the credentials of signup attempts not promoted yet,
//! sessions by token hash, and consecutive sign-in failures by email hash.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, postgres::PgArguments, query::QueryScalar};
use uuid::Uuid;

use crate::settings::Throttle;

/// Stores the credential of signup attempt `signup_id`. A repeat of the same attempt keeps the first one.
pub(crate) async fn store_attempt(pool: &PgPool, signup_id: Uuid, email_hash: &[u8], phc: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO attempt_credentials (signup_id, email_hash, phc) VALUES ($1, $2, $3) \
         ON CONFLICT (signup_id) DO NOTHING",
    )
    .bind(signup_id)
    .bind(email_hash)
    .bind(phc)
    .execute(pool)
    .await
    .map(drop)
}

/// The credential of attempt `signup_id` of `user_id`: its own while it is pending, or the account's if that attempt is the one promoted (or stored before attempts had their own).
pub(crate) async fn attempt_phc(pool: &PgPool, user_id: Uuid, signup_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT phc FROM attempt_credentials WHERE signup_id = $1 \
         UNION ALL SELECT phc FROM credentials WHERE user_id = $2 AND signup_id = $1 \
         LIMIT 1",
    )
    .bind(signup_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// The account's own credential, if it has one.
pub(crate) async fn account_phc(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<(String, i64)>> {
    sqlx::query_as("SELECT phc, generation FROM credentials WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Replaces `old` with `new` (a rehash under current parameters) unless the credential changed meanwhile.
pub(crate) async fn replace(pool: &PgPool, user_id: Uuid, old: &str, new: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE credentials SET phc = $3, updated_at = now() WHERE user_id = $1 AND phc = $2")
        .bind(user_id)
        .bind(old)
        .bind(new)
        .execute(pool)
        .await
        .map(drop)
}

/// What promoting an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Promotion {
    /// The attempt's credential is the account's now; the other attempts and their sessions are gone.
    Promoted,
    /// It already was: nothing changed.
    AlreadyPromoted,
    /// The attempt has no credential (never stored, or discarded): nothing changed.
    Unknown,
}

/// Makes attempt `signup_id`'s credential the account's password, discards every other attempt of the same email,
/// and ends the sessions opened with another attempt, all in `conn`'s transaction. Idempotent.
pub(crate) async fn promote(conn: &mut PgConnection, user_id: Uuid, signup_id: Uuid) -> sqlx::Result<Promotion> {
    let attempt: Option<(Vec<u8>, String)> =
        sqlx::query_as("DELETE FROM attempt_credentials WHERE signup_id = $1 RETURNING email_hash, phc")
            .bind(signup_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((email_hash, phc)) = attempt else {
        let promoted: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credentials WHERE user_id = $1 AND signup_id = $2)")
                .bind(user_id)
                .bind(signup_id)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(if promoted { Promotion::AlreadyPromoted } else { Promotion::Unknown });
    };
    sqlx::query(
        "INSERT INTO credentials (user_id, phc, signup_id) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET phc = EXCLUDED.phc, signup_id = EXCLUDED.signup_id, updated_at = now(), \
         generation = credentials.generation + 1, set_at = now()",
    )
    .bind(user_id)
    .bind(&phc)
    .bind(signup_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM attempt_credentials WHERE email_hash = $1").bind(&email_hash).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND signup_id IS DISTINCT FROM $2")
        .bind(user_id)
        .bind(signup_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE sessions SET signup_id = NULL WHERE user_id = $1").bind(user_id).execute(conn).await?;
    Ok(Promotion::Promoted)
}

/// Removes the credential of attempt `signup_id`, which nothing will use (it was on a verified account).
pub(crate) async fn discard_attempt(conn: &mut PgConnection, signup_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM attempt_credentials WHERE signup_id = $1").bind(signup_id).execute(conn).await.map(drop)
}

/// Removes everything held about a user: the account's credential, its sessions and trusted devices, and the
/// credentials of its attempts `signup_ids`.
pub(crate) async fn delete_user(conn: &mut PgConnection, user_id: Uuid, signup_ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM attempt_credentials WHERE signup_id = ANY($1)")
        .bind(signup_ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM credentials WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM outbox WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM trusted_devices WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// A session to open.
#[derive(Debug)]
pub(crate) struct NewSession<'a> {
    pub(crate) token_hash: &'a [u8],
    pub(crate) user_id: Uuid,
    /// The generation of the password that was checked: the session opens only while it is still the account's.
    pub(crate) checked: i64,
    /// The SHA-256 of the signing-in device's token: trusted from then on, if the session opens.
    pub(crate) device_hash: &'a [u8],
}

/// A live session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) user_id: Uuid,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) idle_expires_at: DateTime<Utc>,
    /// Opened with an unverified account's signup attempt: it ends when another attempt is verified.
    pub(crate) attempt_bound: bool,
    last_used_at: DateTime<Utc>,
}

platform::from_row!(Session { user_id, expires_at, idle_expires_at, attempt_bound, last_used_at });

/// How long sessions last (`idle` without use, `absolute` whatever the use), and how many an account keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    pub(crate) per_account: u32,
}

/// Use refreshes a session's idle expiry at most this often, so reading a session is a read, not a write.
const TOUCH_EVERY_SECS: f64 = 60.0;

/// Opens a session, if the account's password is still generation `new.checked` (the one just checked), and
/// returns it. The credential's row is share-locked: a change or reset that committed meanwhile leaves no row
/// to open it from, and one that commits after waits for this session and then ends it with the others. An
/// account keeps at most `limits.per_account` sessions: opening one ends those least recently used beyond that,
/// so signing in over and over piles up no rows (nor export lines).
pub(crate) async fn open_session(
    pool: &PgPool,
    new: &NewSession<'_>,
    limits: SessionLimits,
) -> sqlx::Result<Option<Session>> {
    sqlx::query_as(
        "WITH opened AS ( \
           INSERT INTO sessions (token_hash, user_id, idle_expires_at, expires_at, device_hash) \
           SELECT $1, user_id, now() + make_interval(secs => $3), now() + make_interval(secs => $4), $7 \
           FROM credentials WHERE user_id = $2 AND generation = $5 FOR SHARE \
           RETURNING user_id, expires_at, least(idle_expires_at, expires_at) AS idle_expires_at, \
           signup_id IS NOT NULL AS attempt_bound, last_used_at), \
         ended AS ( \
           DELETE FROM sessions WHERE token_hash IN ( \
             SELECT token_hash FROM sessions WHERE user_id = $2 AND EXISTS (SELECT 1 FROM opened) \
             ORDER BY last_used_at DESC, created_at DESC OFFSET $6 - 1)), \
         trusted AS ( \
           INSERT INTO trusted_devices (user_id, device_hash) SELECT user_id, $7 FROM opened \
           ON CONFLICT (user_id, device_hash) DO UPDATE SET signed_in_at = now()) \
         SELECT * FROM opened",
    )
    .bind(new.token_hash)
    .bind(new.user_id)
    .bind(limits.idle.as_secs_f64())
    .bind(limits.absolute.as_secs_f64())
    .bind(new.checked)
    .bind(i64::from(limits.per_account))
    .bind(new.device_hash)
    .fetch_optional(pool)
    .await
}

/// The live session with `token_hash`, its idle expiry pushed back if it was last refreshed a while ago.
pub(crate) async fn session(pool: &PgPool, token_hash: &[u8], idle: Duration) -> sqlx::Result<Option<Session>> {
    let live: Option<Session> = sqlx::query_as(
        "SELECT user_id, expires_at, least(idle_expires_at, expires_at) AS idle_expires_at, \
         signup_id IS NOT NULL AS attempt_bound, last_used_at \
         FROM sessions WHERE token_hash = $1 AND expires_at > now() AND idle_expires_at > now()",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    let Some(session) = live else { return Ok(None) };
    if (Utc::now() - session.last_used_at).as_seconds_f64() < TOUCH_EVERY_SECS {
        return Ok(Some(session));
    }
    let touched = sqlx::query_as(
        "UPDATE sessions SET last_used_at = now(), idle_expires_at = least(now() + make_interval(secs => $2), expires_at) \
         WHERE token_hash = $1 AND expires_at > now() AND idle_expires_at > now() \
         RETURNING user_id, expires_at, idle_expires_at, signup_id IS NOT NULL AS attempt_bound, last_used_at",
    )
    .bind(token_hash)
    .bind(idle.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(touched)
}

/// Ends the session with `token_hash`, if any.
pub(crate) async fn revoke(pool: &PgPool, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await.map(drop)
}

/// A new password for an account.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    pub(crate) user_id: Uuid,
    /// The new credential.
    pub(crate) phc: &'a str,
    /// What gives the right to replace the password.
    pub(crate) by: ChangedBy<'a>,
    /// The hash of the session that stays open; `None` ends them all.
    pub(crate) keep: Option<&'a [u8]>,
}

/// What gives the right to set a new password.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChangedBy<'a> {
    /// The current password, just checked: its generation, which the new one must replace.
    Password(i64),
    /// A reset link.
    Link(Link<'a>),
}

/// The reset link a new password is set with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link<'a> {
    /// When the link was asked for: a password set since then is not replaced (the link is stale, or its reset
    /// already applied and is being retried). `None` from a caller older than the field.
    pub(crate) asked_at: Option<DateTime<Utc>>,
    /// The SHA-256 of the link's token: the link that last set the password sets nothing again, whatever the clocks
    /// of the two databases say. Empty from a caller older than the field.
    pub(crate) digest: &'a [u8],
    /// The keyed hash of the account's email, whose failed sign-ins the reset forgets.
    pub(crate) email_hash: &'a [u8],
}

impl Link<'_> {
    fn digest(&self) -> Option<&[u8]> {
        Some(self.digest).filter(|digest| !digest.is_empty())
    }
}

/// The condition a new password is set under, over `credentials` and the parameters $2 (the generation a change
/// replaces), $3 (when a reset's link was asked for) and $4 (the link's digest), each ignored when `NULL`.
const REPLACEABLE: &str = "($2::bigint IS NULL OR generation = $2) \
                           AND ($3::timestamptz IS NULL OR coalesce(set_at, updated_at) <= $3) \
                           AND ($4::bytea IS NULL OR reset_by IS DISTINCT FROM $4)";

/// Whether `link` may still set `user_id`'s password, before the new one is hashed: a link used up costs no hash.
pub(crate) async fn link_usable(pool: &PgPool, user_id: Uuid, link: &Link<'_>) -> sqlx::Result<bool> {
    let query = format!("SELECT EXISTS (SELECT 1 FROM credentials WHERE user_id = $1 AND {REPLACEABLE})");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .bind(user_id)
        .bind(None::<i64>)
        .bind(link.asked_at)
        .bind(link.digest())
        .fetch_one(pool)
        .await
}

/// Ends every session of `$1` but `$2` (a token's hash, or NULL), and trusts no device but `$2`'s: whoever knew
/// the password before trusts no device now, and the devices it signed in on are held to the email's lockout again
/// (a reset keeps none).
const END_SESSIONS_AND_TRUST: &str = "WITH untrusted AS (DELETE FROM trusted_devices WHERE user_id = $1 \
       AND device_hash IS DISTINCT FROM (SELECT device_hash FROM sessions WHERE token_hash = $2)) \
     DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2";

/// Replaces the account's password, ends every session but `keep`, trusts no device but `keep`'s, announces
/// `PasswordChanged` and, for a reset, forgets the email's failed sign-ins, in one transaction; returns whether there
/// was a password to replace (one `by` still gives the right to replace).
pub(crate) async fn change_password(pool: &PgPool, change: &Change<'_>) -> sqlx::Result<bool> {
    let (user_id, keep) = (change.user_id, change.keep);
    let (generation, link) = match change.by {
        ChangedBy::Password(generation) => (Some(generation), None),
        ChangedBy::Link(link) => (None, Some(link)),
    };
    let mut tx = pool.begin().await?;
    let query = format!(
        "UPDATE credentials SET phc = $5, updated_at = now(), generation = generation + 1, set_at = now(), \
         reset_by = $4 WHERE user_id = $1 AND {REPLACEABLE}"
    );
    let changed = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(user_id)
        .bind(generation)
        .bind(link.and_then(|link| link.asked_at))
        .bind(link.as_ref().and_then(Link::digest))
        .bind(change.phc)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query(END_SESSIONS_AND_TRUST).bind(user_id).bind(keep).execute(&mut *tx).await?;
    if let Some(link) = link.filter(|link| !link.email_hash.is_empty()) {
        forget_failures(&mut tx, link.email_hash).await?;
    }
    platform::outbox::enqueue(&mut tx, &crate::events::password_changed(user_id)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends every session of `user_id` (it is leaving), and any sign-in under way.
pub(crate) async fn revoke_all(pool: &PgPool, user_id: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    // A sign-in whose password check passed opens its session only over the generation it checked: this one waits
    // for a session being opened (then ends it below) and leaves none to open after.
    sqlx::query("UPDATE credentials SET generation = generation + 1 WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    tx.commit().await
}

/// Whose failed sign-ins an attempt counts as: the email's (keyed hash) from one client: a network (keyed hash;
/// empty when the caller does not know it), or one the owner proved: the owner's own live session or a device the
/// email signed in from lately (the SHA-256 of its token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// HMAC-SHA256 of the normalised email.
    pub email_hash: &'a [u8],
    /// HMAC-SHA256 of the client's network, SHA-256 of the session's or the device's token, or empty.
    pub client_hash: &'a [u8],
    /// The client is a live session of the account (a signed-in owner changing the password or leaving) or a device
    /// the email signed in from within `LOGIN_TRUSTED_CLIENT_DAYS`: held to its own count only. Strangers' failures
    /// that lock the email out do not hold its owner back there, and a stolen session gets no more guesses from more
    /// networks.
    pub proven: bool,
}

/// Whether `token_hash` is a live session of `user_id`.
pub(crate) async fn owns_session(pool: &PgPool, user_id: Uuid, token_hash: &[u8]) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE token_hash = $1 AND user_id = $2 \
         AND expires_at > now() AND idle_expires_at > now())",
    )
    .bind(token_hash)
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// The delay before the next attempt after `failures` consecutive failures, in SQL, over the columns of
/// `sign_in_failures` and the parameters $2..$6 that [`bind_throttle`] binds.
const DELAY: &str = "CASE WHEN failures < $2 THEN interval '0' \
                          WHEN failures >= $5 THEN make_interval(secs => $6) \
                          ELSE make_interval(secs => least($3 * power(2, failures - $2), $4)) END";

/// Counts a sign-in attempt as a failure of its email and client before its password is checked, unless one of
/// the three limits makes it wait: then returns how long. The limits: the client's consecutive failures on this
/// email (slow down, then lock out); the email's failures from every client (the lockout); and the other emails
/// this client failed on in the last hour (guessing many accounts). A proven client (the owner's session or
/// device) is held only to the first: a guesser elsewhere cannot lock its owner out. Concurrent attempts of one
/// client or one email take turns, so none slips past a count.
pub(crate) async fn reserve_attempt(
    pool: &PgPool,
    asker: Asker<'_>,
    throttle: &Throttle,
) -> sqlx::Result<Result<(), Duration>> {
    let mut tx = pool.begin().await?;
    take_turn(&mut tx, asker).await?;
    if !asker.proven {
        if let Some(wait) = client_budget_wait(&mut tx, asker, throttle).await? {
            return Ok(Err(wait));
        }
        if let Some(wait) = email_lockout_wait(&mut tx, asker, throttle).await? {
            return Ok(Err(wait));
        }
    }
    let counted = count_failure(&mut tx, asker, throttle).await?;
    tx.commit().await?;
    Ok(counted)
}

/// Waits for the attempts of this client, then of this email, that came first (client first everywhere: no two
/// attempts wait for each other). Held until the transaction ends; the password is checked after.
async fn take_turn(conn: &mut PgConnection, asker: Asker<'_>) -> sqlx::Result<()> {
    // A hash's first 32 bits: two hashes that share them only take turns needlessly.
    let key = |hash: &[u8]| hash.get(..4).and_then(|b| b.try_into().ok()).map_or(0, i32::from_be_bytes);
    if !asker.client_hash.is_empty() {
        let lock = sqlx::query("SELECT pg_advisory_xact_lock(1, $1)").bind(key(asker.client_hash));
        lock.execute(&mut *conn).await?;
    }
    let lock = sqlx::query("SELECT pg_advisory_xact_lock(2, $1)").bind(key(asker.email_hash));
    lock.execute(&mut *conn).await.map(drop)
}

/// What is known of a presented device token within `LOGIN_TRUSTED_CLIENT_DAYS`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeviceTrust {
    /// The device signed in to this account: it is trusted here.
    pub(crate) here: bool,
    /// The device signed in to some account: the service issued its token, which it keeps.
    pub(crate) issued: bool,
}

platform::from_row!(DeviceTrust { here, issued });

/// What is known of the device whose token hashes to `device_hash`, for `user_id`. (The nil id, for an email with no
/// account, has no device: the same statement for every email.)
pub(crate) async fn device_trust(
    pool: &PgPool,
    user_id: Uuid,
    device_hash: &[u8],
    throttle: &Throttle,
) -> sqlx::Result<DeviceTrust> {
    sqlx::query_as(
        "SELECT coalesce(bool_or(user_id = $1), false) AS here, count(*) > 0 AS issued FROM trusted_devices \
         WHERE device_hash = $2 AND signed_in_at > now() - make_interval(secs => $3)",
    )
    .bind(user_id)
    .bind(device_hash)
    .bind(throttle.trusted_for().as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Counts the failure against this email and client, unless their consecutive failures make it wait: then how long.
/// Timed by the statement, not the transaction: an attempt that waited its turn began before the one it waited for
/// counted its failure, and measured from its own start it would find that failure in the future and wait for it.
async fn count_failure(
    conn: &mut PgConnection,
    asker: Asker<'_>,
    throttle: &Throttle,
) -> sqlx::Result<Result<(), Duration>> {
    let reserve = format!(
        "INSERT INTO sign_in_failures AS f (email_hash, client_hash, failures, last_failure_at) \
         VALUES ($1, $7, 1, statement_timestamp()) \
         ON CONFLICT (email_hash, client_hash) DO UPDATE SET failures = f.failures + 1, \
           last_failure_at = statement_timestamp() \
         WHERE f.last_failure_at + ({}) <= statement_timestamp() RETURNING failures",
        DELAY.replace("failures", "f.failures")
    );
    let reserve = bind_throttle(sqlx::query_scalar(sqlx::AssertSqlSafe(reserve)).bind(asker.email_hash), throttle);
    let reserved: Option<i32> = reserve.bind(asker.client_hash).fetch_optional(&mut *conn).await?;
    if reserved.is_some() {
        return Ok(Ok(()));
    }
    let wait = format!(
        "SELECT greatest(EXTRACT(EPOCH FROM last_failure_at + ({DELAY}) - statement_timestamp()), 1)::float8 \
         FROM sign_in_failures WHERE email_hash = $1 AND client_hash = $7"
    );
    let wait = bind_throttle(sqlx::query_scalar(sqlx::AssertSqlSafe(wait)).bind(asker.email_hash), throttle);
    let secs: Option<f64> = wait.bind(asker.client_hash).fetch_optional(conn).await?;
    Ok(Err(Duration::from_secs_f64(secs.unwrap_or(1.0))))
}

/// When the client has failed on `LOGIN_CLIENT_ACCOUNTS_PER_HOUR` other emails within the hour: how long until
/// the oldest of them leaves the hour. A caller that does not know its client is never held to this.
async fn client_budget_wait(
    conn: &mut PgConnection,
    asker: Asker<'_>,
    throttle: &Throttle,
) -> sqlx::Result<Option<Duration>> {
    if asker.client_hash.is_empty() {
        return Ok(None);
    }
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT greatest(EXTRACT(EPOCH FROM last_failure_at + interval '1 hour' - now()), 1)::float8 \
         FROM sign_in_failures \
         WHERE client_hash = $1 AND failures > 0 AND email_hash <> $2 AND last_failure_at > now() - interval '1 hour' \
         ORDER BY last_failure_at DESC OFFSET $3 - 1 LIMIT 1",
    )
    .bind(asker.client_hash)
    .bind(asker.email_hash)
    .bind(i64::from(throttle.client_accounts_per_hour()))
    .fetch_optional(conn)
    .await?;
    Ok(secs.map(Duration::from_secs_f64))
}

/// When the email's newest failures, from every client, reach `LOGIN_LOCKOUT_AFTER_FAILURES` and the newest of them
/// is less than `LOGIN_LOCKOUT_SECS` old: how long until the lockout ends. Each failure after it ends locks it again
/// (as one client's own count does), until a reset or a success of that client forgets the failures.
async fn email_lockout_wait(
    conn: &mut PgConnection,
    asker: Asker<'_>,
    throttle: &Throttle,
) -> sqlx::Result<Option<Duration>> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(last_failure_at) + make_interval(secs => $3) - now())::float8 \
         FROM (SELECT failures, last_failure_at FROM sign_in_failures WHERE email_hash = $1 AND failures > 0 \
               ORDER BY last_failure_at DESC LIMIT $2) AS newest \
         HAVING sum(failures) >= $2",
    )
    .bind(asker.email_hash)
    .bind(i64::from(throttle.lock_after()))
    .bind(throttle.lockout().as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(secs.filter(|secs| *secs > 0.0).map(|secs| Duration::from_secs_f64(secs.max(1.0))))
}

/// Binds the throttle's thresholds as $2..$6 of [`DELAY`].
fn bind_throttle<'q, O>(
    query: QueryScalar<'q, Postgres, O, PgArguments>,
    throttle: &Throttle,
) -> QueryScalar<'q, Postgres, O, PgArguments> {
    query
        .bind(i32::try_from(throttle.slow_after()).unwrap_or(i32::MAX))
        .bind(throttle.first_delay().as_secs_f64())
        .bind(throttle.max_delay().as_secs_f64())
        .bind(i32::try_from(throttle.lock_after()).unwrap_or(i32::MAX))
        .bind(throttle.lockout().as_secs_f64())
}

/// A right password: this client's failures on this email are forgotten. Other clients' failures stay: a guesser's
/// count does not tell them the owner signed in.
pub(crate) async fn succeeded(pool: &PgPool, asker: Asker<'_>) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sign_in_failures WHERE email_hash = $1 AND client_hash = $2")
        .bind(asker.email_hash)
        .bind(asker.client_hash)
        .execute(pool)
        .await
        .map(drop)
}

/// A reset: the owner proved the mailbox, so no failure before it holds the account back.
async fn forget_failures(conn: &mut PgConnection, email_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sign_in_failures WHERE email_hash = $1").bind(email_hash).execute(conn).await.map(drop)
}

/// An attempt that was counted but never checked (hashing was saturated): it is not held against anyone.
pub(crate) async fn release_attempt(pool: &PgPool, asker: Asker<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sign_in_failures SET failures = failures - 1 \
         WHERE email_hash = $1 AND client_hash = $2 AND failures > 0",
    )
    .bind(asker.email_hash)
    .bind(asker.client_hash)
    .execute(pool)
    .await
    .map(drop)
}

/// What the janitor removed.
#[derive(Debug, Default)]
struct Purged {
    sessions: u64,
    devices: u64,
    attempts: u64,
    failures: u64,
}

/// Removes expired sessions, devices no longer trusted, attempt credentials older than `attempt_ttl`, and failure
/// counts no longer throttling anything (no failure for the throttle's memory), and logs what it did. Expiry is also
/// checked wherever a row is read, so this only keeps the tables small.
pub(crate) async fn purge(pool: PgPool, attempt_ttl: Duration, throttle: Throttle) {
    match delete_expired(&pool, attempt_ttl, &throttle).await {
        Ok(Purged { sessions, devices, attempts, failures }) => {
            tracing::debug!(sessions, devices, attempts, failures, "expired rows removed");
        }
        Err(error) => tracing::warn!(%error, "could not remove expired rows; will try again"),
    }
}

async fn delete_expired(pool: &PgPool, attempt_ttl: Duration, throttle: &Throttle) -> sqlx::Result<Purged> {
    let older_than = |sql: &'static str, age: Duration| async move {
        sqlx::query(sql).bind(age.as_secs_f64()).execute(pool).await.map(|done| done.rows_affected())
    };
    let expired_sessions = "DELETE FROM sessions WHERE expires_at <= now() OR idle_expires_at <= now()";
    let devices = "DELETE FROM trusted_devices WHERE signed_in_at < now() - make_interval(secs => $1)";
    Ok(Purged {
        sessions: sqlx::query(expired_sessions).execute(pool).await?.rows_affected(),
        devices: older_than(devices, throttle.trusted_for()).await?,
        attempts: older_than(
            "DELETE FROM attempt_credentials WHERE created_at < now() - make_interval(secs => $1)",
            attempt_ttl,
        )
        .await?,
        failures: older_than(
            "DELETE FROM sign_in_failures WHERE last_failure_at < now() - make_interval(secs => $1)",
            throttle.memory(),
        )
        .await?,
    })
}

/// What is held about `user_id`, for its owner's export: the credential's algorithm and parameters (read from its
/// PHC string, whose hash and salt stay here) and the live sessions' times (never their tokens).
pub(crate) async fn export(
    pool: &PgPool,
    user_id: Uuid,
    email_hash: &[u8],
) -> sqlx::Result<proto::password::v1::ExportAccountResponse> {
    use platform::time::to_proto;
    let credential: Option<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT phc, created_at, coalesce(set_at, updated_at) FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    let sessions = live_sessions(pool, user_id).await?;
    let devices: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT signed_in_at FROM trusted_devices WHERE user_id = $1 ORDER BY signed_in_at")
            .bind(user_id)
            .fetch_all(pool)
            .await?;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM attempt_credentials WHERE email_hash = $1")
        .bind(email_hash)
        .fetch_one(pool)
        .await?;
    let (algorithm, parameters) = credential.as_ref().map(|(phc, ..)| how_hashed(phc)).unwrap_or_default();
    Ok(proto::password::v1::ExportAccountResponse {
        has_password: credential.is_some(),
        algorithm,
        parameters,
        password_set_at: credential.as_ref().map(|(_, created, _)| to_proto(*created)),
        password_changed_at: credential.as_ref().map(|(.., set)| to_proto(*set)),
        pending_attempt_passwords: u32::try_from(pending).unwrap_or(u32::MAX),
        sessions,
        devices_signed_in_at: devices.into_iter().map(to_proto).collect(),
    })
}

/// The times of `user_id`'s live sessions (never their tokens).
async fn live_sessions(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Vec<proto::password::v1::ExportedSession>> {
    use platform::time::to_proto;
    type Times = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);
    let sessions: Vec<Times> = sqlx::query_as(
        "SELECT created_at, last_used_at, expires_at FROM sessions \
         WHERE user_id = $1 AND expires_at > now() AND idle_expires_at > now() ORDER BY created_at",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let session = |(created, used, expires): Times| proto::password::v1::ExportedSession {
        created_at: Some(to_proto(created)),
        last_used_at: Some(to_proto(used)),
        expires_at: Some(to_proto(expires)),
    };
    Ok(sessions.into_iter().map(session).collect())
}

/// The algorithm, version and parameters of a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), parsed
/// as one: the salt and the hash stay here whatever the string's shape.
fn how_hashed(phc: &str) -> (String, String) {
    let Ok(hash) = argon2::PasswordHash::new(phc) else { return (String::new(), String::new()) };
    let version = hash.version.map(|v| format!("v={v}"));
    let parameters: Vec<String> =
        version.into_iter().chain([hash.params.to_string()]).filter(|p| !p.is_empty()).collect();
    (hash.algorithm.to_string(), parameters.join(","))
}
