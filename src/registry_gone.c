/* registry_gone.c — freeing the active parts (pools) of orgs deleted from
 * the orgs table once nothing references them (housekeeping's free_gone
 * step), and what the freed ones counted. The lifetime rule is
 * struct org_active's, in registry_internal.h. */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "log.h"
#include "registry_internal.h"

/* Under reg->lock (write): a (of an org still gone) is used by nobody. Of
 * the checks, refs and nservices decide (under live_lock, where REG_LIVE
 * and registry_reclaim() take theirs); a pending mark keeps it for
 * apply_pending; the rest follow from refs 0 and cost an atomic load.
 * *idle: false, but only because services are left, which nobody uses. */
static bool active_unused(struct registry *reg, struct org_active *a,
                          bool *idle)
{
    bool unused;
    unsigned refs;

    *idle = false;
    if (a->pending_retire || a->pending_resize)
        return false;
    pthread_mutex_lock(&reg->live_lock);
    refs = atomic_load(&a->refs);
    unused = a->nservices == 0 && refs == 0;
    *idle = a->nservices > 0 && refs == 0;
    pthread_mutex_unlock(&reg->live_lock);
    return unused && atomic_load(&a->gc.queued) == 0 &&
           atomic_load(&a->building) == 0 &&
           (a->pool == NULL ||
            (pool_total(a->pool) == 0 && pool_waiting(a->pool) == 0));
}

/* Under reg->lock (write): a leaves reg->active and its entry, which a
 * later first request gives a new one. */
static void active_unlink(struct registry *reg, struct org_active *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        reg->active = a->next;
    if (a->next)
        a->next->prev = a->prev;
    reg->nactive--;
    atomic_store(&a->entry->act, NULL);
}

/* Under reg->lock (write), as a leaves reg->active: what it counted goes
 * to the freed totals in the same step, so that a reader of both under
 * the read lock (registry_foreach_active(), for GET /stats) counts it
 * once, and the totals never go down. Unused: its counts are frozen.
 * pool_get_stats() takes the pool's lock, after the registry's (the
 * order everywhere; the pool calls out with no lock of its own held). */
static void freed_add(struct registry *reg, struct org_active *a)
{
    struct pool_stats st;

    registry_entry_stats(reg, a->entry, a, &st);
    st.max_size = st.idle = st.active = st.waiting = st.peak_active = 0;
    pthread_mutex_lock(&reg->live_lock);
    pool_stats_add(&reg->freed_stats, &st);
    reg->freed++;
    pthread_mutex_unlock(&reg->live_lock);
}

/* At most this many gone orgs' idle services are retired per call. */
#define REG_GONE_RETIRE_MAX 16

size_t registry_free_gone(struct registry *reg)
{
    struct org_active *dead = NULL, *retire[REG_GONE_RETIRE_MAX];
    struct org_active **pp;
    size_t n = 0, nretire = 0;

    pthread_rwlock_wrlock(&reg->lock);
    for (pp = &reg->gone; *pp != NULL;) {
        struct org_active *a = *pp;
        bool idle = false;

        if (atomic_load(&a->entry->present) || active_unused(reg, a, &idle)) {
            *pp = a->gone_next; /* created again (kept), or to free */
            a->gone = false;
            if (!atomic_load(&a->entry->present)) {
                freed_add(reg, a);
                active_unlink(reg, a);
                a->gone_next = dead;
                dead = a;
            }
            continue;
        }
        /* Services left idle with nobody else using it (its retire was
         * missed): retired below, freed on a later call. */
        if (idle && nretire < REG_GONE_RETIRE_MAX)
            retire[nretire++] = registry_active_share(a); /* reg->lock */
        pp = &a->gone_next;
    }
    pthread_rwlock_unlock(&reg->lock);
    for (size_t i = 0; i < nretire; i++) {
        pool_retire_all(retire[i]->pool);
        registry_active_release(retire[i]);
    }
    while (dead != NULL) {
        struct org_active *next = dead->gone_next;

        if (reg->cfg.pooled)
            log_event(LOG_INFO, "pool freed: org gone", "org",
                      dead->entry->org_id, (const char *)NULL);
        registry_active_destroy(dead);
        dead = next;
        n++;
    }
    return n;
}

uint64_t registry_pools_freed(struct registry *reg)
{
    return registry_freed_stats(reg, NULL);
}

uint64_t registry_freed_stats(struct registry *reg, struct pool_stats *out)
{
    uint64_t n;

    pthread_mutex_lock(&reg->live_lock);
    if (out != NULL)
        *out = reg->freed_stats;
    n = reg->freed;
    pthread_mutex_unlock(&reg->live_lock);
    return n;
}
