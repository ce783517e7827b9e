#!/usr/bin/env bash
# Ensure a real Prometheus server is available (Debian's `prometheus`
# package), for the tests that scrape gantry-cp and gantry-proxy and query
# the result with PromQL. Idempotent; concurrent callers wait for one
# install. Prints the binary's path on stdout; progress goes to stderr.
# GANTRY_PROMETHEUS_BIN names a binary to use instead.
set -euo pipefail

log() { echo "prometheus.sh: $*" >&2; }

if [ -n "${GANTRY_PROMETHEUS_BIN:-}" ]; then
  echo "$GANTRY_PROMETHEUS_BIN"
  exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.prometheus-install.lock"
flock 9

if ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian's prometheus package"
  # The package would start its own server as a service; the tests start
  # theirs, so services are not started on install.
  export DEBIAN_FRONTEND=noninteractive
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/target/policy-rc.d"
  chmod +x "$ROOT/target/policy-rc.d"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO cp "$ROOT/target/policy-rc.d" /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -q prometheus >&2 \
    || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q prometheus >&2; }
fi
command -v prometheus
