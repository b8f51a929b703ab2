#!/usr/bin/env bash
# profile.sh — where poold's own CPU per request goes, under a fixed load:
# 1 org, 8 keep-alive connections (wrk with bench/post.lua), a warm pool.
#
#   bench/profile.sh [SECONDS]        (default 10)
#
# Prints: poold's CPU per request (user and kernel, from /proc/<pid>/stat
# deltas over the measured run), `perf stat` of poold over a second run
# (task-clock, context switches, migrations, page faults), and the top of
# `perf record -g` of a third run by shared object and by symbol (self
# time). Output files: bench/out/profile/ (perf.data, the reports).
# Uses the same PostgreSQL, ports and settings as run.sh (BENCH_PG_DIR,
# BENCH_PG_PORT, BENCH_PORT, BENCH_KEEP_PG=1); needs perf (linux-perf) and
# wrk. A program that prints figures, never a test.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${1:-10}
PROF="$OUT/profile"

cleanup() {
    poold_stop
    if [ "${BENCH_KEEP_PG:-0}" != 1 ]; then
        "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    fi
}
trap cleanup EXIT

load() { # load TAG SECONDS: wrk, 1 org, 8 connections; prints WRKJSON
    BENCH_TAG=$1 BENCH_ORGS=1 wrk -t2 -c8 -d"$2s" -s "$BENCH_DIR/post.lua" \
        "http://127.0.0.1:$PORT" | sed -n 's/^WRKJSON //p'
}

main() {
    local hz u0 s0 u1 s1 out n perf_pid
    mkdir -p "$PROF"
    bench_build
    pg_start
    truncate_messages
    poold_start profile POOLD_DB_MAX_CONNS=8 POOLD_POOL_SIZE=8
    hz=$(getconf CLK_TCK)
    load pw 2 >/dev/null

    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$POOLD_PID/stat")
    out=$(load pm "$SECS")
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$POOLD_PID/stat")
    n=$(jq .requests <<<"$out")
    jq -n --argjson w "$out" --argjson u $((u1 - u0)) --argjson s $((s1 - s0)) \
        --argjson hz "$hz" --argjson n "$n" \
        '{requests: $n, rps: $w.rps, non200: $w.non200,
          poold_user_us_per_req: ($u / $hz * 1e6 / $n | round),
          poold_sys_us_per_req: ($s / $hz * 1e6 / $n | round),
          poold_cpu_us_per_req: (($u + $s) / $hz * 1e6 / $n | round)}' |
        tee "$PROF/cpu.json"

    perf stat -e task-clock,context-switches,cpu-migrations,page-faults \
        -p "$POOLD_PID" -o "$PROF/perf-stat.txt" -- sleep "$SECS" &
    perf_pid=$!
    out=$(load ps "$SECS")
    wait "$perf_pid"
    echo "perf stat over $(jq .requests <<<"$out") requests:"
    grep -E 'task-clock|context-switches|migrations|page-faults|elapsed' \
        "$PROF/perf-stat.txt"

    perf record -F 999 -g -p "$POOLD_PID" -o "$PROF/perf.data" \
        -- sleep "$SECS" 2>"$PROF/perf-record.log" &
    perf_pid=$!
    load pr "$SECS" >"$PROF/record-load.json"
    wait "$perf_pid"
    perf report -i "$PROF/perf.data" --no-children --sort dso --stdio \
        2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 |
        tee "$PROF/by-dso.txt"
    perf report -i "$PROF/perf.data" --no-children --sort dso,sym --stdio \
        -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -45 |
        tee "$PROF/by-symbol.txt"
    poold_stop
}

main
