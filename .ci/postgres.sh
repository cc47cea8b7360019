# A throwaway PostgreSQL cluster on a loopback port, for CI and for
# developers (see CONTRIBUTING.md):
#
#   source .ci/postgres.sh && pg_start   # exports CPC_TEST_DATABASE_URL
#   cargo test --workspace
#   pg_stop                               # stops it and deletes its files
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# `postgres` user (Debian's package makes it).

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

# Runs a PostgreSQL program as the cluster's owner.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  local bin port
  bin="$(pg_bin)"
  [ -n "$bin" ] || { echo "pg_start: PostgreSQL is not installed"; return 1; }
  CPC_PG_DIR="$(mktemp -d /tmp/cpc-pg.XXXXXX)"
  export CPC_PG_DIR
  [ "$(id -u)" = 0 ] && chown postgres: "$CPC_PG_DIR"
  # A free port: the kernel picks one for a socket we close at once.
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  pg_as_owner "$bin/initdb" -N -A trust -U postgres -D "$CPC_PG_DIR/data" >/dev/null
  # fsync and synchronous_commit stay on: the tests check durability
  # settings. Sockets only on loopback and in the cluster's own directory.
  pg_as_owner "$bin/pg_ctl" -D "$CPC_PG_DIR/data" -l "$CPC_PG_DIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$CPC_PG_DIR -c max_connections=400" \
    start >/dev/null
  export CPC_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "postgres: throwaway cluster on 127.0.0.1:$port ($CPC_PG_DIR)"
}

pg_stop() {
  local bin
  bin="$(pg_bin)"
  if [ -n "${CPC_PG_DIR:-}" ] && [ -d "$CPC_PG_DIR" ]; then
    pg_as_owner "$bin/pg_ctl" -D "$CPC_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$CPC_PG_DIR"
    echo "postgres: throwaway cluster stopped and deleted"
  fi
  unset CPC_PG_DIR
}
