#!/usr/bin/env bash
# e2e.sh CLUSTER_URL PORT ROUNDS NAME=BINARY:DATABASE[:ENV=V,...] ... —
# poold end to end, alternating: each round runs every NAME once, in the
# order given (a fresh poold on its own database, bench/loadgen.c batch -n
# 20000 -w 16 -o 10 --id-space 1000000, fresh ids, then SIGTERM), and
# prints messages/s and the load average. CLUSTER_URL:
# postgresql://poold@HOST:PORT (no
# database). LOADGEN: the loadgen binary (default: built into /tmp).
# Each database needs sql/ of its binary's tree applied (demo orgs too).
#
#   bench/lifecycle/e2e.sh postgresql://poold@127.0.0.1:19001 19010 4 \
#     plain=/tmp/base/poold:plain \
#     fast=build/poold:part_fast:POOLD_DEDUPE_WINDOW_S=10800
set -euo pipefail
cluster=$1 port=$2 rounds=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
loadgen=${LOADGEN:-/tmp/poold-e2e-loadgen}
[ -x "$loadgen" ] || cc -O2 -pthread -o "$loadgen" "$here/../loadgen.c" -lm
for r in $(seq "$rounds"); do
    for spec in "$@"; do
        name=${spec%%=*} rest=${spec#*=}
        IFS=: read -r bin db extra <<<"$rest"
        envs=()
        [ -n "${extra:-}" ] && IFS=, read -ra envs <<<"$extra"
        log=/tmp/poold-e2e-$name.log
        env DATABASE_URL="$cluster/$db" POOLD_LISTEN="127.0.0.1:$port" \
            POOLD_ADMIN_TOKEN=e2e-token POOLD_CLIENT_AUTH=none \
            POOLD_LOG_FORMAT=text "${envs[@]}" "$bin" >"$log" 2>&1 &
        pid=$!
        trap 'kill -TERM "$pid" 2>/dev/null' EXIT
        for _ in $(seq 300); do
            curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break
            kill -0 "$pid" || { tail "$log"; exit 1; }
            sleep 0.05
        done
        out=$("$loadgen" batch -p "$port" -n 20000 -w 16 -o 10 \
            --id-space 1000000 -t "$name$r$RANDOM")
        kill -TERM "$pid"
        wait "$pid" || true
        printf '%s round %s: %s msg/s, load %s\n' "$name" "$r" \
            "$(jq -r .rps <<<"$out")" \
            "$(cut -d' ' -f1 /proc/loadavg)"
    done
done
