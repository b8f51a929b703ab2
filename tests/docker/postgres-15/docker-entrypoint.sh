#!/usr/bin/env bash
# The official postgres image's entrypoint, in short: as root, own the data
# directory and drop to the postgres user; on an empty data directory,
# initdb with POSTGRES_USER / POSTGRES_PASSWORD, create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/* (*.sql through psql with ON_ERROR_STOP, *.sh
# run or sourced) against a server listening on its socket only, then serve
# on every address with scram-sha-256 for TCP clients.
set -Eeuo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups \
        "${BASH_SOURCE[0]}" "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

run_init_files() {
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
        *.sh)
            echo "entrypoint: running $f"
            if [ -x "$f" ]; then "$f"; else . "$f"; fi
            ;;
        *.sql)
            echo "entrypoint: running $f"
            psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
                --no-psqlrc --dbname "$POSTGRES_DB" -f "$f"
            ;;
        *.sql.gz)
            echo "entrypoint: running $f"
            gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
                --no-password --no-psqlrc --dbname "$POSTGRES_DB"
            ;;
        *) echo "entrypoint: ignoring $f" ;;
        esac
    done
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "entrypoint: POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        -D "$PGDATA" >/dev/null
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
            --no-psqlrc --dbname postgres --set db="$POSTGRES_DB" \
            <<<'CREATE DATABASE :"db";'
    fi
    run_init_files
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "entrypoint: PostgreSQL init process complete; ready for start up."
fi

exec "$@"
