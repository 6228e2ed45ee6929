#!/usr/bin/env bash
# keyward development entry point.
#   scripts/dev.sh run    install packages, build, provision a SoftHSM token and a
#                         private PostgreSQL, migrate, run keywardd on 127.0.0.1:8080
#   scripts/dev.sh test   the same set-up from scratch, then the whole test suite:
#                         a normal build and an ASan+UBSan build
#   scripts/dev.sh ctl ARGS  keywardctl against the development token and database
#                         (e.g. `ctl tenant create acme`, `ctl token status`, `ctl audit verify`)
# Run it as root on a fresh Debian 12 machine (it apt-get installs what is
# missing), or as a user who already has the packages.
# Any checkout location works (spaces, a 0700 home directory as root): the
# PostgreSQL cluster goes where its user can reach it (scripts/pg-cluster.sh
# says where), and every helper's failure stops this script with its message.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib.sh

PACKAGES="build-essential cmake pkg-config git ca-certificates curl openssl
  libp11-kit-dev p11-kit softhsm2 libssl-dev libevent-dev libpq-dev postgresql
  libjansson-dev libcriterion-dev libsystemd-dev libsecp256k1-dev
  python3 python3-jwt python3-cryptography python3-ecdsa python3-pycryptodome
  wrk clang clang-format cppcheck shellcheck"

install_deps() {
  local missing=()
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() { # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

# Private PostgreSQL + a service login role (member of keyward_app, no RLS
# bypass) + a database. Exports KEYWARD_DB_* for keywardd and keywardctl.
setup_pg() { # setup_pg DIR PORT DBNAME
  load_env scripts/pg-cluster.sh start "$1" "$2"
  local admin="$KEYWARD_PG_ADMIN"
  psql "$admin" -qAt -c "SELECT 1 FROM pg_database WHERE datname = '$3'" | grep -q 1 ||
    psql "$admin" -q -c "CREATE DATABASE $3" >/dev/null
  export KEYWARD_DB_ADMIN_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=postgres dbname=$3"
  export KEYWARD_DB_CONNINFO="host=$KEYWARD_PG_DIR port=$KEYWARD_PG_PORT user=keyward_svc dbname=$3"
  export KEYWARD_DB_MIGRATIONS_DIR="$root/migrations"
}

create_service_role() {
  psql "$KEYWARD_DB_ADMIN_CONNINFO" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keyward_svc') THEN
    CREATE ROLE keyward_svc LOGIN NOBYPASSRLS IN ROLE keyward_app;
  END IF;
END $$;
SQL
}

cmd=${1:-}
case "$cmd" in
run)
  install_deps
  build build
  load_env tokens/provision-softhsm.sh tokens/dev keyward-dev
  setup_pg .run/dev/pg 55432 keyward
  build/keywardctl migrate up
  create_service_role
  export KEYWARD_MODE=development
  export KEYWARD_HTTP_LISTEN=${KEYWARD_HTTP_LISTEN:-127.0.0.1:8080}
  echo "== keywardd (development) on http://$KEYWARD_HTTP_LISTEN — try: curl -s http://$KEYWARD_HTTP_LISTEN/readyz"
  exec build/keywardd
  ;;
ctl)
  shift
  [ -x build/keywardctl ] || { echo "run 'scripts/dev.sh run' first" >&2; exit 1; }
  load_env tokens/provision-softhsm.sh tokens/dev keyward-dev
  setup_pg .run/dev/pg 55432 keyward
  exec build/keywardctl "$@"
  ;;
test)
  install_deps
  scripts/pg-cluster.sh destroy .run/test/pg
  rm -rf .run/test
  load_env tokens/provision-softhsm.sh .run/test/token keyward-test
  load_env scripts/pg-cluster.sh start .run/test/pg 55433
  trap 'scripts/pg-cluster.sh stop .run/test/pg' EXIT
  status=0
  : >.run/test/summary
  echo "== lint: clang-format, layers, cppcheck, shellcheck"
  clang-format --dry-run -Werror src/*/*.c src/*/*.h src/*.c include/keyward/*/*.h tests/*/*.c tests/support/*.h bench/*.c clients/c/*.c clients/c/*.h
  python3 scripts/check-layers.py
  cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
    -Iinclude --suppress=missingIncludeSystem src/
  shellcheck -S warning scripts/*.sh bench/*.sh tokens/*.sh tests/*.sh .ci/run
  for variant in build build-asan; do
    if [ "$variant" = build-asan ]; then
      build "$variant" -DKEYWARD_SANITIZE=ON
      export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
      build "$variant"
    fi
    echo "== tests ($variant)"
    # Test binaries run four at a time, each integration and black-box
    # binary with its own token store (tests/with-token.sh) and every test
    # with its own database (copied from a migrated template).
    KWT_TOKENS_DIR="$root/.run/test/tokens" ctest --test-dir "$variant" -V -j4 --timeout 300 2>&1 |
      tee ".run/test/$variant.log" |
      grep -E '^\[----\]|^\[FAIL\]|Synthesis|tests passed|tests failed|Total Test time|^[0-9]+/[0-9]+ Test|Failed|\*\*\*' || true
    grep -q '100% tests passed' ".run/test/$variant.log" || status=1
    grep -h 'Synthesis' ".run/test/$variant.log" >>.run/test/summary || true
  done
  echo "== fuzz smoke: every libFuzzer target for 10 s"
  cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKEYWARD_FUZZ=ON -DKEYWARD_TESTS=OFF >/dev/null
  fuzzers=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done)
  # shellcheck disable=SC2086 # one target name per word
  cmake --build build-fuzz -j"$(nproc)" --target $fuzzers >/dev/null
  # Each target starts from a copy of tests/fuzz/corpus/<target>/ (if any):
  # libFuzzer runs every input there before it mutates, so inputs that once
  # crashed a target are replayed as regressions on every run.
  for f in $(printf 'build-fuzz/%s ' $fuzzers); do
    corpus=".run/test/corpus/$(basename "$f")"
    mkdir -p "$corpus"
    if [ -d "tests/fuzz/corpus/$(basename "$f")" ]; then cp "tests/fuzz/corpus/$(basename "$f")"/* "$corpus"/; fi
    if "$f" -max_total_time=10 -print_final_stats=1 -artifact_prefix=.run/test/ "$corpus" >".run/test/$(basename "$f").log" 2>&1; then
      echo "$(basename "$f"): $(grep -o 'number_of_executed_units: [0-9]*' ".run/test/$(basename "$f").log"), no crash"
    else
      echo "$(basename "$f"): FAILED"; tail -20 ".run/test/$(basename "$f").log"; status=1
    fi
  done
  # One closing line over every Criterion suite of both builds.
  awk -F'|' '{ for (i = 1; i <= NF; i++) { if ($i ~ /Passing:/) { split($i, a, ":"); p += a[2] }
               if ($i ~ /Failing:/) { split($i, a, ":"); f += a[2] } if ($i ~ /Crashing:/) { split($i, a, ":"); f += a[2] } } }
       END { printf "criterion: %d passed, %d failed\n", p, f }' .run/test/summary
  exit $status
  ;;
*)
  echo "usage: scripts/dev.sh run|test|ctl ARGS" >&2
  exit 2
  ;;
esac
