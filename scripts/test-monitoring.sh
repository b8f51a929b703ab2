#!/usr/bin/env bash
# test-monitoring.sh — the monitoring kit under docker/ against real peers:
#   1. promtool checks the Prometheus config and the alert rules, and runs
#      the rules' unit tests (docker/prometheus/alerts_test.yml);
#   2. a real Prometheus (Debian's package) scrapes a real poold on loopback
#      with the bearer token, loads the rules, and a query for a per-org
#      series returns data;
#   3. every metric name used by the alert rules and the Grafana dashboard
#      is one the real poold exports.
# Needs POOLD_BIN, DATABASE_URL, POOLD_TEST_ADMIN_URL (tests/tests.cmake).
# Everything it starts is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kit=$root/docker/prometheus
: "${POOLD_BIN:?}" "${DATABASE_URL:?}" "${POOLD_TEST_ADMIN_URL:?}"
for t in prometheus promtool curl jq psql; do
    command -v "$t" >/dev/null || { echo "$t missing (scripts/install-deps.sh)" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
org="mon$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')_org"
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    psql -X -q -d "$POOLD_TEST_ADMIN_URL" -c \
        "DELETE FROM processed_messages WHERE org_id = '$org';
         DELETE FROM orgs WHERE org_id = '$org'" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, what, command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $what" >&2; return 1; }
        sleep 0.2
    done
}

echo "--- promtool"
# The shipped config names the paths inside the container: check a copy
# that points at the repository's files.
sed -e "s|/etc/prometheus/alerts.yml|$kit/alerts.yml|" \
    -e "s|/prometheus/poold-token|$tmp/token|" "$kit/prometheus.yml" >"$tmp/shipped.yml"
token="tok-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
printf %s "$token" >"$tmp/token"
promtool check config "$tmp/shipped.yml"
promtool check rules "$kit/alerts.yml"
(cd "$kit" && promtool test rules alerts_test.yml)

echo "--- a real poold"
psql -X -q -v ON_ERROR_STOP=1 -d "$POOLD_TEST_ADMIN_URL" \
    -c "INSERT INTO orgs (org_id, config) VALUES ('$org', '{\"rules\": []}')" >/dev/null
env -u POOLD_ADMIN_TOKEN POOLD_ADMIN_TOKEN="$token" POOLD_LISTEN=127.0.0.1:0 \
    POOLD_CLIENT_AUTH=none "$POOLD_BIN" 2>"$tmp/poold.log" &
pids+=($!)
port_of_poold() { grep -oE 'listening .*port="[0-9]+"' "$tmp/poold.log" | grep -oE '[0-9]+"$' | tr -d '"'; }
has_port() { [ -n "$(port_of_poold)" ] || ! kill -0 "${pids[0]}" 2>/dev/null; }
wait_for 20 "poold to listen" has_port
[ -n "$(port_of_poold)" ] || { cat "$tmp/poold.log" >&2; exit 1; }
pport=$(port_of_poold)
wait_for 20 "poold ready" curl -fs -o /dev/null "http://127.0.0.1:$pport/readyz"
for i in 1 2 3 4 5; do
    curl -fsS -o /dev/null "http://127.0.0.1:$pport/process" -H 'Content-Type: application/json' \
        -d "{\"id\":\"m$i\",\"org_id\":\"$org\",\"payload\":\"ab\"}"
done
curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$pport/metrics" >"$tmp/metrics.txt"

echo "--- every metric the rules and the dashboard use exists"
python3 - "$tmp/metrics.txt" "$kit/alerts.yml" "$root/docker/grafana/dashboards/poold.json" <<'PY'
import json, re, sys
import yaml
exported = set()
for line in open(sys.argv[1]):
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        exported.add(name)
        if kind == "histogram":
            exported |= {name + s for s in ("_bucket", "_sum", "_count")}
exprs = [r["expr"] for g in yaml.safe_load(open(sys.argv[2]))["groups"] for r in g["rules"]]
dash = json.load(open(sys.argv[3]))
exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += [v["definition"] for v in dash["templating"]["list"]]
used = set()
for e in exprs:
    used |= set(re.findall(r"\b(poold_[a-z_]+)\b", e))
missing = sorted(used - exported)
if missing:
    sys.exit("not exported by poold: " + ", ".join(missing))
print(f"{len(used)} metric names used, all exported")
PY

echo "--- a real Prometheus scrapes it"
prom_port=$(free_port)
cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $kit/alerts.yml
scrape_configs:
  - job_name: poold
    authorization:
      type: Bearer
      credentials_file: $tmp/token
    static_configs:
      - targets: ["127.0.0.1:$pport"]
YML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn 2>"$tmp/prometheus.log" &
pids+=($!)
api="http://127.0.0.1:$prom_port/api/v1"
query() { curl -fsS "$api/query" --data-urlencode "query=$1"; }
has_org_series() {
    [ "$(query "poold_pool_acquired_total{org=\"$org\"}" 2>/dev/null |
         jq -r '.data.result[0].value[1] // empty')" = 5 ]
}
wait_for 60 "Prometheus to scrape the org's series" has_org_series ||
    { tail -20 "$tmp/prometheus.log"; exit 1; }
echo "query poold_pool_acquired_total{org=\"$org\"}: 5"
[ "$(query 'up{job="poold"}' | jq -r '.data.result[0].value[1]')" = 1 ]
echo "up{job=\"poold\"}: 1 (the bearer token works)"
rules=$(curl -fsS "$api/rules" | jq '[.data.groups[].rules[]] | length')
[ "$rules" = 7 ] || { echo "Prometheus loaded $rules rules, not 7" >&2; exit 1; }
echo "alert rules loaded: $rules"
firing=$(curl -fsS "$api/alerts" | jq -r '[.data.alerts[] | select(.state == "firing") | .labels.alertname] | join(",")')
[ -z "$firing" ] || { echo "alerts firing on a healthy poold: $firing" >&2; exit 1; }
echo "no alert fires on a healthy poold"
echo "monitoring kit: all checks passed"
