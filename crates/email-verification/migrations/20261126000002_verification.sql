-- What email-verification knows about each account it has mailed: enough to resend, and which mail's tokens
-- currently work. Filled from UserSignedUp; a user's email never changes.
CREATE TABLE accounts (
    user_id         uuid        PRIMARY KEY,
    email           text        NOT NULL,
    display_name    text        NOT NULL,
    locale          text        NOT NULL DEFAULT '',
    -- The signup attempt the account reflects (UUID v7, so newer attempts sort later).
    signup_id       uuid        NOT NULL,
    -- Only the tokens of this verification mail confirm the account; a newer signup or a resend moves it.
    current_mail_id uuid,
    verified_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_email ON accounts (email);

-- The outgoing mail queue and the log of what was sent. A mail caused by an event has the event's id, so a
-- redelivered event can never queue a second one; the Message-ID is derived from the id.
CREATE TABLE mails (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('verification', 'existing_account_notice')),
    user_id         uuid        NOT NULL,
    recipient       text        NOT NULL,
    display_name    text        NOT NULL DEFAULT '',
    locale          text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sent', 'failed', 'superseded')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX mails_due ON mails (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mails_user ON mails (user_id);

-- Verification tokens, by SHA-256 of the token: the token itself exists only in the mail. One mail may have
-- several (one per delivery attempt, since an attempt that timed out may still have been delivered).
CREATE TABLE tokens (
    token_hash bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    mail_id    uuid        NOT NULL REFERENCES mails (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX tokens_user ON tokens (user_id);

-- Fixed-window counters that bound mail per address: resends, and notices about existing accounts.
CREATE TABLE send_limits (
    recipient         text        NOT NULL,
    kind              text        NOT NULL,
    window_started_at timestamptz NOT NULL,
    count             integer     NOT NULL,
    PRIMARY KEY (recipient, kind)
);
