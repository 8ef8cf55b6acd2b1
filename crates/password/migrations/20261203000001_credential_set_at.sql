-- When the account's password was last set (promoted at verification, changed, reset), not when it was rehashed
-- under new parameters. A reset applies only over a password not set since its link was asked for: a link asked
-- for before a change is stale, and a link whose reset already applied sets nothing when it is used again.
-- Existing rows take their last write, a rehash included: a link asked for before that rehash asks again.
ALTER TABLE credentials ADD COLUMN set_at timestamptz NOT NULL DEFAULT now();
UPDATE credentials SET set_at = updated_at;
