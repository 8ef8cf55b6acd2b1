-- Failed sign-ins are counted per email and client (a keyed hash of the client's network, from signup-api), not per
-- email alone: a guesser elsewhere slowed the owner down as much as themselves and could keep the owner locked out
-- with one request an hour, and a success forgetting every client's failures told a guesser that the owner had
-- signed in. A row also remembers when that client last signed in to that email: clients the owner uses are spared
-- the per-email lockout that failures from elsewhere cause.
-- `login_failures` stays one release for the previous release during a rolling deploy; the next release drops it.
CREATE TABLE sign_in_failures (
    email_hash      bytea       NOT NULL CHECK (octet_length(email_hash) = 32),
    client_hash     bytea       NOT NULL CHECK (octet_length(client_hash) IN (0, 32)),
    failures        integer     NOT NULL,
    last_failure_at timestamptz NOT NULL,
    last_success_at timestamptz,
    PRIMARY KEY (email_hash, client_hash)
);
-- The per-email lockout reads an email's newest failures; the per-client budget a client's newest; the janitor the
-- oldest.
CREATE INDEX sign_in_failures_email_newest ON sign_in_failures (email_hash, last_failure_at DESC) WHERE failures > 0;
CREATE INDEX sign_in_failures_client_newest ON sign_in_failures (client_hash, last_failure_at DESC) WHERE failures > 0;
CREATE INDEX sign_in_failures_last ON sign_in_failures (last_failure_at);
