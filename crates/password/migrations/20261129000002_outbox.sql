-- PasswordChanged is inserted here in the transaction that changes the credential, and published by the relay
-- (platform::outbox), as user-metadata's events are from its own outbox.
CREATE TABLE outbox (
    id              uuid        PRIMARY KEY,
    event_type      text        NOT NULL,
    payload         bytea       NOT NULL,
    traceparent     text,
    tracestate      text,
    user_id         uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (next_attempt_at, created_at) WHERE published_at IS NULL;
CREATE INDEX outbox_user ON outbox (user_id) WHERE user_id IS NOT NULL;

CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
