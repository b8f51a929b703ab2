#!/usr/bin/env bash
# run.sh — the README's first command: install what is missing, build poold,
# start a local PostgreSQL with the schema and the demo orgs, and run poold
# on :8080 in the foreground (Ctrl-C stops it gracefully).
#
# Environment: POOLD_LISTEN (default 0.0.0.0:8080), POOLD_ADMIN_TOKEN (default:
# generated once and kept in build/admin-token), PG_PORT (default 54320),
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

cat <<TXT

PostgreSQL: $DATABASE_URL
            (its data persists; stop it: scripts/pg.sh stop $PG_DIR,
             start afresh: scripts/pg.sh destroy $PG_DIR)
poold:      http://localhost:$port   admin token: $POOLD_ADMIN_TOKEN

Try, from another shell:
  curl -s localhost:$port/process -H 'Content-Type: application/json' \\
       -d '{"id":"msg_000001","org_id":"org_001","payload":"9f3a"}'
  curl -s localhost:$port/stats -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN'
  curl -s -X PUT localhost:$port/pools/org_001/size \\
       -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN' \\
       -H 'Content-Type: application/json' -d '{"max_size":8}'
  curl -s localhost:$port/metrics -H 'Authorization: Bearer $POOLD_ADMIN_TOKEN'

TXT
exec build/poold --listen "$listen"
