/* pg_fixture.c — the fixture shared by the tests against PostgreSQL. */
#include "pg_fixture.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../unit/test_util.h"
#include "clock.h"

/* Bound of every wait on pg_stat_activity: generous for a loaded machine. */
#define PG_WAIT_MS 30000

const char *db_url;
const char *admin_url;
PGconn *admin;
char app_name[64];
struct db_settings settings;
struct service_env env;
char err[512];

static void cleanup_rows(void)
{
    admin_exec("DELETE FROM processed_messages WHERE org_id LIKE 'tsvc_%'");
    admin_exec("DELETE FROM orgs WHERE org_id LIKE 'tsvc_%'");
}

void pgfix_setup(void)
{
    db_url = getenv("DATABASE_URL");
    admin_url = getenv("POOLD_TEST_ADMIN_URL");
    ck_assert_msg(db_url && admin_url, "run through ctest (needs env)");
    admin = PQconnectdb(admin_url);
    ck_assert_msg(PQstatus(admin) == CONNECTION_OK, "admin: %s",
                  PQerrorMessage(admin));
    /* Unique per test process: counts of backends cannot mix. */
    snprintf(app_name, sizeof app_name, "tsvc-%ld", (long)getpid());
    settings = (struct db_settings){
        .url = db_url, .application_name = app_name, .connect_timeout_s = 5};
    env = (struct service_env){.db = &settings,
                               .conn_acquire_timeout_ns = NS_PER_S,
                               .conn_check_idle_ns = NS_PER_S};
    cleanup_rows();
}

void pgfix_teardown(void)
{
    cleanup_rows();
    PQfinish(admin);
    admin = NULL;
}

PGresult *admin_query(const char *sql, ...)
{
    const char *params[8];
    int n = 0;
    va_list ap;

    va_start(ap, sql);
    while (n < 8 && (params[n] = va_arg(ap, const char *)) != NULL)
        n++;
    va_end(ap);
    PGresult *res = PQexecParams(admin, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    ck_assert_msg(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s",
                  sql, PQresultErrorMessage(res));
    return res;
}

long long admin_ll(const char *sql, const char *p1)
{
    PGresult *res = admin_query(sql, p1, (const char *)NULL);
    ck_assert_int_eq(PQntuples(res), 1);
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

void org_add(const char *id, const char *config, bool enabled)
{
    admin_exec("INSERT INTO orgs (org_id, config, enabled)"
               " VALUES ($1, $2::jsonb, $3::boolean)",
               id, config, enabled ? "t" : "f");
}

long long backends_of_app(void)
{
    return admin_ll("SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    app_name);
}

static bool backends_are(void *n)
{
    return backends_of_app() == *(long long *)n;
}

void wait_backends(long long n)
{
    wait_until(backends_are, &n, PG_WAIT_MS, "this test's backend count");
}

/* The pid as text, for a query parameter. */
struct pid_text {
    char s[16];
};

static struct pid_text pid_text(int pid)
{
    struct pid_text t;
    snprintf(t.s, sizeof t.s, "%d", pid);
    return t;
}

static bool backend_gone(void *pid)
{
    return admin_ll("SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    pid) == 0;
}

void wait_backend_gone(int pid)
{
    struct pid_text p = pid_text(pid);
    wait_until(backend_gone, p.s, PG_WAIT_MS, "a backend to go away");
}

static bool backend_blocked(void *pid)
{
    return admin_ll("SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                    " AND wait_event_type = 'Lock'",
                    pid) == 1;
}

void wait_backend_blocked(int pid)
{
    struct pid_text p = pid_text(pid);
    wait_until(backend_blocked, p.s, PG_WAIT_MS, "a backend to wait on a lock");
}

void terminate_backend(int pid)
{
    struct pid_text p = pid_text(pid);
    admin_exec("SELECT pg_terminate_backend($1::integer)", p.s);
    wait_backend_gone(pid);
}

void pg_ok(struct db_conn *conn, const char *sql)
{
    PGresult *res = PQexec(db_conn_pg(conn), sql);
    ExecStatusType st = PQresultStatus(res);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s",
                  sql, PQresultErrorMessage(res));
    PQclear(res);
}

struct db_conn *open_conn(void)
{
    struct db_conn *conn = NULL;
    int rc = db_conn_open(&settings, clock_now_ns(), &conn, err, sizeof err);
    ck_assert_msg(rc == POOLD_OK, "open: %s", err);
    return conn;
}

PGconn *row_lock_hold(const char *org_id, const char *message_id)
{
    PGconn *holder = PQconnectdb(admin_url);
    const char *params[2] = {org_id, message_id};
    PGresult *res;

    ck_assert_msg(PQstatus(holder) == CONNECTION_OK, "holder: %s",
                  PQerrorMessage(holder));
    res = PQexec(holder, "BEGIN");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    res = PQexecParams(holder,
                       "INSERT INTO processed_messages (org_id, message_id,"
                       " passed, checks, failed_rules, payload_sha256)"
                       " VALUES ($1, $2, true, 0, '{}', sha256('abcd'::bytea))",
                       2, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "lock: %s",
                  PQresultErrorMessage(res));
    PQclear(res);
    return holder;
}

void row_lock_release(PGconn *holder)
{
    PQclear(PQexec(holder, "ROLLBACK"));
    PQfinish(holder);
}

int pgfix_run(const char *suite, const struct pgfix_case *cases, size_t n)
{
    Suite *s = suite_create(suite);
    SRunner *sr;
    int failed;

    for (size_t i = 0; i < n; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, pgfix_setup, pgfix_teardown);
        tcase_set_timeout(tc, 60);
        for (size_t j = 0; cases[i].tests[j] != NULL; j++)
            tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
