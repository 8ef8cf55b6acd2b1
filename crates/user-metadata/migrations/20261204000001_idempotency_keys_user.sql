-- Leaving (`DeleteUser`) and the archive delete an account's idempotency keys by user: without an index each
-- deletion read the whole table, and the archive did so while holding up to ARCHIVE_BATCH_SIZE users locked across
-- its object's write and read-back. The table holds only the last IDEMPOTENCY_KEY_TTL_HOURS of signups, so the
-- index builds in moments (a plain CREATE INDEX: migrations run in a transaction; where the table is large, build
-- it beforehand with CREATE INDEX CONCURRENTLY under this name, and this does nothing).
CREATE INDEX IF NOT EXISTS idempotency_keys_user ON idempotency_keys (user_id);
