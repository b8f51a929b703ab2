/* connpool.c — the process's PostgreSQL connection pool: callbacks, wiring. */
#include "connpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "db.h"
#include "log.h"
#include "service.h"

/* A connection closed while its backend was at work: it holds a place of
 * the pool until pg_stat_activity no longer shows that backend. */
struct cp_linger {
    int pid;
    int port; /* client_port; -1: a Unix socket (the pid alone) */
};

struct connpool {
    struct pool *pool;
    pthread_mutex_t linger_lock; /* guards linger, nlinger, linger_cap */
    struct cp_linger *linger;
    size_t nlinger, linger_cap;
    pthread_mutex_t check_lock;   /* one check at a time */
    const struct db_settings *db; /* borrowed */
    struct breaker *breaker;      /* borrowed, or NULL */
    uint64_t check_idle_ns;
    unsigned max_conns;
    atomic_uint cap; /* <= max_conns; 0: no connection may be opened */
};

/* ------------------------------------------------- one connection's life */

static int conn_open(const struct db_settings *db, void **obj)
{
    struct db_conn *conn = NULL;
    char err[512];
    int rc = db_conn_open(db, clock_now_ns(), &conn, err, sizeof err);

    if (rc != POOLD_OK) {
        /* The pool keeps only the code: the reason is logged here. */
        log_event(LOG_WARN, "database connection failed", "error", err,
                  (const char *)NULL);
        *obj = NULL;
        return rc == POOLD_ERR_NOMEM ? rc : POOLD_ERR_DB;
    }
    *obj = conn;
    return POOLD_OK;
}

static void conn_destroy(void *ctx, void *obj, enum pool_destroy_reason why)
{
    (void)ctx;
    (void)why;
    db_conn_close(obj);
}

/* ------------------------------------- closed, but not yet gone for PG */

/* If conn's backend may outlive its close, record it and hold a place of
 * the pool for it. Out of memory: not held (logged). */
static void cp_linger_add(struct connpool *cp, const struct db_conn *conn)
{
    struct cp_linger l;
    char pid[16];
    bool held = false;

    if (!db_conn_lingers(conn, &l.pid, &l.port))
        return;
    pthread_mutex_lock(&cp->linger_lock);
    if (cp->nlinger == cp->linger_cap) {
        size_t cap = cp->linger_cap ? 2 * cp->linger_cap : 8;
        struct cp_linger *v = realloc(cp->linger, cap * sizeof *v);
        if (v != NULL) {
            cp->linger = v;
            cp->linger_cap = cap;
        }
    }
    if (cp->nlinger < cp->linger_cap) {
        cp->linger[cp->nlinger++] = l;
        pool_hold(cp->pool);
        held = true;
    }
    pthread_mutex_unlock(&cp->linger_lock);
    snprintf(pid, sizeof pid, "%d", l.pid);
    log_event(held ? LOG_INFO : LOG_WARN,
              held ? "connection closed with a statement in flight: its "
                     "place is held until its backend is gone"
                   : "connection closed with a statement in flight: no "
                     "memory to hold its place",
              "backend_pid", pid, (const char *)NULL);
}

static void cp_conn_destroy(void *ctx, void *obj, enum pool_destroy_reason why)
{
    (void)why;
    cp_linger_add(ctx, obj);
    db_conn_close(obj);
}

void connpool_close_outside(struct connpool *cp, struct db_conn *conn)
{
    if (conn == NULL)
        return;
    cp_linger_add(cp, conn);
    db_conn_close(conn);
}

unsigned connpool_lingering(struct connpool *cp)
{
    size_t n;

    pthread_mutex_lock(&cp->linger_lock);
    n = cp->nlinger;
    pthread_mutex_unlock(&cp->linger_lock);
    return (unsigned)n;
}

/* Which of the first n backends of v does PostgreSQL still show? */
static const char sql_linger[] =
    "SELECT p.pid, p.port FROM unnest($1::int[], $2::int[]) AS p(pid, port)"
    " WHERE EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p.pid"
    " AND (p.port < 0 OR a.client_port = p.port))";

/* "{a,b,...}" of the pids (port false) or ports of v[0..n); NULL: no
 * memory. */
static char *cp_array(const struct cp_linger *v, size_t n, bool port)
{
    size_t len = 2 + n * 12;
    char *s = malloc(len), *p = s;

    if (s == NULL)
        return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += snprintf(p, len - (size_t)(p - s), "%s%d", i ? "," : "",
                      port ? v[i].port : v[i].pid);
    snprintf(p, len - (size_t)(p - s), "}");
    return s;
}

static bool cp_still_there(const PGresult *res, const struct cp_linger *l)
{
    char pid[16], port[16];

    snprintf(pid, sizeof pid, "%d", l->pid);
    snprintf(port, sizeof port, "%d", l->port);
    for (int r = 0; r < PQntuples(res); r++)
        if (strcmp(PQgetvalue(res, r, 0), pid) == 0 &&
            strcmp(PQgetvalue(res, r, 1), port) == 0)
            return true;
    return false;
}

/* Forget the first n records (those checked) that res does not show, and
 * give their places back. Records added since are after them. */
static unsigned cp_linger_drop_gone(struct connpool *cp, size_t n,
                                    const PGresult *res)
{
    unsigned gone = 0;
    size_t k = 0;

    pthread_mutex_lock(&cp->linger_lock);
    for (size_t i = 0; i < cp->nlinger; i++) {
        if (i < n && !cp_still_there(res, &cp->linger[i])) {
            gone++;
            continue;
        }
        cp->linger[k++] = cp->linger[i];
    }
    cp->nlinger = k;
    pthread_mutex_unlock(&cp->linger_lock);
    for (unsigned i = 0; i < gone; i++)
        pool_unhold(cp->pool);
    return gone;
}

int connpool_check_lingering(struct connpool *cp, struct db_conn *conn,
                             char *err, size_t errlen)
{
    struct cp_linger *v = NULL;
    char *pids = NULL, *ports = NULL;
    PGresult *res = NULL;
    size_t n;
    int rc = POOLD_ERR_NOMEM;

    pthread_mutex_lock(&cp->check_lock);
    pthread_mutex_lock(&cp->linger_lock);
    n = cp->nlinger;
    if (n > 0 && (v = malloc(n * sizeof *v)) != NULL)
        memcpy(v, cp->linger, n * sizeof *v);
    pthread_mutex_unlock(&cp->linger_lock);
    if (n == 0) {
        pthread_mutex_unlock(&cp->check_lock);
        return POOLD_OK;
    }
    if (v != NULL && (pids = cp_array(v, n, false)) != NULL &&
        (ports = cp_array(v, n, true)) != NULL) {
        const char *params[2] = {pids, ports};
        res = db_exec(conn, "closed connections' backends", sql_linger, 2,
                      params, NULL, err, errlen);
        rc = res != NULL ? POOLD_OK : POOLD_ERR_DB;
    } else {
        snprintf(err, errlen, "out of memory");
    }
    /* Not answered: every place stays held (the safe side). */
    if (rc == POOLD_OK)
        cp_linger_drop_gone(cp, n, res);
    PQclear(res);
    free(pids);
    free(ports);
    free(v);
    pthread_mutex_unlock(&cp->check_lock);
    return rc;
}

static bool conn_reset(void *ctx, void *obj)
{
    (void)ctx;
    return db_conn_is_clean(obj);
}

/* ------------------------------------- the bare ops (ctx: service_env) */

static int env_conn_create(void *ctx, void **obj)
{
    const struct service_env *env = ctx;
    return conn_open(env->db, obj);
}

static bool env_conn_validate(void *ctx, void *obj, uint64_t idle_ns,
                              uint64_t now_ns)
{
    const struct service_env *env = ctx;

    (void)idle_ns; /* the connection knows its own last use */
    return db_conn_is_alive(obj, now_ns, env->conn_check_idle_ns);
}

const struct pool_ops connpool_conn_ops = {
    .create = env_conn_create,
    .destroy = conn_destroy,
    .validate = env_conn_validate,
    .reset = conn_reset,
};

/* ------------------------------ the process's ops (ctx: struct connpool) */

/* Behind the cap and the breaker: a dead database is not hammered, and a
 * replica without its share of the budget opens nothing. */
static int cp_conn_create(void *ctx, void **obj)
{
    struct connpool *cp = ctx;
    uint64_t gen;
    int rc;

    *obj = NULL;
    if (atomic_load(&cp->cap) == 0)
        return POOLD_ERR_DB;
    if (cp->breaker != NULL && !breaker_allow(cp->breaker, clock_now_ns()))
        return POOLD_ERR_DB;
    gen = db_fence_generation();
    rc = conn_open(cp->db, obj);
    if (cp->breaker != NULL && rc == POOLD_OK)
        breaker_success(cp->breaker);
    else if (cp->breaker != NULL && !db_fence_since(gen))
        breaker_failure(cp->breaker, clock_now_ns());
    return rc;
}

static bool cp_conn_validate(void *ctx, void *obj, uint64_t idle_ns,
                             uint64_t now_ns)
{
    const struct connpool *cp = ctx;

    (void)idle_ns;
    return db_conn_is_alive(obj, now_ns, cp->check_idle_ns);
}

static const struct pool_ops cp_conn_ops = {
    .create = cp_conn_create,
    .destroy = cp_conn_destroy,
    .validate = cp_conn_validate,
    .reset = conn_reset,
};

/* A permit is any non-NULL token; none while the cap is 0. */
static int permit_create(void *ctx, void **obj)
{
    struct connpool *cp = ctx;

    *obj = cp;
    return atomic_load(&cp->cap) == 0 ? POOLD_ERR_DB : POOLD_OK;
}

static void permit_destroy(void *ctx, void *obj, enum pool_destroy_reason why)
{
    (void)ctx;
    (void)obj;
    (void)why;
}

static const struct pool_ops permit_ops = {
    .create = permit_create,
    .destroy = permit_destroy,
};

/* ---------------------------------------------------------------- wiring */

int connpool_create(const struct connpool_config *cfg, struct connpool **out)
{
    struct pool_config pc = {
        .name = "connections",
        .max_size = cfg->max_conns,
        .capacity = cfg->max_conns,
        .max_waiters = UINT32_MAX,
        /* POOLD_DB_MIN_IDLE, clamped to the cap (DESIGN.md). */
        .min_idle =
            cfg->min_idle < cfg->max_conns ? cfg->min_idle : cfg->max_conns,
        .max_lifetime_ns = cfg->ttl_ns,
        .lifetime_jitter_ns = cfg->ttl_ns / 10,
        /* db_conn_is_alive() is free unless the connection idled longer
         * than check_idle_ns, so validate on every acquire. */
        .validate_idle_ns = 0,
        /* Cap 0 (a replica without its grant): requests wait for one. */
        .may_empty = true,
    };
    const struct pool_ops *ops = &cp_conn_ops;
    struct connpool *cp = calloc(1, sizeof *cp);
    int rc;

    if (cp == NULL)
        return POOLD_ERR_NOMEM;
    pthread_mutex_init(&cp->linger_lock, NULL);
    pthread_mutex_init(&cp->check_lock, NULL);
    cp->db = cfg->db;
    cp->breaker = cfg->breaker;
    cp->check_idle_ns = cfg->check_idle_ns;
    cp->max_conns = cfg->max_conns;
    atomic_init(&cp->cap, cfg->max_conns);
    if (!cfg->pooled) {
        pc.name = "connection permits";
        pc.min_idle = 0;
        pc.max_waiters = cfg->max_waiters;
        pc.max_lifetime_ns = pc.lifetime_jitter_ns = 0;
        ops = &permit_ops;
    }
    rc = pool_create(ops, cp, &pc, &cp->pool);
    if (rc != POOLD_OK) {
        connpool_destroy(cp);
        return rc;
    }
    *out = cp;
    return POOLD_OK;
}

void connpool_destroy(struct connpool *cp)
{
    if (cp == NULL)
        return;
    pool_destroy(cp->pool); /* accepts NULL */
    pthread_mutex_destroy(&cp->check_lock);
    pthread_mutex_destroy(&cp->linger_lock);
    free(cp->linger);
    free(cp);
}

struct pool *connpool_pool(const struct connpool *cp)
{
    return cp->pool;
}

unsigned connpool_set_cap(struct connpool *cp, unsigned cap)
{
    unsigned max = cap > cp->max_conns ? cp->max_conns : cap;

    atomic_store(&cp->cap, max);
    /* Size 0 builds nothing and lets acquires wait for a grant (up to
     * their timeout: pool_exhausted); create refuses at cap 0 as well. */
    if (pool_max_size(cp->pool) != max &&
        pool_resize(cp->pool, max) != POOLD_OK)
        log_event(LOG_WARN, "connection pool resize failed",
                  (const char *)NULL);
    if (max == 0 && pool_total(cp->pool) > 0)
        pool_retire_all(cp->pool);
    return max;
}

unsigned connpool_cap(struct connpool *cp)
{
    return atomic_load(&cp->cap);
}
