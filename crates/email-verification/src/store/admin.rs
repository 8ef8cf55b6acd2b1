//! The queries of the admin processes: verifications to compare with user-metadata, records to archive, expired
//! counters, and the mail figures of a day.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::archive::ColdStorage;
use sqlx::PgPool;
use uuid::Uuid;

/// An account verified here: when, and through which signup attempt.
#[derive(Debug)]
pub(crate) struct Verification {
    pub(crate) user_id: Uuid,
    pub(crate) verified_at: DateTime<Utc>,
    pub(crate) signup_id: Uuid,
}

platform::from_row!(Verification { user_id, verified_at, signup_id });

/// Accounts verified here within `lookback` through a known attempt, oldest first. One verified before the attempt
/// was recorded is left alone: the account's newest attempt may be a stranger's, and telling user-metadata it
/// verified through that one would make the stranger's password the account's.
pub(crate) async fn recent_verifications(pool: &PgPool, lookback: Duration) -> sqlx::Result<Vec<Verification>> {
    sqlx::query_as(
        "SELECT user_id, verified_at, verified_signup_id AS signup_id FROM accounts \
         WHERE verified_at IS NOT NULL AND verified_signup_id IS NOT NULL \
           AND verified_at > now() - make_interval(secs => $1) ORDER BY verified_at",
    )
    .bind(lookback.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// One kind of record to archive: how to select a locked batch of (key, key as named in the object, record) and
/// delete it by key (hex, or a UUID's 32 digits).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) table: &'static str,
    select: &'static str,
    delete: &'static str,
    age: Duration,
}

/// Used or expired tokens older than `age`.
pub(crate) fn tokens(age: Duration) -> Batch {
    Batch {
        table: "tokens",
        select: "SELECT encode(token_hash, 'hex'), \
                        replace(mail_id::text, '-', '') || to_char(created_at, 'YYYYMMDDHH24MISSUS'), \
                        to_jsonb(t) - 'token_hash' \
                 FROM tokens t \
                 WHERE (used_at IS NOT NULL OR expires_at < now()) AND created_at < now() - make_interval(secs => $1) \
                 ORDER BY created_at, token_hash LIMIT $2 FOR UPDATE SKIP LOCKED",
        delete: "DELETE FROM tokens WHERE token_hash = ANY(SELECT decode(k, 'hex') FROM unnest($1::text[]) k)",
        age,
    }
}

/// Mail no longer pending, older than `age`, with no token left (tokens reference their mail).
pub(crate) fn mails(age: Duration) -> Batch {
    Batch {
        table: "mails",
        select: "SELECT replace(id::text, '-', ''), replace(id::text, '-', ''), \
                        to_jsonb(m) - ARRAY['recipient', 'display_name', 'last_error', 'client_hash'] FROM mails m \
                 WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1) \
                   AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.mail_id = m.id) \
                 ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        delete: "DELETE FROM mails WHERE id = ANY($1::text[]::uuid[])",
        age,
    }
}

impl Batch {
    /// How many records the archive would take now.
    pub(crate) async fn count(&self, pool: &PgPool) -> sqlx::Result<i64> {
        let query = format!("SELECT count(*) FROM ({}) b", self.select.replace("FOR UPDATE SKIP LOCKED", ""));
        sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(self.age.as_secs_f64()).bind(i64::MAX).fetch_one(pool).await
    }

    /// Archives batch after batch until none is left, each deleted in the transaction that follows the read-back
    /// of its object; returns how many records went.
    pub(crate) async fn run(&self, pool: &PgPool, storage: &ColdStorage, size: i64) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let mut tx = pool.begin().await?;
            let rows: Vec<(String, String, serde_json::Value)> =
                sqlx::query_as(self.select).bind(self.age.as_secs_f64()).bind(size).fetch_all(&mut *tx).await?;
            let (Some((_, first, _)), Some((_, last, _))) = (rows.first(), rows.last()) else { break };
            let key = format!("email-verification/{}/{first}-{last}.jsonl.gz", self.table);
            let records: Vec<serde_json::Value> = rows.iter().map(|(_, _, r)| r.clone()).collect();
            let object = storage.put_verified(&key, &records).await?;
            let count = rows.len();
            let keys: Vec<String> = rows.into_iter().map(|(k, _, _)| k).collect();
            sqlx::query(self.delete).bind(keys).execute(&mut *tx).await?;
            tx.commit().await?;
            total += count;
            tracing::info!(table = self.table, records = count, %object, "archived and removed");
        }
        Ok(total)
    }
}

/// Drops notice-interval counters whose window ended more than `window` ago (counters, not records: nothing to
/// archive); returns how many.
pub(crate) async fn expire_counters(pool: &PgPool, window: Duration) -> sqlx::Result<u64> {
    let deleted = sqlx::query("DELETE FROM send_limits WHERE window_started_at < now() - make_interval(secs => $1)")
        .bind(window.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// Mail delivered in `[from, to)`, and mail queued then that was given up on.
pub(crate) async fn mail_figures(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> sqlx::Result<(u64, u64)> {
    let (sent, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent' AND sent_at >= $1 AND sent_at < $2), \
                count(*) FILTER (WHERE status = 'failed' AND created_at >= $1 AND created_at < $2) FROM mails",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    Ok((u64::try_from(sent).unwrap_or(0), u64::try_from(failed).unwrap_or(0)))
}
