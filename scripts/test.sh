#!/usr/bin/env bash
# test.sh — every test poold has, from a fresh clone (the README's second
# command; .ci/run runs it):
#   1. install missing Debian packages
#   2. plain build: unit + integration tests (real PostgreSQL, real binary)
#   2a. the fault soak, 90 s, on the plain build's poold (bench/soak.sh)
#   3. in the background: the data lifecycle suite (5 minutes of waiting
#      for partition boundaries in compressed time) and the compose stack
#      run for real (scripts/docker-smoke.sh); beside them, niced:
#      a Release build with gcc and a clang build, warnings as errors, the
#      ASan and TSan builds, valgrind memcheck on the unit tests, a short
#      bounded run of each libFuzzer target, the clang-format check, the
#      OpenAPI lint and the docker-compose validation
#   4. side by side: ASan+UBSan (unit + integration tests, leaks
#      included) and TSan (the same, the server under TSan too)
# Exits non-zero on the first failure (a background job's when it is
# waited for: at the end of step 3, and in step 4).
#
# scripts/test.sh --quick: steps 1 and 2 only, with the unit tests and the
# fastest integration suite (integration.http, the HTTP contract against
# the real binary and a private PostgreSQL): a few minutes, for a change
# before the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
case "${1:-}" in
--quick) quick=1 ;;
"") ;;
*)
    echo "usage: scripts/test.sh [--quick]" >&2
    exit 2
    ;;
esac
root=$(pwd)
jobs=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

build() {
    local dir=$1
    shift
    cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPOOLD_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j"$jobs" 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^gmake|Consolidate' || true
    # The grep above hides progress lines; a failed build must still fail.
    cmake --build "$dir" -j"$jobs" >/dev/null
}

# TSan needs the older mmap layout on kernels with high ASLR entropy.
tsan_prefix=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
    tsan_prefix=(setarch "$(uname -m)" -R)
fi

step "dependencies"
bash scripts/install-deps.sh

if [ "$quick" = 1 ]; then
    step "quick: plain build, unit tests, integration.http"
    build build-test
    ctest --test-dir build-test --output-on-failure -R '^(unit\.|integration\.http$)'
    step "quick test stages passed (the whole run: scripts/test.sh)"
    exit 0
fi

step "plain build: unit and integration tests (the lifecycle suite: below)"
build build-test
ctest --test-dir build-test --output-on-failure -E '^integration\.lifecycle$'

step "fault soak: ${SOAK_SECONDS:-90} s, three replicas behind HAProxy (docs/reliability.md)"
# Real PostgreSQL restarts, SIGSTOP, replica SIGKILLs, key revocations,
# locked rows and slow clients under load; any broken invariant fails.
# SOAK_SECONDS=0 skips it.
if [ "${SOAK_SECONDS:-90}" = 0 ]; then
    echo "SOAK_SECONDS=0: skipped"
else
    bash bench/soak.sh --seconds "${SOAK_SECONDS:-90}" --build build-test \
        --out build-test/soak --docs build-test/soak
fi

step "in the background: the data lifecycle suite and the compose stack"
# The lifecycle suite mostly sleeps until a partition boundary comes
# (integration.lifecycle, 5 minutes); the compose stack (a private dockerd,
# images built without a registry, the unchanged compose file up, the
# README's requests through the published port, all torn down) mostly waits
# on downloads and containers. The builds and checks that need neither run
# beside them. All but the suite run niced: its poold and PostgreSQL keep
# the CPU they need to be on time.
# Each in a process group of its own (setsid), so that a failure below
# stops the whole of it: ctest leaves its test running on SIGTERM, and
# docker-smoke.sh's trap waits for the command it is in (docker build,
# debootstrap) before it tears its stack down.
setsid -w ctest --test-dir build-test --output-on-failure \
    -R '^integration\.lifecycle$' >build-test/lifecycle.log 2>&1 &
lifecycle=$!
smoke=
# POOLD_SKIP_DOCKER=1 skips the compose stack (a developer's machine
# without root).
if [ "${POOLD_SKIP_DOCKER:-0}" = 1 ]; then
    echo "POOLD_SKIP_DOCKER=1: the compose stack is skipped"
else
    setsid -w nice -n 10 bash scripts/docker-smoke.sh \
        >build-test/docker-smoke.log 2>&1 &
    smoke=$!
fi
# On a failure below, stop both (docker-smoke.sh tears its stack down on
# SIGTERM); each is cleared once waited for. The sanitizer suites at the
# end run the same way.
asan="" tsan=""
stop_background() {
    local g
    for g in $lifecycle $smoke $asan $tsan; do
        kill -TERM -- "-$g" 2>/dev/null || true
    done
    wait
}
trap stop_background EXIT
(
    renice -n 10 -p "$BASHPID" >/dev/null

    step "builds: gcc Release, clang, ASan+UBSan, TSan"
    # Each compiler and optimisation level finds its own warnings; a later
    # -D wins over build()'s RelWithDebInfo. Tests off: these only compile.
    CC=gcc build build-release -DCMAKE_BUILD_TYPE=Release -DPOOLD_TESTS=OFF
    echo "gcc Release: no warnings"
    CC=clang build build-clang -DPOOLD_TESTS=OFF
    echo "clang: no warnings"
    build build-asan -DPOOLD_SANITIZE=address
    echo "ASan+UBSan build: done"
    build build-tsan -DPOOLD_SANITIZE=thread
    echo "TSan build: done"

    step "valgrind memcheck: unit tests"
    for t in build-test/check_pool build-test/check_rules build-test/check_log \
             build-test/check_config build-test/check_keys \
             build-test/check_ratelimit build-test/check_breaker \
             build-test/check_holders build-test/check_handlers \
             build-test/check_cluster build-test/check_jsonfast \
             build-test/check_housekeeping build-test/check_metrics; do
        CK_FORK=no CK_TIMEOUT_MULTIPLIER=20 POOLD_TEST_QUICK=1 valgrind -q \
            --suppressions=tests/unit/valgrind.supp \
            --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            "$t" >/dev/null
        echo "valgrind clean: $t"
    done

    if [ -f tests/fuzz/fuzz.cmake ]; then
        step "libFuzzer: ${FUZZ_SECONDS}s per target"
        CC=clang build build-fuzz -DPOOLD_FUZZ=ON -DPOOLD_TESTS=OFF
        for f in tests/fuzz/fuzz_*.c; do
            name=$(basename "$f" .c)
            corpus=$(mktemp -d)
            cp tests/fuzz/corpus/"${name#fuzz_}"/* "$corpus"/ 2>/dev/null || true
            build-fuzz/"$name" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 \
                -print_final_stats=0 "$corpus" 2>"$corpus.log" ||
                { tail -50 "$corpus.log"; exit 1; }
            echo "fuzzed clean: $name, $(grep -o 'Done [0-9]* runs' "$corpus.log")"
            rm -rf "$corpus" "$corpus.log"
        done
    fi

    step "format: the C tree against .clang-format"
    bash scripts/check-format.sh

    step "OpenAPI lint"
    bash scripts/lint-openapi.sh

    step "docker-compose validation"
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose -f docker-compose.yml config -q
        echo "docker-compose.yml valid"
        docker-compose -f docker-compose.yml --profile replicas config -q
        echo "docker-compose.yml valid with profile replicas"
    else
        echo "docker-compose not installed: skipped"
    fi
)

step "the data lifecycle suite (started in the background)"
rc=0
wait "$lifecycle" || rc=$?
lifecycle=
if [ "$rc" != 0 ]; then
    cat build-test/lifecycle.log
    exit 1
fi
grep -E 'tests passed|Test +#' build-test/lifecycle.log

if [ -n "$smoke" ]; then
    step "docker: the compose stack end to end (started in the background)"
    rc=0
    wait "$smoke" || rc=$?
    smoke=
    cat build-test/docker-smoke.log
    [ "$rc" = 0 ] || exit 1
fi
trap - EXIT

step "ASan+UBSan and TSan: unit and integration tests, side by side"
# Each build tree has its own PostgreSQL cluster, directory and port
# (tests/tests.cmake, 20000-31999), and each suite's servers and helpers
# take ports from a range of its own (POOLD_TEST_PORTS), so the two suites
# cannot meet; they mostly wait (timeouts, deadlines, restarts), so two at
# once take little longer than the slower alone. Each writes its own log,
# shown when done.
setsid -w env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1 CK_TIMEOUT_MULTIPLIER=3 \
    POOLD_TEST_PORTS=10000-14999 \
    ctest --test-dir build-asan --output-on-failure -LE wallclock \
    >build-asan/ctest.log 2>&1 &
asan=$!
setsid -w env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    CK_TIMEOUT_MULTIPLIER=5 POOLD_TEST_PORTS=15000-19999 "${tsan_prefix[@]}" \
    ctest --test-dir build-tsan --output-on-failure -LE wallclock \
    >build-tsan/ctest.log 2>&1 &
tsan=$!
trap stop_background EXIT
rc=0
wait "$asan" || rc=$?
asan=
step "ASan+UBSan: unit and integration tests (leaks included)"
cat build-asan/ctest.log
[ "$rc" = 0 ] || exit 1
wait "$tsan" || rc=$?
tsan=
step "TSan: unit and integration tests (the server binary included)"
cat build-tsan/ctest.log
[ "$rc" = 0 ] || exit 1
trap - EXIT

step "all test stages passed"
