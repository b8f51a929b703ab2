# lib.sh — helpers shared by bench/run.sh and bench/soak.sh (sourced).
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
PG_DIR=${BENCH_PG_DIR:-/tmp/poold-bench-pg}
PG_PORT=${BENCH_PG_PORT:-26432}
PORT=${BENCH_PORT:-28080}
GOREF_PORT=${BENCH_GOREF_PORT:-28090}
# goref (the Go peer of issue 22) is built from its source at bench time into
# $OUT/bin (git-ignored); never committed.
GOREF_SRC=${BENCH_GOREF_SRC:-}
if [ -z "$GOREF_SRC" ]; then
    for GOREF_SRC in "$ROOT/../shared/peers/goref" /work/shared/peers/goref; do
        [ -x "$GOREF_SRC/build.sh" ] && break
    done
fi
PG_BIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB_URL="postgresql://poold@127.0.0.1:$PG_PORT/pools"
SUPER_URL="postgresql://postgres@127.0.0.1:$PG_PORT/pools"
# goref writes `INSERT … ON CONFLICT (org_id, message_id)`, which needs the
# unpartitioned table it was written for: it runs against a database of
# the schema before sql/006_lifecycle.sql (tests/integration/schema_v0/,
# plus the demo orgs) in the same cluster. poold and pgbench use the
# partitioned one, so goref's figures do not pay partition routing.
GOREF_DB_URL="postgresql://poold@127.0.0.1:$PG_PORT/pools_v0"
GOREF_SUPER_URL="postgresql://postgres@127.0.0.1:$PG_PORT/pools_v0"
# The database whose processed_messages the current measurement writes
# (count_rows, truncate_messages): goref's while goref runs.
MSG_SUPER_URL=$SUPER_URL
TOKEN=bench-admin-token
CFLAGS_BENCH=(-std=c11 -O2 -g -Wall -Wextra -Wshadow -Wformat=2 -Werror)
POOLD_PID=
POOLD_LOG=
GOREF_PID=
GOREF_LOG=

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Build poold and pool_bench with the project's CMake (RelWithDebInfo, no
# tests), and the bench's own C programs with cc.
bench_build() {
    mkdir -p "$OUT/bin" "$OUT/logs"
    log "building poold and pool_bench in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPOOLD_TESTS=OFF -DPOOLD_BENCH=ON >"$OUT/logs/cmake.log" 2>&1 ||
        { cat "$OUT/logs/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD" --target poold pool_bench -j "$(nproc)" \
        >>"$OUT/logs/cmake.log" 2>&1 ||
        { tail -30 "$OUT/logs/cmake.log" >&2; die "cmake build failed"; }
    bench_build_tools
}

# The bench's own C programs only (loadgen, malloc_count.so, pgconn_size):
# what a run with another poold (BENCH_POOLD) still needs.
bench_build_tools() {
    mkdir -p "$OUT/bin" "$OUT/logs"
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
    local left
    log "PostgreSQL in $PG_DIR on port $PG_PORT"
    "$ROOT/scripts/pg.sh" start "$PG_DIR" "$PG_PORT"
    # The bench's cluster runs with scripts/pg.sh's settings only. A setting
    # an experiment left behind with ALTER SYSTEM is undone, loudly: one
    # (log_min_duration_statement = 0) once logged every statement with its
    # parameters, 15 GB, and inflated every PostgreSQL figure.
    left=$(psql_super -c "SELECT string_agg(name || ' = ' || setting, ', ')
        FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'")
    if [ -n "$left" ]; then
        log "resetting settings left by ALTER SYSTEM: $left"
        psql_super -c "ALTER SYSTEM RESET ALL" -c "SELECT pg_reload_conf()" >/dev/null
    fi
}

psql_super() {
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$SUPER_URL" "$@"
}

# Every measurement starts from an empty table (every request is a new
# row) and a fresh checkpoint: the previous run's WAL (a batch run writes
# millions of rows) must not be flushed during the next one, where a
# checkpoint's fsyncs stalled every commit for 70-400 ms and made one
# side's p99 at a fixed rate 30-130 times the other's, at random.
truncate_messages() {
    psql_messages -c "TRUNCATE processed_messages" -c "CHECKPOINT" >/dev/null
}

psql_messages() {
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$MSG_SUPER_URL" "$@"
}

# goref's database (GOREF_DB_URL): made once, from the previous schema.
goref_db_make() {
    local f
    if [ -z "$(psql_super -c "SELECT 1 FROM pg_database WHERE datname = 'pools_v0'")" ]; then
        psql_super -c "CREATE DATABASE pools_v0 OWNER poold"
        for f in "$ROOT"/tests/integration/schema_v0/*.sql "$ROOT"/sql/100_demo_orgs.sql; do
            PGOPTIONS=--client-min-messages=warning "$PG_BIN/psql" -X -q \
                -v ON_ERROR_STOP=1 -d "$GOREF_DB_URL" -f "$f" >/dev/null
        done
    fi
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
    wait_ready "poold ($name)" "$POOLD_PID" "$POOLD_LOG" \
        "http://127.0.0.1:$PORT/readyz"
}

# wait_ready WHAT PID LOG URL [SECONDS]: poll URL until it answers 2xx
# (15 s at most); die with the log's tail when the process exits first.
wait_ready() {
    local what=$1 pid=$2 logf=$3 url=$4 secs=${5:-15} i n
    n=$((secs * 20))
    for i in $(seq 1 "$n"); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null ||
            { tail -20 "$logf" >&2; die "$what exited at start"; }
        [ "$i" -lt "$n" ] && sleep 0.05
    done
    die "$what not ready after $secs s"
}

# stop_server PID: SIGTERM (a graceful drain) and reap it.
stop_server() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

poold_stop() {
    stop_server "$POOLD_PID"
    POOLD_PID=
}

# goref_build: build goref from its source (its own build.sh: Debian's Go
# and pgx, offline) into $OUT/bin/goref. Returns 1 (and says why) when it
# cannot be built; the suite then reports goref's figures as n/a.
goref_build() {
    mkdir -p "$OUT/bin" "$OUT/logs"
    if [ ! -x "$GOREF_SRC/build.sh" ]; then
        log "goref: no source at $GOREF_SRC (BENCH_GOREF_SRC): its figures are skipped"
        return 1
    fi
    log "building goref from $GOREF_SRC into $OUT/bin/goref"
    if ! GOREF_BIN="$OUT/bin/goref" GOCACHE="${GOCACHE:-$OUT/gocache}" \
        "$GOREF_SRC/build.sh" >"$OUT/logs/goref-build.log" 2>&1; then
        tail -20 "$OUT/logs/goref-build.log" >&2
        log "goref: build failed: its figures are skipped"
        return 1
    fi
}

# goref_start NAME [VAR=VALUE ...]: start goref on GOREF_PORT against the
# bench's database (GOREF_AUTH=none, like poold's POOLD_CLIENT_AUTH=none),
# wait for /healthz, set GOREF_PID.
goref_start() {
    local name=$1
    shift
    GOREF_LOG="$OUT/logs/goref-$name.log"
    env GOREF_DSN="$GOREF_DB_URL" GOREF_ADDR="127.0.0.1:$GOREF_PORT" GOREF_AUTH=none \
        "$@" "$OUT/bin/goref" >"$GOREF_LOG" 2>&1 &
    GOREF_PID=$!
    wait_ready "goref ($name)" "$GOREF_PID" "$GOREF_LOG" \
        "http://127.0.0.1:$GOREF_PORT/healthz"
}

goref_stop() {
    stop_server "$GOREF_PID"
    GOREF_PID=
}

# descendants PID: every live process below PID (children first listed
# after their parent), by parent id from /proc.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# bench_cleanup: stop everything this script started — poold, goref, and
# any load generator, perf or strace still running below this shell (by
# their ids) — and the bench's PostgreSQL unless BENCH_KEEP_PG=1. For the
# EXIT trap of every bench script (bench_traps).
bench_cleanup() {
    local rc=$? pids
    trap - EXIT INT TERM
    poold_stop
    goref_stop
    pids=$(descendants $$)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086 # a list of ids
        kill -TERM $pids 2>/dev/null || true
        sleep 0.2
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP_PG:-0}" != 1 ]; then
        "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    fi
    exit "$rc"
}

# measured CMD...: run CMD with its stdout in $OUT/measured.out, its stderr
# in $OUT/measured.err and the CPU it and its children used (the `times`
# of the subshell that ran only CMD) in $OUT/times.txt (children_cpu_s
# reads it). CMD runs in the background and the shell waits for it with
# `wait`, which a signal interrupts: the trap (bench_cleanup) then runs at
# once instead of after CMD ends. Returns CMD's status.
measured() {
    {
        local rc=0
        "$@" >"$OUT/measured.out" 2>"$OUT/measured.err" || rc=$?
        times >"$OUT/times.txt"
        exit "$rc"
    } &
    wait "$!"
}

# bench_traps: run bench_cleanup on exit, on failure and on Ctrl-C / TERM.
bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

admin_get() {
    curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$1"
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
# pg_settle: after a client that connected itself (pgbench) has exited,
# wait (up to 5 s) until its backends are gone and reaped — a backend's CPU
# moves into the postmaster's cutime/cstime only when it is reaped, and is
# missed by pg_cpu_ticks in between.
pg_settle() {
    local pm i
    pm=$(head -1 "$PG_DIR/postmaster.pid")
    for i in $(seq 1 100); do
        if [ "$(pg_backends)" = 0 ] &&
            ! ps -o stat= --ppid "$pm" | grep -q '^Z'; then
            return 0
        fi
        [ "$i" -lt 100 ] && sleep 0.05
    done
    log "  warning: pgbench's backends still there 5 s after it exited"
}
proc_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# user and system ticks of a process, on one line
proc_cpu_split() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
# Children's CPU seconds (user + sys) from a file `times` wrote: `times`
# must run in the shell that waited for them, without a fork (no pipe).
children_cpu_s() {
    sed -n 2p "$1" | awk '{ split($1, u, "m"); split($2, s, "m");
        printf "%.3f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
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
    psql_messages -c "SELECT count(*) FROM processed_messages"
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
