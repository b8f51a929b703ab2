/* pg_fixture.h — the fixture of the Check tests against a real PostgreSQL
 * (check_db, check_catalog, check_service): a superuser connection for
 * setup and inspection, this process's db settings and service env, and
 * bounded waits on pg_stat_activity. Needs the environment of the "pg"
 * CTest fixture (DATABASE_URL, POOLD_TEST_ADMIN_URL). Not thread-safe:
 * call from the test's own thread. */
#ifndef POOLD_PG_FIXTURE_H
#define POOLD_PG_FIXTURE_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "db.h"
#include "service.h"

/* Set by pgfix_setup(); tests may change settings and env (setup resets
 * them before every test). */
extern const char *db_url;
extern const char *admin_url;
extern PGconn *admin; /* superuser: setup, inspection, terminating backends */
extern char app_name[64]; /* this process's application_name */
extern struct db_settings settings;
extern struct service_env env;
extern char err[512]; /* the error text of the last call that gave one */

/* One Check test case: a name and its tests, NULL-terminated. */
struct pgfix_case {
    const char *name;
    const TTest *tests[16];
};

/* Run the suite of these n cases, pgfix_setup/pgfix_teardown around every
 * test; returns the exit status for main (0: all passed). */
int pgfix_run(const char *suite, const struct pgfix_case *cases, size_t n);

/* Check's checked fixture: connect the superuser, reset settings and env,
 * delete the rows of orgs named tsvc_*; teardown deletes them again. */
void pgfix_setup(void);
void pgfix_teardown(void);

/* Run SQL as the superuser (text params, NULL-terminated); fail the test
 * on an error. The caller PQclear()s the result. */
PGresult *admin_query(const char *sql, ...);
#define admin_exec(...) PQclear(admin_query(__VA_ARGS__, (const char *)NULL))

/* A single integer cell of a query with at most one parameter. */
long long admin_ll(const char *sql, const char *p1);

/* An orgs row (config is JSON text). */
void org_add(const char *id, const char *config, bool enabled);

/* Backends with this process's application_name. */
long long backends_of_app(void);

/* Wait (bounded) until this process has n backends. */
void wait_backends(long long n);

/* Wait (bounded) until a backend has left pg_stat_activity. */
void wait_backend_gone(int pid);

/* Wait (bounded) until a backend waits for a lock (a row lock held by
 * another session). */
void wait_backend_blocked(int pid);

/* pg_terminate_backend(pid), then wait until it is gone. */
void terminate_backend(int pid);

/* Run sql on conn (outside db_run), fail the test unless it succeeds. */
void pg_ok(struct db_conn *conn, const char *sql);

/* A connection with the fixture's settings; the test closes it. */
struct db_conn *open_conn(void);

/* A new superuser session that inserts (org_id, message_id) with payload
 * "abcd" and keeps its transaction open: an insert of the same key waits.
 * Give it back to row_lock_release(), which rolls back and closes. */
PGconn *row_lock_hold(const char *org_id, const char *message_id);
void row_lock_release(PGconn *holder);

#endif
