/* check_pool.c — unit tests of the generic pool, with fake ops and clock. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "test_util.h"

#define MS NS_PER_MS
#define S NS_PER_S
#define LONG_WAIT (30 * S)

/* ---- counting malloc: proves the warm path allocates nothing ------------
 * glibc lets a program replace malloc; ours forwards to glibc's own. The
 * sanitizers bring their own allocator, so there the test is skipped. */
#if defined(__has_feature) /* clang names sanitizers this way, gcc below */
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define POOL_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) ||           \
    defined(POOL_TEST_SANITIZED)
#define POOL_TEST_COUNT_ALLOCS 0
#else
#define POOL_TEST_COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

static _Thread_local bool tl_counting;
static _Thread_local long tl_allocs;

void *malloc(size_t n)
{
    tl_allocs += tl_counting;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    tl_allocs += tl_counting;
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    tl_allocs += tl_counting;
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    tl_allocs += tl_counting;
    return __libc_memalign(align, n);
}

void free(void *p)
{
    __libc_free(p);
}
#endif

/* ---- the fake ops table and clock --------------------------------------- */

struct fake_obj {
    int id;
};

static struct fake {
    struct pool *pool; /* for re-entering the pool from callbacks */
    atomic_int next_id;
    atomic_int created, destroyed;
    atomic_int destroyed_by[POOL_DESTROY__COUNT];
    atomic_int last_destroyed_id;
    atomic_int fail_next;    /* the next n creates fail with POOLD_ERR_DB */
    atomic_int invalid_upto; /* validate() refuses ids <= this */
    atomic_int invalid_mod;  /* ... and ids divisible by this (0: none) */
    atomic_int validations;
    atomic_ullong last_idle_ns;
    atomic_bool reset_fails;
    atomic_bool reenter; /* callbacks call pool_get_stats(): no lock held */
    pthread_mutex_t mu;  /* guards the create gate below */
    pthread_cond_t cv;
    bool create_blocked;
    int in_create;
} F;

static atomic_ullong fake_now_ns;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now_ns);
}

static void fake_reenter(void)
{
    struct pool_stats st;
    if (atomic_load(&F.reenter) && F.pool != NULL)
        pool_get_stats(F.pool, &st);
}

/* Park in create() while the gate is closed; says so through in_create. */
static void fake_create_gate(void)
{
    pthread_mutex_lock(&F.mu);
    F.in_create++;
    pthread_cond_broadcast(&F.cv);
    while (F.create_blocked)
        pthread_cond_wait(&F.cv, &F.mu);
    F.in_create--;
    pthread_mutex_unlock(&F.mu);
}

static int fake_create(void *ctx, void **obj)
{
    (void)ctx;
    fake_reenter();
    fake_create_gate();
    int left = atomic_load(&F.fail_next);
    while (left > 0 &&
           !atomic_compare_exchange_weak(&F.fail_next, &left, left - 1))
        ;
    if (left > 0)
        return POOLD_ERR_DB;
    struct fake_obj *o = malloc(sizeof *o);
    if (o == NULL)
        return POOLD_ERR_NOMEM;
    o->id = atomic_fetch_add(&F.next_id, 1) + 1;
    atomic_fetch_add(&F.created, 1);
    *obj = o;
    return POOLD_OK;
}

static void fake_destroy(void *ctx, void *obj, enum pool_destroy_reason why)
{
    struct fake_obj *o = obj;
    (void)ctx;
    fake_reenter();
    atomic_store(&F.last_destroyed_id, o->id);
    atomic_fetch_add(&F.destroyed_by[why], 1);
    atomic_fetch_add(&F.destroyed, 1);
    free(o);
}

static bool fake_validate(void *ctx, void *obj, uint64_t idle_ns,
                          uint64_t now_ns)
{
    const struct fake_obj *o = obj;
    int mod = atomic_load(&F.invalid_mod);
    (void)ctx, (void)now_ns;
    fake_reenter();
    atomic_fetch_add(&F.validations, 1);
    atomic_store(&F.last_idle_ns, idle_ns);
    return o->id > atomic_load(&F.invalid_upto) && (mod == 0 || o->id % mod);
}

static bool fake_reset(void *ctx, void *obj)
{
    (void)ctx, (void)obj;
    fake_reenter();
    return !atomic_load(&F.reset_fails);
}

static const struct pool_ops fake_ops = {
    .create = fake_create,
    .destroy = fake_destroy,
    .validate = fake_validate,
    .reset = fake_reset,
};

static const struct pool_ops plain_ops = {
    .create = fake_create,
    .destroy = fake_destroy,
};

static void fake_setup(void)
{
    struct fake zero = {.pool = NULL};
    F = zero;
    pthread_mutex_init(&F.mu, NULL);
    pthread_cond_init(&F.cv, NULL);
    atomic_store(&fake_now_ns, 0);
}

static void fake_teardown(void)
{
    pool_destroy(F.pool);
    F.pool = NULL;
    pthread_mutex_destroy(&F.mu);
    pthread_cond_destroy(&F.cv);
}

/* A config with the fake clock; tests change what they need. */
static struct pool_config base_cfg(unsigned max_size)
{
    return (struct pool_config){
        .name = "test", .max_size = max_size, .clock = fake_clock};
}

/* Create the test's pool into F.pool (destroyed by the teardown). */
static struct pool *make_pool(const struct pool_config *cfg,
                              const struct pool_ops *ops)
{
    ck_assert_int_eq(pool_create(ops, NULL, cfg, &F.pool), POOLD_OK);
    return F.pool;
}

static struct pool_stats stats(struct pool *pool)
{
    struct pool_stats st;
    pool_get_stats(pool, &st);
    return st;
}

static struct pool_item *take(struct pool *pool)
{
    struct pool_item *it = NULL;
    ck_assert_int_eq(pool_acquire(pool, LONG_WAIT, &it), POOLD_OK);
    ck_assert_ptr_nonnull(it);
    return it;
}

static int obj_id(const struct pool_item *it)
{
    return ((const struct fake_obj *)pool_item_object(it))->id;
}

struct waiting_arg {
    struct pool *pool;
    uint64_t n;
};

static bool waiting_is(void *arg)
{
    const struct waiting_arg *w = arg;
    return pool_waiting(w->pool) == w->n;
}

/* Wait (bounded) until n threads are blocked in pool_acquire. */
static void wait_waiting(struct pool *pool, uint64_t n)
{
    struct waiting_arg w = {pool, n};
    wait_until(waiting_is, &w, 30000, "the pool's waiters to reach n");
    ck_assert_uint_eq(stats(pool).waiting, n);
}

/* Wait (bounded) until n threads are inside create(). */
static void wait_in_create(int n)
{
    pthread_mutex_lock(&F.mu);
    while (F.in_create != n)
        pthread_cond_wait(&F.cv, &F.mu);
    pthread_mutex_unlock(&F.mu);
}

static void set_create_blocked(bool blocked)
{
    pthread_mutex_lock(&F.mu);
    F.create_blocked = blocked;
    pthread_cond_broadcast(&F.cv);
    pthread_mutex_unlock(&F.mu);
}

/* ---- threads that acquire ----------------------------------------------- */

/* One borrower: acquires, reports, optionally holds until told to go. */
struct borrower {
    pthread_t tid;
    struct pool *pool;
    uint64_t timeout_ns;
    bool hold; /* keep the item until release_holders() */
    int tag;   /* recorded in B.order when served */
    int rc;
    int id; /* object id obtained, 0 if none */
    struct pool_item *it;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int got; /* borrowers that obtained their item */
    bool go; /* holders may release */
    int order[16];
    int norder;
} B = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, {0}, 0};

static void *borrower_main(void *arg)
{
    struct borrower *b = arg;
    b->rc = pool_acquire(b->pool, b->timeout_ns, &b->it);
    pthread_mutex_lock(&B.mu);
    if (b->rc == POOLD_OK) {
        b->id = obj_id(b->it);
        B.order[B.norder++] = b->tag;
    }
    B.got += b->rc == POOLD_OK;
    pthread_cond_broadcast(&B.cv);
    while (b->hold && b->rc == POOLD_OK && !B.go)
        pthread_cond_wait(&B.cv, &B.mu);
    pthread_mutex_unlock(&B.mu);
    if (b->rc == POOLD_OK)
        pool_release(b->pool, b->it);
    return NULL;
}

static void borrowers_reset(void)
{
    pthread_mutex_lock(&B.mu);
    B.got = 0;
    B.go = false;
    B.norder = 0;
    pthread_mutex_unlock(&B.mu);
}

static void borrower_start(struct borrower *b, struct pool *pool,
                           uint64_t timeout_ns, bool hold, int tag)
{
    *b = (struct borrower){
        .pool = pool, .timeout_ns = timeout_ns, .hold = hold, .tag = tag};
    ck_assert_int_eq(pthread_create(&b->tid, NULL, borrower_main, b), 0);
}

static void wait_got(int n)
{
    pthread_mutex_lock(&B.mu);
    while (B.got < n)
        pthread_cond_wait(&B.cv, &B.mu);
    pthread_mutex_unlock(&B.mu);
}

static void release_holders(void)
{
    pthread_mutex_lock(&B.mu);
    B.go = true;
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

/* ---- basics -------------------------------------------------------------- */

START_TEST(test_create_rejects_bad_config)
{
    struct pool *p = NULL;
    struct pool_config cfg = base_cfg(0);
    ck_assert_int_eq(pool_create(&fake_ops, NULL, &cfg, &p), POOLD_ERR_INVALID);
    cfg = base_cfg(4);
    cfg.capacity = 2;
    ck_assert_int_eq(pool_create(&fake_ops, NULL, &cfg, &p), POOLD_ERR_INVALID);
    struct pool_ops no_create = {.destroy = fake_destroy};
    cfg = base_cfg(4);
    ck_assert_int_eq(pool_create(&no_create, NULL, &cfg, &p),
                     POOLD_ERR_INVALID);
    ck_assert_ptr_null(p);
    pool_destroy(NULL);
}
END_TEST

START_TEST(test_lazy_create_and_reuse)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    ck_assert_int_eq(atomic_load(&F.created), 0);
    struct pool_item *it = take(pool);
    int id = obj_id(it);
    ck_assert_int_eq(atomic_load(&F.created), 1);
    pool_release(pool, it);
    it = take(pool);
    ck_assert_int_eq(obj_id(it), id);
    ck_assert_int_eq(atomic_load(&F.created), 1);
    pool_release(pool, it);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.acquired, 2);
    ck_assert_uint_eq(st.idle, 1);
    ck_assert_uint_eq(st.active, 0);
}
END_TEST

/* The seed's total_timeouts, with the fake clock frozen: waits must use real
 * time or they never end. */
START_TEST(test_timeout_counted_with_frozen_fake_clock)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool), *it = NULL;
    uint64_t t0 = clock_now_ns();
    ck_assert_int_eq(pool_acquire(pool, 20 * MS, &it), POOLD_ERR_TIMEOUT);
    ck_assert_uint_ge(clock_now_ns() - t0, 20 * MS);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(pool_acquire(pool, 0, &it), POOLD_ERR_TIMEOUT);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.total_timeouts, 2);
    ck_assert_uint_eq(st.wait_count, 2);
    ck_assert_uint_ge(st.wait_ns_sum, 20 * MS);
    ck_assert_uint_eq(st.waiting, 0);
    pool_release(pool, held);
}
END_TEST

START_TEST(test_try_acquire_never_waits_nor_counts)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = NULL, *other = NULL;

    ck_assert_int_eq(pool_try_acquire(pool, 0, &it), POOLD_OK); /* creates */
    ck_assert_int_eq(pool_try_acquire(pool, 0, &other), POOLD_ERR_TIMEOUT);
    ck_assert_ptr_null(other);
    ck_assert_int_eq(pool_try_acquire(pool, 1000000, &other),
                     POOLD_ERR_TIMEOUT); /* waits 1 ms, quietly */
    ck_assert_uint_eq(stats(pool).total_timeouts, 0);
    ck_assert_uint_eq(stats(pool).waiting, 0);
    ck_assert_uint_eq(pool_waiting(pool), 0);
    pool_release(pool, it);
    ck_assert_int_eq(pool_try_acquire(pool, 0, &other), POOLD_OK); /* reuses */
    ck_assert_ptr_eq(other, it);
    ck_assert_int_eq(atomic_load(&F.created), 1);
    pool_release(pool, other);
}
END_TEST

START_TEST(test_peak_active)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool), *c = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    pool_release(pool, c);
    a = take(pool);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.peak_active, 3);
    ck_assert_uint_eq(st.active, 1);
    ck_assert_uint_eq(st.idle, 2);
    pool_release(pool, a);
}
END_TEST

START_TEST(test_release_hands_object_to_waiter)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool);
    int id = obj_id(held);
    struct borrower b;
    borrowers_reset();
    borrower_start(&b, pool, LONG_WAIT, false, 0);
    wait_waiting(pool, 1);
    pool_release(pool, held);
    pthread_join(b.tid, NULL);
    ck_assert_int_eq(b.rc, POOLD_OK);
    ck_assert_int_eq(b.id, id);
    ck_assert_int_eq(atomic_load(&F.created), 1);
    ck_assert_uint_eq(stats(pool).wait_count, 1);
}
END_TEST

START_TEST(test_release_broken_destroys)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = take(pool);
    pool_release_broken(pool, it);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_BROKEN]), 1);
    it = take(pool); /* the slot came back */
    ck_assert_int_eq(atomic_load(&F.created), 2);
    pool_release(pool, it);
}
END_TEST

/* A held place (a closed connection whose backend is still at work) is
 * built into by nobody until given back; then the waiter builds. */
START_TEST(test_hold_keeps_the_place_until_unhold)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = take(pool);
    struct borrower b;

    pool_hold(pool); /* as its destroy() does */
    pool_release_broken(pool, it);
    ck_assert_uint_eq(pool_total(pool), 1);
    ck_assert_uint_eq(stats(pool).held, 1);
    borrowers_reset();
    borrower_start(&b, pool, LONG_WAIT, false, 0);
    wait_waiting(pool, 1);
    ck_assert_int_eq(atomic_load(&F.created), 1);
    pool_unhold(pool);
    pthread_join(b.tid, NULL);
    ck_assert_int_eq(b.rc, POOLD_OK);
    ck_assert_int_eq(atomic_load(&F.created), 2);
    ck_assert_uint_eq(stats(pool).held, 0);
    ck_assert_uint_eq(pool_total(pool), 1);
}
END_TEST

/* Held from outside with the pool full: over max_size, so the next
 * object released goes (shrink) until the total fits. */
START_TEST(test_hold_beyond_size_closes_a_released_object)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = take(pool);

    pool_hold(pool);
    ck_assert_uint_eq(pool_total(pool), 2);
    pool_release(pool, it);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_SHRINK]), 1);
    ck_assert_uint_eq(pool_total(pool), 1);
    ck_assert_int_eq(pool_try_acquire(pool, 0, &it), POOLD_ERR_TIMEOUT);
    pool_unhold(pool);
    it = take(pool);
    pool_release(pool, it);
}
END_TEST

/* ---- resize -------------------------------------------------------------- */

START_TEST(test_resize_bounds)
{
    struct pool_config cfg = base_cfg(2);
    cfg.capacity = 8;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    ck_assert_int_eq(pool_resize(pool, 0), POOLD_ERR_INVALID);
    ck_assert_int_eq(pool_resize(pool, 9), POOLD_ERR_INVALID);
    ck_assert_uint_eq(pool_max_size(pool), 2);
    ck_assert_int_eq(pool_resize(pool, 8), POOLD_OK);
    ck_assert_uint_eq(pool_max_size(pool), 8);
    ck_assert_uint_eq(stats(pool).max_size, 8);
}
END_TEST

/* The seed's 2 -> 8 -> 4: growing wakes the waiters, shrinking keeps the
 * active objects until they are released, then at most 4 stay idle. */
START_TEST(test_resize_grow_then_shrink_under_load)
{
    struct pool_config cfg = base_cfg(2);
    cfg.capacity = 8;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    atomic_store(&F.reenter, true);
    struct pool_item *a = take(pool), *b = take(pool);
    struct borrower w[4];
    borrowers_reset();
    for (int i = 0; i < 4; i++)
        borrower_start(&w[i], pool, LONG_WAIT, true, i);
    wait_waiting(pool, 4);
    ck_assert_int_eq(pool_resize(pool, 8), POOLD_OK);
    wait_got(4);
    ck_assert_uint_eq(stats(pool).active, 6);
    ck_assert_int_eq(pool_resize(pool, 4), POOLD_OK);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.active, 6); /* nobody's object was taken away */
    ck_assert_uint_eq(st.destroyed, 0);
    pool_release(pool, a);
    pool_release(pool, b);
    release_holders();
    for (int i = 0; i < 4; i++) {
        pthread_join(w[i].tid, NULL);
        ck_assert_int_eq(w[i].rc, POOLD_OK);
    }
    st = stats(pool);
    ck_assert_uint_eq(st.active, 0);
    ck_assert_uint_eq(st.idle, 4);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_SHRINK], 2);
    ck_assert_uint_eq(st.peak_active, 6);
}
END_TEST

START_TEST(test_shrink_destroys_idle_now)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it[4];
    for (int i = 0; i < 4; i++)
        it[i] = take(pool);
    for (int i = 0; i < 4; i++)
        pool_release(pool, it[i]);
    ck_assert_int_eq(pool_resize(pool, 1), POOLD_OK);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.idle, 1);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_SHRINK], 3);
}
END_TEST

/* ---- shutdown ------------------------------------------------------------ */

START_TEST(test_shutdown_wakes_waiters)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool), *it = NULL;
    struct borrower w[3];
    borrowers_reset();
    for (int i = 0; i < 3; i++)
        borrower_start(&w[i], pool, LONG_WAIT, false, i);
    wait_waiting(pool, 3);
    pool_shutdown(pool);
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].tid, NULL);
        ck_assert_int_eq(w[i].rc, POOLD_ERR_SHUTDOWN);
    }
    ck_assert_int_eq(pool_acquire(pool, LONG_WAIT, &it), POOLD_ERR_SHUTDOWN);
    ck_assert_uint_eq(stats(pool).waiting, 0);
    pool_release(pool, held);
}
END_TEST

START_TEST(test_shutdown_destroys_idle_and_later_releases)
{
    struct pool_config cfg = base_cfg(2);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    atomic_store(&F.reenter, true);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_release(pool, a);
    pool_shutdown(pool);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_SHUTDOWN]), 1);
    pool_shutdown(pool); /* idempotent */
    pool_release(pool, b);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_SHUTDOWN], 2);
    ck_assert_uint_eq(st.idle, 0);
    ck_assert_uint_eq(st.active, 0);
}
END_TEST

/* ---- create ------------------------------------------------------------- */

START_TEST(test_create_error_is_returned)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = NULL;
    atomic_store(&F.fail_next, 1);
    ck_assert_int_eq(pool_acquire(pool, LONG_WAIT, &it), POOLD_ERR_DB);
    ck_assert_ptr_null(it);
    it = take(pool); /* the failed create gave its slot back */
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.create_failures, 1);
    ck_assert_uint_eq(st.created, 1);
    pool_release(pool, it);
}
END_TEST

/* A create that fails while another thread waits for its slot: the waiter
 * is woken and builds its own. */
START_TEST(test_failed_create_wakes_waiter)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct borrower a, b;
    borrowers_reset();
    set_create_blocked(true);
    borrower_start(&a, pool, LONG_WAIT, false, 0);
    wait_in_create(1);
    atomic_store(&F.fail_next, 1);
    borrower_start(&b, pool, LONG_WAIT, false, 1);
    wait_waiting(pool, 1);
    set_create_blocked(false);
    pthread_join(a.tid, NULL);
    pthread_join(b.tid, NULL);
    ck_assert_int_eq(a.rc, POOLD_ERR_DB);
    ck_assert_int_eq(b.rc, POOLD_OK);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.create_failures, 1);
    ck_assert_uint_eq(st.created, 1);
    ck_assert_uint_eq(st.idle, 1);
}
END_TEST

/* While one create is stuck, the same pool still lends and takes back. */
START_TEST(test_create_runs_without_lock)
{
    struct pool_config cfg = base_cfg(2);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *x = take(pool), *y = NULL;
    int id = obj_id(x);
    struct borrower a;
    borrowers_reset();
    set_create_blocked(true);
    borrower_start(&a, pool, LONG_WAIT, false, 0);
    wait_in_create(1);
    pool_release(pool, x);
    ck_assert_int_eq(pool_acquire(pool, 0, &y), POOLD_OK);
    ck_assert_int_eq(obj_id(y), id);
    ck_assert_uint_eq(stats(pool).active, 1);
    set_create_blocked(false);
    pthread_join(a.tid, NULL);
    ck_assert_int_eq(a.rc, POOLD_OK);
    pool_release(pool, y);
}
END_TEST

/* ---- lifetimes, idle, validation ----------------------------------------- */

/* The first fake time at which the item counts as expired. */
static uint64_t expiry_of(struct pool *pool, struct pool_item *it, uint64_t hi)
{
    uint64_t lo = 0;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (pool_item_is_expired(pool, it, mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

START_TEST(test_lifetime_jitter_spreads_expiry)
{
    struct pool_config cfg = base_cfg(8);
    cfg.max_lifetime_ns = 100 * S;
    cfg.lifetime_jitter_ns = 50 * S;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it[8];
    uint64_t exp[8], lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 8; i++) {
        it[i] = take(pool);
        exp[i] = expiry_of(pool, it[i], 200 * S);
        ck_assert_uint_gt(exp[i], 50 * S);
        ck_assert_uint_le(exp[i], 100 * S);
        lo = exp[i] < lo ? exp[i] : lo;
        hi = exp[i] > hi ? exp[i] : hi;
    }
    ck_assert_uint_lt(lo, hi); /* built together, not expiring together */
    atomic_store(&fake_now_ns, 1 * S);
    for (int i = 0; i < 8; i++)
        pool_release(pool, it[i]);
    uint64_t mid = lo + (hi - lo) / 2;
    int due = 0;
    for (int i = 0; i < 8; i++)
        due += exp[i] <= mid;
    pool_maintain(pool, mid);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_EXPIRED]), due);
    ck_assert_uint_eq(stats(pool).idle, (uint64_t)(8 - due));
}
END_TEST

START_TEST(test_lifetime_enforced_on_acquire_and_release)
{
    struct pool_config cfg = base_cfg(4);
    cfg.max_lifetime_ns = 100 * S;
    cfg.lifetime_jitter_ns = 10 * S;
    struct pool *pool = make_pool(&cfg, &plain_ops);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    atomic_store(&fake_now_ns, 100 * S); /* both past their lifetime */
    a = take(pool);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_EXPIRED]), 2);
    ck_assert_int_eq(atomic_load(&F.created), 3);
    ck_assert_int_eq(obj_id(a), 3);
    atomic_store(&fake_now_ns, 200 * S); /* expires while lent */
    pool_release(pool, a);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_EXPIRED]), 3);
    ck_assert_uint_eq(stats(pool).idle, 0);
}
END_TEST

static uint64_t fake_expiry(void *ctx, const void *obj)
{
    (void)ctx;
    /* Object 1 holds something that ends at 30 s; the others nothing. */
    return ((const struct fake_obj *)obj)->id == 1 ? 30 * S : UINT64_MAX;
}

static const struct pool_ops expiry_ops = {
    .create = fake_create,
    .destroy = fake_destroy,
    .expiry = fake_expiry,
};

/* An object's own end of life comes before the pool's lifetime: it is
 * the item's, and the upkeep reaps the idle object then. */
START_TEST(test_object_expiry_before_lifetime)
{
    struct pool_config cfg = base_cfg(4);
    cfg.max_lifetime_ns = 100 * S;
    struct pool *pool = make_pool(&cfg, &expiry_ops);
    struct pool_item *a = take(pool), *b = take(pool);

    ck_assert_uint_eq(pool_item_expiry(a), 30 * S);
    ck_assert_uint_eq(pool_item_expiry(b), 100 * S);
    pool_release(pool, a);
    pool_release(pool, b);
    pool_maintain(pool, 29 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed), 0);
    pool_maintain(pool, 30 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_EXPIRED]), 1);
    ck_assert_int_eq(atomic_load(&F.last_destroyed_id), 1);
    ck_assert_uint_eq(stats(pool).idle, 1);
}
END_TEST

START_TEST(test_idle_timeout_via_maintain)
{
    struct pool_config cfg = base_cfg(4);
    cfg.idle_timeout_ns = 10 * S;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool);
    int first = obj_id(a);
    pool_release(pool, a);
    atomic_store(&fake_now_ns, 5 * S);
    pool_release(pool, b);
    pool_maintain(pool, 9 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed), 0);
    pool_maintain(pool, 12 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_IDLE]), 1);
    ck_assert_int_eq(atomic_load(&F.last_destroyed_id), first);
    pool_maintain(pool, 15 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_IDLE]), 2);
    ck_assert_uint_eq(stats(pool).idle, 0);
}
END_TEST

START_TEST(test_idle_timeout_keeps_min_idle)
{
    struct pool_config cfg = base_cfg(4);
    cfg.idle_timeout_ns = 10 * S;
    cfg.min_idle = 1;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    pool_maintain(pool, 60 * S);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_IDLE]), 1);
    ck_assert_uint_eq(stats(pool).idle, 1);
    ck_assert_int_eq(atomic_load(&F.created), 2); /* not rebuilt */
}
END_TEST

START_TEST(test_min_idle_prewarm_via_maintain)
{
    struct pool_config cfg = base_cfg(4);
    cfg.min_idle = 3;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    atomic_store(&F.reenter, true);
    ck_assert_int_eq(atomic_load(&F.created), 0);
    pool_maintain(pool, 0);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.created, 3);
    ck_assert_uint_eq(st.idle, 3);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_maintain(pool, 0); /* wants 2 more idle, room for 1 */
    st = stats(pool);
    ck_assert_uint_eq(st.created, 4);
    ck_assert_uint_eq(st.idle, 2);
    ck_assert_uint_eq(st.active, 2);
    pool_release(pool, a);
    pool_release(pool, b);
    ck_assert_uint_eq(stats(pool).idle, 4);
}
END_TEST

START_TEST(test_validate_only_after_idle_gap)
{
    struct pool_config cfg = base_cfg(2);
    cfg.validate_idle_ns = 1 * S;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = take(pool); /* fresh: never validated */
    pool_release(pool, it);
    atomic_store(&fake_now_ns, 500 * MS);
    it = take(pool);
    ck_assert_int_eq(atomic_load(&F.validations), 0);
    pool_release(pool, it);
    atomic_store(&fake_now_ns, 2 * S);
    it = take(pool);
    ck_assert_int_eq(atomic_load(&F.validations), 1);
    ck_assert_uint_eq(atomic_load(&F.last_idle_ns), 1500 * MS);
    pool_release(pool, it);
}
END_TEST

START_TEST(test_failed_validate_destroys_and_goes_on)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    atomic_store(&F.invalid_upto, 1); /* object 1 is dead, 2 fine */
    a = take(pool);
    b = take(pool);
    ck_assert_int_eq(obj_id(a) + obj_id(b), 2 + 3);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_INVALID]), 1);
    pool_release(pool, a);
    pool_release(pool, b);
    atomic_store(&F.invalid_upto, 100); /* every idle one dead: build */
    a = take(pool);
    ck_assert_int_eq(obj_id(a), 4);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_INVALID]), 3);
    pool_release(pool, a);
}
END_TEST

START_TEST(test_failed_reset_destroys)
{
    struct pool_config cfg = base_cfg(2);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it = take(pool);
    atomic_store(&F.reset_fails, true);
    pool_release(pool, it);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_RESET_FAILED]),
                     1);
    ck_assert_uint_eq(stats(pool).idle, 0);
}
END_TEST

/* ---- waiters ------------------------------------------------------------- */

START_TEST(test_waiters_served_fifo)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool);
    struct borrower w[5];
    borrowers_reset();
    for (int i = 0; i < 5; i++) {
        borrower_start(&w[i], pool, LONG_WAIT, false, i);
        wait_waiting(pool, (uint64_t)i + 1);
    }
    pool_release(pool, held);
    for (int i = 0; i < 5; i++)
        pthread_join(w[i].tid, NULL);
    ck_assert_int_eq(B.norder, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(B.order[i], i);
}
END_TEST

START_TEST(test_waiter_bound_fails_at_once)
{
    struct pool_config cfg = base_cfg(1);
    cfg.max_waiters = 2;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool), *it = NULL;
    struct borrower w[2];
    borrowers_reset();
    for (int i = 0; i < 2; i++)
        borrower_start(&w[i], pool, LONG_WAIT, false, i);
    wait_waiting(pool, 2);
    uint64_t t0 = clock_now_ns();
    ck_assert_int_eq(pool_acquire(pool, LONG_WAIT, &it),
                     POOLD_ERR_WAITERS_FULL);
    ck_assert_uint_lt(clock_now_ns() - t0, 5 * S);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.waiters_rejected, 1);
    ck_assert_uint_eq(st.total_timeouts, 0);
    pool_release(pool, held);
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].tid, NULL);
        ck_assert_int_eq(w[i].rc, POOLD_OK);
    }
}
END_TEST

/* ---- retire, evict ------------------------------------------------------- */

START_TEST(test_retire_all)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    atomic_store(&F.reenter, true);
    struct pool_item *a = take(pool), *b = take(pool), *c = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    pool_retire_all(pool);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_RETIRED]), 2);
    ck_assert_uint_eq(stats(pool).idle, 0);
    pool_release(pool, c);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_RETIRED]), 3);
    a = take(pool);
    ck_assert_int_eq(obj_id(a), 4);
    pool_release(pool, a);
    ck_assert_uint_eq(stats(pool).idle, 1); /* new generation stays */
}
END_TEST

/* The test seam of pool.h: armed by one test, a no-op for the others. */
static atomic_bool hook_armed;

void pool_test_hook(struct pool *pool, enum pool_test_point where)
{
    if (!atomic_load(&hook_armed))
        return;
    if (where == POOL_TEST_IDLE_WAITERS) {
        /* Let the queued waiter time out: the release then finds none. */
        struct waiting_arg none = {pool, 0};
        wait_until(waiting_is, &none, 30000, "the queued waiter's timeout");
    } else if (where == POOL_TEST_IDLE_LOCKED) {
        atomic_store(&hook_armed, false);
        pool_retire_all(pool); /* its scan sees the slot still lent */
    }
}

/* A retire between the locked release path's verdict and its publishing
 * the slot IDLE: the releaser must see the new generation after it
 * publishes, or the old object would sit idle until the next pass. */
START_TEST(test_retire_during_locked_release)
{
    struct pool_config cfg = base_cfg(1);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *held = take(pool);
    struct borrower b;
    borrowers_reset();
    borrower_start(&b, pool, 2 * S, false, 0);
    wait_waiting(pool, 1);
    atomic_store(&hook_armed, true);
    pool_release(pool, held); /* gate closed by b: the locked path */
    ck_assert(!atomic_load(&hook_armed)); /* both points were reached */
    pthread_join(b.tid, NULL);
    ck_assert_int_eq(b.rc, POOLD_ERR_TIMEOUT);
    ck_assert_int_eq(atomic_load(&F.destroyed_by[POOL_DESTROY_RETIRED]), 1);
    struct pool_stats st = stats(pool);
    ck_assert_uint_eq(st.idle, 0);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_RETIRED], 1);
    struct pool_item *fresh = take(pool);
    ck_assert_int_eq(obj_id(fresh), 2);
    pool_release(pool, fresh);
}
END_TEST

START_TEST(test_evict_idle_longest_first)
{
    struct pool_config cfg = base_cfg(4);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *it[3];
    uint64_t since = 0;
    ck_assert(!pool_oldest_idle(pool, &since));
    ck_assert(!pool_evict_idle(pool));
    for (int i = 0; i < 3; i++)
        it[i] = take(pool);
    /* Released at 1 s, 2 s, 3 s: in the order 2, 0, 1. */
    int order[3] = {2, 0, 1};
    for (int i = 0; i < 3; i++) {
        atomic_store(&fake_now_ns, (uint64_t)(i + 1) * S);
        pool_release(pool, it[order[i]]);
    }
    ck_assert(pool_oldest_idle(pool, &since));
    ck_assert_uint_eq(since, 1 * S);
    for (int i = 0; i < 3; i++) {
        ck_assert(pool_evict_idle(pool));
        ck_assert_int_eq(atomic_load(&F.last_destroyed_id), order[i] + 1);
    }
    ck_assert(!pool_evict_idle(pool));
    ck_assert_uint_eq(stats(pool).destroyed_by[POOL_DESTROY_EVICTED], 3);
}
END_TEST

/* ---- stats --------------------------------------------------------------- */

START_TEST(test_stats_sums)
{
    struct pool_config cfg = base_cfg(3);
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool), *c = take(pool), *x;
    ck_assert_int_eq(pool_acquire(pool, 1 * MS, &x), POOLD_ERR_TIMEOUT);
    pool_release_broken(pool, a);
    atomic_store(&F.reset_fails, true);
    pool_release(pool, b);
    atomic_store(&F.reset_fails, false);
    pool_release(pool, c);
    ck_assert(pool_evict_idle(pool));
    a = take(pool);
    struct pool_stats st = stats(pool);
    uint64_t sum = 0, hist = 0;
    for (int r = 0; r < POOL_DESTROY__COUNT; r++)
        sum += st.destroyed_by[r];
    for (int i = 0; i < POOL_WAIT_BUCKETS; i++)
        hist += st.wait_hist[i];
    ck_assert_uint_eq(st.destroyed, sum);
    ck_assert_uint_eq(st.destroyed, 3);
    ck_assert_uint_eq(st.created - st.destroyed, st.idle + st.active);
    ck_assert_uint_eq(st.created, (uint64_t)atomic_load(&F.created));
    ck_assert_uint_eq(st.acquired, 4);
    ck_assert_uint_eq(st.wait_count, 1);
    ck_assert_uint_eq(hist, st.wait_count);
    ck_assert_uint_eq(st.wait_hist[0], 0); /* waited at least 1 ms */
    pool_release(pool, a);
}
END_TEST

START_TEST(test_names_and_buckets)
{
    for (int i = 1; i < POOL_WAIT_BUCKETS; i++)
        ck_assert_uint_gt(pool_wait_bucket_le_ns[i],
                          pool_wait_bucket_le_ns[i - 1]);
    ck_assert_uint_le(pool_wait_bucket_le_ns[0], 100000);
    ck_assert_uint_ge(pool_wait_bucket_le_ns[POOL_WAIT_BUCKETS - 2], 10 * S);
    ck_assert_uint_eq(pool_wait_bucket_le_ns[POOL_WAIT_BUCKETS - 1],
                      UINT64_MAX);
    for (int r = 0; r < POOL_DESTROY__COUNT; r++) {
        const char *name = pool_destroy_reason_str(r);
        ck_assert_ptr_nonnull(name);
        ck_assert_str_ne(name, "unknown");
        for (int q = 0; q < r; q++)
            ck_assert_str_ne(name, pool_destroy_reason_str(q));
    }
    ck_assert_str_eq(pool_destroy_reason_str(POOL_DESTROY_EXPIRED), "expired");
    ck_assert_str_eq(pool_destroy_reason_str(POOL_DESTROY__COUNT), "unknown");
}
END_TEST

/* ---- no allocation once warm --------------------------------------------- */

START_TEST(test_warm_path_does_not_allocate)
{
#if POOL_TEST_COUNT_ALLOCS
    struct pool_config cfg = base_cfg(2);
    cfg.max_lifetime_ns = 1000 * S;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    struct pool_item *a = take(pool), *b = take(pool), *x = NULL;
    pool_release(pool, a);
    pool_release(pool, b);
    void *(*volatile alloc)(size_t) = malloc;
    tl_allocs = 0;
    tl_counting = true;
    free(alloc(16)); /* the counter works */
    long probe = tl_allocs;
    /* No ck_assert inside: Check's bookkeeping allocates. */
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        bad += pool_acquire(pool, LONG_WAIT, &a) != POOLD_OK;
        pool_release(pool, a);
    }
    bad += pool_acquire(pool, LONG_WAIT, &a) != POOLD_OK;
    bad += pool_acquire(pool, LONG_WAIT, &b) != POOLD_OK;
    int rc = pool_acquire(pool, 0, &x); /* the waiting path too */
    tl_counting = false;
    long allocs = tl_allocs;
    pool_release(pool, a);
    pool_release(pool, b);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(rc, POOLD_ERR_TIMEOUT);
    /* Under valgrind the tool's malloc replaces ours: nothing to count. */
    if (probe == 1)
        ck_assert_int_eq(allocs, 1);
#endif
}
END_TEST

/* ---- stress -------------------------------------------------------------- */

#define STRESS_THREADS 8
#define STRESS_CAPACITY 8

struct stresser {
    pthread_t tid;
    struct pool *pool;
    unsigned seed;
    int iterations;
    int failures; /* invariant violations seen */
};

static unsigned stress_rand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

/* Invariants that hold at any moment, even mid-flight. */
static bool stress_check(struct pool *pool)
{
    struct pool_stats st = stats(pool);
    uint64_t sum = 0;
    for (int r = 0; r < POOL_DESTROY__COUNT; r++)
        sum += st.destroyed_by[r];
    return st.destroyed == sum && st.created >= st.destroyed &&
           st.idle + st.active <= st.created - st.destroyed &&
           st.active <= STRESS_CAPACITY && st.peak_active <= STRESS_CAPACITY;
}

static void stress_step(struct stresser *t, struct pool_item **held, int *nheld)
{
    unsigned r = stress_rand(&t->seed) % 100;
    if (r < 45 && *nheld < 2) {
        struct pool_item *it;
        int rc = pool_acquire(t->pool, 5 * MS, &it);
        if (rc == POOLD_OK)
            held[(*nheld)++] = it;
        else if (rc != POOLD_ERR_TIMEOUT && rc != POOLD_ERR_DB) {
            fprintf(stderr, "stress: acquire: %s\n", poold_status_str(rc));
            t->failures++;
        }
    } else if (r < 90 && *nheld > 0) {
        struct pool_item *it = held[--(*nheld)];
        if (r % 10 == 0)
            pool_release_broken(t->pool, it);
        else
            pool_release(t->pool, it);
    } else if (r < 93) {
        if (pool_resize(t->pool, 1 + stress_rand(&t->seed) % 8) != POOLD_OK)
            t->failures++;
    } else if (r < 94) {
        pool_retire_all(t->pool);
    } else if (r < 95) {
        (void)pool_evict_idle(t->pool);
    } else if (r < 97) {
        atomic_fetch_add(&fake_now_ns, 50 * MS);
        pool_maintain(t->pool, fake_clock(NULL));
    } else if (!stress_check(t->pool)) {
        fprintf(stderr, "stress: invariant broken\n");
        t->failures++;
    }
}

static void *stress_main(void *arg)
{
    struct stresser *t = arg;
    struct pool_item *held[2];
    int nheld = 0;
    for (int i = 0; i < t->iterations; i++)
        stress_step(t, held, &nheld);
    while (nheld > 0)
        pool_release(t->pool, held[--nheld]);
    return NULL;
}

START_TEST(test_stress_invariants)
{
    struct pool_config cfg = base_cfg(4);
    cfg.capacity = STRESS_CAPACITY;
    cfg.min_idle = 1;
    cfg.max_lifetime_ns = 2 * S;
    cfg.lifetime_jitter_ns = 1 * S;
    cfg.idle_timeout_ns = 500 * MS;
    struct pool *pool = make_pool(&cfg, &fake_ops);
    atomic_store(&F.invalid_mod, 7); /* some objects fail validation */
    struct stresser t[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        t[i] = (struct stresser){
            .pool = pool, .seed = 7u * (unsigned)i + 1, .iterations = 3000};
        ck_assert_int_eq(pthread_create(&t[i].tid, NULL, stress_main, &t[i]),
                         0);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(t[i].tid, NULL);
        ck_assert_int_eq(t[i].failures, 0);
    }
    struct pool_stats st = stats(pool);
    ck_assert(stress_check(pool));
    ck_assert_uint_eq(st.active, 0);
    ck_assert_uint_eq(st.waiting, 0);
    ck_assert_uint_eq(st.created - st.destroyed, st.idle);
    ck_assert_uint_le(st.idle, STRESS_CAPACITY);
    ck_assert_uint_le(st.idle, st.max_size);
    ck_assert_uint_eq(st.created, (uint64_t)atomic_load(&F.created));
    ck_assert_uint_eq(st.destroyed, (uint64_t)atomic_load(&F.destroyed));
    /* And the pool still works after all that. */
    ck_assert_int_eq(pool_resize(pool, 2), POOLD_OK);
    struct pool_item *a = take(pool), *b = take(pool);
    pool_release(pool, a);
    pool_release(pool, b);
    ck_assert_uint_le(stats(pool).idle, 2);
}
END_TEST

/* ---- runner -------------------------------------------------------------- */

static TCase *pool_tcase(const char *name, int timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, fake_setup, fake_teardown);
    tcase_set_timeout(tc, timeout_s);
    return tc;
}

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = pool_tcase("core", 20);
    tcase_add_test(tc, test_create_rejects_bad_config);
    tcase_add_test(tc, test_lazy_create_and_reuse);
    tcase_add_test(tc, test_timeout_counted_with_frozen_fake_clock);
    tcase_add_test(tc, test_try_acquire_never_waits_nor_counts);
    tcase_add_test(tc, test_peak_active);
    tcase_add_test(tc, test_release_hands_object_to_waiter);
    tcase_add_test(tc, test_release_broken_destroys);
    tcase_add_test(tc, test_hold_keeps_the_place_until_unhold);
    tcase_add_test(tc, test_hold_beyond_size_closes_a_released_object);
    tcase_add_test(tc, test_resize_bounds);
    tcase_add_test(tc, test_resize_grow_then_shrink_under_load);
    tcase_add_test(tc, test_shrink_destroys_idle_now);
    tcase_add_test(tc, test_shutdown_wakes_waiters);
    tcase_add_test(tc, test_shutdown_destroys_idle_and_later_releases);
    tcase_add_test(tc, test_create_error_is_returned);
    tcase_add_test(tc, test_failed_create_wakes_waiter);
    tcase_add_test(tc, test_create_runs_without_lock);
    tcase_add_test(tc, test_lifetime_jitter_spreads_expiry);
    tcase_add_test(tc, test_lifetime_enforced_on_acquire_and_release);
    tcase_add_test(tc, test_object_expiry_before_lifetime);
    tcase_add_test(tc, test_idle_timeout_via_maintain);
    tcase_add_test(tc, test_idle_timeout_keeps_min_idle);
    tcase_add_test(tc, test_min_idle_prewarm_via_maintain);
    tcase_add_test(tc, test_validate_only_after_idle_gap);
    tcase_add_test(tc, test_failed_validate_destroys_and_goes_on);
    tcase_add_test(tc, test_failed_reset_destroys);
    tcase_add_test(tc, test_waiters_served_fifo);
    tcase_add_test(tc, test_waiter_bound_fails_at_once);
    tcase_add_test(tc, test_retire_all);
    tcase_add_test(tc, test_retire_during_locked_release);
    tcase_add_test(tc, test_evict_idle_longest_first);
    tcase_add_test(tc, test_stats_sums);
    tcase_add_test(tc, test_names_and_buckets);
    tcase_add_test(tc, test_warm_path_does_not_allocate);
    suite_add_tcase(s, tc);
    TCase *stress = pool_tcase("stress", 120);
    tcase_add_test(stress, test_stress_invariants);
    suite_add_tcase(s, stress);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
