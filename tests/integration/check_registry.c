/* check_registry.c — the registry against a real PostgreSQL: routing,
 * isolation between orgs, the connection cap, configuration changes. */
#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "registry.h"
#include "../unit/test_util.h"

static const char *db_url(void)
{
    const char *u = getenv("DATABASE_URL");
    return u ? u : "postgresql:///pools";
}

static PGconn *admin(void)
{
    const char *u = getenv("POOLD_TEST_ADMIN_URL");
    PGconn *c = PQconnectdb(u ? u : "dbname=pools");
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "admin connect: %s",
                  PQerrorMessage(c));
    return c;
}

/* Run a command as the superuser; abort the test on error. */
static void sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", q,
                  PQerrorMessage(c));
    PQclear(r);
}

/* The first column of the first row as an integer. */
static long long sql_int(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1,
                  "%s: %s", q, PQerrorMessage(c));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static void cleanup_db(void)
{
    PGconn *c = admin();
    sql(c, "DELETE FROM processed_messages WHERE org_id LIKE 'treg_%' "
           "OR message_id LIKE 'treg_%'");
    sql(c, "DELETE FROM orgs WHERE org_id LIKE 'treg_%'");
    sql(c, "UPDATE orgs SET pool_max_size = NULL WHERE org_id LIKE 'org_0%'");
    PQfinish(c);
}

static struct registry_config base_config(void)
{
    struct registry_config cfg = {
        .db = {.url = db_url(),
               .application_name = "poold",
               .connect_timeout_s = 5},
        .pooled = true,
        .default_size = 4,
        .ceiling = 256,
        .max_waiters = 64,
        .acquire_timeout_ns = 10 * NS_PER_S,
        .db_max_conns = 32,
        .conn_ttl_ns = 300 * NS_PER_S,
        .conn_check_idle_ns = NS_PER_S,
        .prewarm = "",
        .refresh_interval_ns = 200 * NS_PER_MS,
    };
    return cfg;
}

static struct registry *start(const struct registry_config *cfg)
{
    struct registry *reg;
    ck_assert_int_eq(registry_create(cfg, &reg), POOLD_OK);
    ck_assert_int_eq(registry_start(reg), POOLD_OK);
    ck_assert(registry_is_ready(reg));
    return reg;
}

static int process(struct registry *reg, const char *org, const char *id,
                   const char *payload, struct service_result *res)
{
    char err[256];
    struct message m = {.id = id,
                        .id_len = strlen(id),
                        .payload = payload,
                        .payload_len = strlen(payload)};
    struct registry_admission adm = {0};
    int rc = registry_admit(reg, org, &adm, err, sizeof err);

    if (rc == POOLD_OK)
        rc = registry_process(reg, &adm, &m, res, err, sizeof err);
    registry_admission_release(&adm);
    return rc;
}

/* Rules per demo org (sql/100_demo_orgs.sql): org i has this many. */
static unsigned demo_checks(int org)
{
    static const unsigned by_mod[5] = {2, 4, 2, 5, 1};
    return by_mod[org % 5];
}

/* An org's pool stats reach a state (for wait_until). */
struct org_wait {
    struct registry *reg;
    const char *org;
    uint64_t at_least;    /* for org_has_waiting, org_has_messages */
    struct pool_stats st; /* the last stats read */
};

static struct pool_stats org_stats(struct org_wait *w)
{
    ck_assert_int_eq(registry_pool_stats(w->reg, w->org, &w->st), POOLD_OK);
    return w->st;
}

/* At least at_least requests (or their messages) queued for the org. */
static bool org_has_waiting(void *arg)
{
    struct org_wait *w = arg;
    return org_stats(w).waiting >= w->at_least;
}

static bool org_has_one_active(void *arg)
{
    return org_stats(arg).active == 1;
}

static bool org_has_idle(void *arg)
{
    return org_stats(arg).idle >= 1;
}

static bool org_has_messages(void *arg)
{
    struct org_wait *w = arg;
    return org_stats(w).group_messages >= w->at_least;
}

/* ------------------------------------------------------- isolation */

#define ISO_THREADS 16
#define ISO_ORGS 20
#define ISO_PER_THREAD 40

struct iso_arg {
    struct registry *reg;
    int thread;
    atomic_int *wrong;
};

static void *iso_worker(void *p)
{
    struct iso_arg *a = p;
    for (int i = 0; i < ISO_PER_THREAD; i++) {
        int org = (a->thread * 7 + i) % ISO_ORGS;
        char org_id[16], id[48];
        struct service_result res;
        snprintf(org_id, sizeof org_id, "org_%03d", org);
        snprintf(id, sizeof id, "treg_iso_%d_%d", a->thread, i);
        /* "msg_"-less id and short hex payload: each demo org's own rules
         * decide, so the check count betrays a service of another org. */
        int rc = process(a->reg, org_id, id, "abcdef0123456789", &res);
        if (rc != POOLD_OK || res.verdict.checks != demo_checks(org) ||
            res.duplicate)
            atomic_fetch_add(a->wrong, 1);
    }
    return NULL;
}

struct count_arg {
    int n;
    uint64_t max_peak;
};

static void count_pools(void *arg, const char *org_id,
                        const struct pool_stats *st)
{
    struct count_arg *c = arg;
    (void)org_id;
    c->n++;
    if (st->peak_active > c->max_peak)
        c->max_peak = st->peak_active;
}

START_TEST(test_isolation_many_threads)
{
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    pthread_t t[ISO_THREADS];
    struct iso_arg args[ISO_THREADS];
    atomic_int wrong = 0;

    for (int i = 0; i < ISO_THREADS; i++) {
        args[i] = (struct iso_arg){reg, i, &wrong};
        ck_assert_int_eq(pthread_create(&t[i], NULL, iso_worker, &args[i]), 0);
    }
    for (int i = 0; i < ISO_THREADS; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&wrong), 0);

    /* One pool per org that asked, each never above its size. */
    struct count_arg c = {0, 0};
    registry_foreach_pool(reg, count_pools, &c);
    ck_assert_int_eq(c.n, ISO_ORGS);
    ck_assert_uint_le(c.max_peak, 4);
    registry_destroy(reg);

    /* Every row is under the org that asked for it, once. */
    PGconn *db = admin();
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM processed_messages "
                                 "WHERE message_id LIKE 'treg_iso_%'"),
                     ISO_THREADS * ISO_PER_THREAD);
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM processed_messages WHERE message_id LIKE "
             "'treg_iso_%%' AND org_id <> format('org_%%s', lpad(((split_part("
             "message_id, '_', 3)::int * 7 + split_part(message_id, '_', 4)"
             "::int) %% %d)::text, 3, '0'))",
             ISO_ORGS);
    ck_assert_int_eq(sql_int(db, q), 0);
    PQfinish(db);
}
END_TEST

/* ------------------------------------------------ the connection cap */

#define CAP_CONNS 8
#define CAP_ORGS 40
#define CAP_THREADS 8
#define CAP_PER_THREAD 60

struct cap_arg {
    struct registry *reg;
    int thread;
    atomic_int *failed;
};

static void *cap_worker(void *p)
{
    struct cap_arg *a = p;
    for (int i = 0; i < CAP_PER_THREAD; i++) {
        char org_id[16], id[48];
        struct service_result res;
        snprintf(org_id, sizeof org_id, "org_%03d",
                 (a->thread * CAP_PER_THREAD + i) % CAP_ORGS);
        snprintf(id, sizeof id, "treg_cap_%d_%d", a->thread, i);
        if (process(a->reg, org_id, id, "abcdef0123456789", &res) != POOLD_OK)
            atomic_fetch_add(a->failed, 1);
    }
    return NULL;
}

struct sampler {
    atomic_bool stop;
    long long max_seen;
};

/* Watch pg_stat_activity for poold's connections while the load runs. */
static void *sample_backends(void *p)
{
    struct sampler *s = p;
    PGconn *c = admin();
    while (!atomic_load(&s->stop)) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = 'poold'");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            long long n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            if (n > s->max_seen)
                s->max_seen = n;
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

/* CAP_THREADS workers over CAP_ORGS orgs while a sampler watches
 * pg_stat_activity; returns the failed requests, the most backends seen. */
static int run_cap_load(struct registry *reg, long long *max_seen)
{
    pthread_t t[CAP_THREADS], st;
    struct cap_arg args[CAP_THREADS];
    struct sampler s = {.max_seen = 0};
    atomic_int failed = 0;

    ck_assert_int_eq(pthread_create(&st, NULL, sample_backends, &s), 0);
    for (int i = 0; i < CAP_THREADS; i++) {
        args[i] = (struct cap_arg){reg, i, &failed};
        ck_assert_int_eq(pthread_create(&t[i], NULL, cap_worker, &args[i]), 0);
    }
    for (int i = 0; i < CAP_THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&s.stop, true);
    pthread_join(st, NULL);
    *max_seen = s.max_seen;
    return atomic_load(&failed);
}

START_TEST(test_cap_many_orgs)
{
    struct registry_config cfg = base_config();
    cfg.db_max_conns = CAP_CONNS;
    struct registry *reg = start(&cfg);
    long long max_seen;
    int failed = run_cap_load(reg, &max_seen);

    struct pool_stats cs;
    registry_conn_stats(reg, &cs);
    ck_assert_int_eq(failed, 0);
    ck_assert_uint_le(cs.peak_active, CAP_CONNS);
    ck_assert_int_le(max_seen, CAP_CONNS);
    ck_assert_int_gt(max_seen, 0);
    /* Orgs took connections from each other's idle services. */
    ck_assert_uint_gt(cs.acquired, CAP_CONNS);
    registry_destroy(reg);

    PGconn *db = admin();
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM processed_messages "
                                 "WHERE message_id LIKE 'treg_cap_%'"),
                     CAP_THREADS * CAP_PER_THREAD);
    PQfinish(db);
}
END_TEST

/* One org flooding the cap must not starve another's first request: a
 * service released while someone waits for a connection gives it up. */
struct flood_arg {
    struct registry *reg;
    int thread;
    atomic_bool *stop;
};

static void *flood_worker(void *p)
{
    struct flood_arg *a = p;
    for (int i = 0; !atomic_load(a->stop); i++) {
        char id[48];
        struct service_result res;
        snprintf(id, sizeof id, "treg_fl_%d_%d", a->thread, i);
        (void)process(a->reg, "org_010", id, "abcd", &res);
    }
    return NULL;
}

#define FLOOD_MAX 12

/* Threads posting to org_010 until flood_stop(). */
struct flood {
    pthread_t t[FLOOD_MAX];
    struct flood_arg args[FLOOD_MAX];
    atomic_bool stop;
    int n;
};

static void flood_start(struct flood *f, struct registry *reg, int n)
{
    f->n = n;
    atomic_store(&f->stop, false);
    for (int i = 0; i < n; i++) {
        f->args[i] = (struct flood_arg){reg, i, &f->stop};
        ck_assert_int_eq(
            pthread_create(&f->t[i], NULL, flood_worker, &f->args[i]), 0);
    }
}

static void flood_stop(struct flood *f)
{
    atomic_store(&f->stop, true);
    for (int i = 0; i < f->n; i++)
        pthread_join(f->t[i], NULL);
}

START_TEST(test_busy_org_does_not_starve_another_at_the_cap)
{
    struct registry_config cfg = base_config();
    cfg.db_max_conns = 3;
    cfg.default_size = 3;
    cfg.process_cost_ms = 50;
    cfg.acquire_timeout_ns = 2 * NS_PER_S;
    struct registry *reg = start(&cfg);
    struct flood f;
    struct pool_stats st;

    flood_start(&f, reg, 12);
    struct org_wait busy = {reg, "org_010", 1, {0}};
    /* org_010 holds every connection and has requests queued. */
    wait_until(org_has_waiting, &busy, 30000, "org_010 requests to queue");

    for (int i = 0; i < 3; i++) {
        char id[32];
        struct service_result res;
        snprintf(id, sizeof id, "treg_other_%d", i);
        uint64_t t0 = clock_now_ns();
        ck_assert_int_eq(process(reg, "org_011", id, "abcd", &res), POOLD_OK);
        ck_assert_uint_lt(clock_now_ns() - t0, NS_PER_S);
    }
    flood_stop(&f);
    registry_conn_stats(reg, &st);
    ck_assert_uint_le(st.peak_active, 3);
    registry_destroy(reg);
}
END_TEST

/* Orgs taking turns at a cap of one connection: every request rebuilds
 * its org's service (from the cached rules of the current version), and
 * each answer still follows its own org's rules. */
START_TEST(test_orgs_take_turns_at_a_cap_of_one)
{
    struct registry_config cfg = base_config();
    cfg.db_max_conns = 1;
    struct registry *reg = start(&cfg);
    struct pool_stats a, b;

    for (int i = 0; i < 20; i++) {
        char id[32];
        struct service_result res;
        int org = i % 2 ? 13 : 14;
        char org_id[16];
        snprintf(org_id, sizeof org_id, "org_%03d", org);
        snprintf(id, sizeof id, "treg_turn_%d", i);
        ck_assert_int_eq(process(reg, org_id, id, "abcd", &res), POOLD_OK);
        ck_assert_uint_eq(res.verdict.checks, demo_checks(org));
    }
    ck_assert_int_eq(registry_pool_stats(reg, "org_013", &a), POOLD_OK);
    ck_assert_int_eq(registry_pool_stats(reg, "org_014", &b), POOLD_OK);
    ck_assert_uint_eq(a.created, 10);
    ck_assert_uint_eq(b.created, 10);
    ck_assert_uint_eq(a.destroyed_by[POOL_DESTROY_EVICTED] +
                          b.destroyed_by[POOL_DESTROY_EVICTED],
                      19);
    registry_destroy(reg);
}
END_TEST

/* One org whose pool is larger than the connection cap: its releases feed
 * its own queued requests; they must not tear a working service down to
 * build the same one again for its own waiting build. */
START_TEST(test_org_larger_than_the_cap_does_not_thrash)
{
    struct registry_config cfg = base_config();
    cfg.db_max_conns = 2;
    cfg.default_size = 4;
    cfg.acquire_timeout_ns = NS_PER_S;
    struct registry *reg = start(&cfg);
    struct flood f;
    struct pool_stats st;

    flood_start(&f, reg, 8);
    /* A run of many requests, however long the machine takes for it. */
    struct org_wait run = {reg, "org_010", 150, {0}};
    wait_until(org_has_messages, &run, 60000, "150 messages of org_010");
    flood_stop(&f);
    ck_assert_int_eq(registry_pool_stats(reg, "org_010", &st), POOLD_OK);
    /* Messages committed (a service commits a group per acquire). */
    ck_assert_uint_gt(st.group_messages, 100);
    /* Before: one rebuild per request. Housekeeping may still hand one
     * idle service's connection to a waiting build now and then. */
    ck_assert_uint_le(st.created, 8);
    ck_assert_uint_le(st.destroyed_by[POOL_DESTROY_EVICTED], 4);
    registry_destroy(reg);
}
END_TEST

/* ------------------------------------------- configuration changes */

struct checks_wait {
    struct registry *reg;
    const char *org;
    unsigned checks;
};

/* A new message of the org is answered under rules with this many checks
 * (a new id each time: a duplicate would give a stored answer). */
static bool org_answers_with_checks(void *arg)
{
    static int next_id;
    struct checks_wait *w = arg;
    char id[48];
    struct service_result res;

    snprintf(id, sizeof id, "treg_cfg_%d", next_id++);
    return process(w->reg, w->org, id, "abcd", &res) == POOLD_OK &&
           !res.duplicate && res.verdict.checks == w->checks;
}

/* Poll until the rule change is visible, at most 5 s (DESIGN.md). */
static void wait_for_checks(struct registry *reg, const char *org,
                            unsigned checks)
{
    struct checks_wait w = {reg, org, checks};
    wait_until(org_answers_with_checks, &w, 5000, "the org's new rules");
}

static bool org_is_unknown(void *reg)
{
    struct service_result res;
    return process(reg, "treg_cfg", "treg_cfg_off", "abcd", &res) ==
           POOLD_ERR_UNKNOWN_ORG;
}

START_TEST(test_config_change_retires)
{
    PGconn *db = admin();
    sql(db, "INSERT INTO orgs (org_id, config) VALUES ('treg_cfg', "
            "'{\"rules\":[{\"type\":\"hex_payload\"}]}')");
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    struct service_result res;

    ck_assert_int_eq(process(reg, "treg_cfg", "treg_cfg_first", "abcd", &res),
                     POOLD_OK);
    ck_assert_uint_eq(res.verdict.checks, 1);
    sql(db, "UPDATE orgs SET config = '{\"rules\":[{\"type\":\"hex_payload\"},"
            "{\"type\":\"min_payload_bytes\",\"value\":2}]}' "
            "WHERE org_id = 'treg_cfg'");
    wait_for_checks(reg, "treg_cfg", 2);

    struct pool_stats st;
    ck_assert_int_eq(registry_pool_stats(reg, "treg_cfg", &st), POOLD_OK);
    ck_assert_uint_ge(st.destroyed_by[POOL_DESTROY_RETIRED] +
                          st.destroyed_by[POOL_DESTROY_INVALID],
                      1);

    /* Disabling the org makes it unknown within the same bound. */
    ck_assert_int_eq(process(reg, "treg_cfg", "treg_cfg_on", "abcd", &res),
                     POOLD_OK);
    sql(db, "UPDATE orgs SET enabled = false WHERE org_id = 'treg_cfg'");
    wait_until(org_is_unknown, reg, 5000, "treg_cfg to be unknown");
    registry_destroy(reg);
    PQfinish(db);
}
END_TEST

struct slow_arg {
    struct registry *reg;
    int rc;
    struct service_result res;
};

static void *slow_request(void *p)
{
    struct slow_arg *a = p;
    a->rc = process(a->reg, "treg_act", "treg_act_slow", "abcd", &a->res);
    return NULL;
}

/* A service lent out during a configuration change is destroyed when it
 * comes back, never returned to idle to serve the old rules. */
START_TEST(test_config_change_retires_active_on_release)
{
    PGconn *db = admin();
    sql(db, "INSERT INTO orgs (org_id, config) VALUES "
            "('treg_act', '{\"rules\":[{\"type\":\"hex_payload\"}]}'), "
            "('treg_act2', '{\"rules\":[{\"type\":\"hex_payload\"}]}')");
    struct registry_config cfg = base_config();
    cfg.process_cost_ms = 1500;
    struct registry *reg = start(&cfg);
    struct slow_arg a = {.reg = reg};
    struct pool_stats st;
    pthread_t t;

    struct org_wait act = {reg, "treg_act", 0, {0}};
    ck_assert_int_eq(org_stats(&act).active, 0);
    ck_assert_int_eq(pthread_create(&t, NULL, slow_request, &a), 0);
    wait_until(org_has_one_active, &act, 30000, "the slow request's service");
    /* One statement changes both orgs: the same directory refresh sees
     * both, and treg_act2's new rules show when it has happened. */
    sql(db, "UPDATE orgs SET config = '{\"rules\":[{\"type\":\"hex_payload\"},"
            "{\"type\":\"min_payload_bytes\",\"value\":2}]}' "
            "WHERE org_id IN ('treg_act', 'treg_act2')");
    wait_for_checks(reg, "treg_act2", 2);
    pthread_join(t, NULL);
    ck_assert_int_eq(a.rc, POOLD_OK);
    ck_assert_uint_eq(a.res.verdict.checks, 1); /* began under the old */

    /* Its only service was lent during the change: destroyed on release. */
    ck_assert_int_eq(registry_pool_stats(reg, "treg_act", &st), POOLD_OK);
    ck_assert_uint_eq(st.created, 1);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_RETIRED], 1);
    ck_assert_uint_eq(st.idle + st.active, 0);
    struct service_result res;
    ck_assert_int_eq(process(reg, "treg_act", "treg_act_after", "abcd", &res),
                     POOLD_OK);
    ck_assert_uint_eq(res.verdict.checks, 2);
    ck_assert_int_eq(registry_pool_stats(reg, "treg_act", &st), POOLD_OK);
    ck_assert_uint_eq(st.destroyed_by[POOL_DESTROY_INVALID], 0);
    registry_destroy(reg);
    PQfinish(db);
}
END_TEST

/* Versions come from a sequence when a row is updated, not when it
 * commits: a change committed after a later-numbered one must be seen. */
START_TEST(test_config_change_committed_out_of_order)
{
    PGconn *db = admin(), *slow = admin();
    sql(db, "INSERT INTO orgs (org_id, config) VALUES "
            "('treg_ooo1', '{\"rules\":[]}'), ('treg_ooo2', '{\"rules\":[]}')");
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    const char *two_rules = "'{\"rules\":[{\"type\":\"hex_payload\"},"
                            "{\"type\":\"min_payload_bytes\",\"value\":1}]}'";
    char q[512];

    /* Both orgs have an idle service built from the first version, so
     * new rules show only once the directory refresh has seen them. */
    wait_for_checks(reg, "treg_ooo1", 0);
    wait_for_checks(reg, "treg_ooo2", 0);
    sql(slow, "BEGIN");
    snprintf(q, sizeof q,
             "UPDATE orgs SET config = %s WHERE org_id = "
             "'treg_ooo1'",
             two_rules);
    sql(slow, q); /* takes version N, not committed yet */
    snprintf(q, sizeof q,
             "UPDATE orgs SET config = %s WHERE org_id = "
             "'treg_ooo2'",
             two_rules);
    sql(db, q); /* takes N + 1, committed */
    wait_for_checks(reg, "treg_ooo2", 2);
    sql(slow, "COMMIT");
    wait_for_checks(reg, "treg_ooo1", 2);
    registry_destroy(reg);
    PQfinish(slow);
    PQfinish(db);
}
END_TEST

struct del_arg {
    struct registry *reg;
    const char *id;
    int rc;
    struct service_result res;
};

static void *del_request(void *p)
{
    struct del_arg *a = p;
    a->rc = process(a->reg, "treg_del", a->id, "abcd", &a->res);
    return NULL;
}

static int pools_in(struct registry *reg)
{
    struct count_arg c = {0, 0};
    registry_foreach_pool(reg, count_pools, &c);
    return c.n;
}

static bool registry_has_a_pool(void *reg)
{
    return pools_in(reg) > 0;
}

/* An org deleted while requests for it wait: none of them may be served
 * without its rules (a build after the delete must not succeed). */
START_TEST(test_org_deleted_while_requests_wait)
{
    PGconn *db = admin();
    sql(db, "INSERT INTO orgs (org_id, config, pool_max_size) VALUES "
            "('treg_del', '{\"rules\":[{\"type\":\"max_payload_bytes\","
            "\"value\":1}]}', 1)");
    struct registry_config cfg = base_config();
    cfg.build_cost_ms = 3000;
    struct registry *reg = start(&cfg);
    struct del_arg a = {reg, "treg_del_a", 0, {0}};
    struct del_arg b = {reg, "treg_del_b", 0, {0}};
    struct org_wait del = {reg, "treg_del", 0, {0}};
    pthread_t ta, tb;

    /* No pool before A: its pool appears once A was routed, and its build
     * then takes 3 s. */
    ck_assert_int_eq(pools_in(reg), 0);
    ck_assert_int_eq(pthread_create(&ta, NULL, del_request, &a), 0);
    wait_until(registry_has_a_pool, reg, 30000, "A's pool");
    /* A's service is not built yet; only A's own message may be queued
     * (for the group its build will commit). Then B queues behind it. */
    del.at_least = org_stats(&del).waiting + 1;
    ck_assert_uint_le(del.st.waiting, 1);
    ck_assert_uint_eq(del.st.created, 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, del_request, &b), 0);
    wait_until(org_has_waiting, &del, 30000, "B to queue behind A's build");
    /* The row goes while B waits and A's build is still under way: B must
     * not be served from a service built after the delete. */
    ck_assert_uint_eq(del.st.created, 0);
    sql(db, "DELETE FROM orgs WHERE org_id = 'treg_del'");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    /* A began under the row (its rules apply); B was still queued. */
    ck_assert(a.rc == POOLD_ERR_UNKNOWN_ORG ||
              (a.rc == POOLD_OK && a.res.verdict.checks == 1));
    ck_assert_int_eq(b.rc, POOLD_ERR_UNKNOWN_ORG);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM processed_messages "
                                 "WHERE org_id = 'treg_del' AND checks = 0"),
                     0);
    registry_destroy(reg);
    PQfinish(db);
}
END_TEST

/* Requests for an org while it is deleted and created again, over and
 * over: each answer is a commit or unknown_org, the pool is freed once the
 * last request that held it ends, and the next request after its creation
 * gets a new one (under ASan and TSan: no use after free, no race). */
struct churn {
    struct registry *reg;
    atomic_bool stop;
    atomic_uint ok, unknown, other;
    atomic_int other_rc;
};

static void *churn_requests(void *arg)
{
    struct churn *c = arg;
    struct service_result res;
    char id[64];

    for (unsigned n = 0; !atomic_load(&c->stop); n++) {
        snprintf(id, sizeof id, "treg_churn_%p_%u", (void *)&res, n);
        int rc = process(c->reg, "treg_churn", id, "ab", &res);
        if (rc == POOLD_OK)
            atomic_fetch_add(&c->ok, 1);
        else if (rc == POOLD_ERR_UNKNOWN_ORG)
            atomic_fetch_add(&c->unknown, 1);
        else {
            atomic_store(&c->other_rc, rc);
            atomic_fetch_add(&c->other, 1);
        }
    }
    return NULL;
}

struct churn_wait {
    struct churn *c;
    uint64_t freed, ok;
};

static bool churn_freed(void *arg)
{
    struct churn_wait *w = arg;
    return registry_pools_freed(w->c->reg) > w->freed;
}

static bool churn_served(void *arg)
{
    struct churn_wait *w = arg;
    return atomic_load(&w->c->ok) > w->ok;
}

START_TEST(test_requests_race_their_orgs_delete_and_creation)
{
    PGconn *db = admin();
    struct registry_config cfg = base_config();
    const char *create = "INSERT INTO orgs (org_id, config) VALUES "
                         "('treg_churn', '{\"rules\":[]}')";
    pthread_t t[4];
    struct churn c = {0};

    cfg.refresh_interval_ns = 20 * NS_PER_MS;
    sql(db, create);
    c.reg = start(&cfg);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn_requests, &c), 0);
    for (int round = 0; round < 8; round++) {
        struct churn_wait w = {&c, registry_pools_freed(c.reg), 0};

        w.ok = atomic_load(&c.ok);
        wait_until(churn_served, &w, 30000, "a request served");
        sql(db, "DELETE FROM orgs WHERE org_id = 'treg_churn'");
        /* Freed while requests keep coming (they are refused now). */
        wait_until(churn_freed, &w, 30000, "the deleted org's pool freed");
        if (round % 2 == 1) {
            /* Created again at once, deleted again before any tick may
             * have freed what a request made meanwhile. */
            sql(db, create);
            sql(db, "DELETE FROM orgs WHERE org_id = 'treg_churn'");
        }
        sql(db, create);
    }
    struct churn_wait last = {&c, 0, atomic_load(&c.ok)};
    wait_until(churn_served, &last, 30000, "a request served");
    atomic_store(&c.stop, true);
    for (size_t i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(atomic_load(&c.other) == 0, "%u answers %s",
                  atomic_load(&c.other),
                  poold_status_str(atomic_load(&c.other_rc)));
    ck_assert_uint_gt(atomic_load(&c.unknown), 0);
    ck_assert_uint_ge(registry_pools_freed(c.reg), 8);
    ck_assert_int_eq(pools_in(c.reg), 1); /* the one made after the last */
    registry_destroy(c.reg);
    PQfinish(db);
}
END_TEST

START_TEST(test_misconfigured_then_fixed)
{
    PGconn *db = admin();
    sql(db, "INSERT INTO orgs (org_id, config) VALUES ('treg_bad', "
            "'{\"rules\":[{\"type\":\"no_such_rule\"}]}')");
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    struct service_result res;
    struct pool_stats cs;

    ck_assert_int_eq(process(reg, "treg_bad", "treg_bad_1", "ab", &res),
                     POOLD_ERR_MISCONFIGURED);
    ck_assert_int_eq(process(reg, "treg_bad", "treg_bad_2", "ab", &res),
                     POOLD_ERR_MISCONFIGURED);
    /* Rules are parsed when the org first builds (not for every org of
     * the directory: issue 19): the first request's build found the
     * misconfiguration, the second was answered from it, no build. */
    struct pool_stats st;
    ck_assert_int_eq(registry_pool_stats(reg, "treg_bad", &st), POOLD_OK);
    ck_assert_uint_eq(st.create_failures, 1);
    registry_conn_stats(reg, &cs);
    ck_assert_uint_eq(cs.active, 0);

    sql(db, "UPDATE orgs SET config = '{\"rules\":[]}' "
            "WHERE org_id = 'treg_bad'");
    wait_for_checks(reg, "treg_bad", 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM processed_messages "
                                 "WHERE org_id = 'treg_bad' AND message_id "
                                 "IN ('treg_bad_1', 'treg_bad_2')"),
                     0);
    registry_destroy(reg);
    PQfinish(db);
}
END_TEST

/* ------------------------------------------------ unknown org flood */

START_TEST(test_unknown_org_flood)
{
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    struct service_result res;
    struct pool_stats before, after;

    registry_conn_stats(reg, &before);
    for (int i = 0; i < 2000; i++) {
        char org[32];
        snprintf(org, sizeof org, "treg_bogus_%d", i);
        ck_assert_int_eq(process(reg, org, "treg_x", "ab", &res),
                         POOLD_ERR_UNKNOWN_ORG);
    }
    registry_conn_stats(reg, &after);
    /* No pool and no connection for any of them. */
    struct count_arg c = {0, 0};
    registry_foreach_pool(reg, count_pools, &c);
    ck_assert_int_eq(c.n, 0);
    ck_assert_uint_eq(after.created, before.created);
    ck_assert_uint_eq(after.acquired, before.acquired);
    registry_destroy(reg);
}
END_TEST

/* --------------------------------------------------- resize, prewarm */

START_TEST(test_resize_persists)
{
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    struct pool_stats st;
    char err[256];

    ck_assert_int_eq(registry_resize(reg, "org_007", 0, &st, err, sizeof err),
                     POOLD_ERR_INVALID);
    ck_assert_int_eq(registry_resize(reg, "org_007", 257, &st, err, sizeof err),
                     POOLD_ERR_INVALID);
    ck_assert_int_eq(registry_resize(reg, "treg_nope", 3, &st, err, sizeof err),
                     POOLD_ERR_UNKNOWN_ORG);
    ck_assert_int_eq(registry_resize(reg, "org_007", 7, &st, err, sizeof err),
                     POOLD_OK);
    ck_assert_uint_eq(st.max_size, 7);
    registry_destroy(reg);

    PGconn *db = admin();
    ck_assert_int_eq(sql_int(db, "SELECT pool_max_size FROM orgs "
                                 "WHERE org_id = 'org_007'"),
                     7);
    PQfinish(db);
    /* A new registry (a restart) starts with the stored size. */
    reg = start(&cfg);
    ck_assert_int_eq(registry_pool_stats(reg, "org_007", &st), POOLD_OK);
    ck_assert_uint_eq(st.max_size, 7);
    ck_assert_uint_eq(st.created, 0); /* lazy: no pool built by a GET */
    registry_destroy(reg);
}
END_TEST

/* Two resizes of one org: the second arrives while the first has stored
 * its size and not yet applied it (the seam holds the first there until
 * the second is waiting). The pool must end at the size stored last. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool armed;        /* the next RESIZE_STORED point holds */
    bool second_waits; /* the second resize waits for the connection */
    bool pause_armed;  /* the next PAUSE_STORED point resumes org_014 */
    int resume_rc;
    bool get_armed; /* the next RESIZE_STORED point reads a message */
    int get_rc;
    char *get_json;
} H = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static _Thread_local bool tl_second_resize; /* not housekeeping's wait */

void registry_test_hook(struct registry *reg, enum registry_test_point where)
{
    pthread_mutex_lock(&H.mu);
    if (where == REGISTRY_TEST_HK_CONN_BUSY && tl_second_resize) {
        H.second_waits = true;
        pthread_cond_broadcast(&H.cv);
    } else if (where == REGISTRY_TEST_PAUSE_STORED && H.pause_armed) {
        /* Another operator resumes the org between this pause's store and
         * its return. */
        char err[256];
        H.pause_armed = false;
        pthread_mutex_unlock(&H.mu);
        H.resume_rc =
            registry_set_paused(reg, "org_014", false, NULL, err, sizeof err);
        return;
    } else if (where == REGISTRY_TEST_RESIZE_STORED && H.get_armed) {
        /* A client reads a message while an operator call is under way. */
        char err[256];
        H.get_armed = false;
        pthread_mutex_unlock(&H.mu);
        H.get_rc = registry_message_get(reg, "org_013", "treg_get1", 0,
                                        &H.get_json, err, sizeof err);
        return;
    } else if (where == REGISTRY_TEST_RESIZE_STORED && H.armed) {
        H.armed = false;
        pthread_cond_broadcast(&H.cv); /* "first stored": start the second */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        while (!H.second_waits &&
               pthread_cond_timedwait(&H.cv, &H.mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&H.mu);
}

struct resize_arg {
    struct registry *reg;
    unsigned size;
    int rc;
};

static void *resize_thread(void *p)
{
    struct resize_arg *a = p;
    struct pool_stats st;
    char err[256];
    tl_second_resize = a->size == 7;
    a->rc = registry_resize(a->reg, "org_012", a->size, &st, err, sizeof err);
    return NULL;
}

START_TEST(test_resizes_apply_in_stored_order)
{
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    struct service_result res;
    struct pool_stats st;
    /* A pool exists, so both resizes apply to it. */
    ck_assert_int_eq(process(reg, "org_012", "treg_rs1", "00", &res), POOLD_OK);

    struct resize_arg first = {reg, 5, -1}, second = {reg, 7, -1};
    pthread_t t1, t2;
    H.armed = true;
    H.second_waits = false;
    ck_assert_int_eq(pthread_create(&t1, NULL, resize_thread, &first), 0);
    pthread_mutex_lock(&H.mu);
    while (H.armed) /* the first has stored 5 */
        pthread_cond_wait(&H.cv, &H.mu);
    pthread_mutex_unlock(&H.mu);
    ck_assert_int_eq(pthread_create(&t2, NULL, resize_thread, &second), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    ck_assert_int_eq(first.rc, POOLD_OK);
    ck_assert_int_eq(second.rc, POOLD_OK);
    /* The first held the step until the second was waiting for it. */
    ck_assert(H.second_waits);

    PGconn *db = admin();
    ck_assert_int_eq(sql_int(db, "SELECT pool_max_size FROM orgs "
                                 "WHERE org_id = 'org_012'"),
                     7);
    PQfinish(db);
    ck_assert_int_eq(registry_pool_stats(reg, "org_012", &st), POOLD_OK);
    ck_assert_uint_eq(st.max_size, 7);
    registry_destroy(reg);
}
END_TEST

/* A pause and a resume of one org, the resume wholly between the pause's
 * store and its return: the flag served must be the one stored last (the
 * resume's). A stale flag would stay: the refresh reads only what changed,
 * and both changes were read already. */
START_TEST(test_pause_then_resume_serves_the_stored_flag)
{
    struct registry_config cfg = base_config();
    struct registry *reg = start(&cfg);
    char err[256];
    bool paused = true;

    H.pause_armed = true;
    H.resume_rc = -1;
    ck_assert_int_eq(
        registry_set_paused(reg, "org_014", true, NULL, err, sizeof err),
        POOLD_OK);
    ck_assert(!H.pause_armed);
    ck_assert_int_eq(H.resume_rc, POOLD_OK);
    PGconn *db = admin();
    ck_assert_int_eq(sql_int(db, "SELECT paused::int FROM orgs "
                                 "WHERE org_id = 'org_014'"),
                     0);
    PQfinish(db);
    ck_assert_int_eq(registry_is_paused(reg, "org_014", &paused), POOLD_OK);
    ck_assert(!paused);
    registry_destroy(reg);
}
END_TEST

/* A client's message look-up does not wait for an operator call (the
 * admin token is one for every org): it is read here while a resize holds
 * the token. */
START_TEST(test_message_get_does_not_wait_for_admin_calls)
{
    struct registry_config cfg = base_config();
    cfg.acquire_timeout_ns = 500 * NS_PER_MS;
    struct registry *reg = start(&cfg);
    struct service_result res;
    struct pool_stats st;
    char err[256];

    ck_assert_int_eq(process(reg, "org_013", "treg_get1", "00", &res),
                     POOLD_OK);
    H.get_armed = true;
    H.get_rc = -1;
    ck_assert_int_eq(registry_resize(reg, "org_013", 3, &st, err, sizeof err),
                     POOLD_OK);
    ck_assert(!H.get_armed);
    ck_assert_msg(H.get_rc == POOLD_OK, "message get: %s",
                  poold_status_str(H.get_rc));
    ck_assert_ptr_nonnull(strstr(H.get_json, "treg_get1"));
    free(H.get_json);
    H.get_json = NULL;
    registry_destroy(reg);
}
END_TEST

START_TEST(test_prewarm_list)
{
    struct registry_config cfg = base_config();
    cfg.prewarm = "org_011,org_012";
    struct registry *reg = start(&cfg);
    struct org_wait a = {reg, "org_011", 0, {0}};
    struct org_wait b = {reg, "org_012", 0, {0}};
    struct pool_stats c;

    /* Prewarm runs on the housekeeping thread: wait for its result. */
    wait_until(org_has_idle, &a, 30000, "org_011's prewarmed service");
    wait_until(org_has_idle, &b, 30000, "org_012's prewarmed service");
    ck_assert_uint_eq(a.st.idle, 1);
    ck_assert_uint_eq(b.st.idle, 1);
    ck_assert_int_eq(registry_pool_stats(reg, "org_001", &c), POOLD_OK);
    ck_assert_uint_eq(c.created, 0); /* "org_01" is not "org_011" */
    registry_destroy(reg);
}
END_TEST

/* --------------------------------------------------------- mode none */

static bool no_poold_backend(void *db)
{
    return sql_int(db, "SELECT count(*) FROM pg_stat_activity "
                       "WHERE application_name LIKE 'poold%'") == 0;
}

START_TEST(test_mode_none_closes_everything)
{
    struct registry_config cfg = base_config();
    cfg.pooled = false;
    struct registry *reg = start(&cfg);
    struct service_result res;

    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "treg_none_%d", i);
        ck_assert_int_eq(process(reg, "org_004", id, "ab", &res), POOLD_OK);
        ck_assert_uint_eq(res.verdict.checks, demo_checks(4));
    }
    ck_assert_int_eq(process(reg, "org_004", "treg_none_0", "ab", &res),
                     POOLD_OK);
    ck_assert(res.duplicate);
    struct count_arg c = {0, 0};
    registry_foreach_pool(reg, count_pools, &c);
    ck_assert_int_eq(c.n, 0);
    registry_destroy(reg);

    /* Every per-request connection was closed (backend exit is async). */
    PGconn *db = admin();
    wait_until(no_poold_backend, db, 30000, "poold's backends to exit");
    PQfinish(db);
}
END_TEST

START_TEST(test_mode_none_keeps_the_cap)
{
    struct registry_config cfg = base_config();
    cfg.pooled = false;
    cfg.db_max_conns = 2;
    cfg.process_cost_ms = 20;
    struct registry *reg = start(&cfg);
    long long max_seen;
    int failed = run_cap_load(reg, &max_seen);
    ck_assert_int_eq(failed, 0);
    /* Each connection is opened and closed under a permit: never more than
     * two open. PostgreSQL may still list a backend that is exiting after
     * its close, so its view gets one more per permit. */
    struct pool_stats cs;
    registry_conn_stats(reg, &cs);
    ck_assert_uint_eq(cs.max_size, 2);
    ck_assert_uint_le(cs.peak_active, 2);
    ck_assert_uint_ge(cs.acquired, CAP_THREADS * CAP_PER_THREAD);
    ck_assert_int_le(max_seen, 4);
    ck_assert_int_gt(max_seen, 0);
    registry_destroy(reg);
}
END_TEST

static void count_built(void *arg, const char *org_id,
                        const struct pool_stats *st)
{
    (void)org_id;
    *(unsigned *)arg += st->created > 0;
}

/* Prewarming many slow builds must not stall housekeeping: readiness and
 * configuration refresh go on meanwhile. */
START_TEST(test_prewarm_does_not_block_housekeeping)
{
    struct registry_config cfg = base_config();
    cfg.prewarm = "all";
    cfg.build_cost_ms = 100; /* 100 orgs: ~10 s of builds */
    struct registry *reg = start(&cfg);
    uint64_t until = clock_now_ns() + 5 * NS_PER_S;

    /* Sampled every few ms for 5 s (a watch over a window, not a wait). */
    while (clock_now_ns() < until) {
        ck_assert(registry_is_ready(reg));
        clock_sleep_ms(TEST_POLL_MS);
    }
    /* Prewarm did run: some org was built (which first depends on the
     * map's order; org_000 may come late on a loaded machine). */
    unsigned built = 0;
    registry_foreach_pool(reg, count_built, &built);
    ck_assert_uint_ge(built, 1);
    registry_destroy(reg);
}
END_TEST

static void setup(void)
{
    log_init(LOG_FORMAT_TEXT, LOG_WARN);
    cleanup_db();
}

int main(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, setup, cleanup_db);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_isolation_many_threads);
    tcase_add_test(tc, test_cap_many_orgs);
    tcase_add_test(tc, test_busy_org_does_not_starve_another_at_the_cap);
    tcase_add_test(tc, test_orgs_take_turns_at_a_cap_of_one);
    tcase_add_test(tc, test_org_larger_than_the_cap_does_not_thrash);
    tcase_add_test(tc, test_config_change_retires);
    tcase_add_test(tc, test_config_change_retires_active_on_release);
    tcase_add_test(tc, test_config_change_committed_out_of_order);
    tcase_add_test(tc, test_org_deleted_while_requests_wait);
    tcase_add_test(tc, test_requests_race_their_orgs_delete_and_creation);
    tcase_add_test(tc, test_misconfigured_then_fixed);
    tcase_add_test(tc, test_unknown_org_flood);
    tcase_add_test(tc, test_resize_persists);
    tcase_add_test(tc, test_resizes_apply_in_stored_order);
    tcase_add_test(tc, test_pause_then_resume_serves_the_stored_flag);
    tcase_add_test(tc, test_message_get_does_not_wait_for_admin_calls);
    tcase_add_test(tc, test_prewarm_list);
    tcase_add_test(tc, test_mode_none_closes_everything);
    tcase_add_test(tc, test_mode_none_keeps_the_cap);
    tcase_add_test(tc, test_prewarm_does_not_block_housekeeping);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
