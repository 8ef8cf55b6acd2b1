-- `discoverable_since` now names only a member's own change (a DiscoverabilityChanged event's id): the choice made
-- at signup never outranks one, so it no longer stamps its attempt's id there. That id came from signup-api's
-- clock and the changes' ids from user-metadata's, so a skew between them could drop an opt-out made soon after
-- signing up. Rows the signup's choice stamped are unstamped; an opt-out already dropped so is not recovered here.
UPDATE members SET discoverable_since = NULL WHERE discoverable_since = signup_id;

COMMENT ON COLUMN members.discoverable_since IS
    'the id (UUID v7, user-metadata''s clock) of the DiscoverabilityChanged that set discoverable; NULL: the signup''s choice';
