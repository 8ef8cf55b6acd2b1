-- A retry under an Idempotency-Key is told the first request's signup attempt (a resend names it), so the key keeps
-- it again: the column the signup of one transaction had stopped writing is written from this release on.
COMMENT ON COLUMN idempotency_keys.signup_id IS
    'the attempt the first request with this key recorded (or was answered with): a replay names it';
