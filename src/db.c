/* db.c — one PostgreSQL connection: open, bounded statements, liveness. */
#include "db.h"
#include "db_test.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define DB_DEFAULT_CONNECT_TIMEOUT_S 5
#define DB_DEFAULT_QUERY_WAIT_NS (5 * NS_PER_S)
/* How soon a backend notices that its client is gone while it runs a
 * statement (PostgreSQL 14+): a request abandoned at its deadline does not
 * leave a backend waiting on a lock for ever. */
#define DB_CLIENT_CHECK_MS 1000
/* An idle connection has at most a FATAL and an EOF to read; more reads
 * than this without either means the peer talks when it should not. */
#define DB_IDLE_READS_MAX 4
/* A fenceable connection's wait looks at the fence generation this often
 * at least (db_fence). */
#define DB_FENCE_RECHECK_MS 250

struct db_conn {
    PGconn *pg;
    uint64_t opened_ns;     /* for logs; the TTL lives in the pool's item */
    uint64_t last_used_ns;  /* last successful round trip */
    uint64_t query_wait_ns; /* default bound of one statement */
    unsigned prepared_set;  /* bit n: statement n is prepared here */
    bool use_prepared;      /* POOLD_PREPARED_STATEMENTS */
    bool fenceable;         /* counts against the cluster's budget: the
                               fence (db_fence) ends its statements */
    uint64_t fence_gen;     /* db_fence_gen when it was opened */
    bool doomed;            /* FATAL seen, deadline missed, or lost: never
                               reuse */
    bool pending;           /* a statement was sent and its whole answer
                               not read: the backend may still be at work */
    int local_port;         /* our end's TCP port (pg_stat_activity's
                               client_port); -1 on a Unix socket */
    char sqlstate[6];       /* of the last statement's error, "" if none */
};

/* The thread's cap on deadlines (0: none). */
static _Thread_local uint64_t db_thread_cap_ns;

/* db_abort_all(): an eventfd that, once written, stays readable, polled
 * beside every socket wait. */
static pthread_once_t db_abort_once = PTHREAD_ONCE_INIT;
static int db_abort_fd = -1;
static atomic_bool db_aborted;
/* db_fence(): the same for fenceable connections, while it is up: written
 * after db_fenced is set, drained before it is cleared. A fence raised and
 * lowered at once may be drained before a waiter ran: the generation,
 * counted at each raise, still says its connection predates a fence, and
 * a fenceable wait looks at it every DB_FENCE_RECHECK_MS at least. */
static int db_fence_fd = -1;
static atomic_bool db_fenced;
static atomic_uint_fast64_t db_fence_gen;

static void db_abort_init(void)
{
    db_abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    db_fence_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void db_fence(bool up)
{
    uint64_t v = 1;

    pthread_once(&db_abort_once, db_abort_init);
    if (up) {
        atomic_fetch_add(&db_fence_gen, 1);
        atomic_store(&db_fenced, true);
        if (db_fence_fd >= 0 && write(db_fence_fd, &v, sizeof v) < 0)
            log_event(LOG_WARN, "fence signal not written", (const char *)NULL);
        return;
    }
    if (db_fence_fd >= 0 && read(db_fence_fd, &v, sizeof v) < 0 &&
        errno != EAGAIN)
        log_event(LOG_WARN, "fence signal not read", (const char *)NULL);
    atomic_store(&db_fenced, false);
}

bool db_is_fenced(void)
{
    return atomic_load(&db_fenced);
}

uint64_t db_fence_generation(void)
{
    return atomic_load(&db_fence_gen);
}

bool db_fence_since(uint64_t gen)
{
    return atomic_load(&db_fenced) || atomic_load(&db_fence_gen) != gen;
}

void db_abort_all(void)
{
    uint64_t one = 1;

    pthread_once(&db_abort_once, db_abort_init);
    atomic_store(&db_aborted, true);
    if (db_abort_fd >= 0 && write(db_abort_fd, &one, sizeof one) < 0)
        log_event(LOG_WARN, "abort signal not written", (const char *)NULL);
}

void db_thread_deadline(uint64_t deadline_ns)
{
    db_thread_cap_ns = deadline_ns;
}

uint64_t db_thread_deadline_get(void)
{
    return db_thread_cap_ns;
}

static uint64_t db_cap(uint64_t deadline_ns)
{
    uint64_t cap = db_thread_cap_ns;
    return cap != 0 && cap < deadline_ns ? cap : deadline_ns;
}

/* Is conn past a fence: one is up, or one was raised since it opened? */
static bool db_conn_fenced(const struct db_conn *conn)
{
    return conn->fenceable && (atomic_load(&db_fenced) ||
                               atomic_load(&db_fence_gen) != conn->fence_gen);
}

/* Is there something to read on fd right now? */
static bool db_readable_now(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0 && pfd.revents != 0;
}

/* Wait for events on conn's socket until deadline_ns, an abort or (if conn
 * is fenceable) a fence: 1 ready, 0 deadline passed, aborted or fenced, -1
 * poll failed. Past a fence, an answer already there is still read. */
static int db_poll(const struct db_conn *conn, short events,
                   uint64_t deadline_ns)
{
    int fd = PQsocket(conn->pg);

    pthread_once(&db_abort_once, db_abort_init);
    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = fd, .events = events},
            {.fd = db_abort_fd, .events = POLLIN},
            {.fd = conn->fenceable ? db_fence_fd : -1, .events = POLLIN}};
        uint64_t now = clock_now_ns();
        int ms, n;

        if (atomic_load(&db_aborted) || now >= deadline_ns)
            return 0;
        if (db_conn_fenced(conn))
            return db_readable_now(fd) ? 1 : 0;
        ms = (int)((deadline_ns - now + NS_PER_MS - 1) / NS_PER_MS);
        if (conn->fenceable && ms > DB_FENCE_RECHECK_MS)
            ms = DB_FENCE_RECHECK_MS;
        n = poll(pfd, 3, ms); /* a negative fd is ignored */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (atomic_load(&db_aborted))
            return 0;
        if (n > 0 && pfd[0].revents != 0)
            return 1;
        /* Otherwise the fence, or the recheck: seen at the top. */
    }
}

/* Why a wait ended early, for the error message. */
static const char *db_cut_why(const struct db_conn *conn)
{
    if (atomic_load(&db_aborted))
        return " (aborted)";
    if (db_conn_fenced(conn))
        return " (fenced: the replica's lease lapsed)";
    return "";
}

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

    if (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        conn->doomed = true;
    db_copy_error(text, sizeof text, "", PQresultErrorMessage(res));
    log_event(conn->doomed ? LOG_WARN : LOG_INFO, "postgres notice", "message",
              text, (const char *)NULL);
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

/* The session's startup options: the url's, then ours (which win). Bounded
 * queries: a row lock held by another session, or a slow statement, must
 * not hold a request (and a shutdown) forever; and a backend whose client
 * left checks for it while it works. And generic plans for our prepared
 * statements: against the partitioned processed_messages PostgreSQL kept
 * choosing custom plans, so every execution of a commit was planned again
 * (0.2 ms of the server's CPU per statement, measured with EXPLAIN ANALYZE
 * on a group INSERT; 0.02 ms with the generic plan, whose partitions are
 * pruned at executor start-up). PgBouncer needs these in
 * ignore_startup_parameters. With POOLD_STATEMENT_TIMEOUT_MS=0 none are
 * sent (an empty value leaves the url's options alone). */
static bool db_options(const struct db_settings *s, char *buf, size_t len)
{
    char base[2048];
    unsigned st = s->statement_timeout_ms;
    int n;

    if (st == 0) { /* server defaults: no options of ours, so nothing for
                    * PgBouncer to ignore; the url's own stay as they are */
        buf[0] = '\0';
        return true;
    }
    if (!db_base_options(s->url, base, sizeof base))
        return false;
    n = snprintf(buf, len,
                 "%s-c statement_timeout=%u -c lock_timeout=%u "
                 "-c idle_in_transaction_session_timeout=%u "
                 "-c client_connection_check_interval=%u "
                 "-c plan_cache_mode=force_generic_plan",
                 base, st, st, st < 1000 ? 1000 : st, DB_CLIENT_CHECK_MS);
    return n >= 0 && (size_t)n < len;
}

/* Drive PQconnectPoll until the connection is made or the deadline. */
static int db_connect_poll(const struct db_conn *conn, uint64_t deadline_ns,
                           char *err, size_t errlen)
{
    PGconn *pg = conn->pg;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;

    while (st != PGRES_POLLING_OK) {
        int ready;

        if (st == PGRES_POLLING_FAILED) {
            db_copy_error(err, errlen, "connect: ", PQerrorMessage(pg));
            return POOLD_ERR_DB;
        }
        ready = db_poll(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                        deadline_ns);
        if (ready <= 0) {
            snprintf(err, errlen, "connect: %s%s",
                     ready == 0 ? "no answer before the deadline"
                                : "poll failed",
                     ready == 0 ? db_cut_why(conn) : "");
            return POOLD_ERR_DB;
        }
        st = PQconnectPoll(pg);
    }
    return POOLD_OK;
}

/* The local TCP port of fd (what the server shows as client_port), or -1
 * (a Unix socket, or unknown). */
static int db_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

int db_conn_open(const struct db_settings *settings, uint64_t now_ns,
                 struct db_conn **out, char *err, size_t errlen)
{
    unsigned t = settings->connect_timeout_s;
    const char *app = settings->application_name;
    char options[2400], timeout[16];
    /* dbname first: expand_dbname=1 expands the url there, and the
     * keywords after it override what the url says. connect_timeout is
     * ours to enforce (PQconnectPoll ignores it; kept for the record). */
    const char *const keys[] = {"dbname",
                                "connect_timeout",
                                "keepalives",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                "application_name",
                                "options",
                                NULL};
    const char *vals[] = {
        settings->url, timeout, "1",     "30",
        "10",          "3",     "10000", app && *app ? app : "poold",
        options,       NULL};
    uint64_t deadline;
    struct db_conn *conn;
    int rc;

    *out = NULL;
    t = t ? t : DB_DEFAULT_CONNECT_TIMEOUT_S;
    snprintf(timeout, sizeof timeout, "%u", t);
    deadline = db_cap(clock_now_ns() + (uint64_t)t * NS_PER_S);
    if (!db_options(settings, options, sizeof options)) {
        snprintf(err, errlen, "connect: the url's options are too long");
        return POOLD_ERR_DB;
    }
    conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    conn->fenceable = settings->fenceable;
    conn->fence_gen = atomic_load(&db_fence_gen);
    conn->pg = PQconnectStartParams(keys, vals, 1);
    if (conn->pg == NULL || PQstatus(conn->pg) == CONNECTION_BAD) {
        db_copy_error(err, errlen, "connect: ",
                      conn->pg ? PQerrorMessage(conn->pg) : "out of memory");
        db_conn_close(conn);
        return POOLD_ERR_DB;
    }
    rc = db_connect_poll(conn, deadline, err, errlen);
    if (rc == POOLD_OK && PQsetnonblocking(conn->pg, 1) != 0) {
        db_copy_error(err, errlen, "connect: ", PQerrorMessage(conn->pg));
        rc = POOLD_ERR_DB;
    }
    if (rc != POOLD_OK) {
        db_conn_close(conn);
        return rc;
    }
    PQsetNoticeReceiver(conn->pg, db_notice, conn);
    conn->local_port = db_local_port(PQsocket(conn->pg));
    conn->opened_ns = now_ns;
    conn->last_used_ns = now_ns;
    conn->query_wait_ns = settings->query_wait_ns ? settings->query_wait_ns
                                                  : DB_DEFAULT_QUERY_WAIT_NS;
    conn->use_prepared = settings->prepared;
    *out = conn;
    return POOLD_OK;
}

void db_conn_close(struct db_conn *conn)
{
    if (conn == NULL)
        return;
    /* PQfinish() flushes what libpq still holds to send before its goodbye:
     * on a doomed connection that may be the tail of a statement or of a
     * COPY's data that a deadline or the fence stopped, reported as not
     * sent. Nothing more leaves it. */
    if (conn->doomed && conn->pg != NULL && PQsocket(conn->pg) >= 0)
        shutdown(PQsocket(conn->pg), SHUT_RDWR);
    PQfinish(conn->pg); /* accepts NULL */
    free(conn);
}

/* ------------------------------------------------- bounded statements */

/* What one round trip ended with. */
enum db_wait_end { DB_WAIT_DONE, DB_WAIT_EXPIRED, DB_WAIT_LOST };

/* Send what libpq has queued. */
static enum db_wait_end db_flush(const struct db_conn *conn,
                                 uint64_t deadline_ns)
{
    PGconn *pg = conn->pg;
    int f;

    while ((f = PQflush(pg)) == 1) {
        int r = db_poll(conn, POLLOUT | POLLIN, deadline_ns);
        if (r == 0)
            return DB_WAIT_EXPIRED;
        if (r < 0 || PQconsumeInput(pg) == 0)
            return DB_WAIT_LOST;
    }
    return f == 0 ? DB_WAIT_DONE : DB_WAIT_LOST;
}

/* Wait for libpq's next result (NULL: none left, ReadyForQuery read). */
static enum db_wait_end db_next(const struct db_conn *conn,
                                uint64_t deadline_ns, PGresult **res)
{
    PGconn *pg = conn->pg;

    while (PQisBusy(pg)) {
        int r = db_poll(conn, POLLIN, deadline_ns);
        if (r == 0)
            return DB_WAIT_EXPIRED;
        if (r < 0 || PQconsumeInput(pg) == 0)
            return DB_WAIT_LOST;
    }
    *res = PQgetResult(pg);
    return DB_WAIT_DONE;
}

/* Read every result until libpq has none left (ReadyForQuery). Keeps the
 * first error result, else the first result, in *out. */
static enum db_wait_end db_collect(const struct db_conn *conn,
                                   uint64_t deadline_ns, PGresult **out)
{
    PGresult *res;
    enum db_wait_end end;

    *out = NULL;
    while ((end = db_next(conn, deadline_ns, &res)) == DB_WAIT_DONE) {
        if (res == NULL)
            return DB_WAIT_DONE;
        if (*out == NULL || (PQresultStatus(res) == PGRES_FATAL_ERROR &&
                             PQresultStatus(*out) != PGRES_FATAL_ERROR)) {
            PQclear(*out);
            *out = res;
        } else {
            PQclear(res);
        }
    }
    return end;
}

static bool db_result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ||
           st == PGRES_EMPTY_QUERY;
}

/* A FATAL or PANIC ends the session: whatever it was doing, unknown. */
static bool db_result_fatal(const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev != NULL &&
           (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
}

/* Classify how a round trip ended: end, and res (owned here) its first
 * error or first result. */
static int db_judge(struct db_conn *conn, enum db_wait_end end, PGresult *res,
                    bool writes, PGresult **out, char *err, size_t errlen)
{
    PGconn *pg = conn->pg;

    /* Answered up to ReadyForQuery (or the server closed: a FATAL or EOF
     * read): the backend is idle or gone. Otherwise it may still work. */
    if (end == DB_WAIT_DONE || end == DB_WAIT_LOST ||
        PQstatus(pg) != CONNECTION_OK)
        conn->pending = false;
    if (end == DB_WAIT_DONE && res != NULL && db_result_ok(res) &&
        PQstatus(pg) == CONNECTION_OK) {
        *out = res;
        return POOLD_OK;
    }
    if (end != DB_WAIT_DONE || res == NULL || db_result_fatal(res) ||
        PQstatus(pg) != CONNECTION_OK) {
        conn->doomed = true;
        if (end == DB_WAIT_EXPIRED)
            snprintf(err, errlen,
                     "no answer from the database before the "
                     "deadline%s",
                     db_cut_why(conn));
        else
            db_copy_error(err, errlen, "connection lost: ",
                          res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
        PQclear(res);
        return writes ? POOLD_ERR_COMMIT_UNKNOWN : POOLD_ERR_DB;
    }
    db_copy_error(err, errlen, "", PQresultErrorMessage(res));
    if (PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL)
        snprintf(conn->sqlstate, sizeof conn->sqlstate, "%s",
                 PQresultErrorField(res, PG_DIAG_SQLSTATE));
    PQclear(res);
    return POOLD_ERR_DB; /* an ERROR: the autocommit statement rolled back */
}

/* One round trip already sent: wait for its answer and classify it. */
static int db_finish(struct db_conn *conn, bool writes, uint64_t deadline_ns,
                     PGresult **out, char *err, size_t errlen)
{
    enum db_wait_end end = db_flush(conn, deadline_ns);
    PGresult *res = NULL;

    conn->pending = true;
    if (end == DB_WAIT_DONE)
        end = db_collect(conn, deadline_ns, &res);
    return db_judge(conn, end, res, writes, out, err, errlen);
}

static void db_stmt_name(unsigned stmt, char *buf, size_t len)
{
    snprintf(buf, len, "poold_%u", stmt);
}

/* Prepare q's named statement on this connection if it is not yet. */
static int db_prepare(struct db_conn *conn, const struct db_query *q,
                      uint64_t deadline_ns, char *err, size_t errlen)
{
    unsigned bit = 1u << (q->stmt - 1);
    char name[32];
    PGresult *res = NULL;
    int rc;

    if (conn->prepared_set & bit)
        return POOLD_OK;
    db_stmt_name(q->stmt, name, sizeof name);
    if (!PQsendPrepare(conn->pg, name, q->sql, q->nparams, q->types)) {
        conn->doomed = true;
        db_copy_error(err, errlen, "prepare: ", PQerrorMessage(conn->pg));
        return POOLD_ERR_DB;
    }
    /* Nothing that could commit was sent: never "unknown". */
    rc = db_finish(conn, false, deadline_ns, &res, err, errlen);
    PQclear(res);
    if (rc == POOLD_OK)
        conn->prepared_set |= bit;
    return rc;
}

/* Before a statement is sent: its deadline (0: the connection's default
 * wait; capped as db_thread_deadline says), and whether it may be sent. */
static int db_may_send(struct db_conn *conn, uint64_t *deadline_ns,
                       PGresult **out, char *err, size_t errlen)
{
    *out = NULL;
    conn->sqlstate[0] = '\0';
    if (*deadline_ns == 0)
        *deadline_ns = clock_now_ns() + conn->query_wait_ns;
    *deadline_ns = db_cap(*deadline_ns);
    if (conn->doomed || PQstatus(conn->pg) != CONNECTION_OK) {
        snprintf(err, errlen, "the connection is closed");
        return POOLD_ERR_DB;
    }
    if (db_conn_fenced(conn)) {
        conn->doomed = true; /* closed when given back */
        snprintf(err, errlen, "not sent: the replica's lease lapsed (fenced)");
        return POOLD_ERR_DB;
    }
    return POOLD_OK;
}

int db_run(struct db_conn *conn, const struct db_query *q, uint64_t deadline_ns,
           PGresult **out, char *err, size_t errlen)
{
    bool named = q->stmt != 0 && q->stmt <= DB_STMT_MAX && conn->use_prepared;
    char name[32];
    int sent, rc;

    rc = db_may_send(conn, &deadline_ns, out, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    if (named) {
        rc = db_prepare(conn, q, deadline_ns, err, errlen);
        if (rc != POOLD_OK)
            return rc;
        db_stmt_name(q->stmt, name, sizeof name);
        sent = PQsendQueryPrepared(conn->pg, name, q->nparams, q->values,
                                   q->lengths, q->formats, 0);
    } else {
        sent = PQsendQueryParams(conn->pg, q->sql, q->nparams, q->types,
                                 q->values, q->lengths, q->formats, 0);
    }
    if (!sent) {
        conn->doomed = true;
        db_copy_error(err, errlen, "send: ", PQerrorMessage(conn->pg));
        return POOLD_ERR_DB; /* libpq refused it: nothing went out */
    }
    rc = db_finish(conn, q->writes, deadline_ns, out, err, errlen);
    if (rc == POOLD_OK)
        db_conn_touch(conn, clock_now_ns());
    return rc;
}

/* The server waits for COPY's data: send it and its end, unless the fence,
 * the abort or the deadline came meanwhile (then the COPY is ended with an
 * error: nothing stored). Until the end is wholly handed to the kernel
 * nothing can commit; from then on a lost answer is "unknown". */
static int db_copy_data(struct db_conn *conn, const char *data, size_t len,
                        uint64_t deadline_ns, PGresult **out, char *err,
                        size_t errlen)
{
    PGconn *pg = conn->pg;
    bool late = clock_now_ns() >= deadline_ns;
    bool held = late || db_conn_fenced(conn) || atomic_load(&db_aborted);
    bool stop = held;
    enum db_wait_end end;
    PGresult *res = NULL;
    int rc;

    /* 0 (nonblocking, nothing queued) happens only when out of memory. */
    if ((!stop && PQputCopyData(pg, data, (int)len) != 1) ||
        PQputCopyEnd(pg, stop ? "poold: not sent" : NULL) != 1) {
        conn->doomed = true; /* closed mid-COPY: the server aborts it */
        db_copy_error(err, errlen, "COPY: ", PQerrorMessage(pg));
        return POOLD_ERR_DB;
    }
    end = db_flush(conn, deadline_ns);
    if (end == DB_WAIT_DONE)
        end = db_collect(conn, deadline_ns, &res);
    else
        stop = true; /* the end may not have left: nothing can commit */
    rc = db_judge(conn, end, res, !stop, out, err, errlen);
    if (held && rc != POOLD_OK)
        snprintf(err, errlen, "COPY ended before its data was sent%s",
                 late ? " (deadline)" : db_cut_why(conn));
    return rc;
}

int db_copy_in(struct db_conn *conn, const char *sql, const char *data,
               size_t len, uint64_t deadline_ns, PGresult **out, char *err,
               size_t errlen)
{
    enum db_wait_end end;
    PGresult *res = NULL, *rest = NULL;
    int rc = db_may_send(conn, &deadline_ns, out, err, errlen);

    if (rc != POOLD_OK)
        return rc;
    if (len > INT32_MAX || !PQsendQuery(conn->pg, sql)) {
        conn->doomed = true;
        db_copy_error(err, errlen, "send: ",
                      len > INT32_MAX ? "COPY data too long"
                                      : PQerrorMessage(conn->pg));
        return POOLD_ERR_DB;
    }
    /* Until the end of the data is sent nothing can commit: a failure
     * before it is a definite "not written". */
    conn->pending = true;
    end = db_flush(conn, deadline_ns);
    if (end == DB_WAIT_DONE)
        end = db_next(conn, deadline_ns, &res);
    if (end == DB_WAIT_DONE && PQresultStatus(res) == PGRES_COPY_IN) {
        PQclear(res);
        rc = db_copy_data(conn, data, len, deadline_ns, out, err, errlen);
        if (rc == POOLD_OK)
            db_conn_touch(conn, clock_now_ns());
        return rc;
    }
    /* Refused before the data (an error), or no answer: drain what is
     * left up to ReadyForQuery, keeping the first error. */
    if (end == DB_WAIT_DONE && res != NULL) {
        end = db_collect(conn, deadline_ns, &rest);
        PQclear(rest);
    }
    return db_judge(conn, end, res, false, out, err, errlen);
}

/* ------------------------------------------------------------ liveness */

/* Step 2 of the ladder: read whatever the server sent while we were idle.
 * A FATAL (idle_session_timeout 57P05, pg_terminate_backend 57P01) comes
 * first, then EOF, which libpq turns into CONNECTION_BAD. */
static bool db_idle_socket_ok(PGconn *pg)
{
    for (int i = 0; i < DB_IDLE_READS_MAX; i++) {
        struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
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
    static const struct db_query empty = {.sql = ""};
    PGresult *res = NULL;
    char err[256];
    bool ok;

    if (conn == NULL || PQstatus(conn->pg) != CONNECTION_OK || conn->doomed ||
        db_conn_fenced(conn))
        return false;
    if (!db_idle_socket_ok(conn->pg) || conn->doomed)
        return false;
    /* A clock behind last use (another clock source) counts as not idle. */
    if (now_ns <= conn->last_used_ns ||
        now_ns - conn->last_used_ns <= check_idle_ns)
        return true;
    /* Step 3: one round trip, only for a connection idle long enough that a
     * silently dead path is worth paying for. */
    ok = db_run(conn, &empty, 0, &res, err, sizeof err) == POOLD_OK;
    PQclear(res);
    if (ok)
        conn->last_used_ns = now_ns;
    return ok && PQstatus(conn->pg) == CONNECTION_OK;
}

const char *db_conn_sqlstate(const struct db_conn *conn)
{
    return conn->sqlstate;
}

bool db_conn_is_clean(const struct db_conn *conn)
{
    return conn != NULL && !conn->doomed && !db_conn_fenced(conn) &&
           PQstatus(conn->pg) == CONNECTION_OK &&
           PQtransactionStatus(conn->pg) == PQTRANS_IDLE;
}

void db_conn_touch(struct db_conn *conn, uint64_t now_ns)
{
    if (now_ns > conn->last_used_ns)
        conn->last_used_ns = now_ns;
}

bool db_conn_lingers(const struct db_conn *conn, int *pid, int *port)
{
    if (conn == NULL || !conn->pending || PQstatus(conn->pg) != CONNECTION_OK ||
        PQbackendPID(conn->pg) <= 0)
        return false;
    *pid = PQbackendPID(conn->pg);
    *port = conn->local_port;
    return true;
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
    const struct db_query q = {
        .sql = sql, .nparams = nparams, .values = params};
    PGresult *res = NULL;
    char why[512];

    if (sqlstate != NULL)
        sqlstate[0] = '\0';
    if (db_run(conn, &q, 0, &res, why, sizeof why) == POOLD_OK &&
        (PQresultStatus(res) == PGRES_TUPLES_OK ||
         PQresultStatus(res) == PGRES_COMMAND_OK))
        return res;
    if (res != NULL)
        snprintf(why, sizeof why, "unexpected result %s",
                 PQresStatus(PQresultStatus(res)));
    if (sqlstate != NULL)
        snprintf(sqlstate, 6, "%s", conn->sqlstate);
    snprintf(err, errlen, "%s: %s", what, why);
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
    static const struct db_query q = {.sql = "ROLLBACK"};
    PGresult *res = NULL;
    char err[256];

    if (db_run(conn, &q, 0, &res, err, sizeof err) != POOLD_OK)
        conn->doomed = true; /* not known rolled back: never reuse */
    PQclear(res);
}
