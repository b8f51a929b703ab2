/* check_housekeeping.c — housekeeping ticks driven by hand with a fake clock
 * (no database: the one configured cannot be reached, at once). */
#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "housekeeping.h"
#include "housekeeping_test.h"
#include "registry.h"
#include "registry_internal.h"

#define WARN_NS (50 * NS_PER_MS) /* POOLD_HOLD_WARN_MS=50 */
#define T0 (1000 * NS_PER_S)     /* the fake clock's start */

static const char *const steps[] = {
    "connect",         "refresh",      "apply_pending",  "preload_rules",
    "watch",           "sync_sizes",   "health",         "breakers",
    "closed_backends", "replica_hook", "maintain_pools", "check_holds",
    "maintain_conns",  "reclaim",      "free_gone",      "prewarm",
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static struct registry *reg;
static uint64_t fake_now;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* One tick with the fake clock at now. */
static void tick(uint64_t now, struct hk_step_report *out, size_t max)
{
    fake_now = now;
    ck_assert_uint_eq(housekeeping_tick(reg->hk, fake_clock, NULL, out, max),
                      NSTEPS);
}
static int watch_calls, hook_calls, hook_conns;

static int fake_watch(void *arg, struct db_conn *conn, char *err, size_t errlen)
{
    (void)arg;
    (void)conn;
    (void)err;
    (void)errlen;
    watch_calls++;
    return POOLD_OK;
}

static void fake_hook(void *arg, struct db_conn *conn, bool stopping)
{
    (void)arg;
    if (stopping)
        return;
    hook_calls++;
    hook_conns += conn != NULL;
}

static void setup(void)
{
    struct registry_config cfg = {
        /* A socket directory that does not exist: connecting fails at
         * once, with no network wait. */
        .db = {.url = "postgresql:///pools?host=/nonexistent/poold-check",
               .connect_timeout_s = 1},
        .pooled = true,
        .default_size = 2,
        .ceiling = 8,
        .max_waiters = 4,
        .acquire_timeout_ns = 100 * NS_PER_MS,
        .db_max_conns = 2,
        .conn_ttl_ns = 60 * NS_PER_S,
        .conn_check_idle_ns = NS_PER_S,
        .prewarm = "hk_nosuch",
        .hold_warn_ns = WARN_NS,
        .watch = fake_watch,
    };

    watch_calls = hook_calls = hook_conns = 0;
    ck_assert_int_eq(registry_create(&cfg, &reg), POOLD_OK);
    registry_set_hk_hook(reg, fake_hook, NULL);
}

static void teardown(void)
{
    registry_destroy(reg);
    reg = NULL;
}

/* A directory as a load would bring it (the refresh step's effect). */
static void load(const char *org_id, int size)
{
    struct org_info o = {.enabled = true, .pool_max_size = size, .version = 1};

    snprintf(o.org_id, sizeof o.org_id, "%s", org_id);
    registry_apply_directory(reg, &o, 1);
    registry_mark_loaded(reg);
}

static enum hk_outcome outcome(const struct hk_step_report *r, const char *name)
{
    for (size_t i = 0; i < NSTEPS; i++)
        if (strcmp(r[i].name, name) == 0)
            return r[i].outcome;
    ck_abort_msg("no step %s", name);
    return HK_FAILED;
}

START_TEST(steps_are_named_and_run_in_order)
{
    struct hk_step_report r[NSTEPS + 4];

    tick(T0, r, NSTEPS + 4);
    for (size_t i = 0; i < NSTEPS; i++) {
        ck_assert_str_eq(r[i].name, steps[i]);
        ck_assert_str_eq(housekeeping_step_name(i), steps[i]);
    }
    ck_assert_ptr_null(housekeeping_step_name(NSTEPS));
}
END_TEST

START_TEST(database_steps_skip_when_it_is_down)
{
    struct hk_step_report r[NSTEPS];

    tick(T0, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "connect"), HK_FAILED);
    ck_assert_int_eq(outcome(r, "refresh"), HK_SKIPPED);
    ck_assert_int_eq(outcome(r, "watch"), HK_SKIPPED);
    ck_assert_int_eq(watch_calls, 0);
    ck_assert_int_eq(outcome(r, "health"), HK_FAILED);
    ck_assert_int_eq(outcome(r, "breakers"), HK_SKIPPED);
    /* The steps that need no database still run, the hook without one. */
    ck_assert_int_eq(outcome(r, "sync_sizes"), HK_RAN);
    ck_assert_int_eq(outcome(r, "replica_hook"), HK_RAN);
    ck_assert_int_eq(hook_calls, 1);
    ck_assert_int_eq(hook_conns, 0);
    ck_assert_int_eq(outcome(r, "maintain_pools"), HK_RAN);
    ck_assert_int_eq(outcome(r, "check_holds"), HK_RAN);
    ck_assert(!registry_is_ready(reg));
}
END_TEST

START_TEST(prewarm_waits_for_the_directory_then_runs_once)
{
    struct hk_step_report r[NSTEPS];

    tick(T0, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "prewarm"), HK_SKIPPED);
    tick(T0 + NS_PER_S, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "prewarm"), HK_SKIPPED);
    load("hk_a", 0);
    tick(T0 + 2 * NS_PER_S, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "prewarm"), HK_RAN);
    tick(T0 + 3 * NS_PER_S, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "prewarm"), HK_SKIPPED);
}
END_TEST

START_TEST(a_hold_is_flagged_once_past_the_warning)
{
    struct org_active *a;
    struct holder h;
    struct pool_stats st;
    struct registry_config cfg = reg->cfg;

    /* Pooled, a hold is of a lent service and only orgs with services
     * are checked; with no database to build one, the hold is made in
     * mode none, where every routed org is checked. */
    registry_destroy(reg);
    cfg.pooled = false;
    cfg.prewarm = "hk_nosuch";
    ck_assert_int_eq(registry_create(&cfg, &reg), POOLD_OK);
    load("hk_a", 0);
    ck_assert_int_eq(registry_route(reg, "hk_a", &a), POOLD_OK);
    holders_add(org_entry_holders(a->entry), &h, "req-1", "POST /process", T0);

    tick(T0 + WARN_NS - 1, NULL, 0);
    ck_assert_int_eq(registry_pool_stats(reg, "hk_a", &st), POOLD_OK);
    ck_assert_uint_eq(st.held_too_long, 0);
    tick(T0 + WARN_NS + 1, NULL, 0);
    ck_assert_int_eq(registry_pool_stats(reg, "hk_a", &st), POOLD_OK);
    ck_assert_uint_eq(st.held_too_long, 1);
    tick(T0 + 10 * WARN_NS, NULL, 0);
    ck_assert_int_eq(registry_pool_stats(reg, "hk_a", &st), POOLD_OK);
    ck_assert_uint_eq(st.held_too_long, 1);
    /* Flagged by housekeeping: its end is not counted again. */
    ck_assert(!holders_remove(org_entry_holders(a->entry), &h,
                              T0 + 11 * WARN_NS, WARN_NS));
    ck_assert_uint_eq(holders_held_too_long(org_entry_holders(a->entry)), 1);
    registry_active_release(a);
}
END_TEST

START_TEST(sync_sizes_follows_the_stored_size_without_database)
{
    struct org_active *a;
    struct pool_stats st;

    load("hk_a", 3);
    ck_assert_int_eq(registry_route(reg, "hk_a", &a), POOLD_OK);
    ck_assert_uint_eq(pool_max_size(a->pool), 3);
    load("hk_a", 5); /* a reload whose apply step did not run */
    ck_assert_uint_eq(pool_max_size(a->pool), 3);
    registry_active_release(a);
    tick(T0, NULL, 0);
    ck_assert_int_eq(registry_pool_stats(reg, "hk_a", &st), POOLD_OK);
    ck_assert_uint_eq(st.max_size, 5);
}
END_TEST

/* ---------------------------------------------- a deleted org's pool */

static void count_pool(void *arg, const char *org_id,
                       const struct pool_stats *st)
{
    (void)org_id;
    (void)st;
    (*(unsigned *)arg)++;
}

static unsigned pools(void)
{
    unsigned n = 0;

    registry_foreach_pool(reg, count_pool, &n);
    return n;
}

/* The changes feed's row of a deleted org. */
static void gone(const char *org_id)
{
    struct org_info o = {.present = false};

    snprintf(o.org_id, sizeof o.org_id, "%s", org_id);
    registry_apply_changes(reg, &o, 1);
}

/* Freed by the tick after its last reference went, not before; an id
 * created again gets a fresh one; a request admitted before the delete
 * makes none. */
START_TEST(a_deleted_orgs_pool_is_freed_once_nobody_holds_it)
{
    struct registry_admission adm = {0};
    struct org_active *a, *again;
    struct hk_step_report r[NSTEPS];
    struct service_result res;
    struct message m = {.id = "m1", .id_len = 2, .payload = "ab"};
    char err[256];

    load("hk_a", 0);
    ck_assert_int_eq(registry_route(reg, "hk_a", &a), POOLD_OK);
    ck_assert_int_eq(registry_admit(reg, "hk_a", &adm, err, sizeof err),
                     POOLD_OK);
    ck_assert_ptr_eq(adm.act, a);
    gone("hk_a");
    tick(T0, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "free_gone"), HK_SKIPPED);
    ck_assert_uint_eq(pools(), 1);
    registry_active_release(a);
    tick(T0 + NS_PER_S, r, NSTEPS); /* the admission still holds it */
    ck_assert_int_eq(outcome(r, "free_gone"), HK_SKIPPED);
    ck_assert_ptr_eq(atomic_load(&adm.org->act), a);
    registry_admission_release(&adm);
    tick(T0 + 2 * NS_PER_S, r, NSTEPS);
    ck_assert_int_eq(outcome(r, "free_gone"), HK_RAN);
    ck_assert_uint_eq(pools(), 0);
    ck_assert_uint_eq(registry_pools_freed(reg), 1);

    load("hk_a", 0); /* created again */
    ck_assert_int_eq(registry_route(reg, "hk_a", &again), POOLD_OK);
    ck_assert_ptr_nonnull(again->pool);
    ck_assert_uint_eq(pools(), 1);
    registry_active_release(again);

    /* Admitted, never routed, deleted before it is processed: no pool is
     * made for it. */
    ck_assert_int_eq(registry_admit(reg, "hk_a", &adm, err, sizeof err),
                     POOLD_OK);
    ck_assert_ptr_nonnull(adm.act);
    registry_admission_release(&adm);
    load("hk_b", 0); /* a whole load: hk_a is gone */
    tick(T0 + 3 * NS_PER_S, r, NSTEPS);
    ck_assert_uint_eq(pools(), 0);
    ck_assert_uint_eq(registry_pools_freed(reg), 2);
    ck_assert_int_eq(registry_admit(reg, "hk_b", &adm, err, sizeof err),
                     POOLD_OK);
    ck_assert_ptr_null(adm.act);
    gone("hk_b");
    ck_assert_int_eq(registry_process(reg, &adm, &m, &res, err, sizeof err),
                     POOLD_ERR_UNKNOWN_ORG);
    registry_admission_release(&adm);
    ck_assert_uint_eq(pools(), 0);
}
END_TEST

/* ---------------------------------------------- the admin token */

static struct hk_step_report tick_report[NSTEPS];

/* While an admin call or a resize runs (it has the admin token, and its
 * statements may wait on a lock for long), a tick runs all the same: the
 * watch and the replica heartbeat never wait behind it (issue 18). */
START_TEST(a_tick_never_waits_for_an_admin_call)
{
    ck_assert(housekeeping_admin_take(reg->hk, clock_now_ns()));
    fake_now = T0;
    housekeeping_tick(reg->hk, fake_clock, NULL, tick_report, NSTEPS);
    ck_assert_int_eq(outcome(tick_report, "connect"), HK_FAILED);
    ck_assert_int_eq(hook_calls, 1); /* the heartbeat ran */
    /* A second admin call waits for the token, within its deadline. */
    ck_assert(!housekeeping_admin_take(reg->hk, clock_now_ns() + NS_PER_MS));
    housekeeping_admin_give(reg->hk);
    ck_assert(housekeeping_admin_take(reg->hk, clock_now_ns()));
    housekeeping_admin_give(reg->hk);
}
END_TEST

static Suite *housekeeping_suite(void)
{
    Suite *s = suite_create("housekeeping");
    TCase *tc = tcase_create("housekeeping");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, steps_are_named_and_run_in_order);
    tcase_add_test(tc, database_steps_skip_when_it_is_down);
    tcase_add_test(tc, prewarm_waits_for_the_directory_then_runs_once);
    tcase_add_test(tc, a_hold_is_flagged_once_past_the_warning);
    tcase_add_test(tc, sync_sizes_follows_the_stored_size_without_database);
    tcase_add_test(tc, a_tick_never_waits_for_an_admin_call);
    tcase_add_test(tc, a_deleted_orgs_pool_is_freed_once_nobody_holds_it);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(housekeeping_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
