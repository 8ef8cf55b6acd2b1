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

-- The global budget: delivery attempts per second; a claim sums the last minute's (at most 60 rows).
CREATE TABLE mail_budget (
    second timestamptz PRIMARY KEY,
    attempts integer NOT NULL
);

-- The sender wakes when mail is queued: the insert notifies (at commit), so queueing needs no statement of its own
-- for it.
CREATE FUNCTION notify_mail_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mail_queue', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER mails_notify AFTER INSERT ON mails FOR EACH STATEMENT EXECUTE FUNCTION notify_mail_queue();
