#!/bin/sh
# Fails when the committed console build (console/dist, embedded in the vigil binary) differs
# from a fresh build of console/src: run from anywhere, after `npm --prefix clients/js ci`.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
npm --prefix "$root/clients/js" run build:console >/dev/null
if ! git -C "$root" diff --quiet --exit-code -- console/dist || [ -n "$(git -C "$root" ls-files --others --exclude-standard -- console/dist)" ]; then
  echo "console/dist differs from a fresh build of console/src: run 'npm --prefix clients/js run build:console' and commit console/dist" >&2
  git -C "$root" status --short -- console/dist >&2
  exit 1
fi
echo "console/dist matches its sources"
