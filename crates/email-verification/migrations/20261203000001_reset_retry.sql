-- When a reset link was used by its own reset. Such a link stays usable until it expires or another reset or
-- change ends it (that clears this): its reset may not have set the password (password was down, or had no room),
-- and a retry must not find the link spent. It cannot set two passwords: password sets one only over a password
-- not set since the link was asked for.
ALTER TABLE tokens ADD COLUMN consumed_at timestamptz;
