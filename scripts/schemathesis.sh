#!/usr/bin/env bash
# Ensure a pinned schemathesis (the OpenAPI contract test of the admin API,
# tests/tests/openapi_contract.rs) is available at .venv-tools/bin/st (repo root).
# Idempotent: does nothing if the right version is already there.
# Prints the absolute path of the `st` binary on stdout; progress goes to stderr.
set -euo pipefail

SCHEMATHESIS_VERSION="${GANTRY_SCHEMATHESIS_VERSION:-4.32.5}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tools"
ST="$VENV/bin/st"

log() { echo "schemathesis.sh: $*" >&2; }

have_right_schemathesis() {
  [ -x "$ST" ] || return 1
  local v
  # e.g. "st, version 4.32.5"
  v="$("$ST" --version 2>/dev/null)" || return 1
  grep -Eq "(^|[ v])${SCHEMATHESIS_VERSION//./\\.}\$" <<<"$v"
}

# Concurrent callers (test processes) wait for one install instead of racing.
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.schemathesis-install.lock"
flock 9

if have_right_schemathesis; then
  log "schemathesis ${SCHEMATHESIS_VERSION} already installed"
else
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  log "installing schemathesis==${SCHEMATHESIS_VERSION} (this can take a minute)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}" >&2
  if ! have_right_schemathesis; then
    log "ERROR: $ST missing or not version ${SCHEMATHESIS_VERSION} after install:"
    "$ST" --version >&2 || true
    exit 1
  fi
  log "installed: $("$ST" --version 2>/dev/null)"
fi

echo "$ST"
