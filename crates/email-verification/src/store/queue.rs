//! The sender's side of the mail queue: claiming due mail within the global budget (with the tokens its links
//! carry, in the same transaction), recording each attempt's outcome, and the queue's lag.
//!
//! The global budget is counted per second in `mail_budget` (at most 60 rows to sum for the last minute), not by
//! scanning the mails attempted in that minute: a claim costs the same however busy the minute was.

use std::time::Duration;

use platform::{propagation::TraceContext, token::Token};
use sqlx::PgPool;
use uuid::Uuid;

use crate::mail::Kind;

/// A mail claimed for one delivery attempt.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) id: Uuid,
    pub(crate) kind: String,
    pub(crate) recipient: String,
    pub(crate) locale: String,
    pub(crate) attempts: i32,
    /// The token a verification mail's link carries (only its hash is stored).
    pub(crate) token: Option<Token>,
    /// The trace of the event that queued it.
    pub(crate) trace: TraceContext,
}

/// What one claim took.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    /// The mails to attempt now.
    pub(crate) mails: Vec<Claimed>,
    /// Verification mails whose account was verified or removed since they were queued: marked superseded.
    pub(crate) superseded: usize,
    /// Whether the global budget, rather than `limit` or an empty queue, decided how much was claimed.
    pub(crate) budget_bound: bool,
    /// Whether more mail was due than the claim took (the global budget aside): a slot freeing up has mail to take.
    pub(crate) more_due: bool,
}

/// One row of a claim: a claimed mail, or none when nothing was claimed, with the budget left before the claim.
struct ClaimedRow {
    id: Option<Uuid>,
    kind: Option<String>,
    recipient: Option<String>,
    locale: Option<String>,
    attempts: Option<i32>,
    remaining: i64,
    more_due: bool,
    /// The hash of the token issued for a verification mail; `None` when its account is no longer pending.
    token_hash: Option<Vec<u8>>,
    trace: TraceContext,
}

platform::from_row!(ClaimedRow { id, kind, recipient, locale, attempts, remaining, more_due, token_hash; flatten trace });

/// Claims up to `limit` due mails for one attempt each, no more than the global budget leaves of the last minute's
/// `per_minute` attempts, and issues the token of each verification mail whose account is still pending (locking
/// the account, so a confirm verifying it right now is ordered against this); one that is not is superseded, not
/// sent. One statement: the sender's round trips are the mail's cost here. A claim is a lease: the row is not due
/// again until `lease` has passed, so a sender that crashes mid-attempt delays the mail but never loses it, and
/// replicas never attempt the same mail at the same time. (Replicas claiming at the same instant may each use what
/// is left of the budget, so it can be exceeded by one claim, at most `MAIL_CONCURRENCY` mails, per other replica.)
pub(crate) async fn claim_due(
    pool: &PgPool,
    (limit, per_minute): (i64, i64),
    lease: Duration,
    (token_ttl, reset_ttl): (Duration, Duration),
) -> anyhow::Result<Claim> {
    // A token for each mail the claim may take; the n-th verification mail claimed (by id) gets the n-th.
    let tokens = (0..limit).map(|_| Token::generate()).collect::<Result<Vec<_>, _>>()?;
    let hashes: Vec<Vec<u8>> = tokens.iter().map(Token::hash).collect();
    let rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM)
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(per_minute)
        .bind(token_ttl.as_secs_f64())
        .bind(&hashes)
        .bind(Kind::Verification.as_str())
        .bind(Kind::PasswordReset.as_str())
        .bind(reset_ttl.as_secs_f64())
        .fetch_all(pool)
        .await?;
    let (remaining, more_due) = rows.first().map_or((0, false), |row| (row.remaining, row.more_due));
    let (mails, stale) = sort(rows, &tokens);
    let mut claim = Claim { mails, more_due, ..Claim::default() };
    claim.superseded = supersede(pool, &stale).await?;
    // The budget decided when it left less than was asked for, and the claim took all it left.
    let claimed = i64::try_from(claim.mails.len() + claim.superseded).unwrap_or(i64::MAX);
    claim.budget_bound = remaining < limit && claimed == remaining;
    Ok(claim)
}

/// The claimed mails to attempt, each with the token issued for its link, and the ids of those that need a link
/// but got none (their account is no longer pending, or no longer verified): those are superseded.
fn sort(rows: Vec<ClaimedRow>, tokens: &[Token]) -> (Vec<Claimed>, Vec<Uuid>) {
    let (mut mails, mut stale) = (Vec::new(), Vec::new());
    for row in rows {
        let (Some(id), Some(kind), Some(recipient), Some(locale), Some(attempts)) =
            (row.id, row.kind, row.recipient, row.locale, row.attempts)
        else {
            continue;
        };
        if matches!(Kind::parse(&kind), Some(Kind::Verification | Kind::PasswordReset)) && row.token_hash.is_none() {
            stale.push(id);
            continue;
        }
        let token = row.token_hash.and_then(|hash| tokens.iter().find(|t| t.hash() == hash).cloned());
        mails.push(Claimed { id, kind, recipient, locale, attempts, token, trace: row.trace });
    }
    (mails, stale)
}

/// The claim, in one statement: the budget left, the due mails locked and leased, the budget charged, each claimed
/// verification mail's pending account locked and its token stored. Returns one row per claimed mail, or one
/// without a mail when none was claimed; each says whether more was due than the claim could take (the statement's
/// snapshot still shows the mails it claims as due, so it looks past as many as it could take).
const CLAIM: &str = "\
WITH budget AS ( \
  SELECT greatest($3 - coalesce(sum(attempts), 0), 0) AS remaining \
  FROM mail_budget WHERE second > now() - interval '1 minute'), \
due AS ( \
  SELECT id FROM mails WHERE status = 'pending' AND next_attempt_at <= now() \
  ORDER BY next_attempt_at LIMIT least($1, (SELECT remaining FROM budget)) FOR UPDATE SKIP LOCKED), \
claimed AS ( \
  UPDATE mails m SET attempts = m.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
  FROM due WHERE m.id = due.id \
  RETURNING m.id, m.kind, m.user_id, m.recipient, m.locale, m.attempts, m.traceparent, m.tracestate), \
charged AS ( \
  INSERT INTO mail_budget (second, attempts) SELECT date_trunc('second', now()), count(*) FROM claimed \
  HAVING count(*) > 0 \
  ON CONFLICT (second) DO UPDATE SET attempts = mail_budget.attempts + excluded.attempts), \
numbered AS ( \
  SELECT id, user_id, kind, row_number() OVER (ORDER BY id) AS n FROM claimed WHERE kind IN ($6, $7)), \
eligible AS ( \
  SELECT user_id, verified_at IS NOT NULL AS verified FROM accounts \
  WHERE user_id IN (SELECT user_id FROM numbered) FOR SHARE), \
issued AS ( \
  INSERT INTO tokens (token_hash, mail_id, user_id, expires_at) \
  SELECT t.hash, n.id, n.user_id, now() + make_interval(secs => CASE WHEN n.kind = $7 THEN $8 ELSE $4 END) \
  FROM numbered n JOIN unnest($5::bytea[]) WITH ORDINALITY AS t(hash, i) ON t.i = n.n \
  WHERE EXISTS (SELECT 1 FROM eligible e WHERE e.user_id = n.user_id AND e.verified = (n.kind = $7)) \
  RETURNING mail_id, token_hash) \
SELECT c.id, c.kind, c.recipient, c.locale, c.attempts, b.remaining, i.token_hash, c.traceparent, c.tracestate, \
  EXISTS (SELECT 1 FROM mails WHERE status = 'pending' AND next_attempt_at <= now() \
    OFFSET least($1, b.remaining)) AS more_due \
FROM budget b LEFT JOIN claimed c ON true LEFT JOIN issued i ON i.mail_id = c.id";

/// Marks verification mails whose account is no longer pending as superseded; returns how many.
async fn supersede(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query("UPDATE mails SET status = 'superseded' WHERE id = ANY($1) AND status = 'pending'")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(ids.len())
}

/// Whether mail is due now (asked only when the global budget decided a claim: then due mail is being held back).
pub(crate) async fn held_back(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mails WHERE status = 'pending' AND next_attempt_at <= now())")
        .fetch_one(pool)
        .await
}

/// How one delivery attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The server took it.
    Sent,
    /// It will never be delivered.
    Failed(String),
    /// Try again after the pause.
    Retry(Duration, String),
}

/// Records the outcome of an attempt on `mail_id`.
pub(crate) async fn record(pool: &PgPool, mail_id: Uuid, outcome: &Outcome) -> sqlx::Result<()> {
    let query = match outcome {
        // The deleted account's last mail keeps no address once it is sent.
        Outcome::Sent => sqlx::query(
            "UPDATE mails SET status = 'sent', sent_at = now(), last_error = NULL, \
               recipient = CASE WHEN kind = 'account_deleted' THEN '' ELSE recipient END \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(mail_id),
        // Nor once it failed (the server's answer may name the address too).
        Outcome::Failed(error) => sqlx::query(
            "UPDATE mails SET status = 'failed', \
               last_error = CASE WHEN kind = 'account_deleted' THEN 'failed (the address is not kept)' ELSE $2 END, \
               recipient = CASE WHEN kind = 'account_deleted' THEN '' ELSE recipient END \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(mail_id)
        .bind(error),
        Outcome::Retry(pause, error) => sqlx::query(
            "UPDATE mails SET next_attempt_at = now() + make_interval(secs => $2), \
               last_error = CASE WHEN kind = 'account_deleted' THEN 'retrying (the answer is not kept)' ELSE $3 END \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(mail_id)
        .bind(pause.as_secs_f64())
        .bind(error),
    };
    query.execute(pool).await.map(drop)
}

/// Mails waiting to go out, and the age of the oldest: exported as metrics. Also forgets the budget's seconds
/// that have left the window.
pub(crate) async fn queue_lag(pool: &PgPool) -> sqlx::Result<(i64, Option<f64>)> {
    sqlx::query("DELETE FROM mail_budget WHERE second < now() - interval '2 minutes'").execute(pool).await?;
    sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM mails WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}
