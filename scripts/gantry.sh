#!/usr/bin/env bash
# Starts the whole gateway on this machine: gantry-cp on the embedded
# SQLite default (./gantry.db) and one gantry-proxy fed by it.
#   admin API   http://127.0.0.1:8001
#   proxy       http://127.0.0.1:8000  (https on 8443 once a certificate exists)
#   xDS         127.0.0.1:18000, proxy admin http://127.0.0.1:9901
# Extra arguments go to gantry-cp (e.g. --database-url postgres://...).
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/build-deps.sh
cargo build --release -p gantry-cp -p gantry-proxy

./target/release/gantry-cp "$@" &
cp_pid=$!
proxy_pid=
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
  kill "$cp_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
  # Any answer means it serves (401 too, when an admin token is set).
  curl -s -o /dev/null http://127.0.0.1:8001/status 2>/dev/null && break
  sleep 0.1
done
./target/release/gantry-proxy --xds-address http://127.0.0.1:18000 --node-id "$(hostname)-proxy" &
proxy_pid=$!

echo "gantry: admin API  http://127.0.0.1:8001" >&2
echo "gantry: proxy      http://127.0.0.1:8000" >&2
wait -n "$cp_pid" "$proxy_pid"
