-- `mailbox()` keeps its rule, word for word, in a form the planner inlines. The first form (a subquery in FROM, its
-- own search_path) could not be inlined, so every statement that evaluated it parsed and planned its body again:
-- five times per signup (the address's lock, the budget, the mail's insert and both updates of its row, through
-- the index on `mailbox(recipient)`), a tenth of email-verification's database time in `make bench`. A body in
-- BEGIN ATOMIC is bound when it is created (to pg_catalog's functions, which every search_path reaches first), so
-- no session setting changes what it computes, as before. Same results for every address (the e2e test
-- `migrations::mailbox_keeps_its_rule` compares the two forms), so the index built on the first stays valid and
-- a previous release computes the same keys.
CREATE OR REPLACE FUNCTION mailbox(address text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE
        WHEN substring(lower(address) FROM '^(.*)@[^@]*$') IS NULL THEN lower(address)
        WHEN substring(lower(address) FROM '@([^@]*)$') IN ('gmail.com', 'googlemail.com')
            THEN replace(split_part(substring(lower(address) FROM '^(.*)@[^@]*$'), '+', 1), '.', '') || '@gmail.com'
        ELSE split_part(substring(lower(address) FROM '^(.*)@[^@]*$'), '+', 1) || '@' || substring(lower(address) FROM '@([^@]*)$')
    END;
END;

-- Each connection keeps the index's expression as it was when it first read it (the first form, a call); a query
-- planned now holds the inlined one, and the two no longer match, so a connection of the previous release, open
-- across this migration, would scan `mails` instead of using the index. Setting a storage parameter (to its
-- default: no rewrite, no lock that blocks reads or writes) makes every connection read the index afresh.
ALTER INDEX mails_mailbox_created SET (fillfactor = 90);

-- Superseded by `mails_mailbox_created` since 20261130000001 (the release that counts mailboxes); nothing reads it,
-- and every insert and every update of a mail's row wrote it. Dropping it locks `mails` for a moment; behind a
-- long transaction the migration gives up after five seconds rather than hold the previous release's queries up
-- (run `migrate` again).
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS mails_recipient_created;
