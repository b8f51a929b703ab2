/* check_breaker.c — unit tests of the circuit breaker, with a fake "now". */
#include <check.h>
#include <stdlib.h>

#include "breaker.h"

#define MIN_NS BREAKER_BACKOFF_MIN_NS
#define MAX_NS BREAKER_BACKOFF_MAX_NS
#define T0 (1000 * NS_PER_S) /* an arbitrary "now" to start from */

START_TEST(test_closed_allows_everything)
{
    struct breaker b;
    breaker_init(&b, 1);
    for (uint64_t t = T0; t < T0 + 10 * NS_PER_S; t += NS_PER_S / 3)
        ck_assert(breaker_allow(&b, t));
    breaker_success(&b);
    ck_assert(breaker_allow(&b, T0));
    ck_assert_uint_eq(b.backoff_ns, 0);
    breaker_deinit(&b);
}
END_TEST

START_TEST(test_failure_opens_for_a_jittered_window)
{
    struct breaker b;
    breaker_init(&b, 7);
    breaker_failure(&b, T0);
    uint64_t w = b.backoff_ns;
    ck_assert_uint_ge(w, MIN_NS / 2);
    ck_assert_uint_le(w, MIN_NS);
    ck_assert(!breaker_allow(&b, T0));
    ck_assert(!breaker_allow(&b, T0 + w - 1));
    breaker_deinit(&b);
}
END_TEST

/* After the window one probe goes; others fail until it reports. */
START_TEST(test_half_open_allows_one_attempt)
{
    struct breaker b;
    breaker_init(&b, 7);
    breaker_failure(&b, T0);
    uint64_t t = T0 + b.backoff_ns;
    ck_assert(breaker_allow(&b, t));  /* the probe */
    ck_assert(!breaker_allow(&b, t)); /* everyone else meanwhile */
    ck_assert(!breaker_allow(&b, t + 1));
    breaker_failure(&b, t + 1); /* the probe failed: longer */
    ck_assert(!breaker_allow(&b, t + 1 + MIN_NS / 2 - 1));
    breaker_deinit(&b);
}
END_TEST

START_TEST(test_success_closes)
{
    struct breaker b;
    breaker_init(&b, 3);
    uint64_t t = T0;
    for (int i = 0; i < 10; i++)
        breaker_failure(&b, t);
    ck_assert_uint_gt(b.backoff_ns, MIN_NS);
    ck_assert(!breaker_allow(&b, t));
    breaker_success(&b);
    ck_assert(breaker_allow(&b, t));
    ck_assert(breaker_allow(&b, t)); /* closed: no probe limit */
    /* The next failure starts again from the smallest window. */
    breaker_failure(&b, t);
    ck_assert_uint_le(b.backoff_ns, MIN_NS);
    breaker_deinit(&b);
}
END_TEST

/* Each window is in [next/2, next], next = min(2 * previous, MAX) (MIN
 * after a success), so it doubles until it stays in [MAX/2, MAX]. */
START_TEST(test_backoff_doubles_to_the_max)
{
    struct breaker b;
    breaker_init(&b, 11);
    uint64_t prev = 0, t = T0;
    for (int i = 0; i < 30; i++) {
        breaker_failure(&b, t);
        uint64_t next = prev == 0 ? MIN_NS : prev * 2;
        if (next > MAX_NS)
            next = MAX_NS;
        ck_assert_uint_ge(b.backoff_ns, next / 2);
        ck_assert_uint_le(b.backoff_ns, next);
        ck_assert(!breaker_allow(&b, t + b.backoff_ns - 1));
        t += b.backoff_ns;
        ck_assert(breaker_allow(&b, t)); /* the probe, which fails again */
        prev = b.backoff_ns;
    }
    ck_assert_uint_ge(prev, MAX_NS / 2);
    ck_assert_uint_le(prev, MAX_NS);
    breaker_deinit(&b);
}
END_TEST

/* Full jitter: within bounds for every seed, and spread, not one value. */
START_TEST(test_jitter_within_bounds_and_spread)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (unsigned seed = 1; seed <= 2000; seed++) {
        unsigned s = seed;
        uint64_t first = breaker_next_backoff(0, &s);
        ck_assert_uint_ge(first, MIN_NS / 2);
        ck_assert_uint_le(first, MIN_NS);
        uint64_t capped = breaker_next_backoff(MAX_NS, &s);
        ck_assert_uint_ge(capped, MAX_NS / 2);
        ck_assert_uint_le(capped, MAX_NS);
        lo = first < lo ? first : lo;
        hi = first > hi ? first : hi;
    }
    /* 2000 draws cover most of the [MIN/2, MIN] range. */
    ck_assert_uint_lt(lo, MIN_NS / 2 + MIN_NS / 10);
    ck_assert_uint_gt(hi, MIN_NS - MIN_NS / 10);
}
END_TEST

/* The seed alone decides the jitter: two breakers seeded alike agree. */
START_TEST(test_same_seed_same_windows)
{
    struct breaker a, b;
    breaker_init(&a, 42);
    breaker_init(&b, 42);
    for (int i = 0; i < 10; i++) {
        breaker_failure(&a, T0);
        breaker_failure(&b, T0);
        ck_assert_uint_eq(a.backoff_ns, b.backoff_ns);
    }
    breaker_deinit(&a);
    breaker_deinit(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("breaker");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_closed_allows_everything);
    tcase_add_test(tc, test_failure_opens_for_a_jittered_window);
    tcase_add_test(tc, test_half_open_allows_one_attempt);
    tcase_add_test(tc, test_success_closes);
    tcase_add_test(tc, test_backoff_doubles_to_the_max);
    tcase_add_test(tc, test_jitter_within_bounds_and_spread);
    tcase_add_test(tc, test_same_seed_same_windows);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
