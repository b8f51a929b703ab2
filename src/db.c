/* db.c — one PostgreSQL connection: open, liveness ladder, cleanliness. */
#include "db.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DB_DEFAULT_CONNECT_TIMEOUT_S 5
/* An idle connection has at most a FATAL and an EOF to read; more reads
 * than this without either means the peer talks when it should not. */
#define DB_IDLE_READS_MAX 4

struct db_conn {
    PGconn *pg;
    uint64_t opened_ns;    /* for logs; the TTL lives in the pool's item */
    uint64_t last_used_ns; /* last successful round trip */
    bool doomed;           /* the server sent a FATAL: it is closing */
};

/* Copy libpq's message without its trailing newline. */
static void db_copy_error(char *err, size_t errlen, const char *prefix,
                          const char *msg)
{
    size_t n = strlen(msg);

    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    snprintf(err, errlen, "%s%.*s", prefix, (int)n, msg);
}

/* Server notices go to our log, not to libpq's default of raw stderr. A
 * FATAL that arrives while idle (idle_session_timeout, pg_terminate_backend)
 * also comes here, and may be read before the socket's EOF is: remember it,
 * the connection is about to close. */
static void db_notice(void *arg, const PGresult *res)
{
    struct db_conn *conn = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char text[512];

    if (sev != NULL &&
        (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        conn->doomed = true;
    db_copy_error(text, sizeof text, "", PQresultErrorMessage(res));
    log_event(conn->doomed ? LOG_WARN : LOG_INFO, "postgres notice",
              "message", text, (const char *)NULL);
}

/* The options the session would have had without ours: the url's own
 * "options", else PGOPTIONS (a keyword given to libpq hides the
 * environment's). "" if none. Copied into buf with a trailing space;
 * false if they do not fit (the caller refuses rather than truncate). */
static bool db_base_options(const char *url, char *buf, size_t len)
{
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    const char *found = NULL;
    int n;

    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val && o->val[0])
            found = o->val;
    if (found == NULL)
        found = getenv("PGOPTIONS");
    n = snprintf(buf, len, "%s%s", found ? found : "", found ? " " : "");
    PQconninfoFree(opts);
    return n >= 0 && (size_t)n < len;
}

int db_conn_open(const struct db_settings *settings, uint64_t now_ns,
                 struct db_conn **out, char *err, size_t errlen)
{
    char timeout[16];
    unsigned t = settings->connect_timeout_s;
    const char *app = settings->application_name;
    /* Bounded queries: a row lock held by another session, or a slow
     * statement, must not hold a request (and a shutdown) forever. Sent as
     * startup options (PgBouncer needs them in ignore_startup_parameters)
     * after the url's own, which the keyword would otherwise replace; an
     * empty value leaves the url's options alone. */
    char base[2048], options[2200] = "";
    unsigned st = settings->statement_timeout_ms;
    *out = NULL;
    if (st > 0 && !db_base_options(settings->url, base, sizeof base)) {
        snprintf(err, errlen, "connect: the url's options are longer than "
                 "%zu bytes", sizeof base - 1);
        return POOLD_ERR_DB;
    }
    if (st > 0)
        snprintf(options, sizeof options,
                 "%s-c statement_timeout=%u -c lock_timeout=%u "
                 "-c idle_in_transaction_session_timeout=%u",
                 base, st, st, st < 1000 ? 1000 : st);
    /* dbname first: expand_dbname=1 expands the url there, and the
     * keywords after it override what the url says. */
    const char *const keys[] = { "dbname", "connect_timeout", "keepalives",
                                 "keepalives_idle", "keepalives_interval",
                                 "keepalives_count", "tcp_user_timeout",
                                 "application_name", "options", NULL };
    const char *vals[] = { settings->url, timeout, "1", "30", "10", "3",
                           "10000", app && *app ? app : "poold", options,
                           NULL };
    struct db_conn *conn;

    *out = NULL;
    snprintf(timeout, sizeof timeout, "%u",
             t > 0 ? t : DB_DEFAULT_CONNECT_TIMEOUT_S);
    conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    conn->pg = PQconnectdbParams(keys, vals, 1);
    if (conn->pg == NULL || PQstatus(conn->pg) != CONNECTION_OK) {
        db_copy_error(err, errlen, "connect: ",
                      conn->pg ? PQerrorMessage(conn->pg) : "out of memory");
        db_conn_close(conn);
        return POOLD_ERR_DB;
    }
    PQsetNoticeReceiver(conn->pg, db_notice, conn);
    conn->opened_ns = now_ns;
    conn->last_used_ns = now_ns;
    *out = conn;
    return POOLD_OK;
}

void db_conn_close(struct db_conn *conn)
{
    if (conn == NULL)
        return;
    PQfinish(conn->pg); /* accepts NULL */
    free(conn);
}

/* Step 2 of the ladder: read whatever the server sent while we were idle.
 * A FATAL (idle_session_timeout 57P05, pg_terminate_backend 57P01) comes
 * first, then EOF, which libpq turns into CONNECTION_BAD. */
static bool db_idle_socket_ok(PGconn *pg)
{
    for (int i = 0; i < DB_IDLE_READS_MAX; i++) {
        struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };
        int n = poll(&pfd, 1, 0);
        PGnotify *note;

        if (pfd.fd < 0 || n < 0)
            return false;
        if (n == 0)
            return true; /* nothing to read: as it should be */
        if (PQconsumeInput(pg) == 0 || PQstatus(pg) != CONNECTION_OK)
            return false;
        while ((note = PQnotifies(pg)) != NULL)
            PQfreemem(note);
    }
    return false;
}

bool db_conn_is_alive(struct db_conn *conn, uint64_t now_ns,
                      uint64_t check_idle_ns)
{
    PGresult *res;
    bool ok;

    if (conn == NULL || PQstatus(conn->pg) != CONNECTION_OK || conn->doomed)
        return false;
    if (!db_idle_socket_ok(conn->pg) || conn->doomed)
        return false;
    /* A clock behind last use (another clock source) counts as not idle. */
    if (now_ns <= conn->last_used_ns ||
        now_ns - conn->last_used_ns <= check_idle_ns)
        return true;
    /* Step 3: one round trip, only for a connection idle long enough that a
     * silently dead path is worth paying for. */
    res = PQexec(conn->pg, "");
    ok = PQresultStatus(res) == PGRES_EMPTY_QUERY;
    PQclear(res);
    if (ok)
        conn->last_used_ns = now_ns;
    return ok && PQstatus(conn->pg) == CONNECTION_OK;
}

bool db_conn_is_clean(const struct db_conn *conn)
{
    return conn != NULL && !conn->doomed &&
           PQstatus(conn->pg) == CONNECTION_OK &&
           PQtransactionStatus(conn->pg) == PQTRANS_IDLE;
}

void db_conn_touch(struct db_conn *conn, uint64_t now_ns)
{
    if (now_ns > conn->last_used_ns)
        conn->last_used_ns = now_ns;
}

int db_conn_backend_pid(const struct db_conn *conn)
{
    return PQbackendPID(conn->pg);
}

PGconn *db_conn_pg(struct db_conn *conn)
{
    return conn->pg;
}

PGresult *db_exec(struct db_conn *conn, const char *what, const char *sql,
                  int nparams, const char *const *params, char *sqlstate,
                  char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn->pg, sql, nparams, NULL, params, NULL,
                                 NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    const char *msg, *state;
    char prefix[96];

    if (sqlstate != NULL)
        sqlstate[0] = '\0';
    if (res != NULL && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK))
        return res;
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate != NULL && state != NULL)
        snprintf(sqlstate, 6, "%s", state);
    msg = res ? PQresultErrorMessage(res) : "";
    if (msg == NULL || *msg == '\0')
        msg = PQerrorMessage(conn->pg);
    snprintf(prefix, sizeof prefix, "%s: ", what);
    db_copy_error(err, errlen, prefix, msg);
    PQclear(res);
    return NULL;
}

static int db_command(struct db_conn *conn, const char *sql, char *err,
                      size_t errlen)
{
    PGresult *res = db_exec(conn, sql, sql, 0, NULL, NULL, err, errlen);

    if (res == NULL)
        return POOLD_ERR_DB;
    PQclear(res);
    return POOLD_OK;
}

int db_begin(struct db_conn *conn, char *err, size_t errlen)
{
    return db_command(conn, "BEGIN", err, errlen);
}

int db_commit(struct db_conn *conn, char *err, size_t errlen)
{
    return db_command(conn, "COMMIT", err, errlen);
}

void db_rollback(struct db_conn *conn)
{
    PQclear(PQexec(conn->pg, "ROLLBACK"));
}
