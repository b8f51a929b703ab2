/* cluster.c — replicas share one connection budget through a lease table. */
#include "cluster.h"
#include "cluster_test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "log.h"

#define CLUSTER_SHRINK_WAIT_NS (250 * NS_PER_MS) /* per heartbeat */
#define CLUSTER_SHRINK_POLL_MS 10.0
#define CLUSTER_FORGET_S 600 /* rows dead this long are deleted */
#define CLUSTER_FENCE_POLL_NS (100 * NS_PER_MS) /* the fence's timer */

struct cluster {
    struct cluster_config cfg;
    char id[CLUSTER_ID_MAX + 1];
    /* Housekeeping thread only. */
    unsigned granted; /* our granted cap as last written */
    unsigned budget;  /* in force: the smallest of the live rows' */
    /* The housekeeping thread and the fence's timer. */
    _Atomic uint64_t renewed_ns; /* send time of the last renewal that
                                    committed */
    pthread_mutex_t cap_lock;    /* guards fenced and every cap change */
    bool fenced;                 /* the lease lapsed: cap 0 until renewed */
    pthread_t fence_thread;
    bool fence_started, fence_stop; /* fence_stop: under cap_lock */
    pthread_cond_t fence_cond;
    /* Read by any thread. */
    atomic_uint cap;      /* the local cap applied */
    pthread_mutex_t lock; /* guards view, nview */
    struct cluster_replica view[CLUSTER_MAX_REPLICAS];
    size_t nview;
    /* The housekeeping thread's work copy of view. */
    struct cluster_replica scratch[CLUSTER_MAX_REPLICAS];
};

/* ---- the arithmetic ----------------------------------------------------- */

void cluster_fair_shares(unsigned budget, size_t n, unsigned *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned)(budget / n + (i < budget % n ? 1 : 0));
}

unsigned cluster_grant(unsigned budget, unsigned want, unsigned granted,
                       unsigned others)
{
    unsigned room = others < budget ? budget - others : 0;
    unsigned take = want < room ? want : room;
    return take > granted ? take : granted;
}

unsigned cluster_release(unsigned want, unsigned granted, unsigned open)
{
    if (want >= granted)
        return granted;
    return open <= want ? want : granted;
}

bool cluster_fenced(uint64_t renewed_ns, uint64_t now_ns, unsigned lease_s)
{
    uint64_t half = (uint64_t)lease_s * NS_PER_S / 2;
    return renewed_ns == 0 || now_ns - renewed_ns > half;
}

/* ---- SQL: every statement the cluster runs ------------------------------ */

/* Every replica's heartbeat takes the table's lock: one whose process
 * stops (a pause, a lost network) between its LOCK and its COMMIT must
 * not hold the others' heartbeats past their fence (half the lease). The
 * server ends such a session after 1 s; a live one is idle in its
 * transaction only between its statements (the shrink's wait comes after
 * COMMIT). */
static const char sql_idle[] =
    "SET LOCAL idle_in_transaction_session_timeout = 1000";
static const char sql_lock[] =
    "LOCK TABLE cluster_replicas IN SHARE ROW EXCLUSIVE MODE";
/* $1 id, $2 granted, $3 open, $4 waiting, $5 budget */
static const char sql_renew[] =
    "INSERT INTO cluster_replicas (replica_id, granted, open_connections,"
    " waiting, budget) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = clock_timestamp(),"
    " granted = EXCLUDED.granted, open_connections = EXCLUDED.open_connections,"
    " waiting = EXCLUDED.waiting, budget = EXCLUDED.budget";
/* $1 seconds of silence after which a row is deleted */
static const char sql_forget[] =
    "DELETE FROM cluster_replicas"
    " WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1)";
static const char sql_live[] =
    "SELECT replica_id, granted, open_connections, waiting,"
    " to_char(heartbeat_at AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), budget"
    " FROM cluster_replicas"
    " WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)"
    " ORDER BY registered_at, replica_id LIMIT 256";
/* $1 id, $2 granted, $3 share */
static const char sql_set[] =
    "UPDATE cluster_replicas SET granted = $2, share = $3"
    " WHERE replica_id = $1";
static const char sql_leave[] =
    "DELETE FROM cluster_replicas WHERE replica_id = $1";

/* Run one statement, bounded like every other (db_exec); NULL with err
 * filled on failure. */
static PGresult *cluster_exec(struct db_conn *conn, const char *sql,
                              int nparams, const char *const *params, char *err,
                              size_t errlen)
{
    char state[6];
    PGresult *res = db_exec(conn, "cluster heartbeat", sql, nparams, params,
                            state, err, errlen);
    size_t n;

    /* 42P01 undefined_table: the schema predates replicas. */
    if (res == NULL && strcmp(state, "42P01") == 0) {
        n = strlen(err);
        snprintf(err + n, errlen - n, " (apply sql/004_cluster.sql)");
    }
    return res;
}

static bool cluster_run(struct db_conn *conn, const char *sql, int nparams,
                        const char *const *params, char *err, size_t errlen)
{
    PGresult *res = cluster_exec(conn, sql, nparams, params, err, errlen);
    bool ok = res != NULL;
    PQclear(res);
    return ok;
}

static unsigned cell_uint(const PGresult *res, int row, int col)
{
    const char *s = PQgetvalue(res, row, col);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || end == s || v < 0 ? 0 : (unsigned)v;
}

/* ---- the cap and the fence ---------------------------------------------- */

/* Under cap_lock: apply cap locally (0 while fenced). */
static void cap_apply_locked(struct cluster *c, unsigned cap)
{
    if (c->fenced)
        cap = 0;
    unsigned old = atomic_exchange(&c->cap, cap);
    c->cfg.local.set_cap(c->cfg.local.arg, cap);
    if (old != cap) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%u", old);
        snprintf(b, sizeof b, "%u", cap);
        log_event(LOG_INFO, "cluster cap changed", "replica", c->id, "from", a,
                  "to", b, (const char *)NULL);
    }
}

static void cluster_set_cap(struct cluster *c, unsigned cap)
{
    pthread_mutex_lock(&c->cap_lock);
    cap_apply_locked(c, cap);
    pthread_mutex_unlock(&c->cap_lock);
}

/* Past half the lease since the last renewal: hold nothing until renewed.
 * Run by the fence's timer (and by the tick), so a heartbeat stuck behind
 * a lock or a silent database never keeps connections past it. */
static void cluster_fence_check(struct cluster *c, uint64_t now)
{
    uint64_t renewed = atomic_load(&c->renewed_ns);

    if (renewed == 0 || !cluster_fenced(renewed, now, c->cfg.lease_s))
        return;
    pthread_mutex_lock(&c->cap_lock);
    if (!c->fenced && atomic_load(&c->renewed_ns) == renewed) {
        c->fenced = true;
        log_event(LOG_WARN,
                  "cluster lease not renewed: holding no "
                  "connections until it is",
                  "replica", c->id, (const char *)NULL);
        /* Statements in flight end now, not with their requests. */
        db_fence(true);
        cap_apply_locked(c, 0);
    }
    pthread_mutex_unlock(&c->cap_lock);
}

/* Under cap_lock, by the tick: renewed at sent (its send time). */
static void cluster_renewed_locked(struct cluster *c, uint64_t sent)
{
    atomic_store(&c->renewed_ns, sent);
    if (c->fenced)
        db_fence(false);
    c->fenced = false;
}

static void *fence_main(void *arg)
{
    struct cluster *c = arg;
    struct timespec ts;

    pthread_mutex_lock(&c->cap_lock);
    while (!c->fence_stop) {
        clock_timespec_at(&ts, clock_now_ns() + CLUSTER_FENCE_POLL_NS);
        pthread_cond_timedwait(&c->fence_cond, &c->cap_lock, &ts);
        if (c->fence_stop)
            break;
        pthread_mutex_unlock(&c->cap_lock);
        cluster_fence_check(c, clock_now_ns());
        pthread_mutex_lock(&c->cap_lock);
    }
    pthread_mutex_unlock(&c->cap_lock);
    return NULL;
}

int cluster_fence_start(struct cluster *c)
{
    if (c == NULL || c->cfg.budget == 0 || c->fence_started)
        return POOLD_OK;
    if (pthread_create(&c->fence_thread, NULL, fence_main, c) != 0)
        return POOLD_ERR_NOMEM;
    c->fence_started = true;
    return POOLD_OK;
}

void cluster_fence_stop(struct cluster *c)
{
    if (c == NULL || !c->fence_started)
        return;
    pthread_mutex_lock(&c->cap_lock);
    c->fence_stop = true;
    pthread_cond_broadcast(&c->fence_cond);
    pthread_mutex_unlock(&c->cap_lock);
    pthread_join(c->fence_thread, NULL);
    c->fence_started = false;
}

/* ---- the heartbeat ------------------------------------------------------ */

static void fmt_uint(char *buf, size_t len, unsigned v)
{
    snprintf(buf, len, "%u", v);
}

/* Read the live rows into view (up to CLUSTER_MAX_REPLICAS); -1 on error. */
static int cluster_read_live(struct cluster *c, struct db_conn *conn,
                             struct cluster_replica *view, char *err,
                             size_t errlen)
{
    char lease[16];
    const char *p[1] = {lease};
    snprintf(lease, sizeof lease, "%u", c->cfg.lease_s);
    PGresult *res = cluster_exec(conn, sql_live, 1, p, err, errlen);
    if (res == NULL)
        return -1;
    int n = PQntuples(res);
    for (int i = 0; i < n && i < CLUSTER_MAX_REPLICAS; i++) {
        struct cluster_replica *r = &view[i];
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", PQgetvalue(res, i, 0));
        r->granted = cell_uint(res, i, 1);
        r->open_connections = cell_uint(res, i, 2);
        r->waiting = cell_uint(res, i, 3);
        snprintf(r->heartbeat_at, sizeof r->heartbeat_at, "%s",
                 PQgetvalue(res, i, 4));
        r->self = strcmp(r->id, c->id) == 0;
        r->budget = cell_uint(res, i, 5);
    }
    PQclear(res);
    return n;
}

/* The budget every live replica agrees to: the smallest configured one
 * (a replica started with a larger POOLD_CLUSTER_MAX_CONNS cannot push the
 * total past what the others were told). Logged when it changes. */
static unsigned cluster_budget(struct cluster *c,
                               const struct cluster_replica *view, size_t n)
{
    unsigned b = c->cfg.budget;
    for (size_t i = 0; i < n; i++)
        if (view[i].budget > 0 && view[i].budget < b)
            b = view[i].budget;
    if (b != c->budget) {
        char have[16], want[16];
        fmt_uint(have, sizeof have, b);
        fmt_uint(want, sizeof want, c->cfg.budget);
        log_event(b == c->cfg.budget ? LOG_INFO : LOG_WARN,
                  "cluster budget in force", "replica", c->id, "budget", have,
                  "configured", want, (const char *)NULL);
        c->budget = b;
    }
    return b;
}

/* Fill shares; returns our index, or -1 if our row is not among them. */
static int cluster_assign(struct cluster *c, struct cluster_replica *view,
                          size_t n, unsigned *others)
{
    unsigned shares[CLUSTER_MAX_REPLICAS];
    int self = -1;

    cluster_fair_shares(cluster_budget(c, view, n), n, shares);
    *others = 0;
    for (size_t i = 0; i < n; i++) {
        view[i].share = shares[i];
        if (view[i].self)
            self = (int)i;
        else
            *others += view[i].granted;
    }
    return self;
}

/* The transaction: lock, renew, read, maybe raise. Fills view and *n;
 * *want gets our share capped at local_max. */
static bool cluster_txn(struct cluster *c, struct db_conn *conn,
                        struct cluster_replica *view, size_t *n, unsigned *want,
                        uint64_t *sent, char *err, size_t errlen)
{
    char g[16], o[16], w[16], b[16], s[16], forget[16];
    const char *renew[5] = {c->id, g, o, w, b};
    const char *fp[1] = {forget};
    unsigned others;

    fmt_uint(o, sizeof o, c->cfg.local.open_conns(c->cfg.local.arg));
    fmt_uint(w, sizeof w, c->cfg.local.waiting(c->cfg.local.arg));
    fmt_uint(b, sizeof b, c->cfg.budget);
    fmt_uint(forget, sizeof forget, CLUSTER_FORGET_S);
    if (!cluster_run(conn, "BEGIN", 0, NULL, err, errlen) ||
        !cluster_run(conn, sql_idle, 0, NULL, err, errlen))
        return false;
    if (!cluster_run(conn, sql_lock, 0, NULL, err, errlen))
        return false;
    /* The renewal's time is now, with the table lock had (waiting for it
     * may have taken long). A lease that lapsed meanwhile renews from a
     * grant of 0: the others may have taken its share, so it asks for what
     * is free, not for max(free, the old grant). */
    *sent = clock_now_ns();
    cluster_fence_check(c, *sent);
    pthread_mutex_lock(&c->cap_lock);
    if (c->fenced)
        c->granted = 0;
    pthread_mutex_unlock(&c->cap_lock);
    fmt_uint(g, sizeof g, c->granted);
    if (!cluster_run(conn, sql_renew, 5, renew, err, errlen) ||
        !cluster_run(conn, sql_forget, 1, fp, err, errlen))
        return false;
    int got = cluster_read_live(c, conn, view, err, errlen);
    if (got < 0)
        return false;
    *n = (size_t)got;
    int self = cluster_assign(c, view, *n, &others);
    if (self < 0) {
        snprintf(err, errlen, "cluster heartbeat: own row not live");
        return false;
    }
    *want = view[self].share < c->cfg.local_max ? view[self].share
                                                : c->cfg.local_max;
    unsigned granted = cluster_grant(c->budget, *want, c->granted, others);
    fmt_uint(g, sizeof g, granted);
    fmt_uint(s, sizeof s, view[self].share);
    const char *set[3] = {c->id, g, s};
    if (!cluster_run(conn, sql_set, 3, set, err, errlen) ||
        !cluster_run(conn, "COMMIT", 0, NULL, err, errlen))
        return false;
    c->granted = granted;
    view[self].granted = granted;
    return true;
}

/* Lower our cap to want and, once our connections fit under it, our
 * granted cap in the table: the share goes back to the others. */
static void cluster_shrink(struct cluster *c, struct db_conn *conn,
                           unsigned want, char *err, size_t errlen)
{
    const struct cluster_local *l = &c->cfg.local;
    uint64_t until = clock_now_ns() + CLUSTER_SHRINK_WAIT_NS;
    unsigned open = l->open_conns(l->arg);

    while (open > want && clock_now_ns() < until) {
        clock_sleep_ms(CLUSTER_SHRINK_POLL_MS);
        cluster_set_cap(c, want); /* evicts what became idle meanwhile */
        open = l->open_conns(l->arg);
    }
    unsigned granted = cluster_release(want, c->granted, open);
    if (granted == c->granted)
        return;
    char g[16], s[16];
    const char *set[3] = {c->id, g, s};
    fmt_uint(g, sizeof g, granted);
    fmt_uint(s, sizeof s, want);
    if (cluster_run(conn, sql_set, 3, set, err, errlen))
        c->granted = granted;
}

static void cluster_publish(struct cluster *c,
                            const struct cluster_replica *view, size_t n)
{
    pthread_mutex_lock(&c->lock);
    memcpy(c->view, view, n * sizeof *view);
    c->nview = n;
    pthread_mutex_unlock(&c->lock);
}

int cluster_tick(struct cluster *c, struct db_conn *conn, char *err,
                 size_t errlen)
{
    struct cluster_replica *view = c->scratch;
    size_t n = 0;
    unsigned want = 0;

    err[0] = '\0';
    if (c->cfg.budget == 0)
        return POOLD_OK;
    uint64_t sent = clock_now_ns();
    cluster_fence_check(c, sent);
    if (conn == NULL) {
        snprintf(err, errlen, "cluster heartbeat: database unreachable");
        return POOLD_ERR_DB;
    }
    if (!cluster_txn(c, conn, view, &n, &want, &sent, err, errlen)) {
        if (PQtransactionStatus(db_conn_pg(conn)) != PQTRANS_IDLE)
            db_rollback(conn); /* bounded; an unknown outcome dooms conn */
        return POOLD_ERR_DB;
    }
    pthread_mutex_lock(&c->cap_lock);
    cluster_renewed_locked(c, sent);
    cap_apply_locked(c, c->granted < want ? c->granted : want);
    pthread_mutex_unlock(&c->cap_lock);
    if (c->granted > want)
        cluster_shrink(c, conn, want, err, errlen);
    for (size_t i = 0; i < n; i++)
        if (view[i].self) {
            view[i].granted = c->granted;
            view[i].open_connections =
                c->cfg.local.open_conns(c->cfg.local.arg);
        }
    cluster_publish(c, view, n);
    return err[0] ? POOLD_ERR_DB : POOLD_OK;
}

void cluster_leave(struct cluster *c, struct db_conn *conn)
{
    char err[256];
    const char *p[1] = {c->id};

    if (c == NULL || c->cfg.budget == 0 || conn == NULL)
        return;
    if (cluster_run(conn, sql_leave, 1, p, err, sizeof err))
        log_event(LOG_INFO, "cluster: left", "replica", c->id,
                  (const char *)NULL);
}

/* ---- life and views ----------------------------------------------------- */

/* host-pid-random, host limited to [A-Za-z0-9._-]. */
static void cluster_make_id(char *id, size_t len)
{
    char host[64] = "";
    unsigned char rnd[4] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
        uint64_t t = clock_now_ns();
        memcpy(rnd, &t, sizeof rnd);
    }
    if (fd >= 0)
        close(fd);
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    host[40] = '\0';
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            *p = '_';
    snprintf(id, len, "%s-%ld-%02x%02x%02x%02x", host[0] ? host : "poold",
             (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3]);
}

int cluster_create(const struct cluster_config *cfg, struct cluster **out)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return POOLD_ERR_NOMEM;
    c->cfg = *cfg;
    if (c->cfg.lease_s == 0)
        c->cfg.lease_s = CLUSTER_LEASE_S;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->cap_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->fence_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->renewed_ns, 0);
    cluster_make_id(c->id, sizeof c->id);
    /* A replica holds nothing before the table grants it a cap. */
    atomic_init(&c->cap, cfg->budget == 0 ? cfg->local_max : 0);
    *out = c;
    return POOLD_OK;
}

void cluster_destroy(struct cluster *c)
{
    if (c == NULL)
        return;
    cluster_fence_stop(c);
    pthread_cond_destroy(&c->fence_cond);
    pthread_mutex_destroy(&c->cap_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const char *cluster_id(const struct cluster *c)
{
    return c->id;
}

bool cluster_enabled(const struct cluster *c)
{
    return c->cfg.budget > 0;
}

unsigned cluster_cap(struct cluster *c)
{
    return atomic_load(&c->cap);
}

size_t cluster_snapshot(struct cluster *c, struct cluster_replica *out,
                        size_t max)
{
    size_t n;

    if (max == 0)
        return 0;
    if (c->cfg.budget == 0) {
        struct tm tm;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        memset(out, 0, sizeof *out);
        snprintf(out->id, sizeof out->id, "%s", c->id);
        out->share = out->granted = c->cfg.local_max;
        out->open_connections = c->cfg.local.open_conns(c->cfg.local.arg);
        out->waiting = c->cfg.local.waiting(c->cfg.local.arg);
        strftime(out->heartbeat_at, sizeof out->heartbeat_at,
                 "%Y-%m-%dT%H:%M:%SZ", &tm);
        out->self = true;
        return 1;
    }
    pthread_mutex_lock(&c->lock);
    n = c->nview < max ? c->nview : max;
    memcpy(out, c->view, n * sizeof *out);
    pthread_mutex_unlock(&c->lock);
    return n;
}
