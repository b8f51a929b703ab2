#!/usr/bin/env bash
# pipeline.sh — the commit pipeline before/after (docs/commit-pipeline.md):
# two poold binaries, alternating runs on one PostgreSQL, with pgbench -M
# prepared single-row INSERT as the anchor in the same run.
#
#   bench/pipeline.sh OLD_POOLD NEW_POOLD [RUNS]
#
# Cases: org1 (1 org, 8 connections, pool 8, 8 connections at most) and
# orgs64 (10 orgs, 64 connections, pool 4 each, 40 connections at most),
# as bench/run.sh runs them. Per run: req/s, mean group (group_messages /
# group_commits from /stats, counted over the measured run only), the mean
# commit latency (commit_us: group_commit_ns_sum / group_commits) and the
# share sent while another was on the wire (overlapped; both null for a
# binary without those totals), poold CPU
# µs per request and PostgreSQL CPU µs per message (utime + stime from
# /proc before and after), load average. Settings: BENCH_PG_PORT,
# BENCH_PORT, BENCH_PG_DIR, BENCH_CEIL_S (seconds per measurement, 8),
# BENCH_OUT (where pipeline.jsonl goes), BENCH_OLD_SETTINGS (VAR=VALUE
# words added to the old binary's settings, e.g. POOLD_POOL_SIZE=1),
# BENCH_CASES ("org1 orgs64"), BENCH_ORGS64_POOLD (the orgs64 settings:
# "POOLD_DB_MAX_CONNS=40 POOLD_POOL_SIZE=4").
set -euo pipefail
. "$(dirname "$0")/lib.sh"

OLD=${1:?old poold binary}
NEW=${2:?new poold binary}
RUNS=${3:-3}
CEIL_S=${BENCH_CEIL_S:-8}
HZ=$(getconf CLK_TCK)

cleanup() {
    poold_stop
    "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
}
trap cleanup EXIT

# Statements, messages, what the statements took (ns) and how many were
# sent while another was on the wire: 0 for the last two from a binary
# without them.
groups() {
    admin_get /stats | jq -r '.totals | [.group_commits, .group_messages,
        .group_commit_ns_sum // 0, .group_commits_overlapped // 0] | @tsv'
}

anchor() { # CLIENTS
    local pg0 pg1 out tps
    truncate_messages
    pg0=$(pg_cpu_ticks)
    out=$("$PG_BIN/pgbench" -n -M prepared -j 2 -c "$1" -T "$CEIL_S" \
        -f "$BENCH_DIR/pgbench_insert1.sql" "$DB_URL" 2>&1)
    sleep 0.5 # pgbench's backends exit and are reaped into cutime
    pg1=$(pg_cpu_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    jq -nc --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson tps "$tps" \
        --argjson pg_us "$(jq -n "($pg1 - $pg0) / $HZ * 1e6 / ($tps * $CEIL_S)")" \
        --argjson c "$1" '{kind: "pgbench", clients: $c, tps: $tps,
        pg_us_per_row: $pg_us, load: $load}'
}

load() { # LABEL BIN ORGS CONNS VAR=VALUE...
    local label=$1 bin=$2 orgs=$3 conns=$4 out c0 m0 c1 m1 u0 u1 pg0 pg1 ok
    shift 4
    truncate_messages
    BENCH_POOLD=$bin poold_start "$label" "$@"
    BENCH_TAG="w$label$RANDOM" BENCH_ORGS=$orgs wrk -t2 -c"$conns" -d2s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" >/dev/null
    sleep 1 # the warm-up's stragglers (wrk closes mid-request)
    truncate_messages
    read -r c0 m0 n0 o0 < <(groups)
    pg0=$(pg_cpu_ticks)
    u0=$(proc_cpu_ticks "$POOLD_PID")
    out=$(BENCH_TAG="c$label$RANDOM" BENCH_ORGS=$orgs wrk -t2 -c"$conns" \
        -d"${CEIL_S}s" --timeout 10s -s "$BENCH_DIR/post.lua" \
        "http://127.0.0.1:$PORT" | sed -n 's/^WRKJSON //p')
    u1=$(proc_cpu_ticks "$POOLD_PID")
    pg1=$(pg_cpu_ticks)
    read -r c1 m1 n1 o1 < <(groups)
    ok=$(jq .ok <<<"$out")
    poold_stop
    jq -nc --arg name "$label" --argjson out "$out" --argjson ok "$ok" \
        --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --argjson rows "$(count_rows)" \
        --argjson group "$(jq -n "($m1 - $m0) / ([($c1 - $c0), 1] | max)")" \
        --argjson poold_us "$(jq -n "($u1 - $u0) / $HZ * 1e6 / ([$ok, 1] | max)")" \
        --argjson pg_us "$(jq -n "($pg1 - $pg0) / $HZ * 1e6 / ([($m1 - $m0), 1] | max)")" \
        --argjson commit_us "$(jq -n "if $n1 == $n0 then null else
            ($n1 - $n0) / 1e3 / ([($c1 - $c0), 1] | max) end")" \
        --argjson overlapped "$(jq -n "if $n1 == $n0 then null else
            ($o1 - $o0) / ([($c1 - $c0), 1] | max) end")" \
        '{kind: "poold", name: $name, rps: $out.rps, ok: $ok,
          non200: $out.non200, rows: $rows, mean_group: $group,
          commit_us: $commit_us, overlapped: $overlapped,
          poold_us_per_req: $poold_us, pg_us_per_msg: $pg_us, load: $load}'
}

mkdir -p "$OUT/logs"
pg_start
for run in $(seq 1 "$RUNS"); do
    for case in ${BENCH_CASES:-org1 orgs64}; do
        if [ "$case" = org1 ]; then
            anchor 8
            set -- 1 8 POOLD_DB_MAX_CONNS=8 POOLD_POOL_SIZE=8
        else
            anchor 64
            # shellcheck disable=SC2086 # words
            set -- 10 64 ${BENCH_ORGS64_POOLD:-POOLD_DB_MAX_CONNS=40 POOLD_POOL_SIZE=4}
        fi
        # Alternate which goes first.
        if [ $((run % 2)) = 1 ]; then order="old new"; else order="new old"; fi
        for which in $order; do
            if [ "$which" = new ]; then
                load "$case-$which-$run" "$NEW" "$@"
            else
                # shellcheck disable=SC2086 # words on purpose
                load "$case-$which-$run" "$OLD" "$@" ${BENCH_OLD_SETTINGS:-}
            fi | jq -c '. + {case: "'"$case"'"}'
        done
    done
done | tee -a "$OUT/pipeline.jsonl"
