-- The devices (a browser, an app install) each account was signed in from, by the SHA-256 of the device token the
-- sign-in gave them: a device that signed in to an account within LOGIN_TRUSTED_CLIENT_DAYS is held only to its own
-- count of failures, so strangers who lock the email out do not lock its owner out of it. This replaces trusting a
-- network the email was signed in from, which a guesser behind the same NAT or carrier address shared:
-- `sign_in_failures.last_success_at` is neither written nor read any more (the column stays until the release after;
-- during a rollout, a sign-in or reset of this release forgets the rows the previous one's trust was read from, so
-- its replicas see its owners as on a new network). Trust is a device's token, never a value the client chose: a
-- token the service did not issue is replaced by a fresh one. Removed with the account, when its password is reset,
-- when it is changed (but the changing session's device), and by the janitor once they trust nothing.
CREATE TABLE trusted_devices (
    user_id      uuid        NOT NULL,
    device_hash  bytea       NOT NULL CHECK (octet_length(device_hash) = 32),
    signed_in_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_hash)
);
CREATE INDEX trusted_devices_signed_in ON trusted_devices (signed_in_at);
-- A token the service issued (to any account) is the device's and is kept when it signs in to another account.
CREATE INDEX trusted_devices_device ON trusted_devices (device_hash);

-- The device each session was opened on: changing the password keeps that device's trust, not the others'.
ALTER TABLE sessions ADD COLUMN device_hash bytea;
