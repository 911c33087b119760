#!/usr/bin/env bash
# Schemathesis against the served OpenAPI document on a real server: `vigil serve` with its
# own data dir (embedded PostgreSQL), a token for one hospital, `--checks all`, every phase
# (the stateful one included), a fixed seed and then a random one. Fails on any failure or
# server error. Usage: .ci/schemathesis.sh [max examples per operation, default 25]
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
FIXED_SEED=20261206
EXAMPLES=${1:-25}
VENV=target/schemathesis-venv
WORK=target/schemathesis
HOSPITAL=conformance

if [ ! -x "$VENV/bin/schemathesis" ] || [ "$("$VENV/bin/schemathesis" --version | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== building vigil"
cargo build --locked --bin vigil
VIGIL=target/debug/vigil

rm -rf "$WORK"
mkdir -p "$WORK"
if [ "$(id -u)" = 0 ]; then
  # The embedded PostgreSQL runs as `postgres`, which must be able to reach its data dir.
  chmod 755 "$WORK"
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
}
trap stop_server EXIT

# Commands are rate limited per user (20/s by default); the fuzzer is not a user.
VIGIL_DATA_DIR="$WORK/var" VIGIL_BIND="127.0.0.1:$PORT" VIGIL_COMMAND_RATE=100000 \
  VIGIL_COMMAND_BURST=100000 "$VIGIL" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

# One worker: with two, Hypothesis parses lambda sources in two threads at once, which
# CPython 3.11 can fail with "AST constructor recursion depth mismatch" (a tool error, not a
# finding about the server).
run() {
  local role=$1 seed=$2
  shift 2
  echo "== schemathesis as $role, seed $seed $*"
  VIGIL_ST_TOKEN=$(VIGIL_DATA_DIR="$WORK/var" "$VIGIL" token --hospital "$HOSPITAL" --user "st-$role" --role "$role" --ttl 2h) \
  VIGIL_ST_HOSPITAL=$HOSPITAL \
    "$VENV/bin/schemathesis" --config-file .ci/schemathesis.toml run \
      "http://127.0.0.1:$PORT/api/openapi.json" \
      --checks all --seed "$seed" --workers 1 --max-examples "$EXAMPLES" \
      --report junit --report-dir "$WORK/report-$role-$seed" "$@"
}

# The operations the document's links connect (each create and the operations on what it
# created). In the full runs the stateful phase spreads its scenarios over all 34
# operations and follows few links; alone, it chains create -> act on most of them.
CHAINS='^(raise_alert|acknowledge_alert|escalate_alert|resolve_alert|open_case|get_case|assign_case|change_case_status|post_case_message|mark_case_read|schedule_appointment|reschedule_appointment|check_in_appointment|cancel_appointment|send_notification|mark_notification_read|record_vitals|get_patient)$'


run admin "$FIXED_SEED"
run admin "$(python3 -c 'import random; print(random.randrange(1, 2**31))')"
run nurse "$FIXED_SEED"
run admin "$FIXED_SEED" --phases stateful --include-operation-id-regex "$CHAINS"
