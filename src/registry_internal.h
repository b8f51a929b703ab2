/* registry_internal.h — what registry.c and housekeeping.c share; not an API.
 *
 * Lock order. Every mutex of the registry and its split modules:
 *
 *   reg->lock          rwlock: the org map (buckets, entries' pending marks,
 *                      an entry's pool pointer being set)
 *   e->cache_lock      one org's rules and misconfiguration caches
 *   e->batcher.lock    one org's group-commit queue
 *   e->holders.lock    one org's holds (holders.c)
 *   e->build_breaker.lock, reg->db_breaker.lock   (breaker.c)
 *   hk->lock           housekeeping: the stop flag and the housekeeping
 *                      connection's "taken" flag (housekeeping.c)
 *   a pool's lock      each service pool, the connection pool (pool.c)
 *
 * They nest in that order only, and in practice never do: under reg->lock
 * only lock-free pool calls run (pool_create, pool_oldest_idle), and each of
 * the others is a leaf — nothing else is taken while it is held, but the
 * log's own mutex (log_event), which is innermost everywhere. No lock is
 * held across libpq or network I/O: the housekeeping connection is handed
 * from user to user as a token (housekeeping_conn_take/give), waited for
 * on hk->lock's condition but never used under it.
 */
#ifndef POOLD_REGISTRY_INTERNAL_H
#define POOLD_REGISTRY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "catalog.h"
#include "connpool.h"
#include "housekeeping.h"
#include "registry.h"

#define REG_ERR_MAX 256

/* One org of the directory: registry.c's; others use the calls below.
 * Entries are created by a directory load and never freed before
 * registry_destroy(), so a pointer to one stays valid with no lock held. */
struct org_entry;

struct registry {
    struct registry_config cfg;
    char *prewarm; /* owned copy of cfg.prewarm */
    struct service_env env;
    struct service_env env_none; /* POOLD_POOL_MODE=none: own connections */
    struct connpool *cp;         /* owns the connection pool */
    struct pool *conns;          /* connpool_pool(cp): db connections; in
                                    mode none, permits (one per connection
                                    a request opens) */
    struct breaker db_breaker;   /* every connection attempt, all orgs */

    pthread_rwlock_t lock; /* the map */
    struct org_entry **buckets;
    size_t nbuckets;
    size_t nentries;
    unsigned load_gen; /* whole directory loads so far (under the lock) */

    atomic_bool loaded; /* the directory was loaded once */
    atomic_bool shutting_down;
    atomic_uint_fast64_t last_ok_ns; /* last successful db contact */

    struct housekeeping *hk; /* its thread, connection and steps */
    /* Replicas: the cluster's hook (cluster.h); set before start. */
    registry_hk_fn hk_fn;
    void *hk_arg;
};

/* ---- the org map (registry.c); every call is thread-safe ---------------- */

/* Call fn(arg, e) for every org (with_pool: only those that have a pool)
 * of a snapshot of the map, with no registry lock held: fn may do I/O. */
void registry_foreach_org(struct registry *reg, bool with_pool,
                          void (*fn)(void *arg, struct org_entry *e),
                          void *arg);

/* The org (known, present and enabled) and its pool, created on first use
 * (pooled mode). POOLD_ERR_NOT_READY, POOLD_ERR_UNKNOWN_ORG, NOMEM. */
POOLD_MUSTCHECK int registry_route(struct registry *reg, const char *org_id,
                                   struct org_entry **out);

/* An entry's parts; borrowed for the registry's life. The pool is NULL until
 * the org's first request, then fixed. */
const char *org_entry_id(const struct org_entry *e);
struct pool *org_entry_pool(struct org_entry *e);
struct holders *org_entry_holders(struct org_entry *e);
struct breaker *org_entry_breaker(struct org_entry *e);

/* The org's pool size now: orgs.pool_max_size as last loaded or resized,
 * else POOLD_POOL_SIZE, at most POOLD_POOL_CEILING. */
unsigned org_entry_size(const struct registry *reg, struct org_entry *e);

/* Take (and clear) the retire and resize marks a directory load left. */
void org_entry_take_pending(struct registry *reg, struct org_entry *e,
                            bool *retire, bool *resize);

/* Apply a loaded directory (catalog_load's rows, n of them) to the map:
 * new orgs added, facts updated, changed or vanished orgs marked for
 * retiring, resized ones for resizing. No I/O; takes reg->lock. Call with
 * the housekeeping connection taken, so loads apply in the order they were
 * read. */
void registry_apply_directory(struct registry *reg, const struct org_info *list,
                              size_t n);

/* Apply the rows of the orgs that changed (catalog_load_some's: present
 * false for a deleted one); as registry_apply_directory otherwise. */
void registry_apply_changes(struct registry *reg, const struct org_info *list,
                            size_t n);

/* The directory is loaded: requests may be routed (logged the first time). */
void registry_mark_loaded(struct registry *reg);

/* The database answered at now_ns (readiness). */
void registry_mark_db_ok(struct registry *reg, uint64_t now_ns);

/* The cap policy: while builds wait for a connection, the longest-idle
 * services of the orgs give theirs back. */
void registry_reclaim_for_waiters(struct registry *reg);

#endif
