-- Idempotent consumption: an event's id is recorded in the same transaction as its effect, so a redelivery
-- finds it here and changes nothing.
CREATE TABLE processed_events (
    event_id     uuid        PRIMARY KEY,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
