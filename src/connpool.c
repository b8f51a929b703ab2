/* connpool.c — the process's PostgreSQL connection pool: callbacks, wiring. */
#include "connpool.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "clock.h"
#include "log.h"
#include "service.h"

struct connpool {
    struct pool *pool;
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
    int rc;

    *obj = NULL;
    if (atomic_load(&cp->cap) == 0)
        return POOLD_ERR_DB;
    if (cp->breaker != NULL && !breaker_allow(cp->breaker, clock_now_ns()))
        return POOLD_ERR_DB;
    rc = conn_open(cp->db, obj);
    if (cp->breaker != NULL && rc == POOLD_OK)
        breaker_success(cp->breaker);
    else if (cp->breaker != NULL)
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
    .destroy = conn_destroy,
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
        free(cp);
        return rc;
    }
    *out = cp;
    return POOLD_OK;
}

void connpool_destroy(struct connpool *cp)
{
    if (cp == NULL)
        return;
    pool_destroy(cp->pool);
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
