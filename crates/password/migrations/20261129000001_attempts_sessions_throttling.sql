-- One verification: a signup attempt's password is not the account's until that attempt's email link is confirmed
-- with it. `credentials` holds each account's own password (the promoted attempt); `attempt_credentials` holds
-- the password of every attempt not promoted yet.
ALTER TABLE credentials RENAME COLUMN version TO signup_id;
COMMENT ON COLUMN credentials.signup_id IS 'the signup attempt this password came from';

CREATE TABLE attempt_credentials (
    -- UUID v7 chosen by signup-api; user-metadata records the attempt under the same id.
    signup_id  uuid        PRIMARY KEY,
    -- HMAC-SHA256 of the attempt's email: the credential opens sessions for that email only, and promoting one
    -- attempt discards every other attempt of the same email.
    email_hash bytea       NOT NULL CHECK (octet_length(email_hash) = 32),
    phc        text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempt_credentials_email ON attempt_credentials (email_hash);
CREATE INDEX attempt_credentials_created ON attempt_credentials (created_at);

-- Sessions, by SHA-256 of their bearer token: the token itself exists only with the client.
CREATE TABLE sessions (
    token_hash      bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id         uuid        NOT NULL,
    -- The attempt an unverified account's session was opened with; NULL for a session of the account's own
    -- password. Promoting another attempt ends it.
    signup_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    idle_expires_at timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Consecutive failed sign-ins per email hash (for emails with and without an account alike); a success removes
-- the row.
CREATE TABLE login_failures (
    email_hash      bytea       PRIMARY KEY CHECK (octet_length(email_hash) = 32),
    failures        integer     NOT NULL,
    last_failure_at timestamptz NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_failure_at);
