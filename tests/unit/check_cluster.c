/* check_cluster.c — unit tests of the share arithmetic (no database): the
 * pure functions, and a model of replicas running the protocol against a
 * shared table in random order, joining, leaving and dying. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cluster.h"
#include "cluster_test.h"

START_TEST(fair_shares_add_up_and_differ_by_one_at_most)
{
    unsigned out[64];
    for (unsigned budget = 0; budget < 200; budget += 7) {
        for (size_t n = 1; n <= 64; n++) {
            unsigned sum = 0, lo = ~0u, hi = 0;
            cluster_fair_shares(budget, n, out);
            for (size_t i = 0; i < n; i++) {
                sum += out[i];
                lo = out[i] < lo ? out[i] : lo;
                hi = out[i] > hi ? out[i] : hi;
                /* the earlier replicas get the remainder */
                if (i > 0)
                    ck_assert_uint_le(out[i], out[i - 1]);
            }
            ck_assert_uint_eq(sum, budget);
            ck_assert_uint_le(hi - lo, 1);
        }
    }
}
END_TEST

START_TEST(grant_stays_within_budget_want_and_never_lowers)
{
    for (unsigned budget = 0; budget < 20; budget++)
        for (unsigned want = 0; want < 25; want++)
            for (unsigned granted = 0; granted < 25; granted++)
                for (unsigned others = 0; others < 25; others++) {
                    unsigned g = cluster_grant(budget, want, granted, others);
                    /* plain ifs: every ck_assert writes to a pipe */
                    if (g < granted ||
                        (g > granted && (g > want || g + others > budget)))
                        ck_abort_msg("grant(%u, %u, %u, %u) = %u", budget, want,
                                     granted, others, g);
                }
    /* the examples of the README */
    ck_assert_uint_eq(cluster_grant(12, 4, 0, 12), 0); /* others first */
    ck_assert_uint_eq(cluster_grant(12, 4, 0, 10), 2); /* what is free */
    ck_assert_uint_eq(cluster_grant(12, 4, 2, 8), 4);
    ck_assert_uint_eq(cluster_grant(12, 4, 6, 8), 6); /* lowering: elsewhere */
}
END_TEST

START_TEST(release_waits_for_open_connections)
{
    ck_assert_uint_eq(cluster_release(3, 6, 5), 6); /* 5 open: keep 6 */
    ck_assert_uint_eq(cluster_release(3, 6, 3), 3);
    ck_assert_uint_eq(cluster_release(3, 6, 0), 3);
    ck_assert_uint_eq(cluster_release(0, 6, 1), 6);
    ck_assert_uint_eq(cluster_release(0, 6, 0), 0);
    ck_assert_uint_eq(cluster_release(8, 6, 7), 6); /* not a raise */
}
END_TEST

START_TEST(fence_after_half_a_lease)
{
    uint64_t t = 100 * NS_PER_S;
    ck_assert(cluster_fenced(0, t, 10)); /* never renewed */
    ck_assert(!cluster_fenced(t, t, 10));
    ck_assert(!cluster_fenced(t, t + 5 * NS_PER_S, 10));
    ck_assert(cluster_fenced(t, t + 5 * NS_PER_S + 1, 10));
}
END_TEST

/* ---- a model of the protocol ---------------------------------------------
 * The table: rows in registration order (live while present). A replica
 * step is atomic with respect to the table, as the lock makes it. Its
 * connections: open <= cap always (the local pool); a connection closes
 * only when a request gives it back (modelled as a random event). */

#define M_MAX 8

struct m_replica {
    bool alive; /* the process runs */
    bool row;   /* its row is live in the table */
    unsigned granted, cap, open;
    unsigned order; /* registration order */
};

struct model {
    unsigned budget, local_max;
    struct m_replica r[M_MAX];
    unsigned next_order;
    unsigned seed;
};

/* Live rows in registration order; returns count, idx[] their indexes. */
static size_t m_live(struct model *m, size_t *idx)
{
    size_t n = 0;
    for (unsigned o = 0; o < m->next_order; o++)
        for (size_t i = 0; i < M_MAX; i++)
            if (m->r[i].row && m->r[i].order == o)
                idx[n++] = i;
    return n;
}

/* One heartbeat of replica i: the same decisions cluster_tick() makes. */
static void m_tick(struct model *m, size_t i)
{
    struct m_replica *me = &m->r[i];
    size_t idx[M_MAX], n;
    unsigned shares[M_MAX], others = 0, want = 0;

    if (!me->row) {
        me->row = true;
        me->order = m->next_order++;
    }
    n = m_live(m, idx);
    cluster_fair_shares(m->budget, n, shares);
    for (size_t k = 0; k < n; k++) {
        if (idx[k] == i)
            want = shares[k] < m->local_max ? shares[k] : m->local_max;
        else
            others += m->r[idx[k]].granted;
    }
    me->granted = cluster_grant(m->budget, want, me->granted, others);
    me->cap = me->granted < want ? me->granted : want;
    /* set_cap: idle connections beyond the cap close at once */
    if (me->open > me->cap && rand_r(&m->seed) % 2)
        me->open = me->cap;
    me->granted = cluster_release(want, me->granted, me->open);
}

static unsigned m_sum_open(const struct model *m)
{
    unsigned s = 0;
    for (size_t i = 0; i < M_MAX; i++)
        s += m->r[i].alive ? m->r[i].open : 0;
    return s;
}

static unsigned m_sum_granted(const struct model *m)
{
    unsigned s = 0;
    for (size_t i = 0; i < M_MAX; i++)
        s += m->r[i].row ? m->r[i].granted : 0;
    return s;
}

/* Every running replica holds no more than the table grants it. */
static bool m_within_grants(const struct model *m)
{
    for (size_t i = 0; i < M_MAX; i++)
        if (m->r[i].alive && m->r[i].open > (m->r[i].row ? m->r[i].granted : 0))
            return false;
    return true;
}

static void m_step(struct model *m)
{
    size_t i = (size_t)rand_r(&m->seed) % M_MAX;
    struct m_replica *r = &m->r[i];
    unsigned ev = (unsigned)rand_r(&m->seed) % 100;

    if (!r->alive) {
        if (ev < 5 && !r->row) /* a new process under this slot */
            *r = (struct m_replica){.alive = true};
        return;
    }
    if (ev < 30)
        m_tick(m, i);
    else if (ev < 60 && r->open < r->cap)
        r->open++; /* a request opens a connection */
    else if (ev < 85 && r->open > 0)
        r->open--; /* a connection closes */
    else if (ev < 87) {
        r->alive = false; /* SIGKILL: the OS closes its sockets */
        r->open = 0;
    } else if (ev < 88) {
        r->alive = false; /* clean stop: closes, then leaves */
        r->open = 0;
        r->row = false;
    }
    /* a dead replica's row expires after its lease: here, at random */
    for (size_t k = 0; k < M_MAX; k++)
        if (!m->r[k].alive && m->r[k].row && rand_r(&m->seed) % 50 == 0)
            m->r[k].row = false;
}

START_TEST(model_never_exceeds_the_budget)
{
    for (unsigned run = 0; run < 200; run++) {
        struct model m = {.budget = 1 + run % 24,
                          .local_max = 1 + (run * 7) % 16,
                          .seed = run + 1};
        for (size_t i = 0; i < 3; i++)
            m.r[i].alive = true;
        for (unsigned step = 0; step < 20000; step++) {
            m_step(&m);
            if (m_sum_open(&m) > m.budget || m_sum_granted(&m) > m.budget ||
                !m_within_grants(&m))
                ck_abort_msg("run %u step %u: %u open, %u granted > budget "
                             "%u",
                             run, step, m_sum_open(&m), m_sum_granted(&m),
                             m.budget);
        }
    }
}
END_TEST

/* Once nothing changes, a few rounds of heartbeats give every live replica
 * min(share, local_max). */
START_TEST(model_converges_to_fair_shares)
{
    for (unsigned run = 0; run < 200; run++) {
        struct model m = {.budget = 1 + run % 40,
                          .local_max = 1 + (run * 5) % 20,
                          .seed = run + 7};
        for (size_t i = 0; i < M_MAX; i++)
            m.r[i].alive = i < 5;
        for (unsigned step = 0; step < 5000; step++)
            m_step(&m);
        /* quiet: dead rows expire, connections close, everyone ticks */
        for (size_t i = 0; i < M_MAX; i++) {
            if (!m.r[i].alive)
                m.r[i].row = false;
            m.r[i].open = 0;
        }
        for (unsigned round = 0; round < 3; round++)
            for (size_t i = 0; i < M_MAX; i++)
                if (m.r[i].alive)
                    m_tick(&m, i);
        size_t idx[M_MAX];
        unsigned shares[M_MAX];
        size_t n = m_live(&m, idx);
        cluster_fair_shares(m.budget, n, shares);
        for (size_t k = 0; k < n; k++) {
            unsigned want = shares[k] < m.local_max ? shares[k] : m.local_max;
            ck_assert_msg(m.r[idx[k]].granted == want &&
                              m.r[idx[k]].cap == want,
                          "run %u: replica %zu granted %u cap %u want %u", run,
                          k, m.r[idx[k]].granted, m.r[idx[k]].cap, want);
        }
    }
}
END_TEST

/* ---- the replica object, standalone ------------------------------------- */

static unsigned fake_open(void *arg)
{
    return *(unsigned *)arg;
}

static unsigned fake_waiting(void *arg)
{
    (void)arg;
    return 2;
}

static void fake_set_cap(void *arg, unsigned cap)
{
    (void)arg;
    (void)cap;
    ck_abort_msg("standalone must not set a cap");
}

START_TEST(standalone_snapshot_is_this_process_alone)
{
    unsigned open = 3;
    struct cluster_config cc = {
        .budget = 0,
        .local_max = 32,
        .local = {fake_open, fake_waiting, fake_set_cap, &open},
    };
    struct cluster *c = NULL;
    struct cluster_replica v[4];
    char err[128];

    ck_assert_int_eq(cluster_create(&cc, &c), POOLD_OK);
    ck_assert(!cluster_enabled(c));
    ck_assert_uint_eq(cluster_cap(c), 32);
    ck_assert_int_eq(cluster_tick(c, NULL, err, sizeof err), POOLD_OK);
    ck_assert_uint_eq(cluster_snapshot(c, v, 4), 1);
    ck_assert_str_eq(v[0].id, cluster_id(c));
    ck_assert_uint_eq(v[0].share, 32);
    ck_assert_uint_eq(v[0].open_connections, 3);
    ck_assert(v[0].self);
    ck_assert_uint_eq(strlen(v[0].heartbeat_at), 20); /* ...T..:..:..Z */
    cluster_destroy(c);
    cluster_destroy(NULL);
}
END_TEST

START_TEST(ids_are_unique_and_a_member_holds_nothing_before_its_grant)
{
    unsigned open = 0;
    struct cluster_config cc = {
        .budget = 10,
        .local_max = 4,
        .local = {fake_open, fake_waiting, fake_set_cap, &open},
    };
    struct cluster *a = NULL, *b = NULL;
    char err[128];

    ck_assert_int_eq(cluster_create(&cc, &a), POOLD_OK);
    ck_assert_int_eq(cluster_create(&cc, &b), POOLD_OK);
    ck_assert_str_ne(cluster_id(a), cluster_id(b));
    ck_assert(cluster_enabled(a));
    ck_assert_uint_eq(cluster_cap(a), 0);
    /* no database: an error, and still nothing held */
    ck_assert_int_eq(cluster_tick(a, NULL, err, sizeof err), POOLD_ERR_DB);
    ck_assert_uint_eq(cluster_cap(a), 0);
    cluster_destroy(a);
    cluster_destroy(b);
}
END_TEST

static Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("arithmetic");
    tcase_add_test(tc, fair_shares_add_up_and_differ_by_one_at_most);
    tcase_add_test(tc, grant_stays_within_budget_want_and_never_lowers);
    tcase_add_test(tc, release_waits_for_open_connections);
    tcase_add_test(tc, fence_after_half_a_lease);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, model_never_exceeds_the_budget);
    tcase_add_test(tc, model_converges_to_fair_shares);
    suite_add_tcase(s, tc);

    tc = tcase_create("replica");
    tcase_add_test(tc, standalone_snapshot_is_this_process_alone);
    tcase_add_test(tc,
                   ids_are_unique_and_a_member_holds_nothing_before_its_grant);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cluster_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
