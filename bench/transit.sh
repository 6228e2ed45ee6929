#!/usr/bin/env bash
# Transit encryption (DESIGN §5.5), from one run on one machine, each goal
# a ratio against a yardstick measured in the same run:
#   1. single-item encrypt (64 B, API key) under wrk -t2 -c64
#      ÷ GET /healthz under wrk -t2 -c64                      goal >= 0.50
#   2. batch encrypt (1000 × 64 B per request) items/s under wrk -t2 -c4
#      ÷ raw in-process OpenSSL AES-256-GCM 64 B encrypts/s, 1 thread
#        (build/kw_bench_aesgcm)                              goal >= 0.25
#   3. single-item decrypt (its audit row durable before the answer) under
#      wrk -t2 -c32 ÷ the vault key fetch under wrk -t2 -c32 (as
#      bench/vault.sh)                                        goal >= 1.5
#   bench/transit.sh [DURATION=10]   (seconds per measurement)
# Env: USERS (default 64) vault owners for the fetch yardstick. Needs a
# build in build/ and wrk. Shares the token and cluster of bench/vault.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}; dur=${dur%s}
users=${USERS:-64}
port=18085
base=http://127.0.0.1:$port
. scripts/lib.sh
. bench/lib.sh
bench_needs kw_bench_aesgcm
bench_prepare kwtransit

export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:$port KEYWARD_LOG_LEVEL=warn
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1048576 KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1048576
# A key's own limit is at most 1048576/min (17.5k/s): the requests rotate
# through 8 keys (KW_BENCH_KEYS), so no limit is what is measured.
export KEYWARD_RATELIMIT_KEY_PER_MINUTE=1048576
build/keywardd 2>.run/bench/transit-keywardd.log & pids+=($!)
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/healthz" >/dev/null || { echo "keywardd did not come up:" >&2; tail -n 20 .run/bench/transit-keywardd.log >&2; exit 1; }

admin=$(build/keywardctl tenant create "transit-$(date +%s)-$$" 2>/dev/null | awk '/^api_key:/ { print $2 }')
[ -n "$admin" ] || { echo "keywardctl tenant create failed" >&2; exit 1; }

# Set-up through the API, every answer checked: a broken route must fail
# loudly here, not show up as fast errors. Writes the bodies and the users'
# access tokens; prints the API key.
export KW_BENCH_TOKENS=$PWD/.run/bench/transit-tokens.txt
b=.run/bench/transit
key=$(python3 - "$base" "$admin" "$users" "$b" "$KW_BENCH_TOKENS" <<'PY'
import base64, json, os, sys, urllib.request
base, admin, n, prefix, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def call(method, path, auth, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)
keys = []
for i in range(8):
    st, k = call("POST", "/api/v1/api-keys", admin, {"name": "bench-%d" % i,
                 "scopes": ["transit:encrypt", "transit:decrypt", "auth:issue"]})
    keys.append(k["key"])
key = keys[0]
st, _ = call("POST", "/api/v1/transit/keys", admin, {"name": "bench", "type": "aes256-gcm"})
assert st == 201, st
pt = base64.b64encode(os.urandom(64)).decode()
single = {"plaintext": pt}
st, e = call("POST", "/api/v1/transit/keys/bench/encrypt", key, single)
assert st == 200 and e["key_version"] == 1, (st, e)
st, d = call("POST", "/api/v1/transit/keys/bench/decrypt", key, {"ciphertext": e["ciphertext"]})
assert st == 200 and d["plaintext"] == pt, (st, d)
batch = {"batch": [{"plaintext": base64.b64encode(os.urandom(64)).decode()} for _ in range(1000)]}
st, r = call("POST", "/api/v1/transit/keys/bench/encrypt", key, batch)
assert st == 200 and len(r["batch"]) == 1000 and all("ciphertext" in x for x in r["batch"]), st
json.dump(single, open(prefix + "-encrypt.json", "w"))
json.dump(batch, open(prefix + "-batch.json", "w"))
json.dump({"ciphertext": e["ciphertext"]}, open(prefix + "-decrypt.json", "w"))
with open(tokens, "w") as f:
    for i in range(n):
        st, o = call("POST", "/api/v1/auth/login", key, {"subject": "transit-user-%d" % i, "role": "track1"})
        tok = o["access_token"]
        st, v = call("POST", "/api/v1/me/encryption-vault/init", tok, {})
        assert st in (200, 201), st
        print(tok, file=f)
print(" ".join(keys))
PY
)
[ -n "$key" ] || { echo "set-up failed" >&2; exit 1; }
export KW_BENCH_KEYS=$key

# One measurement: "rps p99 non2xx" of wrk with these arguments.
measure() { wrk "$@" -d"${dur}s" --latency | wrk_2xx; }
read -r hz_rps hz_p99 hz_bad <<<"$(measure -t2 -c64 "$base/healthz")"
read -r enc_rps enc_p99 enc_bad <<<"$(KW_BENCH_BODY=$b-encrypt.json measure -t2 -c64 -s bench/transit.lua "$base/api/v1/transit/keys/bench/encrypt")"
read -r bat_rps bat_p99 bat_bad <<<"$(KW_BENCH_BODY=$b-batch.json measure -t2 -c4 -s bench/transit.lua "$base/api/v1/transit/keys/bench/encrypt")"
read -r dec_rps dec_p99 dec_bad <<<"$(KW_BENCH_BODY=$b-decrypt.json measure -t2 -c32 -s bench/transit.lua "$base/api/v1/transit/keys/bench/decrypt")"
read -r vk_rps vk_p99 vk_bad <<<"$(measure -t2 -c32 -s bench/vault_key.lua "$base/api/v1/me/encryption-vault/key")"
aes_line=$(build/kw_bench_aesgcm "$dur")
json_line=$(build/kw_bench_aesgcm "$dur" json) # what jansson alone costs a batch
aes_rate=$(sed -n 's/.* rate=\([0-9.]*\)\/s.*/\1/p' <<<"$aes_line")
curl -s "$base/metrics" | grep -E "^keyward_(transit|changes)_" >.run/bench/transit-metrics.txt || true

echo "$aes_line"
echo "$json_line"
printf '%-44s rps=%-10s p99=%-9s non2xx=%s\n' "GET /healthz (-t2 -c64)" "$hz_rps" "$hz_p99" "$hz_bad" \
  "encrypt, 1 x 64 B (-t2 -c64)" "$enc_rps" "$enc_p99" "$enc_bad" \
  "encrypt, batch 1000 x 64 B (-t2 -c4)" "$bat_rps" "$bat_p99" "$bat_bad" \
  "decrypt, 1 item, audited (-t2 -c32)" "$dec_rps" "$dec_p99" "$dec_bad" \
  "vault key fetch (-t2 -c32, $users users)" "$vk_rps" "$vk_p99" "$vk_bad"
for bad in "$hz_bad" "$enc_bad" "$bat_bad" "$dec_bad" "$vk_bad"; do
  [ "$bad" = 0 ] || echo "WARNING: some requests did not answer 2xx"
done
grep -E 'cache_lookups|requests_total' .run/bench/transit-metrics.txt | sed 's/^/  /'
awk -v e="$enc_rps" -v h="$hz_rps" -v b="$bat_rps" -v a="$aes_rate" -v d="$dec_rps" -v v="$vk_rps" 'BEGIN {
  printf "1. single encrypt / healthz          = %.0f / %.0f = %.2f (goal >= 0.50)\n", e, h, e / h
  printf "2. batch items/s / raw AES-GCM (1 t) = %.0f / %.0f = %.2f (goal >= 0.25)\n", b * 1000, a, b * 1000 / a
  printf "3. decrypt / vault key fetch         = %.0f / %.0f = %.2f (goal >= 1.5)\n", d, v, d / v }'
# The ceiling JSON puts on goal 2: both CPUs doing nothing but jansson's
# parse of the request and build and print of the answer.
awk -v p="$(sed -n 's/.*parse rate=\([0-9.]*\)\/s.*/\1/p' <<<"$json_line")" \
    -v q="$(sed -n 's/.*answer rate=\([0-9.]*\)\/s.*/\1/p' <<<"$json_line")" -v a="$aes_rate" -v n="$(nproc)" 'BEGIN {
  c = n / (1 / p + 1 / q)
  printf "   JSON alone (jansson parse + answer, %d CPUs) allows at most %.0f items/s = %.2f of the raw rate;\n", n, c, c / a
  printf "   parse alone at most %.0f items/s = %.2f\n", n * p, n * p / a }'
