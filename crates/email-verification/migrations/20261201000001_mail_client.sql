-- The client a mail was asked for by (a keyed hash of its network, from signup-api; empty when unknown: notices,
-- mail an earlier release queued). An address's mail budget holds at most MAIL_BUDGET_PER_CLIENT_PER_DAY of one
-- client's mails, so no single client can spend it and keep the owner's own verification or reset mail away.
-- Counted among the mails the budget query already reads (the mailbox's last day): no index of its own.
ALTER TABLE mails ADD COLUMN client_hash bytea NOT NULL DEFAULT '';
