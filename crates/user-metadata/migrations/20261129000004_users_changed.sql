-- Every change to a user row tells each user-metadata replica to forget what GetUser remembers of it: delivered at
-- commit, to every listener of `users_changed` (inserts need no word: nothing is remembered of a user not found).
CREATE FUNCTION users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('users_changed', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_changed AFTER UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION users_changed();
