#!/usr/bin/env bash
# Request coalescing (DESIGN 5.8), from one run on one machine: a burst of
# identical reads — 64 connections fetching the same secret with one API
# key (wrk -t2 -c64) — with coalescing on, then with it off (keywardd
# restarted with coalesce.routes empty). Goals: token operations and
# database reads per answered request <= 1/8 (from /metrics), and
# requests/s >= 2 x the run with coalescing off.
#   bench/coalesce.sh [DURATION=10]   (seconds per run)
# Needs a build in build/ and wrk. Shares the token and cluster of bench/vault.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}; dur=${dur%s}
port=18088
base=http://127.0.0.1:$port
. scripts/lib.sh
. bench/lib.sh
bench_needs
bench_prepare kwcoalesce

export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:$port KEYWARD_LOG_LEVEL=warn
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1048576 KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1048576
export KEYWARD_RATELIMIT_KEY_PER_MINUTE=1048576

up() { # starts keywardd with the environment given
  env "$@" build/keywardd 2>>.run/bench/coalesce-keywardd.log & pids+=($!)
  for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "keywardd did not come up:" >&2; tail -n 20 .run/bench/coalesce-keywardd.log >&2; exit 1
}
down() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
metric() { curl -s "$base/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

: >.run/bench/coalesce-keywardd.log
up
admin=$(build/keywardctl tenant create "coalesce-$(date +%s)-$$" 2>/dev/null | awk '/^api_key:/ { print $2 }')
read -r KW_BENCH_KEY KW_BENCH_TARGET < <(python3 - "$base" "$admin" <<'PY'
import base64, json, os, sys, urllib.request
base, admin = sys.argv[1], sys.argv[2]
def call(method, path, auth, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)
st, k = call("POST", "/api/v1/api-keys", admin, {"name": "burst", "scopes": ["secrets:read", "secrets:write"],
                                                 "rate_limit_per_minute": 1000000})
value = base64.b64encode(os.urandom(48)).decode()
st, s = call("POST", "/api/v1/secrets", k["key"], {"name": "llm/shared", "value": value})
st, g = call("GET", "/api/v1/secrets/" + s["id"], k["key"])
assert st == 200 and g["value"] == value
print(k["key"], "/api/v1/secrets/" + s["id"])
PY
)
export KW_BENCH_KEY KW_BENCH_TARGET

run() { # one burst: "rps p99 bad leaders decrypts answered"
  local l0 h0 a0 out
  l0=$(metric 'keyward_coalesce_leaders_total{route="secrets_get"}'); h0=$(metric 'keyward_hsm_operations_total{op="decrypt"}')
  a0=$(psql "$KEYWARD_DB_ADMIN_CONNINFO" -qAt -c "SELECT count(*) FROM audit_log WHERE action = 'secret.read' AND status = 'ok'")
  out=$(wrk -t2 -c64 -d"${dur}s" --latency -s bench/coalesce.lua "$base$KW_BENCH_TARGET")
  local l1 h1 a1
  l1=$(metric 'keyward_coalesce_leaders_total{route="secrets_get"}'); h1=$(metric 'keyward_hsm_operations_total{op="decrypt"}')
  a1=$(psql "$KEYWARD_DB_ADMIN_CONNINFO" -qAt -c "SELECT count(*) FROM audit_log WHERE action = 'secret.read' AND status = 'ok'")
  echo "$(wrk_2xx <<<"$out") $((l1 - l0)) $((h1 - h0)) $((a1 - a0))"
}
read -r on_rps on_p99 on_bad on_leaders on_dec on_ans <<<"$(run)"
down
up KEYWARD_COALESCE_ROUTES=
read -r off_rps off_p99 off_bad _ off_dec off_ans <<<"$(run)"
echo "coalescing on:  rps=$on_rps p99=$on_p99 non2xx=$on_bad answered=$on_ans leaders (database reads)=$on_leaders token decrypts=$on_dec"
echo "coalescing off: rps=$off_rps p99=$off_p99 non2xx=$off_bad answered=$off_ans token decrypts=$off_dec"
awk -v l="$on_leaders" -v d="$on_dec" -v a="$on_ans" -v on="$on_rps" -v off="$off_rps" 'BEGIN {
  printf "reads per answer = %.3f, token decrypts per answer = %.3f (goal <= 0.125)\n", l / a, d / a
  printf "rps on / off = %.0f / %.0f = %.2f (goal >= 2)\n", on, off, on / off }'
