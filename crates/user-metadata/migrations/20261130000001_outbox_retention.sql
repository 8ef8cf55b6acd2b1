-- The relay deletes events published longer ago than OUTBOX_RETENTION_HOURS (platform::outbox): this index finds
-- them without reading the table.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
