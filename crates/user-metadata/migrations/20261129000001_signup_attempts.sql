-- One verification: a pending account may have several signup attempts, each with its own profile (and, in the
-- password service, its own password, and in email-verification its own link). The attempt whose link is
-- confirmed with its password becomes the account's; the others are removed then.
CREATE TABLE signup_attempts (
    signup_id    uuid        PRIMARY KEY,   -- UUID v7 chosen by signup-api
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display_name text        NOT NULL,
    locale       text        NOT NULL DEFAULT '',
    discoverable boolean     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signup_attempts_user ON signup_attempts (user_id, created_at);

-- An Idempotency-Key belongs to the email it was first used with. Keys from before this column have none and
-- expire within IDEMPOTENCY_KEY_TTL_HOURS. (`signup_id` and `completed` are no longer written: a signup is one
-- transaction now. They stay until the release after, so the previous release can run beside this schema.)
ALTER TABLE idempotency_keys ADD COLUMN email text;

-- The relay wakes when an event is written: the insert notifies (at commit), so the transaction that writes an
-- event needs no statement of its own for it.
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
