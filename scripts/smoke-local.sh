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
stack=""
stop() {
  if [ -n "$stack" ]; then
    kill -TERM "$stack" 2>/dev/null || true
    wait "$stack" 2>/dev/null || true
  fi
  stack=""
}
trap 'stop; rm -rf "$MAIL_DIR" "$log"' EXIT

# Starts the stack and waits until every service serves and signup-api is ready. The default ports lie in Linux's
# ephemeral range, so a port can be held for a moment by another process's outgoing connection and a service
# fails to bind: then the stack stops itself, and the start is tried again (three times at most).
start() {
  set -m
  scripts/run-local.sh >"$log" 2>&1 &
  stack=$!
  set +m
  local deadline=$((SECONDS + 60)) service
  while :; do
    if ! kill -0 "$stack" 2>/dev/null || grep -q 'a service exited' "$log" || [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    if grep -q 'signup-api is ready' "$log"; then
      for service in user-metadata password email-verification friend-discovery; do
        grep -q "^$service .*serving" "$log" || continue 2
      done
      return 0
    fi
    sleep 0.2
  done
}

for attempt in 1 2 3; do
  if start; then
    break
  fi
  stop
  if [ "$attempt" = 3 ]; then
    echo "smoke: make run's stack did not become ready; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  echo "smoke: the stack did not start (attempt $attempt; see below); trying again" >&2
  grep -E 'ERROR|error:' "$log" | head -n 3 >&2 || true
  sleep 2
done
if ! scripts/smoke.sh http://localhost:8080; then
  echo "smoke: the stack's log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
