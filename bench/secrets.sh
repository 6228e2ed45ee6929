#!/usr/bin/env bash
# The secrets store's read path, from one run on one machine:
#   GET /api/v1/secrets/{id} (256 secrets, API keys; each fetch: one read,
#   one data-key unwrap in the token, one durable audit row) under
#   wrk -t2 -c32, next to the vault key fetch (the same shape of work, as
#   bench/vault.sh measures it) under wrk -t2 -c32. Goal: ratio >= 1.
#   bench/secrets.sh [DURATION=10]   (seconds per measurement)
# Env: SECRETS (default 256), USERS (default 64) vault owners. Needs a build
# in build/ and wrk. Shares the token and cluster of bench/vault.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}; dur=${dur%s}
nsecrets=${SECRETS:-256}
users=${USERS:-64}
port=18086
base=http://127.0.0.1:$port
. scripts/lib.sh
. bench/lib.sh
bench_needs
bench_prepare kwsecrets

export KEYWARD_MODE=production KEYWARD_HTTP_LISTEN=127.0.0.1:$port KEYWARD_LOG_LEVEL=warn
export KEYWARD_RATELIMIT_IP_PER_MINUTE=1048576 KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=1048576
# A key's own limit is at most 1048576/min (17.5k/s): requests rotate through 8 keys.
export KEYWARD_RATELIMIT_KEY_PER_MINUTE=1048576
build/keywardd 2>.run/bench/secrets-keywardd.log & pids+=($!)
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/healthz" >/dev/null || { echo "keywardd did not come up:" >&2; tail -n 20 .run/bench/secrets-keywardd.log >&2; exit 1; }
admin=$(build/keywardctl tenant create "secrets-$(date +%s)-$$" 2>/dev/null | awk '/^api_key:/ { print $2 }')
[ -n "$admin" ] || { echo "keywardctl tenant create failed" >&2; exit 1; }

# Set-up through the API, every answer checked.
export KW_BENCH_TOKENS=$PWD/.run/bench/secrets-tokens.txt KW_BENCH_IDS=$PWD/.run/bench/secrets-ids.txt
keys=$(python3 - "$base" "$admin" "$nsecrets" "$users" "$KW_BENCH_IDS" "$KW_BENCH_TOKENS" <<'PY'
import base64, json, os, sys, urllib.request
base, admin, ns, nu, ids_file, tokens_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
def call(method, path, auth, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)
keys = []
for i in range(8):
    st, k = call("POST", "/api/v1/api-keys", admin, {"name": "bench-%d" % i,
                 "scopes": ["secrets:read", "secrets:write", "auth:issue"]})
    keys.append(k["key"])
with open(ids_file, "w") as f:
    for i in range(ns):
        value = base64.b64encode(os.urandom(48)).decode()
        st, s = call("POST", "/api/v1/secrets", keys[0], {"name": "llm/provider-%d" % i, "value": value})
        assert st == 201, st
        st, g = call("GET", "/api/v1/secrets/" + s["id"], keys[0])
        assert st == 200 and g["value"] == value, (st, g)
        print(s["id"], file=f)
with open(tokens_file, "w") as f:
    for i in range(nu):
        st, o = call("POST", "/api/v1/auth/login", keys[0], {"subject": "secrets-user-%d" % i, "role": "track1"})
        tok = o["access_token"]
        st, v = call("POST", "/api/v1/me/encryption-vault/init", tok, {})
        assert st in (200, 201), st
        print(tok, file=f)
print(" ".join(keys))
PY
)
[ -n "$keys" ] || { echo "set-up failed" >&2; exit 1; }
export KW_BENCH_KEYS=$keys

# Twice each, alternating (secrets, vault, secrets, vault): the audit table
# grows through the run, so neither side always meets the emptier one.
measure() { wrk "$@" -d"${dur}s" --latency | wrk_2xx; }
read -r s_rps s_p99 s_bad <<<"$(measure -t2 -c32 -s bench/secrets.lua "$base/api/v1/secrets")"
read -r v_rps v_p99 v_bad <<<"$(measure -t2 -c32 -s bench/vault_key.lua "$base/api/v1/me/encryption-vault/key")"
read -r s2_rps s2_p99 s2_bad <<<"$(measure -t2 -c32 -s bench/secrets.lua "$base/api/v1/secrets")"
read -r v2_rps v2_p99 v2_bad <<<"$(measure -t2 -c32 -s bench/vault_key.lua "$base/api/v1/me/encryption-vault/key")"
echo "runs: secrets $s_rps (p99 $s_p99), vault $v_rps (p99 $v_p99), secrets $s2_rps (p99 $s2_p99), vault $v2_rps (p99 $v2_p99)"
s_rps=$(awk -v a="$s_rps" -v b="$s2_rps" 'BEGIN { print (a + b) / 2 }'); s_bad=$((s_bad + s2_bad))
v_rps=$(awk -v a="$v_rps" -v b="$v2_rps" 'BEGIN { print (a + b) / 2 }'); v_bad=$((v_bad + v2_bad))
rows=$(psql "$KEYWARD_DB_ADMIN_CONNINFO" -qAt -c "SELECT count(*) FROM audit_log WHERE action = 'secret.read' AND status = 'ok'")
printf '%-44s rps=%-10s non2xx=%s (mean of two runs)\n' "GET /api/v1/secrets/{id} ($nsecrets secrets)" "$s_rps" "$s_bad" \
  "vault key fetch ($users users)" "$v_rps" "$v_bad"
echo "audit rows secret.read ok in the database (set-up reads included): $rows"
[ "$s_bad" = 0 ] && [ "$v_bad" = 0 ] || echo "WARNING: some requests did not answer 2xx"
awk -v s="$s_rps" -v v="$v_rps" 'BEGIN { printf "secret fetch / vault key fetch = %.0f / %.0f = %.2f (goal >= 1.00)\n", s, v, s / v }'
