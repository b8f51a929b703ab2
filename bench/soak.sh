#!/usr/bin/env bash
# soak.sh — poold under a fixed request rate for a while: does it leak?
#
#   bench/soak.sh [--seconds S] [--rate R] [--orgs N] [--connections C]
#
# Builds poold and bench/loadgen (as bench/run.sh does), starts the bench's
# PostgreSQL (scripts/pg.sh, /tmp/poold-bench-pg, port 26432) and one poold
# (pooled, default settings, port 28081), warms it up for --warmup seconds,
# then drives R requests/s (default 500) over C keep-alive connections
# (default 8) to N orgs (default 10) for S seconds (default 120) with
# `loadgen rate`. Every 10 s and at both ends it prints poold's resident
# memory (VmRSS), its heap bytes in use (poold runs under
# bench/malloc_count.so), open file descriptors and sockets, threads, and the
# PostgreSQL backends poold holds (pg_stat_activity). Samples go to
# bench/out/soak.jsonl, the summary to bench/out/soak.json.
#
# Not a CI test. Exit status 1 when a request was not answered 200, or when
# resident memory grew by more than max(2 MiB, 10 %) from the end of the
# warm-up to the end; else 0. Do not run it while bench/run.sh runs (both
# use the same PostgreSQL, and run.sh stops it when done).
set -euo pipefail

: "${BENCH_PORT:=28081}"
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

SECONDS_RUN=120
RATE=500
ORGS=10
CONNS=8
WARMUP=15
SAMPLE_EVERY=10

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --orgs) ORGS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
for v in "$SECONDS_RUN" "$ORGS" "$CONNS" "$WARMUP"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "not a whole number: $v"
done
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "not a rate: $RATE"

LOADGEN_PID=
cleanup() {
    if [ -n "$LOADGEN_PID" ]; then kill "$LOADGEN_PID" 2>/dev/null || true; fi
    poold_stop
    if [ "${BENCH_KEEP_PG:-0}" != 1 ]; then
        "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    fi
}
trap cleanup EXIT

# sample LABEL: one JSON line about poold now.
sample() {
    local stats
    stats=$(admin_get /stats | jq -c '{services: (.totals.idle + .totals.active),
        built: .totals.created, destroyed: .totals.destroyed,
        conns_open: (.connections.idle + .connections.active)}')
    jq -nc --arg at "$1" --argjson t "$SECONDS" \
        --argjson rss "$(rss_kb "$POOLD_PID")" --argjson hwm "$(hwm_kb "$POOLD_PID")" \
        --argjson fds "$(open_fds "$POOLD_PID")" \
        --argjson sockets "$(open_sockets "$POOLD_PID")" \
        --argjson threads "$(awk '/^Threads:/ { print $2 }' "/proc/$POOLD_PID/status")" \
        --argjson backends "$(pg_backends)" --argjson stats "$stats" \
        --argjson heap "$(mc_snapshot "$OUT/mc-soak.json" | jq .bytes_in_use)" \
        '{at: $at, t_s: $t, rss_kb: $rss, hwm_kb: $hwm, heap_bytes: $heap,
          fds: $fds, sockets: $sockets, threads: $threads,
          pg_backends: $backends} + $stats'
}

show() {
    jq -r '"\(.at | .[0:12] | . + " " * (12 - length)) t=\(.t_s)s rss=\(.rss_kb) KiB hwm=\(.hwm_kb) KiB heap=\(.heap_bytes) B fds=\(.fds) sockets=\(.sockets) threads=\(.threads) pg_backends=\(.pg_backends) services=\(.services) conns=\(.conns_open) built=\(.built)"' <<<"$1" >&2
}

main() {
    local s0 s1 out i grew limit status=0
    mkdir -p "$OUT"
    : >"$OUT/soak.jsonl"
    bench_build
    pg_start
    # Under the malloc_count shim: heap bytes in use tell a leak from the
    # pools growing to their working size better than RSS can.
    rm -f "$OUT/mc-soak.json" "$OUT/mc-soak.json.trigger"
    poold_start soak LD_PRELOAD="$OUT/bin/malloc_count.so" \
        MALLOC_COUNT_FILE="$OUT/mc-soak.json"
    log "warm-up: $WARMUP s at $RATE req/s"
    "$OUT/bin/loadgen" rate -p "$PORT" -r "$RATE" -w "$CONNS" -o "$ORGS" \
        -d "$WARMUP" -t soakw_ >/dev/null || true
    s0=$(sample start)
    echo "$s0" >>"$OUT/soak.jsonl"
    show "$s0"
    log "soak: $SECONDS_RUN s at $RATE req/s, $CONNS connections, $ORGS orgs"
    "$OUT/bin/loadgen" rate -p "$PORT" -r "$RATE" -w "$CONNS" -o "$ORGS" \
        -d "$SECONDS_RUN" -s "$$" -t "soak$$_" >"$OUT/soak-loadgen.json" &
    LOADGEN_PID=$!
    i=0
    while kill -0 "$LOADGEN_PID" 2>/dev/null; do
        sleep 1
        i=$((i + 1))
        if [ $((i % SAMPLE_EVERY)) = 0 ] && kill -0 "$LOADGEN_PID" 2>/dev/null; then
            s1=$(sample "t+${i}s")
            echo "$s1" >>"$OUT/soak.jsonl"
            show "$s1"
        fi
    done
    wait "$LOADGEN_PID" || true
    LOADGEN_PID=
    s1=$(sample end)
    echo "$s1" >>"$OUT/soak.jsonl"
    show "$s1"
    out=$(cat "$OUT/soak-loadgen.json")
    grew=$(( $(jq .rss_kb <<<"$s1") - $(jq .rss_kb <<<"$s0") ))
    limit=$(( $(jq .rss_kb <<<"$s0") / 10 ))
    [ "$limit" -lt 2048 ] && limit=2048
    jq -n --argjson s0 "$s0" --argjson s1 "$s1" --argjson load "$out" \
        --argjson grew "$grew" --argjson limit "$limit" \
        '{at_start: $s0, at_end: $s1, rss_growth_kb: $grew, rss_limit_kb: $limit,
          load: ($load | {target_rps, achieved_rps, requests, ok, non200, status,
                          latency: {p50_ms: .latency.p50_ms, p99_ms: .latency.p99_ms,
                                    max_ms: .latency.max_ms}})}' >"$OUT/soak.json"
    jq -r '.at_start as $a | .at_end as $b
           | "requests \(.load.requests), non-200 \(.load.non200), achieved \(.load.achieved_rps) req/s, p50 \(.load.latency.p50_ms) ms, p99 \(.load.latency.p99_ms) ms",
           "RSS \($a.rss_kb) KiB -> \($b.rss_kb) KiB (\(.rss_growth_kb) KiB; limit \(.rss_limit_kb) KiB)",
           "heap in use \($a.heap_bytes) B -> \($b.heap_bytes) B, pooled services \($a.services) -> \($b.services)",
           "fds \($a.fds) -> \($b.fds), sockets \($a.sockets) -> \($b.sockets), PostgreSQL backends \($a.pg_backends) -> \($b.pg_backends), threads \($a.threads) -> \($b.threads)"' \
        "$OUT/soak.json"
    if [ "$(jq .non200 <<<"$out")" != 0 ]; then
        log "some requests were not answered 200"
        status=1
    fi
    if [ "$grew" -gt "$limit" ]; then
        log "resident memory grew by $grew KiB (more than $limit KiB)"
        status=1
    fi
    log "samples: $OUT/soak.jsonl, summary: $OUT/soak.json"
    return "$status"
}

main
