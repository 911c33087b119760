#!/usr/bin/env bash
# Load scenarios for Vigil's realtime gateway, against a real server started here.
#
#   benches/load/run.sh           # every scenario, ~7 minutes once built
#   benches/load/run.sh --quick   # smoke run of each mode, ~20 seconds once built
#   benches/load/run.sh --compare A B [ROUNDS]
#                                 # two vigil binaries (paths), interleaved: (c) and (d) on a
#                                 # fresh server each, A then B, ROUNDS times (default 2);
#                                 # ~3 minutes a round. On a shared machine whose speed drifts
#                                 # by the hour, only interleaved runs compare two builds.
#                                 # VIGIL_LOAD_COMPARE_SCENARIOS=g runs instead (g): 1,000
#                                 # subscribers x 25/s (issue 17), and records the server's
#                                 # latency histograms after each run (breakdown); gk is
#                                 # (g) with an Idempotency-Key on every command, as
#                                 # @vigil/client sends them;
#                                 # VIGIL_LOAD_COMPARE_SCENARIOS=v runs (v): vitals ingest,
#                                 # 500-reading batches x 4 writers, 100 subscribers.
#
# The server runs on CPU 0 and the load tool on CPU 1 (taskset), so the two do not compete
# for a core. The server's embedded PostgreSQL inherits CPU 0 from it: the numbers are those
# of one core running Vigil and its database together. The server gets a fresh data dir under
# a temporary directory, a random HS256 secret (passed to the tool through VIGIL_JWT_SECRET,
# never on a command line), raised command rate limits, and a per-user connection limit above
# what the tool needs (it spreads connections over 1,000 users and commands over 50 writers).
# The idle-RSS scenarios each get a freshly started server, so memory retained from earlier
# runs does not hide what connections cost.
#
# Results: a markdown table on stdout, and every run as a JSON line in
# target/load/results-<time>.jsonl. Exits non-zero if any run lost or duplicated an event.
# Only the loopback interface is used. The server (and through it PostgreSQL) is stopped on
# exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
COMPARE=()
ROUNDS=2
VIGIL_BIN=target/release/vigil
case "${1:-}" in
  --quick) QUICK=1 ;;
  --compare)
    [ $# -ge 3 ] || { echo "usage: $0 --compare A B [ROUNDS]" >&2; exit 2; }
    COMPARE=("$(realpath "$2")" "$(realpath "$3")")
    ROUNDS=${4:-2}
    for bin in "${COMPARE[@]}"; do
      [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
    done
    ;;
  "") ;;
  *) echo "usage: $0 [--quick | --compare A B [ROUNDS]]" >&2; exit 2 ;;
esac

# 10,000 connections need as many descriptors on each side, plus the REST writer's.
ulimit -n 20000 || { echo "cannot raise the open-file limit to 20000 (hard limit $(ulimit -Hn))" >&2; exit 1; }

PORT=${VIGIL_LOAD_PORT:-18080}
URL="http://127.0.0.1:$PORT"
WORK=$(mktemp -d /tmp/vigil-load.XXXXXX)
RESULTS_DIR=target/load
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
VIGIL_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export VIGIL_JWT_SECRET
SERVER_PID=""
FAILED=0

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  # SIGTERM: vigil drains its connections and stops the PostgreSQL it started.
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "vigil did not stop in 30 s; killing it" >&2
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  # If vigil died without stopping PostgreSQL, stop that one postmaster (by its pid file).
  local pidfile="$WORK/data/postgres/pgdata/postmaster.pid"
  if [ -f "$pidfile" ]; then
    local pg
    pg=$(head -n 1 "$pidfile")
    if [ -n "$pg" ] && kill -0 "$pg" 2>/dev/null; then
      kill -TERM "$pg" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pg" 2>/dev/null || break; sleep 0.5; done
    fi
  fi
  SERVER_PID=""
}

cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
  stop_server
  RUST_LOG=warn taskset -c 0 "$VIGIL_BIN" serve \
    --bind "127.0.0.1:$PORT" \
    --data-dir "$WORK/data" \
    --command-rate 100000 --command-burst 100000 \
    --max-connections-per-user 64 \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 120); do
    if curl -fsS "$URL/healthz" >/dev/null 2>&1; then
      echo "== vigil up (pid $SERVER_PID, CPU 0)" >&2
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "vigil did not start; its log:" >&2
  tail -n 50 "$WORK/server.log" >&2
  exit 1
}

# One run of the load tool on CPU 1; a failed run is remembered, the scenarios go on.
load() {
  echo "== load $*" >&2
  # The embedded PostgreSQL's postmaster (pg_ctl daemonizes it: not vigil's child), for the
  # CPU split the steady runs report.
  local pg_args=()
  local pidfile="$WORK/data/postgres/pgdata/postmaster.pid"
  if [ -f "$pidfile" ]; then pg_args=(--postgres-pid "$(head -n 1 "$pidfile")"); fi
  if ! taskset -c 1 "$LOAD" --url "$URL" --server-pid "$SERVER_PID" "${pg_args[@]}" --json-out "$RESULTS" "$@" >&2; then
    echo "!! run failed: $*" >&2
    FAILED=1
  fi
}

if [ ${#COMPARE[@]} -eq 0 ]; then
  echo "== building (release)" >&2
  cargo build --release --bin vigil
fi
# The bench's own artifact (the vigil binary is built alongside it, for CARGO_BIN_EXE), or
# VIGIL_LOAD_BIN (e.g. a saved build of the tool, while the tree is being rebuilt).
LOAD=${VIGIL_LOAD_BIN:-}
[ -n "$LOAD" ] || LOAD=$(cargo bench --bench load --no-run --message-format=json \
  | grep '"kind":\["bench"\]' | grep '"name":"load"' \
  | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d '"' -f 4)
[ -x "$LOAD" ] || { echo "could not find the load bench executable" >&2; exit 1; }

if [ ${#COMPARE[@]} -gt 0 ]; then
  for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
      if [ "$side" = A ]; then VIGIL_BIN=${COMPARE[0]}; else VIGIL_BIN=${COMPARE[1]}; fi
      echo "== $side = $VIGIL_BIN" >&2
      # A fresh data dir per side: a build without a newer build's migrations refuses a
      # database that has them applied.
      stop_server
      rm -rf "$WORK/data"
      if [ "${VIGIL_LOAD_COMPARE_SCENARIOS:-cd}" = g ] || [ "${VIGIL_LOAD_COMPARE_SCENARIOS:-cd}" = gk ]; then
        keyed=(); [ "$VIGIL_LOAD_COMPARE_SCENARIOS" = gk ] && keyed=(--keyed)
        start_server
        load --label "(${VIGIL_LOAD_COMPARE_SCENARIOS}) $side #$round" --mode steady --hospital "g-${side,,}-$round" --connections 1000 --rate 25 --duration 30 "${keyed[@]}"
        { echo "## (g) $side #$round $VIGIL_BIN"
          curl -fsS "$URL/metrics" | grep -E '^vigil_(window|delivery)_latency|^vigil_stream_events' || true
        } >>"$RESULTS.metrics"
        continue
      fi
      if [ "${VIGIL_LOAD_COMPARE_SCENARIOS:-cd}" = v ]; then
        # (v) vitals ingest (issue 17, goal 4): 100 `patient:` subscribers, 4 writers posting
        # 500-reading batches back to back for 20 s; VIGIL_LOAD_PERF=dir also records a
        # `perf record -C 0 -g` of the middle 10 s per run into dir.
        start_server
        PERF_PID=""
        if [ -n "${VIGIL_LOAD_PERF:-}" ]; then
          ( sleep 6; perf record -C 0 -g -o "$VIGIL_LOAD_PERF/perf-$side-$round.data" -- sleep 10 ) >/dev/null 2>&1 &
          PERF_PID=$!
        fi
        load --label "(v) $side #$round" --mode vitals --hospital "v-${side,,}-$round" --connections 100 --patients 100 --batch-size 500 --concurrency 4 --duration 20
        # Only the recording: a bare `wait` would wait for the server too.
        if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; fi
        continue
      fi
      start_server
      load --label "(c) $side #$round" --mode steady --hospital "c-${side,,}-$round" --connections 1000 --rate 100 --duration 30
      start_server
      load --label "(d) $side #$round" --mode steady --hospital "d-${side,,}-$round" --connections 10000 --rate 10 --duration 30
    done
  done
elif [ "$QUICK" = 1 ]; then
  start_server
  load --label "idle 200" --mode idle --hospital q-idle --connections 200 --duration 2
  load --label "connect 500" --mode connect --hospital q-connect --connections 500
  load --label "200 subs × 50/s" --mode steady --hospital q-steady --connections 200 --rate 50 --duration 5
  load --label "reconnect 500, owed 20" --mode reconnect --hospital q-reconnect --connections 500 --owed 20
else
  # (a) Server RSS per idle subscribed connection, each on a fresh server.
  start_server
  load --label "(a) idle 1,000" --mode idle --hospital idle-1k --connections 1000 --duration 10
  start_server
  load --label "(a) idle 10,000" --mode idle --hospital idle-10k --connections 10000 --duration 20
  # (b) Connections accepted per second, as fast as the tool can open them. Three runs, each
  # on a fresh server: on a shared core this figure moves by ±30 % from run to run.
  for run in 1 2 3; do
    start_server
    load --label "(b) connect 10,000 #$run" --mode connect --hospital "connect-10k-$run" --connections 10000
  done
  # (c) 1,000 subscribers × 100 commands/s.
  start_server
  load --label "(c) 1,000 subs × 100/s" --mode steady --hospital steady-1k --connections 1000 --rate 100 --duration 30
  # (d) 10,000 subscribers × 10 commands/s.
  load --label "(d) 10,000 subs × 10/s" --mode steady --hospital steady-10k --connections 10000 --rate 10 --duration 30
  # (e) Saturation: 1,000 subscribers, the command rate stepped up until the server falls
  # behind (deliveries/s stops tracking rate × 1,000, latencies climb, slow consumers).
  for rate in 200 400 800 1600; do
    start_server
    load --label "(e) 1,000 subs × $rate/s" --mode steady --hospital "sat-$rate" --connections 1000 --rate "$rate" --duration 20
  done
  # (f) 10,000 clients reconnecting at once, each owed 100 events.
  start_server
  load --label "(f) reconnect 10,000, owed 100" --mode reconnect --hospital herd-10k --connections 10000 --owed 100 --connect-concurrency 1000 --drain-timeout 60
fi

stop_server
echo >&2
"$LOAD" --summarize "$RESULTS" || FAILED=1
echo >&2
echo "results: $RESULTS" >&2
exit "$FAILED"
