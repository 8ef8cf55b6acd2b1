-- What a reset link may replace. `set_at`: when the account's password was last set (promoted at verification,
-- changed, reset), not when it was rehashed under new parameters; a reset applies only over a password not set since
-- its link was asked for, so a link asked for before a change is stale. Existing rows take their last write, a
-- rehash included: a link asked for before that rehash asks again. `reset_by`: the SHA-256 of the token of the
-- link that last set it, if a reset did: that link sets nothing again, whatever the two databases' clocks say.
ALTER TABLE credentials ADD COLUMN set_at timestamptz NOT NULL DEFAULT now(),
                        ADD COLUMN reset_by bytea;
UPDATE credentials SET set_at = updated_at;
