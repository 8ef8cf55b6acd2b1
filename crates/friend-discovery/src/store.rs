//! The friend-discovery database: members and their contact edges, as keyed hashes only. Every change takes the
//! transaction it belongs to, so the consumer commits it together with the event id. Each change is written so
//! the end state does not depend on the order events arrive in.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A member's profile and contacts, as a UserSignedUp carries them.
#[derive(Debug)]
pub(crate) struct SignedUp<'a> {
    pub(crate) user_id: Uuid,
    pub(crate) signup_id: Uuid,
    pub(crate) email_hash: &'a [u8],
    pub(crate) display_name: &'a str,
    pub(crate) discoverable: bool,
    pub(crate) contact_hashes: &'a [Vec<u8>],
}

/// Applies a signup: the member takes this signup's profile and contacts unless a newer signup of theirs was
/// already applied, or they were deleted. Returns whether anything changed.
pub(crate) async fn signed_up(conn: &mut PgConnection, member: &SignedUp<'_>) -> sqlx::Result<bool> {
    lock_user(conn, member.user_id).await?;
    if is_deleted(conn, member.user_id).await? {
        return Ok(false);
    }
    let applied: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO members (user_id, email_hash, display_name, discoverable, signup_id) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET email_hash = excluded.email_hash, \
           display_name = excluded.display_name, discoverable = excluded.discoverable, \
           signup_id = excluded.signup_id, updated_at = now() \
         WHERE members.signup_id IS NULL OR members.signup_id < excluded.signup_id \
         RETURNING user_id",
    )
    .bind(member.user_id)
    .bind(member.email_hash)
    .bind(member.display_name)
    .bind(member.discoverable)
    .bind(member.signup_id)
    .fetch_optional(&mut *conn)
    .await?;
    if applied.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM contacts WHERE owner_id = $1").bind(member.user_id).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO contacts (owner_id, contact_hash) SELECT $1, hash FROM unnest($2::bytea[]) AS hash \
         ON CONFLICT DO NOTHING",
    )
    .bind(member.user_id)
    .bind(member.contact_hashes)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Marks a member verified, creating the row if the signup has not arrived yet (it fills in the rest).
pub(crate) async fn verified(conn: &mut PgConnection, user_id: Uuid, at: DateTime<Utc>) -> sqlx::Result<()> {
    lock_user(conn, user_id).await?;
    if is_deleted(conn, user_id).await? {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO members (user_id, verified_at) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET verified_at = coalesce(members.verified_at, excluded.verified_at), \
           updated_at = now()",
    )
    .bind(user_id)
    .bind(at)
    .execute(conn)
    .await
    .map(drop)
}

/// Removes a member and their edges for good: later events about them change nothing.
pub(crate) async fn deleted(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    lock_user(conn, user_id).await?;
    sqlx::query("INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM members WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// Serialises the events of one user across consumers and replicas until the transaction ends, so a deletion
/// and a signup applied at the same moment cannot both miss each other.
async fn lock_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(user_id)
        .execute(conn)
        .await
        .map(drop)
}

async fn is_deleted(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1)")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Where a page of suggestions starts: after this position in the order (mutual, shared, user id, all
/// descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) mutual: bool,
    pub(crate) shared: i32,
    pub(crate) user_id: Uuid,
}

/// One suggestion.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Suggestion {
    pub(crate) user_id: Uuid,
    pub(crate) display_name: String,
    pub(crate) in_yours: bool,
    pub(crate) has_you: bool,
    pub(crate) shared: i32,
}

impl Suggestion {
    /// This suggestion's position, for the next page's cursor.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor { mutual: self.in_yours && self.has_you, shared: self.shared, user_id: self.user_id }
    }
}

/// Up to `limit` suggestions for `user_id` after `after`: verified, discoverable members other than the user who
/// are in the user's contacts or have the user in theirs; mutual first, then by contacts shared, then newest
/// (user ids are UUID v7). Each candidate is found through an index, from at most the user's own contacts and
/// the members who have the user's email hash, so the cost does not grow with the number of members. Someone in
/// very many address books is matched against the newest thousand of them only, which bounds every page.
pub(crate) async fn suggestions(
    pool: &PgPool,
    user_id: Uuid,
    after: Option<Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<Suggestion>> {
    sqlx::query_as(
        "WITH mine AS MATERIALIZED (SELECT contact_hash FROM contacts WHERE owner_id = $1), \
         related AS ( \
           SELECT m.user_id, true AS in_yours, false AS has_you \
             FROM mine JOIN members m ON m.email_hash = mine.contact_hash \
           UNION ALL \
           (SELECT c.owner_id, false, true \
              FROM members me JOIN contacts c ON c.contact_hash = me.email_hash WHERE me.user_id = $1 \
             ORDER BY c.owner_id DESC LIMIT 1000) \
         ), \
         candidates AS ( \
           SELECT user_id, bool_or(in_yours) AS in_yours, bool_or(has_you) AS has_you \
             FROM related WHERE user_id <> $1 GROUP BY user_id \
         ), \
         ranked AS ( \
           SELECT v.user_id, v.display_name, c.in_yours, c.has_you, (c.in_yours AND c.has_you) AS mutual, \
                  (SELECT count(*) FROM contacts cv JOIN mine ON mine.contact_hash = cv.contact_hash \
                    WHERE cv.owner_id = v.user_id)::int AS shared \
             FROM candidates c JOIN members v ON v.user_id = c.user_id \
            WHERE v.verified_at IS NOT NULL AND v.discoverable AND v.display_name IS NOT NULL \
         ) \
         SELECT user_id, display_name, in_yours, has_you, shared FROM ranked \
          WHERE $2::boolean IS NULL OR (mutual, shared, user_id) < ($2, $3, $4) \
          ORDER BY mutual DESC, shared DESC, user_id DESC \
          LIMIT $5",
    )
    .bind(user_id)
    .bind(after.map(|c| c.mutual))
    .bind(after.map(|c| c.shared))
    .bind(after.map(|c| c.user_id))
    .bind(limit)
    .fetch_all(pool)
    .await
}
