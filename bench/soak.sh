#!/usr/bin/env bash
# soak.sh — the fault soak: three poold replicas behind HAProxy, steady load,
# faults thrown at random, invariants checked all the while
# (docs/reliability.md).
#
#   bench/soak.sh [--seconds S | --minutes M] [--rate R] [--build DIR]
#                 [--out DIR] [--docs DIR] [--seed N]
#
#   --seconds/--minutes  length of the run (default 90 s; at least 35 s)
#   --rate               POST /process per second through HAProxy (200),
#                        plus a batch of 5-40 or 65-120 messages about every
#                        second
#   --build DIR          a configured CMake build tree: its poold target is
#                        built and used (default: build-bench, configured
#                        here as bench/run.sh does)
#   --out DIR            raw samples, ledger, logs (bench/out/soak)
#   --docs DIR           where soak.png and soak-summary.txt go (docs/)
#   --seed N             the random choices of faults and load
#
# Ports: HAProxy on SOAK_PORT (18200), the replicas on the next three;
# PostgreSQL (scripts/pg.sh, made afresh in SOAK_PG_DIR, /tmp/poold-soak-pg)
# on SOAK_PG_PORT (18250). Everything runs on 127.0.0.1 and stops when the
# run ends, fails or is interrupted (Ctrl-C).
#
# Exit status: 0 when no invariant was violated, 1 when one was, 2 when the
# soak could not run, 130 when interrupted.
set -euo pipefail

: "${SOAK_PORT:=18200}" "${SOAK_PG_PORT:=18250}"
: "${SOAK_PG_DIR:=/tmp/poold-soak-pg}"
BENCH_PG_DIR=$SOAK_PG_DIR BENCH_PG_PORT=$SOAK_PG_PORT
export BENCH_PG_DIR BENCH_PG_PORT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECONDS_RUN=90
RATE=200
BUILD_DIR=
SOAK_OUT=$OUT/soak
DOCS=$ROOT/docs
SEED=

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --minutes) [[ "$2" =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
               SECONDS_RUN=$(($2 * 60)); shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --build) BUILD_DIR=$2; shift 2 ;;
    --out) SOAK_OUT=$2; shift 2 ;;
    --docs) DOCS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ "$SECONDS_RUN" =~ ^[0-9]+$ ]] || { log "not a whole number: $SECONDS_RUN"; exit 2; }
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || { log "not a rate: $RATE"; exit 2; }
[ -z "$SEED" ] || [[ "$SEED" =~ ^[0-9]+$ ]] || { log "not a seed: $SEED"; exit 2; }
for tool in haproxy gnuplot psql jq; do
    command -v "$tool" >/dev/null ||
        { log "$tool is not installed (scripts/install-deps.sh)"; exit 2; }
done

DRIVER_PID=
cleanup() {
    local pm i
    trap - EXIT INT TERM
    if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        # The driver stops what it started; its process group is the net.
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
        for i in $(seq 1 600); do
            kill -0 "$DRIVER_PID" 2>/dev/null || break
            [ "$i" -lt 600 ] && sleep 0.1
        done
        if kill -0 "$DRIVER_PID" 2>/dev/null; then
            kill -KILL -- "-$DRIVER_PID" 2>/dev/null || true
        fi
    fi
    # A SIGSTOPped PostgreSQL must not outlive an interrupted fault.
    if pm=$(head -1 "$SOAK_PG_DIR/postmaster.pid" 2>/dev/null); then
        pkill -CONT -P "$pm" 2>/dev/null || true
        kill -CONT "$pm" 2>/dev/null || true
    fi
    "$ROOT/scripts/pg.sh" stop "$SOAK_PG_DIR" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_poold() {
    mkdir -p "$SOAK_OUT"
    if [ -n "$BUILD_DIR" ]; then
        [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
            { log "--build $BUILD_DIR: not a configured build tree"; exit 2; }
    else
        BUILD_DIR=$BUILD
        [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
            cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
                -DPOOLD_TESTS=OFF >"$SOAK_OUT/cmake.log" 2>&1 ||
            { cat "$SOAK_OUT/cmake.log" >&2; exit 2; }
    fi
    log "building poold in $BUILD_DIR"
    cmake --build "$BUILD_DIR" --target poold -j "$(nproc)" \
        >>"$SOAK_OUT/cmake.log" 2>&1 ||
        { tail -30 "$SOAK_OUT/cmake.log" >&2; exit 2; }
    cc "${CFLAGS_BENCH[@]}" -fPIC -shared -o "$SOAK_OUT/malloc_count.so" \
        "$BENCH_DIR/malloc_count.c" -ldl -lpthread
}

main() {
    local status=0 secs
    build_poold
    rm -f "$SOAK_OUT"/*.dat "$SOAK_OUT"/*.log "$SOAK_OUT"/*.tsv \
        "$SOAK_OUT"/*.jsonl "$SOAK_OUT"/summary.* "$SOAK_OUT"/mc-*
    log "PostgreSQL made afresh in $SOAK_PG_DIR on port $SOAK_PG_PORT"
    "$ROOT/scripts/pg.sh" destroy "$SOAK_PG_DIR"
    "$ROOT/scripts/pg.sh" start "$SOAK_PG_DIR" "$SOAK_PG_PORT" ||
        { log "PostgreSQL did not start"; exit 2; }
    # Its own process group (setsid), so that cleanup can end all of it;
    # bounded in time even if something in it hangs.
    setsid timeout -s TERM -k 60 $((SECONDS_RUN + 900)) \
        /usr/bin/python3 "$BENCH_DIR/soak.py" --seconds "$SECONDS_RUN" \
        --rate "$RATE" --port "$SOAK_PORT" --poold "$BUILD_DIR/poold" \
        --db-url "postgresql://poold@127.0.0.1:$SOAK_PG_PORT/pools" \
        --super-url "postgresql://postgres@127.0.0.1:$SOAK_PG_PORT/pools" \
        --pg-dir "$SOAK_PG_DIR" --pg-port "$SOAK_PG_PORT" \
        --pg-sh "$ROOT/scripts/pg.sh" --haproxy-dir "$ROOT/docker/haproxy" \
        --out "$SOAK_OUT" --malloc-count "$SOAK_OUT/malloc_count.so" \
        ${SEED:+--seed "$SEED"} &
    DRIVER_PID=$!
    wait "$DRIVER_PID" || status=$?
    DRIVER_PID=
    [ "$status" -le 1 ] || { log "the soak did not run to its end ($status)"; exit 2; }
    mkdir -p "$DOCS"
    secs=$SECONDS_RUN
    gnuplot -e "dir='$SOAK_OUT'; outfile='$DOCS/soak.png'; secs=$secs; bound=$(jq .bound_ms "$SOAK_OUT/summary.json"); warm=$(jq .warmup_s "$SOAK_OUT/summary.json");
                title='poold fault soak: $secs s, 3 replicas behind HAProxy, $RATE req/s, faults at random'" \
        "$BENCH_DIR/soak.gp" 2>"$SOAK_OUT/gnuplot.log" ||
        { cat "$SOAK_OUT/gnuplot.log" >&2; log "gnuplot failed"; }
    cp "$SOAK_OUT/summary.txt" "$DOCS/soak-summary.txt"
    log "plot: $DOCS/soak.png, summary: $DOCS/soak-summary.txt, raw: $SOAK_OUT"
    return "$status"
}

main
