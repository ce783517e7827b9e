#!/usr/bin/env bash
# A local three-master Redis Cluster for the tests (no replicas):
#   ./scripts/redis-cluster.sh start    up and cluster_state:ok on every node
#   ./scripts/redis-cluster.sh stop     shut the nodes down, remove their state
#   ./scripts/redis-cluster.sh status   exit 0 only if the cluster is healthy
# `start` prints the nodes, comma-separated, on stdout (what tests read from
# GANTRY_TEST_REDIS_CLUSTER); progress goes to stderr.
#
# Nodes listen on 127.0.0.1:7101-7103 (GANTRY_REDIS_CLUSTER_PORTS overrides,
# space-separated), with their cluster bus on port+100 (7201-7203). Both are
# outside the ranges the e2e harness takes ports from (20000-32000 and the
# kernel's ephemeral range). Data, nodes.conf, logs and pid files live in
# ${TMPDIR:-/tmp}/gantry-redis-cluster/<port>/.
#
# Idempotent: a healthy cluster on those ports is left alone; anything else
# (nodes down, a half-created cluster, stale nodes.conf after a reboot) is
# shut down, wiped and created again. Never prompts (works with no stdin,
# e.g. under CI=true). Needs redis-server and redis-cli (Redis 7;
# scripts/services.sh installs them). GANTRY_SERVICES_TIMEOUT bounds each wait
# (default 30 seconds).
set -uo pipefail

PORTS=(${GANTRY_REDIS_CLUSTER_PORTS:-7101 7102 7103})
BUS_OFFSET=100
ROOT="${TMPDIR:-/tmp}/gantry-redis-cluster"
TIMEOUT="${GANTRY_SERVICES_TIMEOUT:-30}"

log() { echo "redis-cluster.sh: $*" >&2; }
die() { echo "redis-cluster.sh: ERROR: $*" >&2; exit 1; }

cli() { local port="$1"; shift; redis-cli -h 127.0.0.1 -p "$port" "$@" </dev/null 2>/dev/null; }

nodes_csv() {
  local out="" p
  for p in "${PORTS[@]}"; do out+="${out:+,}127.0.0.1:$p"; done
  echo "$out"
}

# Prints the value of <field> in CLUSTER INFO of the node on <port>.
info_field() {
  cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"
}

# Healthy: every node is up, sees all the others, and says cluster_state:ok
# with all 16384 slots assigned.
healthy() {
  local p
  for p in "${PORTS[@]}"; do
    [ "$(info_field "$p" cluster_state)" = ok ] || return 1
    [ "$(info_field "$p" cluster_slots_assigned)" = 16384 ] || return 1
    [ "$(info_field "$p" cluster_known_nodes)" = "${#PORTS[@]}" ] || return 1
  done
}

# wait_for <what> <command...>
wait_for() {
  local what="$1"; shift
  local deadline=$(( SECONDS + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      die "$what within ${TIMEOUT}s (logs: $ROOT/<port>/redis.log)"
    fi
    sleep 0.2
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
all_down() { local p; for p in "${PORTS[@]}"; do port_free "$p" || return 1; done; }
pinged() { [ "$(cli "$1" ping)" = PONG ]; }
all_pinged() { local p; for p in "${PORTS[@]}"; do pinged "$p" || return 1; done; }

stop_nodes() {
  local p
  for p in "${PORTS[@]}"; do
    if pinged "$p"; then
      # Refuse to shut down a Redis that is not one of ours.
      case "$(cli "$p" config get dir | sed -n 2p)" in
        */gantry-redis-cluster/"$p") ;;
        *) die "127.0.0.1:$p runs a Redis that is not this script's; free the port" \
             "or set GANTRY_REDIS_CLUSTER_PORTS" ;;
      esac
      cli "$p" shutdown nosave >/dev/null || true
    elif [ -f "$ROOT/$p/redis.pid" ]; then
      kill "$(cat "$ROOT/$p/redis.pid")" 2>/dev/null || true
    elif ! port_free "$p"; then
      die "127.0.0.1:$p is in use by another program; free it or set GANTRY_REDIS_CLUSTER_PORTS"
    fi
  done
  wait_for "the old nodes did not stop" all_down
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    || die "redis-server and redis-cli are needed (run scripts/services.sh)"
  if healthy; then
    log "already up: $(nodes_csv)"
    nodes_csv
    return 0
  fi
  if ! all_down; then
    log "resetting stale nodes"
    stop_nodes
  fi
  rm -rf "$ROOT"

  local major bus=() p
  major="$(redis-server --version | sed -n 's/.* v=\([0-9]*\).*/\1/p')"
  for p in "${PORTS[@]}"; do
    mkdir -p "$ROOT/$p"
    # (fd 9, the lock, is closed for the daemons.) Redis 6 has no cluster-port: the bus is then on port+10000, which the
    # harness's port reservation skips because it is bound.
    bus=()
    if [ "${major:-0}" -ge 7 ]; then bus=(--cluster-port $(( p + BUS_OFFSET ))); fi
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no \
      --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000 "${bus[@]}" \
      --dir "$ROOT/$p" --save "" --appendonly no \
      --daemonize yes --pidfile "$ROOT/$p/redis.pid" --logfile "$ROOT/$p/redis.log" \
      </dev/null >&2 9>&- || die "redis-server on port $p did not start (see $ROOT/$p/redis.log)"
  done
  wait_for "the nodes did not answer PING" all_pinged

  local addrs=()
  for p in "${PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
  log "creating the cluster: ${addrs[*]}"
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    </dev/null >"$ROOT/create.log" 2>&1 \
    || die "redis-cli --cluster create failed: $(tail -n 5 "$ROOT/create.log")"
  wait_for "the cluster did not reach cluster_state:ok on every node" healthy
  log "up: $(nodes_csv)"
  nodes_csv
}

stop() {
  if all_down; then
    log "not running"
  else
    stop_nodes
    log "stopped"
  fi
  rm -rf "$ROOT"
}

# One invocation at a time (two test runs starting together).
if command -v flock >/dev/null; then
  mkdir -p "${TMPDIR:-/tmp}"
  exec 9>"${TMPDIR:-/tmp}/gantry-redis-cluster.lock" || die "cannot open the lock file"
  flock -w "$TIMEOUT" 9 || die "another redis-cluster.sh holds the lock"
fi

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) healthy ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
