#!/usr/bin/env bash
# Every control-plane benchmark in one command:
#
#   bench/controlplane.sh           the full run (about 20 minutes after the build)
#   bench/controlplane.sh --smoke   a tiny run for CI (well under a minute after
#                                   the build); numbers are printed, not judged
#   bench/controlplane.sh --only hold,bytes
#                                   some of: translate, fleet, hold, bytes, storm, churn, hostile, writes
#
# Builds gantry-cp and gantry-bench in release, starts a fresh gantry-cp per
# measurement (ports picked by the kernel, SQLite in a temp dir, or its own
# Postgres schema), runs the measurement, prints a markdown table with the
# target beside each number, and stops only the processes it started.
# Exits non-zero only when the tool itself fails (a stream that never ACKs,
# a failed admin write, a control plane that does not start), never because
# a target is missed.
#
# Environment:
#   GANTRY_BENCH_PG   Postgres URL for the write benchmark
#                     (default postgres://postgres@127.0.0.1:5432/gantry_test;
#                     `bash scripts/services.sh` starts one)
set -euo pipefail

SMOKE=0
ONLY=translate,fleet,hold,bytes,storm,churn,hostile,writes
while (( $# )); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (use --smoke, --only LIST or nothing)" >&2; exit 2 ;;
  esac
  shift
done
# wanted NAME: whether NAME is among the measurements asked for.
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_URL=${GANTRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432/gantry_test}

if (( SMOKE )); then
  FLEET_STREAMS=10; FLEET_WRITES=5; FLEET_ROUTES=100; FLEET_SERVICES=10
  HOLD_STREAMS=20; HOLD_WRITES=2; HOLD_SECS=1
  BYTES_SIZES=100,200; BYTES_STREAMS=3; BYTES_WRITES=2
  STORM_STREAMS=20; STORM_ROUTES=100; STORM_SERVICES=10
  CHURN_STREAMS=5; CHURN_ROUTES=100; CHURN_SERVICES=10; CHURN_SECS=3; CHURN_RATE=10
  TR_ROUTES=100; TR_SERVICES=10; TR_ITER=2
  W_CLIENTS=4; W_SECS=2
  SMOKE_FLAG=(--smoke)
else
  FLEET_STREAMS=1000; FLEET_WRITES=50; FLEET_ROUTES=100; FLEET_SERVICES=10
  HOLD_STREAMS=10000; HOLD_WRITES=5; HOLD_SECS=10
  BYTES_SIZES=100,1000,10000; BYTES_STREAMS=10; BYTES_WRITES=5
  STORM_STREAMS=1000; STORM_ROUTES=1000; STORM_SERVICES=100
  CHURN_STREAMS=100; CHURN_ROUTES=5000; CHURN_SERVICES=500; CHURN_SECS=600; CHURN_RATE=20
  TR_ROUTES=10000; TR_SERVICES=1000; TR_ITER=5
  W_CLIENTS=16; W_SECS=10
  SMOKE_FLAG=()
fi

log() { echo "controlplane.sh: $*" >&2; }

log "building (release)"
cargo build --release -q -p gantry-cp -p gantry-bench
CP="$ROOT/target/release/gantry-cp"
BENCH="$ROOT/target/release/gantry-bench"

# Each stream is a connection: both ends need a descriptor per stream.
need=$(( HOLD_STREAMS + 1024 ))
hard=$(ulimit -Hn)
if [[ "$hard" != unlimited && "$hard" -lt "$need" ]]; then
  log "the hard limit on open files is $hard; $HOLD_STREAMS streams need $need"
  exit 1
fi
ulimit -n "$hard"

TMP=$(mktemp -d -t gantry-cp-bench.XXXXXX)
PIDS=()
SCHEMAS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  for s in "${SCHEMAS[@]}"; do
    psql "$PG_URL" -XAtqc "DROP SCHEMA IF EXISTS \"$s\" CASCADE" >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_cp NAME ARGS...: starts gantry-cp on kernel-chosen ports and sets
# CP_PID, CP_ADMIN and CP_XDS from its "gantry-cp started" log line.
start_cp() {
  local name=$1; shift
  GANTRY_LOG_FORMAT=json "$CP" "$@" \
    --admin-listen 127.0.0.1:0 --xds-listen 127.0.0.1:0 >"$TMP/$name.log" 2>&1 &
  CP_PID=$!
  PIDS+=("$CP_PID")
  local i line=""
  for i in $(seq 300); do
    line=$(grep -m1 '"gantry-cp started"' "$TMP/$name.log" || true)
    [[ -n "$line" ]] && break
    if ! kill -0 "$CP_PID" 2>/dev/null; then
      log "gantry-cp ($name) exited:"; cat "$TMP/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  [[ -n "$line" ]] || { log "gantry-cp ($name) did not start"; cat "$TMP/$name.log" >&2; exit 1; }
  CP_ADMIN="http://$(sed -E 's/.*"admin":"([^"]+)".*/\1/' <<<"$line")"
  CP_XDS="http://$(sed -E 's/.*"xds":"([^"]+)".*/\1/' <<<"$line")"
}

stop_cp() {
  kill "$CP_PID" 2>/dev/null || true
  wait "$CP_PID" 2>/dev/null || true
}

sqlite_cp() { start_cp "$1" --database-url "sqlite://$TMP/$1.db"; }

CLK_TCK=$(getconf CLK_TCK)
fleet() { "$BENCH" xds-fleet --admin "$CP_ADMIN" --xds "$CP_XDS" --cp-pid "$CP_PID" --clk-tck "$CLK_TCK" "${SMOKE_FLAG[@]}" "$@"; }

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
echo "## Control-plane benchmarks$( (( SMOKE )) && echo ' (smoke run: targets not judged)')"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr)"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "- command: bench/controlplane.sh $*"
echo "- gantry-cp defaults (50 ms xDS debounce); the bench tool runs on the same cores"

if wanted translate; then
  log "translation: $TR_ROUTES routes / $TR_SERVICES services"
  "$BENCH" translate --routes "$TR_ROUTES" --services "$TR_SERVICES" --iterations "$TR_ITER" "${SMOKE_FLAG[@]}"
fi

if wanted fleet; then
  log "fleet: $FLEET_STREAMS streams, $FLEET_WRITES writes"
  sqlite_cp fleet
  fleet --streams "$FLEET_STREAMS" --writes "$FLEET_WRITES" --routes "$FLEET_ROUTES" \
    --services "$FLEET_SERVICES" --target-p99-ms 250 --node-prefix fleet
  stop_cp
fi

if wanted hold; then
  log "fleet: $HOLD_STREAMS streams held"
  sqlite_cp hold
  fleet --streams "$HOLD_STREAMS" --writes "$HOLD_WRITES" --routes "$FLEET_ROUTES" \
    --services "$FLEET_SERVICES" --hold-secs "$HOLD_SECS" --target-rss-mib 500 \
    --connect-concurrency 256 --node-prefix hold
  stop_cp
fi

if wanted bytes; then
  log "bytes per change: $BYTES_SIZES routes"
  sqlite_cp bytes
  "$BENCH" xds-bytes --admin "$CP_ADMIN" --xds "$CP_XDS" --sizes "$BYTES_SIZES" \
    --streams "$BYTES_STREAMS" --writes "$BYTES_WRITES" "${SMOKE_FLAG[@]}"
  stop_cp
fi

if wanted storm; then
  log "reconnect storm: $STORM_STREAMS streams, gantry-cp killed and restarted"
  mkdir -p "$TMP/storm"
  "$BENCH" xds-storm --cp-bin "$CP" --database-url "sqlite://$TMP/storm/gantry.db" \
    --work-dir "$TMP/storm" --streams "$STORM_STREAMS" --routes "$STORM_ROUTES" \
    --services "$STORM_SERVICES" --connect-concurrency "$STORM_STREAMS" \
    --target-rss-mib 500 --clk-tck "$CLK_TCK" "${SMOKE_FLAG[@]}"
fi

if wanted churn; then
  log "route churn: $CHURN_RATE changes/s for $CHURN_SECS s, $CHURN_STREAMS streams, $CHURN_ROUTES routes"
  sqlite_cp churn
  "$BENCH" xds-churn --admin "$CP_ADMIN" --xds "$CP_XDS" --cp-pid "$CP_PID" --clk-tck "$CLK_TCK" \
    --streams "$CHURN_STREAMS" --routes "$CHURN_ROUTES" --services "$CHURN_SERVICES" \
    --secs "$CHURN_SECS" --rate "$CHURN_RATE" --connect-concurrency "$CHURN_STREAMS" "${SMOKE_FLAG[@]}"
  stop_cp
fi

if wanted hostile; then
  log "hostile admin requests"
  sqlite_cp hostile
  "$BENCH" admin-hostile --admin "$CP_ADMIN" --cp-pid "$CP_PID" --clk-tck "$CLK_TCK" "${SMOKE_FLAG[@]}"
  stop_cp
fi

if ! wanted writes; then
  log "done"
  exit 0
fi

if psql "$PG_URL" -XAtqc 'SELECT 1' >/dev/null 2>&1; then
  schema="bench_cp_$$"
  SCHEMAS+=("$schema")
  log "admin writes on Postgres (schema $schema)"
  start_cp writes --database-url "$PG_URL" --database-schema "$schema"
  label=postgres
elif (( SMOKE )); then
  log "Postgres unreachable at $PG_URL: the smoke run measures writes on SQLite"
  sqlite_cp writes
  label="SQLite (Postgres unreachable)"
else
  log "Postgres unreachable at $PG_URL (bash scripts/services.sh starts one)"
  exit 1
fi
"$BENCH" admin-writes --admin "$CP_ADMIN" --clients "$W_CLIENTS" --secs "$W_SECS" \
  --label "$label" "${SMOKE_FLAG[@]}"
stop_cp
log "done"
