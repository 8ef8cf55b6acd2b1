-- One verification: every verification mail, and so every link, belongs to the signup attempt that caused it; a
-- confirm must also present that attempt's password. A later attempt no longer voids an earlier one's link.
ALTER TABLE mails ADD COLUMN signup_id uuid;
COMMENT ON COLUMN mails.signup_id IS 'the signup attempt a verification mail''s links belong to';
UPDATE mails m SET signup_id = a.signup_id FROM accounts a
 WHERE m.user_id = a.user_id AND m.kind = 'verification' AND m.signup_id IS NULL;

-- A wrong password counts against the link; after CONFIRM_ATTEMPTS_PER_TOKEN the link is dead.
ALTER TABLE tokens ADD COLUMN confirm_attempts integer NOT NULL DEFAULT 0;

-- The attempt whose link verified the account (what user-metadata was told; repair tells it again).
ALTER TABLE accounts ADD COLUMN verified_signup_id uuid;

-- The per-address mail budget counts the mail queued to an address in the last hour and day.
CREATE INDEX mails_recipient_created ON mails (recipient, created_at);

-- The global budget counts the mails attempted in the last minute.
ALTER TABLE mails ADD COLUMN last_attempt_at timestamptz;
CREATE INDEX mails_last_attempt ON mails (last_attempt_at) WHERE last_attempt_at IS NOT NULL;
