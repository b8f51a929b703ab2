/* pool.h — a generic, thread-safe object pool (knows no orgs, SQL or HTTP). */
#ifndef POOLD_POOL_H
#define POOLD_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "status.h"

struct pool;      /* opaque */
struct pool_item; /* one slot: an object and its bookkeeping, owned by the pool
                   */

/* Why an object was destroyed; counted per reason in the stats. */
enum pool_destroy_reason {
    POOL_DESTROY_EXPIRED,      /* past its (jittered) maximum lifetime */
    POOL_DESTROY_IDLE,         /* idle longer than idle_timeout */
    POOL_DESTROY_INVALID,      /* validate() said no on acquire */
    POOL_DESTROY_RESET_FAILED, /* reset() said no on release */
    POOL_DESTROY_SHRINK,       /* beyond max_size after a resize */
    POOL_DESTROY_SHUTDOWN,     /* pool shut down */
    POOL_DESTROY_BROKEN,       /* the borrower released it as broken */
    POOL_DESTROY_RETIRED,      /* pool_retire_all(): older generation */
    POOL_DESTROY_EVICTED,      /* pool_evict_idle(): its resource was wanted */
    POOL_DESTROY__COUNT
};

/* Static name of a reason ("expired", "idle", ...), for stats and metrics. */
const char *pool_destroy_reason_str(enum pool_destroy_reason why);

/*
 * The ops table. Every callback is called WITHOUT the pool's lock held, so it
 * may block (open a connection, run a query) without stalling the pool.
 */
struct pool_ops {
    /* Build one object into *obj. Returns POOLD_OK or a negative status,
     * which pool_acquire() hands to its caller unchanged. POOLD_ERR_TIMEOUT
     * (what the object needs did not come in time, e.g. a connection from
     * a shared cap) counts as the acquire's timeout (total_timeouts), not
     * as a create failure. Required. */
    int (*create)(void *ctx, void **obj);
    /* Free an object. Cannot fail. Required. */
    void (*destroy)(void *ctx, void *obj, enum pool_destroy_reason why);
    /* On acquire, for an object idle at least validate_idle_ns: true if it
     * may be lent. Optional (NULL: always valid). */
    bool (*validate)(void *ctx, void *obj, uint64_t idle_ns, uint64_t now_ns);
    /* On release: bring the object back to its freshly built state; false
     * if that is impossible (the object is destroyed). Optional. */
    bool (*reset)(void *ctx, void *obj);
    /* Once built: the object's own end of life on the pool's clock (what
     * it holds may end sooner than max_lifetime from now); the earlier
     * of the two is the item's. Optional (NULL: max_lifetime alone). */
    uint64_t (*expiry)(void *ctx, const void *obj);
};

struct pool_config {
    const char *name;            /* for logs; copied */
    unsigned max_size;           /* objects at most (idle + active), >= 1 */
    unsigned capacity;           /* largest max_size pool_resize() accepts;
                                    slots are allocated once for it (0: max_size) */
    unsigned min_idle;           /* pool_maintain() keeps this many idle */
    unsigned max_waiters;        /* waiters at most; one more fails at once
                                    with POOLD_ERR_WAITERS_FULL (0: no bound) */
    uint64_t max_lifetime_ns;    /* 0: no limit */
    uint64_t lifetime_jitter_ns; /* each object's lifetime is shortened by a
                                    random amount in [0, jitter), fixed at
                                    creation */
    uint64_t idle_timeout_ns;    /* 0: no limit */
    uint64_t validate_idle_ns;   /* validate only after this idle gap */
    clock_fn clock;              /* NULL: clock_now_ns() */
    void *clock_ctx;
    bool may_empty; /* pool_resize() accepts 0: nothing is built or lent,
                       acquires wait (a replica without its grant) */
};

#define POOL_WAIT_BUCKETS 12
/* Upper bounds of the wait-time histogram buckets, in nanoseconds; the last
 * is UINT64_MAX (+Inf). Buckets are not cumulative in pool_stats. */
extern const uint64_t pool_wait_bucket_le_ns[POOL_WAIT_BUCKETS];

struct pool_stats {
    uint64_t max_size;
    uint64_t idle;
    uint64_t active;
    uint64_t waiting;
    uint64_t total_timeouts;   /* acquires that timed out waiting */
    uint64_t waiters_rejected; /* acquires refused: waiter bound reached */
    uint64_t peak_active;
    uint64_t held; /* places held by pool_hold(): objects destroyed whose
                      resource is not known released yet */
    uint64_t created;
    uint64_t create_failures;
    uint64_t destroyed; /* sum of destroyed_by[] */
    uint64_t destroyed_by[POOL_DESTROY__COUNT];
    uint64_t acquired;   /* successful acquires */
    uint64_t wait_count; /* acquires that had to wait */
    uint64_t wait_ns_sum;
    uint64_t wait_hist[POOL_WAIT_BUCKETS];
    /* Filled by the pool's owner, not the pool (left 0 here): lends held
     * longer than the owner's threshold (the registry's holder records). */
    uint64_t held_too_long;
    /* Filled by the registry, not the pool (0 here): group commits of an
     * org's messages and the messages they committed. */
    uint64_t group_commits;
    uint64_t group_messages;
};

/* Add b's counts to a, field by field (held excepted: a pool's own). */
void pool_stats_add(struct pool_stats *a, const struct pool_stats *b);

/* Create a pool. ops and ctx are borrowed and must outlive the pool. No
 * object is built until the first acquire (or pool_maintain with min_idle). */
POOLD_MUSTCHECK int pool_create(const struct pool_ops *ops, void *ctx,
                                const struct pool_config *cfg,
                                struct pool **out);

/* Shut down if not yet, destroy idle objects, free the pool. Every item must
 * have been released before. Accepts NULL. */
void pool_destroy(struct pool *pool);

/*
 * Borrow an object: an idle one (validated if it was idle long enough), else
 * a new one while fewer than max_size exist, else wait up to timeout_ns for a
 * release, first come first served. Returns POOLD_OK and the item in *out,
 * or POOLD_ERR_TIMEOUT (counted in total_timeouts), POOLD_ERR_WAITERS_FULL,
 * POOLD_ERR_SHUTDOWN, or the error of a failed create(). No heap allocation
 * once the pool is warm. The item is the caller's until pool_release().
 */
POOLD_MUSTCHECK int pool_acquire(struct pool *pool, uint64_t timeout_ns,
                                 struct pool_item **out);

/* pool_acquire() for a caller that has other ways to make room (the
 * registry evicting another org's idle service), or that no client waits
 * on (a prewarm): waits at most wait_ns (0: not at all, never queued) and
 * a timeout is not counted in total_timeouts. */
POOLD_MUSTCHECK int pool_try_acquire(struct pool *pool, uint64_t wait_ns,
                                     struct pool_item **out);

/* Acquires waiting now (cheap: one atomic load). */
unsigned pool_waiting(struct pool *pool);

/* The object inside an item; borrowed for as long as the item is held. */
void *pool_item_object(const struct pool_item *item);

/* Give an item back: reset() it, then make it idle or hand it to a waiter;
 * destroyed instead when expired, retired, over size, or shut down. */
void pool_release(struct pool *pool, struct pool_item *item);

/* Give an item back that must not be reused: it is destroyed (BROKEN). */
void pool_release_broken(struct pool *pool, struct pool_item *item);

/* Give an item back whose resource another borrower needs more (the
 * registry, at the connection cap): it is destroyed (EVICTED), and its slot
 * goes to the next waiter, who builds anew. */
void pool_release_evict(struct pool *pool, struct pool_item *item);

/* The item's end of life: max_lifetime (jittered) or the object's own
 * expiry, the earlier (UINT64_MAX: none). */
uint64_t pool_item_expiry(const struct pool_item *item);

/* True if the item is past its jittered lifetime at now_ns. */
bool pool_item_is_expired(const struct pool *pool, const struct pool_item *item,
                          uint64_t now_ns);

/* Set max_size (1..capacity; 0 too with may_empty). Never blocks: growing wakes
 * waiters, shrinking destroys idle objects beyond the new size now and active
 * ones on release. */
POOLD_MUSTCHECK int pool_resize(struct pool *pool, unsigned max_size);

/* Retire every object that exists now: idle ones are destroyed at once,
 * active ones when released (used when the objects' source changed). */
void pool_retire_all(struct pool *pool);

/* The time the longest-idle object became idle, in *since_ns; false if no
 * object is idle. */
bool pool_oldest_idle(struct pool *pool, uint64_t *since_ns);

/* Destroy the longest-idle object (EVICTED); false if none was idle. */
bool pool_evict_idle(struct pool *pool);

/* Retire expired and idle-timed-out idle objects and top up min_idle, for a
 * background thread. May call create()/destroy(). */
void pool_maintain(struct pool *pool, uint64_t now_ns);

/* Refuse new acquires, destroy idle objects, wake every waiter with
 * POOLD_ERR_SHUTDOWN; objects released later are destroyed. Idempotent. */
void pool_shutdown(struct pool *pool);

/* A consistent snapshot of the counters. */
void pool_get_stats(struct pool *pool, struct pool_stats *out);

/* The pool's current max_size. */
unsigned pool_max_size(struct pool *pool);

/*
 * Test seam, not an API. A program that defines pool_test_hook (only
 * tests/unit/check_pool.c does) is called at these points, to force an
 * interleaving that is otherwise a few instructions wide; poold defines
 * none, so the weak symbol is NULL and a point costs one branch.
 */
enum pool_test_point {
    /* pool_release() saw waiters queued; before it takes the pool's lock. */
    POOL_TEST_IDLE_WAITERS,
    /* ... then under the lock, no waiter left to hand the object to, after
     * the verdict and before the slot is published IDLE. */
    POOL_TEST_IDLE_LOCKED,
};
__attribute__((weak)) void pool_test_hook(struct pool *pool,
                                          enum pool_test_point where);
/* Objects that exist now, those being built or destroyed included, and the
 * places held (never more than max_size once a shrink has drained). Cheap:
 * one atomic load. */
unsigned pool_total(struct pool *pool);

/*
 * Hold a place of max_size that no object fills: for an object whose
 * resource outlives its destroy() (a closed connection whose server process
 * is still at work). Called from destroy(), it keeps the destroyed object's
 * place taken (nobody builds into it); called elsewhere it takes one more,
 * possibly beyond max_size (released objects then close until total fits).
 * pool_unhold() gives it back once the resource is known gone, and wakes a
 * waiter to build. Thread-safe.
 */
void pool_hold(struct pool *pool);
void pool_unhold(struct pool *pool);

#endif
