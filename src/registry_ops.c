/* registry_ops.c — the operator API of the registry: pool stats, resize,
 * pause, drain, holders, the admin connection and the replica's cap. */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "groupcommit.h"
#include "log.h"
#include "registry_internal.h"

void registry_entry_stats(struct registry *reg, struct org_entry *e,
                          struct org_active *a, struct pool_stats *out)
{
    if (a != NULL && a->pool != NULL) {
        pool_get_stats(a->pool, out);
        groupcommit_add_stats(&a->gc, out);
    } else {
        memset(out, 0, sizeof *out);
        out->max_size = org_entry_size(reg, e);
    }
    out->held_too_long = a ? holders_held_too_long(&a->holders) : 0;
}

int registry_pool_stats(struct registry *reg, const char *org_id,
                        struct pool_stats *out)
{
    struct org_entry *e;
    struct org_active *a;
    int rc = registry_find_active(reg, org_id, &e, &a);

    if (rc == POOLD_OK)
        registry_entry_stats(reg, e, a, out);
    registry_active_release(a);
    return rc;
}

int registry_resize(struct registry *reg, const char *org_id, unsigned size,
                    struct pool_stats *out, char *err, size_t errlen)
{
    return registry_resize_by(reg, org_id, size, NULL, out, err, errlen);
}

int registry_resize_by(struct registry *reg, const char *org_id, unsigned size,
                       const struct audit_actor *actor, struct pool_stats *out,
                       char *err, size_t errlen)
{
    struct org_entry *e;
    int rc;

    err[0] = '\0';
    if (size < 1 || size > reg->cfg.ceiling) {
        snprintf(err, errlen, "max_size must be between 1 and %u",
                 reg->cfg.ceiling);
        return POOLD_ERR_INVALID;
    }
    if ((rc = registry_find_entry(reg, org_id, &e)) != POOLD_OK) {
        registry_fill_error(rc, org_id, err, errlen);
        return rc;
    }
    /* Store first: a size we could not persist is not applied. Store and
     * apply are one step, done while this call has the admin token (no lock
     * held across the I/O): two resizes apply in the order the database
     * stored them; a directory reload between them is set right by the
     * next one (the stored size moved the fingerprint). */
    struct db_conn *conn = NULL;
    rc = registry_admin_begin(reg, &conn, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    rc = actor ? catalog_store_pool_size_by(conn, org_id, size, actor, err,
                                            errlen)
               : catalog_store_pool_size(conn, org_id, size, err, errlen);
    struct org_active *a = NULL;
    if (rc == POOLD_OK) {
        if (registry_test_hook != NULL)
            registry_test_hook(reg, REGISTRY_TEST_RESIZE_STORED);
        atomic_store(&e->size, (int)size);
        a = registry_active_find(reg, e);
        if (a && a->pool && pool_resize(a->pool, size) != POOLD_OK)
            rc = POOLD_ERR_INVALID;
    }
    registry_admin_end(reg, conn, false);
    if (rc == POOLD_OK || rc == POOLD_ERR_INVALID) {
        log_event(LOG_INFO, "pool resized", "org", org_id, (const char *)NULL);
        registry_entry_stats(reg, e, a, out);
    }
    registry_active_release(a);
    return rc;
}

struct foreach_pool_arg {
    struct registry *reg;
    void (*fn)(void *arg, const char *org_id, const struct pool_stats *stats);
    void *arg;
};

static void foreach_pool_one(void *arg, struct org_entry *e)
{
    struct foreach_pool_arg *a = arg;
    struct pool_stats st;

    /* Referenced by the snapshot while this runs. */
    registry_entry_stats(a->reg, e, atomic_load(&e->act), &st);
    a->fn(a->arg, e->org_id, &st);
}

void registry_foreach_pool(struct registry *reg,
                           void (*fn)(void *arg, const char *org_id,
                                      const struct pool_stats *stats),
                           void *arg)
{
    (void)registry_foreach_pool_freed(reg, fn, arg, NULL);
}

uint64_t registry_foreach_pool_freed(struct registry *reg,
                                     void (*fn)(void *arg, const char *org_id,
                                                const struct pool_stats *stats),
                                     void *arg, struct pool_stats *freed)
{
    struct foreach_pool_arg a = {reg, fn, arg};

    /* The snapshot's references keep the pools: no lock held while fn
     * runs. */
    return registry_foreach_active(reg, REG_POOLED, foreach_pool_one, &a,
                                   freed);
}

void registry_commit_totals(struct registry *reg, struct reg_commit_totals *out)
{
    memset(out, 0, sizeof *out);
    if (reg->batcher)
        groupcommit_totals(reg->batcher, out);
}

void registry_conn_stats(struct registry *reg, struct pool_stats *out)
{
    if (reg->conns) {
        pool_get_stats(reg->conns, out);
        return;
    }
    memset(out, 0, sizeof *out);
    out->max_size = reg->cfg.db_max_conns;
}

/* A database connection for an operator call (or a read like a message
 * look-up): one of the pool's (pooled mode; idle services are asked for
 * theirs first, as a request's build does), or one of its own under a
 * permit (mode none, *own). By acquire_ns at most. */
struct reg_conn {
    struct pool_item *item; /* a pooled connection, or a permit */
    struct db_conn *own;    /* mode none: its own connection */
};

static int reg_conn_get(struct registry *reg, uint64_t acquire_ns,
                        struct reg_conn *rc_out, struct db_conn **conn,
                        char *err, size_t errlen)
{
    uint64_t now = clock_now_ns();
    uint64_t wait = acquire_ns > now ? acquire_ns - now : 0;
    int rc = pool_try_acquire(reg->conns, 0, &rc_out->item);

    rc_out->own = NULL;
    if (rc == POOLD_ERR_TIMEOUT && reg->cfg.pooled && registry_reclaim(reg, ""))
        rc = pool_try_acquire(reg->conns, 0, &rc_out->item);
    if (rc == POOLD_ERR_TIMEOUT)
        rc = pool_acquire(reg->conns, wait, &rc_out->item);
    if (rc != POOLD_OK) {
        rc_out->item = NULL;
        snprintf(err, errlen,
                 "no database connection became free in time (%s); nothing "
                 "was stored",
                 poold_status_str(rc));
        /* Every connection in use (or no grant yet) while the database
         * answers is the pool's limit, not the database's (DESIGN.md:
         * pool_exhausted); with no answer lately, the database's. */
        if ((rc == POOLD_ERR_TIMEOUT || rc == POOLD_ERR_WAITERS_FULL) &&
            (registry_is_ready(reg) || registry_awaits_grant(reg)))
            return POOLD_ERR_CONNS_BUSY;
        return POOLD_ERR_DB_BUSY;
    }
    if (reg->cfg.pooled) {
        *conn = pool_item_object(rc_out->item);
        return POOLD_OK;
    }
    rc = db_conn_open(&reg->cfg.db, clock_now_ns(), &rc_out->own, err, errlen);
    if (rc != POOLD_OK) {
        pool_release(reg->conns, rc_out->item);
        rc_out->item = NULL;
        return POOLD_ERR_DB;
    }
    *conn = rc_out->own;
    return POOLD_OK;
}

/* Give back what reg_conn_get() took; clean: conn is fit for reuse. */
static void reg_conn_put(struct registry *reg, struct reg_conn *c, bool clean)
{
    if (!reg->cfg.pooled) {
        db_conn_close(c->own);
        c->own = NULL;
        pool_release(reg->conns, c->item);
    } else if (clean) {
        pool_release(reg->conns, c->item);
    } else {
        pool_release_broken(reg->conns, c->item);
    }
    c->item = NULL;
}

/* The acquire and statement deadlines of an operator call from now: as a
 * request's commit, within acquire + statement timeout + 1 s (DESIGN.md),
 * also when the statement timeout is 0 (then 500 ms after the acquire). */
static uint64_t reg_call_deadlines(const struct registry *reg,
                                   uint64_t *acquire_ns)
{
    uint64_t stmt_ns = reg->cfg.db.statement_timeout_ms
                           ? reg->cfg.db.statement_timeout_ms * NS_PER_MS
                           : REG_DB_SLACK_NS;

    *acquire_ns = clock_now_ns() + reg->cfg.acquire_timeout_ns;
    return *acquire_ns + stmt_ns;
}

int registry_with_conn(struct registry *reg, bool per_statement,
                       registry_conn_fn fn, void *arg, char *err, size_t errlen)
{
    uint64_t acquire_ns;
    uint64_t stmt_end = reg_call_deadlines(reg, &acquire_ns);
    uint64_t outer = db_thread_deadline_get();
    struct reg_conn c;
    struct db_conn *conn;
    int rc;

    db_thread_deadline(stmt_end);
    rc = reg_conn_get(reg, acquire_ns, &c, &conn, err, errlen);
    if (rc == POOLD_OK) {
        if (per_statement)
            db_thread_deadline(outer);
        rc = fn(arg, conn, err, errlen);
        if (db_conn_is_clean(conn))
            registry_mark_db_ok(reg, clock_now_ns());
        reg_conn_put(reg, &c, db_conn_is_clean(conn));
    }
    db_thread_deadline(outer);
    return rc;
}

int registry_admin_begin(struct registry *reg, struct db_conn **conn, char *err,
                         size_t errlen)
{
    /* The whole call is bounded: the token and a connection within the
     * acquire timeout, every statement (and the refresh after a write)
     * within the statement timeout after it (DESIGN.md). */
    uint64_t acquire_ns;
    uint64_t stmt_end = reg_call_deadlines(reg, &acquire_ns);
    struct reg_conn c;
    int rc;

    if (!housekeeping_admin_take(reg->hk, acquire_ns)) {
        snprintf(err, errlen,
                 "the database did not answer in time: an earlier admin "
                 "call still waits for it; nothing was stored");
        return POOLD_ERR_DB_BUSY;
    }
    db_thread_deadline(stmt_end);
    rc = reg_conn_get(reg, acquire_ns, &c, conn, err, errlen);
    if (rc != POOLD_OK) {
        db_thread_deadline(0);
        housekeeping_admin_give(reg->hk);
        return rc;
    }
    reg->admin_item = c.item;
    reg->admin_own = c.own;
    return POOLD_OK;
}

void registry_admin_end(struct registry *reg, struct db_conn *conn, bool wrote)
{
    char err[REG_ERR_MAX];
    bool clean = db_conn_is_clean(conn);
    struct reg_conn c = {reg->admin_item, reg->admin_own};

    if (clean) {
        /* It answered: readiness need not wait for a poll. */
        registry_mark_db_ok(reg, clock_now_ns());
        /* Serve the change from the next request here; elsewhere the next
         * poll sees it. A failure is only logged: the poll retries. */
        if (wrote &&
            housekeeping_refresh(reg->hk, conn, err, sizeof err) != POOLD_OK)
            log_event(LOG_WARN, "refresh after an admin write failed", "error",
                      err, (const char *)NULL);
        clean = db_conn_is_clean(conn);
    }
    reg->admin_item = NULL;
    reg->admin_own = NULL;
    reg_conn_put(reg, &c, clean);
    db_thread_deadline(0);
    housekeeping_admin_give(reg->hk);
}

unsigned registry_lookups_max(const struct registry *reg)
{
    /* The cap now: a replica's grant may be below POOLD_DB_MAX_CONNS. */
    unsigned n =
        (reg->cp != NULL ? connpool_cap(reg->cp) : reg->cfg.db_max_conns) /
        REG_LOOKUPS_DIV;

    return n > 0 ? n : 1;
}

struct message_get {
    const char *org_id, *message_id;
    long long retention_s;
    char **json;
};

static int message_get_on(void *arg, struct db_conn *conn, char *err,
                          size_t errlen)
{
    struct message_get *g = arg;
    return catalog_message_get(conn, g->org_id, g->message_id, g->retention_s,
                               g->json, err, errlen);
}

/* A read for a client: on a connection of its own, without the admin
 * token (one at a time for every org), so that clients settling their
 * 504s neither queue behind each other nor make operator calls wait. */
int registry_message_get(struct registry *reg, const char *org_id,
                         const char *message_id, long long retention_s,
                         char **json, char *err, size_t errlen)
{
    struct message_get g = {org_id, message_id, retention_s, json};
    int rc;

    /* A connection each, from the cap the orgs' services share: a flood
     * of lookups must not take every one (and evict the services). */
    if (atomic_fetch_add(&reg->lookups, 1) >= registry_lookups_max(reg)) {
        atomic_fetch_sub(&reg->lookups, 1);
        snprintf(err, errlen,
                 "%u lookups are in flight, as many as poold "
                 "runs at once",
                 registry_lookups_max(reg));
        return POOLD_ERR_WAITERS_FULL;
    }
    rc = registry_with_conn(reg, false, message_get_on, &g, err, errlen);
    atomic_fetch_sub(&reg->lookups, 1);
    return rc;
}

int registry_set_paused(struct registry *reg, const char *org_id, bool paused,
                        const struct audit_actor *actor, char *err,
                        size_t errlen)
{
    struct org_entry *e;
    int rc;

    err[0] = '\0';
    if ((rc = registry_find_entry(reg, org_id, &e)) != POOLD_OK) {
        registry_fill_error(rc, org_id, err, errlen);
        return rc;
    }
    /* Stored first, on the housekeeping connection while we own it: the
     * other replicas read the change from org_changes, this one at once. */
    struct db_conn *conn;
    rc = registry_admin_begin(reg, &conn, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    rc = catalog_store_paused_by(conn, org_id, paused, actor, err, errlen);
    /* Set while this call has the admin token, as resize does: after it,
     * another pause or resume may store and set its flag first, and a late
     * store here would stay (the refresh reads only orgs that change). */
    if (rc == POOLD_OK)
        atomic_store(&e->paused, paused);
    registry_admin_end(reg, conn, rc == POOLD_OK);
    if (rc != POOLD_OK)
        return rc;
    if (registry_test_hook != NULL)
        registry_test_hook(reg, REGISTRY_TEST_PAUSE_STORED);
    log_event(LOG_INFO, paused ? "org paused" : "org resumed", "org", org_id,
              (const char *)NULL);
    return POOLD_OK;
}

int registry_is_paused(struct registry *reg, const char *org_id, bool *out)
{
    struct org_entry *e;
    int rc = registry_find_entry(reg, org_id, &e);

    if (rc == POOLD_OK)
        *out = atomic_load(&e->paused);
    return rc;
}

/* The drain's audit entry: it writes nothing else, so the entry is alone
 * in its statement. A failure is logged, not answered: a drain must work
 * while the database is away (after a failover is when it is wanted). */
static void drain_audit(struct registry *reg, const char *org_id,
                        const struct audit_actor *actor,
                        const struct pool_stats *before,
                        const struct pool_stats *after)
{
    char b[96], a[96], err[REG_ERR_MAX];
    struct audit_entry entry = {actor, "pool.drain", org_id, b, a};
    struct db_conn *conn;
    int rc;

    snprintf(b, sizeof b, "{\"idle\": %llu, \"active\": %llu}",
             (unsigned long long)before->idle,
             (unsigned long long)before->active);
    snprintf(a, sizeof a, "{\"idle\": %llu, \"active\": %llu}",
             (unsigned long long)after->idle,
             (unsigned long long)after->active);
    rc = registry_admin_begin(reg, &conn, err, sizeof err);
    if (rc == POOLD_OK) {
        rc = audit_insert(conn, &entry, err, sizeof err);
        registry_admin_end(reg, conn, false);
    }
    if (rc != POOLD_OK)
        log_event(LOG_WARN, "drain done, its audit entry not written", "org",
                  org_id, "error", err, (const char *)NULL);
}

int registry_drain(struct registry *reg, const char *org_id,
                   const struct audit_actor *actor, struct pool_stats *out,
                   char *err, size_t errlen)
{
    struct org_entry *e;
    struct org_active *a;
    struct pool_stats before;
    int rc;

    err[0] = '\0';
    if ((rc = registry_find_active(reg, org_id, &e, &a)) != POOLD_OK) {
        registry_fill_error(rc, org_id, err, errlen);
        return rc;
    }
    registry_entry_stats(reg, e, a, &before);
    /* The next build reads the org's row again rather than the cache. An
     * org never routed has neither cache nor pool. */
    if (a != NULL) {
        pthread_mutex_lock(&a->cache_lock);
        a->cached = false;
        pthread_mutex_unlock(&a->cache_lock);
        if (a->pool != NULL)
            pool_retire_all(a->pool);
    }
    log_event(LOG_INFO, "pool drained", "org", org_id, (const char *)NULL);
    registry_entry_stats(reg, e, a, out);
    registry_active_release(a);
    if (actor != NULL)
        drain_audit(reg, org_id, actor, &before, out);
    return POOLD_OK;
}

int registry_holders(struct registry *reg, const char *org_id,
                     struct holder_info **out, size_t *n)
{
    struct org_entry *e;
    struct org_active *a;
    struct holder_info *v = NULL;
    size_t cap = 0, have;
    int rc = registry_find_active(reg, org_id, &e, &a);

    *out = NULL;
    *n = 0;
    if (rc != POOLD_OK || a == NULL)
        return rc; /* never routed (or freed): no holder */
    /* The list may grow between sizing and copying: retry with room. */
    for (;;) {
        have = holders_list(&a->holders, v, cap, clock_now_ns());
        if (have <= cap)
            break;
        free(v);
        cap = have + 8;
        if ((v = malloc(cap * sizeof *v)) == NULL) {
            registry_active_release(a);
            return POOLD_ERR_NOMEM;
        }
    }
    registry_active_release(a);
    *out = v;
    *n = have;
    return POOLD_OK;
}

/* ------------------------------------------------------------- replicas */

void registry_set_hk_hook(struct registry *reg, registry_hk_fn fn, void *arg)
{
    reg->hk_fn = fn;
    reg->hk_arg = arg;
}

/* Retire every org's services: idle ones close now, lent ones on release,
 * and their connections go back to a pool over its size, which closes
 * them. The next requests rebuild from the cached rules. */
static void retire_one(void *arg, struct org_entry *e)
{
    (void)arg;
    pool_retire_all(org_entry_pool(e));
}

static void registry_retire_services(struct registry *reg)
{
    registry_foreach_org(reg, REG_POOLED, retire_one, NULL);
}

void registry_set_conn_cap(struct registry *reg, unsigned cap)
{
    unsigned max = connpool_set_cap(reg->cp, cap);

    if (pool_total(reg->conns) <= max)
        return;
    /* Services hold their connection for life: idle ones give it back. */
    while (reg->cfg.pooled && pool_total(reg->conns) > max &&
           registry_reclaim(reg, ""))
        ;
    if (reg->cfg.pooled && pool_total(reg->conns) > max)
        registry_retire_services(reg);
}

unsigned registry_conn_open(struct registry *reg)
{
    return pool_total(reg->conns);
}

unsigned registry_conn_waiting(struct registry *reg)
{
    return pool_waiting(reg->conns);
}
