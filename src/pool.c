/* pool.c — a generic thread-safe object pool: lock-free lend and return. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Design (after HikariCP's ConcurrentBag):
 *
 * - Each object lives in a preallocated slot whose state moves FREE -> BUSY
 *   (being built or destroyed) -> LENT <-> IDLE -> BUSY -> FREE by
 *   compare-and-swap, so lending an idle object and taking it back cost one
 *   atomic operation on a cache line that, thanks to a per-thread hint of the
 *   last slot used, usually stays in the calling core's cache.
 * - The mutex and the FIFO queue are only for waiting. The "gate" word holds
 *   the number of waiters and a shutdown bit: the fast path lends an idle
 *   slot only while the gate is 0, so a newcomer cannot overtake a waiter.
 *   A return stores IDLE and then re-reads the gate; a waiter increments the
 *   gate and then re-scans the slots (both sequentially consistent), so at
 *   least one of them sees the other and no wakeup is lost.
 * - "total" counts slots in use plus reservations to build one; a builder
 *   reserves (total < max_size) before claiming a FREE slot, and a slot is
 *   FREE again before total drops, so a reservation always finds a slot.
 * - Callbacks (create, destroy, validate, reset) never run under the lock.
 * - No heap allocation after pool_create(): waiters live on their thread's
 *   stack, objects in the preallocated slots.
 */

#define POOL_LINE 64
#define POOL_GATE_SHUTDOWN (UINT64_C(1) << 63)
#define POOL_NAME_MAX 64
#define POOL_CAPACITY_MAX 65536u
/* Timeouts at least this long wait without a deadline (about 146 years). */
#define POOL_FOREVER_NS (UINT64_C(1) << 62)
/* Yields before joining the queue (see pool_take). */
#ifndef POOL_YIELDS /* -DPOOL_YIELDS=n builds another, for bench/ */
#define POOL_YIELDS 4
#endif
#define POOL_KEEP (-1) /* verdict: keep the object, no destroy reason */

enum pool_slot_state { SLOT_FREE, SLOT_BUSY, SLOT_IDLE, SLOT_LENT };

struct pool_item {
    /* The slot's owner is whoever moved state away from FREE or IDLE; only
     * the owner writes the fields below. Scanners that have not claimed the
     * slot may peek at the atomic ones, hence relaxed atomics. */
    _Alignas(POOL_LINE) _Atomic int state;
    unsigned index;
    void *obj;
    _Atomic uint64_t lends;         /* times lent, ever: summed in stats */
    _Atomic uint64_t idle_since_ns; /* pool clock, when it last became idle */
    _Atomic uint64_t expire_ns;     /* jittered end of life; UINT64_MAX: none */
    _Atomic uint64_t generation;    /* pool generation it was built in */
};

/* A thread blocked in pool_acquire(); lives on that thread's stack and is
 * touched by others only under pool->lock. */
struct pool_waiter {
    struct pool_waiter *prev, *next;
    pthread_cond_t cond;
    struct pool_item *item; /* handed over: lent to this waiter */
    int status;             /* outcome once done */
    bool permit;            /* a build reservation was made for it */
    bool done;
};

struct pool_deadline {
    uint64_t timeout_ns;
    uint64_t at_ns; /* real CLOCK_MONOTONIC, set when the first wait begins */
    bool set;
    bool try_only; /* pool_try_acquire() with no wait: never queue */
    bool quiet;    /* pool_try_acquire(): a timeout is not counted */
};

struct pool {
    /* Read-only after pool_create(). */
    const struct pool_ops *ops;
    void *ctx;
    struct pool_item *slots; /* capacity of them, cache-line aligned */
    unsigned capacity;
    struct pool_config cfg;
    char name[POOL_NAME_MAX];
    pthread_condattr_t condattr; /* CLOCK_MONOTONIC for waiters' condvars */

    /* Read by every lend and return, written rarely. */
    _Alignas(POOL_LINE) _Atomic uint64_t gate; /* waiters | shutdown bit */
    _Atomic uint64_t generation;
    _Atomic unsigned max_size;

    /* Written when objects are built or destroyed. */
    _Alignas(POOL_LINE) _Atomic unsigned total; /* slots not FREE + reserved
                                                   + held */
    _Atomic unsigned held;                      /* places held by pool_hold() */
    _Atomic unsigned hwm; /* slots >= hwm were never used */
    _Atomic uint64_t peak_active;
    _Atomic uint64_t created;
    _Atomic uint64_t create_failures;
    _Atomic uint64_t destroyed_by[POOL_DESTROY__COUNT];

    /* The waiting side: everything below is guarded by lock. */
    _Alignas(POOL_LINE) pthread_mutex_t lock;
    struct pool_waiter *wait_head, *wait_tail; /* FIFO */
    unsigned nwait;
    uint64_t timeouts;
    uint64_t rejected;
    uint64_t wait_count;
    uint64_t wait_ns_sum;
    uint64_t wait_hist[POOL_WAIT_BUCKETS];
};

const uint64_t pool_wait_bucket_le_ns[POOL_WAIT_BUCKETS] = {
    50000,    100000,   250000,    500000,     1000000,     5000000,
    10000000, 50000000, 100000000, 1000000000, 10000000000, UINT64_MAX,
};

static const char *const pool_reason_names[POOL_DESTROY__COUNT] = {
    [POOL_DESTROY_EXPIRED] = "expired",
    [POOL_DESTROY_IDLE] = "idle",
    [POOL_DESTROY_INVALID] = "invalid",
    [POOL_DESTROY_RESET_FAILED] = "reset_failed",
    [POOL_DESTROY_SHRINK] = "shrink",
    [POOL_DESTROY_SHUTDOWN] = "shutdown",
    [POOL_DESTROY_BROKEN] = "broken",
    [POOL_DESTROY_RETIRED] = "retired",
    [POOL_DESTROY_EVICTED] = "evicted",
};

/* The slot this thread used last, tried first: it is likely still idle and
 * its cache line likely still in this core's cache. */
static _Thread_local const struct pool *tl_hint_pool;
static _Thread_local unsigned tl_hint_slot;
static _Thread_local uint64_t tl_rng;

const char *pool_destroy_reason_str(enum pool_destroy_reason why)
{
    if ((unsigned)why >= POOL_DESTROY__COUNT)
        return "unknown";
    return pool_reason_names[why];
}

/* ---- small helpers ------------------------------------------------------ */

static uint64_t pool_now(const struct pool *pool)
{
    if (pool->cfg.clock != NULL)
        return pool->cfg.clock(pool->cfg.clock_ctx);
    return clock_now_ns();
}

static uint64_t pool_add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* xorshift64*: jitter only needs to differ between objects, not be secret. */
static uint64_t pool_random(void)
{
    if (tl_rng == 0)
        tl_rng = clock_now_ns() ^ (uint64_t)(uintptr_t)&tl_rng ^ 0x9e3779b9u;
    tl_rng ^= tl_rng >> 12;
    tl_rng ^= tl_rng << 25;
    tl_rng ^= tl_rng >> 27;
    return tl_rng * UINT64_C(2685821657736338717);
}

/* When an object built at now_ns must go: lifetime minus its own jitter. */
static uint64_t pool_expiry(const struct pool *pool, uint64_t now_ns)
{
    uint64_t life = pool->cfg.max_lifetime_ns;
    uint64_t jitter = pool->cfg.lifetime_jitter_ns;
    if (life == 0)
        return UINT64_MAX;
    if (jitter > 0) {
        uint64_t cut = pool_random() % jitter;
        life = cut < life ? life - cut : 1;
    }
    return pool_add_sat(now_ns, life);
}

static int pool_state(const struct pool_item *it)
{
    return atomic_load_explicit(&it->state, memory_order_acquire);
}

/* Claim the slot if it is in state from; acquire pairs with the release of
 * the previous owner, so its writes to obj and friends are visible. */
static bool pool_slot_cas(struct pool_item *it, int from, int to)
{
    return atomic_compare_exchange_strong_explicit(
        &it->state, &from, to, memory_order_seq_cst, memory_order_relaxed);
}

static unsigned pool_hwm(const struct pool *pool)
{
    return atomic_load_explicit(&pool->hwm, memory_order_seq_cst);
}

/* Lend an idle slot, trying this thread's last slot first. */
static struct pool_item *pool_claim_idle(struct pool *pool)
{
    unsigned n = pool_hwm(pool);
    unsigned start = 0;
    if (tl_hint_pool == pool && tl_hint_slot < n)
        start = tl_hint_slot;
    for (unsigned i = 0; i < n; i++) {
        unsigned k = start + i < n ? start + i : start + i - n;
        struct pool_item *it = &pool->slots[k];
        /* A plain read first: a failed CAS would steal the line. */
        if (atomic_load_explicit(&it->state, memory_order_seq_cst) ==
                SLOT_IDLE &&
            pool_slot_cas(it, SLOT_IDLE, SLOT_LENT))
            return it;
    }
    return NULL;
}

/* Reserve the right to build one object: total < max_size. */
static bool pool_reserve(struct pool *pool)
{
    unsigned t = atomic_load_explicit(&pool->total, memory_order_seq_cst);
    for (;;) {
        unsigned max =
            atomic_load_explicit(&pool->max_size, memory_order_relaxed);
        if (t >= max)
            return false;
        if (atomic_compare_exchange_weak_explicit(&pool->total, &t, t + 1,
                                                  memory_order_seq_cst,
                                                  memory_order_seq_cst))
            return true;
    }
}

/* With a reservation held, one FREE slot exists for us (see the design
 * note); lower slots first so hwm stays near max_size. */
static struct pool_item *pool_claim_free(struct pool *pool)
{
    for (;;) {
        for (unsigned i = 0; i < pool->capacity; i++) {
            struct pool_item *it = &pool->slots[i];
            if (pool_state(it) != SLOT_FREE ||
                !pool_slot_cas(it, SLOT_FREE, SLOT_BUSY))
                continue;
            unsigned hwm = pool_hwm(pool);
            while (hwm <= i &&
                   !atomic_compare_exchange_weak(&pool->hwm, &hwm, i + 1))
                ;
            return it;
        }
    }
}

/* ---- waiting ------------------------------------------------------------ */

static uint64_t pool_waiters(const struct pool *pool)
{
    return atomic_load_explicit(&pool->gate, memory_order_seq_cst) &
           ~POOL_GATE_SHUTDOWN;
}

static void pool_waiter_unlink(struct pool *pool, struct pool_waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        pool->wait_head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        pool->wait_tail = w->prev;
    pool->nwait--;
    atomic_fetch_sub_explicit(&pool->gate, 1, memory_order_seq_cst);
}

/* Under lock: give w its outcome and wake it. The waiter frees nothing
 * before it holds the lock again, so signalling here is safe. */
static void pool_waiter_finish(struct pool *pool, struct pool_waiter *w,
                               int status, struct pool_item *it, bool permit)
{
    pool_waiter_unlink(pool, w);
    w->status = status;
    w->item = it;
    w->permit = permit;
    w->done = true;
    pthread_cond_signal(&w->cond);
}

/* Under lock: serve waiters in order while an idle object or room to build
 * one exists. Called whenever either may have appeared. */
static void pool_dispatch_locked(struct pool *pool)
{
    struct pool_waiter *w;
    while ((w = pool->wait_head) != NULL) {
        struct pool_item *it = pool_claim_idle(pool);
        if (it != NULL)
            pool_waiter_finish(pool, w, POOLD_OK, it, false);
        else if (pool_reserve(pool))
            pool_waiter_finish(pool, w, POOLD_OK, NULL, true);
        else
            break;
    }
}

static void pool_dispatch(struct pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool_dispatch_locked(pool);
    pthread_mutex_unlock(&pool->lock);
}

static void pool_record_wait(struct pool *pool, uint64_t waited_ns)
{
    unsigned b = 0;
    while (waited_ns > pool_wait_bucket_le_ns[b])
        b++;
    pool->wait_hist[b]++;
    pool->wait_ns_sum += waited_ns;
}

/* Under lock: sleep until served or the (real-time) deadline passes. The
 * pool's clock may be a test's frozen fake, so waits use CLOCK_MONOTONIC. */
static void pool_waiter_block(struct pool *pool, struct pool_deadline *dl,
                              struct pool_waiter *w)
{
    uint64_t start = clock_now_ns();
    if (!dl->set) {
        dl->at_ns = dl->timeout_ns >= POOL_FOREVER_NS
                        ? UINT64_MAX
                        : pool_add_sat(start, dl->timeout_ns);
        dl->set = true;
    }
    while (!w->done) {
        uint64_t now = clock_now_ns();
        if (dl->at_ns == UINT64_MAX) {
            pthread_cond_wait(&w->cond, &pool->lock);
            continue;
        }
        if (now >= dl->at_ns) {
            pool_waiter_unlink(pool, w);
            if (!dl->quiet)
                pool->timeouts++;
            w->status = POOLD_ERR_TIMEOUT;
            break;
        }
        struct timespec ts;
        clock_timespec_at(&ts, dl->at_ns);
        pthread_cond_timedwait(&w->cond, &pool->lock, &ts);
    }
    pool_record_wait(pool, clock_now_ns() - start);
}

/* Under lock: join the queue, unless shut down or the queue is full. */
static int pool_waiter_enqueue(struct pool *pool, struct pool_waiter *w)
{
    if (atomic_load(&pool->gate) & POOL_GATE_SHUTDOWN)
        return POOLD_ERR_SHUTDOWN;
    if (pool->cfg.max_waiters > 0 && pool->nwait >= pool->cfg.max_waiters) {
        pool->rejected++;
        return POOLD_ERR_WAITERS_FULL;
    }
    pthread_cond_init(&w->cond, &pool->condattr);
    w->prev = pool->wait_tail;
    w->next = NULL;
    if (pool->wait_tail != NULL)
        pool->wait_tail->next = w;
    else
        pool->wait_head = w;
    pool->wait_tail = w;
    pool->nwait++;
    pool->wait_count++;
    atomic_fetch_add_explicit(&pool->gate, 1, memory_order_seq_cst);
    return POOLD_OK;
}

/* The slow path: queue up, then re-check for an idle object or room (a
 * return may have raced with our enqueue), then sleep. On POOLD_OK either
 * *it is lent to us or *permit says we may build one. */
static int pool_wait(struct pool *pool, struct pool_deadline *dl,
                     struct pool_item **it, bool *permit)
{
    struct pool_waiter w = {.status = POOLD_OK};
    pthread_mutex_lock(&pool->lock);
    int rc = pool_waiter_enqueue(pool, &w);
    bool queued = rc == POOLD_OK;
    if (queued) {
        pool_dispatch_locked(pool);
        pool_waiter_block(pool, dl, &w);
        rc = w.status;
        *it = w.item;
        *permit = w.permit;
    }
    pthread_mutex_unlock(&pool->lock);
    if (queued)
        pthread_cond_destroy(&w.cond);
    return rc;
}

/* ---- building, destroying, idling ---------------------------------------- */

/* Give a slot back; then a waiter may build in its place. */
static void pool_slot_free(struct pool *pool, struct pool_item *it)
{
    it->obj = NULL;
    atomic_store_explicit(&it->state, SLOT_FREE, memory_order_release);
    atomic_fetch_sub_explicit(&pool->total, 1, memory_order_seq_cst);
    if (pool_waiters(pool) > 0)
        pool_dispatch(pool);
}

/* Destroy an owned object (never under the lock: destroy may do I/O). */
static void pool_item_destroy(struct pool *pool, struct pool_item *it,
                              enum pool_destroy_reason why)
{
    /* Not idle nor lent from now on. Relaxed: nobody claims a BUSY slot,
     * and the release below orders this store for pool_get_stats. */
    atomic_store_explicit(&it->state, SLOT_BUSY, memory_order_relaxed);
    pool->ops->destroy(pool->ctx, it->obj, why);
    /* Release: pool_get_stats reads destroyed_by (acquire) before the
     * slots, so a count that includes this object implies the slot is no
     * longer seen idle or lent (idle + active <= created - destroyed). */
    atomic_fetch_add_explicit(&pool->destroyed_by[why], 1,
                              memory_order_release);
    pool_slot_free(pool, it);
}

/* With a reservation held: build an object into a fresh BUSY slot. On
 * failure the reservation is given back (waking a waiter) and create's own
 * error is returned. */
static int pool_item_build(struct pool *pool, struct pool_item **out)
{
    struct pool_item *it = pool_claim_free(pool);
    uint64_t gen = atomic_load(&pool->generation);
    void *obj = NULL;
    int rc = pool->ops->create(pool->ctx, &obj);
    if (rc != POOLD_OK) {
        /* A pure counter, related to no other field: relaxed. A timeout
         * is the acquire's (pool_take counts it). */
        if (rc != POOLD_ERR_TIMEOUT)
            atomic_fetch_add_explicit(&pool->create_failures, 1,
                                      memory_order_relaxed);
        pool_slot_free(pool, it);
        return rc < 0 ? rc : POOLD_ERR_CREATE;
    }
    uint64_t now = pool_now(pool);
    it->obj = obj;
    /* Relaxed: the slot is ours (BUSY); the state store that lends it or
     * makes it idle releases these fields, and created is ordered for the
     * stats by that same store (see pool_lend). */
    atomic_store_explicit(&it->generation, gen, memory_order_relaxed);
    uint64_t expire = pool_expiry(pool, now);
    if (pool->ops->expiry != NULL) {
        uint64_t own = pool->ops->expiry(pool->ctx, obj);
        expire = own < expire ? own : expire;
    }
    atomic_store_explicit(&it->expire_ns, expire, memory_order_relaxed);
    atomic_store_explicit(&it->idle_since_ns, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->created, 1, memory_order_relaxed);
    *out = it;
    return POOLD_OK;
}

/* Must an object about to become idle go instead? Checked again after it
 * is idle: a concurrent shutdown, retire or shrink may have scanned the
 * slots while it was still lent (Dekker: they write, then scan). */
static int pool_idle_verdict(struct pool *pool, const struct pool_item *it)
{
    if (atomic_load(&pool->gate) & POOL_GATE_SHUTDOWN)
        return POOL_DESTROY_SHUTDOWN;
    if (atomic_load_explicit(&it->generation, memory_order_relaxed) !=
        atomic_load(&pool->generation))
        return POOL_DESTROY_RETIRED;
    if (atomic_load(&pool->total) > atomic_load(&pool->max_size))
        return POOL_DESTROY_SHRINK;
    return POOL_KEEP;
}

/* The slot was just stored IDLE (seq_cst): check the verdict only now.
 * Dekker with every writer that changes what the verdict reads and then
 * scans for IDLE slots (shutdown, retire, shrink): either it sees our IDLE
 * and destroys the object, or we see its write and do. Whoever wins the
 * CAS destroys it; the loser leaves it alone. */
static void pool_item_idle_recheck(struct pool *pool, struct pool_item *it)
{
    int why = pool_idle_verdict(pool, it);
    if (why != POOL_KEEP && pool_slot_cas(it, SLOT_IDLE, SLOT_BUSY))
        pool_item_destroy(pool, it, (enum pool_destroy_reason)why);
    else if (pool_waiters(pool) > 0)
        pool_dispatch(pool); /* Dekker with pool_waiter_enqueue */
}

/* Make an owned object idle, or hand it straight to the first waiter. */
static void pool_item_idle(struct pool *pool, struct pool_item *it,
                           uint64_t since_ns)
{
    atomic_store_explicit(&it->idle_since_ns, since_ns, memory_order_relaxed);
    if (atomic_load_explicit(&pool->gate, memory_order_seq_cst) == 0) {
        atomic_store_explicit(&it->state, SLOT_IDLE, memory_order_seq_cst);
        pool_item_idle_recheck(pool, it);
        return;
    }
    /* Waiters (or shutdown): a waiter is served first. A handed-over object
     * needs no re-check: the waiter's lend verdict checks it again. */
    if (pool_test_hook != NULL)
        pool_test_hook(pool, POOL_TEST_IDLE_WAITERS);
    pthread_mutex_lock(&pool->lock);
    int why = pool_idle_verdict(pool, it);
    if (why == POOL_KEEP && pool->wait_head != NULL) {
        pool_waiter_finish(pool, pool->wait_head, POOLD_OK, it, false);
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    if (pool_test_hook != NULL)
        pool_test_hook(pool, POOL_TEST_IDLE_LOCKED);
    if (why == POOL_KEEP)
        atomic_store_explicit(&it->state, SLOT_IDLE, memory_order_seq_cst);
    pthread_mutex_unlock(&pool->lock);
    if (why == POOL_KEEP)
        pool_item_idle_recheck(pool, it);
    else
        pool_item_destroy(pool, it, (enum pool_destroy_reason)why);
}

/* ---- reaping idle objects ----------------------------------------------- */

/* Decides whether an idle object goes: a reason, or POOL_KEEP. Called on a
 * peek before the slot is claimed and again once it is ours. */
typedef int (*pool_reap_fn)(struct pool *pool, const struct pool_item *it,
                            uint64_t now_ns);

/* Callers first make a seq_cst write that changes fn's answer (generation,
 * max_size, the shutdown bit), then scan. A releaser stores IDLE (seq_cst)
 * and then reads what fn reads (pool_idle_verdict). The scan's state read
 * must be seq_cst too: an acquire load is not in the single total order, so
 * C11 would let both sides read the old value (the scan sees LENT, the
 * releaser the old generation) and the object would stay idle; only x86's
 * locked RMW, a full fence, rules that out. */
static unsigned pool_reap(struct pool *pool, pool_reap_fn fn, uint64_t now_ns)
{
    unsigned n = 0, hwm = pool_hwm(pool);
    for (unsigned i = 0; i < hwm; i++) {
        struct pool_item *it = &pool->slots[i];
        if (atomic_load_explicit(&it->state, memory_order_seq_cst) !=
                SLOT_IDLE ||
            fn(pool, it, now_ns) == POOL_KEEP ||
            !pool_slot_cas(it, SLOT_IDLE, SLOT_BUSY))
            continue;
        int why = fn(pool, it, now_ns);
        if (why == POOL_KEEP) {
            pool_item_idle(pool, it, atomic_load(&it->idle_since_ns));
            continue;
        }
        pool_item_destroy(pool, it, (enum pool_destroy_reason)why);
        n++;
    }
    return n;
}

static int pool_reap_all(struct pool *pool, const struct pool_item *it,
                         uint64_t now_ns)
{
    (void)pool, (void)it, (void)now_ns;
    return POOL_DESTROY_SHUTDOWN;
}

static int pool_reap_retired(struct pool *pool, const struct pool_item *it,
                             uint64_t now_ns)
{
    (void)now_ns;
    return atomic_load(&it->generation) != atomic_load(&pool->generation)
               ? POOL_DESTROY_RETIRED
               : POOL_KEEP;
}

static int pool_reap_oversize(struct pool *pool, const struct pool_item *it,
                              uint64_t now_ns)
{
    (void)it, (void)now_ns;
    return atomic_load(&pool->total) > atomic_load(&pool->max_size)
               ? POOL_DESTROY_SHRINK
               : POOL_KEEP;
}

/* A peek (relaxed): the answer may be stale by the time it is used; its
 * users (min_idle, peak_active, the leak check at destroy) tolerate that
 * or run when the pool is quiet. */
static unsigned pool_count(const struct pool *pool, int state)
{
    unsigned n = 0, hwm = pool_hwm(pool);
    for (unsigned i = 0; i < hwm; i++)
        n += atomic_load_explicit(&pool->slots[i].state,
                                  memory_order_relaxed) == state;
    return n;
}

/* Expired and old-generation objects go; idle-timed-out ones only while
 * more than min_idle are idle (HikariCP's idleTimeout vs minimumIdle). */
static int pool_reap_stale(struct pool *pool, const struct pool_item *it,
                           uint64_t now_ns)
{
    int why = pool_reap_retired(pool, it, now_ns);
    if (why != POOL_KEEP)
        return why;
    if (now_ns >= atomic_load(&it->expire_ns))
        return POOL_DESTROY_EXPIRED;
    uint64_t since = atomic_load(&it->idle_since_ns);
    uint64_t limit = pool->cfg.idle_timeout_ns;
    if (limit == 0 || now_ns < since || now_ns - since < limit)
        return POOL_KEEP;
    /* On the second call the slot is ours (BUSY) and no longer counted. */
    unsigned idle = pool_count(pool, SLOT_IDLE) + (pool_state(it) == SLOT_BUSY);
    if (idle > pool->cfg.min_idle)
        return POOL_DESTROY_IDLE;
    return POOL_KEEP;
}

/* ---- lending and returning ---------------------------------------------- */

/* Checks shared by lending and returning: the pool shut down, or the
 * object belongs to a retired generation. */
static int pool_gone_verdict(struct pool *pool, const struct pool_item *it)
{
    if (atomic_load_explicit(&pool->gate, memory_order_relaxed) &
        POOL_GATE_SHUTDOWN)
        return POOL_DESTROY_SHUTDOWN;
    if (atomic_load_explicit(&it->generation, memory_order_relaxed) !=
        atomic_load_explicit(&pool->generation, memory_order_relaxed))
        return POOL_DESTROY_RETIRED;
    return POOL_KEEP;
}

/* May an object just taken for a borrower be lent? Fresh ones skip the
 * lifetime and validation checks. */
static int pool_lend_verdict(struct pool *pool, struct pool_item *it,
                             bool fresh)
{
    int gone = pool_gone_verdict(pool, it);
    if (gone != POOL_KEEP)
        return gone;
    uint64_t expire =
        atomic_load_explicit(&it->expire_ns, memory_order_relaxed);
    if (fresh || (expire == UINT64_MAX && pool->ops->validate == NULL))
        return POOL_KEEP;
    uint64_t now = pool_now(pool);
    if (now >= expire)
        return POOL_DESTROY_EXPIRED;
    uint64_t since =
        atomic_load_explicit(&it->idle_since_ns, memory_order_relaxed);
    uint64_t idle = now > since ? now - since : 0;
    if (pool->ops->validate != NULL && idle >= pool->cfg.validate_idle_ns &&
        !pool->ops->validate(pool->ctx, it->obj, idle, now))
        return POOL_DESTROY_INVALID;
    return POOL_KEEP;
}

/* peak_active can only be behind while fewer objects were ever lent at once
 * than exist; only then count the lent slots (rare once the pool is warm). */
static void pool_track_peak(struct pool *pool)
{
    uint64_t peak =
        atomic_load_explicit(&pool->peak_active, memory_order_relaxed);
    uint64_t total = atomic_load_explicit(&pool->total, memory_order_relaxed);
    if (peak >= total)
        return;
    uint64_t active = pool_count(pool, SLOT_LENT);
    if (active > total)
        active = total;
    while (peak < active &&
           !atomic_compare_exchange_weak(&pool->peak_active, &peak, active))
        ;
}

static void pool_lend(struct pool *pool, struct pool_item *it)
{
    /* Release: publishes the build's created++ to pool_get_stats, which
     * reads the slots (acquire) before created, so a slot seen lent is
     * always counted as created. Free on x86 (a plain store either way). */
    atomic_store_explicit(&it->state, SLOT_LENT, memory_order_release);
    /* Only the owner writes lends: a plain increment, no locked RMW. A pure
     * counter (summed into "acquired", which promises no relation to any
     * other field), hence relaxed. */
    atomic_store_explicit(
        &it->lends, atomic_load_explicit(&it->lends, memory_order_relaxed) + 1,
        memory_order_relaxed);
    tl_hint_pool = pool;
    tl_hint_slot = it->index;
    pool_track_peak(pool);
}

/* One attempt at an object: idle (fast path), new, or from the queue. */
static int pool_take(struct pool *pool, struct pool_deadline *dl,
                     struct pool_item **it, bool *fresh)
{
    uint64_t gate = atomic_load_explicit(&pool->gate, memory_order_acquire);
    bool permit = false;
    if (gate & POOL_GATE_SHUTDOWN)
        return POOLD_ERR_SHUTDOWN;
    for (unsigned spin = 0;; spin++) {
        if (gate == 0) {
            *it = pool_claim_idle(pool);
            if (*it != NULL)
                return POOLD_OK;
            if ((permit = pool_reserve(pool)))
                break;
        }
        if (spin == POOL_YIELDS)
            break;
        /* Holders may be preempted (more threads than cores): let them run
         * rather than sleep in the queue, where FIFO handoff would make
         * every later acquire a context switch (a convoy). */
        sched_yield();
        gate = atomic_load_explicit(&pool->gate, memory_order_acquire);
        if (gate & POOL_GATE_SHUTDOWN)
            return POOLD_ERR_SHUTDOWN;
    }
    if (!permit && dl->try_only)
        return POOLD_ERR_TIMEOUT;
    if (!permit) {
        int rc = pool_wait(pool, dl, it, &permit);
        if (rc != POOLD_OK || *it != NULL)
            return rc;
    }
    *fresh = true;
    int rc = pool_item_build(pool, it);
    if (rc == POOLD_ERR_TIMEOUT && !dl->quiet) {
        /* No service in time, for want of what it needs: a timeout as a
         * wait's (the seed's contract: pool_exhausted, total_timeouts). */
        pthread_mutex_lock(&pool->lock);
        pool->timeouts++;
        pthread_mutex_unlock(&pool->lock);
    }
    return rc;
}

static int pool_acquire_dl(struct pool *pool, struct pool_deadline *dl,
                           struct pool_item **out)
{
    *out = NULL;
    for (;;) {
        struct pool_item *it = NULL;
        bool fresh = false;
        int rc = pool_take(pool, dl, &it, &fresh);
        if (rc != POOLD_OK)
            return rc;
        int why = pool_lend_verdict(pool, it, fresh);
        if (why == POOL_KEEP) {
            pool_lend(pool, it);
            *out = it;
            return POOLD_OK;
        }
        /* Unusable: destroy it and go on with the next idle or a new one. */
        pool_item_destroy(pool, it, (enum pool_destroy_reason)why);
        if (why == POOL_DESTROY_SHUTDOWN)
            return POOLD_ERR_SHUTDOWN;
    }
}

int pool_acquire(struct pool *pool, uint64_t timeout_ns, struct pool_item **out)
{
    struct pool_deadline dl = {.timeout_ns = timeout_ns};
    return pool_acquire_dl(pool, &dl, out);
}

int pool_try_acquire(struct pool *pool, uint64_t wait_ns,
                     struct pool_item **out)
{
    struct pool_deadline dl = {
        .timeout_ns = wait_ns, .try_only = wait_ns == 0, .quiet = true};
    return pool_acquire_dl(pool, &dl, out);
}

unsigned pool_waiting(struct pool *pool)
{
    uint64_t gate = atomic_load_explicit(&pool->gate, memory_order_relaxed);
    return (unsigned)(gate & ~(uint64_t)POOL_GATE_SHUTDOWN);
}

void *pool_item_object(const struct pool_item *item)
{
    return item->obj;
}

/* Why a returned object must go, or POOL_KEEP once reset() agreed. */
static int pool_return_verdict(struct pool *pool, struct pool_item *it,
                               uint64_t now)
{
    int gone = pool_gone_verdict(pool, it);
    if (gone != POOL_KEEP)
        return gone;
    if (now >= atomic_load_explicit(&it->expire_ns, memory_order_relaxed))
        return POOL_DESTROY_EXPIRED;
    if (atomic_load_explicit(&pool->total, memory_order_relaxed) >
        atomic_load_explicit(&pool->max_size, memory_order_relaxed))
        return POOL_DESTROY_SHRINK;
    if (pool->ops->reset != NULL && !pool->ops->reset(pool->ctx, it->obj))
        return POOL_DESTROY_RESET_FAILED;
    return POOL_KEEP;
}

void pool_release(struct pool *pool, struct pool_item *item)
{
    if (item == NULL)
        return;
    uint64_t now = pool_now(pool);
    int why = pool_return_verdict(pool, item, now);
    if (why == POOL_KEEP)
        pool_item_idle(pool, item, now);
    else
        pool_item_destroy(pool, item, (enum pool_destroy_reason)why);
}

void pool_release_broken(struct pool *pool, struct pool_item *item)
{
    if (item != NULL)
        pool_item_destroy(pool, item, POOL_DESTROY_BROKEN);
}

void pool_release_evict(struct pool *pool, struct pool_item *item)
{
    if (item != NULL)
        pool_item_destroy(pool, item, POOL_DESTROY_EVICTED);
}

uint64_t pool_item_expiry(const struct pool_item *item)
{
    return atomic_load_explicit(&item->expire_ns, memory_order_relaxed);
}

bool pool_item_is_expired(const struct pool *pool, const struct pool_item *item,
                          uint64_t now_ns)
{
    (void)pool;
    return now_ns >=
           atomic_load_explicit(&item->expire_ns, memory_order_relaxed);
}

/* ---- control ------------------------------------------------------------ */

int pool_resize(struct pool *pool, unsigned max_size)
{
    if ((max_size < 1 && !pool->cfg.may_empty) || max_size > pool->capacity)
        return POOLD_ERR_INVALID;
    pthread_mutex_lock(&pool->lock);
    unsigned old = atomic_exchange(&pool->max_size, max_size);
    if (max_size > old)
        pool_dispatch_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    /* Active objects beyond the size go when released (return verdict). */
    if (max_size < old)
        pool_reap(pool, pool_reap_oversize, 0);
    return POOLD_OK;
}

void pool_retire_all(struct pool *pool)
{
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_seq_cst);
    pool_reap(pool, pool_reap_retired, 0);
}

/* The idle slot idle the longest, or NULL (a peek: it may be gone). */
static struct pool_item *pool_find_oldest_idle(struct pool *pool,
                                               uint64_t *since_ns)
{
    struct pool_item *best = NULL;
    uint64_t best_since = UINT64_MAX;
    unsigned hwm = pool_hwm(pool);
    for (unsigned i = 0; i < hwm; i++) {
        struct pool_item *it = &pool->slots[i];
        if (pool_state(it) != SLOT_IDLE)
            continue;
        uint64_t since = atomic_load(&it->idle_since_ns);
        if (best == NULL || since < best_since) {
            best = it;
            best_since = since;
        }
    }
    *since_ns = best_since;
    return best;
}

bool pool_oldest_idle(struct pool *pool, uint64_t *since_ns)
{
    uint64_t since = 0;
    bool found = pool_find_oldest_idle(pool, &since) != NULL;
    if (found)
        *since_ns = since;
    return found;
}

bool pool_evict_idle(struct pool *pool)
{
    uint64_t since;
    struct pool_item *it;
    /* A lost race means someone took it: look again. */
    while ((it = pool_find_oldest_idle(pool, &since)) != NULL) {
        if (pool_slot_cas(it, SLOT_IDLE, SLOT_BUSY)) {
            pool_item_destroy(pool, it, POOL_DESTROY_EVICTED);
            return true;
        }
    }
    return false;
}

/* Build idle objects until min_idle are idle, never beyond max_size. */
static void pool_top_up(struct pool *pool)
{
    while (!(atomic_load(&pool->gate) & POOL_GATE_SHUTDOWN) &&
           pool_count(pool, SLOT_IDLE) < pool->cfg.min_idle &&
           pool_reserve(pool)) {
        struct pool_item *it;
        if (pool_item_build(pool, &it) != POOLD_OK)
            return;
        pool_item_idle(pool, it, pool_now(pool));
    }
}

void pool_maintain(struct pool *pool, uint64_t now_ns)
{
    pool_reap(pool, pool_reap_stale, now_ns);
    pool_top_up(pool);
}

void pool_shutdown(struct pool *pool)
{
    struct pool_waiter *w;
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_or_explicit(&pool->gate, POOL_GATE_SHUTDOWN,
                             memory_order_seq_cst);
    while ((w = pool->wait_head) != NULL)
        pool_waiter_finish(pool, w, POOLD_ERR_SHUTDOWN, NULL, false);
    pthread_mutex_unlock(&pool->lock);
    pool_reap(pool, pool_reap_all, 0);
}

/* The fast path takes no lock, so the snapshot is ordered rather than
 * frozen: destroyed counts are read before the slots and created after, so
 * idle + active <= created - destroyed always holds (equal when quiet). */
void pool_get_stats(struct pool *pool, struct pool_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&pool->lock);
    for (unsigned r = 0; r < POOL_DESTROY__COUNT; r++) {
        out->destroyed_by[r] =
            atomic_load_explicit(&pool->destroyed_by[r], memory_order_acquire);
        out->destroyed += out->destroyed_by[r];
    }
    unsigned hwm = pool_hwm(pool);
    for (unsigned i = 0; i < hwm; i++) {
        int state = pool_state(&pool->slots[i]);
        out->idle += state == SLOT_IDLE;
        out->active += state == SLOT_LENT;
        out->acquired += atomic_load(&pool->slots[i].lends);
    }
    out->created = atomic_load(&pool->created);
    out->create_failures = atomic_load(&pool->create_failures);
    out->peak_active = atomic_load(&pool->peak_active);
    if (out->peak_active < out->active)
        out->peak_active = out->active;
    out->max_size = atomic_load(&pool->max_size);
    out->held = atomic_load(&pool->held);
    out->waiting = pool->nwait;
    out->total_timeouts = pool->timeouts;
    out->waiters_rejected = pool->rejected;
    out->wait_count = pool->wait_count;
    out->wait_ns_sum = pool->wait_ns_sum;
    memcpy(out->wait_hist, pool->wait_hist, sizeof out->wait_hist);
    pthread_mutex_unlock(&pool->lock);
}

unsigned pool_max_size(struct pool *pool)
{
    return atomic_load(&pool->max_size);
}

unsigned pool_total(struct pool *pool)
{
    return atomic_load(&pool->total);
}

/* A held place is a reservation that builds nothing: it needs no slot, so
 * "a reservation always finds a slot" still holds (builders reserve only
 * while total < max_size <= capacity). */
void pool_hold(struct pool *pool)
{
    atomic_fetch_add_explicit(&pool->held, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->total, 1, memory_order_seq_cst);
}

void pool_unhold(struct pool *pool)
{
    atomic_fetch_sub_explicit(&pool->held, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&pool->total, 1, memory_order_seq_cst);
    if (pool_waiters(pool) > 0)
        pool_dispatch(pool); /* room to build: the first waiter does */
}

/* ---- life of the pool --------------------------------------------------- */

static bool pool_config_ok(const struct pool_ops *ops,
                           const struct pool_config *cfg)
{
    if (ops == NULL || ops->create == NULL || ops->destroy == NULL ||
        cfg == NULL || cfg->max_size < 1)
        return false;
    unsigned cap = cfg->capacity ? cfg->capacity : cfg->max_size;
    return cap >= cfg->max_size && cap <= POOL_CAPACITY_MAX;
}

static int pool_init_sync(struct pool *pool)
{
    if (pthread_condattr_init(&pool->condattr) != 0)
        return POOLD_ERR_NOMEM;
    if (pthread_condattr_setclock(&pool->condattr, CLOCK_MONOTONIC) != 0 ||
        pthread_mutex_init(&pool->lock, NULL) != 0) {
        pthread_condattr_destroy(&pool->condattr);
        return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}

int pool_create(const struct pool_ops *ops, void *ctx,
                const struct pool_config *cfg, struct pool **out)
{
    int rc = POOLD_ERR_NOMEM;
    if (out == NULL || !pool_config_ok(ops, cfg))
        return POOLD_ERR_INVALID;
    *out = NULL;
    struct pool *pool = aligned_alloc(POOL_LINE, sizeof *pool);
    if (pool == NULL)
        return POOLD_ERR_NOMEM;
    memset(pool, 0, sizeof *pool);
    pool->capacity = cfg->capacity ? cfg->capacity : cfg->max_size;
    pool->slots =
        aligned_alloc(POOL_LINE, pool->capacity * sizeof *pool->slots);
    if (pool->slots == NULL)
        goto fail;
    memset(pool->slots, 0, pool->capacity * sizeof *pool->slots);
    for (unsigned i = 0; i < pool->capacity; i++)
        pool->slots[i].index = i;
    if ((rc = pool_init_sync(pool)) != POOLD_OK)
        goto fail;
    pool->ops = ops;
    pool->ctx = ctx;
    pool->cfg = *cfg;
    snprintf(pool->name, sizeof pool->name, "%s", cfg->name ? cfg->name : "");
    pool->cfg.name = pool->name;
    atomic_store(&pool->max_size, cfg->max_size);
    *out = pool;
    return POOLD_OK;
fail:
    free(pool->slots);
    free(pool);
    return rc;
}

void pool_destroy(struct pool *pool)
{
    if (pool == NULL)
        return;
    pool_shutdown(pool);
    unsigned left = pool_count(pool, SLOT_LENT) + pool_count(pool, SLOT_BUSY);
    if (left > 0) {
        fprintf(stderr, "pool %s: destroyed with %u objects still lent\n",
                pool->name, left);
        abort();
    }
    pthread_mutex_destroy(&pool->lock);
    pthread_condattr_destroy(&pool->condattr);
    if (tl_hint_pool == pool)
        tl_hint_pool = NULL;
    free(pool->slots);
    free(pool);
}

void pool_stats_add(struct pool_stats *a, const struct pool_stats *b)
{
    a->max_size += b->max_size;
    a->idle += b->idle;
    a->active += b->active;
    a->waiting += b->waiting;
    a->total_timeouts += b->total_timeouts;
    a->waiters_rejected += b->waiters_rejected;
    a->peak_active += b->peak_active;
    a->created += b->created;
    a->create_failures += b->create_failures;
    a->destroyed += b->destroyed;
    for (size_t i = 0; i < POOL_DESTROY__COUNT; i++)
        a->destroyed_by[i] += b->destroyed_by[i];
    a->acquired += b->acquired;
    a->wait_count += b->wait_count;
    a->wait_ns_sum += b->wait_ns_sum;
    for (size_t i = 0; i < POOL_WAIT_BUCKETS; i++)
        a->wait_hist[i] += b->wait_hist[i];
    a->held_too_long += b->held_too_long;
    a->group_commits += b->group_commits;
    a->group_messages += b->group_messages;
}
