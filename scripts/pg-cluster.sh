#!/usr/bin/env bash
# Start (or stop) a private PostgreSQL cluster for development or tests.
#   scripts/pg-cluster.sh start DIR PORT   -> prints env for `eval`
#   scripts/pg-cluster.sh stop DIR
# The cluster runs as a non-root user: the caller if not root, otherwise
# the system user `keyward-pg` (created on first use). It listens only on a
# Unix socket in DIR (PORT names it: DIR/.s.PGSQL.PORT), so no TCP port can
# collide with a client's ephemeral one; it trusts local connections.
set -euo pipefail
cmd=${1:?usage}; dir=${2:?usage}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
if [ "$(id -u)" = 0 ]; then
  id keyward-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin keyward-pg
  as() { runuser -u keyward-pg -- "$@"; }
  pguser=keyward-pg
else
  as() { "$@"; }
  pguser=$(id -un)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case "$cmd" in
start)
  port=${3:?usage}
  if [ "$(id -u)" = 0 ]; then chown keyward-pg "$dir"; fi
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
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
  if ! as "$pgbin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
  fi
  chmod 755 "$dir"  # the socket must be reachable by the service user
  echo "export KEYWARD_PG_DIR='$dir'"
  echo "export KEYWARD_PG_PORT='$port'"
  echo "export KEYWARD_PG_ADMIN='host=$dir port=$port user=postgres dbname=postgres'"
  ;;
stop)
  if [ -f "$dir/data/PG_VERSION" ]; then
    as "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  ;;
*) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
