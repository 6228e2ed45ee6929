#!/usr/bin/env bash
# Throughput of keywardd's /healthz against a minimal single-threaded evhttp
# server answering "ok", and of the authenticated GET /api/v1/api-keys
# against /healthz, measured back to back on the same machine with the
# same wrk settings. Prints each pair and its ratio.
#   bench/run.sh [DURATION=10s] [CONNECTIONS=64]
# Needs a build (scripts/dev.sh run or test builds one into build/) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}; conns=${2:-64}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x build/keywardd ] || cmake -S . -B build >/dev/null && cmake --build build -j"$(nproc)" >/dev/null

. scripts/lib.sh
load_env tokens/provision-softhsm.sh .run/bench/token keyward-bench
load_env scripts/pg-cluster.sh start .run/bench/pg 55434
# Every run starts from an empty database, so runs compare: rows left by
# earlier runs (hundreds of MB after a few dozen) would slow the next one.
psql "$KEYWARD_PG_ADMIN" -q -c "DROP DATABASE IF EXISTS kwbench WITH (FORCE)" -c "CREATE DATABASE kwbench"
export KEYWARD_DB_ADMIN_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=postgres dbname=kwbench"
export KEYWARD_DB_MIGRATIONS_DIR=$PWD/migrations
build/keywardctl migrate up >/dev/null
psql "$KEYWARD_DB_ADMIN_CONNINFO" -q -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='keyward_svc') THEN CREATE ROLE keyward_svc LOGIN IN ROLE keyward_app; END IF; END \$\$;"
build/keywardctl token init >/dev/null
export KEYWARD_DB_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=keyward_svc dbname=kwbench"
export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:18080 KEYWARD_LOG_LEVEL=warn
# The benchmark is one client address: lift the per-IP budget for it.
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1000000

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_up() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer at $1" >&2; exit 1; }
run_wrk() { # URL [wrk args] -> "rps p99 non2xx"; rps counts 2xx answers only
  local url=$1; shift
  wrk -t2 -c"$conns" -d"$dur" --latency "$@" "$url" | wrk_2xx
}

build/kw_bench_baseline 18081 & pids+=($!)
build/keywardd & pids+=($!)
wait_up http://127.0.0.1:18081/
wait_up http://127.0.0.1:18080/healthz

# This is a shared 2-core VM: alternate the two targets for $rounds rounds
# and compare medians, so a noisy neighbour hits both alike.
rounds=${ROUNDS:-3}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: >.run/bench/base.txt; : >.run/bench/kw.txt
for _ in $(seq "$rounds"); do
  run_wrk http://127.0.0.1:18081/ >>.run/bench/base.txt
  run_wrk http://127.0.0.1:18080/healthz >>.run/bench/kw.txt
done
base_rps=$(awk '{ print $1 }' .run/bench/base.txt | median)
kw_rps=$(awk '{ print $1 }' .run/bench/kw.txt | median)
base_p99=$(awk '{ print $2 }' .run/bench/base.txt | tr '\n' ' ')
kw_p99=$(awk '{ print $2 }' .run/bench/kw.txt | tr '\n' ' ')

printf '%-34s %12s   %s\n' "target (wrk -t2 -c$conns -d$dur)" "median rps" "per-round rps | p99"
printf '%-34s %12s   %s | %s\n' "baseline: 1-thread evhttp \"ok\"" "$base_rps" "$(awk '{ printf "%s ", $1 }' .run/bench/base.txt)" "$base_p99"
printf '%-34s %12s   %s | %s\n' "keywardd GET /healthz" "$kw_rps" "$(awk '{ printf "%s ", $1 }' .run/bench/kw.txt)" "$kw_p99"
awk -v a="$kw_rps" -v b="$base_rps" 'BEGIN { printf "ratio keywardd/baseline (medians): %.2f\n", a / b }'

# Authenticated route: a tenant, and a key whose own budget will not bind.
tenant_name="bench-$(date +%s)-$$"
admin=$(build/keywardctl tenant create "$tenant_name" 2>/dev/null | awk '/^api_key:/ { print $2 }')
key=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"bench","scopes":["admin"],"rate_limit_per_minute":1000000}' \
  http://127.0.0.1:18080/api/v1/api-keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
read -r kw2_rps kw2_p99 kw2_bad < <(run_wrk http://127.0.0.1:18080/healthz)
read -r auth_rps auth_p99 auth_bad < <(run_wrk http://127.0.0.1:18080/api/v1/api-keys -H "Authorization: Bearer $key")
echo
printf '%-34s %12s %10s\n' "target (wrk -t2 -c$conns -d$dur)" "requests/s" "p99"
printf '%-34s %12s %10s\n' "keywardd GET /api/v1/api-keys" "$auth_rps" "$auth_p99"
printf '%-34s %12s %10s\n' "keywardd GET /healthz (again)" "$kw2_rps" "$kw2_p99"
awk -v a="$auth_rps" -v b="$kw2_rps" 'BEGIN { printf "ratio authenticated/healthz: %.2f\n", a / b }'
bad=$(cat .run/bench/base.txt .run/bench/kw.txt | awk '{ s += $3 } END { print s + kw2 + auth }' kw2="$kw2_bad" auth="$auth_bad")
[ "$bad" = 0 ] || echo "WARNING: $bad non-2xx answers (left out of the rates)"
