#!/usr/bin/env bash
# profile.sh — where poold's own CPU per request goes, under a fixed load:
# 1 org, 8 keep-alive connections (wrk with bench/post.lua), a warm pool.
#
#   bench/profile.sh [SECONDS]        (default 10)
#   BENCH_POOLD=/other/build/poold bench/profile.sh   (another binary, e.g.
#                                     main's, for a before/after)
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
    mkdir -p "$PROF" "$OUT/logs"
    [ -n "${BENCH_POOLD:-}" ] || bench_build
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

    perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults \
        -e raw_syscalls:sys_enter -p "$POOLD_PID" -o "$PROF/perf-stat.csv" \
        -- sleep $((SECS + 2)) &
    # perf adds a connection thread's counts to the process's when the
    # thread exits: perf outlives the load by 2 s, so the connection
    # threads have ended (wrk closed them) before it stops counting.
    perf_pid=$!
    out=$(load ps "$SECS")
    wait "$perf_pid"
    n=$(jq .requests <<<"$out")
    echo "perf stat of poold over $n requests ($(jq .rps <<<"$out") req/s), per request:"
    awk -F, -v n="$n" '$3 != "" && $1 ~ /^[0-9.]+$/ {
        v = $1 / n; if ($3 == "task-clock") { v *= 1000; u = "µs" } else u = ""
        printf "  %-24s %10.2f %s\n", $3, v, u }' "$PROF/perf-stat.csv" |
        tee "$PROF/perf-stat-per-request.txt"

    perf record -F 2999 -g -p "$POOLD_PID" -o "$PROF/perf.data" \
        -- sleep "$SECS" 2>"$PROF/perf-record.log" &
    perf_pid=$!
    load pr "$SECS" >"$PROF/record-load.json"
    wait "$perf_pid"
    perf report -i "$PROF/perf.data" --no-children --sort dso --stdio -g none \
        2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 |
        tee "$PROF/by-dso.txt"
    perf report -i "$PROF/perf.data" --no-children --sort dso,sym --stdio \
        -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -45 |
        tee "$PROF/by-symbol.txt"
    # Kernel time by system call (inclusive), and the user-space entry
    # points that lead to it.
    perf report -i "$PROF/perf.data" --children --sort sym --stdio -g none \
        2>/dev/null | grep -E '\[k\] __x64_sys_|\[k\] handle_softirqs|\[k\] schedule$' |
        head -12 | tee "$PROF/by-syscall.txt"
    poold_stop
}

main
