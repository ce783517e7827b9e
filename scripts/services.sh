#!/usr/bin/env bash
# Make sure the local services the tests need are up:
#   PostgreSQL 15  127.0.0.1:5432  (trust auth, user postgres, database gantry_test)
#   Redis 7        127.0.0.1:6379
#   Redis Cluster  127.0.0.1:7101-7103, three masters (scripts/redis-cluster.sh)
# Idempotent. Can be executed (./scripts/services.sh) or sourced
# (. scripts/services.sh); when sourced it returns instead of exiting and does
# not change the caller's shell options.
# Installs the packages with apt-get if they are missing (fresh Debian machine).
# Progress goes to stderr. Non-zero status if a service is not up within
# GANTRY_SERVICES_TIMEOUT seconds (default 30).

_gs_log() { echo "services.sh: $*" >&2; }
_gs_die() { echo "services.sh: ERROR: $*" >&2; return 1; }

# _gs_wait <timeout-seconds> <command...>: retry the command until it succeeds.
_gs_wait() {
  local timeout="$1"; shift
  local deadline=$(( SECONDS + timeout ))
  while ! "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      return 1
    fi
    sleep 0.5
  done
}

_gs_apt_install() {
  _gs_log "installing packages: $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || return 1
  apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$@" >&2 || return 1
}

_gs_pg_version() {
  # Newest cluster version under /etc/postgresql (normally just "15").
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

_gs_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

_gs_pg_query_ok() {
  psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -XAtqc 'SELECT 1' >/dev/null 2>&1
}

# Rewrite pg_hba.conf so that local socket and loopback TCP connections are
# trusted, then reload. Only used on a fresh install or when trust auth is
# evidently not in effect.
_gs_pg_trust_local() {
  local ver="$1"
  local hba="/etc/postgresql/$ver/main/pg_hba.conf"
  [ -f "$hba" ] || { _gs_die "pg_hba.conf not found at $hba"; return 1; }
  _gs_log "configuring trust auth for local/loopback connections in $hba"
  cp -n "$hba" "$hba.orig" 2>/dev/null || true
  sed -i -E \
    -e 's/^(local[[:space:]]+.*[[:space:]])(peer|md5|scram-sha-256|ident|password)[[:space:]]*$/\1trust/' \
    -e 's#^(host[[:space:]]+.*[[:space:]](127\.0\.0\.1/32|::1/128)[[:space:]]+)(peer|md5|scram-sha-256|ident|password)[[:space:]]*$#\1trust#' \
    "$hba"
  grep -Eq '^local[[:space:]]+all[[:space:]]+all[[:space:]]+trust' "$hba" \
    || echo 'local   all             all                                     trust' >>"$hba"
  grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" \
    || echo 'host    all             all             127.0.0.1/32            trust' >>"$hba"
  grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust' "$hba" \
    || echo 'host    all             all             ::1/128                 trust' >>"$hba"
  if _gs_pg_ready; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >&2 || return 1
    sleep 1
  fi
}

_gs_postgres_up() {
  local timeout="$1" fresh=0 ver
  if ! command -v psql >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1 \
     || [ -z "$(_gs_pg_version)" ]; then
    _gs_apt_install postgresql || { _gs_die "could not install postgresql"; return 1; }
    fresh=1
  fi
  ver="$(_gs_pg_version)"
  [ -n "$ver" ] || { _gs_die "no PostgreSQL cluster under /etc/postgresql"; return 1; }
  if (( fresh )); then
    _gs_pg_trust_local "$ver" || return 1
  fi

  if _gs_pg_ready; then
    _gs_log "postgres $ver: already up"
  else
    _gs_log "postgres $ver: starting"
    # "already running" exits 2 on Debian; readiness is checked below anyway.
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
    if ! _gs_wait "$timeout" _gs_pg_ready; then
      _gs_die "PostgreSQL did not accept connections on 127.0.0.1:5432 within ${timeout}s" \
        "(see /var/log/postgresql/postgresql-$ver-main.log)"
      return 1
    fi
    _gs_log "postgres $ver: up"
  fi

  if ! _gs_pg_query_ok; then
    # Up but we cannot log in as postgres without a password: fix auth.
    _gs_pg_trust_local "$ver" || return 1
    if ! _gs_wait 10 _gs_pg_query_ok; then
      _gs_die "cannot connect: psql -h 127.0.0.1 -U postgres -d postgres" \
        "(is pg_hba.conf set to trust for 127.0.0.1/32?)"
      return 1
    fi
  fi

  local exists
  exists="$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -XAtqc \
    "SELECT 1 FROM pg_database WHERE datname = 'gantry_test'")" || {
    _gs_die "could not query pg_database"; return 1; }
  if [ "$exists" != "1" ]; then
    _gs_log "postgres: creating database gantry_test"
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Xqc 'CREATE DATABASE gantry_test' >&2 \
      || { _gs_die "could not create database gantry_test"; return 1; }
  fi
}

_gs_redis_ready() {
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
}

_gs_redis_up() {
  local timeout="$1"
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    _gs_apt_install redis-server || { _gs_die "could not install redis-server"; return 1; }
    # The package may have started its own instance (if an init system is
    # present); that one also listens on 127.0.0.1:6379, which is fine.
  fi

  if _gs_redis_ready; then
    _gs_log "redis: already up"
    return 0
  fi
  _gs_log "redis: starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
    --save "" --appendonly no --dir /var/lib/redis \
    --logfile /var/log/redis/ci.log >&2 || true
  if ! _gs_wait "$timeout" _gs_redis_ready; then
    _gs_die "Redis did not answer PING on 127.0.0.1:6379 within ${timeout}s" \
      "(see /var/log/redis/ci.log)"
    return 1
  fi
  _gs_log "redis: up"
}

# The three-master Redis Cluster (scripts/redis-cluster.sh start).
_gs_redis_cluster_up() {
  "$(dirname "${BASH_SOURCE[0]}")/redis-cluster.sh" start >/dev/null \
    || { _gs_die "the Redis Cluster on 127.0.0.1:7101-7103 did not come up"; return 1; }
}

# Tools the tests call: the openssl CLI makes their throwaway PKI and keys;
# curl is their TLS client (and scripts/gantry.sh's readiness probe).
_gs_tools_up() {
  local missing=()
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return 0
  _gs_apt_install "${missing[@]}" || { _gs_die "could not install ${missing[*]}"; return 1; }
}

gantry_services_up() {
  local timeout="${GANTRY_SERVICES_TIMEOUT:-30}"
  _gs_tools_up || return 1
  _gs_postgres_up "$timeout" || return 1
  _gs_redis_up "$timeout" || return 1
  _gs_redis_cluster_up || return 1
  _gs_log "ok: postgres 127.0.0.1:5432 (db gantry_test), redis 127.0.0.1:6379," \
    "redis cluster 127.0.0.1:7101-7103"
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: run in the caller's shell, report via return status.
  gantry_services_up
  return $?
else
  set -uo pipefail
  gantry_services_up
  exit $?
fi
