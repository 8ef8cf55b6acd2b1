-- Which password an account has: a number bumped whenever a password is set (promoted at verification, changed,
-- reset), and not when the same password is rehashed under new parameters. A session opens only while the
-- generation its sign-in checked is the account's, and a change applies only over the one it checked: a concurrent
-- rehash no longer turns a right password into a wrong one.
ALTER TABLE credentials ADD COLUMN generation bigint NOT NULL DEFAULT 1;
