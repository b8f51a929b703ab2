/* registry.c — org_id -> service pool: the org map, each org's active part
 * and pool of services (built on its first request), the connection-cap
 * policy, the directory and the registry's lifecycle. A request's path is
 * registry_request.c, the commit queue groupcommit.c, the operator API
 * registry_ops.c, freeing deleted orgs' pools registry_gone.c, the
 * housekeeping thread housekeeping.c, the connection pool's wiring
 * connpool.c; what they share and the lock order of all of
 * them is registry_internal.h. */
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
#include "db.h"
#include "groupcommit.h"
#include "holders.h"
#include "log.h"
#include "registry_internal.h"

#define REG_BUCKETS_MIN 64 /* a power of two, as every size after it */
#define REG_READY_GRACE_NS (3 * NS_PER_S) /* db contact this recent = ready */

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
    struct org_entry *e = reg->buckets[hash_str(org_id) & (reg->nbuckets - 1)];
    while (e && strcmp(e->org_id, org_id) != 0)
        e = e->next;
    return e;
}

/* Under reg->lock (write). Doubles the table (false: no memory, longer
 * chains, still correct). */
static bool map_grow(struct registry *reg)
{
    size_t n = reg->nbuckets * 2;
    struct org_entry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return false;
    for (size_t i = 0; i < reg->nbuckets; i++) {
        struct org_entry *e = reg->buckets[i];
        while (e) {
            struct org_entry *next = e->next;
            size_t j = hash_str(e->org_id) & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(reg->buckets);
    reg->buckets = b;
    reg->nbuckets = n;
    return true;
}

/* Entries are carved from chunks and never freed one by one (they live
 * until registry_destroy): no allocator header or rounding per org. */
#define REG_ARENA_CHUNK (256 * 1024)

struct reg_arena {
    struct reg_arena *next;
    size_t used;
    _Alignas(max_align_t) unsigned char data[];
};

/* Under reg->lock (write): n zeroed bytes, 8-aligned, or NULL. */
static void *arena_alloc(struct registry *reg, size_t n)
{
    struct reg_arena *a = reg->arena;

    n = (n + 7) & ~(size_t)7;
    if (a == NULL || a->used + n > REG_ARENA_CHUNK) {
        a = malloc(sizeof *a + REG_ARENA_CHUNK);
        if (a == NULL)
            return NULL;
        a->next = reg->arena;
        a->used = 0;
        reg->arena = a;
    }
    a->used += n;
    return memset(a->data + a->used - n, 0, n);
}

static void arena_free(struct reg_arena *a)
{
    while (a != NULL) {
        struct reg_arena *next = a->next;
        free(a);
        a = next;
    }
}

/* Under reg->lock (write). */
static struct org_entry *map_add(struct registry *reg, const char *org_id)
{
    size_t len = strnlen(org_id, ORG_ID_MAX);
    struct org_entry *e =
        arena_alloc(reg, offsetof(struct org_entry, org_id) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->org_id, org_id, len);
    e->org_id[len] = '\0';
    if (reg->nentries >= reg->nbuckets)
        map_grow(reg);
    size_t i = hash_str(e->org_id) & (reg->nbuckets - 1);
    e->next = reg->buckets[i];
    reg->buckets[i] = e;
    reg->nentries++;
    return e;
}

/* Under reg->lock or reg->live_lock, where a is found: a reference. */
static struct org_active *active_ref(struct org_active *a)
{
    atomic_fetch_add(&a->refs, 1);
    return a;
}

struct org_active *registry_active_share(struct org_active *a)
{
    return active_ref(a);
}

void registry_active_release(struct org_active *a)
{
    if (a != NULL)
        atomic_fetch_sub(&a->refs, 1);
}

/* A snapshot of the actives which says (not REG_EVERY), each referenced,
 * so that work which may do I/O (pool maintenance, destroy callbacks)
 * runs with no registry lock held and none of them is freed meanwhile.
 * Returns a malloc'd array (caller releases each and frees it) or NULL
 * with *n = 0. */
static struct org_active **active_snapshot(struct registry *reg,
                                           enum reg_orgs which, size_t *n,
                                           struct pool_stats *freed,
                                           uint64_t *nfreed)
{
    struct org_active **list = NULL;

    *n = 0;
    if (which == REG_LIVE) {
        pthread_mutex_lock(&reg->live_lock);
        list = malloc((reg->nlive + 1) * sizeof *list);
        for (struct org_active *a = reg->live; list && a; a = a->live_next)
            list[(*n)++] = active_ref(a);
        pthread_mutex_unlock(&reg->live_lock);
        return list;
    }
    pthread_rwlock_rdlock(&reg->lock);
    list = malloc((reg->nactive + 1) * sizeof *list);
    for (struct org_active *a = reg->active; list && a; a = a->next)
        if (which == REG_ACTIVE || a->pool != NULL)
            list[(*n)++] = active_ref(a);
    if (freed != NULL) /* an active leaves the list and enters these at once */
        *nfreed = registry_freed_stats(reg, freed);
    pthread_rwlock_unlock(&reg->lock);
    return list;
}

/* Every entry of the directory (REG_EVERY), which are never freed before
 * registry_destroy(); malloc'd, or NULL with *n = 0. */
static struct org_entry **entry_snapshot(struct registry *reg, size_t *n)
{
    struct org_entry **list;

    *n = 0;
    pthread_rwlock_rdlock(&reg->lock);
    list = malloc((reg->nentries + 1) * sizeof *list);
    for (size_t i = 0; list && i < reg->nbuckets; i++)
        for (struct org_entry *e = reg->buckets[i]; e; e = e->next)
            list[(*n)++] = e;
    pthread_rwlock_unlock(&reg->lock);
    return list;
}

/* ------------------------------------------- the live list (reg->live) */

/* A service of a's org was built (org_service_create). */
static void live_add(struct org_active *a)
{
    struct registry *reg = a->reg;

    pthread_mutex_lock(&reg->live_lock);
    if (a->nservices++ == 0) {
        a->live_prev = NULL;
        a->live_next = reg->live;
        if (reg->live)
            reg->live->live_prev = a;
        reg->live = a;
        reg->nlive++;
    }
    pthread_mutex_unlock(&reg->live_lock);
}

/* A service of a's org was destroyed. */
static void live_remove(struct org_active *a)
{
    struct registry *reg = a->reg;

    pthread_mutex_lock(&reg->live_lock);
    if (a->nservices > 0 && --a->nservices == 0) {
        if (a->live_prev)
            a->live_prev->live_next = a->live_next;
        else
            reg->live = a->live_next;
        if (a->live_next)
            a->live_next->live_prev = a->live_prev;
        a->live_prev = a->live_next = NULL;
        reg->nlive--;
    }
    pthread_mutex_unlock(&reg->live_lock);
}

/* ------------------------------------------------ the org's service pool */

/* Build from the cached rules if they are of the org's current version. */
static int org_build_cached(struct org_active *a, long long version,
                            struct service **svc, char *err, size_t errlen)
{
    struct ruleset rules = {0};
    bool hit;

    pthread_mutex_lock(&a->cache_lock);
    hit = a->cached && a->cached_version == version &&
          rules_copy(&rules, &a->cached_rules) == POOLD_OK;
    pthread_mutex_unlock(&a->cache_lock);
    if (!hit)
        return POOLD_ERR_NOT_FOUND;
    /* The one copy made under the lock is moved into the service. */
    return service_create_from(&a->reg->env, a->entry->org_id, &rules, version,
                               svc, err, errlen);
}

/* Remember a freshly loaded service's rules for later builds. */
static void org_cache_rules(struct org_active *a, const struct service *svc)
{
    struct ruleset copy;
    long long version = service_config_version(svc);

    if (version != atomic_load(&a->entry->version) ||
        rules_copy(&copy, service_rules(svc)) != POOLD_OK)
        return;
    pthread_mutex_lock(&a->cache_lock);
    rules_clear(&a->cached_rules);
    a->cached_rules = copy;
    a->cached_version = version;
    a->cached = true;
    pthread_mutex_unlock(&a->cache_lock);
}

/* Remember (and log) the misconfiguration of version. */
static void org_note_misconf(struct org_active *a, long long version,
                             const char *err)
{
    pthread_mutex_lock(&a->cache_lock);
    a->misconf_version = version;
    snprintf(a->misconf_msg, sizeof a->misconf_msg, "%s", err);
    pthread_mutex_unlock(&a->cache_lock);
    log_event(LOG_ERROR, "org misconfigured", "org", a->entry->org_id, "error",
              err, (const char *)NULL);
}

static int org_service_build(void *ctx, void **obj)
{
    struct org_active *a = ctx;
    struct org_entry *e = a->entry;
    char err[REG_ERR_MAX];
    struct service *svc = NULL;
    long long version = atomic_load(&e->version);

    /* Gone from the table (version -1) since the request was routed. */
    *obj = NULL;
    if (!atomic_load(&e->present) || version < 0)
        return POOLD_ERR_UNKNOWN_ORG;
    if (!breaker_allow(&a->build_breaker, clock_now_ns()))
        return POOLD_ERR_DB;
    atomic_fetch_add(&a->building, 1);
    uint64_t gen = db_fence_generation();
    int rc = org_build_cached(a, version, &svc, err, sizeof err);
    if (rc == POOLD_ERR_NOT_FOUND) {
        rc = service_create(&a->reg->env, e->org_id, &svc, err, sizeof err);
        if (rc == POOLD_OK)
            org_cache_rules(a, svc);
    }
    atomic_fetch_sub(&a->building, 1);
    if (rc == POOLD_ERR_DB && !db_fence_since(gen))
        breaker_failure(&a->build_breaker, clock_now_ns());
    else if (rc == POOLD_OK)
        breaker_success(&a->build_breaker);
    if (rc == POOLD_ERR_MISCONFIGURED)
        org_note_misconf(a, version, err);
    else if (rc == POOLD_ERR_TIMEOUT) /* every connection in use: counted */
        log_event(LOG_DEBUG, "service build waited in vain", "org", e->org_id,
                  "error", err, (const char *)NULL);
    else if (rc != POOLD_OK && rc != POOLD_ERR_UNKNOWN_ORG)
        log_event(LOG_WARN, "service build failed", "org", e->org_id, "error",
                  err, (const char *)NULL);
    if (rc == POOLD_OK)
        live_add(a);
    *obj = svc;
    return rc;
}

static void org_service_destroy(void *ctx, void *obj,
                                enum pool_destroy_reason why)
{
    (void)why;
    service_close(obj);
    live_remove(ctx);
}

/* A fresh service is lent without validate(): one whose org's row changed
 * (or went) while it was built, before the retire step ran, is built
 * again here, so stale configuration is not served from a build either. */
#define ORG_BUILD_TRIES 3
static int org_service_create(void *ctx, void **obj)
{
    struct org_active *a = ctx;
    struct org_entry *e = a->entry;

    for (int i = 0; i < ORG_BUILD_TRIES; i++) {
        int rc = org_service_build(ctx, obj);

        if (rc != POOLD_OK ||
            (atomic_load(&e->present) &&
             service_config_version(*obj) >= atomic_load(&e->version)))
            return rc;
        org_service_destroy(ctx, *obj, POOL_DESTROY_RETIRED);
        *obj = NULL;
    }
    log_event(LOG_WARN, "org changed during every service build", "org",
              e->org_id, (const char *)NULL);
    return POOLD_ERR_DB;
}

/* A service may be lent only while it was built from the org's current row
 * and its connection is alive and young enough: stale configuration can
 * never be served, whatever the retire step did or missed. */
static bool org_service_validate(void *ctx, void *obj, uint64_t idle_ns,
                                 uint64_t now_ns)
{
    struct org_active *a = ctx;
    (void)idle_ns;
    if (service_config_version(obj) != atomic_load(&a->entry->version))
        return false;
    return service_is_valid(obj, now_ns);
}

static bool org_service_reset(void *ctx, void *obj)
{
    (void)ctx;
    return service_reset(obj);
}

/* A service ends with its connection's TTL: the pool's housekeeping then
 * closes an idle one in time, not only a lend (an idle service of a quiet
 * org held its connection up to twice the TTL). */
static uint64_t org_service_expiry(void *ctx, const void *obj)
{
    (void)ctx;
    return service_conn_expiry(obj);
}

static const struct pool_ops org_service_ops = {
    .create = org_service_create,
    .destroy = org_service_destroy,
    .validate = org_service_validate,
    .reset = org_service_reset,
    .expiry = org_service_expiry,
};

static unsigned effective_size(const struct registry *reg,
                               const struct org_entry *e)
{
    int s = atomic_load(&e->size);
    if (s < 1)
        return reg->cfg.default_size;
    return (unsigned)s > reg->cfg.ceiling ? reg->cfg.ceiling : (unsigned)s;
}

void registry_active_destroy(struct org_active *a)
{
    if (a == NULL)
        return;
    pool_destroy(a->pool);
    rules_clear(&a->cached_rules);
    pthread_mutex_destroy(&a->cache_lock);
    holders_deinit(&a->holders);
    breaker_deinit(&a->build_breaker);
    free(a);
}

/* Under reg->lock (write): e's active part, with its pool in pooled mode,
 * and the caller's reference to it; none for an org gone from the table
 * (what it had was freed or is to be: a request admitted before the delete
 * must not make it anew). Only allocates: no I/O. */
static int entry_make_active(struct registry *reg, struct org_entry *e)
{
    struct pool_config pc = {
        .name = e->org_id,
        .max_size = effective_size(reg, e),
        .capacity = reg->cfg.ceiling,
        .max_waiters = reg->cfg.max_waiters, /* 0 handled at acquire */
        /* A service is rebuilt at least once per connection TTL, and ends
         * with its connection's (org_service_expiry): an idle one never
         * pins an old connection past it. */
        .max_lifetime_ns = reg->cfg.conn_ttl_ns,
        .lifetime_jitter_ns = reg->cfg.conn_ttl_ns / 10,
        .validate_idle_ns = 0,
    };
    struct org_active *a;

    if (!atomic_load(&e->present))
        return POOLD_ERR_UNKNOWN_ORG;
    if ((a = calloc(1, sizeof *a)) == NULL)
        return POOLD_ERR_NOMEM;
    a->entry = e;
    a->reg = reg;
    a->misconf_version = -1;
    pthread_mutex_init(&a->cache_lock, NULL);
    holders_init(&a->holders);
    breaker_init(&a->build_breaker,
                 (unsigned)clock_now_ns() ^ (unsigned)(uintptr_t)a);
    if (reg->cfg.pooled &&
        pool_create(&org_service_ops, a, &pc, &a->pool) != POOLD_OK) {
        registry_active_destroy(a);
        return POOLD_ERR_NOMEM;
    }
    atomic_init(&a->refs, 1); /* the caller's */
    a->prev = NULL;
    a->next = reg->active;
    if (reg->active)
        reg->active->prev = a;
    reg->active = a;
    reg->nactive++;
    atomic_store(&e->act, a); /* published whole */
    return POOLD_OK;
}

struct org_active *registry_active_find(struct registry *reg,
                                        struct org_entry *e)
{
    struct org_active *a;

    pthread_rwlock_rdlock(&reg->lock);
    a = atomic_load(&e->act);
    if (a != NULL)
        active_ref(a);
    pthread_rwlock_unlock(&reg->lock);
    return a;
}

int registry_active_acquire(struct registry *reg, struct org_entry *e,
                            struct org_active **out)
{
    struct org_active *a = registry_active_find(reg, e);
    int rc = POOLD_OK;
    bool made = false;

    if (a == NULL) {
        pthread_rwlock_wrlock(&reg->lock);
        if ((a = atomic_load(&e->act)) != NULL) {
            active_ref(a);
        } else if ((rc = entry_make_active(reg, e)) == POOLD_OK) {
            a = atomic_load(&e->act);
            made = true;
        }
        pthread_rwlock_unlock(&reg->lock);
    }
    if (made && reg->cfg.pooled)
        log_event(LOG_INFO, "pool created", "org", e->org_id,
                  (const char *)NULL);
    *out = a;
    return rc;
}

/* Under reg->lock: the org, known, present and enabled. */
static int find_locked(struct registry *reg, const char *org_id,
                       struct org_entry **out)
{
    struct org_entry *e = map_find(reg, org_id);

    if (e == NULL || !atomic_load(&e->present) || !atomic_load(&e->enabled))
        return POOLD_ERR_UNKNOWN_ORG;
    *out = e;
    return POOLD_OK;
}

int registry_find_entry(struct registry *reg, const char *org_id,
                        struct org_entry **out)
{
    int rc;

    if (!atomic_load(&reg->loaded))
        return POOLD_ERR_NOT_READY;
    pthread_rwlock_rdlock(&reg->lock);
    rc = find_locked(reg, org_id, out);
    pthread_rwlock_unlock(&reg->lock);
    return rc;
}

/* The request path's one lock of the map: admission finds the org and takes
 * its reference under the same read lock. */
int registry_find_active(struct registry *reg, const char *org_id,
                         struct org_entry **out, struct org_active **act)
{
    struct org_active *a = NULL;
    int rc;

    *act = NULL;
    if (!atomic_load(&reg->loaded))
        return POOLD_ERR_NOT_READY;
    pthread_rwlock_rdlock(&reg->lock);
    rc = find_locked(reg, org_id, out);
    if (rc == POOLD_OK && (a = atomic_load(&(*out)->act)) != NULL)
        *act = active_ref(a);
    pthread_rwlock_unlock(&reg->lock);
    return rc;
}

/* Find the org and a reference to its active part, creating it once on
 * first use. */
int registry_route(struct registry *reg, const char *org_id,
                   struct org_active **out)
{
    struct org_entry *e;
    int rc = registry_find_entry(reg, org_id, &e);

    *out = NULL;
    if (rc == POOLD_OK)
        rc = registry_active_acquire(reg, e, out);
    return rc;
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

/* ---------------------------------------------- the shared connection cap */

/* Called by a service build when the connection pool is at its cap: the
 * longest-idle service of another org gives its connection back. Only the
 * orgs with services are searched (reg->live: at most one per connection),
 * whatever the number of orgs. */
bool registry_reclaim(void *arg, const char *org_id)
{
    struct registry *reg = arg;
    struct org_active *victim = NULL;
    uint64_t best = UINT64_MAX;
    bool evicted;

    pthread_mutex_lock(&reg->live_lock);
    for (struct org_active *a = reg->live; a; a = a->live_next) {
        uint64_t since;
        if (a->pool == NULL || strcmp(a->entry->org_id, org_id) == 0)
            continue;
        if (pool_oldest_idle(a->pool, &since) && since < best) {
            best = since;
            victim = a;
        }
    }
    /* Referenced where found: its pool is used with no lock held. */
    if (victim != NULL)
        active_ref(victim);
    pthread_mutex_unlock(&reg->live_lock);
    evicted = victim != NULL && pool_evict_idle(victim->pool);
    registry_active_release(victim);
    return evicted;
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
/* Under reg->lock (write): mark e's pool for retiring or resizing (only
 * an org with a pool has anything to retire), listed once on pending. */
static void mark_pending(struct registry *reg, struct org_entry *e, bool retire,
                         bool resize)
{
    struct org_active *a = e->act;

    if (a == NULL || a->pool == NULL || !(retire || resize))
        return;
    if (!a->pending_retire && !a->pending_resize) {
        if (reg->npending == reg->cap_pending) {
            size_t cap = reg->cap_pending ? 2 * reg->cap_pending : 16;
            struct org_active **v = realloc(reg->pending, cap * sizeof *v);
            if (v == NULL)
                return; /* validate() still refuses a stale service */
            reg->pending = v;
            reg->cap_pending = cap;
        }
        reg->pending[reg->npending++] = a;
    }
    a->pending_retire |= retire;
    a->pending_resize |= resize;
}

/* Under reg->lock (write). fresh: the map was empty before this load, and
 * a load lists each org once (org_id is the key): no lookup needed. */
static void apply_org(struct registry *reg, const struct org_info *o,
                      bool fresh)
{
    struct org_entry *e = fresh ? NULL : map_find(reg, o->org_id);
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
    e->load_gen = reg->load_gen;
    mark_pending(reg, e, changed, resized);
}

/* Under reg->lock (write): the org is gone from the table. Its active
 * part, if any, is retired (apply_pending) and listed for freeing once
 * nobody uses it (registry_free_gone). */
static void apply_gone(struct registry *reg, struct org_entry *e)
{
    struct org_active *a = e->act;

    if (!atomic_load(&e->present))
        return;
    atomic_store(&e->present, false);
    atomic_store(&e->version, -1);
    mark_pending(reg, e, true, false);
    if (a != NULL && !a->gone) {
        a->gone = true;
        a->gone_next = reg->gone;
        reg->gone = a;
    }
}

void registry_apply_directory(struct registry *reg, const struct org_info *list,
                              size_t n)
{
    pthread_rwlock_wrlock(&reg->lock);
    bool fresh = reg->nentries == 0;
    reg->load_gen++;
    while (reg->nbuckets < n && map_grow(reg)) /* sized once, at start */
        ;
    for (size_t i = 0; i < n; i++)
        apply_org(reg, &list[i], fresh);
    /* A whole load (rare: start-up, a bulk write): an entry it did not
     * mark is gone. */
    for (size_t i = 0; !fresh && i < reg->nbuckets; i++)
        for (struct org_entry *e = reg->buckets[i]; e; e = e->next)
            if (e->load_gen != reg->load_gen)
                apply_gone(reg, e);
    pthread_rwlock_unlock(&reg->lock);
}

void registry_apply_changes(struct registry *reg, const struct org_info *list,
                            size_t n)
{
    pthread_rwlock_wrlock(&reg->lock);
    for (size_t i = 0; i < n; i++) {
        struct org_entry *e;
        if (list[i].present)
            apply_org(reg, &list[i], false);
        else if ((e = map_find(reg, list[i].org_id)) != NULL)
            apply_gone(reg, e);
    }
    pthread_rwlock_unlock(&reg->lock);
}

void registry_mark_loaded(struct registry *reg)
{
    if (!atomic_exchange(&reg->loaded, true))
        log_event(LOG_INFO, "org directory loaded", (const char *)NULL);
}

size_t registry_foreach_pending(struct registry *reg,
                                void (*fn)(void *arg, struct org_entry *e,
                                           bool retire, bool resize),
                                void *arg)
{
    struct org_active **list;
    bool *marks;
    size_t n;

    pthread_rwlock_wrlock(&reg->lock);
    list = reg->pending;
    n = reg->npending;
    marks = malloc(2 * (n + 1) * sizeof *marks);
    if (marks == NULL) {
        pthread_rwlock_unlock(&reg->lock);
        return 0; /* kept for the next tick */
    }
    for (size_t i = 0; i < n; i++) {
        marks[2 * i] = list[i]->pending_retire;
        marks[2 * i + 1] = list[i]->pending_resize;
        list[i]->pending_retire = list[i]->pending_resize = false;
        active_ref(list[i]); /* off pending: freeable but for this */
    }
    reg->pending = NULL;
    reg->npending = reg->cap_pending = 0;
    pthread_rwlock_unlock(&reg->lock);
    for (size_t i = 0; i < n; i++) {
        fn(arg, list[i]->entry, marks[2 * i], marks[2 * i + 1]);
        registry_active_release(list[i]);
    }
    free(marks);
    free(list);
    return n;
}

/* ------------------------------------------------------ an entry's parts */

void registry_foreach_org(struct registry *reg, enum reg_orgs which,
                          void (*fn)(void *arg, struct org_entry *e), void *arg)
{
    size_t n;

    if (which == REG_EVERY) {
        struct org_entry **list = entry_snapshot(reg, &n);

        for (size_t i = 0; i < n; i++)
            fn(arg, list[i]);
        free(list);
        return;
    }
    registry_foreach_active(reg, which, fn, arg, NULL);
}

uint64_t registry_foreach_active(struct registry *reg, enum reg_orgs which,
                                 void (*fn)(void *arg, struct org_entry *e),
                                 void *arg, struct pool_stats *freed)
{
    uint64_t nfreed = 0;
    size_t n;
    struct org_active **list = active_snapshot(reg, which, &n, freed, &nfreed);

    for (size_t i = 0; i < n; i++) {
        fn(arg, list[i]->entry);
        registry_active_release(list[i]);
    }
    free(list);
    return nfreed;
}

const char *org_entry_id(const struct org_entry *e)
{
    return e->org_id;
}

struct pool *org_entry_pool(struct org_entry *e)
{
    struct org_active *a = atomic_load(&e->act);
    return a ? a->pool : NULL;
}

struct holders *org_entry_holders(struct org_entry *e)
{
    struct org_active *a = atomic_load(&e->act);
    return a ? &a->holders : NULL;
}

struct breaker *org_entry_breaker(struct org_entry *e)
{
    struct org_active *a = atomic_load(&e->act);
    return a ? &a->build_breaker : NULL;
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
    pthread_mutex_init(&reg->live_lock, NULL);
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
        .scope = cfg->scope,
    };
    reg->env_none = reg->env;
    reg->env_none.reclaim = NULL;
    if (reg->prewarm == NULL || reg->buckets == NULL ||
        (cfg->pooled && (reg->batcher = groupcommit_create()) == NULL) ||
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
    struct org_active **list;

    if (atomic_exchange(&reg->shutting_down, true))
        return;
    list = active_snapshot(reg, REG_POOLED, &n, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        pool_shutdown(list[i]->pool);
        registry_active_release(list[i]);
    }
    free(list);
    if (reg->batcher)
        groupcommit_wake(reg->batcher);
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
    while (reg->active != NULL) {
        struct org_active *next = reg->active->next;
        registry_active_destroy(reg->active);
        reg->active = next;
    }
    arena_free(reg->arena);
    free(reg->pending);
    /* Every pooled connection closed, the pool's records of closed ones
     * kept: the replica hook runs after, and may look at them. */
    if (reg->conns)
        pool_shutdown(reg->conns);
    housekeeping_destroy(reg->hk);
    groupcommit_destroy(reg->batcher);
    connpool_destroy(reg->cp);
    breaker_deinit(&reg->db_breaker);
    pthread_rwlock_destroy(&reg->lock);
    pthread_mutex_destroy(&reg->live_lock);
    free(reg->buckets);
    free(reg->prewarm);
    free(reg);
}

void registry_abort(struct registry *reg)
{
    (void)reg; /* one database per process: the abort is process-wide */
    db_abort_all();
}

bool registry_db_answers(struct registry *reg)
{
    uint64_t last = atomic_load(&reg->last_ok_ns);
    uint64_t grace = reg->cfg.refresh_interval_ns + REG_READY_GRACE_NS;
    return last != 0 && clock_now_ns() - last < grace;
}

/* Loaded, not stopping, and the database answered lately. */
static bool registry_serving(struct registry *reg)
{
    return atomic_load(&reg->loaded) && !atomic_load(&reg->shutting_down) &&
           registry_db_answers(reg);
}

bool registry_is_ready(struct registry *reg)
{
    return registry_serving(reg) && connpool_cap(reg->cp) > 0;
}

bool registry_awaits_grant(struct registry *reg)
{
    return registry_serving(reg) && connpool_cap(reg->cp) == 0;
}
