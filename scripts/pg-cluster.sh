#!/usr/bin/env bash
# Start, stop or remove a private PostgreSQL cluster for development or tests.
#   scripts/pg-cluster.sh start DIR PORT   -> prints env for `eval`
#   scripts/pg-cluster.sh stop DIR
#   scripts/pg-cluster.sh destroy DIR      stop it and delete its data
#   scripts/pg-cluster.sh where DIR        print where DIR's cluster lives
# The cluster runs as a non-root user: the caller if not root, otherwise
# the system user `keyward-pg` (created on first use). It listens only on a
# Unix socket (PORT names it: .s.PGSQL.PORT), so no TCP port can collide
# with a client's ephemeral one; it trusts local connections.
#
# Where it lives: in DIR when the cluster's user can reach DIR and DIR's
# path is plain (letters, digits and / . _ -; at most 80 bytes, so the
# socket path fits a sockaddr_un and conninfo strings need no quoting).
# Otherwise (a root checkout under a 0700 home directory, a path with
# spaces, a very deep checkout) it lives in
#   /var/lib/keyward-dev/pg-<hash of DIR>          (root)
#   /tmp/keyward-dev-<uid>/pg-<hash of DIR>         (anyone else)
# and says so on stderr. It never changes the permissions of DIR's parents.
set -euo pipefail
me=pg-cluster
die() { echo "$me: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR PORT | stop DIR | destroy DIR | where DIR" >&2; exit 2; }
cmd=${1:-}; req=${2:-}
[ -n "$cmd" ] && [ -n "$req" ] || usage
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$pgbin" ] || die "no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)"
if [ "$(id -u)" = 0 ]; then
  id keyward-pg >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin keyward-pg ||
    die "cannot create the system user keyward-pg"
  # From / so that a working directory the user cannot enter draws no warning.
  as() { (cd / && runuser -u keyward-pg -- "$@"); }
  pguser=keyward-pg
else
  as() { (cd / && "$@"); }
  pguser=$(id -un)
fi

mkdir -p "$req" || die "cannot create $req"
req=$(cd "$req" && pwd -P)
plain() { [[ $1 =~ ^[A-Za-z0-9/._-]+$ ]] && [ ${#1} -le 80 ]; }
dir=$req
if ! plain "$req" || ! as test -x "$req" -a -r "$req"; then
  hash=$(printf '%s' "$req" | sha256sum | cut -c1-12)
  if [ "$(id -u)" = 0 ]; then
    base=/var/lib/keyward-dev
    mkdir -p "$base" && chmod 755 "$base" || die "cannot create $base"
  else
    base=/tmp/keyward-dev-$(id -u)
    mkdir -m 700 "$base" 2>/dev/null || true
    # Shared /tmp: use the folder only if it is ours and not a link.
    [ -d "$base" ] && [ ! -L "$base" ] && [ -O "$base" ] || die "$base is not a folder owned by $(id -un)"
  fi
  dir=$base/pg-$hash
  mkdir -p "$dir" || die "cannot create $dir"
  case "$cmd" in start) echo "$me: $pguser cannot use $req as it is; the cluster lives in $dir" >&2 ;; esac
fi

running() { as "$pgbin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }
case "$cmd" in
where) echo "$dir" ;;
start)
  port=${3:-}
  [[ $port =~ ^[0-9]+$ ]] || usage
  if [ "$(id -u)" = 0 ]; then chown keyward-pg "$dir"; fi
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    if ! as "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1; then
      echo "$me: initdb failed (as $pguser in $dir/data); the end of $dir/initdb.log:" >&2
      tail -n 5 "$dir/initdb.log" >&2
      exit 1
    fi
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
logging_collector = off
CONF
  fi
  if ! running; then
    if ! as "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1; then
      echo "$me: the server in $dir/data did not start; the end of $dir/server.log:" >&2
      tail -n 5 "$dir/server.log" >&2 2>/dev/null || true
      exit 1
    fi
  fi
  chmod 755 "$dir" # the socket must be reachable by the service user
  printf 'export KEYWARD_PG_DIR=%q\n' "$dir"
  printf 'export KEYWARD_PG_PORT=%q\n' "$port"
  printf 'export KEYWARD_PG_ADMIN=%q\n' "host=$dir port=$port user=postgres dbname=postgres"
  ;;
stop | destroy)
  if [ -f "$dir/data/PG_VERSION" ] && running; then
    as "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || die "could not stop the server in $dir/data"
  fi
  if [ "$cmd" = destroy ]; then
    rm -rf "$dir"
    [ "$dir" = "$req" ] || rmdir "$req" 2>/dev/null || true
  fi
  ;;
*) usage ;;
esac
