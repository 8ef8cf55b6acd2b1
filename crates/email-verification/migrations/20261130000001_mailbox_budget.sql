-- The per-address mail budget counts mailboxes, not spellings: `ada+1@example.com`, `ada+2@example.com` and
-- `a.d.a@gmail.com` reach the mailboxes `ada@example.com` and `ada@gmail.com`, and a budget per spelling let anyone
-- mail one mailbox without limit. The key drops a `+tag` (subaddressing, RFC 5233) and, for Gmail, the dots it
-- ignores and its second domain. Where `a+b` is someone else's mailbox, the two only share a budget. Other schemes
-- (`-` tags, catch-all domains) still count per spelling.
-- IMMUTABLE and indexed: never redefine it (a new rule is a new function and a new index). Its own search_path, so
-- no session setting changes what it computes.
CREATE FUNCTION mailbox(address text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT CASE
        WHEN parts.local IS NULL THEN lower(address)
        WHEN parts.domain IN ('gmail.com', 'googlemail.com')
            THEN replace(split_part(parts.local, '+', 1), '.', '') || '@gmail.com'
        ELSE split_part(parts.local, '+', 1) || '@' || parts.domain
    END
    FROM (SELECT substring(lower(address) FROM '^(.*)@[^@]*$') AS local,
                 substring(lower(address) FROM '@([^@]*)$') AS domain) AS parts
$$;

-- An index on the expression, not a stored column: adding one would rewrite the table. The index on `recipient`
-- serves the previous release during a rolling deploy; the next release drops it.
CREATE INDEX mails_mailbox_created ON mails (mailbox(recipient), created_at);
