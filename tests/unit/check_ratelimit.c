/* check_ratelimit.c — ratelimit.c: the token bucket and the org table, on a
 * fake clock. */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "clock.h"
#include "ratelimit.h"

#define T0 ((uint64_t)1000 * NS_PER_S)

START_TEST(bucket_allows_burst_then_refills_at_rps)
{
    struct ratelimit_bucket b;
    uint64_t retry;

    ratelimit_bucket_init(&b, 2.0, 3, T0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0, &retry),
                         RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0, &retry), RATELIMIT_WAIT);
    ck_assert_uint_eq(retry, NS_PER_S / 2); /* 2 per second */
    /* Half a second later one token is back, not two. */
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0 + NS_PER_S / 2, &retry),
                     RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0 + NS_PER_S / 2, &retry),
                     RATELIMIT_WAIT);
    /* Long idle: never more than the burst. */
    ck_assert_int_eq(ratelimit_bucket_take(&b, 3, T0 + 100 * NS_PER_S, &retry),
                     RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0 + 100 * NS_PER_S, &retry),
                     RATELIMIT_WAIT);
}
END_TEST

START_TEST(batch_larger_than_burst_never_passes)
{
    struct ratelimit_bucket b;
    uint64_t retry;

    ratelimit_bucket_init(&b, 1000.0, 10, T0);
    ck_assert_int_eq(
        ratelimit_bucket_take(&b, 11, T0 + 3600 * NS_PER_S, &retry),
        RATELIMIT_NEVER);
    ck_assert_uint_eq(retry, UINT64_MAX);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 10, T0, &retry), RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 5, T0, &retry), RATELIMIT_WAIT);
    ck_assert_uint_eq(retry, 5 * NS_PER_S / 1000);
}
END_TEST

START_TEST(clock_going_back_gives_nothing)
{
    struct ratelimit_bucket b;
    uint64_t retry;

    ratelimit_bucket_init(&b, 1.0, 1, T0);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0, &retry), RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_bucket_take(&b, 1, T0 - NS_PER_S, &retry),
                     RATELIMIT_WAIT);
}
END_TEST

START_TEST(ranges)
{
    ck_assert(ratelimit_valid(0.001, 1));
    ck_assert(ratelimit_valid(1e6, 1000000));
    ck_assert(!ratelimit_valid(0, 1));
    ck_assert(!ratelimit_valid(-1, 1));
    ck_assert(!ratelimit_valid(1e6 + 1, 1));
    ck_assert(!ratelimit_valid(1, 0));
    ck_assert(!ratelimit_valid(1, 1000001));
    ck_assert(!ratelimit_valid(1.0 / 0.0, 1));
}
END_TEST

START_TEST(table_limits_one_org_not_its_neighbour)
{
    struct ratelimit_table *t;
    struct ratelimit_setting s[1] = {{"org_a", 1.0, 2}};
    uint64_t retry;

    ck_assert_int_eq(ratelimit_table_create(&t), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_sync(t, s, 1, T0), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                     RATELIMIT_PASS);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                     RATELIMIT_PASS);
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(ratelimit_table_take(t, "org_b", 1, T0, &retry),
                         RATELIMIT_PASS);
    }
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                     RATELIMIT_WAIT);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 3, T0, &retry),
                     RATELIMIT_NEVER);
    ck_assert_uint_eq(ratelimit_table_refused(t, "org_a"), 2);
    ck_assert_uint_eq(ratelimit_table_refused(t, "org_b"), 0);
    ratelimit_table_destroy(t);
}
END_TEST

START_TEST(table_sync_changes_and_removes_limits)
{
    struct ratelimit_table *t;
    struct ratelimit_setting a = {"org_a", 1.0, 5};
    uint64_t retry;

    ck_assert_int_eq(ratelimit_table_create(&t), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_sync(t, &a, 1, T0), POOLD_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                         RATELIMIT_PASS);
    /* The same limit again (every poll): the bucket stays spent. */
    ck_assert_int_eq(ratelimit_table_sync(t, &a, 1, T0), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                     RATELIMIT_WAIT);
    /* A larger burst does not refill what was spent. */
    a.burst = 50;
    ck_assert_int_eq(ratelimit_table_sync(t, &a, 1, T0), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 1, T0, &retry),
                     RATELIMIT_WAIT);
    /* Limit removed: passes; the refusal count stays. */
    ck_assert_int_eq(ratelimit_table_sync(t, NULL, 0, T0), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 100, T0, &retry),
                     RATELIMIT_PASS);
    ck_assert_uint_eq(ratelimit_table_refused(t, "org_a"), 2);
    /* Back again: a fresh, full bucket. */
    a.burst = 2;
    ck_assert_int_eq(ratelimit_table_sync(t, &a, 1, T0), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_take(t, "org_a", 2, T0, &retry),
                     RATELIMIT_PASS);
    ratelimit_table_destroy(t);
    ratelimit_table_destroy(NULL);
}
END_TEST

/* The verdict on n messages of org at T0. */
static enum ratelimit_verdict take_at_t0(struct ratelimit_table *t,
                                         const char *org, unsigned n)
{
    uint64_t retry;

    return ratelimit_table_take(t, org, n, T0, &retry);
}

/* An update touches only the orgs it lists: a new limit, a removed one
 * (rps 0), and an unlisted org's limit kept, spent bucket and all. */
START_TEST(table_update_touches_only_the_listed_orgs)
{
    struct ratelimit_table *t;
    struct ratelimit_setting s[2] = {{"org_a", 1.0, 1}, {"org_b", 1.0, 1}};
    struct ratelimit_setting none = {"org_c", 0, 0};

    ck_assert_int_eq(ratelimit_table_create(&t), POOLD_OK);
    ck_assert_int_eq(ratelimit_table_update(t, s, 2, T0), POOLD_OK);
    ck_assert(take_at_t0(t, "org_a", 1) == RATELIMIT_PASS &&
              take_at_t0(t, "org_b", 1) == RATELIMIT_PASS);
    s[1].rps = 0; /* org_b's limit removed; org_a not listed */
    ck_assert_int_eq(ratelimit_table_update(t, &s[1], 1, T0), POOLD_OK);
    ck_assert_int_eq(take_at_t0(t, "org_a", 1), RATELIMIT_WAIT);
    ck_assert_int_eq(take_at_t0(t, "org_b", 50), RATELIMIT_PASS);
    /* An org never limited and listed without one gets no entry. */
    ck_assert_int_eq(ratelimit_table_update(t, &none, 1, T0), POOLD_OK);
    ck_assert_uint_eq(ratelimit_table_refused(t, "org_c"), 0);
    ratelimit_table_destroy(t);
}
END_TEST

static Suite *ratelimit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, bucket_allows_burst_then_refills_at_rps);
    tcase_add_test(tc, batch_larger_than_burst_never_passes);
    tcase_add_test(tc, clock_going_back_gives_nothing);
    tcase_add_test(tc, ranges);
    tcase_add_test(tc, table_limits_one_org_not_its_neighbour);
    tcase_add_test(tc, table_sync_changes_and_removes_limits);
    tcase_add_test(tc, table_update_touches_only_the_listed_orgs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ratelimit_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
