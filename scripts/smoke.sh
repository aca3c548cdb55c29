#!/usr/bin/env bash
# IKOMA smoke test: walks one order through its whole life against a running server
#   Playbook -> Server -> Runner -> Order -> Claim -> Start -> Complete
# and checks every HTTP status and the key fields of every answer (contract: docs/api.md).
#
# Usage:
#   IKOMA_ADMIN_KEY="the-admin-key" bash ./scripts/smoke.sh
#   The API is API_URL (ending in /v1), else IKOMA_API_URL + /v1, else http://127.0.0.1:$PORT/v1
#   (PORT defaults to 3000), the address `ikoma up` and the `ikoma` commands use.
#
# Needs only curl and python3 (python3 parses the JSON answers). Writes no files.
# Leaves nothing behind that looks like part of the fleet: on every exit path it revokes its runner and
# deletes its server (after cancelling any order still pending on it); its orders stay as history, and
# its playbook is one fixed key, smoke.ping, replaced at each run.
# Exit status 0 when every check passed; otherwise 1 with the failing step, what was expected,
# what came back and the response body on stderr.
set -euo pipefail

API_URL="${API_URL:-${IKOMA_API_URL:-http://127.0.0.1:${PORT:-3000}}/v1}"
API_URL="${API_URL%/}"
if [[ -z "${IKOMA_ADMIN_KEY:-}" ]]; then
  echo "smoke: IKOMA_ADMIN_KEY is not set; export the admin key the server was started with" >&2
  echo "       e.g. API_URL=http://localhost:3000/v1 IKOMA_ADMIN_KEY=... bash ./scripts/smoke.sh" >&2
  exit 2
fi
for tool in curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "smoke: '$tool' is required but was not found in PATH" >&2
    exit 2
  fi
done

ADMIN=(-H "x-ikoma-admin-key: ${IKOMA_ADMIN_KEY}")
STEP="init"
CHECKS=0
STATUS=""
BODY=""
LAST_REQ=""

fail() { # fail WHAT EXPECTED GOT
  {
    echo "FAIL  ${STEP}: ${1}: expected ${2}, got ${3}"
    echo "      request:  ${LAST_REQ}"
    echo "      status:   ${STATUS}"
    echo "      body:     ${BODY:0:4000}"
  } >&2
  exit 1
}

ok() {
  CHECKS=$((CHECKS + 1))
  echo "ok  ${STEP}"
}

# call METHOD PATH JSON_BODY [extra curl args...]  -> sets STATUS and BODY (JSON_BODY may be "")
call() {
  local method=$1 path=$2 body=$3
  shift 3
  local args=(-sS -X "$method" --max-time 30 -w $'\n%{http_code}' -H 'accept: application/json')
  if [[ -n "$body" ]]; then
    args+=(-H 'content-type: application/json' --data-binary "$body")
  fi
  LAST_REQ="${method} ${API_URL}${path}${body:+ ${body}}"
  local out
  if ! out=$(curl "${args[@]}" "$@" "${API_URL}${path}" 2>&1); then
    STATUS="(none)"
    BODY="$out"
    fail "HTTP request" "an answer from ${API_URL}" "a curl error (is the server running?)"
  fi
  STATUS="${out##*$'\n'}"
  BODY="${out%$'\n'*}"
}

# jget EXPR [ARGS...]: evaluates the Python expression EXPR with d = the parsed BODY and a = ARGS.
# Prints strings raw and everything else as JSON (null, true, 12, [...]); never fails: a problem
# is printed as "<...>" so that the comparison that follows reports it.
jget() {
  printf '%s' "$BODY" | python3 -c '
import json, sys
expr, a = sys.argv[1], sys.argv[2:]
try:
    d = json.loads(sys.stdin.read())
except ValueError:
    print("<response is not JSON>")
    sys.exit(0)
try:
    v = eval(expr, {"d": d, "a": a})
except Exception as exc:
    print("<missing: %s %s>" % (type(exc).__name__, exc))
    sys.exit(0)
print(v if isinstance(v, str) else json.dumps(v))
' "$@"
}

expect_status() { # expect_status CODE
  [[ "$STATUS" == "$1" ]] || fail "HTTP status" "$1" "$STATUS"
}

expect_field() { # expect_field EXPR WANT [ARGS...]
  local expr=$1 want=$2 got
  shift 2
  got=$(jget "$expr" "$@")
  [[ "$got" == "$want" ]] || fail "$expr" "'$want'" "'$got'"
}

expect_present() { # expect_present EXPR  (non-empty string)
  local got
  got=$(jget "$1")
  if [[ -z "$got" || "$got" == "null" || "$got" == \<* ]]; then
    fail "$1" "a non-empty value" "'$got'"
  fi
}

SUFFIX="$(printf %04x%04x "$RANDOM" "$RANDOM")"
# one fixed key, replaced at each run: orders refer to their playbook, so it cannot be deleted after
PLAYBOOK_KEY="smoke.ping"
SERVER_NAME="smoke-${SUFFIX}"
RUNNER_NAME="smoke-runner-${SUFFIX}"
SERVER_ID=""
RUNNER_ID=""
CLEANED=""

# quiet: curl without the checks, for the cleanup that runs on every exit path
quiet() { # quiet METHOD PATH [JSON_BODY]
  curl -sS -o /dev/null -X "$1" --max-time 30 -H 'content-type: application/json' \
    ${3:+--data-binary "$3"} "${ADMIN[@]}" "${API_URL}$2" >/dev/null 2>&1 || true
}

# Best effort, on any exit (a failed check included): a smoke run must not leave a server whose
# runner never answers, nor orders queued for it, in the fleet. The success path does the same
# with every answer checked, then sets CLEANED.
cleanup() {
  [[ -z "$CLEANED" ]] || return 0
  CLEANED="yes"
  if [[ -n "$SERVER_ID" ]]; then
    local pending
    BODY=$(curl -sS --max-time 30 "${ADMIN[@]}" "${API_URL}/orders?serverId=${SERVER_ID}&limit=500" 2>/dev/null || true)
    pending=$(jget '" ".join(o["id"] for o in d["items"] if o["status"] in ("QUEUED", "CLAIMED", "RUNNING"))')
    for order in $pending; do
      [[ "$order" == \<* ]] || quiet POST "/orders/${order}/cancel" '{"reason":"smoke cleanup"}'
    done
  fi
  [[ -z "$RUNNER_ID" ]] || quiet POST "/runners/${RUNNER_ID}/revoke"
  [[ -z "$SERVER_ID" ]] || quiet DELETE "/servers/${SERVER_ID}"
}
trap cleanup EXIT

# --- playbooks --------------------------------------------------------------------------------
STEP="apply-playbook"
call PUT "/playbooks/${PLAYBOOK_KEY}" "{\"key\":\"${PLAYBOOK_KEY}\",\"name\":\"Smoke ping\",\"description\":\"created by scripts/smoke.sh\",\"minRole\":\"operator\",\"defaultTimeoutSeconds\":60,\"maxAttempts\":1}" "${ADMIN[@]}"
expect_status 200
expect_field 'd["key"]' "$PLAYBOOK_KEY"
expect_present 'd["id"]'
expect_field 'd["builtin"]' false
ok

STEP="list-playbooks"
call GET /playbooks "" "${ADMIN[@]}"
expect_status 200
expect_field '"system.test_ping" in [p["key"] for p in d]' true
expect_field 'a[0] in [p["key"] for p in d]' true "$PLAYBOOK_KEY"
ok

# --- server + runner --------------------------------------------------------------------------
STEP="create-server"
call POST /servers "{\"name\":\"${SERVER_NAME}\",\"hostname\":\"${SERVER_NAME}.invalid\",\"labels\":{\"purpose\":\"smoke\"}}" "${ADMIN[@]}"
expect_status 201
expect_field 'd["name"]' "$SERVER_NAME"
expect_field 'd["port"]' 22
expect_field 'd["runnerId"]' null
expect_present 'd["id"]'
SERVER_ID=$(jget 'd["id"]')
ok

# `ikoma up` gives every server with a runner collection schedules; their orders would be claimed
# before the smoke's own. Disabled rows keep the defaults from being created for this server.
STEP="disable-schedules"
SCHEDULES=""
for key in system.metrics apt.analyze system.facts docker.status; do
  SCHEDULES+="${SCHEDULES:+,}{\"playbookKey\":\"${key}\",\"intervalSeconds\":86400,\"enabled\":false}"
done
call PUT "/servers/${SERVER_ID}/schedules" "{\"schedules\":[${SCHEDULES}]}" "${ADMIN[@]}"
expect_status 200
expect_field '[s["enabled"] for s in d]' '[false, false, false, false]'
ok

STEP="create-runner"
call POST /runners "{\"name\":\"${RUNNER_NAME}\"}" "${ADMIN[@]}"
expect_status 201
expect_field 'd["name"]' "$RUNNER_NAME"
expect_present 'd["id"]'
expect_present 'd["token"]'
expect_field 'd["token"].startswith("ikr_")' true
RUNNER_ID=$(jget 'd["id"]')
RUNNER_TOKEN=$(jget 'd["token"]')
RUNNER=(-H "x-runner-id: ${RUNNER_ID}" -H "x-runner-token: ${RUNNER_TOKEN}")
ok

STEP="attach-runner"
call PATCH "/servers/${SERVER_ID}" "{\"runnerId\":\"${RUNNER_ID}\"}" "${ADMIN[@]}"
expect_status 200
expect_field 'd["id"]' "$SERVER_ID"
expect_field 'd["runnerId"]' "$RUNNER_ID"
ok

STEP="list-runners"
call GET /runners "" "${ADMIN[@]}"
expect_status 200
expect_field 'next((r["serverId"] for r in d if r["id"] == a[0]), "<runner not listed>")' "$SERVER_ID" "$RUNNER_ID"
expect_field 'next((r["serverName"] for r in d if r["id"] == a[0]), "<runner not listed>")' "$SERVER_NAME" "$RUNNER_ID"
expect_field '"token" in next((r for r in d if r["id"] == a[0]), {})' false "$RUNNER_ID"
ok

# --- order ------------------------------------------------------------------------------------
STEP="create-order"
call POST /orders "{\"serverId\":\"${SERVER_ID}\",\"playbookKey\":\"${PLAYBOOK_KEY}\"}" "${ADMIN[@]}"
expect_status 201
expect_field 'd["order"]["status"]' QUEUED
expect_field 'd["order"]["serverId"]' "$SERVER_ID"
expect_field 'd["order"]["runnerId"]' "$RUNNER_ID"
expect_field 'd["order"]["playbookKey"]' "$PLAYBOOK_KEY"
expect_field 'd["order"]["attempt"]' 0
expect_field 'd["reportContract"]["version"]' v2
expect_present 'd["order"]["id"]'
ORDER_ID=$(jget 'd["order"]["id"]')
ok

# --- runner side ------------------------------------------------------------------------------
STEP="runner-heartbeat"
call POST /runner/heartbeat '{"version":"smoke","hostname":"smoke.invalid","capabilities":["smoke"]}' "${RUNNER[@]}"
expect_status 200
expect_field 'd["ok"]' true
expect_field 'd["runnerId"]' "$RUNNER_ID"
expect_field 'd["serverId"]' "$SERVER_ID"
ok

STEP="claim-next"
call POST "/runner/orders/claim-next?wait=5" "" "${RUNNER[@]}"
expect_status 200
expect_field 'd["id"]' "$ORDER_ID"
expect_field 'd["status"]' CLAIMED
expect_field 'd["runnerId"]' "$RUNNER_ID"
expect_field 'd["attempt"]' 1
expect_present 'd["leaseToken"]'
LEASE_TOKEN=$(jget 'd["leaseToken"]')
ok

STEP="start"
call POST "/runner/orders/${ORDER_ID}/start" "{\"leaseToken\":\"${LEASE_TOKEN}\"}" "${RUNNER[@]}"
expect_status 200
expect_field 'd["id"]' "$ORDER_ID"
expect_field 'd["status"]' RUNNING
ok

STEP="order-heartbeat"
call POST "/runner/orders/${ORDER_ID}/heartbeat" "{\"leaseToken\":\"${LEASE_TOKEN}\"}" "${RUNNER[@]}"
expect_status 200
expect_field 'd["orderId"]' "$ORDER_ID"
expect_field 'd["status"]' RUNNING
expect_field 'd["cancelRequested"]' false
ok

REPORT='{"version":"v2","summary":"smoke ok","durationMs":12,"steps":[{"name":"ping","status":"SUCCEEDED","durationMs":3}],"errors":[]}'

STEP="complete"
call POST "/runner/orders/${ORDER_ID}/complete" "{\"status\":\"SUCCEEDED\",\"leaseToken\":\"${LEASE_TOKEN}\",\"report\":${REPORT}}" "${RUNNER[@]}"
expect_status 200
expect_field 'd["id"]' "$ORDER_ID"
expect_field 'd["status"]' SUCCEEDED
ok

STEP="complete-retry-same-outcome"
call POST "/runner/orders/${ORDER_ID}/complete" "{\"status\":\"SUCCEEDED\",\"leaseToken\":\"${LEASE_TOKEN}\",\"report\":${REPORT}}" "${RUNNER[@]}"
expect_status 200
expect_field 'd["status"]' SUCCEEDED
ok

# --- admin view of the result -----------------------------------------------------------------
STEP="get-order"
call GET "/orders/${ORDER_ID}" "" "${ADMIN[@]}"
expect_status 200
expect_field 'd["id"]' "$ORDER_ID"
expect_field 'd["status"]' SUCCEEDED
expect_field 'd["reportVersion"]' v2
expect_field 'd["reportSummary"]' "smoke ok"
expect_field 'd["report"]["version"]' v2
expect_field 'd["report"]["steps"][0]["name"]' ping
ok

# --- negative checks --------------------------------------------------------------------------
STEP="reject-wrong-admin-key"
call GET /servers "" -H "x-ikoma-admin-key: wrong-${SUFFIX}"
expect_status 401
expect_field 'd["reason"]' unauthorized
ok

STEP="reject-wrong-runner-token"
call POST /runner/heartbeat '{}' -H "x-runner-id: ${RUNNER_ID}" -H "x-runner-token: ikr_wrong_${SUFFIX}"
expect_status 401
expect_field 'd["reason"]' unauthorized
ok

STEP="reject-complete-after-end"
call POST "/runner/orders/${ORDER_ID}/complete" "{\"status\":\"FAILED\",\"leaseToken\":\"${LEASE_TOKEN}\",\"report\":{\"version\":\"v2\",\"summary\":\"late failure\",\"durationMs\":1,\"steps\":[],\"errors\":[{\"message\":\"late\"}]}}" "${RUNNER[@]}"
expect_status 409
expect_field 'd["reason"]' invalid_status
ok

STEP="reject-malformed-id"
call GET "/orders/not-a-uuid" "" "${ADMIN[@]}"
expect_status 422
expect_field 'd["reason"]' validation_error
ok

STEP="claim-next-empty"
call POST "/runner/orders/claim-next?wait=0" "" "${RUNNER[@]}"
expect_status 204
[[ -z "$BODY" ]] || fail "response body" "empty" "'${BODY:0:200}'"
ok

# --- the audit trail (after the rejected completion: it must not have added a transition) -----
STEP="order-events"
call GET "/orders/${ORDER_ID}/events" "" "${ADMIN[@]}"
expect_status 200
expect_field '[e["toStatus"] for e in d]' '["QUEUED", "CLAIMED", "RUNNING", "SUCCEEDED"]'
expect_field '[e["fromStatus"] for e in d][1:]' '["QUEUED", "CLAIMED", "RUNNING"]'
expect_field 'all(e["orderId"] == a[0] for e in d)' true "$ORDER_ID"
ok

# --- cleanup: nothing of the smoke stays in the fleet -------------------------------------------
STEP="revoke-runner"
call POST "/runners/${RUNNER_ID}/revoke" "" "${ADMIN[@]}"
expect_status 200
expect_present 'd["revokedAt"]'
ok

STEP="delete-server"
call DELETE "/servers/${SERVER_ID}" "" "${ADMIN[@]}"
expect_status 204
ok

STEP="server-gone"
call GET /servers "" "${ADMIN[@]}"
expect_status 200
expect_field 'a[0] in [s["id"] for s in d]' false "$SERVER_ID"
call GET /fleet/summary "" "${ADMIN[@]}"
expect_status 200
expect_field 'a[0] in [i.get("serverId") for i in d.get("items", [])]' false "$SERVER_ID"
CLEANED="yes"
ok

echo "smoke: all ${CHECKS} checks passed"
