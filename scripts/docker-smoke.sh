#!/usr/bin/env bash
# docker-smoke.sh — the container deployment, really run: start a private
# dockerd, build the base images without a registry, bring the UNCHANGED
# docker-compose.yml up with docker-compose, wait for health, send the
# README's requests through the published port, check the rows in the
# database, stop poold gracefully, and leave nothing running.
#
# Needs root, Debian's docker.io, docker-compose (1.29), debootstrap and
# curl (scripts/install-deps.sh). No init system is assumed: dockerd runs
# from here with its own exec root, pid file and socket under a temp dir.
#
# Cache (POOLD_DOCKER_CACHE, default /var/tmp/poold-docker): the debootstrap
# tarball and dockerd's data root (images and build layers), so a second
# run rebuilds only what changed. POOLD_DOCKER_FRESH=1 uses a throw-away
# data root instead (everything built from the tarball). Port 8080 on the
# host must be free (the compose file publishes it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cache=${POOLD_DOCKER_CACHE:-/var/tmp/poold-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
project=poold-smoke
port=8080
token=smoke-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
# Debian's client, matching its dockerd's API (another docker on PATH may
# be newer than the daemon).
docker=/usr/bin/docker
started=$(date +%s)

say() { printf '[docker-smoke %3ds] %s\n' $(($(date +%s) - started)) "$*"; }
die() {
    say "FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (dockerd, debootstrap)"
for t in /usr/sbin/dockerd "$docker" docker-compose debootstrap curl; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-deps.sh"
done

mkdir -p "$cache"
# One run at a time per cache: two daemons must not share a data root.
exec 9>"$cache/lock"
flock -w 600 9 || die "another docker-smoke.sh holds $cache/lock"

tmp=$(mktemp -d /tmp/poold-docker.XXXXXX)
sock=$tmp/docker.sock
data=$cache/data-root
[ "${POOLD_DOCKER_FRESH:-0}" = 1 ] && data=$tmp/data-root
export DOCKER_HOST=unix://$sock
export COMPOSE_PROJECT_NAME=$project
# docker-compose builds through Debian's docker CLI with the classic builder,
# as the build-stage step below does: the two then share one layer cache
# (docker-compose's own builder tars the context differently, a cache miss
# that recompiled poold on every run).
export COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=0
export PATH=/usr/bin:$PATH
unset COMPOSE_PROFILES COMPOSE_FILE
compose() { docker-compose -f "$root/docker-compose.yml" "$@"; }

# ---- cleanup: compose down, dockerd stopped, nothing mounted ---------------

dockerd_pid=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        if [ $rc -ne 0 ]; then
            say "logs of the stack:"
            compose logs --no-color --tail=40 2>&1 | sed 's/^/    /'
        fi
        compose down -v --remove-orphans -t 20 >/dev/null 2>&1
        "$docker" image prune -f >/dev/null 2>&1
        kill "$dockerd_pid"
        for _ in $(seq 1 300); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$dockerd_pid" 2>/dev/null && kill -9 "$dockerd_pid"
        wait "$dockerd_pid" 2>/dev/null
    fi
    # containerd-shims outlive a killed dockerd; they hold mounts.
    for pid in $(pgrep -f -- "$tmp/exec" 2>/dev/null); do
        kill -9 "$pid" 2>/dev/null
    done
    awk -v a="$tmp" -v b="$data" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' \
        /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    # dockerd leaves its default bridge behind; no other dockerd uses it.
    pgrep -x dockerd >/dev/null || ip link delete docker0 2>/dev/null
    [ $rc -ne 0 ] && [ -f "$tmp/dockerd.log" ] && tail -20 "$tmp/dockerd.log" >&2
    # Nothing of this run may survive it: no process, no mount.
    local left
    left=$(pgrep -f -- "$tmp" 2>/dev/null | grep -vx "$$" || true)
    left+=$(awk -v a="$tmp" -v b="$data" \
        'index($2, a) == 1 || index($2, b) == 1 {print " " $2}' /proc/mounts)
    if [ -n "$left" ]; then
        say "FAILED: left behind: $left" >&2
        [ $rc -eq 0 ] && rc=1
    fi
    rm -rf "$tmp"
    say "cleaned up (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the daemon ----------------------------------------------------------

start_dockerd() {
    say "starting dockerd (data root $data)"
    mkdir -p "$data"
    /usr/sbin/dockerd --data-root "$data" --exec-root "$tmp/exec" \
        --pidfile "$tmp/dockerd.pid" -H "unix://$sock" \
        >"$tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 300); do
        "$docker" version >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    tail -30 "$tmp/dockerd.log" >&2
    die "dockerd did not start"
}

# ---- base images: debian:12 and debian:12-slim without a registry --------

retry() {
    local n
    for n in 1 2 3; do
        "$@" && return 0
        say "attempt $n failed: $*"
        sleep $((n * 5))
    done
    return 1
}

make_base_tarball() {
    local tarball=$1 rootfs=$tmp/rootfs
    say "debootstrap --variant=minbase bookworm (first run only)"
    rm -rf "$rootfs"
    retry debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
        >"$tmp/debootstrap.log" 2>&1 || {
        tail -20 "$tmp/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # Like the official image: updates and security suites, no package
    # lists or downloaded .debs; plus apt retries for flaky networks.
    cat >"$rootfs/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
    echo 'Acquire::Retries "5";' >"$rootfs/etc/apt/apt.conf.d/80-retries"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -czf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
}

import_base_images() {
    local tarball=$cache/bookworm-minbase.tar.gz
    if "$docker" image inspect debian:12 >/dev/null 2>&1; then
        say "debian:12 already imported"
    else
        [ -s "$tarball" ] || make_base_tarball "$tarball"
        say "importing debian:12 from $tarball"
        "$docker" import --change 'CMD ["bash"]' "$tarball" debian:12 >/dev/null
    fi
    "$docker" tag debian:12 debian:12-slim
}

build_postgres_standin() {
    say "building the postgres:15 stand-in (tests/docker/postgres-15)"
    retry "$docker" build -q -t postgres:15 "$root/tests/docker/postgres-15" \
        >/dev/null || die "postgres:15 stand-in did not build"
}

# ---- the stack -----------------------------------------------------------

wait_healthy() {
    local service=$1 deadline=$(($(date +%s) + 240)) id status
    id=$(compose ps -q "$service")
    [ -n "$id" ] || die "no container for $service"
    while :; do
        status=$("$docker" inspect -f '{{.State.Health.Status}}' "$id")
        [ "$status" = healthy ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "$service is $status after 240 s"
        sleep 1
    done
    say "$service healthy"
}

# request <expected status> <method> <path> [curl args...]: the body is in
# $body; fails the run on another status.
request() {
    local want=$1 method=$2 path=$3 got
    shift 3
    got=$(curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" \
        "http://127.0.0.1:$port$path" "$@") || die "$method $path: no answer"
    body=$(cat "$tmp/body")
    [ "$got" = "$want" ] || die "$method $path: $got (want $want): $body"
    say "$method $path -> $got"
}

expect() {
    case "$body" in
    *"$1"*) ;;
    *) die "answer lacks $1: $body" ;;
    esac
}

readme_requests() {
    local auth=(-H "Authorization: Bearer $token")
    local json=(-H 'Content-Type: application/json')
    local msg='{"id":"msg_000123","org_id":"org_001","payload":"9f3a"}'
    request 200 POST /process "${json[@]}" -d "$msg"
    expect '"duplicate":false'
    request 200 POST /process "${json[@]}" -d "$msg"
    expect '"duplicate":true'
    request 409 POST /process "${json[@]}" \
        -d '{"id":"msg_000123","org_id":"org_001","payload":"00"}'
    expect '"id_conflict"'
    request 200 GET /stats "${auth[@]}"
    expect '"org_001"'
    request 200 GET /pools/org_001 "${auth[@]}"
    request 200 PUT /pools/org_001/size "${auth[@]}" "${json[@]}" \
        -d '{"max_size": 8}'
    expect '"max_size":8'
    request 200 GET /metrics "${auth[@]}"
    expect 'poold_'
    request 401 GET /stats
    request 200 GET /healthz
    request 200 GET /readyz
}

# What the answers claimed is in the database the compose file set up.
check_rows() {
    local sql="SELECT (SELECT count(*) FROM processed_messages
                       WHERE org_id = 'org_001' AND message_id = 'msg_000123')
                      || ' ' ||
                      (SELECT pool_max_size FROM orgs WHERE org_id = 'org_001')"
    local got
    got=$(compose exec -T postgres psql -U poold -d pools -tAc "$sql")
    [ "$got" = "1 8" ] || die "database has '$got', want '1 8' (one row, size 8)"
    say "database: the message row and pool_max_size 8 are stored"
}

# SIGTERM within the compose file's grace period: poold drains and exits 0.
check_graceful_stop() {
    local id code
    id=$(compose ps -q poold)
    compose stop -t 20 poold >/dev/null 2>&1
    code=$("$docker" inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || die "poold exited $code on SIGTERM"
    say "poold stopped on SIGTERM with exit 0"
}

ss -Hltn "sport = :$port" | grep -q . && die "port $port is in use on this host"
start_dockerd
import_base_images
build_postgres_standin
# The build stage is tagged so that the image prune at the end keeps its
# layers (apt, compile) as the next run's cache; docker-compose then finds
# the stage cached and builds only the final one.
say "building docker/Dockerfile's build stage (cached between runs)"
retry "$docker" build -q --target build -t poold-smoke/build-stage \
    -f "$root/docker/Dockerfile" "$root" >"$tmp/build.log" 2>&1 || {
    tail -40 "$tmp/build.log" >&2
    die "the build stage did not build"
}
say "docker-compose build poold (docker/Dockerfile)"
retry compose build -q poold >"$tmp/build.log" 2>&1 || {
    tail -40 "$tmp/build.log" >&2
    die "poold image did not build"
}
say "docker-compose up postgres poold"
# Named services only: profile-gated ones (monitoring, replicas) stay off.
POOLD_ADMIN_TOKEN=$token POOLD_CLIENT_AUTH=none \
    compose up -d postgres poold >"$tmp/up.log" 2>&1 || {
    cat "$tmp/up.log" >&2
    die "docker-compose up failed"
}
wait_healthy postgres
wait_healthy poold
readme_requests
check_rows
check_graceful_stop
compose down -v -t 20 >/dev/null 2>&1
say "passed: compose stack built, healthy, served the README's requests, stopped"
