#!/usr/bin/env bash
# WebSocket conformance: runs Autobahn|Testsuite's fuzzing client (RFC 6455, sections 1-7,
# 9, 10, 12, 13) against `examples/ws_echo.rs`, an echo server on Vigil's own socket layer,
# and compares the results with .ci/autobahn/expected.json. Fails on any FAILED case and on
# any case worse than expected. The HTML report is left in target/autobahn/report.
#
# Autobahn|Testsuite runs only on Python 2.7: it is installed from PyPI into a virtualenv
# under target/autobahn (made by `virtualenv` < 20.22, the last that creates 2.7 envs) with
# the machine's CPython 2.7 (pyenv's, or AUTOBAHN_PYTHON2).
set -euo pipefail
cd "$(dirname "$0")/.."

AUTOBAHN_VERSION=25.10.1
VIRTUALENV_VERSION=20.21.1
# Section 9 sends messages of up to 16 MiB; the echo server accepts them (its limit is a
# setting, like `VIGIL_MAX_FRAME_BYTES`), so the section measures the layer, not a refusal.
MAX_MESSAGE=$((16 * 1024 * 1024))
work=target/autobahn
report=$work/report
mkdir -p "$work"

# A CPython 2.7 that runs (pyenv's shim for python2.7 exists but fails unless 2.7 is selected).
find_python2() {
  local root candidate
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for candidate in ${AUTOBAHN_PYTHON2:-} \
    $(ls -d "$root"/versions/2.7*/bin/python2.7 2>/dev/null | sort -rV) \
    $(command -v python2.7 2>/dev/null || true); do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (2, 7)' >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  return 1
}

venv=$work/venv
stamp=$venv/.installed-$AUTOBAHN_VERSION
if [ ! -f "$stamp" ]; then
  python2=$(find_python2) || {
    echo "autobahn: no CPython 2.7 found (set AUTOBAHN_PYTHON2); Autobahn|Testsuite needs it" >&2
    exit 1
  }
  echo "== installing Autobahn|Testsuite $AUTOBAHN_VERSION for $python2"
  rm -rf "$work/tools" "$venv"
  python3 -m venv "$work/tools"
  "$work/tools/bin/pip" install -q "virtualenv==$VIRTUALENV_VERSION"
  "$work/tools/bin/virtualenv" -q -p "$python2" "$venv"
  "$venv/bin/pip" install -q "autobahntestsuite==$AUTOBAHN_VERSION"
  touch "$stamp"
fi

# release by default (the layer as deployed); AUTOBAHN_PROFILE=dev reuses what
# `cargo test --workspace` already built (every case gives the same result, section 9 takes
# seconds longer) and saves a release build of every dependency.
profile=${AUTOBAHN_PROFILE:-release}
echo "== building the echo server (examples/ws_echo.rs, $profile)"
cargo build --profile "$profile" --locked --example ws_echo
bin_dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")/examples

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bin_dir/ws_echo" --listen "127.0.0.1:$port" --max-message "$MAX_MESSAGE" \
  >"$work/ws_echo.log" 2>&1 &
echo_pid=$!
stop_echo() { kill "$echo_pid" 2>/dev/null || true; wait "$echo_pid" 2>/dev/null || true; }
trap stop_echo EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$echo_pid" 2>/dev/null || { cat "$work/ws_echo.log" >&2; exit 1; }
  sleep 0.1
done

# The checked-in spec, pointed at this run's port.
python3 - "$port" .ci/autobahn/fuzzingclient.json >"$work/fuzzingclient.json" <<'PY'
import json, sys
with open(sys.argv[2]) as f:
    spec = json.load(f)
spec["servers"][0]["url"] = "ws://127.0.0.1:%s" % sys.argv[1]
json.dump(spec, sys.stdout, indent=3)
PY

echo "== wstest -m fuzzingclient (echo server on 127.0.0.1:$port)"
rm -rf "$report"
started=$(date +%s)
"$venv/bin/wstest" -m fuzzingclient -s "$work/fuzzingclient.json" >"$work/wstest.log" 2>&1 || {
  tail -n 40 "$work/wstest.log" >&2
  exit 1
}
echo "   $(($(date +%s) - started)) s"
kill -0 "$echo_pid" 2>/dev/null || { echo "the echo server died:" >&2; cat "$work/ws_echo.log" >&2; exit 1; }

python3 .ci/autobahn/compare.py "$report/index.json" .ci/autobahn/expected.json "$work/summary.md"
echo "Autobahn|Testsuite HTML report: $report/index.html"
