//! The friend-discovery database: members and their contact edges, as keyed hashes only, and the signup attempts
//! of accounts not verified yet. Every change takes the transaction it belongs to, so the consumer commits it
//! together with the event id; each is written so the end state does not depend on the order events arrive in.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// A signup attempt's profile and contacts, as UserSignedUp carries them.
#[derive(Debug)]
pub(crate) struct SignedUp<'a> {
    pub(crate) user_id: Uuid,
    pub(crate) signup_id: Uuid,
    pub(crate) email_hash: &'a [u8],
    pub(crate) display_name: &'a str,
    pub(crate) discoverable: bool,
    pub(crate) contact_hashes: &'a [Vec<u8>],
}

/// What applying an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Kept until the account is verified through one of its attempts.
    Pending,
    /// The verification overtook it: it is the member now.
    Member,
    /// Nothing: the user was deleted, or verified through another attempt.
    Ignored,
}

/// Applies a signup attempt: it waits as pending until its account is verified, or, if the verification through
/// this very attempt arrived first, it fills in the member. Every function here that applies an event runs under
/// the user's lock, which the consumer loop took with the event's record, so a deletion and another event of the
/// same user applied at the same moment cannot both miss each other.
pub(crate) async fn signed_up(conn: &mut PgConnection, attempt: &SignedUp<'_>) -> sqlx::Result<Applied> {
    let (deleted, verified, verified_through): (bool, bool, Option<Uuid>) = sqlx::query_as(SIGNED_UP)
        .bind(attempt.signup_id)
        .bind(attempt.user_id)
        .bind(attempt.email_hash)
        .bind(attempt.display_name)
        .bind(attempt.discoverable)
        .bind(attempt.contact_hashes)
        .fetch_one(&mut *conn)
        .await?;
    if deleted {
        return Ok(Applied::Ignored);
    }
    if !verified {
        return Ok(Applied::Pending);
    }
    if verified_through != Some(attempt.signup_id) {
        return Ok(Applied::Ignored);
    }
    become_member(conn, attempt).await?;
    Ok(Applied::Member)
}

/// After the user's lock, in one statement (a signup's round trips are most of its cost here): whether the user
/// was deleted, whether it is verified and through which attempt, and the attempt kept as pending unless either.
const SIGNED_UP: &str = "\
WITH state AS ( \
  SELECT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $2) AS deleted, \
         EXISTS (SELECT 1 FROM members WHERE user_id = $2 AND verified_at IS NOT NULL) AS verified, \
         (SELECT signup_id FROM members WHERE user_id = $2 AND verified_at IS NOT NULL) AS verified_through), \
pending AS ( \
  INSERT INTO pending_signups (signup_id, user_id, email_hash, display_name, discoverable, contact_hashes) \
  SELECT $1, $2, $3, $4, $5, $6 FROM state WHERE NOT deleted AND NOT verified \
  ON CONFLICT (signup_id) DO NOTHING) \
SELECT deleted, verified, verified_through FROM state";

/// Marks a member verified through attempt `signup_id`: that attempt's profile and contacts become the member's
/// (if it has arrived; otherwise it fills them in when it does), and every other attempt is dropped. An event from
/// before attempts were named (`signup_id` unknown) only marks the existing member verified.
pub(crate) async fn verified(
    conn: &mut PgConnection,
    user_id: Uuid,
    signup_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    if platform::events::was_deleted(conn, user_id).await? {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO members (user_id, signup_id, verified_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET verified_at = coalesce(members.verified_at, excluded.verified_at), \
           signup_id = CASE WHEN members.verified_at IS NULL THEN coalesce(excluded.signup_id, members.signup_id) \
                            ELSE members.signup_id END, \
           updated_at = now()",
    )
    .bind(user_id)
    .bind(signup_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let Some(signup_id) = signup_id else { return Ok(()) };
    let attempt: Option<PendingSignup> = sqlx::query_as(
        "SELECT user_id, signup_id, email_hash, display_name, discoverable, contact_hashes FROM pending_signups \
         WHERE signup_id = $1 AND user_id = $2",
    )
    .bind(signup_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(attempt) = attempt {
        become_member(conn, &attempt.as_signed_up()).await?;
    }
    sqlx::query("DELETE FROM pending_signups WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

struct PendingSignup {
    user_id: Uuid,
    signup_id: Uuid,
    email_hash: Vec<u8>,
    display_name: String,
    discoverable: bool,
    contact_hashes: Vec<Vec<u8>>,
}

platform::from_row!(PendingSignup { user_id, signup_id, email_hash, display_name, discoverable, contact_hashes });

impl PendingSignup {
    fn as_signed_up(&self) -> SignedUp<'_> {
        SignedUp {
            user_id: self.user_id,
            signup_id: self.signup_id,
            email_hash: &self.email_hash,
            display_name: &self.display_name,
            discoverable: self.discoverable,
            contact_hashes: &self.contact_hashes,
        }
    }
}

/// The verified attempt's profile and contacts become the member's. Its `discoverable` counts only if the member
/// has not changed it yet (no DiscoverabilityChanged applied): a change is made by a verified member, so it always
/// comes after the choice made at signup, whatever the clocks that named them say.
async fn become_member(conn: &mut PgConnection, attempt: &SignedUp<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE members SET email_hash = $2, display_name = $3, signup_id = $5, updated_at = now(), \
           discoverable = CASE WHEN discoverable_since IS NULL THEN $4 ELSE discoverable END \
         WHERE user_id = $1",
    )
    .bind(attempt.user_id)
    .bind(attempt.email_hash)
    .bind(attempt.display_name)
    .bind(attempt.discoverable)
    .bind(attempt.signup_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM contacts WHERE owner_id = $1").bind(attempt.user_id).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO contacts (owner_id, contact_hash) SELECT $1, hash FROM unnest($2::bytea[]) AS hash \
         ON CONFLICT DO NOTHING",
    )
    .bind(attempt.user_id)
    .bind(attempt.contact_hashes)
    .execute(conn)
    .await
    .map(drop)
}

/// Applies a member's decision whether others may be suggested them, unless a later one was applied already
/// (`decided` is the event's UUID v7 id, from user-metadata's clock like every other decision's).
pub(crate) async fn discoverability(
    conn: &mut PgConnection,
    user_id: Uuid,
    discoverable: bool,
    decided: Uuid,
) -> sqlx::Result<()> {
    if platform::events::was_deleted(conn, user_id).await? {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO members (user_id, discoverable, discoverable_since) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET discoverable = excluded.discoverable, \
           discoverable_since = excluded.discoverable_since, updated_at = now() \
         WHERE members.discoverable_since IS NULL OR members.discoverable_since < excluded.discoverable_since \
            OR members.discoverable_since = members.signup_id",
    )
    .bind(user_id)
    .bind(discoverable)
    .bind(decided)
    .execute(conn)
    .await
    .map(drop)
}

/// Removes a member, their edges and their pending attempts for good: later events about them change nothing.
pub(crate) async fn deleted(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    platform::events::remember_deleted(conn, user_id).await?;
    sqlx::query("DELETE FROM pending_signups WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM suggestion_budget WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM members WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// Where a page of suggestions starts: after this position in the order (mutual, user id, both descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) mutual: bool,
    pub(crate) user_id: Uuid,
}

/// One suggestion.
#[derive(Debug)]
pub(crate) struct Suggestion {
    pub(crate) user_id: Uuid,
    pub(crate) display_name: String,
    pub(crate) in_yours: bool,
    pub(crate) has_you: bool,
}

platform::from_row!(Suggestion { user_id, display_name, in_yours, has_you });

impl Suggestion {
    /// This suggestion's position, for the next page's cursor.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor { mutual: self.in_yours && self.has_you, user_id: self.user_id }
    }
}

/// Up to `limit` suggestions for `user_id` after `after`: verified, discoverable members other than the user who
/// are in the user's contacts or have the user in theirs; mutual first, then newest (user ids are UUID v7).
/// Nothing in a row depends on anyone who is not such a member. Each candidate is found through an index, from at
/// most the user's own contacts and the members who have the user's email hash, so the cost does not grow with
/// the number of members. Someone in very many address books is matched against the newest `sources` of them who
/// may be shown (verified, discoverable), found among at most ten times as many: owners who may not be shown are
/// skipped, so a crowd of hidden accounts listing someone cannot push the real ones out of the window, and the read
/// stays bounded.
pub(crate) async fn suggestions(
    conn: &mut PgConnection,
    user_id: Uuid,
    (after, limit): (Option<Cursor>, i64),
    sources: i64,
) -> sqlx::Result<Vec<Suggestion>> {
    sqlx::query_as(
        "WITH related AS ( \
           SELECT m.user_id, true AS in_yours, false AS has_you \
             FROM contacts mine JOIN members m ON m.email_hash = mine.contact_hash WHERE mine.owner_id = $1 \
           UNION ALL \
           (SELECT newest.owner_id, false, true \
              FROM (SELECT c.owner_id FROM members me JOIN contacts c ON c.contact_hash = me.email_hash \
                     WHERE me.user_id = $1 ORDER BY c.owner_id DESC LIMIT $5 * 10) AS newest \
              JOIN members o ON o.user_id = newest.owner_id \
             WHERE o.verified_at IS NOT NULL AND o.discoverable AND o.display_name IS NOT NULL \
             ORDER BY newest.owner_id DESC LIMIT $5) \
         ), \
         ranked AS ( \
           SELECT v.user_id, v.display_name, bool_or(r.in_yours) AS in_yours, bool_or(r.has_you) AS has_you \
             FROM related r JOIN members v ON v.user_id = r.user_id \
            WHERE v.user_id <> $1 AND v.verified_at IS NOT NULL AND v.discoverable AND v.display_name IS NOT NULL \
            GROUP BY v.user_id, v.display_name \
         ) \
         SELECT user_id, display_name, in_yours, has_you FROM ranked \
          WHERE $2::boolean IS NULL OR ((in_yours AND has_you), user_id) < ($2, $3) \
          ORDER BY (in_yours AND has_you) DESC, user_id DESC \
          LIMIT $4",
    )
    .bind(user_id)
    .bind(after.map(|c| c.mutual))
    .bind(after.map(|c| c.user_id))
    .bind(limit)
    .bind(sources)
    .fetch_all(conn)
    .await
}

/// How many more suggestions `user_id` may be served today (UTC) out of `per_day`, locking the asker's budget
/// until `tx` ends so concurrent pages are counted one after the other. A deleted user has none, and gets no budget
/// row back: a request that passed signup-api just before the deletion must not leave one behind.
pub(crate) async fn budget_left(tx: &mut Transaction<'_, Postgres>, user_id: Uuid, per_day: i32) -> sqlx::Result<i32> {
    let served: Option<i32> = sqlx::query_scalar(
        "INSERT INTO suggestion_budget AS b (user_id, day, served) \
         SELECT $1, (now() AT TIME ZONE 'UTC')::date, 0 \
         WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1) \
         ON CONFLICT (user_id) DO UPDATE SET \
           served = CASE WHEN b.day = excluded.day THEN b.served ELSE 0 END, day = excluded.day \
         RETURNING served",
    )
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(served.map_or(0, |served| (per_day - served).max(0)))
}

/// Counts `served` suggestions against `user_id`'s budget of today.
pub(crate) async fn charge(tx: &mut Transaction<'_, Postgres>, user_id: Uuid, served: i32) -> sqlx::Result<()> {
    sqlx::query("UPDATE suggestion_budget SET served = served + $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(served)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// What is held about `user_id`, for its owner's export: counts and flags, never a hash itself.
pub(crate) async fn export(
    pool: &sqlx::PgPool,
    user_id: Uuid,
) -> sqlx::Result<proto::friend_discovery::v1::ExportAccountResponse> {
    let (member, discoverable, email_hash_stored, contact_hashes, pending_attempts): (bool, bool, bool, i64, i64) =
        sqlx::query_as(
            "SELECT m.user_id IS NOT NULL, coalesce(m.discoverable, false), m.email_hash IS NOT NULL, \
                    (SELECT count(*) FROM contacts WHERE owner_id = $1), \
                    (SELECT count(*) FROM pending_signups WHERE user_id = $1) \
             FROM (SELECT 1) AS one LEFT JOIN members m ON m.user_id = $1",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await?;
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(proto::friend_discovery::v1::ExportAccountResponse {
        member,
        discoverable,
        contact_hashes: count(contact_hashes),
        pending_attempts: count(pending_attempts),
        email_hash_stored,
    })
}
