/* check_holders.c — unit tests of the holder list (no I/O, fake time). */
#include <check.h>
#include <pthread.h>
#include <string.h>

#include "clock.h"
#include "holders.h"

static struct holders hs;

static void setup(void)
{
    holders_init(&hs);
}

static void teardown(void)
{
    holders_deinit(&hs);
}

START_TEST(add_list_remove)
{
    struct holder a, b;
    struct holder_info out[4];

    ck_assert_uint_eq(holders_list(&hs, out, 4, 0), 0);
    holders_add(&hs, &a, "req-a", "POST /process", 1000);
    holders_add(&hs, &b, "req-b", "POST /process/batch", 5000);
    ck_assert_uint_eq(holders_list(&hs, out, 4, 9000), 2);
    /* newest first; held time from each hold's start */
    ck_assert_str_eq(out[0].request_id, "req-b");
    ck_assert_str_eq(out[0].route, "POST /process/batch");
    ck_assert_uint_eq(out[0].held_ns, 4000);
    ck_assert_str_eq(out[1].request_id, "req-a");
    ck_assert_uint_eq(out[1].held_ns, 8000);
    /* a short array gets what fits and the true count */
    ck_assert_uint_eq(holders_list(&hs, out, 1, 9000), 2);
    ck_assert(!holders_remove(&hs, &a, 9000, 0));
    ck_assert_uint_eq(holders_list(&hs, out, 4, 9000), 1);
    ck_assert_str_eq(out[0].request_id, "req-b");
    ck_assert(!holders_remove(&hs, &b, 9000, 0));
    ck_assert_uint_eq(holders_list(&hs, out, 4, 9000), 0);
    ck_assert_uint_eq(holders_held_too_long(&hs), 0);
}
END_TEST

START_TEST(long_ids_are_truncated_and_null_is_empty)
{
    char id[HOLDER_ID_MAX + 50];
    struct holder h;
    struct holder_info out[1];

    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    holders_add(&hs, &h, id, NULL, 0);
    ck_assert_uint_eq(holders_list(&hs, out, 1, 0), 1);
    ck_assert_uint_eq(strlen(out[0].request_id), HOLDER_ID_MAX);
    ck_assert_str_eq(out[0].route, "");
    ck_assert(!holders_remove(&hs, &h, 0, 0));
}
END_TEST

START_TEST(held_too_long_is_counted_once)
{
    const uint64_t warn = 100 * NS_PER_MS;
    struct holder a, b, c;
    struct holder_info out[4];

    holders_add(&hs, &a, "a", "r", 0);
    holders_add(&hs, &b, "b", "r", 50 * NS_PER_MS);
    holders_add(&hs, &c, "c", "r", 0);
    /* at 120 ms: a and c are over, b is not */
    ck_assert_uint_eq(holders_check(&hs, 120 * NS_PER_MS, warn, out, 4), 2);
    ck_assert_uint_eq(holders_held_too_long(&hs), 2);
    /* the same holds are not flagged again */
    ck_assert_uint_eq(holders_check(&hs, 130 * NS_PER_MS, warn, out, 4), 0);
    /* a flagged hold's release does not count it twice */
    ck_assert(!holders_remove(&hs, &a, 200 * NS_PER_MS, warn));
    /* an unflagged one over the limit is counted at release */
    ck_assert(holders_remove(&hs, &b, 200 * NS_PER_MS, warn));
    ck_assert_uint_eq(holders_held_too_long(&hs), 3);
    /* off: nothing is flagged */
    ck_assert_uint_eq(holders_check(&hs, UINT64_C(1) << 40, 0, out, 4), 0);
    ck_assert(!holders_remove(&hs, &c, 300 * NS_PER_MS, warn));
    ck_assert_uint_eq(holders_held_too_long(&hs), 3);
}
END_TEST

START_TEST(check_flags_at_most_max_each_call)
{
    struct holder h[5];
    struct holder_info out[2];

    for (int i = 0; i < 5; i++)
        holders_add(&hs, &h[i], "x", "r", 0);
    /* Those past max wait for the next call, so each is copied (logged)
     * once: 2, 2, then 1. */
    ck_assert_uint_eq(holders_check(&hs, NS_PER_S, 1, out, 2), 2);
    ck_assert_uint_eq(holders_held_too_long(&hs), 2);
    ck_assert_uint_eq(holders_check(&hs, NS_PER_S, 1, out, 2), 2);
    ck_assert_uint_eq(holders_check(&hs, NS_PER_S, 1, out, 2), 1);
    ck_assert_uint_eq(holders_check(&hs, NS_PER_S, 1, out, 2), 0);
    ck_assert_uint_eq(holders_held_too_long(&hs), 5);
    for (int i = 0; i < 5; i++)
        ck_assert(!holders_remove(&hs, &h[i], NS_PER_S, 1));
}
END_TEST

/* Threads add and remove while another lists: no lost or torn entries. */
static void *churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        struct holder h;
        holders_add(&hs, &h, "req", "POST /process", (uint64_t)i);
        (void)holders_remove(&hs, &h, (uint64_t)i, 0);
    }
    return NULL;
}

START_TEST(concurrent_churn)
{
    pthread_t t[4];
    struct holder_info out[8];

    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, NULL), 0);
    for (int i = 0; i < 2000; i++) {
        size_t n = holders_list(&hs, out, 8, 0);
        ck_assert_uint_le(n, 4);
        for (size_t j = 0; j < n && j < 8; j++)
            ck_assert_str_eq(out[j].request_id, "req");
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_uint_eq(holders_list(&hs, out, 8, 0), 0);
}
END_TEST

static Suite *holders_suite(void)
{
    Suite *s = suite_create("holders");
    TCase *tc = tcase_create("holders");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, add_list_remove);
    tcase_add_test(tc, long_ids_are_truncated_and_null_is_empty);
    tcase_add_test(tc, held_too_long_is_counted_once);
    tcase_add_test(tc, check_flags_at_most_max_each_call);
    tcase_add_test(tc, concurrent_churn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(holders_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
