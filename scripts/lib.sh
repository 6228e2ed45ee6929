# shellcheck shell=bash
# Shell helpers shared by scripts/, bench/ and .ci/run (source it; bash only).

# load_env HELPER [ARGS...]: run a helper that prints `export` lines (as
# tokens/provision-softhsm.sh and scripts/pg-cluster.sh start do) and apply
# them. A failing helper fails the caller: its own message is already on
# stderr, this adds which step it was. (`eval "$(helper)"` would lose the
# helper's exit status, even under `set -e`.)
load_env() {
  local out
  out=$("$@") || { echo "${0##*/}: '$*' failed (see above)" >&2; exit 1; }
  eval "$out"
}

# wrk_2xx: read wrk's --latency output on stdin, print "rps p99 non2xx"
# where rps counts only the 2xx/3xx answers (wrk's own Requests/sec counts
# every answer, so a run of fast 429s would read as throughput).
wrk_2xx() {
  awk '/Requests\/sec/ { rps = $2 }
       / requests in / { n = $1 }
       /^ +99%/ { p99 = $2 }
       /Non-2xx or 3xx responses/ { bad = $NF }
       END { ok = n - bad; printf "%.2f %s %d\n", (n > 0 ? rps * ok / n : 0), p99, bad + 0 }'
}
