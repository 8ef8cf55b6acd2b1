//! The email-verification database: accounts it has mailed, the mail queue, token hashes and per-address limits.
//! Every function that changes state takes the transaction it is part of, so callers commit an effect together
//! with the event id that caused it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::mail::Kind;

/// The channel that wakes the sender when mail is queued.
pub(crate) const MAIL_CHANNEL: &str = "mail_queue";

/// A verification token as it travels in the link: 256 random bits, base64url without padding (43 characters).
/// Never stored: the database holds only [`Token::hash`].
pub(crate) struct Token(String);

impl Token {
    /// A fresh token from the operating system's CSPRNG (through the thread-local generator it seeds).
    pub(crate) fn generate() -> Self {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token as presented by a client, if it has the shape of one (no database lookup for anything else).
    pub(crate) fn parse(presented: &str) -> Option<Self> {
        let shaped =
            presented.len() == 43 && presented.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        shaped.then(|| Self(presented.to_owned()))
    }

    /// What the database stores and looks up.
    pub(crate) fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The token itself, for the link in the mail.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// An account as UserSignedUp describes it.
#[derive(Debug)]
pub(crate) struct SignedUp<'a> {
    pub(crate) user_id: Uuid,
    pub(crate) signup_id: Uuid,
    pub(crate) email: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) locale: &'a str,
}

/// Applies a UserSignedUp: records the account and, if this signup is the account's newest and the account is
/// not verified, queues the verification mail `mail_id` and makes it the only one whose tokens work. Returns
/// whether a mail was queued.
pub(crate) async fn signed_up(conn: &mut PgConnection, mail_id: Uuid, account: &SignedUp<'_>) -> sqlx::Result<bool> {
    let deleted: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1)")
        .bind(account.user_id)
        .fetch_one(&mut *conn)
        .await?;
    if deleted {
        return Ok(false);
    }
    let current: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO accounts (user_id, email, display_name, locale, signup_id, current_mail_id) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, locale = excluded.locale, \
           signup_id = excluded.signup_id, current_mail_id = excluded.current_mail_id, updated_at = now() \
         WHERE accounts.signup_id < excluded.signup_id AND accounts.verified_at IS NULL \
         RETURNING user_id",
    )
    .bind(account.user_id)
    .bind(account.email)
    .bind(account.display_name)
    .bind(account.locale)
    .bind(account.signup_id)
    .bind(mail_id)
    .fetch_optional(&mut *conn)
    .await?;
    if current.is_none() {
        return Ok(false);
    }
    queue(conn, mail_id, Kind::Verification, account.user_id, account.email, account.display_name, account.locale)
        .await?;
    Ok(true)
}

/// Queues a mail and wakes the sender (at commit).
pub(crate) async fn queue(
    conn: &mut PgConnection,
    mail_id: Uuid,
    kind: Kind,
    user_id: Uuid,
    recipient: &str,
    display_name: &str,
    locale: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO mails (id, kind, user_id, recipient, display_name, locale) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(mail_id)
    .bind(kind.as_str())
    .bind(user_id)
    .bind(recipient)
    .bind(display_name)
    .bind(locale)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(MAIL_CHANNEL).execute(&mut *conn).await?;
    Ok(())
}

/// Counts one more mail of `kind` to `recipient` in a fixed window; returns whether it stays within `limit`.
/// Concurrent callers serialise on the counter's row, so the limit holds across replicas.
pub(crate) async fn within_limit(
    conn: &mut PgConnection,
    recipient: &str,
    kind: &str,
    limit: i32,
    window: Duration,
) -> sqlx::Result<bool> {
    let (count,): (i32,) = sqlx::query_as(
        "INSERT INTO send_limits (recipient, kind, window_started_at, count) VALUES ($1, $2, now(), 1) \
         ON CONFLICT (recipient, kind) DO UPDATE SET \
           window_started_at = CASE WHEN send_limits.window_started_at <= now() - make_interval(secs => $3) \
                                    THEN now() ELSE send_limits.window_started_at END, \
           count = CASE WHEN send_limits.window_started_at <= now() - make_interval(secs => $3) \
                        THEN 1 ELSE send_limits.count + 1 END \
         RETURNING count",
    )
    .bind(recipient)
    .bind(kind)
    .bind(window.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    Ok(count <= limit)
}

/// The pending account with this email, locked for the resend that follows.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PendingAccount {
    pub(crate) user_id: Uuid,
    pub(crate) display_name: String,
    pub(crate) locale: String,
}

/// The unverified account registered under `email`, if any, locked until the transaction ends.
pub(crate) async fn pending_account(conn: &mut PgConnection, email: &str) -> sqlx::Result<Option<PendingAccount>> {
    sqlx::query_as(
        "SELECT user_id, display_name, locale FROM accounts WHERE email = $1 AND verified_at IS NULL \
         ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
    )
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// Makes `mail_id` the account's only verification mail whose tokens work.
pub(crate) async fn supersede(conn: &mut PgConnection, user_id: Uuid, mail_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE accounts SET current_mail_id = $2, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .bind(mail_id)
        .execute(conn)
        .await
        .map(drop)
}

/// The condition under which a token confirms its account: known, unused, unexpired, from the account's current
/// mail, and the account not verified yet.
const VALID_TOKEN: &str = "t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() \
                           AND a.current_mail_id = t.mail_id AND a.verified_at IS NULL";

/// The account a token would confirm, if it is valid now. Takes no lock: [`consume`] checks again.
pub(crate) async fn valid_token(pool: &PgPool, token: &Token) -> sqlx::Result<Option<Uuid>> {
    let query = format!("SELECT t.user_id FROM tokens t JOIN accounts a ON a.user_id = t.user_id WHERE {VALID_TOKEN}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(token.hash()).fetch_optional(pool).await
}

/// Uses the token and marks the account verified, in one transaction, if the token is still valid under the row
/// locks; returns whether it was (a concurrent confirm waits on the lock and then finds it used).
pub(crate) async fn consume(
    pool: &PgPool,
    token: &Token,
    user_id: Uuid,
    verified_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    // The account may already show as verified: the EmailVerified that user-metadata just broadcast can arrive
    // before this transaction. The token itself must still be unused.
    let query = "SELECT t.user_id FROM tokens t JOIN accounts a ON a.user_id = t.user_id \
                 WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() \
                   AND a.current_mail_id = t.mail_id \
                 FOR UPDATE OF t, a";
    let locked: Option<Uuid> = sqlx::query_scalar(query).bind(token.hash()).fetch_optional(&mut *tx).await?;
    if locked != Some(user_id) {
        return Ok(false);
    }
    sqlx::query("UPDATE tokens SET used_at = $2 WHERE token_hash = $1")
        .bind(token.hash())
        .bind(verified_at)
        .execute(&mut *tx)
        .await?;
    mark_verified(&mut tx, user_id, verified_at).await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks the account verified, which ends all of its tokens. Idempotent.
pub(crate) async fn mark_verified(conn: &mut PgConnection, user_id: Uuid, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query("UPDATE accounts SET verified_at = $2, updated_at = now() WHERE user_id = $1 AND verified_at IS NULL")
        .bind(user_id)
        .bind(at)
        .execute(conn)
        .await
        .map(drop)
}

/// Removes everything held about a user (account, queued and logged mail, tokens) and remembers the removal.
pub(crate) async fn delete_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM mails WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM tokens WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM accounts WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// A mail claimed for one delivery attempt.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Claimed {
    pub(crate) id: Uuid,
    pub(crate) kind: String,
    pub(crate) user_id: Uuid,
    pub(crate) recipient: String,
    pub(crate) display_name: String,
    pub(crate) locale: String,
    pub(crate) attempts: i32,
}

/// Claims up to `limit` due mails for one attempt each. A claim is a lease: the row is not due again until
/// `lease` has passed, so a sender that crashes mid-attempt delays the mail but never loses it, and replicas
/// never attempt the same mail at the same time.
pub(crate) async fn claim_due(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "UPDATE mails SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM mails WHERE status = 'pending' AND next_attempt_at <= now() \
                      ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, user_id, recipient, display_name, locale, attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Before a verification mail goes out: if it is still the account's current one and the account is not
/// verified, stores the hash of a new token for it and returns the token; otherwise marks the mail superseded.
pub(crate) async fn issue_token(pool: &PgPool, mail: &Claimed, ttl: Duration) -> sqlx::Result<Option<Token>> {
    let mut tx = pool.begin().await?;
    let current: Option<(Uuid,)> = sqlx::query_as(
        "SELECT user_id FROM accounts WHERE user_id = $1 AND current_mail_id = $2 AND verified_at IS NULL FOR SHARE",
    )
    .bind(mail.user_id)
    .bind(mail.id)
    .fetch_optional(&mut *tx)
    .await?;
    if current.is_none() {
        sqlx::query("UPDATE mails SET status = 'superseded' WHERE id = $1 AND status = 'pending'")
            .bind(mail.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(None);
    }
    let token = Token::generate();
    sqlx::query(
        "INSERT INTO tokens (token_hash, mail_id, user_id, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(token.hash())
    .bind(mail.id)
    .bind(mail.user_id)
    .bind(ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(token))
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
        Outcome::Sent => sqlx::query(
            "UPDATE mails SET status = 'sent', sent_at = now(), last_error = NULL WHERE id = $1 AND status = 'pending'",
        )
        .bind(mail_id),
        Outcome::Failed(error) => {
            sqlx::query("UPDATE mails SET status = 'failed', last_error = $2 WHERE id = $1 AND status = 'pending'")
                .bind(mail_id)
                .bind(error)
        }
        Outcome::Retry(pause, error) => sqlx::query(
            "UPDATE mails SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(mail_id)
        .bind(pause.as_secs_f64())
        .bind(error),
    };
    query.execute(pool).await.map(drop)
}

/// Mails waiting to go out, and the age of the oldest: exported as metrics.
pub(crate) async fn queue_lag(pool: &PgPool) -> sqlx::Result<(i64, Option<f64>)> {
    sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM mails WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_only_their_shape_is_accepted() {
        let token = Token::generate();
        assert_eq!(token.expose().len(), 43);
        assert!(Token::parse(token.expose()).is_some());
        assert_ne!(Token::generate().expose(), token.expose());
        assert_eq!(token.hash().len(), 32);
        assert!(Token::parse("short").is_none());
        assert!(Token::parse(&format!("{}=", &token.expose()[..42])).is_none());
        assert_eq!(format!("{token:?}"), "Token([redacted])");
    }
}
