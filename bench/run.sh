#!/usr/bin/env bash
# run.sh — poold's benchmark suite: the goals of issue 22 (and the seed's of
# issue 9), every ratio taken within one run against PostgreSQL's strongest
# configuration for the same work (pgbench -M prepared) and against goref
# (the Go peer, ../shared/peers/goref), with the CPU per request of the
# server, of PostgreSQL and of the load generator for every run. One
# command from the repository's root:
#
#   bench/run.sh                  print the tables (about 8 minutes)
#   bench/run.sh --quick          fewer, shorter runs (about 2 minutes)
#   bench/run.sh --write-docs     also put them into docs/benchmarks.md
#                                 (combines with --quick)
#
# It builds poold (cmake, build-bench/), the bench's C programs and goref
# (its build.sh, into bench/out/bin: never committed), starts a private
# PostgreSQL (scripts/pg.sh, /tmp/poold-bench-pg, port 26432), starts
# poold (port 28080, POOLD_CLIENT_AUTH=none) and goref (port 28090,
# GOREF_AUTH=none) as each measurement needs, prints every table as
# markdown on stdout (also bench/out/results.md), writes the figures to
# bench/out/results.json (every measurement: bench/out/raw.jsonl) and the
# plot to bench/out/anchors.svg. After every poold and goref measurement it
# counts the rows in processed_messages: every 200 must have its row. On
# exit, failure or Ctrl-C it stops everything it started.
#
# Settings (environment): BENCH_CEIL_S (8; seconds per saturation run),
# BENCH_CEIL_RUNS (3), BENCH_RUNS (3; runs of the seed's workloads),
# BENCH_SEED_COSTS ("scram"; add "real" and "seed" for trust and simulated
# costs), BENCH_SINGLE_N (500 pooled requests; none gets
# BENCH_SINGLE_N_NONE, 200), BENCH_EXHAUST_ACQUIRE_MS (1500),
# BENCH_EXHAUST_N (40), BENCH_RATE_RUNS (3 pairs at the fixed rate; --quick
# 1), BENCH_PG_DIR, BENCH_PG_PORT, BENCH_PORT,
# BENCH_GOREF_PORT, BENCH_GOREF_SRC, BENCH_OUT, BENCH_KEEP_PG=1 (leave
# PostgreSQL running), BENCH_ONLY (a space-separated subset of: org1
# orgs64 goref batch rate exhaust seed, default all of them; --quick: all
# but seed; extra parts: cpu alloc idle poolbench). --quick sets
# BENCH_CEIL_S=3, BENCH_CEIL_RUNS=1, BENCH_RUNS=1 unless they are set.
# Also: BENCH_ORG1_POOLD, BENCH_ORG1_GOREF, BENCH_ORGS64_POOLD,
# BENCH_ORGS64_GOREF (the servers' settings per case, docs/benchmarks.md).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

WRITE_DOCS=0
QUICK=0
for arg in "$@"; do
    case "$arg" in
    -h | --help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --write-docs) WRITE_DOCS=1 ;;
    --quick) QUICK=1 ;;
    *) die "unknown argument $arg (see --help)" ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    RUNS=${BENCH_RUNS:-1}
    CEIL_S=${BENCH_CEIL_S:-3}
    CEIL_RUNS=${BENCH_CEIL_RUNS:-1}
    RATE_RUNS=${BENCH_RATE_RUNS:-1}
    ONLY=${BENCH_ONLY:-org1 orgs64 goref batch rate exhaust}
else
    RUNS=${BENCH_RUNS:-3}
    CEIL_S=${BENCH_CEIL_S:-8}
    CEIL_RUNS=${BENCH_CEIL_RUNS:-3}
    RATE_RUNS=${BENCH_RATE_RUNS:-3}
    ONLY=${BENCH_ONLY:-org1 orgs64 goref batch rate exhaust seed}
fi
SINGLE_N=${BENCH_SINGLE_N:-500}
SINGLE_N_NONE=${BENCH_SINGLE_N_NONE:-200}
SEED_COST_LIST=${BENCH_SEED_COSTS:-scram}
SEED_COSTS=(POOLD_BUILD_COST_MS=10 POOLD_PROCESS_COST_MS=0.5)
# The seed's per-org pools have no global cap; 10 orgs x 8 workers at most
# need 80 services, so 100 connections keep poold's cap out of the way.
BATCH_CONNS=100
HAVE_GOREF=0

want() { [[ " $ONLY " == *" $1 "* ]]; }

bench_traps

machine_json() {
    local pgver
    pgver=$(psql_super -c "SHOW server_version")
    jq -n --arg nproc "$(nproc)" \
        --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
        --arg mem "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
        --arg kernel "$(uname -sr)" --arg pg "$pgver" \
        --arg commit "$(git -C "$ROOT" rev-parse --short HEAD)" \
        --arg dirty "$(git -C "$ROOT" status --porcelain -- src include | wc -l)" \
        --arg date "$(date -u +%FT%TZ)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        '{nproc: ($nproc | tonumber), cpu: $cpu, memory: $mem, kernel: $kernel,
          postgresql: $pg, commit: $commit, src_files_changed: ($dirty | tonumber),
          date: $date, loadavg_at_start: $load}'
}

# A second login role that authenticates with SCRAM over TCP (the default
# outside a laptop), a member of poold so it uses poold's tables: the
# single-request workload runs once more with it, because a new
# connection's cost depends on the authentication method.
SCRAM_URL="postgresql://poold_scram:bench-scram@127.0.0.1:$PG_PORT/pools"
pg_scram_role() {
    local hba="$PG_DIR/pg_hba.conf" line="host all poold_scram 127.0.0.1/32 scram-sha-256"
    psql_super >/dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'poold_scram') THEN
    CREATE ROLE poold_scram LOGIN;
  END IF; END $$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE poold_scram PASSWORD 'bench-scram';
GRANT poold TO poold_scram;
SQL
    if ! grep -qxF "$line" "$hba"; then
        { echo "$line"; cat "$hba"; } >"$hba.new"
        chown --reference="$hba" "$hba.new"
        chmod --reference="$hba" "$hba.new"
        mv "$hba.new" "$hba"
    fi
    psql_super -c "SELECT pg_reload_conf()" >/dev/null
}

# ---- the seed's workloads ---------------------------------------------------

# seed_batch RUN WORKLOAD COST MODE N WORKERS SLOTS: one fresh poold, the
# batch once on cold pools (the seed's: pools made per round, services
# built lazily) and then a second batch of the same shape (other ids, same
# orgs) on the pools the first one left: the steady state.
seed_batch() {
    local run=$1 wl=$2 cost=$3 mode=$4 n=$5 workers=$6 slots=$7 out created phase
    local -a extra=()
    local oks=0
    [ "$cost" = seed ] && extra=("${SEED_COSTS[@]}")
    [ "$cost" = scram ] && extra=(DATABASE_URL="$SCRAM_URL")
    truncate_messages
    poold_start "seed-$wl-$cost-$mode" POOLD_POOL_MODE="$mode" \
        POOLD_POOL_SIZE="$slots" POOLD_DB_MAX_CONNS=$BATCH_CONNS "${extra[@]}"
    local seed=$((run * 10))
    for phase in cold warm; do
        seed=$((seed + 1))
        # Same seed in both modes: the same messages; a tag per run and
        # phase: fresh ids.
        measured "$OUT/bin/loadgen" batch -p "$PORT" -n "$n" -w "$workers" -o 10 \
            -s "$seed" -t "r${run}${phase:0:1}_" || true
        out=$(cat "$OUT/measured.out")
        created=$(admin_get /stats | jq '.totals.created')
        oks=$((oks + $(jq .ok <<<"$out")))
        record seed "$out" --arg workload "$wl" --arg cost "$cost" \
            --arg mode "$mode" --arg phase "$phase" --argjson run "$run" \
            --argjson services_built "$created" \
            --argjson rows "$(rows_check "$oks" 0)"
        log "  $wl $cost $mode $phase run $run: $(jq -r '"\(.wall_ms) ms, non-200 \(.non200)"' <<<"$out")"
    done
    poold_stop
}

# seed_single RUN COST MODE: the seed's test_bench_single_*: one org, a
# pool of 4, sequential requests after a warm-up.
seed_single() {
    local run=$1 cost=$2 mode=$3 out n=$SINGLE_N
    local -a extra=()
    [ "$cost" = seed ] && extra=("${SEED_COSTS[@]}")
    [ "$cost" = scram ] && extra=(DATABASE_URL="$SCRAM_URL")
    [ "$mode" = none ] && n=$SINGLE_N_NONE
    truncate_messages
    poold_start "seed-single-$cost-$mode" POOLD_POOL_MODE="$mode" \
        POOLD_POOL_SIZE=4 "${extra[@]}"
    measured "$OUT/bin/loadgen" single -p "$PORT" -n "$n" --warmup 20 -o 1 \
        -s "$run" -t "s${run}_" || true
    out=$(cat "$OUT/measured.out")
    poold_stop
    record seed "$out" --arg workload single --arg cost "$cost" \
        --arg mode "$mode" --arg phase warm --argjson run "$run" \
        --argjson rows "$(rows_check "$(jq '.ok + .warmup - .warmup_non200' \
            <<<"$out")" 0)"
    log "  single $cost $mode run $run: $(jq -r '"mean \(.latency.mean_ms) ms, non-200 \(.non200)"' <<<"$out")"
}

phase_seed() {
    local run cost mode
    local -a modes
    for run in $(seq 1 "$RUNS"); do
        log "seed workloads, run $run of $RUNS"
        # Alternate the order so drift (other load, WAL growth) hits both.
        if [ $((run % 2)) = 1 ]; then modes=(pooled none); else modes=(none pooled); fi
        for cost in $SEED_COST_LIST; do
            for mode in "${modes[@]}"; do
                seed_batch "$run" batch200 "$cost" "$mode" 200 4 4
                seed_batch "$run" batch1000 "$cost" "$mode" 1000 8 20
                seed_single "$run" "$cost" "$mode"
            done
        done
    done
}

# ---- where the CPU goes, pooled vs none --------------------------------------

# CPU per request of poold and of the PostgreSQL cluster, for a warm batch
# of 2000 messages, 8 workers, 10 orgs, 20 slots, real costs.
phase_cpu() {
    local mode out p0 p1 g0 g1 hz
    hz=$(getconf CLK_TCK)
    log "CPU per request, pooled vs none"
    for mode in pooled none; do
        truncate_messages
        poold_start "cpu-$mode" POOLD_POOL_MODE="$mode" POOLD_POOL_SIZE=20 \
            POOLD_DB_MAX_CONNS=$BATCH_CONNS
        "$OUT/bin/loadgen" batch -p "$PORT" -n 500 -w 8 -o 10 -t "cpuw${mode}_" \
            >/dev/null || true
        g0=$(pg_cpu_ticks)
        p0=$(proc_cpu_ticks "$POOLD_PID")
        out=$("$OUT/bin/loadgen" batch -p "$PORT" -n 2000 -w 8 -o 10 \
            -t "cpu${mode}_") || true
        p1=$(proc_cpu_ticks "$POOLD_PID")
        g1=$(pg_cpu_ticks)
        poold_stop
        record cpu "$out" --arg mode "$mode" \
            --argjson poold_us_per_req "$(( (p1 - p0) * 1000000 / hz / 2000 ))" \
            --argjson postgres_us_per_req "$(( (g1 - g0) * 1000000 / hz / 2000 ))"
        log "  $mode: $(jq -r '"\(.wall_ms) ms"' <<<"$out"), poold $(( (p1 - p0) * 1000000 / hz / 2000 )) µs/req, PostgreSQL $(( (g1 - g0) * 1000000 / hz / 2000 )) µs/req"
    done
}

# ---- heap allocations and RSS (the seed's GC table) -------------------------

phase_alloc() {
    local n mode mc before after rss0 rss1 out
    log "allocations per request and RSS"
    for n in 200 500 1000 2000 5000; do
        for mode in pooled none; do
            mc="$OUT/mc-alloc.json"
            rm -f "$mc" "$mc.trigger"
            truncate_messages
            poold_start "alloc-$n-$mode" POOLD_POOL_MODE="$mode" \
                POOLD_POOL_SIZE=4 POOLD_DB_MAX_CONNS=$BATCH_CONNS \
                LD_PRELOAD="$OUT/bin/malloc_count.so" MALLOC_COUNT_FILE="$mc"
            rss0=$(rss_kb "$POOLD_PID")
            before=$(mc_snapshot "$mc")
            out=$("$OUT/bin/loadgen" batch -p "$PORT" -n "$n" -w 4 -o 10 \
                -s "$n" -t "a${n}_") || true
            after=$(mc_snapshot "$mc")
            rss1=$(rss_kb "$POOLD_PID")
            record alloc "$out" --arg mode "$mode" --argjson messages "$n" \
                --argjson before "$before" --argjson after "$after" \
                --argjson rss_before_kb "$rss0" --argjson rss_after_kb "$rss1" \
                --argjson hwm_kb "$(hwm_kb "$POOLD_PID")"
            poold_stop
            log "  $n $mode: $(jq -n --argjson a "$after" --argjson b "$before" \
                '($a.allocs - $b.allocs) / '"$n"' | floor') allocs/request"
        done
    done
}

# ---- one idle pooled service's bytes (the seed's __slots__ table) -----------

# idle_case NAME PREWARM CEILING: heap in use once poold is up and prewarm
# is done.
idle_case() {
    local name=$1 prewarm=$2 ceiling=$3 mc="$OUT/mc-idle.json" want=0 i snap
    rm -f "$mc" "$mc.trigger"
    [ "$prewarm" = all ] && want=100
    poold_start "idle-$name" POOLD_PREWARM="$prewarm" POOLD_POOL_CEILING="$ceiling" \
        POOLD_DB_MAX_CONNS=150 LD_PRELOAD="$OUT/bin/malloc_count.so" \
        MALLOC_COUNT_FILE="$mc"
    for i in $(seq 1 600); do
        [ "$(admin_get /stats | jq '.totals.idle')" -ge "$want" ] && break
        [ "$i" -lt 600 ] && sleep 0.05
    done
    sleep 1 # let start-up's transients settle
    snap=$(mc_snapshot "$mc")
    record idle "$snap" --arg case "$name" --arg prewarm "$prewarm" \
        --argjson ceiling "$ceiling" \
        --argjson services "$(admin_get /stats | jq '.totals.idle')" \
        --argjson backends "$(pg_backends)" \
        --argjson rss_kb "$(rss_kb "$POOLD_PID")"
    poold_stop
}

phase_idle() {
    local conn
    log "idle service memory"
    idle_case empty "" 256
    idle_case all "all" 256
    idle_case all_ceiling4 "all" 4
    conn=$(LD_PRELOAD="$OUT/bin/malloc_count.so" "$OUT/bin/pgconn_size" 100 "$DB_URL")
    record pgconn "$conn"
}

# ---- the goals of issue 9: poold against pgbench -M prepared ---------------

wrk_json() { sed -n 's/^WRKJSON //p'; }

# Wait (up to 10 s) until poold has no service lent and no request waiting
# for one: the warm-up's last requests (wrk gives up on a request after 2 s,
# poold still commits it) are committed before the table is truncated.
poold_quiet() {
    local i
    for i in $(seq 1 200); do
        [ "$(admin_get /stats | jq '.totals.active + .totals.waiting')" = 0 ] &&
            return 0
        [ "$i" -lt 200 ] && sleep 0.05
    done
    log "  warning: poold still busy 10 s after the warm-up"
}

# pgbench_anchor CASE RUN SCRIPT CLIENTS ROWS_PER_TX: the anchor, pgbench
# -M prepared (each connection parses and plans the statement once) for
# CEIL_S seconds; tps, rows/s and CPU.
pgbench_anchor() {
    local name=$1 run=$2 script=$3 clients=$4 per=$5 out tps pg0 pg1 cli
    local jobs=2
    [ "$clients" -lt 2 ] && jobs=1
    truncate_messages
    pg0=$(pg_cpu_ticks)
    measured "$PG_BIN/pgbench" -n -M prepared -j "$jobs" -c "$clients" \
        -T "$CEIL_S" -f "$BENCH_DIR/$script" "$DB_URL" || true
    out=$(cat "$OUT/measured.out" "$OUT/measured.err")
    pg_settle
    pg1=$(pg_cpu_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    cli=$(children_cpu_s "$OUT/times.txt")
    if [ -z "$tps" ]; then # no transaction finished (e.g. connecting took the whole run)
        printf '%s\n' "$out" >"$OUT/logs/pgbench-$name-$run.log"
        record anchor "{}" --arg case "$name" --argjson run "$run" \
            --arg error "pgbench finished no transaction: $OUT/logs/pgbench-$name-$run.log"
        log "  pgbench -c $clients $script run $run: no transaction finished"
        return 0
    fi
    record anchor "{}" --arg case "$name" --argjson run "$run" \
        --argjson clients "$clients" --argjson rows_per_tx "$per" \
        --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson tps "$tps" --argjson rows_per_s "$(jq -n "$tps * $per")" \
        --argjson requests "$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")" \
        --argjson latency_avg_ms "$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
        --argjson failed "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")" \
        --argjson cpu "$(jq -n --argjson c "$cli" --argjson g $((pg1 - pg0)) \
            --argjson hz "$(getconf CLK_TCK)" '{client_s: $c, postgres_s: ($g / $hz)}')"
    log "  pgbench -M prepared -c $clients $script run $run: $tps tps ($(jq -n "$tps * $per | floor") rows/s)"
}

# batch_endpoint: the HTTP status of a one-message POST /process/batch
# (200 once the endpoint exists; 404 before).
batch_endpoint() {
    curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"org_id":"org_000","messages":[{"id":"msg_probe","payload":"00"}]}' \
        "http://127.0.0.1:$PORT/process/batch"
}

# rows_settle: wait (up to 10 s) until the row count stops moving — for a
# server without poold's /stats: requests wrk gave up on at the end of the
# warm-up commit (or not) before the table is truncated.
rows_settle() {
    local i prev=-1 now same=0
    for i in $(seq 1 100); do
        now=$(count_rows)
        if [ "$now" = "$prev" ]; then
            same=$((same + 1))
            [ "$same" -ge 3 ] && return 0
        else
            same=0
        fi
        prev=$now
        [ "$i" -lt 100 ] && sleep 0.1
    done
    log "  warning: rows still changing 10 s after the warm-up"
}

# server_load WHO CASE RUN SCRIPT ORGS CONNS PER_REQUEST [VAR=VALUE ...]:
# WHO (poold or goref) started fresh with the given settings, a 2 s wrk
# warm-up, the table truncated once nothing is in flight, then wrk (2
# threads, CONNS connections, SCRIPT) for CEIL_S seconds. Records
# messages/s, CPU from /proc over the measured run — the load generator
# (wrk), the server process (every thread, user and kernel) and every
# PostgreSQL process — and the rows check.
server_load() {
    local who=$1 name=$2 run=$3 script=$4 orgs=$5 conns=$6 per=$7 out cli
    local pg0 pg1 u0 s0 u1 s1 hz code ok errs lost pid port stats='{}'
    shift 7
    hz=$(getconf CLK_TCK)
    MSG_SUPER_URL=$SUPER_URL
    [ "$who" = goref ] && MSG_SUPER_URL=$GOREF_SUPER_URL
    truncate_messages
    if [ "$who" = goref ]; then
        goref_start "$name-$run" "$@"
        pid=$GOREF_PID port=$GOREF_PORT
    else
        poold_start "$name-$run" "$@"
        pid=$POOLD_PID port=$PORT
    fi
    if [ "$who" = poold ] && [ "$script" = batch.lua ] &&
        code=$(batch_endpoint) && [ "$code" != 200 ]; then
        poold_stop
        record poold "{}" --arg case "$name" --argjson run "$run" \
            --arg missing "n/a: endpoint missing (POST /process/batch answered $code)"
        log "  poold $name run $run: n/a, POST /process/batch answered $code"
        return 0
    fi
    BENCH_TAG="w${run}${who:0:1}${name}_" BENCH_ORGS=$orgs BENCH_BATCH=$per \
        wrk -t2 -c"$conns" -d2s -s "$BENCH_DIR/$script" \
        "http://127.0.0.1:$port" >/dev/null
    if [ "$who" = poold ]; then poold_quiet; else rows_settle; fi
    truncate_messages
    pg0=$(pg_cpu_ticks)
    read -r u0 s0 < <(proc_cpu_split "$pid")
    BENCH_TAG="c${run}${who:0:1}${name}_" BENCH_ORGS=$orgs BENCH_BATCH=$per \
        measured wrk -t2 -c"$conns" -d"${CEIL_S}s" --timeout 10s \
        -s "$BENCH_DIR/$script" "http://127.0.0.1:$port" || true
    out=$(wrk_json <"$OUT/measured.out")
    read -r u1 s1 < <(proc_cpu_split "$pid")
    pg1=$(pg_cpu_ticks)
    cli=$(children_cpu_s "$OUT/times.txt")
    if [ "$who" = poold ]; then
        stats=$(admin_get /stats | jq -c '{services_built: .totals.created,
            evicted: .totals.destroyed_by.evicted, conn_timeouts: .connections.total_timeouts}')
        poold_quiet
    else
        rows_settle
    fi
    ok=$(jq .ok <<<"$out")
    errs=$(jq '.message_errors // 0' <<<"$out")
    # Requests wrk gave up on (timeout, read or write error) may still commit.
    lost=$(jq '.errors | .timeout + .read + .write' <<<"$out")
    record "$who" "$out" --arg case "$name" --argjson run "$run" \
        --argjson orgs "$orgs" --argjson connections "$conns" \
        --argjson per_request "$per" --argjson stats "$stats" \
        --arg settings "$*" --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson messages_per_s "$(jq -n "($ok * $per - $errs) / $(jq .duration_s <<<"$out")")" \
        --argjson rows "$(rows_check $((ok * per - errs)) $(((conns + lost) * per)))" \
        --argjson cpu "$(jq -n --argjson c "$cli" --argjson u $((u1 - u0)) \
            --argjson s $((s1 - s0)) --argjson g $((pg1 - pg0)) --argjson hz "$hz" \
            '{client_s: $c, server_user_s: ($u / $hz), server_sys_s: ($s / $hz),
              server_s: (($u + $s) / $hz), postgres_s: ($g / $hz)}')"
    if [ "$who" = goref ]; then goref_stop; else poold_stop; fi
    log "  $who $name run $run: $(jq -r '"\(.rps) req/s, non-200 \(.non200)"' <<<"$out"), rows $(count_rows), load $(cut -d' ' -f1 /proc/loadavg)"
    MSG_SUPER_URL=$SUPER_URL
}

# The servers' settings per case (goref's README, "How to compare"): 1 org,
# 8 connections, a pool of 8 for both; 10 orgs, 64 connections, poold's
# defaults (POOLD_POOL_SIZE=4, POOLD_DB_MAX_CONNS=32) against pgxpool 32.
# shellcheck disable=SC2034 # read through namerefs (saturation)
read -r -a ORG1_POOLD <<<"${BENCH_ORG1_POOLD:-POOLD_DB_MAX_CONNS=8 POOLD_POOL_SIZE=8}"
# shellcheck disable=SC2034
read -r -a ORG1_GOREF <<<"${BENCH_ORG1_GOREF:-GOREF_POOL_SIZE=8}"
# shellcheck disable=SC2034
read -r -a ORGS64_POOLD <<<"${BENCH_ORGS64_POOLD:-POOLD_DB_MAX_CONNS=32 POOLD_POOL_SIZE=4}"
# shellcheck disable=SC2034
read -r -a ORGS64_GOREF <<<"${BENCH_ORGS64_GOREF:-GOREF_POOL_SIZE=32}"

# saturation CASE RUN ORGS CONNS: poold and goref (when built and wanted)
# with the same wrk script, in alternating order from run to run.
saturation() {
    local name=$1 run=$2 orgs=$3 conns=$4 who
    local -a order=(poold)
    local -n penv=$5 genv=$6
    if [ "$HAVE_GOREF" = 1 ]; then
        if [ $((run % 2)) = 1 ]; then order=(poold goref); else order=(goref poold); fi
    fi
    for who in "${order[@]}"; do
        if [ "$who" = poold ]; then
            server_load poold "$name" "$run" post.lua "$orgs" "$conns" 1 "${penv[@]}"
        else
            server_load goref "$name" "$run" post.lua "$orgs" "$conns" 1 "${genv[@]}"
        fi
    done
}

# 1 org, 8 connections: poold req/s / pgbench's single-row tps, 8 clients,
# and poold / goref.
phase_org1() {
    local run
    log "1 org, 8 connections, $CEIL_S s each, $CEIL_RUNS runs"
    for run in $(seq 1 "$CEIL_RUNS"); do
        pgbench_anchor c8 "$run" pgbench_insert1.sql 8 1
        saturation org1 "$run" 1 8 ORG1_POOLD ORG1_GOREF
    done
}

# 10 orgs, 64 connections: committed messages/s / pgbench's single-row
# tps at 64 clients, and poold / goref. Requests queue per org (4 services
# each), which is where group commit shows.
phase_orgs64() {
    local run
    log "10 orgs, 64 connections, $CEIL_S s each, $CEIL_RUNS runs"
    for run in $(seq 1 "$CEIL_RUNS"); do
        pgbench_anchor c64 "$run" pgbench_insert1.sql 64 1
        saturation orgs64 "$run" 10 64 ORGS64_POOLD ORGS64_GOREF
    done
}

# POST /process/batch of 100 messages, 8 connections: rows/s / pgbench's
# 100-row INSERT rows/s, 8 clients.
phase_batch() {
    local run
    log "batches of 100, 8 connections, $CEIL_S s each, $CEIL_RUNS runs"
    for run in $(seq 1 "$CEIL_RUNS"); do
        pgbench_anchor b100 "$run" pgbench_insert100.sql 8 100
        server_load poold batch100 "$run" batch.lua 10 8 100 POOLD_DB_MAX_CONNS=8 \
            POOLD_POOL_SIZE=8 POOLD_MAX_BATCH=1000
        # Nothing to compare once the endpoint is known to be missing.
        if jq -e 'select(.kind == "poold" and .case == "batch100" and .missing)' \
            "$OUT/raw.jsonl" >/dev/null; then
            break
        fi
    done
}

# rate_poold NAME ORGS RATE: loadgen at a fixed rate against a warm poold;
# CPU per request at that rate too.
rate_poold() {
    local name=$1 orgs=$2 rate=$3 out u0 s0 u1 s1 hz pg0 pg1 cli
    hz=$(getconf CLK_TCK)
    truncate_messages
    poold_start "rate-$name" "${ORG1_POOLD[@]}"
    BENCH_TAG="wr${name}_" BENCH_ORGS=$orgs wrk -t2 -c8 -d2s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" >/dev/null
    poold_quiet
    truncate_messages
    pg0=$(pg_cpu_ticks)
    read -r u0 s0 < <(proc_cpu_split "$POOLD_PID")
    measured "$OUT/bin/loadgen" rate -p "$PORT" -r "$rate" -w 8 -d "$CEIL_S" \
        -o "$orgs" -t "fr${name}_" || true
    out=$(cat "$OUT/measured.out")
    read -r u1 s1 < <(proc_cpu_split "$POOLD_PID")
    pg1=$(pg_cpu_ticks)
    cli=$(children_cpu_s "$OUT/times.txt")
    record rate "$out" --arg who poold --arg case "$name" \
        --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson rows "$(rows_check "$(jq .ok <<<"$out")" 0)" \
        --argjson cpu "$(jq -n --argjson u $((u1 - u0)) --argjson s $((s1 - s0)) \
            --argjson g $((pg1 - pg0)) --argjson c "$cli" --argjson hz "$hz" \
            '{client_s: $c, server_user_s: ($u / $hz), server_sys_s: ($s / $hz),
              server_s: (($u + $s) / $hz), postgres_s: ($g / $hz)}')"
    poold_stop
    log "  poold at $rate req/s, $name: $(jq -r '"p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, non-200 \(.non200)"' <<<"$out")"
}

rate_pgbench() {
    local rate=$1 logdir out pg0 pg1 hz
    hz=$(getconf CLK_TCK)
    logdir=$(mktemp -d)
    truncate_messages
    pg0=$(pg_cpu_ticks)
    measured "$PG_BIN/pgbench" -n -M prepared -j 2 -c 8 -R "$rate" \
        -T "$CEIL_S" -l --log-prefix="$logdir/pgb" \
        -f "$BENCH_DIR/pgbench_insert1.sql" "$DB_URL" || true
    cat "$OUT/measured.out" "$OUT/measured.err" >"$logdir/summary.txt"
    cp "$OUT/times.txt" "$logdir/times.txt"
    pg_settle
    pg1=$(pg_cpu_ticks)
    # Per-transaction log: client tx latency_us script epoch us lag_us;
    # with -R, latency counts from the scheduled start (lag included).
    cat "$logdir"/pgb.* | awk '{ print $3 }' | sort -n >"$logdir/lat"
    cat "$logdir"/pgb.* | awk '{ print $3 - $7 }' | sort -n >"$logdir/svc"
    out=$(paste "$logdir/lat" "$logdir/svc" | awk '
        function k(n, p,   i) { i = int(n * p); if (i < n * p) i++; return i }
        { l[NR] = $1; s[NR] = $2 } END {
            n = NR; a = k(n, .5); b = k(n, .99)
            printf "{\"n\":%d,\"p50_ms\":%.4f,\"p99_ms\":%.4f,", n, l[a] / 1000, l[b] / 1000
            printf "\"service_p50_ms\":%.4f,\"service_p99_ms\":%.4f}\n", s[a] / 1000, s[b] / 1000 }')
    record rate "$out" --arg who pgbench --argjson target_rps "$rate" \
        --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson cpu "$(jq -n --argjson c "$(children_cpu_s "$logdir/times.txt")" \
            --argjson g $((pg1 - pg0)) --argjson hz "$hz" \
            '{client_s: $c, postgres_s: ($g / $hz)}')"
    log "  pgbench -M prepared -R $rate: $(jq -r '"p50 \(.p50_ms) ms, p99 \(.p99_ms) ms"' <<<"$out")"
    rm -rf "$logdir"
}

# Fixed rate at half of poold's 1-org maximum (phase org1; BENCH_RATE
# without it): poold's p99 / pgbench's p99 at the same rate, in
# BENCH_RATE_RUNS (3) alternating pairs; the report takes each side's
# median p99 (one stalled WAL flush in a run moves a p99 tenfold).
phase_rate() {
    local rate runs=$RATE_RUNS i
    rate=$(jq -s '[.[] | select(.kind == "poold" and .case == "org1") | .rps]
        | sort | if length == 0 then null else .[length / 2 | floor] / 2 | floor end' \
        "$OUT/raw.jsonl")
    [ "$rate" = null ] && rate=${BENCH_RATE:-}
    [ -n "$rate" ] || die "phase rate needs phase org1 (or BENCH_RATE)"
    log "fixed rate $rate req/s (half of poold's 1-org maximum), $runs × $CEIL_S s"
    for ((i = 1; i <= runs; i++)); do
        rate_poold org1 1 "$rate"
        rate_pgbench "$rate"
    done
}

# ---- pool exhausted: 503 pool_exhausted within the acquire timeout --------

# A pool of 1, POOLD_PROCESS_COST_MS=300 and BENCH_EXHAUST_N (40) requests
# sent at once (one curl each, own message ids, org_000): DESIGN.md says a
# request without a service within POOLD_ACQUIRE_TIMEOUT_MS answers 503
# pool_exhausted with Retry-After, counted in total_timeouts. Records every
# answer's status, error code, Retry-After and seconds; the goal is that
# every 503 is pool_exhausted and answered within the acquire timeout +
# 0.5 s, and every 200 has its row.
phase_exhaust() {
    local acq=${BENCH_EXHAUST_ACQUIRE_MS:-1500} n=${BENCH_EXHAUST_N:-40}
    local dir i t0 t1 out
    local -a pids=()
    log "pool exhausted: pool 1, 300 ms per message, $n at once, acquire timeout $acq ms"
    dir=$(mktemp -d)
    truncate_messages
    poold_start exhaust POOLD_POOL_SIZE=1 POOLD_PROCESS_COST_MS=300 \
        POOLD_ACQUIRE_TIMEOUT_MS="$acq" POOLD_DB_MAX_CONNS=8
    # One request first: the org's service is built before the measurement.
    curl -fsS -o /dev/null -H 'Content-Type: application/json' \
        -d '{"id":"msg_exwarm","org_id":"org_000","payload":"00"}' \
        "http://127.0.0.1:$PORT/process" || die "exhaust: warm-up request failed"
    poold_quiet
    truncate_messages
    t0=$(admin_get /stats | jq '.connections.total_timeouts // 0')
    for i in $(seq 1 "$n"); do
        curl -s --max-time 60 -o "$dir/body.$i" -D "$dir/hdr.$i" \
            -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
            -d "{\"id\":\"msg_ex${RANDOM}_$i\",\"org_id\":\"org_000\",\"payload\":\"$i\"}" \
            "http://127.0.0.1:$PORT/process" >"$dir/w.$i" 2>/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    poold_quiet
    t1=$(admin_get /stats | jq '.connections.total_timeouts // 0')
    out=$(for i in $(seq 1 "$n"); do
        code=0 secs=0
        read -r code secs <"$dir/w.$i" || true
        jq -nc --argjson status "${code:-0}" --argjson s "${secs:-0}" \
            --arg err "$(jq -r '.error.code // empty' "$dir/body.$i" 2>/dev/null || true)" \
            --arg ra "$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$dir/hdr.$i")" \
            '{status: $status, seconds: $s, error: $err, retry_after: $ra}'
    done | jq -sc --argjson acq "$acq" '{answers: ., acquire_timeout_ms: $acq,
        ok: map(select(.status == 200)) | length,
        s503: map(select(.status == 503)) | length,
        pool_exhausted: map(select(.status == 503 and .error == "pool_exhausted")) | length,
        in_time: map(select(.status == 503 and .error == "pool_exhausted"
                            and .seconds <= $acq / 1000 + 0.5)) | length,
        retry_after: map(select(.status == 503 and .retry_after != "")) | length,
        other: map(select(.status != 200 and .status != 503)) | length,
        max_503_s: (map(select(.status == 503) | .seconds) | max),
        max_s: (map(.seconds) | max),
        errors: (map(select(.status != 200) | "\(.status) \(.error)") | group_by(.)
                 | map({key: .[0], value: length}) | from_entries)}')
    record exhaust "$out" --argjson requests "$n" \
        --argjson timeouts_counted $((t1 - t0)) \
        --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson rows "$(rows_check "$(jq .ok <<<"$out")" 0)"
    poold_stop
    rm -rf "$dir"
    log "  $(jq -r '"200: \(.ok), 503: \(.s503) (pool_exhausted \(.pool_exhausted), in time \(.in_time)), slowest 503 \(.max_503_s) s, answers \(.errors)"' <<<"$out")"
}

# ---- pool_bench ------------------------------------------------------------

phase_poolbench() {
    local line mc="$OUT/mc-poolbench.json"
    log "pool_bench"
    while read -r line; do
        record poolbench "{}" \
            --argjson threads "$(sed -n 's/.*threads=\([0-9]*\).*/\1/p' <<<"$line")" \
            --argjson ns_per_op "$(sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' <<<"$line")" \
            --arg line "$line"
    done < <("$BUILD/pool_bench" --seconds 2)
    # Allocations under the shim, for a short and a long run: whatever the
    # pool allocates per pair shows up as the difference.
    local secs allocs=()
    for secs in 0.5 1.5; do
        rm -f "$mc"
        MALLOC_COUNT_FILE="$mc" LD_PRELOAD="$OUT/bin/malloc_count.so" \
            "$BUILD/pool_bench" --seconds "$secs" >"$OUT/poolbench-shim.txt"
        allocs+=("$(jq .allocs "$mc")")
    done
    record poolbench_allocs "{}" --argjson short_s 0.5 --argjson long_s 1.5 \
        --argjson allocs_short "${allocs[0]}" --argjson allocs_long "${allocs[1]}"
}

# ---- main ------------------------------------------------------------------

main() {
    local t0=$SECONDS
    mkdir -p "$OUT"
    rm -f "$OUT/raw.jsonl"
    bench_build
    if want goref && { want org1 || want orgs64; }; then
        goref_build && HAVE_GOREF=1
    fi
    pg_start
    pg_scram_role
    [ "${HAVE_GOREF:-0}" = 1 ] && goref_db_make
    record machine "$(machine_json)"
    want org1 && phase_org1
    want orgs64 && phase_orgs64
    want batch && phase_batch
    want rate && phase_rate
    want exhaust && phase_exhaust
    want seed && phase_seed
    want cpu && phase_cpu
    want alloc && phase_alloc
    want idle && phase_idle
    want poolbench && phase_poolbench
    record machine_end "$(jq -n --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        '{loadavg_at_end: $load}')"
    jq -s --argjson seconds "$((SECONDS - t0))" --argjson ceil_s "$CEIL_S" \
        -f "$BENCH_DIR/summarize.jq" "$OUT/raw.jsonl" >"$OUT/results.json"
    jq -r -f "$BENCH_DIR/report.jq" "$OUT/results.json" | tee "$OUT/results.md"
    jq -r '.plot[] | "\(.name)\t\(.none)\t\(.pooled)"' "$OUT/results.json" \
        >"$OUT/throughput.dat"
    if [ -s "$OUT/throughput.dat" ]; then
        gnuplot -e "datafile='$OUT/throughput.dat'; outfile='$OUT/throughput.png'" \
            "$BENCH_DIR/plot.gp"
    fi
    plot_anchors
    [ "$WRITE_DOCS" = 1 ] && write_docs
    log "done in $((SECONDS - t0)) s: $OUT/results.md, $OUT/results.json, $OUT/throughput.png"
}

# plot_anchors: bench/out/anchors.svg (bench/anchors.gp) from results.json:
# req/s and CPU µs per request of poold, goref and pgbench, per case.
plot_anchors() {
    rm -f "$OUT/anchors.svg"
    jq -e '.anchors_plot | length > 0' "$OUT/results.json" >/dev/null || return 0
    jq -r '.anchors_plot[] | [.label, .poold_rps, (.goref_rps // "-"), .pgbench_rps]
        | map(tostring) | join("\t")' "$OUT/results.json" >"$OUT/anchors-rps.dat"
    jq -r '.anchors_plot | to_entries[] | .key as $i | .value
        | (if $i > 0 then ["", "-", "-", "-"] else empty end),
          ["poold, " + .label, .poold_cpu.server_s, .poold_cpu.postgres_s, .poold_cpu.client_s],
          (if .goref_cpu then ["goref, " + .label, .goref_cpu.server_s,
                               .goref_cpu.postgres_s, .goref_cpu.client_s] else empty end),
          ["pgbench, " + .label, 0, .pgbench_cpu.postgres_s, .pgbench_cpu.client_s]
        | map(tostring) | join("\t")' "$OUT/results.json" >"$OUT/anchors-cpu.dat"
    gnuplot -e "rpsfile='$OUT/anchors-rps.dat'; cpufile='$OUT/anchors-cpu.dat'; outfile='$OUT/anchors.svg'" \
        "$BENCH_DIR/anchors.gp" 2>"$OUT/logs/gnuplot.log" ||
        { cat "$OUT/logs/gnuplot.log" >&2; log "warning: the plot failed"; }
}

# Replace the lines between the markers of docs/benchmarks.md with this
# run's tables, and docs/benchmarks-anchors.svg with its plot.
write_docs() {
    local doc="$ROOT/docs/benchmarks.md"
    if ! grep -qx '<!-- bench:begin -->' "$doc" ||
        ! grep -qx '<!-- bench:end -->' "$doc"; then
        die "$doc has no <!-- bench:begin --> / <!-- bench:end --> markers"
    fi
    awk -v f="$OUT/results.md" '
        $0 == "<!-- bench:begin -->" { print; while ((getline l < f) > 0) print l
                                      skip = 1; next }
        $0 == "<!-- bench:end -->" { skip = 0 }
        !skip' "$doc" >"$doc.new"
    mv "$doc.new" "$doc"
    if [ -s "$OUT/anchors.svg" ]; then
        cp "$OUT/anchors.svg" "$ROOT/docs/benchmarks-anchors.svg"
    fi
    log "tables written into $doc"
}

main
