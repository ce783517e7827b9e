#!/usr/bin/env bash
# The project's test command: ./scripts/test.sh [extra cargo-nextest args...]
#   - brings up local PostgreSQL + Redis + a three-master Redis Cluster
#     (scripts/services.sh, which runs scripts/redis-cluster.sh)
#   - drops stale per-test schemas (gt_*) left behind by killed runs
#   - installs what tests run against: Envoy (scripts/envoy.sh), Prometheus
#     (scripts/prometheus.sh), schemathesis (scripts/schemathesis.sh)
#   - builds the workspace binaries, then runs the whole suite with cargo-nextest
# With CI=true, nextest uses the `ci` profile from .config/nextest.toml.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "test.sh: $*" >&2; }

./scripts/services.sh

export GANTRY_TEST_DATABASE_URL="${GANTRY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gantry_test}"
export GANTRY_TEST_REDIS_URL="${GANTRY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export GANTRY_TEST_REDIS_CLUSTER="${GANTRY_TEST_REDIS_CLUSTER:-127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103}"

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Per-test schemas are named gt_*; a run that was killed leaves them behind.
log "dropping stale gt_* schemas"
psql "$GANTRY_TEST_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'gt\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
END
$$;
SQL

# The Envoy used by interop tests, installed once before tests start.
log "ensuring Envoy for the interop tests"
./scripts/envoy.sh >/dev/null

# The Prometheus server the observability tests scrape with.
log "ensuring Prometheus for the observability tests"
./scripts/prometheus.sh >/dev/null

# The schemathesis the OpenAPI contract test runs (tests/tests/openapi_contract.rs).
log "ensuring schemathesis for the OpenAPI contract test"
./scripts/schemathesis.sh >/dev/null

./scripts/build-deps.sh
log "cargo build --workspace --bins"
cargo build --workspace --bins

profile=()
if [ "${CI:-}" = "true" ]; then
  profile=(--profile ci)
fi

log "cargo nextest run --workspace --no-fail-fast ${profile[*]} $*"
cargo nextest run --workspace --no-fail-fast "${profile[@]}" "$@"
