#!/usr/bin/env bash
# profile.sh — where poold's own CPU per request goes, under a fixed load
# (wrk with bench/post.lua, keep-alive connections, warm pools), at each
# number of connections given: 8 (1 org, POOLD_POOL_SIZE=8,
# POOLD_DB_MAX_CONNS=8) and 64 (10 orgs, poold's defaults: the cases of
# bench/run.sh).
#
#   bench/profile.sh [SECONDS [CONNS ...]]   (default 10 s, 8 and 64)
#   BENCH_POOLD=/other/build/poold bench/profile.sh   (another binary, e.g.
#                                     main's, for a before/after)
#
# For each number of connections, on a fresh poold, one wrk run each for:
#   cpu     poold's CPU per request (user and kernel, /proc/<pid>/stat)
#   stat    perf stat of poold's threads per request: task-clock, context
#           switches, voluntary sleeps (sched:sched_switch with the thread
#           not runnable: each is one later wake-up), system calls, page faults
#   record  perf record -g: shares by library (kernel vs user), by symbol,
#           and kernel time by system call (inclusive)
#   strace  strace -c -f: system calls per request by name (strace slows
#           poold several times over: the counts matter, not the rate)
#   malloc  a second poold under bench/malloc_count.so: heap allocations
#           and bytes per request
# and prints a summary table (also bench/out/profile/summary.md, and
# summary.json; the raw reports under bench/out/profile/c<CONNS>/).
# Without perf it falls back to valgrind --tool=callgrind for the record
# step (far slower: a short run; BENCH_PROFILE_PERF=0 forces it). Uses the same PostgreSQL, ports and
# settings as run.sh (BENCH_PG_DIR, BENCH_PG_PORT, BENCH_PORT,
# BENCH_KEEP_PG=1); needs wrk, jq, strace and perf (linux-perf). A program
# that prints figures, never a test. Stops everything it started on exit.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${1:-10}
shift || true
CONNS_LIST=("$@")
[ ${#CONNS_LIST[@]} -gt 0 ] || CONNS_LIST=(8 64)
PROF="$OUT/profile"
HAVE_PERF=0

bench_traps

# load TAG SECONDS CONNS ORGS: wrk against poold, its WRKJSON in LOAD_OUT
# (through `measured`: a signal stops the script at once). Sets LOAD_OUT.
load() {
    BENCH_TAG=$1 BENCH_ORGS=$4 measured wrk -t2 -c"$3" -d"$2s" --timeout 10s \
        -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$PORT" || true
    LOAD_OUT=$(sed -n 's/^WRKJSON //p' "$OUT/measured.out")
}

# settings CONNS: the orgs and poold settings of run.sh's case
case_orgs() { if [ "$1" -le 8 ]; then echo 1; else echo 10; fi; }
case_env() {
    if [ "$1" -le 8 ]; then
        echo "POOLD_DB_MAX_CONNS=$1 POOLD_POOL_SIZE=$1"
    else
        echo "POOLD_DB_MAX_CONNS=32 POOLD_POOL_SIZE=4"
    fi
}

# perf_bg SUBCOMMAND ARGS...: start `perf SUBCOMMAND` in the background
# with its events disabled (-D -1), enable them through its control fifo
# and wait for its ack: perf has then attached to every thread of poold.
# Without this, threads poold creates while perf is still attaching (the
# load's connection threads) escape it. Sets PERF_PID.
perf_bg() {
    local sub=$1 ctl="$PROF/perf.ctl" ack="$PROF/perf.ack" cfd afd line=
    shift
    rm -f "$ctl" "$ack"
    mkfifo "$ctl" "$ack"
    exec {cfd}<>"$ctl" {afd}<>"$ack"
    perf "$sub" -D -1 --control "fifo:$ctl,$ack" "$@" &
    PERF_PID=$!
    echo enable >&"$cfd"
    read -r -t 20 line <&"$afd" || true
    exec {cfd}>&- {afd}>&-
    rm -f "$ctl" "$ack"
    [ "$line" = ack ] || log "  warning: perf $sub did not acknowledge (counts may miss threads)"
}

# profile_case CONNS: every measurement at CONNS connections; writes
# $dir/summary.json.
profile_case() {
    local conns=$1 orgs dir hz u0 s0 u1 s1 out n perf_pid mc a0 a1 b0 b1 i
    local -a env
    orgs=$(case_orgs "$conns")
    read -r -a env <<<"$(case_env "$conns")"
    dir="$PROF/c$conns"
    rm -rf "$dir"
    mkdir -p "$dir"
    hz=$(getconf CLK_TCK)
    log "profile at $conns connections, $orgs org(s), ${env[*]}, $SECS s per step"
    truncate_messages
    poold_start "profile-c$conns" "${env[@]}"
    load "pw$conns" 2 "$conns" "$orgs"

    # cpu
    read -r u0 s0 < <(proc_cpu_split "$POOLD_PID")
    load "pm$conns" "$SECS" "$conns" "$orgs"
    out=$LOAD_OUT
    read -r u1 s1 < <(proc_cpu_split "$POOLD_PID")
    n=$(jq .ok <<<"$out")
    jq -n --argjson w "$out" --argjson u $((u1 - u0)) --argjson s $((s1 - s0)) \
        --argjson hz "$hz" --argjson n "$n" \
        --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        '{requests: $n, rps: $w.rps, non200: $w.non200, loadavg: $load,
          user_us: ($u / $hz * 1e6 / $n | . * 10 | round / 10),
          sys_us: ($s / $hz * 1e6 / $n | . * 10 | round / 10),
          cpu_us: (($u + $s) / $hz * 1e6 / $n | . * 10 | round / 10)}' \
        >"$dir/cpu.json"
    log "  cpu: $(jq -c . "$dir/cpu.json")"

    if [ "$HAVE_PERF" = 1 ]; then
        # stat: perf adds an exiting thread's counts to the process's, and
        # outlives the load by 2 s, so the connection threads (wrk closed
        # them) have ended before it stops counting.
        perf_bg stat -x, -e task-clock,context-switches,cpu-migrations,page-faults \
            -e raw_syscalls:sys_enter -e sched:sched_switch \
            --filter 'prev_state > 0 && prev_state < 256' \
            -p "$POOLD_PID" -o "$dir/perf-stat.csv" -- sleep $((SECS + 3))
        perf_pid=$PERF_PID
        load "ps$conns" "$SECS" "$conns" "$orgs"
        out=$LOAD_OUT
        wait "$perf_pid"
        n=$(jq .ok <<<"$out")
        awk -F, -v n="$n" '$3 != "" && $1 ~ /^[0-9.]+$/ {
            k = $3; v = $1 / n
            if (k == "task-clock") { k = "task_clock_us"; v *= 1000 }
            else if (k == "sched:sched_switch") k = "sleeps"
            else if (k == "raw_syscalls:sys_enter") k = "syscalls"
            else gsub(/-/, "_", k)
            printf "%s\t%.2f\n", k, v }' "$dir/perf-stat.csv" |
            jq -R 'split("\t") | {(.[0]): (.[1] | tonumber)}' | jq -s add \
            >"$dir/perf-stat.json"
        log "  perf stat per request: $(jq -c . "$dir/perf-stat.json")"

        # record
        perf_bg record -F 2999 -g -p "$POOLD_PID" -o "$dir/perf.data" \
            -- sleep $((SECS + 1)) 2>"$dir/perf-record.log"
        perf_pid=$PERF_PID
        load "pr$conns" "$SECS" "$conns" "$orgs"
        echo "$LOAD_OUT" >"$dir/record-load.json"
        wait "$perf_pid"
        perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none \
            2>/dev/null | grep -v '^#' | grep -v '^$' >"$dir/by-dso.txt" || true
        perf report -i "$dir/perf.data" --no-children --sort dso,sym --stdio \
            -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 \
            >"$dir/by-symbol.txt" || true
        # Kernel time by system call (inclusive), and the scheduler.
        perf report -i "$dir/perf.data" --children --sort sym --stdio -g none \
            2>/dev/null | grep -E '\[k\] (__x64_sys_|__sys_|do_syscall_64$|handle_softirqs|schedule$|asm_sysvec|entry_SYSCALL)' |
            head -25 >"$dir/by-syscall.txt" || true
        # dwarf: full user stacks (libc has no frame pointers), a short run,
        # to say which of poold's functions the waits and wake-ups come
        # from.
        perf_bg record -F 299 --call-graph dwarf,16384 -p "$POOLD_PID" \
            -o "$dir/perf-dwarf.data" -- sleep 4 2>>"$dir/perf-record.log"
        perf_pid=$PERF_PID
        load "pd$conns" 4 "$conns" "$orgs"
        wait "$perf_pid"
        perf script -i "$dir/perf-dwarf.data" -F ip,sym,dso 2>/dev/null |
            callers >"$dir/callers.txt" || true
        awk '{ sub(/%/, "", $1); s = $1 + 0
               if ($2 == "[kernel.kallsyms]") k += s; else u += s
               d[$2] += s }
             END { printf "{\"kernel_pct\":%.1f,\"user_pct\":%.1f,\"by_dso\":{", k, u
                   sep = ""; for (x in d) { printf "%s\"%s\":%.1f", sep, x, d[x]; sep = "," }
                   print "}}" }' "$dir/by-dso.txt" >"$dir/shares.json"
    else
        # callgrind: user space only, instructions, a short run.
        log "  perf unavailable: valgrind --tool=callgrind instead (user space only)"
        poold_stop
        BENCH_POOLD_WRAP="valgrind --tool=callgrind --callgrind-out-file=$dir/callgrind.out" \
            callgrind_case "$conns" "$orgs" "${env[@]}"
        truncate_messages
        poold_start "profile-c$conns" "${env[@]}"
        load "pw$conns" 2 "$conns" "$orgs"
    fi

    # strace: system calls by name. Ends with poold (strace then prints
    # the summary of every thread).
    strace -c -f -S calls -o "$dir/strace.txt" -p "$POOLD_PID" 2>/dev/null &
    perf_pid=$!
    # Start the load once strace traces every thread of poold.
    for i in $(seq 1 200); do
        if ! grep -h '^TracerPid:' /proc/"$POOLD_PID"/task/*/status 2>/dev/null |
            grep -q 'TracerPid:[[:space:]]*0$'; then
            break
        fi
        [ "$i" -lt 200 ] && sleep 0.05
    done
    load "pt$conns" "$SECS" "$conns" "$orgs"
    out=$LOAD_OUT
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" || true
    n=$(jq .ok <<<"$out")
    awk -v n="$n" 'NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" {
        printf "%s\t%.3f\n", $NF, $4 / n }' \
        "$dir/strace.txt" |
        jq -R 'split("\t") | {(.[0]): (.[1] | tonumber)}' | jq -s 'add // {}' \
        >"$dir/strace.json"
    jq -n --argjson w "$out" '{rps_under_strace: $w.rps, requests: $w.ok}' \
        >"$dir/strace-load.json"
    log "  strace calls per request: $(jq -c 'to_entries | sort_by(-.value) | .[:8] | from_entries' "$dir/strace.json")"
    poold_stop

    # malloc: a second poold under the counting shim.
    mc="$dir/mc.json"
    rm -f "$mc" "$mc.trigger"
    truncate_messages
    poold_start "profile-mc-c$conns" "${env[@]}" \
        LD_PRELOAD="$OUT/bin/malloc_count.so" MALLOC_COUNT_FILE="$mc"
    load "mw$conns" 2 "$conns" "$orgs"
    read -r a0 b0 < <(mc_snapshot "$mc" | jq -r '"\(.allocs) \(.bytes_total)"')
    load "mm$conns" "$SECS" "$conns" "$orgs"
    out=$LOAD_OUT
    read -r a1 b1 < <(mc_snapshot "$mc" | jq -r '"\(.allocs) \(.bytes_total)"')
    n=$(jq .ok <<<"$out")
    jq -n --argjson a $((a1 - a0)) --argjson b $((b1 - b0)) --argjson n "$n" \
        '{allocs_per_req: ($a / $n | . * 10 | round / 10),
          bytes_per_req: ($b / $n | round)}' >"$dir/malloc.json"
    log "  malloc per request: $(jq -c . "$dir/malloc.json")"
    poold_stop

    jq -n --argjson conns "$conns" --argjson orgs "$orgs" --arg env "${env[*]}" \
        --slurpfile cpu "$dir/cpu.json" --slurpfile mc "$dir/malloc.json" \
        --slurpfile st "$dir/strace.json" \
        --argjson ps "$(cat "$dir/perf-stat.json" 2>/dev/null || echo null)" \
        --argjson sh "$(cat "$dir/shares.json" 2>/dev/null || echo null)" \
        '{conns: $conns, orgs: $orgs, settings: $env, cpu: $cpu[0],
          perf_stat: $ps, shares: $sh, strace_per_req: $st[0], malloc: $mc[0]}' \
        >"$dir/summary.json"
}

# callers: perf script output (-F ip,sym,dso, dwarf stacks) on stdin; for
# each kind of wait or system call, the share of samples whose stack holds
# it (inclusive) and the poold functions (innermost two) it was called from.
callers() {
    awk -v keys="lll_lock_wait|futex_abstimed_wait|pthread_cond_broadcast|pthread_cond_signal|sched_yield|__poll|__libc_sendmsg|__libc_send (|__libc_recv|__vfprintf_internal|malloc|json_" '
        BEGIN { nk = split(keys, K, "|") }
        function flush(   k, i, j, c, fr, hit) {
            if (nf == 0) return
            n++
            for (k = 1; k <= nk; k++) {
                hit = 0
                for (i = 1; i <= nf && !hit; i++) if (index(F[i], K[k])) hit = i
                if (!hit) continue
                tot[k]++; c = 0; fr = ""
                for (j = hit + 1; j <= nf && c < 2; j++)
                    if (F[j] ~ /\/poold\)$/ || (F[j] ~ /\(inlined\)$/ && c > 0)) {
                        split(F[j], w, " "); fr = fr (c ? " < " : "") w[2]; c++ }
                by[k, fr == "" ? "(outside poold)" : fr]++
            }
            nf = 0
        }
        /^$/ { flush(); next }
        { sub(/^[ \t]+/, ""); F[++nf] = $0 }
        END {
            flush()
            for (k = 1; k <= nk; k++) {
                if (!tot[k]) continue
                printf "%5.1f %%  %s\n", 100 * tot[k] / n, K[k]
                for (key in by) {
                    split(key, p, SUBSEP)
                    if (p[1] == k && by[key] / n >= 0.005)
                        printf "           %5.1f %%  from %s\n", 100 * by[key] / n, p[2]
                }
            }
        }'
}

# callgrind_case CONNS ORGS VAR=VALUE...: poold under valgrind (no perf).
callgrind_case() {
    local conns=$1 orgs=$2
    shift 2
    POOLD_LOG="$OUT/logs/poold-callgrind-c$conns.log"
    # shellcheck disable=SC2086 # the wrapper is words
    env DATABASE_URL="$DB_URL" POOLD_LISTEN="127.0.0.1:$PORT" \
        POOLD_ADMIN_TOKEN="$TOKEN" POOLD_LOG_FORMAT=text POOLD_CLIENT_AUTH=none "$@" \
        $BENCH_POOLD_WRAP "${BENCH_POOLD:-$BUILD/poold}" >"$POOLD_LOG" 2>&1 &
    POOLD_PID=$!
    wait_ready "poold under callgrind" "$POOLD_PID" "$POOLD_LOG" \
        "http://127.0.0.1:$PORT/readyz" 120
    load "pc$conns" 3 "$conns" "$orgs"
    poold_stop
    callgrind_annotate "$PROF/c$conns/callgrind.out" 2>/dev/null | head -40 \
        >"$PROF/c$conns/callgrind.txt" || true
}

# The summary table of every case (markdown).
summary_md() {
    jq -rs '
      def f: if . == null then "n/a" else tostring end;
      "| per request | " + (map("\(.conns) connections") | join(" | ")) + " |",
      "|---|" + (map("---|") | join("")),
      ( ["poold CPU µs (user + kernel), /proc", (.[] | "\(.cpu.cpu_us) (\(.cpu.user_us) + \(.cpu.sys_us)) at \(.cpu.rps | floor) req/s, load \(.cpu.loadavg | split(" ")[0])")],
        ["perf task-clock µs", (.[] | .perf_stat.task_clock_us | f)],
        ["kernel / user share of poold samples (perf record)", (.[] | if .shares then "\(.shares.kernel_pct) % / \(.shares.user_pct) %" else "n/a" end)],
        ["context switches", (.[] | .perf_stat.context_switches | f)],
        ["thread sleeps = wake-ups (sched_switch, not runnable)", (.[] | .perf_stat.sleeps | f)],
        ["system calls (perf raw_syscalls)", (.[] | .perf_stat.syscalls | f)],
        ["system calls (strace -c -f)", (.[] | .strace_per_req | [.[]] | add | if . == null then "n/a" else (. * 100 | round / 100 | tostring) end)],
        ["· by name (strace)", (.[] | .strace_per_req | to_entries | sort_by(-.value) | .[:6]
            | map("\(.key) \(.value * 100 | round / 100)") | join(", "))],
        ["heap allocations (malloc_count)", (.[] | "\(.malloc.allocs_per_req) (\(.malloc.bytes_per_req) B)")],
        ["libjansson share (JSON)", (.[] | (.shares.by_dso // {})["libjansson.so.4.14.0"] // ((.shares.by_dso // {}) | to_entries | map(select(.key | test("jansson"))) | .[0].value) | f | . + " %")],
        ["libc share (malloc, string, poll entry)", (.[] | ((.shares.by_dso // {}) | to_entries | map(select(.key | test("^libc"))) | .[0].value) | f | . + " %")],
        ["libmicrohttpd / libpq / poold shares", (.[] | ((.shares.by_dso // {}) | to_entries) as $d
            | [("microhttpd", "libpq", "^poold$") as $k | ($d | map(select(.key | test($k))) | .[0].value) | f] | join(" / ") | . + " %")]
        | "| " + join(" | ") + " |")' "$@"
}

main() {
    local c
    mkdir -p "$PROF" "$OUT/logs"
    if [ -n "${BENCH_POOLD:-}" ]; then bench_build_tools; else bench_build; fi
    if [ "${BENCH_PROFILE_PERF:-1}" = 1 ] &&
        perf stat -e task-clock -o /dev/null -- true 2>/dev/null &&
        perf stat -e raw_syscalls:sys_enter -o /dev/null -- true 2>/dev/null; then
        HAVE_PERF=1
    fi
    pg_start
    for c in "${CONNS_LIST[@]}"; do
        profile_case "$c"
    done
    local files=()
    for c in "${CONNS_LIST[@]}"; do files+=("$PROF/c$c/summary.json"); done
    summary_md "${files[@]}" | tee "$PROF/summary.md"
    jq -s . "${files[@]}" >"$PROF/summary.json"
    for c in "${CONNS_LIST[@]}"; do
        echo
        echo "## $c connections: by library (perf record, self time)"
        head -12 "$PROF/c$c/by-dso.txt" 2>/dev/null || true
        echo "## $c connections: top symbols"
        head -25 "$PROF/c$c/by-symbol.txt" 2>/dev/null || true
        echo "## $c connections: kernel entry points (inclusive)"
        cat "$PROF/c$c/by-syscall.txt" 2>/dev/null || true
        echo "## $c connections: waits and system calls by caller in poold (dwarf stacks, inclusive)"
        cat "$PROF/c$c/callers.txt" 2>/dev/null || true
    done
}

main
