#!/usr/bin/env bash
# install-deps.sh — Debian 12 packages that build, run and test poold.
# Installs only what is missing, so a second run costs nothing.
set -euo pipefail

pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev
      libpq-dev check postgresql-15 postgresql-client-15 python3
      python3-jsonschema python3-yaml curl clang libclang-rt-14-dev valgrind
      wrk gnuplot-nox docker-compose jq libgnutls28-dev openssl)
# The compose stack run end to end (scripts/docker-smoke.sh), and the
# format check (scripts/check-format.sh).
pkgs+=(docker.io debootstrap clang-format)
# chromium: the dashboard's browser test (tests/browser, playwright-core);
# prometheus: promtool checks the alert rules, a real server scrapes poold.
pkgs+=(chromium prometheus)
# Replicas: the load balancer and the pooler the tests put around
# poold (tests/integration/test_haproxy.py, test_pgbouncer.py).
pkgs+=(haproxy pgbouncer)
# OpenAPI lint runs through npx; Node comes from Debian if it is not there.
command -v npx >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
