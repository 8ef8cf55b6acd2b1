-- The user an event is about, so an account deleted by its owner takes its events with it.
ALTER TABLE outbox ADD COLUMN user_id uuid;
CREATE INDEX outbox_user ON outbox (user_id) WHERE user_id IS NOT NULL;
