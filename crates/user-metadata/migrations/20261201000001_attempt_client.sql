-- The client an attempt came from (a keyed hash of its network, from signup-api; empty when unknown or from an
-- earlier release), so no single client can fill an account's attempts: beyond SIGNUP_ATTEMPTS_PER_CLIENT of its
-- own, a client's new attempts are dropped, and the rest stay for others (the owner among them).
ALTER TABLE signup_attempts ADD COLUMN client_hash bytea NOT NULL DEFAULT '';
