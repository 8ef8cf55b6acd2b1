-- One verification: an unverified account's signup attempts wait here, each with its own profile and contacts;
-- the attempt whose link is confirmed becomes the member, and the rest are dropped. Contacts of an attempt that
-- is never verified never enter the graph.
CREATE TABLE pending_signups (
    signup_id      uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL,
    email_hash     bytea       NOT NULL CHECK (octet_length(email_hash) = 32),
    display_name   text        NOT NULL,
    discoverable   boolean     NOT NULL,
    contact_hashes bytea[]     NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_signups_user ON pending_signups (user_id);

-- Which decision `discoverable` reflects (the verified attempt's id, or a DiscoverabilityChanged event's id; both
-- UUID v7): a later decision wins whatever order the events arrive in.
ALTER TABLE members ADD COLUMN discoverable_since uuid;

-- Suggestions served per asker per day (SUGGESTIONS_PER_DAY bounds them).
CREATE TABLE suggestion_budget (
    user_id uuid    PRIMARY KEY,
    day     date    NOT NULL,
    served  integer NOT NULL
);
