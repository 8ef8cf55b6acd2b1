//! The email-verification database: accounts it has mailed, the mail queue, token hashes and per-address limits.
//! Every function that changes state takes the transaction it is part of, so callers commit an effect together
//! with the event id that caused it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::token::Token;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{mail::Kind, settings::MailBudget};

pub(crate) mod admin;
mod queue;

pub(crate) use queue::{Claimed, Outcome, claim_due, held_back, queue_lag, record};

/// The channel that wakes the sender when mail is queued (the `mails` table's insert trigger notifies it).
pub(crate) const MAIL_CHANNEL: &str = "mail_queue";

/// What became of a mail someone asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// It is in the queue.
    Yes,
    /// The address's mail budget is spent: not queued, and nobody is told.
    OverBudget,
    /// Nothing to send: the account is verified, deleted, unknown, or the notice interval has not passed.
    NotNeeded,
}

impl Queued {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Yes => "queued",
            Self::OverBudget => "over_budget",
            Self::NotNeeded => "not_needed",
        }
    }
}

/// A signup attempt as UserSignedUp describes it.
#[derive(Debug)]
pub(crate) struct SignedUp<'a> {
    pub(crate) user_id: Uuid,
    pub(crate) signup_id: Uuid,
    pub(crate) email: &'a str,
    pub(crate) locale: &'a str,
    /// The keyed hash of the client that signed up, or empty.
    pub(crate) client_hash: &'a [u8],
}

/// The expression that takes the lock on the budget of the mailbox of `$recipient` (a statement parameter), held
/// until the transaction ends: [`lock_address`], or a statement that takes it on the way.
macro_rules! address_lock {
    ($recipient:literal) => {
        concat!("pg_advisory_xact_lock(hashtextextended('mail budget ' || mailbox(", $recipient, "), 0))")
    };
}

/// Records a UserSignedUp's account (`$1` user, `$2` email, `$3` locale; `$4`, the attempt, becomes its newest if it
/// is newer, and the account's language then the attempt's) and, while it is pending, the attempt; whether it is
/// pending, with the address's budget locked (a round trip less than locking it after). No row for a user deleted
/// before (a tombstone).
const RECORD_ATTEMPT: &str = concat!(
    "WITH account AS ( \
       INSERT INTO accounts (user_id, email, display_name, locale, signup_id) \
       SELECT $1, $2, '', $3, $4 WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1) \
       ON CONFLICT (user_id) DO UPDATE SET \
         locale = CASE WHEN accounts.verified_at IS NULL AND accounts.signup_id < excluded.signup_id \
                       THEN excluded.locale ELSE accounts.locale END, \
         signup_id = greatest(accounts.signup_id, excluded.signup_id), updated_at = now() \
       RETURNING verified_at IS NULL AS pending), \
     attempt AS ( \
       INSERT INTO confirm_tries (signup_id, user_id, tries, locale) SELECT $4, $1, 0, $3 FROM account \
       WHERE pending ON CONFLICT (signup_id) DO NOTHING) \
     SELECT pending, ",
    address_lock!("$2"),
    " FROM account"
);

/// Applies a UserSignedUp: records the account (its newest attempt) and, unless it is verified or deleted, the
/// attempt (a resend names it) and queues its verification mail `mail_id` within the address's budget. Earlier
/// attempts' links keep working.
pub(crate) async fn signed_up(
    conn: &mut PgConnection,
    mail_id: Uuid,
    attempt: &SignedUp<'_>,
    budget: MailBudget,
) -> sqlx::Result<Queued> {
    // Nothing for a user deleted before this (late or redelivered) event: after the user's lock (the consumer loop
    // took it with the event's record), the insert sees the tombstone and selects no row.
    let pending: Option<bool> = sqlx::query_scalar(RECORD_ATTEMPT)
        .bind(attempt.user_id)
        .bind(attempt.email)
        .bind(attempt.locale)
        .bind(attempt.signup_id)
        .fetch_optional(&mut *conn)
        .await?;
    if pending != Some(true) {
        return Ok(Queued::NotNeeded);
    }
    // Under the address's lock, taken with the attempt.
    let mail = NewMail {
        id: mail_id,
        kind: Kind::Verification,
        user_id: Some(attempt.user_id),
        recipient: attempt.email,
        locale: attempt.locale,
        signup_id: Some(attempt.signup_id),
        client_hash: attempt.client_hash,
    };
    Ok(if insert_mail(conn, &mail, Some(budget)).await? { Queued::Yes } else { Queued::OverBudget })
}

/// Applies a SignupAttemptedForExistingAccount: queues the notice `mail_id`, at most one per address per
/// `interval`, within the address's budget and its client's share of it. The interval is spent only by a notice
/// queued: one refused for the budget leaves the next attempt free to tell the owner.
pub(crate) async fn existing_account(
    conn: &mut PgConnection,
    mail: &NewMail<'_>,
    interval: Duration,
    budget: MailBudget,
) -> sqlx::Result<Queued> {
    // Nothing for a user deleted before this (late, redelivered or replayed) event: no mail to a deleted account.
    // The consumer loop took the user's lock with the event's record.
    if let Some(user_id) = mail.user_id
        && platform::events::was_deleted(conn, user_id).await?
    {
        return Ok(Queued::NotNeeded);
    }
    lock_address(conn, mail.recipient).await?;
    let due: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM send_limits WHERE recipient = $1 AND kind = $2 \
           AND window_started_at > now() - make_interval(secs => $3))",
    )
    .bind(mail.recipient)
    .bind(mail.kind.as_str())
    .bind(interval.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    if !due {
        return Ok(Queued::NotNeeded);
    }
    if !insert_mail(conn, mail, Some(budget)).await? {
        return Ok(Queued::OverBudget);
    }
    // The interval starts with the notice queued (the address's lock, held, orders concurrent notices).
    sqlx::query(
        "INSERT INTO send_limits (recipient, kind, window_started_at, count) VALUES ($1, $2, now(), 1) \
         ON CONFLICT (recipient, kind) DO UPDATE SET window_started_at = now(), count = 1",
    )
    .bind(mail.recipient)
    .bind(mail.kind.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(Queued::Yes)
}

/// Begins the transaction of a request that answers alike for known and unknown addresses (a resend, a reset
/// request): its commit does not wait for the disk, so a known address's queued mail costs no flush that an unknown
/// one's request does not (a delay that would tell whether an account exists). A crash of Postgres within moments of
/// the answer may lose that mail; whoever asked asks again.
pub(crate) async fn begin_alike(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await
}

/// A resend: a new verification mail for attempt `signup_id` of the pending account with `email`, within the
/// address's budget, unless the account has no such attempt (only whoever made an attempt was told its id: nobody
/// else's resend mails anything, and nobody is mailed a stranger's link) or the attempt has spent its `tries` (its
/// links can never confirm: a mail would only spend the budget). The mail is in the attempt's language, not the
/// account's (which follows its newest attempt, maybe a stranger's). The budget is checked (and its lock taken) for
/// every address, known or not, so the work does not depend on whether an account exists.
pub(crate) async fn resend(
    conn: &mut PgConnection,
    (email, client_hash): (&str, &[u8]),
    signup_id: Uuid,
    budget: MailBudget,
    tries: i32,
) -> sqlx::Result<Queued> {
    let within = lock_budget(conn, email, client_hash, budget).await?;
    let account: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT a.user_id, c.signup_id, coalesce(nullif(c.locale, ''), a.locale) \
         FROM accounts a JOIN confirm_tries c ON c.user_id = a.user_id \
         WHERE a.email = $1 AND a.verified_at IS NULL AND c.signup_id = $2 AND c.tries < $3",
    )
    .bind(email)
    .bind(signup_id)
    .bind(tries)
    .fetch_optional(&mut *conn)
    .await?;
    let known = account.is_some();
    let Some((user_id, signup_id, locale)) = account.filter(|_| within) else {
        return queue_nothing(conn, (email, client_hash), budget, known).await;
    };
    let mail = NewMail {
        id: Uuid::now_v7(),
        kind: Kind::Verification,
        user_id: Some(user_id),
        recipient: email,
        locale: &locale,
        signup_id: Some(signup_id),
        client_hash,
    };
    insert_mail(conn, &mail, None).await?;
    Ok(Queued::Yes)
}

/// A password reset asked for `email`: a reset mail (its link's token issued when it is sent) for a verified
/// account, a "sign up again" notice for a pending one, nothing for an unknown address; within the address's
/// budget, whose lock is taken for every address so the work does not depend on whether an account exists.
pub(crate) async fn request_password_reset(
    conn: &mut PgConnection,
    email: &str,
    client_hash: &[u8],
    budget: MailBudget,
) -> sqlx::Result<Queued> {
    let within = lock_budget(conn, email, client_hash, budget).await?;
    let account: Option<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT user_id, locale, verified_at IS NOT NULL FROM accounts WHERE email = $1 \
         ORDER BY verified_at DESC NULLS LAST, created_at DESC LIMIT 1",
    )
    .bind(email)
    .fetch_optional(&mut *conn)
    .await?;
    let known = account.is_some();
    let Some((user_id, locale, verified)) = account.filter(|_| within) else {
        return queue_nothing(conn, (email, client_hash), budget, known).await;
    };
    let kind = if verified { Kind::PasswordReset } else { Kind::ResetNotVerified };
    let mail = NewMail {
        id: Uuid::now_v7(),
        kind,
        user_id: Some(user_id),
        recipient: email,
        locale: &locale,
        signup_id: None,
        client_hash,
    };
    insert_mail(conn, &mail, None).await?;
    Ok(Queued::Yes)
}

/// What a resend or reset request that queues no mail (no such account, or a spent budget) does instead of the
/// insert: the budget count the insert makes, so the statements, and their round trips, are the same whether or not
/// an account exists. Returns why nothing was queued.
async fn queue_nothing(
    conn: &mut PgConnection,
    (email, client_hash): (&str, &[u8]),
    budget: MailBudget,
    known: bool,
) -> sqlx::Result<Queued> {
    count_budget(conn, email, client_hash, budget).await?;
    Ok(if known { Queued::OverBudget } else { Queued::NotNeeded })
}

/// The live reset token's verified account: its id and address. Uses nothing. Live: unexpired, and unused or
/// used only by its own reset, which a retry may finish (it may never have reached password).
pub(crate) async fn reset_account(pool: &PgPool, token: &Token) -> sqlx::Result<Option<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT a.user_id, a.email FROM tokens t JOIN mails m ON m.id = t.mail_id JOIN accounts a ON a.user_id = t.user_id \
         WHERE t.token_hash = $1 AND m.kind = $2 AND a.verified_at IS NOT NULL \
           AND t.expires_at > now() AND (t.used_at IS NULL OR t.consumed_at IS NOT NULL)",
    )
    .bind(token.hash())
    .bind(Kind::PasswordReset.as_str())
    .fetch_optional(pool)
    .await
}

/// Uses a live reset token and ends every other reset link of its account with it: an older reset mail must not
/// take the account back. Returns the account and when the link was asked for (its mail queued): password sets
/// the new password only if it was not set since, so the link sets one password however often its reset is tried
/// (a retry, after password failed to answer, uses the token again and gets the same answer).
pub(crate) async fn consume_reset(pool: &PgPool, token: &Token) -> sqlx::Result<Option<(Uuid, DateTime<Utc>)>> {
    let mut tx = pool.begin().await?;
    // The account's lock first, as the consumers take it: two links of one account used at once (or a use and a
    // PasswordChanged) take turns. Each locking its own link first and then ending the other's was a deadlock.
    sqlx::query(concat!("SELECT ", platform::user_lock!("user_id"), " FROM tokens WHERE token_hash = $1"))
        .bind(token.hash())
        .execute(&mut *tx)
        .await?;
    let used: Option<(Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
        "UPDATE tokens t SET used_at = coalesce(t.used_at, now()), consumed_at = coalesce(t.consumed_at, now()) \
         FROM mails m WHERE m.id = t.mail_id AND t.token_hash = $1 AND m.kind = $2 \
           AND t.expires_at > now() AND (t.used_at IS NULL OR t.consumed_at IS NOT NULL) \
         RETURNING t.user_id, m.created_at, t.consumed_at = now()",
    )
    .bind(token.hash())
    .bind(Kind::PasswordReset.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    // The first use ends the others; a retry spares any link asked for since.
    if let Some((user_id, _, true)) = used {
        end_reset_links(&mut tx, user_id, None, Some(token)).await?;
    }
    tx.commit().await?;
    Ok(used.map(|(user_id, asked_at, _)| (user_id, asked_at)))
}

/// Ends every reset link of `user_id` (its password was just reset or changed) asked for up to `until` (all, when
/// `None`), but `using`'s: the reset mails not yet sent (a mail being retried would otherwise get a fresh, live link
/// at its next claim) and the links of those sent, live or used by a reset that may be retried. A late
/// `PasswordChanged` thus spares a reset asked for after the change. The mails first: that waits for a claim under
/// way, whose link the second statement then sees and ends.
async fn end_reset_links(
    conn: &mut PgConnection,
    user_id: Uuid,
    until: Option<DateTime<Utc>>,
    using: Option<&Token>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE mails SET status = 'superseded' \
         WHERE user_id = $1 AND kind = $2 AND status = 'pending' AND ($3::timestamptz IS NULL OR created_at <= $3)",
    )
    .bind(user_id)
    .bind(Kind::PasswordReset.as_str())
    .bind(until)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE tokens t SET used_at = coalesce(t.used_at, now()), consumed_at = NULL FROM mails m \
         WHERE m.id = t.mail_id AND t.user_id = $1 AND m.kind = $2 AND (t.used_at IS NULL OR t.consumed_at IS NOT NULL) \
           AND ($3::timestamptz IS NULL OR m.created_at <= $3) AND t.token_hash IS DISTINCT FROM $4",
    )
    .bind(user_id)
    .bind(Kind::PasswordReset.as_str())
    .bind(until)
    .bind(using.map(Token::hash))
    .execute(conn)
    .await
    .map(drop)
}

/// A mail to queue.
#[derive(Debug)]
pub(crate) struct NewMail<'a> {
    /// For a mail an event caused, the event's id, so a redelivery can never queue a second one.
    pub(crate) id: Uuid,
    pub(crate) kind: Kind,
    /// `None` for the mail to an account its owner deleted: tied to no user.
    pub(crate) user_id: Option<Uuid>,
    pub(crate) recipient: &'a str,
    pub(crate) locale: &'a str,
    /// For a verification mail: the attempt its links belong to.
    pub(crate) signup_id: Option<Uuid>,
    /// The keyed hash of the client that asked for it (a signup, a resend, a reset request), or empty.
    pub(crate) client_hash: &'a [u8],
}

/// Applies a PasswordChanged made at `changed_at`: ends the account's reset links asked for before then and queues
/// the notice `mail_id` to its address.
/// The notice is outside the address's budget: only someone with the password (or a reset link) causes it, and
/// a budget spent by strangers' requests must never keep it from the owner.
pub(crate) async fn password_changed(
    conn: &mut PgConnection,
    mail_id: Uuid,
    user_id: Uuid,
    changed_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Queued> {
    // After the user's lock (the consumer loop took it with the event's record), a deletion applied at the same
    // moment has removed the account the notice is for.
    end_reset_links(conn, user_id, changed_at, None).await?;
    let account: Option<(String, String)> = sqlx::query_as(
        "SELECT email, locale FROM accounts WHERE user_id = $1 AND verified_at IS NOT NULL \
         ORDER BY verified_at DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((email, locale)) = account else { return Ok(Queued::NotNeeded) };
    let mail = NewMail {
        id: mail_id,
        kind: Kind::PasswordChanged,
        user_id: Some(user_id),
        recipient: &email,
        locale: &locale,
        signup_id: None,
        client_hash: &[],
    };
    insert_mail(conn, &mail, None).await?;
    Ok(Queued::Yes)
}

/// Queues the last mail to an account its owner deleted, tied to no user. Outside the address's budget: only
/// someone with the password causes it, and a budget spent by strangers' requests must never keep it from the owner.
pub(crate) async fn account_deleted(pool: &PgPool, recipient: &str, locale: &str) -> sqlx::Result<Queued> {
    let mut conn = pool.acquire().await?;
    let mail = NewMail {
        id: Uuid::now_v7(),
        kind: Kind::AccountDeleted,
        user_id: None,
        recipient,
        locale,
        signup_id: None,
        client_hash: &[],
    };
    insert_mail(&mut conn, &mail, None).await?;
    Ok(Queued::Yes)
}

/// The address's budget, in one place: a query whose `within` says whether one more mail to the recipient's mailbox
/// stays within the hourly and daily limits, counted over the mail queued to that mailbox (every spelling of it:
/// the database's `mailbox()` drops `+tags` and Gmail's dots) in the last hour and day, of which a known client's
/// own may be no more than its shares of the day and the hour. The arguments are the statement's parameters for the
/// recipient, the two limits, the client and its two shares.
macro_rules! within_budget {
    ($recipient:literal, $per_hour:literal, $per_day:literal, $client:literal, $per_client:literal, $per_client_hour:literal) => {
        concat!(
            "SELECT count(*) FILTER (WHERE created_at > now() - interval '1 hour') < ",
            $per_hour,
            " AND count(*) < ",
            $per_day,
            " AND (octet_length(",
            $client,
            ") = 0 OR (count(*) FILTER (WHERE client_hash = ",
            $client,
            ") < ",
            $per_client,
            " AND count(*) FILTER (WHERE client_hash = ",
            $client,
            " AND created_at > now() - interval '1 hour') < ",
            $per_client_hour,
            ")) AS within FROM mails WHERE mailbox(recipient) = mailbox(",
            $recipient,
            ") AND created_at > now() - interval '1 day'"
        )
    };
}

/// Whether one more mail to `recipient` stays within its budget. Holds a lock on the address until the
/// transaction ends, so concurrent callers (across replicas) count one after the other and the budget holds
/// exactly.
async fn lock_budget(
    conn: &mut PgConnection,
    recipient: &str,
    client_hash: &[u8],
    budget: MailBudget,
) -> sqlx::Result<bool> {
    lock_address(conn, recipient).await?;
    count_budget(conn, recipient, client_hash, budget).await
}

/// Whether one more mail to `recipient` stays within its budget, counted now.
async fn count_budget(
    conn: &mut PgConnection,
    recipient: &str,
    client_hash: &[u8],
    budget: MailBudget,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(within_budget!("$1", "$2", "$3", "$4", "$5", "$6"))
        .bind(recipient)
        .bind(budget.per_hour)
        .bind(budget.per_day)
        .bind(client_hash)
        .bind(budget.per_client_per_day)
        .bind(budget.per_client_per_hour)
        .fetch_one(conn)
        .await
}

/// The lock on a mailbox's budget, held until the transaction ends; what is counted after it, in a later
/// statement, sees every mail queued by whoever held it before.
async fn lock_address(conn: &mut PgConnection, recipient: &str) -> sqlx::Result<()> {
    sqlx::query(concat!("SELECT ", address_lock!("$1"))).bind(recipient).execute(conn).await.map(drop)
}

/// Queues a mail with the current trace context (its send continues the trace); the table's trigger wakes the
/// sender at commit. With a budget, only if one more mail to the recipient stays within it (the caller holds the
/// address's lock), counted in the same statement: a round trip less per mail.
/// Returns whether it is queued.
async fn insert_mail(conn: &mut PgConnection, mail: &NewMail<'_>, budget: Option<MailBudget>) -> sqlx::Result<bool> {
    let unbounded = MailBudget {
        per_hour: i64::MAX,
        per_day: i64::MAX,
        per_client_per_day: i64::MAX,
        per_client_per_hour: i64::MAX,
    };
    let budget = budget.unwrap_or(unbounded);
    let trace = platform::propagation::TraceContext::current();
    sqlx::query_scalar(concat!(
        "WITH sent AS (",
        within_budget!("$4", "$9", "$10", "$11", "$12", "$13"),
        "), \
         queued AS ( \
           INSERT INTO mails (id, kind, user_id, recipient, locale, signup_id, traceparent, tracestate, client_hash) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $11 FROM sent WHERE within ON CONFLICT (id) DO NOTHING) \
         SELECT within FROM sent",
    ))
    .bind(mail.id)
    .bind(mail.kind.as_str())
    .bind(mail.user_id)
    .bind(mail.recipient)
    .bind(mail.locale)
    .bind(mail.signup_id)
    .bind(trace.traceparent)
    .bind(trace.tracestate)
    .bind(budget.per_hour)
    .bind(budget.per_day)
    .bind(mail.client_hash)
    .bind(budget.per_client_per_day)
    .bind(budget.per_client_per_hour)
    .fetch_one(conn)
    .await
}

/// The condition under which a token may confirm its account: known, unused, unexpired, and the account not
/// verified yet. `t` is the token, `a` its account.
const LIVE_TOKEN: &str = "t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() AND a.verified_at IS NULL";

/// Starts a confirm with `token`: counts the try if the token is live and has tries left, and its signup attempt
/// too (over every link of it: a resend is a new link for the same attempt, not more guesses at its password), and
/// returns the account and attempt it belongs to. `(per_token, per_signup)` are the limits. The confirms of one
/// attempt take turns, so concurrent ones cannot exceed either.
pub(crate) async fn begin_confirmation(
    pool: &PgPool,
    token: &Token,
    (per_token, per_signup): (i32, i32),
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('confirm ' || m.signup_id::text, 0)) \
         FROM tokens t JOIN mails m ON m.id = t.mail_id WHERE t.token_hash = $1 AND m.signup_id IS NOT NULL",
    )
    .bind(token.hash())
    .execute(&mut *tx)
    .await?;
    let query = format!(
        "UPDATE tokens t SET confirm_attempts = t.confirm_attempts + 1 FROM accounts a, mails m \
         WHERE a.user_id = t.user_id AND m.id = t.mail_id AND m.signup_id IS NOT NULL AND {LIVE_TOKEN} \
           AND t.confirm_attempts < $2 \
           AND coalesce((SELECT tries FROM confirm_tries c WHERE c.signup_id = m.signup_id), 0) < $3 \
         RETURNING t.user_id, m.signup_id"
    );
    let begun: Option<(Uuid, Uuid)> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(token.hash())
        .bind(per_token)
        .bind(per_signup)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((user_id, signup_id)) = begun {
        sqlx::query(
            "INSERT INTO confirm_tries (signup_id, user_id, tries) VALUES ($1, $2, 1) \
             ON CONFLICT (signup_id) DO UPDATE SET tries = confirm_tries.tries + 1",
        )
        .bind(signup_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(begun)
}

/// Gives back an attempt [`begin_confirmation`] counted when no verdict on the password was reached.
pub(crate) async fn release_confirmation(pool: &PgPool, token: &Token) -> sqlx::Result<()> {
    sqlx::query(
        "WITH released AS ( \
           UPDATE tokens SET confirm_attempts = confirm_attempts - 1 \
           WHERE token_hash = $1 AND used_at IS NULL AND confirm_attempts > 0 RETURNING mail_id) \
         UPDATE confirm_tries c SET tries = c.tries - 1 FROM released r JOIN mails m ON m.id = r.mail_id \
         WHERE c.signup_id = m.signup_id AND c.tries > 0",
    )
    .bind(token.hash())
    .execute(pool)
    .await
    .map(drop)
}

/// The account `token` would confirm through attempt `signup_id`, if it still may. Takes no lock: [`consume`]
/// checks again.
pub(crate) async fn valid_token(pool: &PgPool, token: &Token, signup_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    let query = format!(
        "SELECT t.user_id FROM tokens t JOIN accounts a ON a.user_id = t.user_id JOIN mails m ON m.id = t.mail_id \
         WHERE {LIVE_TOKEN} AND m.signup_id = $2"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(token.hash()).bind(signup_id).fetch_optional(pool).await
}

/// Uses the token and marks the account verified through `signup_id`, in one transaction, if the token is still
/// unused under the row lock; returns whether it was (a concurrent confirm waits on the lock, then finds it used).
pub(crate) async fn consume(
    pool: &PgPool,
    token: &Token,
    user_id: Uuid,
    signup_id: Uuid,
    verified_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    // The account may already show as verified: the EmailVerified that user-metadata just broadcast can arrive
    // before this transaction. The token itself must still be unused.
    let locked: Option<Uuid> = sqlx::query_scalar(
        "SELECT t.user_id FROM tokens t JOIN mails m ON m.id = t.mail_id \
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() AND m.signup_id = $2 \
         FOR UPDATE OF t",
    )
    .bind(token.hash())
    .bind(signup_id)
    .fetch_optional(&mut *tx)
    .await?;
    if locked != Some(user_id) {
        return Ok(false);
    }
    sqlx::query("UPDATE tokens SET used_at = $2 WHERE token_hash = $1")
        .bind(token.hash())
        .bind(verified_at)
        .execute(&mut *tx)
        .await?;
    mark_verified(&mut tx, user_id, verified_at, Some(signup_id)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks the account verified (through `signup_id`, when known), which ends all of its tokens. Idempotent. The
/// account's language becomes the verifying attempt's (the one its mail was written in): until then it followed the
/// newest attempt, which may be a stranger's, and the owner's later mail must not come in the stranger's language.
pub(crate) async fn mark_verified(
    conn: &mut PgConnection,
    user_id: Uuid,
    at: DateTime<Utc>,
    signup_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE accounts SET verified_at = coalesce(verified_at, $2), \
           verified_signup_id = coalesce(verified_signup_id, $3), updated_at = now(), \
           locale = CASE WHEN verified_at IS NULL THEN coalesce( \
             (SELECT locale FROM mails WHERE user_id = $1 AND signup_id = $3 ORDER BY created_at DESC LIMIT 1), \
             locale) ELSE locale END \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(at)
    .bind(signup_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM confirm_tries WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// Removes everything held about a user (account, queued and logged mail, tokens) and remembers the removal.
/// The caller holds the user's lock (the consumer loop took it with the event's record).
pub(crate) async fn delete_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    platform::events::remember_deleted(conn, user_id).await?;
    sqlx::query("DELETE FROM mails WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM tokens WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM confirm_tries WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM accounts WHERE user_id = $1").bind(user_id).execute(conn).await.map(drop)
}

/// What is held about `user_id`, for its owner's export: when it was verified here and every mail queued to it,
/// never a token or a link (links exist only in the mail sent).
pub(crate) async fn export(
    pool: &PgPool,
    user_id: Uuid,
) -> sqlx::Result<proto::email_verification::v1::ExportAccountResponse> {
    use platform::time::to_proto;
    type Mail = (String, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>, i32);
    let verified_at: Option<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT max(verified_at) FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    let mails: Vec<Mail> = sqlx::query_as(
        "SELECT kind, status, created_at, sent_at, attempts FROM mails WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tokens \
             WHERE user_id = $1 AND (used_at IS NULL OR consumed_at IS NOT NULL) AND expires_at > now()",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(proto::email_verification::v1::ExportAccountResponse {
        verified_at: verified_at.flatten().map(to_proto),
        mails: mails
            .into_iter()
            .map(|(kind, status, queued, sent, attempts)| proto::email_verification::v1::ExportedMail {
                kind,
                status,
                queued_at: Some(to_proto(queued)),
                sent_at: sent.map(to_proto),
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect(),
        live_links: u32::try_from(live).unwrap_or(u32::MAX),
    })
}
