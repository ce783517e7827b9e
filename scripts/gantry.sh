#!/usr/bin/env bash
# Starts the gateway on this machine: gantry-cp on the embedded SQLite
# default (./gantry.db), admin API on 127.0.0.1:8001. The data plane
# (gantry-proxy on :8000) joins this script when it is built; until then
# this starts the control plane alone and says so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release -p gantry-cp
echo "gantry: admin API on http://127.0.0.1:8001 (store: sqlite://gantry.db)" >&2
echo "gantry: the data plane (proxy on :8000) is not built yet" >&2
exec ./target/release/gantry-cp "$@"
