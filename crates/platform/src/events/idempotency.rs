//! Idempotent consumption: an event's id is recorded in the transaction of its effect, so a redelivery finds it and
//! changes nothing; and which database errors are worth a retry.

use super::{Envelope, HandleError};

/// The expression that takes the lock on the user `$user` (an SQL expression that is a user's id), held until the
/// transaction ends: the lock [`record_once`] takes for each event's user, for any other writer about that user
/// that must take turns with the consumers (and take it first, before any row it then waits on).
#[macro_export]
macro_rules! user_lock {
    ($user:literal) => {
        concat!("pg_advisory_xact_lock(hashtextextended((", $user, ")::text, 0))")
    };
}

/// Records the events of a batch as processed in `conn`'s transaction, in one statement; returns, in order, whether
/// each is new. The caller must apply nothing of one that is not: it was processed before (or earlier in the
/// batch). The effects and these records commit together.
///
/// Each event may be about a user: the same statement takes those users' locks, in one order (two batches sharing
/// users take them in turn, never each holding what the other awaits), held until the transaction ends. A subscriber's deletion of a user and whatever another
/// event would write about them take it in turn, across consumers and replicas, so neither misses the other. What
/// is read after it, in a later statement, sees a deletion that committed while it was awaited.
pub async fn record_once(
    conn: &mut sqlx::PgConnection,
    events: &[(&Envelope, Option<uuid::Uuid>)],
) -> sqlx::Result<Vec<bool>> {
    let sql = concat!(
        "WITH recorded AS ( \
           INSERT INTO processed_events (event_id, event_type) SELECT * FROM unnest($1::uuid[], $2::text[]) \
           ON CONFLICT (event_id) DO NOTHING RETURNING event_id), \
         locked AS (SELECT count(",
        crate::user_lock!("u"),
        ") AS users \
           FROM (SELECT DISTINCT u FROM unnest($3::uuid[]) AS u WHERE u IS NOT NULL ORDER BY u) AS ordered) \
         SELECT array(SELECT event_id FROM recorded) FROM locked"
    );
    let ids: Vec<_> = events.iter().map(|(envelope, _)| envelope.id).collect();
    let kinds: Vec<_> = events.iter().map(|(envelope, _)| envelope.kind.as_str()).collect();
    let users: Vec<_> = events.iter().map(|(_, user)| *user).collect();
    let mut recorded: Vec<uuid::Uuid> =
        sqlx::query_scalar(sql).bind(&ids).bind(&kinds).bind(&users).fetch_one(conn).await?;
    // An id twice in one batch is new once, the first time.
    Ok(ids
        .iter()
        .map(|id| recorded.iter().position(|r| r == id).map(|at| recorded.swap_remove(at)).is_some())
        .collect())
}

/// The most records [`forget_processed`] deletes in one statement.
const FORGET_BATCH: i64 = 1000;

/// Forgets the records of events processed more than `keep` ago, [`FORGET_BATCH`] per statement until none is
/// left; returns how many. Our producers mint event ids as UUID v7, which sort by the millisecond they were minted,
/// so the primary key finds the old records and no index of their own is written with every event: every id minted
/// before the cutoff sorts below the v7 id of the cutoff with no random bits. The id only narrows the search; the
/// time the record was written decides (an id of another kind that sorts high is never forgotten).
pub(super) async fn forget_processed(pool: &sqlx::PgPool, keep: std::time::Duration) -> sqlx::Result<u64> {
    let cutoff = chrono::TimeDelta::from_std(keep).ok().and_then(|keep| chrono::Utc::now().checked_sub_signed(keep));
    let Some(millis) = cutoff.and_then(|cutoff| u128::try_from(cutoff.timestamp_millis()).ok()) else { return Ok(0) };
    let sql = "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events \
               WHERE event_id < $1 AND processed_at < now() - make_interval(secs => $2) \
               ORDER BY event_id LIMIT $3 FOR UPDATE SKIP LOCKED)";
    let mut forgotten = 0;
    loop {
        let query = sqlx::query(sql).bind(uuid::Uuid::from_u128(millis << 80)).bind(keep.as_secs_f64());
        let deleted = query.bind(FORGET_BATCH).execute(pool).await?.rows_affected();
        forgotten += deleted;
        if deleted < FORGET_BATCH.unsigned_abs() {
            return Ok(forgotten);
        }
    }
}

/// Remembers, in the subscriber's `deleted_users` table, that `user_id` was deleted: events about the user that
/// arrive later (a redelivered or late signup) must change nothing.
pub async fn remember_deleted(conn: &mut sqlx::PgConnection, user_id: uuid::Uuid) -> sqlx::Result<()> {
    let sql = "INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING";
    sqlx::query(sql).bind(user_id).execute(conn).await.map(drop)
}

/// Whether `user_id` was deleted ([`remember_deleted`]).
pub async fn was_deleted(conn: &mut sqlx::PgConnection, user_id: uuid::Uuid) -> sqlx::Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1)";
    sqlx::query_scalar(sql).bind(user_id).fetch_one(conn).await
}

/// A database error while handling an event: data exceptions and integrity violations (SQLSTATE classes 22
/// and 23) will fail the same way every time and make the message poison; anything else (a lost connection, a
/// timeout, a serialisation failure) is worth a retry.
pub fn transient(error: sqlx::Error) -> HandleError {
    let deterministic = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
    if deterministic { HandleError::Poison(error.into()) } else { HandleError::Transient(error.into()) }
}

/// A UUID field of an event; anything else makes the event poison.
pub fn uuid_field(field: &str, value: &str) -> Result<uuid::Uuid, HandleError> {
    value.parse().map_err(|_| HandleError::Poison(anyhow::anyhow!("{field} is not a UUID")))
}
