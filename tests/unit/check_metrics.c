/* check_metrics.c — unit tests of the Prometheus rendering: metrics formats
 * the view it is given, so no registry or database is needed here. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static const char *const routes[] = {"GET /x"};

static void add(struct pool_snapshot *s, const char *org, unsigned max_size,
                uint64_t acquired)
{
    struct pool_stats st;

    memset(&st, 0, sizeof st);
    st.max_size = max_size;
    st.acquired = acquired;
    metrics_snapshot_add(s, org, &st);
}

/* Metrics for routes, and an empty snapshot s. */
static struct metrics *metrics_new(struct pool_snapshot *s)
{
    struct metrics *m;

    ck_assert_int_eq(metrics_create(routes, 1, &m), POOLD_OK);
    memset(s, 0, sizeof *s);
    return m;
}

/* Render view with m; the caller frees the text. */
static char *render(struct metrics *m, struct metrics_view *view)
{
    char *text = NULL;
    size_t len = 0;

    ck_assert_int_eq(metrics_render(m, view, &text, &len), POOLD_OK);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

START_TEST(test_snapshot_sorted_by_org)
{
    struct pool_snapshot s;

    memset(&s, 0, sizeof s);
    add(&s, "org_b", 1, 0);
    add(&s, "org_c", 1, 0);
    add(&s, "org_a", 1, 0);
    ck_assert_int_eq(metrics_snapshot_sort(&s), POOLD_OK);
    ck_assert_uint_eq(s.n, 3);
    ck_assert_str_eq(s.v[0].org_id, "org_a");
    ck_assert_str_eq(s.v[1].org_id, "org_b");
    ck_assert_str_eq(s.v[2].org_id, "org_c");
    metrics_snapshot_free(&s);
    ck_assert_ptr_null(s.v);
}
END_TEST

START_TEST(test_render_shows_the_view)
{
    struct pool_snapshot s;
    struct metrics *m = metrics_new(&s);
    struct metrics_view view = {.pools = &s, .ready = true};
    char *text;

    add(&s, "org_a", 4, 2);
    ck_assert_int_eq(metrics_snapshot_sort(&s), POOLD_OK);
    view.conn.max_size = 32;
    view.commits = (struct reg_commit_totals){
        .statements = 4, .ns_sum = 2500000001, .overlapped = 3};
    text = render(m, &view);
    ck_assert_ptr_nonnull(strstr(text, "\npoold_pool_orgs 1\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_group_commit_seconds_sum 2.500000001\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_group_commit_seconds_count 4\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_group_commits_overlapped_total 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "\npoold_ready 1\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_pool_max_size{org=\"org_a\"} 4\n"));
    ck_assert_ptr_nonnull(strstr(text, "\npoold_db_connections_max_size 32\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_http_idle_connections_closed_total 0\n"));
    free(text);
    view.ready = false;
    metrics_idle_closed_add(m, 2);
    metrics_idle_closed_add(m, 1);
    text = render(m, &view);
    ck_assert_ptr_nonnull(strstr(text, "\npoold_ready 0\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "\npoold_http_idle_connections_closed_total 3\n"));
    free(text);
    metrics_snapshot_free(&s);
    metrics_destroy(m);
}
END_TEST

/* POOLD_METRICS_TOP_ORGS: the busiest orgs keep their series, the rest are
 * summed into "_other"; poold_pool_orgs still counts them all. */
START_TEST(test_render_bounds_to_top_orgs)
{
    struct pool_snapshot s;
    struct metrics *m = metrics_new(&s);
    struct metrics_view view = {.pools = &s, .ready = true};
    char *text;

    metrics_set_top_orgs(m, 2);
    add(&s, "org_a", 1, 5);
    add(&s, "org_b", 2, 1);
    add(&s, "org_c", 4, 9);
    add(&s, "org_d", 8, 0);
    ck_assert_int_eq(metrics_snapshot_sort(&s), POOLD_OK);
    text = render(m, &view);
    ck_assert_ptr_nonnull(strstr(text, "\npoold_pool_orgs 4\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "poold_pool_max_size{org=\"org_a\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "poold_pool_max_size{org=\"org_c\"} 4\n"));
    ck_assert_ptr_nonnull(strstr(
        text, "poold_pool_max_size{org=\"" METRICS_OTHER_ORG "\"} 10\n"));
    ck_assert_ptr_null(strstr(text, "org=\"org_b\""));
    ck_assert_ptr_null(strstr(text, "org=\"org_d\""));
    free(text);
    metrics_snapshot_free(&s);
    metrics_destroy(m);
}
END_TEST

/* The rate-limit series are bounded as the pool series are: the orgs with
 * the most refusals keep theirs, the rest are summed into "_other". */
START_TEST(test_rate_limited_bounded_to_top_orgs)
{
    struct pool_snapshot s;
    struct metrics_org_counts limits = {0};
    struct metrics *m = metrics_new(&s);
    struct metrics_view view = {.pools = &s, .rate_limited = &limits};
    char *text;

    metrics_set_top_orgs(m, 2);
    metrics_counts_add(&limits, "org_d", 3);
    metrics_counts_add(&limits, "org_a", 7);
    metrics_counts_add(&limits, "org_b", 1);
    metrics_counts_add(&limits, "org_c", 9);
    text = render(m, &view);
    ck_assert_ptr_nonnull(strstr(
        text, "# TYPE poold_rate_limited_total "
              "counter\n"
              "poold_rate_limited_total{org=\"org_a\"} "
              "7\n"
              "poold_rate_limited_total{org=\"org_c\"} "
              "9\n"
              "poold_rate_limited_total{org=\"" METRICS_OTHER_ORG "\"} 4\n"));
    ck_assert_ptr_null(strstr(text, "org=\"org_b\""));
    ck_assert_ptr_null(strstr(text, "org=\"org_d\""));
    free(text);
    /* No bound: every org, by name. */
    metrics_set_top_orgs(m, 0);
    metrics_counts_free(&limits);
    metrics_counts_add(&limits, "org_b", 1);
    metrics_counts_add(&limits, "org_a", 0);
    text = render(m, &view);
    ck_assert_ptr_nonnull(
        strstr(text, "poold_rate_limited_total{org=\"org_a\"} 0\n"
                     "poold_rate_limited_total{org=\"org_b\"} 1\n"));
    free(text);
    /* A table with no org yet (no allocation): the family's header only. */
    metrics_counts_free(&limits);
    memset(&limits, 0, sizeof limits);
    text = render(m, &view);
    ck_assert_ptr_null(strstr(text, "poold_rate_limited_total{"));
    free(text);
    /* No rate limits: no family at all. */
    view.rate_limited = NULL;
    text = render(m, &view);
    ck_assert_ptr_null(strstr(text, "poold_rate_limited_total"));
    free(text);
    metrics_counts_free(&limits);
    metrics_snapshot_free(&s);
    metrics_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_snapshot_sorted_by_org);
    tcase_add_test(tc, test_render_shows_the_view);
    tcase_add_test(tc, test_render_bounds_to_top_orgs);
    tcase_add_test(tc, test_rate_limited_bounded_to_top_orgs);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
