/* evloop.c — the floor of an event-driven core for POST /process, to
 * decide whether poold's HTTP core is worth rewriting (docs/benchmarks.md,
 * "An event-driven core?").
 *
 * One thread does everything, the way Redis and PgBouncer do: libmicrohttpd
 * in external epoll mode and N PostgreSQL connections driven by libpq's
 * asynchronous calls share one epoll set. A request is parsed with jansson,
 * its row written by the same prepared single-row INSERT … ON CONFLICT DO
 * NOTHING poold uses, and answered with a small JSON object; the
 * connection is suspended while its INSERT is in flight. No rules, no
 * pools, no deadlines, no logs: what is left is the least any core doing
 * poold's I/O must spend, so its CPU per request is a lower bound for a
 * rewrite of poold's core on the same libraries.
 *
 *   evloop PORT CONNINFO [CONNECTIONS]      (default 8 connections)
 *
 * Runs until SIGINT/SIGTERM, then prints one JSON line on stdout:
 * requests answered, rows inserted, CPU seconds (user, system) and µs per
 * request. A program that prints figures, never a test.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>

#define MAX_CONNS 64
#define INSERT_SQL                                                             \
    "INSERT INTO processed_messages (org_id, message_id, passed, checks,"      \
    " failed_rules, payload_sha256)"                                           \
    " VALUES ($1, $2, true, 0, '{}'::text[], sha256($3::bytea))"               \
    " ON CONFLICT DO NOTHING" /* partitions: no key on the parent to name */

struct req {
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    char org[80], id[160];
    char *payload;
    bool sent, done, inserted;
    struct req *next; /* waiting for a free database connection */
};

struct pg {
    PGconn *c;
    struct req *busy; /* the request whose INSERT is in flight */
};

static struct pg pgs[MAX_CONNS];
static int npg;
static struct req *wait_head, *wait_tail;
static unsigned long long answered, inserted;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "evloop: %s: %s\n", what, why);
    exit(1);
}

static void send_insert(struct pg *p, struct req *r)
{
    const char *values[3] = {r->org, r->id, r->payload};

    if (!PQsendQueryPrepared(p->c, "ins", 3, values, NULL, NULL, 0))
        die("send", PQerrorMessage(p->c));
    if (PQflush(p->c) < 0)
        die("flush", PQerrorMessage(p->c));
    p->busy = r;
}

static void submit(struct req *r)
{
    for (int i = 0; i < npg; i++)
        if (pgs[i].busy == NULL) {
            send_insert(&pgs[i], r);
            return;
        }
    r->next = NULL;
    if (wait_tail)
        wait_tail->next = r;
    else
        wait_head = r;
    wait_tail = r;
}

/* The INSERT's answer arrived on p: finish its request, start the next. */
static void on_pg(struct pg *p)
{
    PGresult *res;

    if (!PQconsumeInput(p->c))
        die("read", PQerrorMessage(p->c));
    while (p->busy != NULL && !PQisBusy(p->c)) {
        res = PQgetResult(p->c);
        if (res == NULL) { /* the statement is over */
            struct req *r = p->busy;
            p->busy = NULL;
            r->done = true;
            MHD_resume_connection(r->conn);
            if (wait_head != NULL) {
                struct req *w = wait_head;
                wait_head = w->next;
                if (wait_head == NULL)
                    wait_tail = NULL;
                send_insert(p, w);
            }
            break;
        }
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die("insert", PQresultErrorMessage(res));
        p->busy->inserted = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
    }
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status,
                              const char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok;

    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    ok = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* Parse the message; false if it is not {"org_id","id","payload"}. */
static bool parse(struct req *r)
{
    json_t *root = json_loadb(r->body, r->len, 0, NULL);
    const char *org, *id, *payload;
    bool ok = false;

    if (root != NULL &&
        json_unpack(root, "{s:s,s:s,s:s}", "org_id", &org, "id", &id, "payload",
                    &payload) == 0 &&
        strlen(org) < sizeof r->org && strlen(id) < sizeof r->id) {
        memcpy(r->org, org, strlen(org) + 1); /* lengths checked above */
        memcpy(r->id, id, strlen(id) + 1);
        r->payload = strdup(payload);
        ok = r->payload != NULL;
    }
    json_decref(root);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct req *r = *con_cls;
    char text[320];

    (void)cls, (void)url, (void)method, (void)version;
    if (r == NULL) {
        if ((r = calloc(1, sizeof *r)) == NULL)
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*size > 0) {
        if (r->len + *size > 65536)
            return MHD_NO;
        if (r->len + *size > r->cap) {
            r->cap = r->len + *size + 256;
            if ((r->body = realloc(r->body, r->cap)) == NULL)
                return MHD_NO;
        }
        memcpy(r->body + r->len, data, *size);
        r->len += *size;
        *size = 0;
        return MHD_YES;
    }
    if (r->done) {
        answered++;
        inserted += r->inserted;
        snprintf(text, sizeof text,
                 "{\"org_id\":\"%s\",\"message_id\":\"%s\",\"passed\":true,"
                 "\"duplicate\":%s}",
                 r->org, r->id, r->inserted ? "false" : "true");
        return answer(conn, 200, text);
    }
    if (r->sent)
        return MHD_YES;
    if (!parse(r))
        return answer(conn, 400, "{\"error\":{\"code\":\"invalid_message\"}}");
    r->conn = conn;
    r->sent = true;
    MHD_suspend_connection(conn);
    submit(r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *r = *con_cls;

    (void)cls, (void)conn, (void)toe;
    if (r == NULL)
        return;
    free(r->body);
    free(r->payload);
    free(r);
    *con_cls = NULL;
}

static void pg_open(const char *conninfo, int n, int ep)
{
    for (npg = 0; npg < n; npg++) {
        PGconn *c = PQconnectdb(conninfo);
        PGresult *res;
        struct epoll_event ev = {.events = EPOLLIN};

        if (PQstatus(c) != CONNECTION_OK)
            die("connect", PQerrorMessage(c));
        res = PQprepare(c, "ins", INSERT_SQL, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die("prepare", PQresultErrorMessage(res));
        PQclear(res);
        if (PQsetnonblocking(c, 1) != 0)
            die("nonblocking", PQerrorMessage(c));
        pgs[npg].c = c;
        ev.data.ptr = &pgs[npg];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, PQsocket(c), &ev) != 0)
            die("epoll_ctl", strerror(errno));
    }
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[64];
    struct rusage ru;
    int ep, n = argc > 3 ? atoi(argv[3]) : 8;

    if (argc < 3 || n < 1 || n > MAX_CONNS) {
        fprintf(stderr, "usage: evloop PORT CONNINFO [CONNECTIONS 1..%d]\n",
                MAX_CONNS);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1", strerror(errno));
    pg_open(argv[2], n, ep);
    d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t)atoi(argv[1]), NULL, NULL, on_request, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30, MHD_OPTION_END);
    if (d == NULL)
        die("MHD_start_daemon", "failed");
    if (epoll_ctl(ep, EPOLL_CTL_ADD,
                  MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd,
                  &ev) != 0)
        die("epoll_ctl", strerror(errno));
    while (!stop) {
        MHD_UNSIGNED_LONG_LONG to = 1000;
        int k;

        MHD_get_timeout(d, &to);
        k = epoll_wait(ep, evs, 64, to > 1000 ? 1000 : (int)to);
        for (int i = 0; i < k; i++)
            if (evs[i].data.ptr != NULL)
                on_pg(evs[i].data.ptr);
        MHD_run(d); /* ready sockets and resumed connections */
    }
    for (int i = 0; i < npg; i++)
        if (pgs[i].busy)
            MHD_resume_connection(pgs[i].busy->conn);
    MHD_stop_daemon(d);
    getrusage(RUSAGE_SELF, &ru);
    double us = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec;
    double ss = (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
    printf("{\"answered\":%llu,\"inserted\":%llu,\"user_s\":%.3f,"
           "\"sys_s\":%.3f,\"us_per_request\":%.1f}\n",
           answered, inserted, us / 1e6, ss / 1e6,
           answered ? (us + ss) / (double)answered : 0.0);
    for (int i = 0; i < npg; i++)
        PQfinish(pgs[i].c);
    return 0;
}
