/* registry.c — org_id -> service pool: the org map, each org's pool of
 * services, admission and the request's path to a commit, the
 * connection-cap policy, the directory and the registry's lifecycle. The
 * commit queue is groupcommit.c, the operator API registry_ops.c, the
 * housekeeping thread housekeeping.c, the connection pool's wiring
 * connpool.c; what they share and the lock order of all of them is
 * registry_internal.h. */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "catalog.h"
#include "clock.h"
#include "groupcommit.h"
#include "holders.h"
#include "log.h"
#include "registry_internal.h"

#define REG_BUCKETS_MIN 64
#define REG_READY_GRACE_NS (3 * NS_PER_S) /* db contact this recent = ready */
/* A client's wait beyond the server's statement timeout. */
#define REG_DB_SLACK_NS (500 * NS_PER_MS)
/* An unknown-outcome write is retried only with this much time left. */
#define REG_RETRY_MIN_NS (100 * NS_PER_MS)

/* ------------------------------------------------------------------ map */

static uint64_t hash_str(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603); /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

/* Under reg->lock (read or write). */
static struct org_entry *map_find(struct registry *reg, const char *org_id)
{
    struct org_entry *e = reg->buckets[hash_str(org_id) % reg->nbuckets];
    while (e && strcmp(e->org_id, org_id) != 0)
        e = e->next;
    return e;
}

/* Under reg->lock (write). Doubles the table when it is full. */
static void map_grow(struct registry *reg)
{
    size_t n = reg->nbuckets * 2;
    struct org_entry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < reg->nbuckets; i++) {
        struct org_entry *e = reg->buckets[i];
        while (e) {
            struct org_entry *next = e->next;
            size_t j = hash_str(e->org_id) % n;
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(reg->buckets);
    reg->buckets = b;
    reg->nbuckets = n;
}

/* Under reg->lock (write). */
static struct org_entry *map_add(struct registry *reg, const char *org_id)
{
    struct org_entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->reg = reg;
    snprintf(e->org_id, sizeof e->org_id, "%s", org_id);
    pthread_mutex_init(&e->cache_lock, NULL);
    holders_init(&e->holders);
    e->misconf_version = -1;
    breaker_init(&e->build_breaker,
                 (unsigned)clock_now_ns() ^ (unsigned)(uintptr_t)e);
    if (reg->nentries >= reg->nbuckets)
        map_grow(reg);
    size_t i = hash_str(org_id) % reg->nbuckets;
    e->next = reg->buckets[i];
    reg->buckets[i] = e;
    reg->nentries++;
    return e;
}

/* A snapshot of the entries (all, or only those with a pool), so that work
 * which may do I/O (pool maintenance, destroy callbacks) runs with no
 * registry lock held. Entries are never freed before registry_destroy().
 * Returns a malloc'd array (caller frees) or NULL with *n = 0. */
static struct org_entry **map_snapshot(struct registry *reg, bool with_pool,
                                       size_t *n)
{
    struct org_entry **list;

    *n = 0;
    pthread_rwlock_rdlock(&reg->lock);
    list = malloc((reg->nentries + 1) * sizeof *list);
    for (size_t i = 0; list && i < reg->nbuckets; i++)
        for (struct org_entry *e = reg->buckets[i]; e; e = e->next)
            if (!with_pool || e->pool)
                list[(*n)++] = e;
    pthread_rwlock_unlock(&reg->lock);
    return list;
}

/* ------------------------------------------------ the org's service pool */

/* Build from the cached rules if they are of the org's current version. */
static int org_build_cached(struct org_entry *e, long long version,
                            struct service **svc, char *err, size_t errlen)
{
    struct ruleset rules = {0};
    bool hit;

    pthread_mutex_lock(&e->cache_lock);
    hit = e->cached && e->cached_version == version &&
          rules_copy(&rules, &e->cached_rules) == POOLD_OK;
    pthread_mutex_unlock(&e->cache_lock);
    if (!hit)
        return POOLD_ERR_NOT_FOUND;
    /* The one copy made under the lock is moved into the service. */
    return service_create_from(&e->reg->env, e->org_id, &rules, version, svc,
                               err, errlen);
}

/* Remember a freshly loaded service's rules for later builds. */
static void org_cache_rules(struct org_entry *e, const struct service *svc)
{
    struct ruleset copy;
    long long version = service_config_version(svc);

    if (version != atomic_load(&e->version) ||
        rules_copy(&copy, service_rules(svc)) != POOLD_OK)
        return;
    pthread_mutex_lock(&e->cache_lock);
    rules_clear(&e->cached_rules);
    e->cached_rules = copy;
    e->cached_version = version;
    e->cached = true;
    pthread_mutex_unlock(&e->cache_lock);
}

static int org_service_create(void *ctx, void **obj)
{
    struct org_entry *e = ctx;
    char err[REG_ERR_MAX];
    struct service *svc = NULL;
    long long version = atomic_load(&e->version);

    /* Gone from the table (version -1) since the request was routed. */
    *obj = NULL;
    if (!atomic_load(&e->present) || version < 0)
        return POOLD_ERR_UNKNOWN_ORG;
    if (!breaker_allow(&e->build_breaker, clock_now_ns()))
        return POOLD_ERR_DB;
    atomic_fetch_add(&e->building, 1);
    int rc = org_build_cached(e, version, &svc, err, sizeof err);
    if (rc == POOLD_ERR_NOT_FOUND) {
        rc = service_create(&e->reg->env, e->org_id, &svc, err, sizeof err);
        if (rc == POOLD_OK)
            org_cache_rules(e, svc);
    }
    atomic_fetch_sub(&e->building, 1);
    if (rc == POOLD_ERR_DB)
        breaker_failure(&e->build_breaker, clock_now_ns());
    else if (rc == POOLD_OK)
        breaker_success(&e->build_breaker);
    if (rc == POOLD_ERR_MISCONFIGURED) {
        pthread_mutex_lock(&e->cache_lock);
        e->misconf_version = version;
        snprintf(e->misconf_msg, sizeof e->misconf_msg, "%s", err);
        pthread_mutex_unlock(&e->cache_lock);
        log_event(LOG_ERROR, "org misconfigured", "org", e->org_id, "error",
                  err, (const char *)NULL);
    } else if (rc != POOLD_OK && rc != POOLD_ERR_UNKNOWN_ORG) {
        log_event(LOG_WARN, "service build failed", "org", e->org_id, "error",
                  err, (const char *)NULL);
    }
    *obj = svc;
    return rc;
}

static void org_service_destroy(void *ctx, void *obj,
                                enum pool_destroy_reason why)
{
    (void)ctx;
    (void)why;
    service_close(obj);
}

/* A service may be lent only while it was built from the org's current row
 * and its connection is alive and young enough: stale configuration can
 * never be served, whatever the retire step did or missed. */
static bool org_service_validate(void *ctx, void *obj, uint64_t idle_ns,
                                 uint64_t now_ns)
{
    struct org_entry *e = ctx;
    (void)idle_ns;
    if (service_config_version(obj) != atomic_load(&e->version))
        return false;
    return service_is_valid(obj, now_ns);
}

static bool org_service_reset(void *ctx, void *obj)
{
    (void)ctx;
    return service_reset(obj);
}

static const struct pool_ops org_service_ops = {
    .create = org_service_create,
    .destroy = org_service_destroy,
    .validate = org_service_validate,
    .reset = org_service_reset,
};

static unsigned effective_size(const struct registry *reg,
                               const struct org_entry *e)
{
    int s = atomic_load(&e->size);
    if (s < 1)
        return reg->cfg.default_size;
    return (unsigned)s > reg->cfg.ceiling ? reg->cfg.ceiling : (unsigned)s;
}

/* Under reg->lock (write). Creating a pool only allocates: no I/O. */
static int entry_make_pool(struct registry *reg, struct org_entry *e)
{
    struct pool_config pc = {
        .name = e->org_id,
        .max_size = effective_size(reg, e),
        .capacity = reg->cfg.ceiling,
        .max_waiters = reg->cfg.max_waiters, /* 0 handled at acquire */
        /* A service is rebuilt at least once per connection TTL, so an idle
         * one never pins an old connection past it. */
        .max_lifetime_ns = reg->cfg.conn_ttl_ns,
        .lifetime_jitter_ns = reg->cfg.conn_ttl_ns / 10,
        .validate_idle_ns = 0,
    };
    struct pool *pool = NULL;
    int rc;

    if (e->batcher == NULL && (e->batcher = groupcommit_create()) == NULL)
        return POOLD_ERR_NOMEM;
    rc = pool_create(&org_service_ops, e, &pc, &pool);
    if (rc == POOLD_OK)
        e->pool = pool; /* published after its batcher */
    return rc;
}

/* e's pool, created once on its first use (pooled mode): concurrent first
 * requests create exactly one. */
static int entry_ensure_pool(struct registry *reg, struct org_entry *e)
{
    int rc = POOLD_OK;

    if (atomic_load(&e->pool) != NULL || !reg->cfg.pooled)
        return POOLD_OK;
    pthread_rwlock_wrlock(&reg->lock);
    if (e->pool == NULL)
        rc = entry_make_pool(reg, e);
    pthread_rwlock_unlock(&reg->lock);
    if (rc == POOLD_OK)
        log_event(LOG_INFO, "pool created", "org", e->org_id,
                  (const char *)NULL);
    return rc;
}

int registry_find_entry(struct registry *reg, const char *org_id,
                        struct org_entry **out)
{
    struct org_entry *e;

    if (!atomic_load(&reg->loaded))
        return POOLD_ERR_NOT_READY;
    pthread_rwlock_rdlock(&reg->lock);
    e = map_find(reg, org_id);
    pthread_rwlock_unlock(&reg->lock);
    if (e == NULL || !atomic_load(&e->present) || !atomic_load(&e->enabled))
        return POOLD_ERR_UNKNOWN_ORG;
    *out = e;
    return POOLD_OK;
}

/* Find the org and its pool, creating the pool once on first use. */
int registry_route(struct registry *reg, const char *org_id,
                   struct org_entry **out)
{
    struct org_entry *e;
    int rc = registry_find_entry(reg, org_id, &e);

    if (rc == POOLD_OK)
        rc = entry_ensure_pool(reg, e);
    if (rc == POOLD_OK)
        *out = e;
    return rc;
}

/* A misconfiguration seen for the org's current version, without a query. */
static bool entry_misconfigured(struct org_entry *e, char *err, size_t errlen)
{
    bool hit;
    pthread_mutex_lock(&e->cache_lock);
    hit = e->misconf_version >= 0 &&
          e->misconf_version == atomic_load(&e->version);
    if (hit)
        snprintf(err, errlen, "%s", e->misconf_msg);
    pthread_mutex_unlock(&e->cache_lock);
    return hit;
}

void registry_fill_error(int rc, const char *org_id, char *err, size_t errlen)
{
    switch (rc) {
    case POOLD_ERR_UNKNOWN_ORG:
        snprintf(err, errlen, "org '%s' does not exist or is disabled", org_id);
        break;
    case POOLD_ERR_TIMEOUT:
        snprintf(err, errlen,
                 "no processing service for org '%s' became "
                 "free in time",
                 org_id);
        break;
    case POOLD_ERR_WAITERS_FULL:
        snprintf(err, errlen, "too many requests are waiting for org '%s'",
                 org_id);
        break;
    case POOLD_ERR_NOT_READY:
        snprintf(err, errlen,
                 "the org directory is not loaded yet: the "
                 "database is unreachable");
        break;
    case POOLD_ERR_SHUTDOWN:
        snprintf(err, errlen, "the server is shutting down");
        break;
    case POOLD_ERR_PAUSED:
        snprintf(err, errlen, "org '%s' is paused by an operator", org_id);
        break;
    default:
        if (err[0] == '\0')
            snprintf(err, errlen, "%s", poold_status_str(rc));
    }
}

static struct reg_deadlines reg_deadlines_from(const struct registry *reg,
                                               uint64_t start_ns)
{
    struct reg_deadlines dl;
    uint64_t st = (uint64_t)reg->cfg.db.statement_timeout_ms * NS_PER_MS;

    dl.acquire_ns = start_ns + reg->cfg.acquire_timeout_ns;
    dl.commit_ns = dl.acquire_ns + st + REG_DB_SLACK_NS;
    return dl;
}

/* The request (msg's request_id and route) holds one of e's services from
 * now until reg_hold_end(): GET /pools/{org_id}/holders lists it. Every
 * request holds its own service, also while its write waits for a group;
 * a batch's request holds the batch's. */
void reg_hold_begin(struct org_entry *e, struct holder *hold,
                    const struct message *msg)
{
    holders_add(&e->holders, hold, msg->request_id, msg->route, clock_now_ns());
}

/* End a hold. One longer than POOLD_HOLD_WARN_MS and not flagged by
 * housekeeping yet is counted and logged here, once. */
void reg_hold_end(struct org_entry *e, struct holder *hold)
{
    if (holders_remove(&e->holders, hold, clock_now_ns(),
                       e->reg->cfg.hold_warn_ns))
        log_event(LOG_WARN, "service held too long", "org", e->org_id,
                  "request_id", hold->request_id, "route", hold->route,
                  (const char *)NULL);
}

/* Give a service back after a commit that ended with rc. */
void reg_release(struct registry *reg, struct org_entry *e,
                 struct pool_item *item, int rc)
{
    if (rc == POOLD_ERR_DB || rc == POOLD_ERR_COMMIT_UNKNOWN)
        pool_release_broken(e->pool, item);
    else if (pool_waiting(reg->conns) > atomic_load(&e->building))
        /* Another org waits for a connection at the cap: this service's
         * goes to the first in that queue rather than to this org's next
         * request, so a busy org cannot keep every connection. Not when
         * the only waiters are this org's own builds: it would tear down a
         * working service to build the same one again. (Holding it for a
         * minimum time first was measured: p99 at a fixed rate went from
         * 4 to 74 ms, for no fewer rebuilds.) */
        pool_release_evict(e->pool, item);
    else
        pool_release(e->pool, item);
}

/*
 * A write whose answer was lost because its connection broke (not because
 * its deadline passed) goes once more, on another connection, while its
 * commit deadline leaves time: the retry inserts the row, or finds it with
 * the same payload (200, duplicate) if the first attempt had committed.
 * The retry may wait for a service until the commit deadline. Whatever
 * else it meets, the first attempt's outcome stays unknown (504).
 */
static bool retry_worth(struct registry *reg, int rc,
                        const struct reg_deadlines *dl)
{
    return rc == POOLD_ERR_COMMIT_UNKNOWN &&
           !atomic_load(&reg->shutting_down) &&
           clock_now_ns() + REG_RETRY_MIN_NS < dl->commit_ns;
}

static int retry_outcome(struct org_entry *e, int first, int again,
                         const char *first_err, char *err, size_t errlen)
{
    log_event(again == POOLD_OK ? LOG_INFO : LOG_WARN,
              "commit outcome unknown: retried on another connection", "org",
              e->org_id, "error", first_err, "retry", poold_status_str(again),
              (const char *)NULL);
    if (again == POOLD_OK || again == POOLD_ERR_CONFLICT)
        return again;
    snprintf(err, errlen, "%s", first_err);
    return first;
}

static int process_pooled(struct registry *reg, struct org_entry *e,
                          const struct message *msg, struct service_result *out,
                          const struct reg_deadlines *dl, char *err,
                          size_t errlen)
{
    int rc = groupcommit_process(reg, e, msg, out, dl, err, errlen);
    char first_err[REG_ERR_MAX];
    struct reg_deadlines again = {dl->commit_ns, dl->commit_ns};

    if (!retry_worth(reg, rc, dl))
        return rc;
    snprintf(first_err, sizeof first_err, "%s", err);
    return retry_outcome(
        e, rc, groupcommit_process(reg, e, msg, out, &again, err, errlen),
        first_err, err, errlen);
}

/* POOLD_POOL_MODE=none: the seed's "alloc" baseline. A service and its
 * connection are built for the request and closed after it; the cap still
 * holds: a permit from reg->conns (a pool of tokens) per open connection. */
static int process_unpooled(struct registry *reg, struct org_entry *e,
                            struct service_job *jobs, size_t n,
                            const struct reg_deadlines *dl, char *err,
                            size_t errlen)
{
    struct service *svc;
    struct pool_item *permit;
    uint64_t timeout = reg->cfg.max_waiters ? reg->cfg.acquire_timeout_ns : 0;
    int rc = pool_acquire(reg->conns, timeout, &permit);
    if (rc != POOLD_OK)
        return rc;
    if (!breaker_allow(&reg->db_breaker, clock_now_ns())) {
        pool_release(reg->conns, permit);
        return POOLD_ERR_DB;
    }
    db_thread_deadline(dl->acquire_ns);
    rc = service_create(&reg->env_none, e->org_id, &svc, err, errlen);
    db_thread_deadline(0);
    if (rc == POOLD_ERR_DB)
        breaker_failure(&reg->db_breaker, clock_now_ns());
    else if (rc == POOLD_OK)
        breaker_success(&reg->db_breaker);
    if (rc == POOLD_OK) {
        struct holder hold;

        reg_hold_begin(e, &hold, jobs[0].msg);
        rc = service_process_many(svc, jobs, n, dl->commit_ns, err, errlen);
        reg_hold_end(e, &hold);
        service_close(svc);
    }
    pool_release(reg->conns, permit);
    return rc;
}

/* A batch is its own group: one service, one statement. */
static int batch_once(struct registry *reg, struct org_entry *e,
                      struct service_job *jobs, size_t n,
                      const struct reg_deadlines *dl, char *err, size_t errlen)
{
    struct pool_item *item;
    struct holder hold;
    uint64_t now = clock_now_ns();
    uint64_t timeout = dl->acquire_ns > now ? dl->acquire_ns - now : 0;
    int rc;

    db_thread_deadline(dl->acquire_ns);
    rc = pool_acquire(e->pool, reg->cfg.max_waiters ? timeout : 0, &item);
    db_thread_deadline(0);
    if (rc != POOLD_OK)
        return rc;
    reg_hold_begin(e, &hold, jobs[0].msg);
    rc = service_process_many(pool_item_object(item), jobs, n, dl->commit_ns,
                              err, errlen);
    reg_hold_end(e, &hold);
    reg_release(reg, e, item, rc);
    return rc;
}

/* A batch is retried like one message (retry_worth). */
static int process_batch_pooled(struct registry *reg, struct org_entry *e,
                                struct service_job *jobs, size_t n,
                                const struct reg_deadlines *dl, char *err,
                                size_t errlen)
{
    int rc = batch_once(reg, e, jobs, n, dl, err, errlen);
    char first_err[REG_ERR_MAX];
    struct reg_deadlines again = {dl->commit_ns, dl->commit_ns};

    if (!retry_worth(reg, rc, dl))
        return rc;
    snprintf(first_err, sizeof first_err, "%s", err);
    return retry_outcome(e, rc,
                         batch_once(reg, e, jobs, n, &again, err, errlen),
                         first_err, err, errlen);
}

int registry_admit(struct registry *reg, const char *org_id,
                   struct org_entry **out, char *err, size_t errlen)
{
    struct org_entry *e = NULL;
    int rc;

    err[0] = '\0';
    if (atomic_load(&reg->shutting_down))
        rc = POOLD_ERR_SHUTDOWN;
    else
        rc = registry_find_entry(reg, org_id, &e);
    if (rc == POOLD_OK && atomic_load(&e->paused))
        rc = POOLD_ERR_PAUSED;
    if (rc == POOLD_OK && entry_misconfigured(e, err, errlen))
        rc = POOLD_ERR_MISCONFIGURED;
    if (rc != POOLD_OK)
        registry_fill_error(rc, org_id, err, errlen);
    else
        *out = e;
    return rc;
}

int registry_process(struct registry *reg, struct org_entry *e,
                     const struct message *msg, struct service_result *out,
                     char *err, size_t errlen)
{
    struct reg_deadlines dl = reg_deadlines_from(reg, clock_now_ns());
    struct service_job job = {.msg = msg};
    int rc = atomic_load(&reg->shutting_down) ? POOLD_ERR_SHUTDOWN
                                              : entry_ensure_pool(reg, e);

    err[0] = '\0';
    if (rc == POOLD_OK && reg->cfg.pooled) {
        rc = process_pooled(reg, e, msg, out, &dl, err, errlen);
    } else if (rc == POOLD_OK) {
        rc = process_unpooled(reg, e, &job, 1, &dl, err, errlen);
        if (rc == POOLD_OK)
            rc = job.status;
        *out = job.result;
    }
    if (rc != POOLD_OK)
        registry_fill_error(rc, e->org_id, err, errlen);
    return rc;
}

int registry_process_batch(struct registry *reg, struct org_entry *e,
                           struct service_job *jobs, size_t n, char *err,
                           size_t errlen)
{
    struct reg_deadlines dl = reg_deadlines_from(reg, clock_now_ns());
    int rc = atomic_load(&reg->shutting_down) ? POOLD_ERR_SHUTDOWN
                                              : entry_ensure_pool(reg, e);

    err[0] = '\0';
    if (rc == POOLD_OK && reg->cfg.pooled)
        rc = process_batch_pooled(reg, e, jobs, n, &dl, err, errlen);
    else if (rc == POOLD_OK)
        rc = process_unpooled(reg, e, jobs, n, &dl, err, errlen);
    if (rc != POOLD_OK)
        registry_fill_error(rc, e->org_id, err, errlen);
    return rc;
}

/* ---------------------------------------------- the shared connection cap */

/* Called by a service build when the connection pool is at its cap: the
 * longest-idle service of another org gives its connection back. */
bool registry_reclaim(void *arg, const char *org_id)
{
    struct registry *reg = arg;
    struct pool *victim = NULL;
    uint64_t best = UINT64_MAX;

    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->nbuckets; i++) {
        for (struct org_entry *e = reg->buckets[i]; e; e = e->next) {
            uint64_t since;
            if (e->pool == NULL || strcmp(e->org_id, org_id) == 0)
                continue;
            if (pool_oldest_idle(e->pool, &since) && since < best) {
                best = since;
                victim = e->pool;
            }
        }
    }
    pthread_rwlock_unlock(&reg->lock);
    /* Pools live until registry_destroy(): safe to use unlocked. */
    return victim != NULL && pool_evict_idle(victim);
}

void registry_reclaim_for_waiters(struct registry *reg)
{
    while (pool_waiting(reg->conns) > 0 && registry_reclaim(reg, ""))
        ;
}

/* ------------------------------------ the directory (housekeeping's calls) */

void registry_mark_db_ok(struct registry *reg, uint64_t now_ns)
{
    atomic_store(&reg->last_ok_ns, now_ns);
}

/* Under reg->lock (write): apply one row of the directory. Retiring and
 * resizing may destroy services (I/O), so they are only marked here and
 * done by housekeeping's apply_pending step with no registry lock held. */
static void apply_org(struct registry *reg, const struct org_info *o)
{
    struct org_entry *e = map_find(reg, o->org_id);
    if (e == NULL && (e = map_add(reg, o->org_id)) == NULL)
        return;
    bool changed =
        atomic_load(&e->version) != o->version || !atomic_load(&e->present);
    bool resized = atomic_load(&e->size) != o->pool_max_size;

    atomic_store(&e->enabled, o->enabled);
    atomic_store(&e->size, o->pool_max_size);
    atomic_store(&e->version, o->version);
    atomic_store(&e->paused, o->paused);
    atomic_store(&e->present, true);
    e->pending_retire |= changed && e->pool != NULL;
    e->pending_resize |= resized && e->pool != NULL;
}

/* Under reg->lock (write): orgs gone from the table. */
static void apply_absent(struct registry *reg, const struct org_info *list,
                         size_t n)
{
    for (size_t i = 0; i < reg->nbuckets; i++) {
        for (struct org_entry *e = reg->buckets[i]; e; e = e->next) {
            bool found = false;
            for (size_t j = 0; j < n && !found; j++)
                found = strcmp(list[j].org_id, e->org_id) == 0;
            if (found || !atomic_load(&e->present))
                continue;
            atomic_store(&e->present, false);
            atomic_store(&e->version, -1);
            e->pending_retire = e->pool != NULL;
        }
    }
}

void registry_apply_directory(struct registry *reg, const struct org_info *list,
                              size_t n)
{
    pthread_rwlock_wrlock(&reg->lock);
    for (size_t i = 0; i < n; i++)
        apply_org(reg, &list[i]);
    if (n < reg->nentries)
        apply_absent(reg, list, n);
    pthread_rwlock_unlock(&reg->lock);
}

void registry_mark_loaded(struct registry *reg)
{
    if (!atomic_exchange(&reg->loaded, true))
        log_event(LOG_INFO, "org directory loaded", (const char *)NULL);
}

void org_entry_take_pending(struct registry *reg, struct org_entry *e,
                            bool *retire, bool *resize)
{
    pthread_rwlock_wrlock(&reg->lock);
    *retire = e->pending_retire;
    *resize = e->pending_resize;
    e->pending_retire = e->pending_resize = false;
    pthread_rwlock_unlock(&reg->lock);
}

/* One org's configuration from the directory: parse its rules now, so its
 * first service costs a rules copy and a pooled connection, no query. A
 * configuration that does not parse is remembered as the misconfiguration
 * of that version (requests answer 503 org_misconfigured at once). */
void registry_preload_one(void *arg, const char *org_id, const char *config,
                          size_t len, long long version)
{
    struct registry *reg = arg;
    struct ruleset rules = {0};
    struct org_entry *e;
    char why[REG_ERR_MAX - 80];
    bool fresh;
    int rc;

    pthread_rwlock_rdlock(&reg->lock);
    e = map_find(reg, org_id);
    pthread_rwlock_unlock(&reg->lock);
    if (e == NULL || atomic_load(&e->version) != version)
        return; /* changed since the directory load: the next one */
    pthread_mutex_lock(&e->cache_lock);
    fresh = (e->cached && e->cached_version == version) ||
            e->misconf_version == version;
    pthread_mutex_unlock(&e->cache_lock);
    if (fresh)
        return;
    rc = rules_parse(config, len, &rules, why, sizeof why);
    pthread_mutex_lock(&e->cache_lock);
    if (rc == POOLD_OK) {
        rules_clear(&e->cached_rules);
        e->cached_rules = rules;
        e->cached_version = version;
        e->cached = true;
    } else if (rc != POOLD_ERR_NOMEM) {
        e->misconf_version = version;
        snprintf(e->misconf_msg, sizeof e->misconf_msg, "org %s: %s", org_id,
                 why);
    }
    pthread_mutex_unlock(&e->cache_lock);
    if (rc != POOLD_OK && rc != POOLD_ERR_NOMEM)
        log_event(LOG_ERROR, "org misconfigured", "org", org_id, "error", why,
                  (const char *)NULL);
}

/* ------------------------------------------------------ an entry's parts */

void registry_foreach_org(struct registry *reg, bool with_pool,
                          void (*fn)(void *arg, struct org_entry *e), void *arg)
{
    size_t n;
    struct org_entry **list = map_snapshot(reg, with_pool, &n);

    for (size_t i = 0; i < n; i++)
        fn(arg, list[i]);
    free(list);
}

const char *org_entry_id(const struct org_entry *e)
{
    return e->org_id;
}

struct pool *org_entry_pool(struct org_entry *e)
{
    return atomic_load(&e->pool);
}

struct holders *org_entry_holders(struct org_entry *e)
{
    return &e->holders;
}

struct breaker *org_entry_breaker(struct org_entry *e)
{
    return &e->build_breaker;
}

unsigned org_entry_size(const struct registry *reg, struct org_entry *e)
{
    return effective_size(reg, e);
}

/* ------------------------------------------------------------- lifecycle */

static int reg_make_conns(struct registry *reg)
{
    struct connpool_config cc = {
        .db = &reg->cfg.db,
        .breaker = &reg->db_breaker,
        .pooled = reg->cfg.pooled,
        .max_conns = reg->cfg.db_max_conns,
        .min_idle = reg->cfg.db_min_idle,
        .max_waiters = reg->cfg.max_waiters,
        .ttl_ns = reg->cfg.conn_ttl_ns,
        .check_idle_ns = reg->cfg.conn_check_idle_ns,
    };
    int rc = connpool_create(&cc, &reg->cp);

    if (rc == POOLD_OK)
        reg->conns = connpool_pool(reg->cp);
    return rc;
}

int registry_create(const struct registry_config *cfg, struct registry **out)
{
    struct registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL)
        return POOLD_ERR_NOMEM;
    reg->cfg = *cfg;
    /* One statement's client-side wait: the server-side timeout plus a
     * slack, so the server normally answers first with a real error; with
     * no server-side timeout, the acquire timeout bounds it instead. */
    if (reg->cfg.db.query_wait_ns == 0)
        reg->cfg.db.query_wait_ns =
            (cfg->db.statement_timeout_ms > 0
                 ? (uint64_t)cfg->db.statement_timeout_ms * NS_PER_MS
                 : cfg->acquire_timeout_ns) +
            REG_DB_SLACK_NS;
    if (reg->cfg.refresh_interval_ns == 0)
        reg->cfg.refresh_interval_ns = NS_PER_S;
    reg->prewarm = strdup(cfg->prewarm ? cfg->prewarm : "");
    reg->nbuckets = REG_BUCKETS_MIN;
    reg->buckets = calloc(reg->nbuckets, sizeof *reg->buckets);
    pthread_rwlock_init(&reg->lock, NULL);
    breaker_init(&reg->db_breaker,
                 (unsigned)clock_now_ns() ^ (unsigned)(uintptr_t)reg);

    reg->env = (struct service_env){
        .db = &reg->cfg.db,
        .conn_acquire_timeout_ns = cfg->acquire_timeout_ns,
        .conn_check_idle_ns = cfg->conn_check_idle_ns,
        .build_cost_ms = cfg->build_cost_ms,
        .process_cost_ms = cfg->process_cost_ms,
        .reclaim = registry_reclaim,
        .reclaim_arg = reg,
    };
    reg->env_none = reg->env;
    reg->env_none.reclaim = NULL;
    if (reg->prewarm == NULL || reg->buckets == NULL ||
        reg_make_conns(reg) != POOLD_OK ||
        housekeeping_create(reg, &reg->hk) != POOLD_OK) {
        registry_destroy(reg);
        return POOLD_ERR_NOMEM;
    }
    if (cfg->pooled)
        reg->env.conns = reg->conns;
    *out = reg;
    return POOLD_OK;
}

int registry_start(struct registry *reg)
{
    return housekeeping_start(reg->hk);
}

void registry_shutdown(struct registry *reg)
{
    size_t n;
    struct org_entry **list;

    if (atomic_exchange(&reg->shutting_down, true))
        return;
    list = map_snapshot(reg, true, &n);
    for (size_t i = 0; i < n; i++) {
        pool_shutdown(list[i]->pool);
        groupcommit_wake(list[i]->batcher);
    }
    free(list);
    /* Mode none waits on permits: wake those waiters too. (In pooled mode
     * the connection pool goes last, after the services gave theirs back.) */
    if (!reg->cfg.pooled && reg->conns)
        pool_shutdown(reg->conns);
}

void registry_destroy(struct registry *reg)
{
    if (reg == NULL)
        return;
    if (reg->buckets)
        registry_shutdown(reg);
    /* After the pools were shut down: prewarm's acquires fail at once. */
    housekeeping_stop(reg->hk);
    /* Service pools first: their services give connections back. */
    for (size_t i = 0; reg->buckets && i < reg->nbuckets; i++) {
        struct org_entry *e = reg->buckets[i];
        while (e) {
            struct org_entry *next = e->next;
            pool_destroy(e->pool);
            rules_clear(&e->cached_rules);
            pthread_mutex_destroy(&e->cache_lock);
            holders_deinit(&e->holders);
            breaker_deinit(&e->build_breaker);
            groupcommit_destroy(e->batcher);
            free(e);
            e = next;
        }
    }
    connpool_destroy(reg->cp);
    /* After every pooled connection is closed (the replica hook). */
    housekeeping_destroy(reg->hk);
    breaker_deinit(&reg->db_breaker);
    pthread_rwlock_destroy(&reg->lock);
    free(reg->buckets);
    free(reg->prewarm);
    free(reg);
}

void registry_abort(struct registry *reg)
{
    (void)reg; /* one database per process: the abort is process-wide */
    db_abort_all();
}

bool registry_is_ready(struct registry *reg)
{
    uint64_t last = atomic_load(&reg->last_ok_ns);
    uint64_t grace = reg->cfg.refresh_interval_ns + REG_READY_GRACE_NS;
    return atomic_load(&reg->loaded) && !atomic_load(&reg->shutting_down) &&
           connpool_cap(reg->cp) > 0 && last != 0 &&
           clock_now_ns() - last < grace;
}
