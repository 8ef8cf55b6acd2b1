-- archive selects accounts never verified by the time of their last signup attempt.
CREATE INDEX users_unverified_updated ON users (updated_at) WHERE status <> 'verified';
