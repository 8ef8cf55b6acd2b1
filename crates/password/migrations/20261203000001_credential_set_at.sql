-- What a reset link may replace. `set_at`: when the account's password was last set (promoted at verification,
-- changed, reset), not when it was rehashed under new parameters; a reset applies only over a password not set since
-- its link was asked for, so a link asked for before a change is stale. `reset_by`: the SHA-256 of the token of the
-- link that last set it, if a reset did: that link sets nothing again, whatever the two databases' clocks say.
-- Both are added without a default, so the migration takes its lock only for an instant and rewrites no row: a row
-- not set since reads `updated_at` instead (its last write, a rehash included: a link asked for before that rehash
-- asks again).
ALTER TABLE credentials ADD COLUMN set_at timestamptz,
                        ADD COLUMN reset_by bytea;
