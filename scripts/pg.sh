#!/usr/bin/env bash
# pg.sh — a private PostgreSQL 15 cluster for poold's tests and local runs.
#
#   scripts/pg.sh start DIR PORT   initdb (once), start on 127.0.0.1:PORT and a
#                                  unix socket in DIR, create role and database
#                                  "poold"/"pools", apply sql/ as that role
#   scripts/pg.sh stop DIR         stop the cluster (fast), keep its files
#   scripts/pg.sh restart DIR PORT pg_ctl restart -m fast (fault tests)
#   scripts/pg.sh destroy DIR      stop and delete DIR
#   scripts/pg.sh url DIR PORT     print the DATABASE_URL poold uses
#
# initdb refuses root, so as root the cluster runs as the "postgres" user.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")" && pwd)
sqldir=$(cd "$here/../sql" && pwd)

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url() { echo "postgresql://poold@127.0.0.1:$2/pools"; }

start() {
    local dir=$1 port=$2
    if [ ! -s "$dir/PG_VERSION" ]; then
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"
        chmod 700 "$dir"
        as_owner "$PGBIN/initdb" -D "$dir" -U postgres -A trust -E UTF8 \
            --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 ||
            { cat "$dir.initdb.log" >&2; exit 1; }
        cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = on
synchronous_commit = on
shared_buffers = 128MB
log_min_messages = warning
CONF
    fi
    if ! as_owner "$PGBIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_owner "$PGBIN/pg_ctl" -D "$dir" -o "-p $port" -l "$dir/server.log" \
            -w -t 60 start >/dev/null
    fi
    local psql=(as_owner "$PGBIN/psql" -X -q -h "$dir" -p "$port" -U postgres
                -v ON_ERROR_STOP=1)
    "${psql[@]}" -d postgres -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'poold') THEN
          CREATE ROLE poold LOGIN;
        END IF; END \$\$;"
    if [ -z "$("${psql[@]}" -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname='pools'")" ]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE pools OWNER poold"
    fi
    # The schema is applied as the database's owner: no superuser needed.
    for f in "$sqldir"/*.sql; do
        PGOPTIONS=--client-min-messages=warning \
            "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(url "$dir" "$port")" -f "$f" >/dev/null
    done
}

stop() {
    local dir=$1
    [ -s "$dir/PG_VERSION" ] || return 0
    as_owner "$PGBIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

restart() {
    as_owner "$PGBIN/pg_ctl" -D "$1" -m fast -o "-p $2" -l "$1/server.log" \
        -w -t 60 restart >/dev/null
}

case "${1:-}" in
start) start "$2" "$3" ;;
restart) restart "$2" "$3" ;;
stop) stop "$2" ;;
destroy) stop "$2"; rm -rf "$2" "$2.initdb.log" ;;
url) url "$2" "$3" ;;
*) echo "usage: $0 start DIR PORT | stop DIR | restart DIR PORT | destroy DIR | url DIR PORT" >&2; exit 2 ;;
esac
