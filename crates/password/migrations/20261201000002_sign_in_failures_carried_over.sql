-- The failures counted per email by the previous release carry over as those of an unknown client (an empty
-- client hash): a lockout in place at the deploy stays in place, and the email's own count keeps them.
INSERT INTO sign_in_failures (email_hash, client_hash, failures, last_failure_at)
SELECT email_hash, '', failures, last_failure_at FROM login_failures
ON CONFLICT (email_hash, client_hash) DO NOTHING;
