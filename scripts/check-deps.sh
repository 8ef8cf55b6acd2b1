#!/usr/bin/env bash
# Checks what `make run` needs before anything is built: Postgres and RabbitMQ reachable where the services will
# look for them (the PG* variables, AMQP_URL), and the Postgres role let in. If one is missing, says in one
# paragraph how to start it (when it is installed here but stopped) or get it (Debian/Ubuntu, macOS, Docker), and
# exits 1 within seconds. Portable: bash 3.2 (macOS) and up.
set -euo pipefail

pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
pg_user=${PGUSER:-postgres}
amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
# amqp://user:pass@host:port/vhost -> host and port (5672 when absent).
amqp_hostport=${amqp_url#*://}
amqp_hostport=${amqp_hostport#*@}
amqp_hostport=${amqp_hostport%%/*}
amqp_host=${amqp_hostport%%:*}
amqp_port=5672
case "$amqp_hostport" in *:*) amqp_port=${amqp_hostport##*:} ;; esac

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

local_host() { case "$1" in 127.0.0.1 | localhost | ::1) return 0 ;; *) return 1 ;; esac; }

# How to start a Postgres installed here but stopped, if it is (Debian's clusters, Homebrew's services).
postgres_start_hint() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "sudo pg_ctlcluster $(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1) main start"
  elif command -v brew >/dev/null 2>&1 && brew list --formula 2>/dev/null | grep -q '^postgresql'; then
    echo "brew services start $(brew list --formula | grep '^postgresql' | sort -V | tail -n 1)"
  fi
}

# How to start a RabbitMQ installed here but stopped, if it is.
rabbitmq_start_hint() {
  if command -v brew >/dev/null 2>&1 && brew list --formula 2>/dev/null | grep -q '^rabbitmq$'; then
    echo "brew services start rabbitmq"
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    echo "sudo rabbitmq-server -detached"
  fi
}

missing=()
hints=()
if ! port_open "$pg_host" "$pg_port"; then
  missing+=("Postgres on $pg_host:$pg_port")
  if local_host "$pg_host" && hint=$(postgres_start_hint) && [ -n "$hint" ]; then hints+=("$hint"); fi
fi
if ! port_open "$amqp_host" "$amqp_port"; then
  missing+=("RabbitMQ on $amqp_host:$amqp_port")
  if local_host "$amqp_host" && hint=$(rabbitmq_start_hint) && [ -n "$hint" ]; then hints+=("$hint"); fi
fi
# Reachable is not enough: the configured role must be let in (psql, when installed, can tell).
if [ "${#missing[@]}" -eq 0 ] && command -v psql >/dev/null 2>&1; then
  if ! error=$(PGCONNECT_TIMEOUT=3 psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -Atc 'select 1' 2>&1 >/dev/null); then
    cat >&2 <<EOF
make run: Postgres on $pg_host:$pg_port refused role $pg_user: ${error%%$'\n'*}
  Give the services a role that may create databases, with the libpq variables every service reads (each keeps
  its own database): PGUSER=... PGPASSWORD=... make run. On a fresh Debian/Ubuntu Postgres, for example:
  sudo -u postgres psql -c "ALTER ROLE postgres PASSWORD 'postgres'" and then PGPASSWORD=postgres make run.
EOF
    exit 1
  fi
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "${#hints[@]}" -gt 0 ]; then
  printf 'make run: %s is installed here but not running. Start it:\n' "$(printf '%s and ' "${missing[@]}" | sed 's/ and $//')" >&2
  printf '  %s\n' "${hints[@]}" >&2
  printf 'then run make run again. Otherwise, to install or use Docker:\n' >&2
fi
cat >&2 <<EOF
make run needs $(printf '%s and ' "${missing[@]}" | sed 's/ and $//'), and cannot reach it. Start it, or install it:
  Debian/Ubuntu:  sudo apt install postgresql rabbitmq-server   (both start at once; then PGPASSWORD, see README)
  macOS:          brew install postgresql@17 rabbitmq && brew services start postgresql@17 && brew services start rabbitmq
  Docker:         docker compose -f docker-compose.yml -f deploy/compose/deps.yml up -d postgres rabbitmq
                  then: PGPASSWORD=postgres AMQP_URL=amqp://signup:signup@127.0.0.1:5672/%2f make run
Postgres is looked for at PGHOST:PGPORT (now $pg_host:$pg_port), RabbitMQ at AMQP_URL (now $amqp_host:$amqp_port).
EOF
exit 1
