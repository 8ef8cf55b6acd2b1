#!/usr/bin/env bash
# Runs the whole system natively against local Postgres and RabbitMQ: creates and migrates the four databases,
# starts the five services with their logs interleaved and prefixed, and stops them all on Ctrl-C or SIGTERM.
# Portable: bash 3.2 (macOS) and up, no setsid, no `wait -n`, no GNU-only tools.
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
services=(user-metadata password email-verification friend-discovery signup-api)
stateful=(user-metadata password email-verification friend-discovery)

# Readable logs for people; every other variable passes through from the caller's environment.
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export RUST_LOG=${RUST_LOG:-info}
# Development-only keys (two different ones); production injects its own secrets.
export CONTACT_HASH_KEY=${CONTACT_HASH_KEY:-dev-only-contact-hash-key-change-me-0000}
export IDEMPOTENCY_FINGERPRINT_KEY=${IDEMPOTENCY_FINGERPRINT_KEY:-dev-only-idempotency-fingerprint-key-change-me-1111}
# Without an SMTP server, email-verification writes each mail to .mail/*.eml (and logs the file); it refuses to start
# without SMTP_URL unless MAIL_TRANSPORT=file is set explicitly. With SMTP_URL in the environment, mail goes there.
if [ -n "${SMTP_URL:-}" ]; then export MAIL_TRANSPORT=${MAIL_TRANSPORT:-smtp}; else export MAIL_TRANSPORT=${MAIL_TRANSPORT:-file}; fi

pids=()
stopping=0

prefix() {
  # Keep the prefixer alive through Ctrl-C so the services' shutdown lines still reach the terminal.
  trap '' INT TERM
  local tag line
  tag=$(printf '%-19s|' "$1")
  while IFS= read -r line || [ -n "$line" ]; do printf '%s %s\n' "$tag" "$line"; done
}

# shellcheck disable=SC2329 # invoked by the traps below
stop() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    echo "stopping ${#pids[@]} services..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local pid
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  echo "all services stopped"
}
trap 'stop; exit 0' INT TERM
trap 'stop' EXIT

for service in "${stateful[@]}"; do
  "$bin/$service" migrate > >(prefix "$service") 2>&1
done

# Each service runs in a process group of its own (job control), so a Ctrl-C reaches only this script, which then
# stops them in an orderly way; a service exiting on its own is then always a real failure.
set -m
for service in "${services[@]}"; do
  "$bin/$service" serve > >(prefix "$service") 2>&1 &
  pids+=("$!")
done
set +m

port=${PORT:-8080}
metrics_port=${METRICS_PORT:-9050}
deadline=$((SECONDS + 30))
until METRICS_PORT=$metrics_port "$bin/signup-api" healthcheck >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "signup-api did not become ready within 30 s; see the logs above" >&2
    exit 1
  fi
  sleep 0.2
done
echo
echo "signup-api is ready on http://localhost:${port} (readiness: curl -s http://localhost:${metrics_port}/readyz). Ctrl-C stops everything."
echo

# Any service exiting on its own ends the run, so a crash is never hidden behind the others' logs.
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a service exited; stopping the rest" >&2
      exit 1
    fi
  done
  sleep 1
done
