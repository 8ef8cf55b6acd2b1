#!/usr/bin/env bash
# `make smoke` (part of `make test`): the README walkthrough (scripts/smoke.sh) against the native stack of
# `make run`, started here with a mail directory of its own and stopped afterwards, so the README cannot drift
# from the code. Exits with the walkthrough's status.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 9050; do
  if port_open "$port"; then
    echo "smoke: port $port is taken (is make run already running?); stop it and try again" >&2
    exit 1
  fi
done

export MAIL_DIR
MAIL_DIR=$(mktemp -d)
log=$(mktemp)
set -m
scripts/run-local.sh >"$log" 2>&1 &
stack=$!
set +m
stop() {
  kill -TERM "$stack" 2>/dev/null || true
  wait "$stack" 2>/dev/null || true
  rm -rf "$MAIL_DIR" "$log"
}
trap stop EXIT

deadline=$((SECONDS + 60))
until grep -q 'signup-api is ready' "$log"; do
  if ! kill -0 "$stack" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "smoke: make run's stack did not become ready; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 0.2
done
if ! scripts/smoke.sh http://localhost:8080; then
  echo "smoke: the stack's log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
