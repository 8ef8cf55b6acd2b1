-- The per-address mail budget counts mailboxes, not spellings: `ada+1@example.com`, `ada+2@example.com` and
-- `a.d.a@gmail.com` reach the mailbox `ada@example.com` / `ada@gmail.com`, and a budget per spelling let anyone mail
-- one mailbox without limit. The key drops a `+tag` (subaddressing, RFC 5233) and, for Gmail, the dots it ignores.
-- Over-counting (a provider where `a+b` is someone else) only shares a budget; never under-counting is the point.
-- IMMUTABLE and used by a stored column: never redefine it; a new rule is a new function and a new column.
CREATE FUNCTION mailbox(address text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN parts.local IS NULL THEN lower(address)
        WHEN parts.domain IN ('gmail.com', 'googlemail.com')
            THEN replace(regexp_replace(parts.local, '\+.*$', ''), '.', '') || '@gmail.com'
        ELSE regexp_replace(parts.local, '\+.*$', '') || '@' || parts.domain
    END
    FROM (SELECT substring(lower(address) FROM '^(.*)@[^@]*$') AS local,
                 substring(lower(address) FROM '@([^@]*)$') AS domain) AS parts
$$;

-- Computed by Postgres for every row, whichever release writes it.
ALTER TABLE mails ADD COLUMN mailbox text GENERATED ALWAYS AS (mailbox(recipient)) STORED;
CREATE INDEX mails_mailbox_created ON mails (mailbox, created_at);
DROP INDEX mails_recipient_created;
