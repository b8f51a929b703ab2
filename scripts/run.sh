#!/usr/bin/env bash
# run.sh — the README's first command: install what is missing, build poold,
# start a local PostgreSQL with the schema and the demo orgs, and run poold
# on :8080 in the foreground (Ctrl-C stops it gracefully).
#
# Environment: POOLD_LISTEN (default 0.0.0.0:8080), POOLD_ADMIN_TOKEN (default:
# generated once and kept in build/admin-token; org_001's demo API key is
# kept in build/demo-key), PG_PORT (default 54320),
# PG_DIR (default /var/tmp/poold-pg). Every POOLD_* setting is passed on.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=${PG_PORT:-54320}
PG_DIR=${PG_DIR:-/var/tmp/poold-pg}

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOOLD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target poold >/dev/null
scripts/pg.sh start "$PG_DIR" "$PG_PORT"

export DATABASE_URL=${DATABASE_URL:-$(scripts/pg.sh url "$PG_DIR" "$PG_PORT")}
if [ -z "${POOLD_ADMIN_TOKEN:-}" ]; then
    [ -s build/admin-token ] || od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >build/admin-token
    POOLD_ADMIN_TOKEN=$(cat build/admin-token)
fi
export POOLD_ADMIN_TOKEN
listen=${POOLD_LISTEN:-0.0.0.0:8080}
port=${listen##*:}

# org_001's demo API key (POST /process needs one): kept in build/demo-key
# while it is live in the database, else a new one. Only its SHA-256 goes to
# the database, as POST /orgs/{org_id}/keys would store it.
PSQL=${PGBIN:-/usr/lib/postgresql/15/bin}/psql
digest_of() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
demo_key_live() {
    [ -s build/demo-key ] && [ "$("$PSQL" "$DATABASE_URL" -XAtq -c \
        "SELECT 1 FROM org_keys WHERE revoked_at IS NULL AND digest =
         decode('$(digest_of "$(cat build/demo-key)")', 'hex')")" = 1 ]
}
if ! demo_key_live; then
    key=pk_$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    key_id=key_$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    "$PSQL" "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -c \
        "INSERT INTO org_keys (key_id, org_id, label, digest) VALUES
         ('$key_id', 'org_001', 'demo key (scripts/run.sh)',
          decode('$(digest_of "$key")', 'hex'))"
    (umask 077; printf '%s' "$key" >build/demo-key)
fi
KEY=$(cat build/demo-key)

cat <<TXT

PostgreSQL: $DATABASE_URL
            (its data persists; stop it: scripts/pg.sh stop $PG_DIR,
             start afresh: scripts/pg.sh destroy $PG_DIR)
poold:      http://localhost:$port   admin token: $POOLD_ADMIN_TOKEN
org_001's API key: $KEY   (build/demo-key)

Try, from another shell:
  curl -s localhost:$port/process -H 'Authorization: Bearer $KEY' \\
       -H 'Content-Type: application/json' \\
       -d '{"id":"msg_000001","org_id":"org_001","payload":"9f3a"}'
  curl -s localhost:$port/stats -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN'
  curl -s -X PUT localhost:$port/pools/org_001/size \\
       -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN' \\
       -H 'Content-Type: application/json' -d '{"max_size":8}'
  curl -s localhost:$port/metrics -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN'

TXT
exec build/poold --listen "$listen"
