#!/usr/bin/env bash
# orgs.sh — what the org directory costs at 1 k, 100 k and 1 M orgs (issue
# 19, DESIGN.md "A million orgs"). For each N, `orgs` holds exactly N enabled
# orgs with no rules (filled with generate_series), a fresh poold is started
# and measured:
#
#   ready      start of the process to the first 200 from /readyz (the
#              median of three starts)
#   RSS        VmRSS once idle (and per org above an empty directory's)
#   idle CPU   user+system time over BENCH_IDLE_S seconds with no request
#   request    mean of one client's POST /process to 1000 random orgs that
#              have no pool yet (each builds a pool and a service; past the
#              connection cap an idle service of another org is evicted)
#   CPU        poold's user+system time over those requests, per request
#              (it does not depend on the machine's load as wall time does)
#   change     an UPDATE of one org's config to the first request served
#              with the new rules
#   pooled     RSS growth over the requests, per org that got a pool (its
#              pool, group commit, caches; its services were evicted at the
#              connection cap, except the last POOLD_DB_MAX_CONNS)
#
#   bench/orgs.sh                 # 1000 100000 1000000
#   bench/orgs.sh 1000 20000      # other sizes
#
# Uses bench/lib.sh's private PostgreSQL (BENCH_PG_DIR, BENCH_PG_PORT) and
# build (BENCH_BUILD, or BENCH_POOLD for a given binary). Prints a markdown
# table; raw numbers in $OUT/orgs.jsonl.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 100000 1000000)
IDLE_S=${BENCH_IDLE_S:-10}
REQUESTS=${BENCH_ORG_REQUESTS:-1000}

cleanup() { poold_stop; }
trap cleanup EXIT

# fill_orgs N: exactly N orgs, o0000001 ..., no rules.
fill_orgs() {
    psql_super -c "TRUNCATE processed_messages, orgs, org_keys" >/dev/null
    psql_super -c "INSERT INTO orgs (org_id, config)
        SELECT 'o' || lpad(i::text, 7, '0'), '{\"rules\": []}'
        FROM generate_series(1, $1) i" >/dev/null
    psql_super -c "VACUUM ANALYZE orgs" >/dev/null
}

# start_timed NAME: start poold, READY = seconds until /readyz answers 200.
start_timed() {
    local t0 t1
    t0=$(date +%s.%N)
    poold_start "$1" POOLD_DB_MIN_IDLE=0
    t1=$(date +%s.%N)
    READY=$(echo "$t1 - $t0" | bc -l)
}

# cpu_ticks PID: utime + stime, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# idle_cpu PID SECONDS: percent of one core used while idle.
idle_cpu() {
    local a b hz
    hz=$(getconf CLK_TCK)
    a=$(cpu_ticks "$1")
    sleep "$2"
    b=$(cpu_ticks "$1")
    echo "($b - $a) * 100 / ($hz * $2)" | bc -l
}

# requests N: mean ms of REQUESTS sequential POST /process to random orgs
# without a pool, one keep-alive client; then the seconds until an UPDATE of
# one org's rules is served. Prints "mean_ms change_s".
requests() {
    python3 - "$PORT" "$1" "$REQUESTS" "$SUPER_URL" "$PG_BIN/psql" <<'EOF'
import http.client, json, random, subprocess, sys, time, uuid
port, n, count, url, psql = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
def post(org):
    body = json.dumps({"id": uuid.uuid4().hex, "org_id": org, "payload": "ab"})
    conn.request("POST", "/process", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit("POST for %s: %d %s" % (org, r.status, data[:200]))
    return json.loads(data)
orgs = ["o%07d" % i for i in random.sample(range(1, n + 1), min(count + 1, n))]
post(orgs[-1])  # warm the client connection
total = 0.0
for org in orgs[:count]:
    t0 = time.perf_counter()
    post(org)
    total += time.perf_counter() - t0
mean_ms = total * 1000 / min(count, len(orgs))
org = orgs[0]
subprocess.run([psql, "-X", "-q", "-d", url, "-c",
                "UPDATE orgs SET config = '{\"rules\": [{\"type\": "
                "\"hex_payload\"}]}' WHERE org_id = '%s'" % org], check=True)
t0 = time.perf_counter()
while post(org)["details"]["checks"] != 1:
    if time.perf_counter() - t0 > 60:
        sys.exit("the change was not seen in 60 s")
    time.sleep(0.02)
print("%.3f %.2f" % (mean_ms, time.perf_counter() - t0))
EOF
}

main() {
    local n ready rss cpu empty_kb out
    command -v bc >/dev/null || die "bc is needed"
    mkdir -p "$OUT/logs"
    if [ -z "${BENCH_POOLD:-}" ]; then
        log "building poold in $BUILD"
        { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DPOOLD_TESTS=OFF && cmake --build "$BUILD" --target poold -j 2; } \
            >"$OUT/logs/cmake.log" 2>&1 || die "build failed (see $OUT/logs)"
    fi
    pg_start
    : >"$OUT/orgs.jsonl"
    fill_orgs 0
    start_timed empty
    sleep 2
    empty_kb=$(rss_kb "$POOLD_PID")
    poold_stop
    printf '| N orgs | ready after start | idle RSS | RSS per org above empty | idle CPU | mean request, org without a pool (%s random orgs, one client) | poold CPU per such request | a change seen | RSS per org that got a pool |\n' "$REQUESTS"
    printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
    for n in "${SIZES[@]}"; do
        log "filling orgs with $n rows"
        fill_orgs "$n"
        # Ready after start: the median of three starts (one start moves
        # with whatever else the machine runs); the last one is measured on.
        local starts=()
        for _ in 1 2 3; do
            poold_stop
            start_timed "orgs$n"
            starts+=("$READY")
        done
        ready=$(printf '%s\n' "${starts[@]}" | sort -g | sed -n 2p)
        sleep 2
        rss=$(rss_kb "$POOLD_PID")
        cpu=$(idle_cpu "$POOLD_PID" "$IDLE_S")
        ticks=$(cpu_ticks "$POOLD_PID")
        out=$(requests "$n")
        ticks=$(( $(cpu_ticks "$POOLD_PID") - ticks ))
        pooled=$(rss_kb "$POOLD_PID")
        poold_stop
        jq -nc --argjson n "$n" --argjson ready "$ready" --argjson rss_kb "$rss" \
            --argjson empty_kb "$empty_kb" --argjson cpu "$cpu" \
            --argjson req_ms "${out% *}" --argjson change_s "${out#* }" \
            --argjson pooled_kb "$pooled" --argjson cpu_ticks "$ticks" \
            '{n: $n, ready_s: $ready, rss_kb: $rss_kb, empty_kb: $empty_kb,
              idle_cpu_pct: $cpu, request_ms: $req_ms, change_s: $change_s,
              rss_after_requests_kb: $pooled_kb,
              request_cpu_ticks: $cpu_ticks}' \
            >>"$OUT/orgs.jsonl"
        printf '| %s | %.2f s | %.0f MiB | %.0f B | %.1f %% | %s ms | %.3f ms | %s s | %.0f B |\n' \
            "$n" "$ready" "$(echo "$rss / 1024" | bc -l)" \
            "$(echo "($rss - $empty_kb) * 1024 / $n" | bc -l)" "$cpu" \
            "${out% *}" \
            "$(echo "$ticks * 1000 / $(getconf CLK_TCK) / $REQUESTS" | bc -l)" \
            "${out#* }" \
            "$(echo "($pooled - $rss) * 1024 / $REQUESTS" | bc -l)"
    done
    psql_super -c "TRUNCATE processed_messages, orgs, org_keys" >/dev/null
}

main
