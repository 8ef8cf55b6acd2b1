-- One argon2id credential per user. The user id comes from user-metadata; this service never reads its tables.
CREATE TABLE credentials (
    user_id     uuid        PRIMARY KEY,
    -- PHC string: $argon2id$v=19$m=...,t=...,p=...$salt$hash
    phc         text        NOT NULL,
    -- UUID v7 of the attempt that set it; an older attempt never overwrites a newer one.
    version     uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
