#!/usr/bin/env bash
# cpu.sh URL [N] [ROUNDS] — server CPU per one-message INSERT (loop.sql),
# the kinds a..f alternating, ROUNDS rounds of N statements each (rolled
# back); prints every round and the quietest (lowest) figure of each kind;
# then the same for the batch form (100 messages a statement).
# URL: a database with sql/ applied, owned by the connecting role.
set -euo pipefail
url=$1 n=${2:-2000} rounds=${3:-8}
here=$(cd "$(dirname "$0")" && pwd)
export PGOPTIONS=--client-min-messages=warning
psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$here/setup.sql" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$here/loop.sql" >/dev/null
declare -A best
for r in $(seq "$rounds"); do
    line="round $r:"
    for k in a b c d e f; do
        us=$(psql -X -q -At -d "$url" -c "BEGIN" \
            -c "SELECT round(bench_insert_loop('$k', $n)::numeric, 1)" \
            -c "ROLLBACK")
        line="$line $k $us"
        if [ -z "${best[$k]:-}" ] || (($(echo "$us < ${best[$k]}" | bc))); then
            best[$k]=$us
        fi
    done
    echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
done
echo "lowest: a ${best[a]} b ${best[b]} c ${best[c]} d ${best[d]} e ${best[e]} f ${best[f]}"
# The batch form: 100 messages a statement, µs per message.
declare -A many
for r in $(seq "$rounds"); do
    line="100 a statement, round $r:"
    for k in a b d; do
        us=$(psql -X -q -At -d "$url" -c "BEGIN" \
            -c "SELECT round(bench_many_loop('$k', $((n / 100)), 100)::numeric, 2)" \
            -c "ROLLBACK")
        line="$line $k $us"
        if [ -z "${many[$k]:-}" ] || (($(echo "$us < ${many[$k]}" | bc))); then
            many[$k]=$us
        fi
    done
    echo "$line"
done
echo "lowest, 100 a statement: a ${many[a]} b ${many[b]} d ${many[d]}"
