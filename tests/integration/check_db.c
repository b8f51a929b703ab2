/* check_db.c — one PostgreSQL connection (db): opening with its timeouts
 * and parameters, liveness and cleanliness, db_run's deadlines and abort,
 * db_copy_in, against a real PostgreSQL. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "clock.h"
#include "db.h"
#include "db_test.h"
#include "pg_fixture.h"

START_TEST(db_open_failure_is_reported)
{
    struct db_conn *conn = (struct db_conn *)&conn; /* must be reset */
    struct db_settings s = settings;

    s.url = "postgresql://poold@127.0.0.1:1/pools"; /* nothing listens */
    ck_assert_int_eq(db_conn_open(&s, 0, &conn, err, sizeof err), POOLD_ERR_DB);
    ck_assert_ptr_null(conn);
    ck_assert_msg(strstr(err, "connect:") != NULL, "%s", err);
    ck_assert(err[strlen(err) - 1] != '\n');
    db_conn_close(NULL);
}
END_TEST

/* The session timeouts are added to the url's own options, not instead. */
START_TEST(db_open_keeps_url_options_and_adds_timeouts)
{
    char url[600];
    snprintf(url, sizeof url, "%s%soptions=-c%%20search_path%%3Dtsvc_nowhere",
             db_url, strchr(db_url, '?') ? "&" : "?");
    struct db_settings s = settings;
    s.url = url;
    s.statement_timeout_ms = 1234;
    struct db_conn *conn = NULL;
    ck_assert_int_eq(db_conn_open(&s, clock_now_ns(), &conn, err, sizeof err),
                     POOLD_OK);
    PGresult *res =
        PQexec(db_conn_pg(conn), "SELECT current_setting('search_path'), "
                                 "current_setting('statement_timeout'), "
                                 "current_setting('lock_timeout')");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "tsvc_nowhere");
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "1234ms");
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "1234ms");
    PQclear(res);
    db_conn_close(conn);
}
END_TEST

START_TEST(db_open_sets_parameters)
{
    struct db_conn *conn = open_conn();
    PGconn *pg = db_conn_pg(conn);

    ck_assert_str_eq(PQparameterStatus(pg, "application_name"), app_name);
    PQconninfoOption *opts = PQconninfo(pg);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "keepalives_idle") == 0)
            ck_assert_str_eq(o->val, "30");
        if (strcmp(o->keyword, "tcp_user_timeout") == 0)
            ck_assert_str_eq(o->val, "10000");
        if (strcmp(o->keyword, "connect_timeout") == 0)
            ck_assert_str_eq(o->val, "5");
        if (strcmp(o->keyword, "dbname") == 0)
            ck_assert_str_eq(o->val, "pools"); /* the url was expanded */
    }
    PQconninfoFree(opts);
    ck_assert_int_gt(db_conn_backend_pid(conn), 0);
    ck_assert(db_conn_is_clean(conn));
    ck_assert(db_conn_is_alive(conn, clock_now_ns(), UINT64_MAX));
    /* Idle past the threshold: one empty query, still alive. */
    ck_assert(db_conn_is_alive(conn, clock_now_ns() + 5 * NS_PER_S, 0));
    db_conn_close(conn);
}
END_TEST

START_TEST(db_dirty_connection_is_not_clean)
{
    struct db_conn *conn = open_conn();

    pg_ok(conn, "BEGIN");
    ck_assert(!db_conn_is_clean(conn));
    ck_assert(db_conn_is_alive(conn, clock_now_ns(), UINT64_MAX));
    pg_ok(conn, "ROLLBACK");
    ck_assert(db_conn_is_clean(conn));
    ck_assert(!db_conn_is_clean(NULL));
    db_conn_close(conn);
}
END_TEST

START_TEST(db_terminated_backend_found_without_round_trip)
{
    struct db_conn *conn = open_conn();

    terminate_backend(db_conn_backend_pid(conn));
    /* check_idle_ns = max: only the zero-round-trip step may notice. */
    ck_assert(!db_conn_is_alive(conn, clock_now_ns(), UINT64_MAX));
    ck_assert(!db_conn_is_clean(conn));
    db_conn_close(conn);
}
END_TEST

START_TEST(db_idle_session_timeout_found_without_round_trip)
{
    struct db_conn *conn = open_conn();
    int pid = db_conn_backend_pid(conn);

    pg_ok(conn, "SET idle_session_timeout = '200ms'");
    wait_backend_gone(pid);
    ck_assert(!db_conn_is_alive(conn, clock_now_ns(), UINT64_MAX));
    db_conn_close(conn);
}
END_TEST

/* ----------------------------------------- db_run: deadline and abort */

struct write_arg {
    struct db_conn *conn;
    const char *message_id;
    bool writes;
    uint64_t deadline_ns;
    int rc;
    char err[256];
};

/* An insert of the key that row_lock_hold() holds: it waits for the row. */
static void *blocked_write(void *p)
{
    struct write_arg *a = p;
    const char *params[2] = {"tsvc_dbw", a->message_id};
    const struct db_query q = {
        .sql = "INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, failed_rules, payload_sha256) VALUES ($1, $2, true,"
               " 0, '{}', sha256('abcd'::bytea)) ON CONFLICT DO NOTHING",
        .nparams = 2,
        .values = params,
        .writes = a->writes};
    PGresult *res = NULL;

    a->rc = db_run(a->conn, &q, a->deadline_ns, &res, a->err, sizeof a->err);
    PQclear(res);
    return NULL;
}

/* Run the blocked insert of message_id on a new connection until its
 * deadline (or, with abort_it, until db_abort_all()); returns db_run's
 * status. The connection is doomed afterwards either way, but its backend
 * still waits for the row, and inserts it once the lock is gone: so each
 * test blocks on an id of its own. */
static int run_blocked_write(const char *message_id, bool writes, bool abort_it)
{
    struct write_arg a = {
        .writes = writes, .message_id = message_id, .conn = open_conn()};
    int pid = db_conn_backend_pid(a.conn);
    uint64_t t0 = clock_now_ns();
    pthread_t th;

    a.deadline_ns = t0 + (abort_it ? 30 : 1) * NS_PER_S;
    ck_assert_int_eq(pthread_create(&th, NULL, blocked_write, &a), 0);
    if (abort_it) {
        wait_backend_blocked(pid);
        db_abort_all();
    }
    pthread_join(th, NULL);
    /* The statement did reach the server and waits there for the row
     * still: why a write's outcome is unknown. */
    if (!abort_it)
        wait_backend_blocked(pid);
    /* Ended by its deadline, or by the abort long before it. */
    ck_assert_uint_ge(clock_now_ns() - t0, abort_it ? 0 : NS_PER_S);
    ck_assert_uint_lt(clock_now_ns() - t0,
                      abort_it ? 30 * NS_PER_S : 10 * NS_PER_S);
    ck_assert_msg(strlen(a.err) > 0, "no reason given");
    ck_assert(!db_conn_is_clean(a.conn));
    ck_assert(!db_conn_is_alive(a.conn, clock_now_ns(), 0));
    db_conn_close(a.conn);
    return a.rc;
}

/* No server-side timeout: the client's deadline ends a statement blocked
 * on a row lock; a write sent and unanswered may have committed. */
START_TEST(db_run_deadline_ends_a_blocked_write)
{
    PGconn *holder;

    org_add("tsvc_dbw", "{}", true);
    holder = row_lock_hold("tsvc_dbw", "w1");
    ck_assert_int_eq(run_blocked_write("w1", true, false),
                     POOLD_ERR_COMMIT_UNKNOWN);
    ck_assert_int_eq(run_blocked_write("w1", false, false), POOLD_ERR_DB);
    row_lock_release(holder);
}
END_TEST

START_TEST(db_run_abort_ends_a_blocked_write)
{
    PGconn *holder;
    struct db_conn *conn = (struct db_conn *)&conn;

    org_add("tsvc_dbw", "{}", true);
    holder = row_lock_hold("tsvc_dbw", "w2");
    ck_assert_int_eq(run_blocked_write("w2", true, true),
                     POOLD_ERR_COMMIT_UNKNOWN);
    row_lock_release(holder);
    /* And every later wait ends at once: no connection opens. */
    ck_assert_int_eq(
        db_conn_open(&settings, clock_now_ns(), &conn, err, sizeof err),
        POOLD_ERR_DB);
    ck_assert_ptr_null(conn);
}
END_TEST

/* SELECT 1 on conn through db_run: its status. */
static int select_one(struct db_conn *conn)
{
    static const struct db_query q = {.sql = "SELECT 1"};
    PGresult *res = NULL;
    char why[256];
    int rc = db_run(conn, &q, 0, &res, why, sizeof why);

    PQclear(res);
    return rc;
}

#define COPY_SQL                                                               \
    "COPY processed_messages (org_id, message_id, passed, checks,"             \
    " payload_sha256) FROM STDIN"

/* db_copy_in of one row (text format) for message_id; its status, and
 * the rows stored in *rows (-1: no result). */
static int copy_one(struct db_conn *conn, const char *sql,
                    const char *message_id, uint64_t deadline_ns, long *rows)
{
    char data[128], why[256];
    PGresult *res = NULL;
    int n = snprintf(data, sizeof data, "tsvc_dbc\t%s\tt\t0\t\\\\x00\n",
                     message_id);
    int rc = db_copy_in(conn, sql, data, (size_t)n, deadline_ns, &res, why,
                        sizeof why);

    *rows = res != NULL ? strtol(PQcmdTuples(res), NULL, 10) : -1;
    ck_assert_msg(rc == POOLD_OK || strlen(why) > 0, "no reason given");
    PQclear(res);
    return rc;
}

/* A COPY of message_id on a new connection, held up until its deadline
 * (1.5 s: the start alone must come well within it, even under two
 * sanitizer suites): its status is want, and the connection is not
 * clean. */
static void copy_blocked(const char *message_id, int want)
{
    struct db_conn *conn = open_conn();
    long rows;

    ck_assert_int_eq(copy_one(conn, COPY_SQL, message_id,
                              clock_now_ns() + 3 * NS_PER_S / 2, &rows),
                     want);
    ck_assert(!db_conn_is_clean(conn));
    db_conn_close(conn);
}

/* COPY … FROM STDIN: stores, is refused whole by a stored key or an
 * unknown table (the connection fit for the next statement), stores
 * nothing when its WHERE says no; one held up before its data by the
 * deadline wrote nothing, and one whose data went out but whose answer
 * did not come by the deadline may have committed. */
START_TEST(db_copy_in_stores_refuses_and_is_bounded)
{
    struct db_conn *conn = open_conn();
    PGconn *holder;
    long rows;

    ck_assert_int_eq(copy_one(conn, COPY_SQL, "c1", 0, &rows), POOLD_OK);
    ck_assert_int_eq(rows, 1);
    ck_assert_int_eq(copy_one(conn, COPY_SQL, "c1", 0, &rows), POOLD_ERR_DB);
    ck_assert_str_eq(db_conn_sqlstate(conn), "23505");
    ck_assert(db_conn_is_clean(conn));
    ck_assert_int_eq(select_one(conn), POOLD_OK);
    ck_assert_int_eq(
        copy_one(conn, "COPY no_such_table (a) FROM STDIN", "c2", 0, &rows),
        POOLD_ERR_DB);
    ck_assert_str_eq(db_conn_sqlstate(conn), "42P01");
    ck_assert(db_conn_is_clean(conn));
    ck_assert_int_eq(copy_one(conn, COPY_SQL " WHERE false", "c3", 0, &rows),
                     POOLD_OK);
    ck_assert_int_eq(rows, 0);
    ck_assert_int_eq(select_one(conn), POOLD_OK);
    db_conn_close(conn);

    /* Blocked at its start by a lock on the table until the deadline:
     * its data never went out, so nothing can have been stored. */
    holder = PQconnectdb(admin_url);
    ck_assert(PQstatus(holder) == CONNECTION_OK);
    PQclear(PQexec(holder, "BEGIN; LOCK TABLE processed_messages"));
    copy_blocked("c5", POOLD_ERR_DB);
    PQclear(PQexec(holder, "COMMIT"));
    PQfinish(holder);

    /* Blocked on another session's uncommitted row of the same key. */
    holder = row_lock_hold("tsvc_dbc", "c4");
    copy_blocked("c4", POOLD_ERR_COMMIT_UNKNOWN);
    row_lock_release(holder);
}
END_TEST

/* ---- between COPY's start and its data
 *
 * check_db links with -Wl,--wrap=PQresultStatus,--wrap=PQflush
 * (tests/tests.cmake): db.c's calls to those two libpq functions come here
 * first. Armed, the first, seeing the server's CopyInResponse, does what
 * copy_between says before db_copy_in reads it; the second turns a flush
 * that leaves data unsent into a failure, as a socket that breaks then
 * would. Unarmed, both only pass through. */
ExecStatusType __real_PQresultStatus(const PGresult *res);
int __real_PQflush(PGconn *pg);

enum copy_between { COPY_PASS, COPY_FENCE, COPY_LATE, COPY_FLUSH_FAILS };
static enum copy_between copy_between;
static uint64_t copy_deadline_ns;
static bool copy_started, copy_flush_cut;

ExecStatusType __wrap_PQresultStatus(const PGresult *res)
{
    ExecStatusType st = __real_PQresultStatus(res);

    if (st != PGRES_COPY_IN || copy_started)
        return st;
    copy_started = true;
    if (copy_between == COPY_FENCE)
        db_fence(true);
    while (copy_between == COPY_LATE && clock_now_ns() < copy_deadline_ns)
        clock_sleep_ms(1); /* until the deadline has passed, by the clock */
    return st;
}

int __wrap_PQflush(PGconn *pg)
{
    int f = __real_PQflush(pg);

    if (f != 1 || copy_between != COPY_FLUSH_FAILS || !copy_started)
        return f;
    copy_flush_cut = true;
    return -1; /* libpq still holds the rest, the end among it */
}

/* A COPY of `rows` rows whose ids begin with tag, on a new fenceable
 * connection with `between` armed: its status (its error in err), and the
 * rows stored once the connection is closed; the connection was not
 * clean unless the COPY succeeded. */
static int copy_cut(enum copy_between between, const char *tag, int rows,
                    long long *stored)
{
    struct db_settings s = settings;
    struct db_conn *conn = NULL;
    size_t cap = (size_t)rows * 64, len = 0;
    char *data = malloc(cap), like[64];
    PGresult *res = NULL;
    int rc;

    ck_assert_ptr_nonnull(data);
    for (int i = 0; i < rows; i++)
        len += (size_t)snprintf(data + len, cap - len,
                                "tsvc_dbc\t%s-%d\tt\t0\t\\\\x00\n", tag, i);
    s.fenceable = true;
    ck_assert_int_eq(db_conn_open(&s, clock_now_ns(), &conn, err, sizeof err),
                     POOLD_OK);
    /* A small send buffer: the data waits in libpq, not in the kernel. */
    ck_assert_int_eq(setsockopt(PQsocket(db_conn_pg(conn)), SOL_SOCKET,
                                SO_SNDBUF, &(int){4096}, sizeof(int)),
                     0);
    copy_deadline_ns = clock_now_ns() + (between == COPY_LATE ? 3 * NS_PER_S / 2
                                                              : 60 * NS_PER_S);
    copy_started = copy_flush_cut = false;
    copy_between = between;
    rc = db_copy_in(conn, COPY_SQL, data, len, copy_deadline_ns, &res, err,
                    sizeof err);
    copy_between = COPY_PASS;
    ck_assert(copy_started);
    ck_assert(rc == POOLD_OK || !db_conn_is_clean(conn));
    PQclear(res);
    db_conn_close(conn); /* must not send what was held back */
    db_fence(false);
    free(data);
    snprintf(like, sizeof like, "%s-%%", tag);
    *stored = admin_ll("SELECT count(*) FROM processed_messages"
                       " WHERE org_id = 'tsvc_dbc' AND message_id LIKE $1",
                       like);
    return rc;
}

/* The fence or the deadline that comes when the server is ready for
 * COPY's data, before it is sent, ends the COPY: nothing stored, a
 * definite failure. So does a flush that cannot hand COPY's end to the
 * kernel, and closing that connection does not send the rest. */
START_TEST(db_copy_in_cut_between_start_and_data)
{
    long long stored;

    ck_assert_int_eq(copy_cut(COPY_FENCE, "cut1", 1, &stored), POOLD_ERR_DB);
    ck_assert_msg(strstr(err, "before its data was sent (fenced") != NULL, "%s",
                  err);
    ck_assert_int_eq(stored, 0);
    ck_assert_int_eq(copy_cut(COPY_LATE, "cut2", 1, &stored), POOLD_ERR_DB);
    ck_assert_msg(strstr(err, "before its data was sent (deadline)") != NULL,
                  "%s", err);
    ck_assert_int_eq(stored, 0);
    /* 400 000 rows (13 MB): more than the socket takes at once. */
    ck_assert_int_eq(copy_cut(COPY_FLUSH_FAILS, "cut3", 400000, &stored),
                     POOLD_ERR_DB);
    ck_assert_msg(copy_flush_cut, "the data all left before the flush");
    ck_assert_int_eq(stored, 0);
    /* Unarmed, the same COPY stores its row. */
    ck_assert_int_eq(copy_cut(COPY_PASS, "cut4", 1, &stored), POOLD_OK);
    ck_assert_int_eq(stored, 1);
}
END_TEST

/* The cluster's fence ends the waits of fenceable connections only, and
 * sends nothing on them while it is up; lowered, new ones work. */
START_TEST(db_fence_ends_fenceable_waits_only)
{
    PGconn *holder;
    struct write_arg a = {.writes = true, .message_id = "w3"};
    struct db_conn *plain = open_conn();
    struct db_conn *idle, *again;
    uint64_t t0;
    pthread_t th;

    org_add("tsvc_dbw", "{}", true);
    holder = row_lock_hold("tsvc_dbw", "w3");
    settings.fenceable = true;
    a.conn = open_conn();
    idle = open_conn();
    ck_assert(db_conn_is_clean(idle));
    t0 = clock_now_ns();
    a.deadline_ns = t0 + 30 * NS_PER_S;
    ck_assert_int_eq(pthread_create(&th, NULL, blocked_write, &a), 0);
    wait_backend_blocked(db_conn_backend_pid(a.conn));
    db_fence(true);
    pthread_join(th, NULL);
    ck_assert_int_eq(a.rc, POOLD_ERR_COMMIT_UNKNOWN);
    ck_assert_uint_lt(clock_now_ns() - t0, 10 * NS_PER_S);
    ck_assert_msg(strstr(a.err, "fenced") != NULL, "%s", a.err);
    /* An open fenceable connection sends nothing, and is not clean. */
    ck_assert(!db_conn_is_clean(idle));
    ck_assert_int_eq(select_one(idle), POOLD_ERR_DB);
    db_conn_close(idle);
    /* No fenceable connection opens; housekeeping's kind works on. */
    again = (struct db_conn *)&again;
    ck_assert_int_eq(
        db_conn_open(&settings, clock_now_ns(), &again, err, sizeof err),
        POOLD_ERR_DB);
    ck_assert_ptr_null(again);
    ck_assert(db_conn_is_alive(plain, clock_now_ns(), 0));
    db_fence(false);
    again = open_conn();
    ck_assert(db_conn_is_alive(again, clock_now_ns(), 0));
    db_conn_close(again);
    db_conn_close(a.conn);
    db_conn_close(plain);
    row_lock_release(holder);
}
END_TEST

/* A fence raised and lowered at once (a heartbeat that commits just past
 * half the lease) still ends with every connection open before it: none
 * is used again, whether it waited or not while it was up. */
START_TEST(db_fence_raised_and_lowered_still_counts)
{
    struct db_conn *before, *after;
    uint64_t gen;

    settings.fenceable = true;
    before = open_conn();
    ck_assert_int_eq(select_one(before), POOLD_OK);
    gen = db_fence_generation();
    ck_assert(!db_fence_since(gen));
    db_fence(true);
    db_fence(false);
    ck_assert(!db_is_fenced());
    ck_assert(db_fence_since(gen));
    ck_assert(!db_conn_is_clean(before));
    ck_assert(!db_conn_is_alive(before, clock_now_ns(), 0));
    ck_assert_int_eq(select_one(before), POOLD_ERR_DB);
    after = open_conn();
    ck_assert_int_eq(select_one(after), POOLD_OK);
    ck_assert(db_conn_is_clean(after));
    db_conn_close(after);
    db_conn_close(before);
}
END_TEST

int main(void)
{
    const struct pgfix_case cases[] = {
        {"db",
         {db_open_failure_is_reported, db_open_sets_parameters,
          db_open_keeps_url_options_and_adds_timeouts,
          db_dirty_connection_is_not_clean,
          db_terminated_backend_found_without_round_trip,
          db_idle_session_timeout_found_without_round_trip,
          db_fence_ends_fenceable_waits_only,
          db_fence_raised_and_lowered_still_counts,
          db_copy_in_stores_refuses_and_is_bounded,
          db_copy_in_cut_between_start_and_data}},
        /* db_abort_all() is irreversible: the abort test comes last. */
        {"deadline",
         {db_run_deadline_ends_a_blocked_write,
          db_run_abort_ends_a_blocked_write}},
    };

    return pgfix_run("db", cases, sizeof cases / sizeof cases[0]);
}
