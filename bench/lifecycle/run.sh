#!/usr/bin/env bash
# run.sh URL [SECONDS] [ROUNDS] — insert throughput, plain table (old
# statement) against partitioned table (today's statement), in alternating
# pgbench -M prepared runs on the same database, for one message per
# statement (one_*) and 100 (many_*). URL: a database with sql/ applied,
# owned by the connecting role. Prints each run's tps and the ratio b/a.
set -euo pipefail
url=$1 secs=${2:-20} rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$here/setup.sql" >/dev/null
tps() {
    pgbench -n -M prepared -c 4 -j 2 -T "$secs" -f "$here/$1.sql" "$url" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
for kind in one many; do
    sa=0 sb=0
    for r in $(seq "$rounds"); do
        a=$(tps "${kind}_a") b=$(tps "${kind}_b")
        echo "$kind round $r: plain $a tps, partitioned $b tps"
        sa=$(echo "$sa + $a" | bc -l) sb=$(echo "$sb + $b" | bc -l)
    done
    printf '%s: partitioned/plain = %.3f\n' "$kind" "$(echo "$sb / $sa" | bc -l)"
done
