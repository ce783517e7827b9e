#!/usr/bin/env bash
# What compiling the workspace needs beyond Rust: a C compiler (ring,
# SQLite) and make (jemalloc's build, for gantry-cp's allocator).
# Idempotent; installs from Debian's packages only what is missing.
set -euo pipefail
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "build-deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${missing[@]}" >&2 \
    || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q "${missing[@]}" >&2; }
fi
