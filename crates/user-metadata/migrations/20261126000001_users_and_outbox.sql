-- Users, and the transactional outbox their events are written to. Owned by user-metadata alone.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,            -- UUID v7: time-ordered, so inserts stay at the index tail
    email         text        NOT NULL UNIQUE,        -- normalised by signup-api before it gets here
    display_name  text        NOT NULL,
    locale        text        NOT NULL DEFAULT '',
    discoverable  boolean     NOT NULL DEFAULT true,
    status        text        NOT NULL DEFAULT 'registering'
                  CHECK (status IN ('registering', 'pending_verification', 'verified')),
    -- The current signup attempt; a later attempt on a pending account replaces it.
    signup_id     uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    verified_at   timestamptz
);

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
