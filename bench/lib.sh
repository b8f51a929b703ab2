# lib.sh — helpers shared by bench/run.sh and bench/soak.sh (sourced).
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
PG_DIR=${BENCH_PG_DIR:-/tmp/poold-bench-pg}
PG_PORT=${BENCH_PG_PORT:-26432}
PORT=${BENCH_PORT:-28080}
PG_BIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB_URL="postgresql://poold@127.0.0.1:$PG_PORT/pools"
SUPER_URL="postgresql://postgres@127.0.0.1:$PG_PORT/pools"
TOKEN=bench-admin-token
CFLAGS_BENCH=(-std=c11 -O2 -g -Wall -Wextra -Wshadow -Wformat=2 -Werror)
POOLD_PID=
POOLD_LOG=

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Build poold and pool_bench with the project's CMake (RelWithDebInfo, no
# tests), and the bench's own C programs with cc.
bench_build() {
    mkdir -p "$OUT/bin" "$OUT/logs"
    log "building poold and pool_bench in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPOOLD_TESTS=OFF >"$OUT/logs/cmake.log" 2>&1 ||
        { cat "$OUT/logs/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD" --target poold pool_bench -j "$(nproc)" \
        >>"$OUT/logs/cmake.log" 2>&1 ||
        { tail -30 "$OUT/logs/cmake.log" >&2; die "cmake build failed"; }
    cc "${CFLAGS_BENCH[@]}" -pthread -o "$OUT/bin/loadgen" \
        "$BENCH_DIR/loadgen.c" -lm
    cc "${CFLAGS_BENCH[@]}" -fPIC -shared -o "$OUT/bin/malloc_count.so" \
        "$BENCH_DIR/malloc_count.c" -ldl -lpthread
    # shellcheck disable=SC2046 # pkg-config prints several words
    cc "${CFLAGS_BENCH[@]}" $(pkg-config --cflags libpq) \
        -o "$OUT/bin/pgconn_size" "$BENCH_DIR/pgconn_size.c" \
        $(pkg-config --libs libpq) -ldl
}

pg_start() {
    log "PostgreSQL in $PG_DIR on port $PG_PORT"
    "$ROOT/scripts/pg.sh" start "$PG_DIR" "$PG_PORT"
}

psql_super() {
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$SUPER_URL" "$@"
}

# Every measurement starts from an empty table: every request is a new row.
truncate_messages() {
    psql_super -c "TRUNCATE processed_messages" >/dev/null
}

# poold_start NAME [VAR=VALUE ...]: start poold with the bench's defaults
# (POOLD_CLIENT_AUTH=none: the bench sends no org keys) plus the given
# settings, wait for /readyz, set POOLD_PID.
poold_start() {
    local name=$1
    shift
    POOLD_LOG="$OUT/logs/poold-$name.log"
    env DATABASE_URL="$DB_URL" POOLD_LISTEN="127.0.0.1:$PORT" \
        POOLD_ADMIN_TOKEN="$TOKEN" POOLD_LOG_FORMAT=text \
        POOLD_CLIENT_AUTH=none "$@" \
        "${BENCH_POOLD:-$BUILD/poold}" >"$POOLD_LOG" 2>&1 &
    POOLD_PID=$!
    local i
    for i in $(seq 1 300); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then
            return 0
        fi
        kill -0 "$POOLD_PID" 2>/dev/null ||
            { tail -20 "$POOLD_LOG" >&2; die "poold ($name) exited at start"; }
        [ "$i" -lt 300 ] && sleep 0.05
    done
    die "poold ($name) not ready after 15 s"
}

poold_stop() {
    [ -n "$POOLD_PID" ] || return 0
    kill -TERM "$POOLD_PID" 2>/dev/null || true
    wait "$POOLD_PID" 2>/dev/null || true
    POOLD_PID=
}

admin_get() {
    curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$1"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
open_sockets() {
    find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' | wc -l
}

# PostgreSQL backends of the poold role (its client connections).
pg_backends() {
    psql_super -c "SELECT count(*) FROM pg_stat_activity
                   WHERE usename = 'poold' AND backend_type = 'client backend'"
}

# mc_snapshot FILE: ask the malloc_count shim in the running poold for its
# counters (see bench/malloc_count.c) and print them.
mc_snapshot() {
    local file=$1 i
    touch "$file.trigger"
    for i in $(seq 1 400); do
        [ -e "$file.trigger" ] || { cat "$file"; return 0; }
        [ "$i" -lt 400 ] && sleep 0.005
    done
    die "malloc_count did not answer (is it preloaded?)"
}

# record KIND JSON [jq --arg pairs...]: append one line to raw.jsonl.
record() {
    local kind=$1 json=$2
    shift 2
    jq -c --arg kind "$kind" "$@" '. + {kind: $kind} + $ARGS.named' \
        <<<"$json" >>"$OUT/raw.jsonl"
}

# Rows in processed_messages (truncated before each measurement).
count_rows() {
    psql_super -c "SELECT count(*) FROM processed_messages"
}

# rows_check OK SLACK: every 200 has its row. Prints {rows, ok, slack,
# rows_ok}: rows_ok is true when OK <= rows <= OK + SLACK. SLACK covers
# requests a client had in flight when it stopped (wrk closes its
# connections at the end of its duration: those may commit unanswered) or
# gave up on (wrk's timeouts and read/write errors); 0 for clients that
# wait for every answer.
rows_check() {
    local ok=$1 slack=$2 rows
    rows=$(count_rows)
    jq -nc --argjson rows "$rows" --argjson ok "$ok" --argjson slack "$slack" \
        '{rows: $rows, ok: $ok, slack: $slack,
          rows_ok: ($rows >= $ok and $rows <= $ok + $slack)}'
}

# CPU ticks (1/CLK_TCK s) used by our PostgreSQL cluster: the postmaster,
# its reaped children (cutime/cstime) and its live children.
pg_cpu_ticks() {
    local pm t=0 p
    pm=$(head -1 "$PG_DIR/postmaster.pid")
    t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat")
    for p in $(pgrep -P "$pm"); do
        [ -r "/proc/$p/stat" ] &&
            t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
proc_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
