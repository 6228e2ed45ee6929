# shellcheck shell=bash
# bench/lib.sh — what the benchmark scripts share (sourced, from the
# repository root, after scripts/lib.sh).

# bench_needs BIN...: wrk, and these programs built in build/.
bench_needs() {
  command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
  local b
  for b in keywardd keywardctl "$@"; do
    [ -x "build/$b" ] || { echo "build/$b is missing: cmake -S . -B build && cmake --build build" >&2; exit 1; }
  done
  mkdir -p .run/bench
}

# bench_prepare DBNAME: the bench token and cluster (the cluster is stopped
# on exit only if this script started it: run.sh may share it), a fresh
# database DBNAME with every migration and the login role keyward_svc, and
# the token's keys. Exports KEYWARD_DB_ADMIN_CONNINFO, KEYWARD_DB_CONNINFO
# and KEYWARD_DB_MIGRATIONS_DIR; kills the processes in pids on exit.
bench_prepare() {
  local db=$1
  load_env tokens/provision-softhsm.sh .run/bench/token keyward-bench
  pg_was_up=false
  pidfile="$(scripts/pg-cluster.sh where .run/bench/pg)/data/postmaster.pid"
  [ -f "$pidfile" ] && kill -0 "$(head -n1 "$pidfile")" 2>/dev/null && pg_was_up=true
  load_env scripts/pg-cluster.sh start .run/bench/pg 55434
  pids=()
  trap bench_cleanup EXIT
  # Every run starts from an empty database, so runs compare: rows left by
  # earlier runs (hundreds of MB after a few dozen) would slow the next one.
  psql "$KEYWARD_PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  export KEYWARD_DB_ADMIN_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=postgres dbname=$db"
  export KEYWARD_DB_MIGRATIONS_DIR=$PWD/migrations
  build/keywardctl migrate up >/dev/null
  psql "$KEYWARD_DB_ADMIN_CONNINFO" -q -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='keyward_svc') THEN CREATE ROLE keyward_svc LOGIN IN ROLE keyward_app; END IF; END \$\$;"
  build/keywardctl token init >/dev/null
  export KEYWARD_DB_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=keyward_svc dbname=$db"
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  $pg_was_up || scripts/pg-cluster.sh stop .run/bench/pg
}
