#!/usr/bin/env bash
# run.sh — poold's benchmark suite: the seed's workloads pooled vs none, heap
# allocations and memory, the idle service's bytes, the ceiling against
# pgbench, and pool_bench. One command from the repository's root:
#
#   bench/run.sh
#
# It builds poold (cmake, build-bench/) and the bench's C programs, starts a
# private PostgreSQL (scripts/pg.sh, /tmp/poold-bench-pg, port 26432), starts
# poold as each measurement needs (port 28080), prints every table as
# markdown on stdout (also bench/out/results.md) and writes the raw figures
# to bench/out/results.json (every measurement: bench/out/raw.jsonl; the
# plot: bench/out/throughput.png). Takes about 5 minutes on 2 cores.
#
# Settings (environment): BENCH_RUNS (5; medians of these), BENCH_CEIL_S
# (10; seconds per ceiling run), BENCH_CEIL_RUNS (3), BENCH_SINGLE_N (500 pooled requests; none
# gets BENCH_SINGLE_N_NONE, 200), BENCH_PG_DIR, BENCH_PG_PORT, BENCH_PORT,
# BENCH_OUT, BENCH_KEEP_PG=1 (leave PostgreSQL running), BENCH_ONLY (a
# space-separated subset of: seed cpu alloc idle ceiling poolbench).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-5}
CEIL_S=${BENCH_CEIL_S:-10}
CEIL_RUNS=${BENCH_CEIL_RUNS:-3}
SINGLE_N=${BENCH_SINGLE_N:-500}
SINGLE_N_NONE=${BENCH_SINGLE_N_NONE:-200}
ONLY=${BENCH_ONLY:-seed cpu alloc idle ceiling poolbench}
SEED_COSTS=(POOLD_BUILD_COST_MS=10 POOLD_PROCESS_COST_MS=0.5)
# The seed's per-org pools have no global cap; 10 orgs x 8 workers at most
# need 80 services, so 100 connections keep poold's cap out of the way.
BATCH_CONNS=100

case "${1:-}" in
-h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) die "unknown argument $1 (see --help)" ;;
esac

want() { [[ " $ONLY " == *" $1 "* ]]; }

cleanup() {
    poold_stop
    if [ "${BENCH_KEEP_PG:-0}" != 1 ]; then
        "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    fi
}
trap cleanup EXIT

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
    [ "$cost" = seed ] && extra=("${SEED_COSTS[@]}")
    truncate_messages
    poold_start "seed-$wl-$cost-$mode" POOLD_POOL_MODE="$mode" \
        POOLD_POOL_SIZE="$slots" POOLD_DB_MAX_CONNS=$BATCH_CONNS "${extra[@]}"
    local seed=$((run * 10))
    for phase in cold warm; do
        seed=$((seed + 1))
        # Same seed in both modes: the same messages; a tag per run and
        # phase: fresh ids.
        out=$("$OUT/bin/loadgen" batch -p "$PORT" -n "$n" -w "$workers" -o 10 \
            -s "$seed" -t "r${run}${phase:0:1}_") || true
        created=$(admin_get /stats | jq '.totals.created')
        record seed "$out" --arg workload "$wl" --arg cost "$cost" \
            --arg mode "$mode" --arg phase "$phase" --argjson run "$run" \
            --argjson services_built "$created"
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
    out=$("$OUT/bin/loadgen" single -p "$PORT" -n "$n" --warmup 20 -o 1 \
        -s "$run" -t "s${run}_") || true
    poold_stop
    record seed "$out" --arg workload single --arg cost "$cost" \
        --arg mode "$mode" --arg phase warm --argjson run "$run"
    log "  single $cost $mode run $run: $(jq -r '"mean \(.latency.mean_ms) ms, non-200 \(.non200)"' <<<"$out")"
}

phase_seed() {
    local run cost mode
    local -a modes
    for run in $(seq 1 "$RUNS"); do
        log "seed workloads, run $run of $RUNS"
        # Alternate the order so drift (other load, WAL growth) hits both.
        if [ $((run % 2)) = 1 ]; then modes=(pooled none); else modes=(none pooled); fi
        for cost in real seed; do
            for mode in "${modes[@]}"; do
                seed_batch "$run" batch200 "$cost" "$mode" 200 4 4
                seed_batch "$run" batch1000 "$cost" "$mode" 1000 8 20
                seed_single "$run" "$cost" "$mode"
            done
        done
        for mode in "${modes[@]}"; do
            seed_single "$run" scram "$mode"
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

# ---- the ceiling: poold against PostgreSQL's own rate ----------------------

wrk_json() { sed -n 's/^WRKJSON //p'; }

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
# Children's CPU seconds (user + sys) from a file `times` wrote: `times`
# must run in the shell that waited for them, without a fork (no pipe).
children_cpu_s() {
    sed -n 2p "$1" | awk '{ split($1, u, "m"); split($2, s, "m");
        printf "%.3f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}

# ceiling_poold RUN NAME ORGS: wrk against a warm poold; CPU per request
# of wrk, poold and PostgreSQL.
ceiling_poold() {
    local run=$1 name=$2 orgs=$3 out stats pg0 pg1 p0 p1 cli
    truncate_messages
    poold_start "ceiling-$name" POOLD_DB_MAX_CONNS=8 POOLD_POOL_SIZE=8
    # Warm-up (builds the services), then the measured run.
    BENCH_TAG="w${run}${name}_" BENCH_ORGS=$orgs wrk -t2 -c8 -d2s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" >/dev/null
    pg0=$(pg_cpu_ticks)
    p0=$(proc_cpu_ticks "$POOLD_PID")
    out=$(BENCH_TAG="c${run}${name}_" BENCH_ORGS=$orgs wrk -t2 -c8 \
        -d"${CEIL_S}s" -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" |
        wrk_json; times >"$OUT/times.txt")
    p1=$(proc_cpu_ticks "$POOLD_PID")
    pg1=$(pg_cpu_ticks)
    cli=$(children_cpu_s "$OUT/times.txt")
    stats=$(admin_get /stats | jq -c '{services_built: .totals.created,
        evicted: .totals.destroyed_by.evicted, conn_timeouts: .connections.total_timeouts}')
    poold_stop
    record ceiling "$out" --arg who "poold" --arg case "$name" \
        --argjson run "$run" --argjson orgs "$orgs" --argjson stats "$stats" \
        --argjson cpu "$(jq -n --argjson c "$cli" --argjson p $((p1 - p0)) \
            --argjson g $((pg1 - pg0)) --argjson hz "$(getconf CLK_TCK)" \
            '{client_s: $c, poold_s: ($p / $hz), postgres_s: ($g / $hz)}')"
    log "  poold $name run $run: $(jq -r '"\(.rps) req/s, non-200 \(.non200)"' <<<"$out")"
}

pgbench_run() {
    # pgbench_run EXTRA_ARGS...: prints its summary
    "$PG_BIN/pgbench" -n -M extended -j 2 -f "$BENCH_DIR/pgbench_insert.sql" \
        "$@" "$DB_URL" 2>&1
}

# ceiling_pgbench RUN CLIENTS
ceiling_pgbench() {
    local run=$1 clients=$2 out tps pg0 pg1 cli
    truncate_messages
    pg0=$(pg_cpu_ticks)
    out=$(pgbench_run -c "$clients" -T "$CEIL_S"; times >"$OUT/times.txt")
    pg1=$(pg_cpu_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    cli=$(children_cpu_s "$OUT/times.txt")
    record ceiling "{}" --arg who pgbench --arg case "c$clients" \
        --argjson run "$run" --argjson rps "$tps" \
        --argjson requests "$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")" \
        --argjson latency_avg_ms "$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
        --argjson failed "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")" \
        --argjson cpu "$(jq -n --argjson c "$cli" --argjson g $((pg1 - pg0)) \
            --argjson hz "$(getconf CLK_TCK)" '{client_s: $c, postgres_s: ($g / $hz)}')"
    log "  pgbench -c $clients run $run: $tps tps"
}

# rate_poold NAME ORGS RATE: loadgen at a fixed rate against a warm poold.
rate_poold() {
    local name=$1 orgs=$2 rate=$3 out
    truncate_messages
    poold_start "rate-$name" POOLD_DB_MAX_CONNS=8 POOLD_POOL_SIZE=8
    BENCH_TAG="wr${name}_" BENCH_ORGS=$orgs wrk -t2 -c8 -d2s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" >/dev/null
    out=$("$OUT/bin/loadgen" rate -p "$PORT" -r "$rate" -w 8 -d "$CEIL_S" \
        -o "$orgs" -t "fr${name}_") || true
    poold_stop
    record rate "$out" --arg who poold --arg case "$name"
    log "  poold at $rate req/s, $name: $(jq -r '"p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, non-200 \(.non200)"' <<<"$out")"
}

rate_pgbench() {
    local rate=$1 logdir out
    logdir=$(mktemp -d)
    truncate_messages
    (cd "$logdir" && pgbench_run -c 8 -R "$rate" -T "$CEIL_S" -l \
        --log-prefix=pgb >"$logdir/summary.txt")
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
    record rate "$out" --arg who pgbench --argjson target_rps "$rate"
    rm -rf "$logdir"
}

phase_ceiling() {
    local run rate
    log "ceiling: pgbench and poold at 8 connections, $CEIL_S s each, $CEIL_RUNS runs"
    ceiling_pgbench 0 1 # one client: PostgreSQL's floor for one request
    for run in $(seq 1 "$CEIL_RUNS"); do
        ceiling_pgbench "$run" 8
        ceiling_poold "$run" orgs10 10
        ceiling_poold "$run" org1 1
    done
    # Latency at half of poold's own maximum, and PostgreSQL's at that rate.
    rate=$(jq -s '[.[] | select(.kind == "ceiling" and .who == "poold" and
        .case == "org1") | .rps] | sort | .[length / 2 | floor] / 2 | floor' \
        "$OUT/raw.jsonl")
    log "  fixed rate $rate req/s (half of poold's 1-org maximum)"
    rate_poold org1 1 "$rate"
    rate_poold orgs10 10 "$rate"
    rate_pgbench "$rate"
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
    pg_start
    pg_scram_role
    record machine "$(machine_json)"
    want seed && phase_seed
    want cpu && phase_cpu
    want alloc && phase_alloc
    want idle && phase_idle
    want ceiling && phase_ceiling
    want poolbench && phase_poolbench
    jq -s --argjson seconds "$((SECONDS - t0))" \
        -f "$BENCH_DIR/summarize.jq" "$OUT/raw.jsonl" >"$OUT/results.json"
    jq -r -f "$BENCH_DIR/report.jq" "$OUT/results.json" | tee "$OUT/results.md"
    jq -r '.plot[] | "\(.name)\t\(.none)\t\(.pooled)"' "$OUT/results.json" \
        >"$OUT/throughput.dat"
    if [ -s "$OUT/throughput.dat" ]; then
        gnuplot -e "datafile='$OUT/throughput.dat'; outfile='$OUT/throughput.png'" \
            "$BENCH_DIR/plot.gp"
    fi
    log "done in $((SECONDS - t0)) s: $OUT/results.md, $OUT/results.json, $OUT/throughput.png"
}

main
