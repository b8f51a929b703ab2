#!/usr/bin/env bash
# evloop.sh — poold's CPU per request beside the floor of an event-driven
# core (bench/evloop.c: libmicrohttpd in external epoll mode and libpq's
# asynchronous calls in ONE thread, no rules, pools, deadlines or logs),
# under the same load: 1 org, 8 keep-alive connections (wrk with
# bench/post.lua), 8 PostgreSQL connections, ROUNDS alternating runs.
#
#   bench/evloop.sh [ROUNDS]        (default 3; SECONDS per run: BENCH_CEIL_S, 6)
#
# Prints per run: requests/s, CPU µs per request (user + kernel, from
# /proc/<pid>/stat deltas), system calls and context switches per request
# (perf stat, when perf can count them), and the rows check (every 200 has
# its row). Uses run.sh's PostgreSQL, ports and build (BENCH_* settings,
# BENCH_KEEP_PG=1). A program that prints figures, never a test.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${1:-3}
SECS=${BENCH_CEIL_S:-6}
EV_PID=

cleanup() {
    poold_stop
    if [ -n "$EV_PID" ]; then
        kill "$EV_PID" 2>/dev/null || true
        wait "$EV_PID" || true
    fi
    if [ "${BENCH_KEEP_PG:-0}" != 1 ]; then
        "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    fi
}
trap cleanup EXIT

# measure NAME PID: warm-up, then one measured wrk run against PORT.
measure() {
    local name=$1 pid=$2 u0 s0 u1 s1 out ok n perf=() hz rows
    hz=$(getconf CLK_TCK)
    BENCH_TAG="w$name$RANDOM" BENCH_ORGS=1 wrk -t2 -c8 -d2s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" >/dev/null
    truncate_messages
    if perf stat -e raw_syscalls:sys_enter -p "$pid" -o /dev/null -- true \
        2>/dev/null; then
        perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" \
            -o "$OUT/evloop-perf.txt" -- sleep "$((SECS + 1))" &
        perf=($!)
        sleep 0.3
    fi
    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    out=$(BENCH_TAG="m$name$RANDOM" BENCH_ORGS=1 wrk -t2 -c8 -d"${SECS}s" \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" | sed -n 's/^WRKJSON //p')
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    [ ${#perf[@]} -gt 0 ] && wait "${perf[0]}"
    ok=$(jq .ok <<<"$out")
    n=$((ok > 0 ? ok : 1))
    rows=$(rows_check "$ok" 8 | jq -r 'if .rows_ok then "ok (\(.rows) rows)" else "FAILED (\(.rows) rows for \(.ok) answers)" end')
    printf '| %s | %s | %s | %s (%s + %s) |' "$name" "$(jq .rps <<<"$out")" \
        "$(jq .non200 <<<"$out")" "$(((u1 - u0 + s1 - s0) * 1000000 / hz / n))" \
        "$(((u1 - u0) * 1000000 / hz / n))" "$(((s1 - s0) * 1000000 / hz / n))"
    if [ ${#perf[@]} -gt 0 ]; then
        awk -F, -v n="$n" '$3 ~ /sys_enter/ { sc = $1 } $3 ~ /context-switches/ { cs = $1 }
            END { printf " %.1f | %.2f |", sc / n, cs / n }' "$OUT/evloop-perf.txt"
    else
        printf ' n/a | n/a |'
    fi
    printf ' %s |\n' "$rows"
}

main() {
    local r
    bench_build
    # shellcheck disable=SC2046 # pkg-config prints several words
    cc "${CFLAGS_BENCH[@]}" -o "$OUT/bin/evloop" "$BENCH_DIR/evloop.c" \
        $(pkg-config --cflags --libs libmicrohttpd jansson libpq)
    pg_start
    log "poold vs a one-thread event loop: 1 org, 8 connections, $SECS s, $ROUNDS rounds (load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "| core | req/s | non-200 | CPU µs/request (user + kernel) | system calls/request | context switches/request | rows |"
    echo "|---|---|---|---|---|---|---|"
    for r in $(seq 1 "$ROUNDS"); do
        poold_start "evloop-poold-$r" POOLD_POOL_SIZE=8 POOLD_DB_MAX_CONNS=8
        measure poold "$POOLD_PID"
        poold_stop
        "$OUT/bin/evloop" "$PORT" "$DB_URL" 8 >"$OUT/logs/evloop-$r.log" 2>&1 &
        EV_PID=$!
        for _ in $(seq 1 100); do
            curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
            sleep 0.05
        done
        measure evloop "$EV_PID"
        kill "$EV_PID"
        wait "$EV_PID" || true
        EV_PID=
    done
    log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

main "$@"
