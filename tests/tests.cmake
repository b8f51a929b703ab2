# tests.cmake — unit tests (Check, no database) and integration tests (a real
# PostgreSQL started by the "pg" CTest fixture, and the real poold binary).
#
#   ctest -L unit          unit tests only
#   ctest -L integration   integration tests (start their own PostgreSQL)

pkg_check_modules(CHECK REQUIRED IMPORTED_TARGET check)

# A private cluster per build tree: its own directory and port, so build
# trees (plain, ASan, TSan) can test side by side.
string(MD5 _poold_tree_hash "${CMAKE_BINARY_DIR}")
string(SUBSTRING "${_poold_tree_hash}" 0 4 _poold_port_hex)
# Below Linux's ephemeral range (32768-60999): a port there can be taken
# by any outgoing connection at the moment the cluster starts.
math(EXPR POOLD_TEST_PG_PORT "20000 + 0x${_poold_port_hex} % 12000")
set(POOLD_TEST_PG_DIR "/tmp/poold-test-pg-${_poold_port_hex}")
set(POOLD_TEST_DATABASE_URL
    "postgresql://poold@127.0.0.1:${POOLD_TEST_PG_PORT}/pools")
set(POOLD_TEST_ENV
    "DATABASE_URL=${POOLD_TEST_DATABASE_URL}"
    "POOLD_TEST_PG_DIR=${POOLD_TEST_PG_DIR}"
    "POOLD_TEST_PG_PORT=${POOLD_TEST_PG_PORT}"
    "POOLD_TEST_ADMIN_URL=postgresql://postgres@127.0.0.1:${POOLD_TEST_PG_PORT}/pools"
    "POOLD_BIN=$<TARGET_FILE:poold>"
    "POOLD_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
    "CK_DEFAULT_TIMEOUT=60")

add_test(NAME pg.start
         COMMAND ${CMAKE_SOURCE_DIR}/scripts/pg.sh start ${POOLD_TEST_PG_DIR}
                 ${POOLD_TEST_PG_PORT})
add_test(NAME pg.stop
         COMMAND ${CMAKE_SOURCE_DIR}/scripts/pg.sh destroy ${POOLD_TEST_PG_DIR})
set_tests_properties(pg.start PROPERTIES FIXTURES_SETUP pg LABELS integration
                     TIMEOUT 120)
set_tests_properties(pg.stop PROPERTIES FIXTURES_CLEANUP pg LABELS integration)

# poold_check_test(<name> <label> <source> [TIMEOUT s] [LIBS libs...]): one Check executable
# and one CTest test; "integration" tests get the database fixture.
function(poold_check_test name label src)
  cmake_parse_arguments(T "" "TIMEOUT" "LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  if(NOT T_LIBS)
    set(T_LIBS poold_core)
  endif()
  add_executable(check_${name} ${src})
  target_link_libraries(check_${name} PRIVATE ${T_LIBS} PkgConfig::CHECK)
  add_test(NAME ${label}.${name} COMMAND check_${name})
  set_tests_properties(${label}.${name} PROPERTIES LABELS ${label}
                       TIMEOUT ${T_TIMEOUT} ENVIRONMENT "${POOLD_TEST_ENV}")
  if(label STREQUAL "integration")
    set_tests_properties(${label}.${name} PROPERTIES FIXTURES_REQUIRED pg
                         RESOURCE_LOCK pg)
  endif()
endfunction()

# --- unit: one per module -------------------------------------------------
poold_check_test(pool unit tests/unit/check_pool.c TIMEOUT 300 LIBS poold_pool)
poold_check_test(rules unit tests/unit/check_rules.c)
poold_check_test(log unit tests/unit/check_log.c)
poold_check_test(config unit tests/unit/check_config.c)
poold_check_test(keys unit tests/unit/check_keys.c)
poold_check_test(ratelimit unit tests/unit/check_ratelimit.c)
poold_check_test(breaker unit tests/unit/check_breaker.c)
poold_check_test(holders unit tests/unit/check_holders.c)
poold_check_test(cluster unit tests/unit/check_cluster.c)
poold_check_test(handlers unit tests/unit/check_handlers.c)
# Housekeeping ticks driven by hand with a fake clock; a white-box test:
# it sees the registry's private header.
poold_check_test(housekeeping unit tests/unit/check_housekeeping.c)
target_include_directories(check_housekeeping PRIVATE ${CMAKE_SOURCE_DIR}/src)

# --- integration: real PostgreSQL ------------------------------------------
# The superuser connection, settings and waits of the three below.
add_library(poold_pg_fixture STATIC tests/integration/pg_fixture.c)
target_link_libraries(poold_pg_fixture PUBLIC poold_core PkgConfig::CHECK)
poold_check_test(db integration tests/integration/check_db.c
                 LIBS poold_pg_fixture)
poold_check_test(catalog integration tests/integration/check_catalog.c
                 LIBS poold_pg_fixture)
poold_check_test(service integration tests/integration/check_service.c
                 TIMEOUT 300 LIBS poold_pg_fixture)
poold_check_test(registry integration tests/integration/check_registry.c
                 TIMEOUT 300)

# Debian's python3 first: it is the one install-deps.sh gives jsonschema
# and yaml (a pyenv or venv python on PATH may lack them).
set(Python3_FIND_STRATEGY LOCATION)
set(Python3_ROOT_DIR /usr)
find_package(Python3 REQUIRED COMPONENTS Interpreter)
# poold_python_test(<name> <timeout>): tests/integration/test_<name>.py
# against the real binary and the database fixture.
function(poold_python_test name timeout)
  add_test(NAME integration.${name}
           COMMAND ${Python3_EXECUTABLE} -m unittest -v test_${name}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/integration)
  set_tests_properties(integration.${name} PROPERTIES LABELS integration
                       TIMEOUT ${timeout} FIXTURES_REQUIRED pg
                       RESOURCE_LOCK pg ENVIRONMENT "${POOLD_TEST_ENV}")
endfunction()

# The HTTP contract, against the real binary over a socket.
poold_python_test(http 600)
# Faults: database restart, terminated backends, idle_session_timeout,
# database down at start and down under load, a row lock held elsewhere,
# idle and excess clients (issue 5).
poold_python_test(faults 600)
# The commit pipeline (issue 22): pool_exhausted whatever the processing
# cost, processing in parallel, groups behind a commit in flight, a leader
# that answers at once.
poold_python_test(pipeline 300)
# The README's curl examples, as written, against the real server.
poold_python_test(readme 120)
# Slow and hostile clients (request read deadline, the waiting room),
# client X-Request-Id, HTTPS with a certificate the test makes.
poold_python_test(clients 600)
# Tenants (issue 12): org API keys, admin scopes, org management, rate
# limits, audit.
poold_python_test(tenants 600)
# Operators (issue 13): pause/resume across two poolds, drain, holders,
# held too long, the dashboard's files, bounded per-org metrics.
poold_python_test(operators 300)
# The dashboard in a real browser: Debian's chromium driven by playwright-core
# (tests/browser, npm ci), against the real binary and the database fixture.
add_test(NAME integration.dashboard_browser
         COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/test-browser.sh)
set_tests_properties(integration.dashboard_browser PROPERTIES
                     LABELS integration TIMEOUT 300 FIXTURES_REQUIRED pg
                     RESOURCE_LOCK pg ENVIRONMENT "${POOLD_TEST_ENV}")
# The monitoring kit (docker/prometheus, docker/grafana): promtool checks
# and rule unit tests, then a real Prometheus scraping the real binary.
add_test(NAME integration.monitoring
         COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/test-monitoring.sh)
set_tests_properties(integration.monitoring PROPERTIES
                     LABELS integration TIMEOUT 180 FIXTURES_REQUIRED pg
                     RESOURCE_LOCK pg ENVIRONMENT "${POOLD_TEST_ENV}")
# Replicas (issue 14): three poold processes share POOLD_CLUSTER_MAX_CONNS;
# pg_stat_activity sampled every 50 ms while they join, die and leave.
poold_python_test(replicas 300)
# The same three behind Debian's HAProxy with docker/haproxy/haproxy.cfg:
# SIGKILL and drain mid-load, clients see only 200/503/504.
poold_python_test(haproxy 300)
# Through Debian's PgBouncer 1.18, session and transaction pooling.
poold_python_test(pgbouncer 300)

# The header check (cmake/header_check.cmake) can fail: db.h, compiled the
# same way but with libpq's include directory, trips its guard.
get_target_property(_canary_dirs PkgConfig::LIBPQ INTERFACE_INCLUDE_DIRECTORIES)
list(TRANSFORM _canary_dirs PREPEND -I)
add_test(NAME unit.header_check_canary
         COMMAND ${CMAKE_C_COMPILER} -fsyntax-only -std=c11
                 -I${CMAKE_SOURCE_DIR}/include ${_canary_dirs}
                 ${CMAKE_BINARY_DIR}/header_check/db_h.c)
set_tests_properties(unit.header_check_canary PROPERTIES
  LABELS unit PASS_REGULAR_EXPRESSION "db.h reaches libpq-fe.h")

# metrics renders a view it is given: tested without registry or database.
poold_check_test(metrics unit tests/unit/check_metrics.c)
