#!/usr/bin/env bash
# Postgres init script for docker-compose.yml, run by the postgres image once, on the first start of an empty
# data volume (/docker-entrypoint-initdb.d). Each stateful service gets its own database, owned by its own
# role: a service can reach only its own tables (each service owns its data). Passwords equal the role names:
# DEV ONLY.
set -Eeuo pipefail

for db in user_metadata password email_verification friend_discovery; do
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set=db="${db}" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'db';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
