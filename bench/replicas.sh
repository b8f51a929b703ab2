#!/usr/bin/env bash
# replicas.sh — requests per second of 1 and of 3 poold replicas behind
# HAProxy (docker/haproxy/haproxy.cfg) on this machine, one shared budget.
#
#   bench/replicas.sh            (BENCH_DURATION=10s BENCH_CONNS=32
#                                 BENCH_BUDGET=24 BENCH_ORGS=10 to change)
#
# Prints one line per setup: requests/s, non-200 answers, p99, and the most
# poold connections pg_stat_activity showed meanwhile (sampled every 50 ms).
# Everything (wrk, HAProxy, every poold, PostgreSQL) shares this machine's
# cores: on 2 cores, 3 replicas cannot be faster than 1 — they compete for
# the same CPU, and the proxy adds a hop. What the figure shows is the cost
# of that hop and that the budget holds; more replicas pay off only on more
# machines (or cores) than one poold can use.
set -euo pipefail
# Its own PostgreSQL and ports, so it never meets bench/run.sh's.
: "${BENCH_PG_DIR:=/tmp/poold-bench-replicas-pg}" "${BENCH_PG_PORT:=27321}"
: "${BENCH_PORT:=28721}"
export BENCH_PG_DIR BENCH_PG_PORT BENCH_PORT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-32}
BUDGET=${BENCH_BUDGET:-24}
ORGS=${BENCH_ORGS:-10}
HPORT=$((PORT + 10))
PIDS=()
HAPROXY_PID=
SAMPLER_PID=

cleanup() {
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
    [ -n "$HAPROXY_PID" ] && kill "$HAPROXY_PID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    HAPROXY_PID=
    SAMPLER_PID=
}
trap cleanup EXIT

# replicas_start N: N poold on PORT+1..PORT+N sharing BUDGET connections.
replicas_start() {
    local n=$1 i
    for i in $(seq 1 "$n"); do
        env DATABASE_URL="$DB_URL" POOLD_LISTEN="127.0.0.1:$((PORT + i))" \
            POOLD_ADMIN_TOKEN="$TOKEN" POOLD_CLIENT_AUTH=none \
            POOLD_CLUSTER_MAX_CONNS="$BUDGET" POOLD_DB_MAX_CONNS="$BUDGET" \
            "$BUILD/poold" >"$OUT/logs/replica-$n-$i.log" 2>&1 &
        PIDS+=($!)
    done
    # every replica holds its whole share
    for i in $(seq 1 "$n"); do
        local t
        for t in $(seq 1 200); do
            curl -fsS -H "Authorization: Bearer $TOKEN" \
                "http://127.0.0.1:$((PORT + i))/cluster" 2>/dev/null |
                jq -e --argjson n "$n" '.replicas | length == $n and
                    all(.[]; .granted == .share or .self == false)' \
                    >/dev/null && break
            [ "$t" = 200 ] && die "replica $i of $n got no share"
            sleep 0.1
        done
    done
}

# haproxy_start N: the repository's config in front of replicas 1..N (the
# other server lines name a host that does not resolve: left out).
haproxy_start() {
    local n=$1 i
    local -a env=(POOLD_HAPROXY_BIND="127.0.0.1:$HPORT"
                  POOLD_HAPROXY_DIR="$ROOT/docker/haproxy")
    for i in 1 2 3; do
        if [ "$i" -le "$n" ]; then
            env+=("POOLD_$i=127.0.0.1:$((PORT + i))")
        else
            env+=("POOLD_$i=absent.invalid:1")
        fi
    done
    env "${env[@]}" haproxy -db -f "$ROOT/docker/haproxy/haproxy.cfg" \
        >"$OUT/logs/haproxy-$n.log" 2>&1 &
    HAPROXY_PID=$!
    for i in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$HPORT/readyz" 2>/dev/null &&
            return 0
        sleep 0.1
    done
    die "haproxy does not answer"
}

# sampler FILE: the number of poold connections every 50 ms, until killed.
sampler_start() {
    local file=$1
    : >"$file"
    while :; do
        psql_super -c "SELECT count(*) FROM pg_stat_activity
                       WHERE application_name LIKE 'poold%'" >>"$file"
        sleep 0.05
    done &
    SAMPLER_PID=$!
}

# measure NAME URL: wrk through URL; prints the summary line.
measure() {
    local name=$1 url=$2 samples="$OUT/logs/pg-$1.txt" out
    truncate_messages
    BENCH_TAG="w${name}_" BENCH_ORGS=$ORGS wrk -t2 -c"$CONNS" -d2s \
        -s "$BENCH_DIR/post.lua" "$url" >/dev/null
    sampler_start "$samples"
    out=$(BENCH_TAG="m${name}_" BENCH_ORGS=$ORGS wrk -t2 -c"$CONNS" \
        -d"$DURATION" -s "$BENCH_DIR/post.lua" "$url" | sed -n 's/^WRKJSON //p')
    kill "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    jq -r --arg name "$name" --arg max "$(sort -n "$samples" | tail -1)" \
        '"\($name)\t\(.rps | floor) req/s\tnon-200 \(.non200)\tp99 \(.latency.p99_ms) ms\tmax poold conns \($max)"' \
        <<<"$out"
}

command -v wrk >/dev/null || die "wrk is not installed"
command -v haproxy >/dev/null || die "haproxy is not installed"
command -v jq >/dev/null || die "jq is not installed"
mkdir -p "$OUT/logs"
log "building poold in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPOOLD_TESTS=OFF >"$OUT/logs/cmake.log" 2>&1
cmake --build "$BUILD" --target poold -j "$(nproc)" >>"$OUT/logs/cmake.log" 2>&1
pg_start
psql_super -c "DELETE FROM cluster_replicas" >/dev/null

echo "# $(nproc) cores shared by wrk, HAProxy, every poold and PostgreSQL;"
echo "# budget $BUDGET connections, $CONNS client connections, $DURATION, $ORGS orgs"
replicas_start 1
measure "1-direct" "http://127.0.0.1:$((PORT + 1))"
haproxy_start 1
measure "1-haproxy" "http://127.0.0.1:$HPORT"
cleanup
replicas_start 3
haproxy_start 3
measure "3-haproxy" "http://127.0.0.1:$HPORT"
cleanup
"$ROOT/scripts/pg.sh" stop "$PG_DIR"
