#!/usr/bin/env bash
# Signed requests (DESIGN 5.6), from one run on one machine:
#   GET /api/v1/secrets?limit=1 signed in wrk's Lua (bench/signing.lua: a
#   fresh nonce and HMAC-SHA256 per request) under wrk -t2 -c64, against the
#   same route with an API key (bench/apikey_get.lua) under wrk -t2 -c64,
#   each twice, alternating. Goal: signed / API key >= 0.40. Also prints the
#   nonce-store rows written per signed request.
#   bench/signing.sh [DURATION=10]   (seconds per measurement)
# Needs a build in build/ and wrk. Shares the token and cluster of bench/vault.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}; dur=${dur%s}
port=18087
base=http://127.0.0.1:$port
. scripts/lib.sh
. bench/lib.sh
bench_needs
bench_prepare kwsigning

export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:$port KEYWARD_LOG_LEVEL=warn
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1048576 KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1048576
export KEYWARD_RATELIMIT_KEY_PER_MINUTE=1048576 # per key; requests take turns among 4 keys of each kind
build/keywardd 2>.run/bench/signing-keywardd.log & pids+=($!)
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/healthz" >/dev/null || { echo "keywardd did not come up:" >&2; tail -n 20 .run/bench/signing-keywardd.log >&2; exit 1; }
admin=$(build/keywardctl tenant create "signing-$(date +%s)-$$" 2>/dev/null | awk '/^api_key:/ { print $2 }')
[ -n "$admin" ] || { echo "keywardctl tenant create failed" >&2; exit 1; }

out=$(python3 - "$base" "$admin" <<'PY'
import hashlib, hmac, json, sys, time, urllib.request
base, admin = sys.argv[1], sys.argv[2]
def call(method, path, headers, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers=dict(headers, **{"Content-Type": "application/json"}))
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)
auth = {"Authorization": "Bearer " + admin}
keys, kids, secrets = [], [], []
for i in range(4):
    st, k = call("POST", "/api/v1/api-keys", auth, {"name": "bench-%d" % i, "scopes": ["secrets:read"]})
    keys.append(k["key"])
    st, s = call("POST", "/api/v1/signing-keys", auth, {"name": "bench-%d" % i, "scopes": ["secrets:read"]})
    kids.append(s["id"]); secrets.append(s["secret"])
# One signed request, checked, before the run.
target, ts, nonce = "/api/v1/secrets?limit=1", str(int(time.time() * 1000)), "bench-check-nonce-0000000001"
canon = "\n".join(["GET", target, ts, nonce, hashlib.sha256(b"").hexdigest()]).encode()
sig = "kid=%s;hmac-sha256=%s" % (kids[0], hmac.new(secrets[0].encode(), canon, hashlib.sha256).hexdigest())
st, _ = call("GET", target, {"X-Timestamp": ts, "X-Nonce": nonce, "X-Signature": sig})
assert st == 200, st
print(" ".join(keys)); print(" ".join(kids)); print(" ".join(secrets))
PY
)
export KW_BENCH_KEYS KW_BENCH_KIDS KW_BENCH_SECRETS
KW_BENCH_KEYS=$(sed -n 1p <<<"$out"); KW_BENCH_KIDS=$(sed -n 2p <<<"$out"); KW_BENCH_SECRETS=$(sed -n 3p <<<"$out")
export KW_BENCH_TARGET='/api/v1/secrets?limit=1'

nonces() { psql "$KEYWARD_DB_ADMIN_CONNINFO" -qAt -c "SELECT count(*) FROM signing_nonces"; }
measure() { wrk "$@" -d"${dur}s" --latency | wrk_2xx; }
read -r k1 kp1 kb1 <<<"$(measure -t2 -c64 -s bench/apikey_get.lua "$base$KW_BENCH_TARGET")"
n0=$(nonces)
out1=$(wrk -t2 -c64 -d"${dur}s" --latency -s bench/signing.lua "$base$KW_BENCH_TARGET")
n1=$(nonces)
read -r s1 sp1 sb1 <<<"$(wrk_2xx <<<"$out1")"
read -r k2 kp2 kb2 <<<"$(measure -t2 -c64 -s bench/apikey_get.lua "$base$KW_BENCH_TARGET")"
read -r s2 sp2 sb2 <<<"$(measure -t2 -c64 -s bench/signing.lua "$base$KW_BENCH_TARGET")"
signed_reqs=$(awk '/ requests in / { print $1 }' <<<"$out1")
echo "runs: API key $k1 (p99 $kp1), signed $s1 (p99 $sp1), API key $k2 (p99 $kp2), signed $s2 (p99 $sp2)"
[ "$kb1$kb2$sb1$sb2" = 0000 ] || echo "WARNING: some requests did not answer 2xx (API key $kb1 $kb2, signed $sb1 $sb2)"
awk -v n="$((n1 - n0))" -v r="$signed_reqs" 'BEGIN { printf "nonce-store rows written per signed request (first signed run): %.2f (%d rows, %d requests)\n", n / r, n, r }'
awk -v a="$k1" -v b="$k2" -v c="$s1" -v d="$s2" 'BEGIN {
  k = (a + b) / 2; s = (c + d) / 2
  printf "signed / API key = %.0f / %.0f = %.2f (goal >= 0.40)\n", s, k, s / k }'
