#!/usr/bin/env bash
# The README walkthrough as a program: sign up, fetch the verification mail, confirm, sign in, read /v1/me and the
# suggestions, opt out, export, resend, change the password, sign out, reset it through the mailed link, leave, and check /openapi.json, /docs and readiness. Stops at the first step
# that answers other than the walkthrough says, naming it, and exits 1.
#
#   scripts/smoke.sh [BASE_URL]          BASE_URL defaults to http://localhost:8080
#
# The mail comes from Mailpit's HTTP API when MAILPIT_URL is set (docker compose: http://localhost:8025), from the
# .eml files in MAIL_DIR otherwise (make run: .mail). Readiness is read from OPS_URL (make run:
# http://localhost:9050; set it empty where the operational port is not reachable). EMAIL defaults to a new
# address each run. Needs curl, grep and perl (both stock on macOS and Debian).
set -euo pipefail

base=${1:-http://localhost:8080}
base=${base%/}
mail_dir=${MAIL_DIR:-.mail}
ops=${OPS_URL-http://localhost:9050}
email=${EMAIL:-smoke-$(date +%s)-$$@example.com}
password="correct horse battery staple"
step="start"
body=$(mktemp)
trap 'rm -f "$body"' EXIT

fail() {
  echo "smoke: FAILED at step '$step': $*" >&2
  if [ -s "$body" ]; then sed 's/^/smoke:   /' "$body" | head -20 >&2; fi
  exit 1
}

# call EXPECTED_STATUS curl-args...: runs curl, keeps the body in $body, fails unless the status is expected.
call() {
  local expected=$1 status
  shift
  : >"$body"
  status=$(curl -sS -o "$body" -w '%{http_code}' "$@") || fail "curl $* did not get an answer"
  [ "$status" = "$expected" ] || fail "expected $expected, got $status from curl $*"
}

contains() { grep -q -- "$1" "$body" || fail "the answer does not contain $1"; }

json_field() { grep -o "\"$1\":\"[^\"]*\"" "$body" | head -1 | cut -d'"' -f4; }

# The token of a link to $1 (email-verifications/confirm or password-resets/confirm) mailed to $email: from
# Mailpit, or from the .eml files (quoted-printable, so decoded first).
token_from_mail() {
  local pattern="$1/confirm?token=[A-Za-z0-9_-]\{43\}"
  if [ -n "${MAILPIT_URL:-}" ]; then
    curl -sS -o "$body" "${MAILPIT_URL%/}/api/v1/search?query=to:$email" || return 1
    grep -o '"ID":"[^"]*"' "$body" | cut -d'"' -f4 | while IFS= read -r id; do
      curl -sS "${MAILPIT_URL%/}/api/v1/message/$id" | grep -o "$pattern" | head -1 | cut -d= -f2
    done | head -1
  else
    grep -l -i -- "$email" "$mail_dir"/*.eml 2>/dev/null | while IFS= read -r file; do
      perl -MMIME::QuotedPrint -0777 -ne 'print decode_qp($_)' "$file" | grep -o "$pattern" | head -1 | cut -d= -f2
    done | head -1
  fi
}

# Waits up to 30 s for a link to $1 in the mail to $email; sets $token.
wait_for_token() {
  token=""
  for _ in $(seq 1 150); do
    token=$(token_from_mail "$1" || true)
    [ -n "$token" ] && return 0
    sleep 0.2
  done
  fail "no $1 link in the mail to $email within 30 s (MAILPIT_URL=${MAILPIT_URL:-}, MAIL_DIR=$mail_dir)"
}

step="readiness"
if [ -n "$ops" ]; then
  call 200 "$ops/readyz"
  contains '"status":"ready"'
fi

step="signup"
call 202 "$base/v1/signups" -H 'Content-Type: application/json' -H "Idempotency-Key: smoke-$$-$(date +%s)" \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"display_name\":\"Ada Lovelace\",\"contacts\":[\"charles@example.com\"],\"locale\":\"en-GB\"}"
contains '"status":"verification_pending"'
signup_id=$(json_field signup_id)
[ -n "$signup_id" ] || fail "no signup_id in the answer"

step="invalid-signup"
call 422 "$base/v1/signups" -H 'Content-Type: application/json' -d '{"email":"nope","password":"short"}'
contains '"type":"/problems/validation-failed"'
contains '"instance":"/v1/signups"'

step="verification-mail"
wait_for_token email-verifications

step="confirm"
call 200 "$base/v1/email-verifications/confirm" -H 'Content-Type: application/json' \
  -d "{\"token\":\"$token\",\"password\":\"$password\"}"
contains '"status":"verified"'

step="confirm-again"
call 400 "$base/v1/email-verifications/confirm" -H 'Content-Type: application/json' \
  -d "{\"token\":\"$token\",\"password\":\"$password\"}"
contains '/problems/invalid-token'

step="sign-in"
call 201 "$base/v1/sessions" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"$password\"}"
session=$(json_field token)
[ -n "$session" ] || fail "no token in the answer"
[ -n "$(json_field device_token)" ] || fail "no device_token in the answer"

step="me"
call 200 "$base/v1/me" -H "Authorization: Bearer $session"
contains '"email_verified":true'

step="friend-suggestions"
call 200 "$base/v1/me/friend-suggestions" -H "Authorization: Bearer $session"
contains '"suggestions"'

step="opt-out"
call 200 "$base/v1/me" -X PATCH -H "Authorization: Bearer $session" -H 'Content-Type: application/json' \
  -d '{"discoverable":false}'

step="export"
call 200 "$base/v1/me/export" -H "Authorization: Bearer $session"
contains '"algorithm":"argon2id"'
contains '"kind":"verification"'
# shellcheck disable=SC2016 # a literal $ in the PHC prefix
if grep -q -F -e "$token" -e '$argon2' -e 'charles@example.com' "$body"; then fail "the export holds a secret"; fi

step="resend"
call 202 "$base/v1/email-verifications" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"signup_id\":\"$signup_id\"}"
contains '"status":"accepted"'

step="change-password"
new_password="a quite different battery staple horse"
call 204 "$base/v1/me/password" -X PUT -H "Authorization: Bearer $session" -H 'Content-Type: application/json' \
  -d "{\"current_password\":\"$password\",\"new_password\":\"$new_password\"}"
call 200 "$base/v1/me" -H "Authorization: Bearer $session"
password=$new_password

step="sign-out"
call 204 "$base/v1/sessions/current" -X DELETE -H "Authorization: Bearer $session"
call 401 "$base/v1/me" -H "Authorization: Bearer $session"

step="password-reset"
call 202 "$base/v1/password-resets" -H 'Content-Type: application/json' -d "{\"email\":\"$email\"}"
contains '"status":"accepted"'
wait_for_token password-resets
call 200 "$base/v1/password-resets/confirm?token=$token"
reset_password="yet another staple horse battery"
call 200 "$base/v1/password-resets/confirm" -H 'Content-Type: application/json' \
  -d "{\"token\":\"$token\",\"new_password\":\"$reset_password\"}"
contains '"status":"password_changed"'
password=$reset_password

step="leave"
call 201 "$base/v1/sessions" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"$password\"}"
session=$(json_field token)
call 202 "$base/v1/me" -X DELETE -H "Authorization: Bearer $session" -H 'Content-Type: application/json' \
  -d "{\"password\":\"$password\"}"
contains '"status":"deleted"'
call 401 "$base/v1/sessions" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"$password\"}"

step="openapi"
call 200 "$base/openapi.json"
contains '"/v1/signups"'
call 200 "$base/docs/"
call 200 "$base/problems/validation-failed"

echo "smoke: every step of the walkthrough passed against $base ($email)"
