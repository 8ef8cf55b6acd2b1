-- Users, the outbox their events are written to, and idempotency keys. Owned by user-metadata alone.
CREATE TABLE users (
    id                  uuid        PRIMARY KEY,      -- UUID v7: time-ordered, so inserts stay at the index tail
    email               text        NOT NULL UNIQUE,  -- normalised by signup-api before it gets here
    display_name        text        NOT NULL,
    locale              text        NOT NULL DEFAULT '',
    discoverable        boolean     NOT NULL DEFAULT true,
    status              text        NOT NULL DEFAULT 'registering'
                        CHECK (status IN ('registering', 'pending_verification', 'verified')),
    -- The current signup attempt; a later attempt on a registering or pending account replaces it.
    signup_id           uuid        NOT NULL,
    -- The attempt whose UserSignedUp is in the outbox; equal to signup_id once that attempt completed.
    announced_signup_id uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    verified_at         timestamptz
);

CREATE INDEX users_status_created ON users (status, created_at);

-- Events are inserted here in the same transaction as the change they describe, and published by the relay.
CREATE TABLE outbox (
    id              uuid        PRIMARY KEY,          -- the event id, also the CloudEvents id
    event_type      text        NOT NULL,             -- e.g. signup.events.v1.UserSignedUp
    payload         bytea       NOT NULL,             -- protobuf
    traceparent     text,                             -- W3C trace context of the request that caused it
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (next_attempt_at, created_at) WHERE published_at IS NULL;

-- Client idempotency keys of POST /v1/signups. The fingerprint is a keyed hash of the whole request, so a retry
-- with another body is told apart without storing the body (it holds a password).
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    fingerprint  bytea       NOT NULL,
    user_id      uuid,
    signup_id    uuid,
    completed    boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Keys expire (IDEMPOTENCY_KEY_TTL_HOURS): a retry is a matter of minutes, and a fingerprint kept forever would
-- be a fast check of the password it was made with for anyone holding both this table and the hash key.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
