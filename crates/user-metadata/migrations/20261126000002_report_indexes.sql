-- The daily report and the archive select users by when they signed up and when they verified.
CREATE INDEX users_created_at ON users (created_at);
CREATE INDEX users_verified_at ON users (verified_at) WHERE verified_at IS NOT NULL;
