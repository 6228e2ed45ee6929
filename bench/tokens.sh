#!/usr/bin/env bash
# Token issuance and verification, from one run on one machine:
#   login/s (POST /api/v1/auth/login) next to the raw token ECDSA P-256 sign
#   rate with 2 threads (the JWT key as a token object; measured before and
#   after the logins and averaged, as this kind of VM drifts; goal: >= 35%
#   of it; the rate on session-object copies, which keywardd uses, is
#   printed next to it), and requests/s on GET
#   /api/v1/auth/whoami (a JWT-authenticated route) next to /healthz (goal:
#   >= 50% of it).
#   bench/tokens.sh [DURATION=10]   (seconds; "10s" works too)
# Env: ROUNDS (default 3) whoami/healthz rounds; KEYWARD_HTTP_WORKERS is
# passed through to keywardd if set. Needs a build in build/ (with
# kw_bench_ecdsa) and wrk. Shares the token and cluster of bench/run.sh.
# KW_BENCH_PERF=1 records the login phase with perf (.run/bench/login.perf).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}; dur=${dur%s}
rounds=${ROUNDS:-3}
port=18082 # not run.sh's 18080, so the two can run side by side
base=http://127.0.0.1:$port
. scripts/lib.sh
. bench/lib.sh
bench_needs kw_bench_ecdsa
bench_prepare kwbench

# a. The raw sign rate first, before keywardd exists: nothing else uses the token or the CPUs.
rate_of() { sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p'; }
ecdsa_line=$(build/kw_bench_ecdsa 2 "$dur" token)
ecdsa_copy_line=$(build/kw_bench_ecdsa 2 "$dur" copy)

export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:$port KEYWARD_LOG_LEVEL=warn
# The benchmark is one client address: lift its budgets to the config maximum (1 << 20).
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1048576 KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1048576
build/keywardd 2>.run/bench/tokens-keywardd.log & pids+=($!)
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/healthz" >/dev/null || { echo "keywardd did not come up:" >&2; tail -n 20 .run/bench/tokens-keywardd.log >&2; exit 1; }

# A tenant, and a login key whose own budget will not bind.
admin=$(build/keywardctl tenant create "tokens-$(date +%s)-$$" 2>/dev/null | awk '/^api_key:/ { print $2 }')
[ -n "$admin" ] || { echo "keywardctl tenant create failed" >&2; exit 1; }
key=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"bench-login","scopes":["auth:issue"],"rate_limit_per_minute":1000000}' \
  "$base/api/v1/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') ||
  { echo "POST /api/v1/api-keys failed" >&2; exit 1; }

# One login by hand: a broken route must fail loudly here, not show up as fast errors.
login_status=$(curl -s -o .run/bench/tokens-login.json -w '%{http_code}' -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d '{"subject":"bench-probe","role":"track1"}' "$base/api/v1/auth/login")
if [ "$login_status" != 200 ]; then
  echo "POST /api/v1/auth/login answered $login_status: $(head -c 300 .run/bench/tokens-login.json)" >&2
  exit 1
fi
access=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' .run/bench/tokens-login.json)
rm -f .run/bench/tokens-login.json
whoami_status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $access" "$base/api/v1/auth/whoami")
[ "$whoami_status" = 200 ] || { echo "GET /api/v1/auth/whoami answered $whoami_status" >&2; exit 1; }

# b. Logins: every one signs a JWT and commits a refresh family with its audit row.
[ -n "${KW_BENCH_PERF:-}" ] && { perf record -a -g -o .run/bench/login.perf -- sleep $((dur - 2)) >/dev/null 2>&1 & }
counters() { # -> "audit_rows audit_commits sql_statements"
  curl -sf "$base/metrics" | awk '/^keyward_audit_group_rows_total / { r = $2 }
    /^keyward_audit_group_commits_total / { c = $2 } /^keyward_db_statements_total / { s = $2 }
    END { print r + 0, c + 0, s + 0 }'
}
before=$(counters)
login_out=$(wrk -t2 -c64 -d"${dur}s" --latency -s bench/login.lua "$base/api/v1/auth/login" \
  -H "Authorization: Bearer $key")
login_line=$(grep '^login ok=' <<<"$login_out")
login_rate=$(sed -n 's/.* ok_per_sec=\([0-9.]*\).*/\1/p' <<<"$login_line")
login_p99=$(awk '/^ +99%/ { print $2 }' <<<"$login_out")
login_bad=$(sed -n 's/.* non200=\([0-9]*\).*/\1/p' <<<"$login_line")
# The yardstick again, right after the logins (keywardd idles meanwhile).
ecdsa_after_line=$(build/kw_bench_ecdsa 2 "$dur" token)
ecdsa_rate=$(awk -v a="$(rate_of <<<"$ecdsa_line")" -v b="$(rate_of <<<"$ecdsa_after_line")" 'BEGIN { print (a + b) / 2 }')
ecdsa_copy_rate=$(rate_of <<<"$ecdsa_copy_line")
login_ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$login_line")
# Group commit during the logins: rows per commit, and SQL statements sent per login.
login_db=$(awk -v b="$before" -v a="$(counters)" -v n="$login_ok" 'BEGIN { split(b, x); split(a, y)
  printf "audit rows per commit = %.1f, SQL statements per login = %.1f", (y[1] - x[1]) / (y[2] - x[2] + (y[2] == x[2])), (y[3] - x[3]) / (n + (n == 0)) }')

# c. whoami against /healthz. wrk counts non-2xx itself ("Non-2xx or 3xx
# responses"), so neither side runs a Lua callback that would slow the client;
# the rates below leave those answers out (a later round can run into the
# per-IP budget, and a 429 is fast).
run_wrk() { # URL [wrk args] -> "rps p99 non2xx"; rps counts 2xx answers only
  local url=$1; shift
  wrk -t2 -c64 -d"${dur}s" --latency "$@" "$url" | wrk_2xx
}
# A shared 2-core VM: alternate the two targets and compare medians, so a
# noisy neighbour hits both alike.
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: >.run/bench/whoami.txt; : >.run/bench/healthz.txt
for _ in $(seq "$rounds"); do
  run_wrk "$base/api/v1/auth/whoami" -H "Authorization: Bearer $access" >>.run/bench/whoami.txt
  run_wrk "$base/healthz" >>.run/bench/healthz.txt
done
who_rps=$(awk '{ print $1 }' .run/bench/whoami.txt | median)
hz_rps=$(awk '{ print $1 }' .run/bench/healthz.txt | median)
who_bad=$(awk '{ s += $3 } END { print s + 0 }' .run/bench/whoami.txt)
hz_bad=$(awk '{ s += $3 } END { print s + 0 }' .run/bench/healthz.txt)

echo "before: $ecdsa_line"
echo "before: $ecdsa_copy_line"
echo "after:  $ecdsa_after_line"
echo "$login_line p99=$login_p99 (wrk -t2 -c64 -d${dur}s)"
echo "$login_db"
printf '%-28s %12s   %s\n' "target (wrk -t2 -c64 -d${dur}s)" "median 2xx/s" "per-round 2xx/s | p99 | non-2xx"
for f in whoami healthz; do
  printf '%-28s %12s   %s| %s| %s\n' "GET $f" "$(awk '{ print $1 }' .run/bench/$f.txt | median)" \
    "$(awk '{ printf "%s ", $1 }' .run/bench/$f.txt)" "$(awk '{ printf "%s ", $2 }' .run/bench/$f.txt)" \
    "$(awk '{ printf "%s ", $3 }' .run/bench/$f.txt)"
done
echo
[ "$login_bad" = 0 ] || echo "WARNING: $login_bad logins did not answer 200; login/s counts only the 200s"
[ "$who_bad$hz_bad" = 00 ] || echo "WARNING: non-2xx answers: whoami $who_bad, healthz $hz_bad (left out of the rates)"
awk -v x="$login_rate" -v y="$ecdsa_rate" -v c="$ecdsa_copy_rate" 'BEGIN {
  printf "login/s = %.0f, raw ECDSA sign/s (2 threads, token key, mean of before and after) = %.0f, ratio = %.2f (goal >= 0.35)\n", x, y, x / y
  printf "  (against the raw rate on session copies of the JWT key, %.0f/s: %.2f)\n", c, x / c }'
awk -v a="$who_rps" -v b="$hz_rps" 'BEGIN {
  printf "whoami req/s = %.0f, healthz req/s = %.0f, ratio = %.2f (goal >= 0.50)\n", a, b, a / b }'
