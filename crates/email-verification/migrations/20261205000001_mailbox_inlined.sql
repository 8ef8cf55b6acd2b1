-- `mailbox()` keeps its rule, word for word, in a form the planner inlines. The first form (a subquery in FROM, its
-- own search_path) could not be inlined, so every statement that evaluated it parsed and planned its body again:
-- five times per signup (the address's lock, the budget, the mail's insert and both updates of its row, through
-- the index on `mailbox(recipient)`), a tenth of email-verification's database time in `make bench`. A body in
-- BEGIN ATOMIC is bound when it is created, here against pg_catalog alone, so no session setting changes what it
-- computes, as before. Same results for every address (the e2e test `migrations::mailbox_keeps_its_rule` compares
-- the two forms), so the index built on the first stays valid and a previous release computes the same keys.
SET LOCAL search_path = pg_catalog, public;

CREATE OR REPLACE FUNCTION public.mailbox(address text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE
        WHEN substring(lower(address) FROM '^(.*)@[^@]*$') IS NULL THEN lower(address)
        WHEN substring(lower(address) FROM '@([^@]*)$') IN ('gmail.com', 'googlemail.com')
            THEN replace(split_part(substring(lower(address) FROM '^(.*)@[^@]*$'), '+', 1), '.', '') || '@gmail.com'
        ELSE split_part(substring(lower(address) FROM '^(.*)@[^@]*$'), '+', 1) || '@' || substring(lower(address) FROM '@([^@]*)$')
    END;
END;

-- Superseded by `mails_mailbox_created` since 20261130000001 (the release that counts mailboxes); nothing reads it,
-- and every insert and every update of a mail's row wrote it.
DROP INDEX IF EXISTS public.mails_recipient_created;
