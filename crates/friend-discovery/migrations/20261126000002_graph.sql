-- The contact graph, as keyed hashes only: HMAC-SHA256 of normalised emails under CONTACT_HASH_KEY, computed in
-- signup-api. A member's own email_hash is what other members' contacts match against.
--
-- A row may exist before its signup arrives: an EmailVerified that overtakes its UserSignedUp creates the row
-- with only verified_at, and the signup fills in the rest. Suggestions need both.
CREATE TABLE members (
    user_id      uuid        PRIMARY KEY,
    email_hash   bytea       CHECK (octet_length(email_hash) = 32),
    display_name text,
    discoverable boolean     NOT NULL DEFAULT true,
    -- The signup the profile and contacts come from (UUID v7: a later signup sorts later).
    signup_id    uuid,
    verified_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Members by the hash of their email (signup-api hashes one normalised spelling per mailbox). Not unique: a
-- removed account's row may briefly outlive a new account's signup for the same email, if the events cross.
CREATE INDEX members_email_hash ON members (email_hash);

-- Edges: owner uploaded a contact with this hash. Looked up both ways: an owner's contacts (the primary key) and
-- who has a given hash in their contacts (the second index).
CREATE TABLE contacts (
    owner_id     uuid  NOT NULL REFERENCES members (user_id) ON DELETE CASCADE,
    contact_hash bytea NOT NULL CHECK (octet_length(contact_hash) = 32),
    PRIMARY KEY (owner_id, contact_hash)
);
CREATE INDEX contacts_by_hash ON contacts (contact_hash, owner_id);

-- Users removed by UserDeleted, so that a late event about them can never bring them back.
CREATE TABLE deleted_users (
    user_id    uuid        PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
