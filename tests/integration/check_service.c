/* check_service.c — a service (an org's rules and a connection) against a
 * real PostgreSQL: with its own connection, with a pooled one, and group
 * commits. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "clock.h"
#include "connpool.h"
#include "db.h"
#include "db_test.h"
#include "orgid.h"
#include "pool.h"
#include "service.h"
#include "service_test.h"
#include "../unit/test_util.h"
#include "pg_fixture.h"

/* ------------------------------------------------------------- helpers */

static struct service *create_ok(const char *org)
{
    struct service *svc = NULL;
    int rc = service_create(&env, org, &svc, err, sizeof err);
    ck_assert_msg(rc == POOLD_OK, "create %s: %s (%s)", org, err,
                  poold_status_str(rc));
    ck_assert_ptr_nonnull(svc);
    return svc;
}

static int process(struct service *svc, const char *id, const char *payload,
                   struct service_result *out)
{
    struct message m = {.id = id,
                        .id_len = strlen(id),
                        .payload = payload,
                        .payload_len = strlen(payload)};
    service_hydrate(svc, &m);
    int rc = service_process(svc, out, err, sizeof err);
    ck_assert(service_reset(svc));
    return rc;
}

/* Process and expect a fresh (not duplicate) result with nfailed fails. */
static void expect(struct service *svc, const char *id, const char *payload,
                   unsigned checks, unsigned nfailed)
{
    struct service_result r;
    int rc = process(svc, id, payload, &r);
    ck_assert_msg(rc == POOLD_OK, "process %s: %s", id, err);
    ck_assert(!r.duplicate);
    ck_assert_uint_eq(r.verdict.checks, checks);
    ck_assert_uint_eq(r.verdict.nfailed, nfailed);
    ck_assert(r.passed == (nfailed == 0));
}

/* The stored row's failed_rules as text, or "" if there is no row. */
static void stored_failed(const char *org, const char *id, char *buf,
                          size_t len)
{
    PGresult *res =
        admin_query("SELECT failed_rules::text FROM processed_messages"
                    " WHERE org_id = $1 AND message_id = $2",
                    org, id, (const char *)NULL);
    snprintf(buf, len, "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
}

/* ------------------------------------------------ service, own connection */

START_TEST(own_each_rule_type)
{
    struct service *svc;
    char failed[128];

    org_add("tsvc_max",
            "{\"rules\":[{\"type\":\"max_payload_bytes\","
            "\"value\":4}]}",
            true);
    org_add("tsvc_min",
            "{\"rules\":[{\"type\":\"min_payload_bytes\","
            "\"value\":2}]}",
            true);
    org_add("tsvc_hex", "{\"rules\":[{\"type\":\"hex_payload\"}]}", true);
    org_add("tsvc_pre",
            "{\"rules\":[{\"type\":\"id_prefix\","
            "\"value\":\"msg_\"}]}",
            true);
    org_add("tsvc_sub",
            "{\"rules\":[{\"type\":\"forbidden_substring\","
            "\"value\":\"dead\"}]}",
            true);
    org_add("tsvc_none", "{}", true);

    svc = create_ok("tsvc_max");
    ck_assert_str_eq(service_org(svc), "tsvc_max");
    ck_assert_uint_eq(service_rules(svc)->n, 1);
    expect(svc, "a", "abcd", 1, 0);
    expect(svc, "b", "abcde", 1, 1);
    stored_failed("tsvc_max", "b", failed, sizeof failed);
    ck_assert_str_eq(failed, "{max_payload_bytes}");
    stored_failed("tsvc_max", "a", failed, sizeof failed);
    ck_assert_str_eq(failed, "{}");
    service_close(svc);

    svc = create_ok("tsvc_min");
    expect(svc, "a", "ab", 1, 0);
    expect(svc, "b", "a", 1, 1);
    service_close(svc);

    svc = create_ok("tsvc_hex");
    expect(svc, "a", "9f3A", 1, 0);
    expect(svc, "b", "9f3", 1, 1);
    expect(svc, "c", "zz", 1, 1);
    service_close(svc);

    svc = create_ok("tsvc_pre");
    expect(svc, "msg_1", "x", 1, 0);
    expect(svc, "other", "x", 1, 1);
    stored_failed("tsvc_pre", "other", failed, sizeof failed);
    ck_assert_str_eq(failed, "{id_prefix}");
    service_close(svc);

    svc = create_ok("tsvc_sub");
    expect(svc, "a", "beef", 1, 0);
    expect(svc, "b", "deadbeef", 1, 1);
    service_close(svc);

    svc = create_ok("tsvc_none");
    expect(svc, "a", "", 0, 0);
    service_close(svc);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id LIKE $1",
                              "tsvc_%"),
                     12);
    wait_backends(0);
}
END_TEST

START_TEST(own_combined_rules_stored_in_order)
{
    struct service *svc;
    struct service_result r;
    char failed[256];

    org_add("tsvc_comb",
            "{\"rules\":["
            "{\"type\":\"forbidden_substring\",\"value\":\"zz\"},"
            "{\"type\":\"max_payload_bytes\",\"value\":3},"
            "{\"type\":\"id_prefix\",\"value\":\"msg_\"},"
            "{\"type\":\"hex_payload\"}]}",
            true);
    svc = create_ok("tsvc_comb");
    ck_assert_int_eq(process(svc, "x1", "zzzz", &r), POOLD_OK);
    ck_assert_uint_eq(r.verdict.nfailed, 4);
    stored_failed("tsvc_comb", "x1", failed, sizeof failed);
    ck_assert_str_eq(failed, "{forbidden_substring,max_payload_bytes,"
                             "id_prefix,hex_payload}");
    /* The duplicate gives the stored list back, in the same order. */
    ck_assert_int_eq(process(svc, "x1", "zzzz", &r), POOLD_OK);
    ck_assert(r.duplicate);
    ck_assert_uint_eq(r.verdict.nfailed, 4);
    ck_assert_int_eq(r.verdict.failed[0], RULE_FORBIDDEN_SUBSTRING);
    ck_assert_int_eq(r.verdict.failed[3], RULE_HEX_PAYLOAD);
    service_close(svc);
}
END_TEST

START_TEST(own_duplicate_and_conflict)
{
    struct service *svc;
    struct service_result r;

    org_add("tsvc_dup",
            "{\"rules\":[{\"type\":\"hex_payload\"},"
            "{\"type\":\"max_payload_bytes\",\"value\":8}]}",
            true);
    svc = create_ok("tsvc_dup");
    ck_assert_int_eq(process(svc, "m1", "xyz", &r), POOLD_OK);
    ck_assert(!r.duplicate);
    ck_assert(!r.passed);
    /* Change the rules underneath: a duplicate still gives the STORED
     * result, not a re-evaluation. */
    admin_exec("UPDATE processed_messages SET checks = 42"
               " WHERE org_id = 'tsvc_dup' AND message_id = 'm1'");
    ck_assert_int_eq(process(svc, "m1", "xyz", &r), POOLD_OK);
    ck_assert(r.duplicate);
    ck_assert(!r.passed);
    ck_assert_uint_eq(r.verdict.checks, 42);
    ck_assert_uint_eq(r.verdict.nfailed, 1);
    ck_assert_int_eq(r.verdict.failed[0], RULE_HEX_PAYLOAD);

    ck_assert_int_eq(process(svc, "m1", "xyzz", &r), POOLD_ERR_CONFLICT);
    ck_assert_msg(strstr(err, "m1") != NULL, "%s", err);
    ck_assert_int_eq(process(svc, "m1", "", &r), POOLD_ERR_CONFLICT);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_dup"),
                     1);
    ck_assert_int_eq(admin_ll("SELECT checks FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_dup"),
                     42);
    /* Same id in another org is another message. */
    org_add("tsvc_dup2", "{}", true);
    struct service *svc2 = create_ok("tsvc_dup2");
    ck_assert_int_eq(process(svc2, "m1", "other", &r), POOLD_OK);
    ck_assert(!r.duplicate);
    service_close(svc2);
    service_close(svc);
}
END_TEST

START_TEST(own_payload_bytes_hashed_exactly)
{
    struct service *svc;
    struct service_result r;
    const char *payload = "caf\xc3\xa9 \"q\" \\ \x01";

    org_add("tsvc_hash", "{}", true);
    svc = create_ok("tsvc_hash");
    ck_assert_int_eq(process(svc, "h1", payload, &r), POOLD_OK);
    /* The stored hash is sha256 of the payload's UTF-8 bytes. */
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = 'tsvc_hash' AND payload_sha256"
                              " = sha256(convert_to($1, 'UTF8'))",
                              payload),
                     1);
    ck_assert_int_eq(process(svc, "h1", payload, &r), POOLD_OK);
    ck_assert(r.duplicate);
    service_close(svc);
}
END_TEST

START_TEST(own_stored_unknown_rule_name_is_skipped)
{
    struct service *svc;
    struct service_result r;

    org_add("tsvc_old", "{}", true);
    admin_exec("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, failed_rules, payload_sha256) VALUES ('tsvc_old',"
               " 'o1', false, 3, '{retired_rule,hex_payload}',"
               " sha256('p'::bytea))");
    svc = create_ok("tsvc_old");
    ck_assert_int_eq(process(svc, "o1", "p", &r), POOLD_OK);
    ck_assert(r.duplicate);
    ck_assert(!r.passed);
    ck_assert_uint_eq(r.verdict.checks, 3);
    ck_assert_uint_eq(r.verdict.nfailed, 1);
    ck_assert_int_eq(r.verdict.failed[0], RULE_HEX_PAYLOAD);
    service_close(svc);
}
END_TEST

struct race_arg {
    struct service *svc;
    struct service_result r;
    int rc;
    char err[256];
};

static void *race_process(void *p)
{
    struct race_arg *a = p;
    a->rc = service_process(a->svc, &a->r, a->err, sizeof a->err);
    return NULL;
}

/* A concurrent insert of the same key commits after the statement's
 * snapshot: ON CONFLICT skips and the SELECT sees nothing. The service must
 * retry and report the committed row as a duplicate. */
START_TEST(own_concurrent_insert_after_snapshot)
{
    struct race_arg a = {0};
    struct message m = {
        .id = "r1", .id_len = 2, .payload = "abcd", .payload_len = 4};
    pthread_t th;
    PGconn *other = PQconnectdb(admin_url);

    ck_assert(PQstatus(other) == CONNECTION_OK);
    org_add("tsvc_race", "{}", true);
    a.svc = create_ok("tsvc_race");
    PQclear(PQexec(other, "BEGIN"));
    PQclear(PQexec(other, "INSERT INTO processed_messages (org_id,"
                          " message_id, passed, checks, failed_rules,"
                          " payload_sha256) VALUES ('tsvc_race', 'r1', false,"
                          " 9, '{hex_payload}', sha256('abcd'::bytea))"));
    service_hydrate(a.svc, &m);
    ck_assert_int_eq(pthread_create(&th, NULL, race_process, &a), 0);
    /* Wait until the service's INSERT blocks on the uncommitted row. */
    wait_backend_blocked(db_conn_backend_pid(service_conn(a.svc)));
    PGresult *res = PQexec(other, "COMMIT");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    pthread_join(th, NULL);
    ck_assert_msg(a.rc == POOLD_OK, "%s", a.err);
    ck_assert(a.r.duplicate);
    ck_assert(!a.r.passed);
    ck_assert_uint_eq(a.r.verdict.checks, 9);
    ck_assert_uint_eq(a.r.verdict.nfailed, 1);
    ck_assert(service_reset(a.svc));
    service_close(a.svc);
    PQfinish(other);
}
END_TEST

/* Many services race on one id: every one succeeds, exactly one wrote. */
START_TEST(own_same_id_from_many_services)
{
    enum { N = 8 };
    struct race_arg a[N];
    pthread_t th[N];
    struct message m = {
        .id = "s1", .id_len = 2, .payload = "beef", .payload_len = 4};
    int fresh = 0;

    org_add("tsvc_many", "{\"rules\":[{\"type\":\"hex_payload\"}]}", true);
    for (int i = 0; i < N; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].svc = create_ok("tsvc_many");
        service_hydrate(a[i].svc, &m);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_process, &a[i]), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(a[i].rc == POOLD_OK, "%s", a[i].err);
        ck_assert(a[i].r.passed);
        fresh += !a[i].r.duplicate;
        service_close(a[i].svc);
    }
    ck_assert_int_eq(fresh, 1);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_many"),
                     1);
}
END_TEST

START_TEST(own_errors_hold_nothing)
{
    struct service *svc = (struct service *)&svc;

    org_add("tsvc_off", "{}", false);
    org_add("tsvc_bad",
            "{\"rules\":[{\"type\":\"hex_payload\"},"
            "{\"type\":\"no_such_rule\",\"value\":1}]}",
            true);
    ck_assert_int_eq(service_create(&env, "tsvc_absent", &svc, err, sizeof err),
                     POOLD_ERR_UNKNOWN_ORG);
    ck_assert_ptr_null(svc);
    ck_assert_int_eq(service_create(&env, "tsvc_off", &svc, err, sizeof err),
                     POOLD_ERR_UNKNOWN_ORG);
    ck_assert_msg(strstr(err, "disabled") != NULL, "%s", err);
    ck_assert_int_eq(service_create(&env, "tsvc_bad", &svc, err, sizeof err),
                     POOLD_ERR_MISCONFIGURED);
    ck_assert_msg(strstr(err, "tsvc_bad") != NULL &&
                      strstr(err, "rules[1]") != NULL &&
                      strstr(err, "no_such_rule") != NULL,
                  "%s", err);
    ck_assert_ptr_null(svc);
    ck_assert_int_eq(service_create(&env, "bad id", &svc, err, sizeof err),
                     POOLD_ERR_INVALID);
    struct db_settings s = settings;
    struct service_env e = env;
    s.url = "postgresql://poold@127.0.0.1:1/pools";
    e.db = &s;
    ck_assert_int_eq(service_create(&e, "tsvc_off", &svc, err, sizeof err),
                     POOLD_ERR_DB);
    ck_assert_ptr_null(svc);
    wait_backends(0);
    service_close(NULL);
}
END_TEST

START_TEST(own_build_cost_is_honoured)
{
    struct service *svc;
    uint64_t t0;

    org_add("tsvc_cost", "{}", true);
    env.build_cost_ms = 80;
    t0 = clock_now_ns();
    svc = create_ok("tsvc_cost");
    ck_assert_uint_ge(clock_now_ns() - t0, 80 * NS_PER_MS);
    service_close(svc);
    env.build_cost_ms = 0;
    env.process_cost_ms = 40;
    svc = create_ok("tsvc_cost");
    t0 = clock_now_ns();
    expect(svc, "c1", "x", 0, 0);
    ck_assert_uint_ge(clock_now_ns() - t0, 40 * NS_PER_MS);
    service_close(svc);
}
END_TEST

START_TEST(own_message_forgotten_on_reset)
{
    struct service *svc;
    struct service_result r;
    struct message m = {
        .id = "f1", .id_len = 2, .payload = "x", .payload_len = 1};

    org_add("tsvc_fresh", "{}", true);
    svc = create_ok("tsvc_fresh");
    ck_assert_int_eq(service_process(svc, &r, err, sizeof err),
                     POOLD_ERR_INVALID);
    service_hydrate(svc, &m);
    ck_assert_int_eq(service_process(svc, &r, err, sizeof err), POOLD_OK);
    ck_assert(service_reset(svc));
    ck_assert_int_eq(service_process(svc, &r, err, sizeof err),
                     POOLD_ERR_INVALID);
    ck_assert(service_is_valid(svc, clock_now_ns()));
    service_close(svc);
}
END_TEST

START_TEST(own_db_error_writes_nothing)
{
    struct service *svc;
    struct service_result r;

    org_add("tsvc_dberr", "{}", true);
    svc = create_ok("tsvc_dberr");
    ck_assert(service_is_valid(svc, clock_now_ns()));
    terminate_backend(db_conn_backend_pid(service_conn(svc)));
    ck_assert(!service_is_valid(svc, clock_now_ns()));
    struct message m = {
        .id = "e1", .id_len = 2, .payload = "x", .payload_len = 1};
    service_hydrate(svc, &m);
    ck_assert_int_eq(service_process(svc, &r, err, sizeof err), POOLD_ERR_DB);
    ck_assert(!service_reset(svc));
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_dberr"),
                     0);
    service_close(svc);
}
END_TEST

/* ---------------------------------------------- service, pooled connection */

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static struct pool *conns_create(unsigned max, uint64_t lifetime_ns)
{
    struct pool_config pc = {.name = "conns",
                             .max_size = max,
                             .max_waiters = 8,
                             .max_lifetime_ns = lifetime_ns,
                             .validate_idle_ns = 0,
                             .clock = fake_clock};
    struct pool *p = NULL;

    fake_now = clock_now_ns();
    ck_assert_int_eq(pool_create(&connpool_conn_ops, &env, &pc, &p), POOLD_OK);
    env.conns = p;
    return p;
}

static void conns_destroy(struct pool *p)
{
    struct pool_stats st;
    pool_get_stats(p, &st);
    ck_assert_uint_eq(st.active, 0); /* everything was given back */
    pool_destroy(p);
    env.conns = NULL;
    wait_backends(0);
}

static struct pool_stats stats(struct pool *p)
{
    struct pool_stats st;
    pool_get_stats(p, &st);
    return st;
}

START_TEST(pooled_reacquired_equals_fresh)
{
    struct pool *p = conns_create(2, 0);
    struct service *svc, *fresh;
    struct service_result r;
    int pid;

    org_add("tsvc_eq",
            "{\"rules\":[{\"type\":\"id_prefix\",\"value\":"
            "\"msg_\"},{\"type\":\"forbidden_substring\","
            "\"value\":\"ff\"}]}",
            true);
    svc = create_ok("tsvc_eq");
    pid = db_conn_backend_pid(service_conn(svc));
    expect(svc, "msg_1", "00ff", 2, 1);
    service_close(svc); /* its connection goes back to the pool */
    ck_assert_uint_eq(stats(p).idle, 1);

    svc = create_ok("tsvc_eq");
    fresh = create_ok("tsvc_eq"); /* needs a second connection */
    ck_assert_int_eq(db_conn_backend_pid(service_conn(svc)), pid);
    const struct ruleset *a = service_rules(svc), *b = service_rules(fresh);
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_int_eq(a->rule[i].type, b->rule[i].type);
        ck_assert_int_eq(a->rule[i].num, b->rule[i].num);
        ck_assert_uint_eq(a->rule[i].str_len, b->rule[i].str_len);
        ck_assert_mem_eq(a->rule[i].str, b->rule[i].str, a->rule[i].str_len);
    }
    ck_assert_int_eq(service_config_version(svc),
                     service_config_version(fresh));
    ck_assert(db_conn_is_clean(service_conn(svc)));
    ck_assert_int_eq(PQtransactionStatus(db_conn_pg(service_conn(svc))),
                     PQTRANS_IDLE);
    ck_assert_int_eq(service_process(svc, &r, err, sizeof err),
                     POOLD_ERR_INVALID); /* no message left over */
    ck_assert(service_is_valid(svc, fake_now));
    service_close(fresh);
    service_close(svc);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_build_opens_no_connection)
{
    struct pool *p = conns_create(4, 0);
    struct service *svc;

    org_add("tsvc_warm", "{}", true);
    org_add("tsvc_warm2", "{}", true);
    svc = create_ok("tsvc_warm");
    expect(svc, "a", "x", 0, 0);
    service_close(svc);
    ck_assert_uint_eq(stats(p).created, 1);
    wait_backends(1);
    /* Any org's build takes the idle connection: no connect. */
    for (int i = 0; i < 20; i++) {
        svc = create_ok(i % 2 ? "tsvc_warm" : "tsvc_warm2");
        service_close(svc);
    }
    ck_assert_uint_eq(stats(p).created, 1);
    ck_assert_uint_eq(backends_of_app(), 1);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_terminated_backend_replaced)
{
    struct pool *p = conns_create(2, 0);
    struct service *svc;
    int pid;

    org_add("tsvc_term", "{}", true);
    svc = create_ok("tsvc_term");
    pid = db_conn_backend_pid(service_conn(svc));
    service_close(svc);
    terminate_backend(pid);
    svc = create_ok("tsvc_term"); /* validate finds it dead, opens anew */
    ck_assert_int_ne(db_conn_backend_pid(service_conn(svc)), pid);
    expect(svc, "t1", "x", 0, 0);
    service_close(svc);
    ck_assert_uint_eq(stats(p).destroyed_by[POOL_DESTROY_INVALID], 1);
    ck_assert_uint_eq(stats(p).created, 2);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_idle_session_timeout_replaced)
{
    struct pool *p = conns_create(2, 0);
    struct pool_item *item;
    struct db_conn *conn;
    int pid;

    ck_assert_int_eq(pool_acquire(p, 0, &item), POOLD_OK);
    conn = pool_item_object(item);
    pid = db_conn_backend_pid(conn);
    pg_ok(conn, "SET idle_session_timeout = '200ms'");
    pool_release(p, item);
    wait_backend_gone(pid); /* the server closed it while idle */
    ck_assert_int_eq(pool_acquire(p, 0, &item), POOLD_OK);
    conn = pool_item_object(item);
    ck_assert_int_ne(db_conn_backend_pid(conn), pid);
    pg_ok(conn, "SELECT 1");
    pool_release(p, item);
    ck_assert_uint_eq(stats(p).destroyed_by[POOL_DESTROY_INVALID], 1);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_ttl_recycles)
{
    struct pool *p = conns_create(2, 10 * NS_PER_S);
    struct service *svc;
    int pid;

    org_add("tsvc_ttl", "{}", true);
    svc = create_ok("tsvc_ttl");
    pid = db_conn_backend_pid(service_conn(svc));
    ck_assert(service_is_valid(svc, fake_now + 9 * NS_PER_S));
    ck_assert(!service_is_valid(svc, fake_now + 11 * NS_PER_S));
    service_close(svc);
    fake_now += 11 * NS_PER_S;
    svc = create_ok("tsvc_ttl");
    ck_assert_int_ne(db_conn_backend_pid(service_conn(svc)), pid);
    service_close(svc);
    ck_assert_uint_eq(stats(p).destroyed_by[POOL_DESTROY_EXPIRED], 1);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_dirty_connection_destroyed)
{
    struct pool *p = conns_create(2, 0);
    struct pool_item *item;
    struct service *svc;
    int pid;

    ck_assert_int_eq(pool_acquire(p, 0, &item), POOLD_OK);
    pid = db_conn_backend_pid(pool_item_object(item));
    pg_ok(pool_item_object(item), "BEGIN");
    pool_release(p, item); /* reset op says no */
    ck_assert_uint_eq(stats(p).idle, 0);
    ck_assert_uint_eq(stats(p).destroyed_by[POOL_DESTROY_RESET_FAILED], 1);

    org_add("tsvc_dirty", "{}", true);
    svc = create_ok("tsvc_dirty");
    ck_assert_int_ne(db_conn_backend_pid(service_conn(svc)), pid);
    pg_ok(service_conn(svc), "BEGIN");
    ck_assert(!service_reset(svc));
    service_close(svc); /* released as broken, not reused */
    ck_assert_uint_eq(stats(p).idle, 0);
    ck_assert_uint_eq(stats(p).destroyed, 2);
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_errors_hold_nothing)
{
    struct pool *p = conns_create(1, 0);
    struct service *svc = NULL;

    org_add("tsvc_poff", "{}", false);
    org_add("tsvc_pbad", "{\"rules\":[{\"type\":\"bogus\"}]}", true);
    ck_assert_int_eq(
        service_create(&env, "tsvc_pabsent", &svc, err, sizeof err),
        POOLD_ERR_UNKNOWN_ORG);
    ck_assert_uint_eq(stats(p).active, 0);
    ck_assert_int_eq(service_create(&env, "tsvc_poff", &svc, err, sizeof err),
                     POOLD_ERR_UNKNOWN_ORG);
    ck_assert_uint_eq(stats(p).active, 0);
    ck_assert_int_eq(service_create(&env, "tsvc_pbad", &svc, err, sizeof err),
                     POOLD_ERR_MISCONFIGURED);
    ck_assert_ptr_null(svc);
    ck_assert_uint_eq(stats(p).active, 0);
    ck_assert_uint_eq(stats(p).idle, 1); /* a healthy connection was kept */
    ck_assert_uint_eq(stats(p).created, 1);
    conns_destroy(p);
}
END_TEST

struct reclaim_state {
    struct service *victim;
    int calls;
    char org[ORG_ID_MAX + 1];
};

static bool reclaim_close_victim(void *arg, const char *org_id)
{
    struct reclaim_state *st = arg;
    st->calls++;
    snprintf(st->org, sizeof st->org, "%s", org_id);
    if (st->victim == NULL)
        return false;
    service_close(st->victim);
    st->victim = NULL;
    return true;
}

START_TEST(pooled_cap_reclaims_or_times_out)
{
    struct pool *p = conns_create(1, 0);
    struct reclaim_state st = {0};
    struct service *svc = NULL;
    uint64_t t0;

    org_add("tsvc_capa", "{}", true);
    org_add("tsvc_capb", "{}", true);
    st.victim = create_ok("tsvc_capa");
    env.reclaim = reclaim_close_victim;
    env.reclaim_arg = &st;
    svc = create_ok("tsvc_capb"); /* A's connection is handed over */
    ck_assert_int_eq(st.calls, 1);
    ck_assert_str_eq(st.org, "tsvc_capb");
    ck_assert_uint_eq(stats(p).created, 1);

    /* Nothing to reclaim: wait the acquire timeout, then give up. */
    env.conn_acquire_timeout_ns = 50 * NS_PER_MS;
    struct service *other = (struct service *)&other;
    t0 = clock_now_ns();
    ck_assert_int_eq(service_create(&env, "tsvc_capa", &other, err, sizeof err),
                     POOLD_ERR_TIMEOUT);
    ck_assert_uint_ge(clock_now_ns() - t0, 40 * NS_PER_MS);
    ck_assert_ptr_null(other);
    ck_assert_int_eq(st.calls, 2);
    ck_assert_uint_eq(stats(p).active, 1);
    service_close(svc);
    env.reclaim = NULL;
    conns_destroy(p);
}
END_TEST

START_TEST(pooled_connect_failure_is_db_error)
{
    struct db_settings s = settings;
    struct service *svc = NULL;
    struct pool *p;

    s.url = "postgresql://poold@127.0.0.1:1/pools";
    env.db = &s;
    p = conns_create(1, 0);
    ck_assert_int_eq(service_create(&env, "tsvc_x", &svc, err, sizeof err),
                     POOLD_ERR_DB);
    ck_assert_ptr_null(svc);
    ck_assert_uint_eq(stats(p).active, 0);
    conns_destroy(p);
}
END_TEST

/* ------------------------------------- groups, prepared, deadlines */

static void job_init(struct service_job *j, struct message *m, const char *id,
                     const char *payload)
{
    *m = (struct message){.id = id,
                          .id_len = strlen(id),
                          .payload = payload,
                          .payload_len = strlen(payload)};
    *j = (struct service_job){.msg = m};
}

/* One statement: new ids, a repeat inside the group (same payload:
 * duplicate; other payload: conflict), an id stored before (same payload:
 * the stored result; other: conflict). Neighbours of a conflict commit. */
START_TEST(group_duplicate_and_conflict_in_one_commit)
{
    struct message m[7];
    struct service_job j[7];
    struct service *svc;

    settings.prepared = true;
    org_add("tsvc_grp", "{\"rules\":[{\"type\":\"hex_payload\"}]}", true);
    svc = create_ok("tsvc_grp");
    job_init(&j[0], &m[0], "g3", "cc");
    ck_assert_int_eq(service_process_many(svc, j, 1, 0, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(j[0].status, POOLD_OK);
    job_init(&j[0], &m[0], "g1", "aa");
    job_init(&j[1], &m[1], "g2", "zz");
    job_init(&j[2], &m[2], "g1", "aa");
    job_init(&j[3], &m[3], "g1", "ab");
    job_init(&j[4], &m[4], "g3", "cc");
    job_init(&j[5], &m[5], "g3", "dd");
    job_init(&j[6], &m[6], "g4", "00");
    ck_assert_int_eq(service_process_many(svc, j, 7, 0, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(j[0].status, POOLD_OK);
    ck_assert(!j[0].result.duplicate && j[0].result.passed);
    ck_assert_int_eq(j[1].status, POOLD_OK);
    ck_assert(!j[1].result.duplicate && !j[1].result.passed);
    ck_assert_int_eq(j[2].status, POOLD_OK);
    ck_assert(j[2].result.duplicate && j[2].result.passed);
    ck_assert_int_eq(j[3].status, POOLD_ERR_CONFLICT);
    ck_assert_int_eq(j[4].status, POOLD_OK);
    ck_assert(j[4].result.duplicate);
    ck_assert_int_eq(j[5].status, POOLD_ERR_CONFLICT);
    ck_assert_int_eq(j[6].status, POOLD_OK);
    ck_assert(!j[6].result.duplicate);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_grp"),
                     4);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1 AND message_id = 'g1'"
                              " AND payload_sha256 = sha256('aa'::bytea)",
                              "tsvc_grp"),
                     1);
    service_close(svc);
}
END_TEST

/* Statements prepared on this session (one round trip on conn). */
static long long session_prepared(struct db_conn *conn)
{
    const struct db_query q = {
        .sql = "SELECT count(*) FROM pg_prepared_statements"};
    PGresult *res = NULL;
    ck_assert_int_eq(db_run(conn, &q, 0, &res, err, sizeof err), POOLD_OK);
    long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

/* Prepared once per connection; a new connection prepares again; off:
 * none at all. */
START_TEST(db_prepared_once_per_connection)
{
    struct service *svc;
    struct service_result r;

    org_add("tsvc_prep", "{}", true);
    settings.prepared = true;
    svc = create_ok("tsvc_prep");
    ck_assert_int_eq(process(svc, "p1", "aa", &r), POOLD_OK);
    ck_assert_int_eq(process(svc, "p2", "aa", &r), POOLD_OK);
    ck_assert_int_eq(session_prepared(service_conn(svc)), 2); /* load+commit */
    service_close(svc);
    svc = create_ok("tsvc_prep"); /* a new connection: none yet, then two */
    ck_assert_int_eq(process(svc, "p3", "aa", &r), POOLD_OK);
    ck_assert_int_eq(session_prepared(service_conn(svc)), 2);
    service_close(svc);
    settings.prepared = false;
    svc = create_ok("tsvc_prep");
    ck_assert_int_eq(process(svc, "p4", "aa", &r), POOLD_OK);
    ck_assert_int_eq(session_prepared(service_conn(svc)), 0);
    service_close(svc);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_prep"),
                     4);
}
END_TEST

struct commit_arg {
    struct service *svc;
    uint64_t deadline_ns;
    struct service_job job;
    int rc;
    uint64_t took_ns;
};

static void *commit_thread(void *p)
{
    struct commit_arg *a = p;
    uint64_t t0 = clock_now_ns();
    char e[256];
    a->rc =
        service_process_many(a->svc, &a->job, 1, a->deadline_ns, e, sizeof e);
    a->took_ns = clock_now_ns() - t0;
    return NULL;
}

/* A commit blocked on a row lock held elsewhere, with no server-side
 * timeout: the client's deadline (or an abort) ends it, as "unknown", and
 * the connection is never reused. */
static void blocked_commit(bool abort_it)
{
    struct message m = {
        .id = "l1", .id_len = 2, .payload = "abcd", .payload_len = 4};
    struct commit_arg a = {0};
    PGconn *holder;
    pthread_t th;

    settings.statement_timeout_ms = 0;
    org_add("tsvc_lock", "{}", true);
    a.svc = create_ok("tsvc_lock");
    a.job.msg = &m;
    a.deadline_ns = clock_now_ns() + (abort_it ? 30 : 1) * NS_PER_S;
    holder = row_lock_hold("tsvc_lock", "l1");
    ck_assert_int_eq(pthread_create(&th, NULL, commit_thread, &a), 0);
    if (abort_it) {
        /* The commit is sent and waits for the row: then abort. */
        wait_backend_blocked(db_conn_backend_pid(service_conn(a.svc)));
        db_abort_all();
    }
    pthread_join(th, NULL);
    ck_assert_int_eq(a.rc, POOLD_ERR_COMMIT_UNKNOWN);
    ck_assert_int_eq(a.job.status, POOLD_ERR_COMMIT_UNKNOWN);
    ck_assert_uint_lt(a.took_ns, (abort_it ? 30 : 3) * NS_PER_S);
    ck_assert(!db_conn_is_clean(service_conn(a.svc)));
    ck_assert(!db_conn_is_alive(service_conn(a.svc), clock_now_ns(), 0));
    row_lock_release(holder);
    service_close(a.svc);
}

START_TEST(db_deadline_ends_a_blocked_commit)
{
    blocked_commit(false);
}
END_TEST

START_TEST(db_abort_ends_a_blocked_commit)
{
    blocked_commit(true);
}
END_TEST

/* The INSERT commits, then the lookup of the rest fails (here: the role
 * may no longer read the stored rows): what the INSERT wrote is reported
 * committed, the message it did not write gets the error, and the call
 * does not read as "nothing written" (a batch would answer 503 with a
 * row stored). */
START_TEST(lookup_failure_after_insert_keeps_what_was_written)
{
    struct message m[2];
    struct service_job j[2];
    struct service *svc;
    char role[128], sql[512];
    struct db_conn *c = open_conn();
    const struct db_query q = {.sql = "SELECT current_user"};
    PGresult *res = NULL;
    long long rows;
    int rc;

    ck_assert_int_eq(db_run(c, &q, 0, &res, err, sizeof err), POOLD_OK);
    snprintf(role, sizeof role, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    db_conn_close(c);
    org_add("tsvc_lk", "{}", true);
    svc = create_ok("tsvc_lk");
    job_init(&j[0], &m[0], "old", "x");
    ck_assert_int_eq(service_process_many(svc, j, 1, 0, err, sizeof err),
                     POOLD_OK);
    snprintf(sql, sizeof sql, "REVOKE SELECT ON processed_messages FROM \"%s\"",
             role);
    admin_exec(sql);
    snprintf(sql, sizeof sql,
             "GRANT SELECT (org_id, message_id, processed_at) ON"
             " processed_messages" /* what the INSERT's window probe reads */
             " TO \"%s\"",
             role);
    admin_exec(sql);
    job_init(&j[0], &m[0], "new1", "y");
    job_init(&j[1], &m[1], "old", "x");
    rc = service_process_many(svc, j, 2, 0, err, sizeof err);
    snprintf(sql, sizeof sql, "GRANT SELECT ON processed_messages TO \"%s\"",
             role);
    admin_exec(sql); /* before any assertion: later tests need it */
    rows = admin_ll("SELECT count(*) FROM processed_messages"
                    " WHERE org_id = $1 AND message_id = 'new1'",
                    "tsvc_lk");
    ck_assert_int_eq(rows, 1);
    ck_assert_int_eq(rc, POOLD_OK);
    ck_assert_int_eq(j[0].status, POOLD_OK);
    ck_assert(!j[0].result.duplicate);
    ck_assert_int_eq(j[1].status, POOLD_ERR_DB);
    service_close(svc);
}
END_TEST

/* With the bounds of the partition now falls in, later in it than the
 * window (the fast path), a commit names no other partition: one that a DDL
 * holds (ACCESS EXCLUSIVE) does not stop it, cached plan or not. A
 * statement that probes through the partitioned table waits for it. */
START_TEST(scope_fast_path_touches_no_other_partition)
{
    struct service_scope sc;
    struct timespec ts;
    int64_t now_us, lo, hi;
    struct message m[2];
    struct service_job j[2];
    struct service *svc;
    struct service_result r;
    PGconn *holder;
    PGresult *res;
    char id[16];

    clock_gettime(CLOCK_REALTIME, &ts);
    now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    lo = now_us - 7200 * 1000000LL;
    hi = now_us + 7200 * 1000000LL;
    service_scope_init(&sc);
    service_scope_set(&sc, 3600, 60.0, &lo, &hi, 1);
    env.scope = &sc;
    settings.prepared = true;
    settings.statement_timeout_ms = 2000;
    admin_exec("CREATE TABLE tsvc_far PARTITION OF processed_messages"
               " FOR VALUES FROM ('2100-01-01') TO ('2100-01-02')");
    org_add("tsvc_fast", "{}", true);
    svc = create_ok("tsvc_fast");
    holder = PQconnectdb(admin_url);
    ck_assert(PQstatus(holder) == CONNECTION_OK);
    res = PQexec(holder, "BEGIN; LOCK TABLE tsvc_far IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    /* More than the 5 custom plans: the cached plan too. */
    for (int k = 0; k < 8; k++) {
        snprintf(id, sizeof id, "f%d", k);
        ck_assert_msg(process(svc, id, "p", &r) == POOLD_OK, "%s: %s", id, err);
        ck_assert(!r.duplicate);
    }
    for (int k = 0; k < 8; k++) {
        snprintf(id, sizeof id, "fb%d", k);
        job_init(&j[0], &m[0], id, "p");
        job_init(&j[1], &m[1], id + 1, "p");
        ck_assert_msg(service_process_many(svc, j, 2, 0, err, sizeof err) ==
                          POOLD_OK,
                      "%s: %s", id, err);
        ck_assert(j[0].status == POOLD_OK && !j[0].result.duplicate);
        ck_assert(j[1].status == POOLD_OK && !j[1].result.duplicate);
    }
    res = PQexec(holder, "ROLLBACK");
    PQclear(res);
    PQfinish(holder);
    /* Stored ones are found (the lookup reads every partition). */
    ck_assert_int_eq(process(svc, "f1", "p", &r), POOLD_OK);
    ck_assert(r.duplicate);
    ck_assert_int_eq(process(svc, "f1", "q", &r), POOLD_ERR_CONFLICT);
    job_init(&j[0], &m[0], "fb3", "p");
    job_init(&j[1], &m[1], "fnew", "p");
    ck_assert_int_eq(service_process_many(svc, j, 2, 0, err, sizeof err),
                     POOLD_OK);
    ck_assert(j[0].status == POOLD_OK && j[0].result.duplicate);
    ck_assert(j[1].status == POOLD_OK && !j[1].result.duplicate);
    service_close(svc);
    admin_exec("DROP TABLE tsvc_far");
    env.scope = NULL;
    service_scope_destroy(&sc);
}
END_TEST

/* Rows stored "long ago" for the guarded-form test: a partition of their
 * own (ON CONFLICT on today's rows does not see them), far from any
 * partition poold's housekeeping makes around now. */
#define OLD_DAY "1990-01-01"
#define OLD_AT "'1990-01-01 12:00:00+00'"
#define OLD_AT_S 631195200LL /* OLD_AT */

/* poold's clock skew_s off the server's and bounds [lo_s, hi_s) for the
 * partition now falls in, with a window reaching back to OLD_AT. */
static void scope_skewed(struct service_scope *sc, long long now_s,
                         long long lo_s, long long hi_s, long long skew_s)
{
    int64_t lo = lo_s * 1000000, hi = hi_s * 1000000;

    service_scope_set(sc, now_s - (OLD_AT_S) + 3600, 60.0, &lo, &hi, 1);
    pthread_mutex_lock(&sc->lock);
    sc->skew_us = skew_s * 1000000;
    sc->guard_pause_until_us = 0;
    pthread_mutex_unlock(&sc->lock);
}

static void expect_dup(struct service *svc, const char *id, bool duplicate)
{
    struct service_result r;

    ck_assert_msg(process(svc, id, "p", &r) == POOLD_OK, "%s: %s", id, err);
    ck_assert_msg(r.duplicate == duplicate, "%s: duplicate %d", id,
                  r.duplicate);
}

/* A batch of 70 (by COPY, service_commit.c) whose 36th id, old, was stored
 * at OLD_AT: answered as a duplicate (never stored twice), the rest new. */
static void expect_batch_dup(struct service *svc, const char *prefix,
                             const char *old)
{
    enum { N = 70, OLD = 35 };
    static char ids[N][32];
    static struct message m[N];
    static struct service_job j[N];

    for (int k = 0; k < N; k++) {
        snprintf(ids[k], sizeof ids[k], "%s_%d", prefix, k);
        job_init(&j[k], &m[k], k == OLD ? old : ids[k], "p");
    }
    ck_assert_msg(service_process_many(svc, j, N, 0, err, sizeof err) ==
                      POOLD_OK,
                  "%s: %s", prefix, err);
    for (int k = 0; k < N; k++) {
        ck_assert_msg(j[k].status == POOLD_OK, "%s/%d: %d", prefix, k,
                      j[k].status);
        ck_assert_msg(j[k].result.duplicate == (k == OLD), "%s/%d: dup %d",
                      prefix, k, j[k].result.duplicate);
    }
}

/* id claimed and stored at OLD_AT by a transaction that has not committed
 * (a writer on the other side of a boundary): a commit in the zone must
 * wait for it and answer a duplicate. */
static void expect_dup_after_claim(struct service *svc, long long window_s,
                                   const char *id)
{
    char sql[512];
    struct message m = {
        .id = id, .id_len = strlen(id), .payload = "p", .payload_len = 1};
    struct race_arg a = {.svc = svc};
    PGconn *holder = PQconnectdb(admin_url);
    pthread_t th;
    PGresult *res;

    ck_assert(PQstatus(holder) == CONNECTION_OK);
    snprintf(sql, sizeof sql,
             "BEGIN; SELECT poold_claim('tsvc_skew', ARRAY['%s'],"
             " now() - interval '%lld seconds');"
             " INSERT INTO processed_messages (org_id, message_id, passed,"
             " checks, failed_rules, payload_sha256, processed_at)"
             " VALUES ('tsvc_skew', '%s', true, 0, '{}', sha256('p'), " OLD_AT
             ")",
             id, window_s, id);
    res = PQexec(holder, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s",
                  PQresultErrorMessage(res));
    PQclear(res);
    service_hydrate(svc, &m);
    ck_assert_int_eq(pthread_create(&th, NULL, race_process, &a), 0);
    wait_backend_blocked(db_conn_backend_pid(service_conn(svc)));
    res = PQexec(holder, "COMMIT");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    pthread_join(th, NULL);
    ck_assert(service_reset(svc));
    ck_assert_msg(a.rc == POOLD_OK, "%s: %s", id, a.err);
    ck_assert_msg(a.r.duplicate, "%s stored twice", id);
    PQfinish(holder);
}

/* poold sends the guarded form of the path its clock says; where the
 * server's clock says otherwise, each half of the guard inserts nothing and
 * the second try takes the full statement. A guard missing either half
 * would store an id twice: one stored in an earlier partition, or one a
 * writer in the zone holds. */
START_TEST(scope_guarded_form_yields_to_the_server_clock)
{
    struct service_scope sc;
    struct service *svc;
    long long now_s = (long long)time(NULL);
    long long w = now_s - (OLD_AT_S) + 3600; /* the window */

    admin_exec("DROP TABLE IF EXISTS tsvc_past");
    admin_exec("CREATE TABLE tsvc_past PARTITION OF processed_messages"
               " FOR VALUES FROM ('" OLD_DAY "') TO ('1990-01-02')");
    admin_exec("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, failed_rules, payload_sha256, processed_at)"
               " SELECT 'tsvc_skew', id, true, 0, '{}', sha256('p'), " OLD_AT
               " FROM unnest(ARRAY['old_fast', 'old_probe', 'old_full',"
               " 'old_fast_b', 'old_probe_b']) id");
    service_scope_init(&sc);
    env.scope = &sc;
    org_add("tsvc_skew", "{}", true);
    svc = create_ok("tsvc_skew");
    /* The partition began 300 s ago: the server is on the probe path. */
    /* poold says fast (the fast guard's lower half). */
    scope_skewed(&sc, now_s, now_s - 300, now_s + 2 * w, w + 3600);
    expect_dup(svc, "old_fast", true);
    ck_assert(sc.guard_pause_until_us == 0); /* the lookup answered it */
    expect_dup(svc, "new_fast", false);
    ck_assert(sc.guard_pause_until_us > 0); /* a miss: full statements */
    /* The same for a batch: COPY's guard stores nothing. */
    scope_skewed(&sc, now_s, now_s - 300, now_s + 2 * w, w + 3600);
    expect_batch_dup(svc, "bf", "old_fast_b");
    ck_assert(sc.guard_pause_until_us > 0);
    /* Both say probe. */
    scope_skewed(&sc, now_s, now_s - 300, now_s + 2 * w, 0);
    expect_dup(svc, "old_probe", true);
    expect_dup(svc, "new_probe", false);
    expect_batch_dup(svc, "bp", "old_probe_b"); /* the look before COPY */
    /* poold says careful (near the start): the full statement. */
    scope_skewed(&sc, now_s, now_s - 300, now_s + 2 * w, -280);
    expect_dup(svc, "old_full", true);
    expect_dup(svc, "new_full", false);
    /* The server in the zone after the partition's start, poold says probe
     * (the probe guard's calm half). */
    scope_skewed(&sc, now_s, now_s - 30, now_s + 2 * w, 1000);
    expect_dup_after_claim(svc, w, "held_probe");
    /* The server in the zone before the partition's end, poold says fast
     * (the fast guard's upper half). */
    scope_skewed(&sc, now_s, now_s - w - 3600, now_s + 30, -1000);
    expect_dup_after_claim(svc, w, "held_fast");
    /* Each stored once: three today, five in the old partition; and two
     * batches of 69 new ones. */
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = $1",
                              "tsvc_skew"),
                     10 + 2 * 69);
    service_close(svc);
    admin_exec("DROP TABLE tsvc_past");
    env.scope = NULL;
    service_scope_destroy(&sc);
}
END_TEST

struct many_arg {
    struct service *svc;
    struct service_job *jobs;
    size_t n;
    int rc;
    char err[256];
};

static void *many_process(void *p)
{
    struct many_arg *a = p;
    a->rc =
        service_process_many(a->svc, a->jobs, a->n, 0, a->err, sizeof a->err);
    return NULL;
}

/* Near a partition's start (both clocks in the zone) a group of several
 * orgs goes as one full statement: poold_claim_orgs() claims every pair in
 * one pass, with poold_claim()'s buckets. Its commit waits for a writer
 * that claimed one org's id and stored it in an earlier partition, then
 * answers that id and one stored long ago as duplicates, and stores the
 * rest, of both orgs, in one transaction. Org by org, the rows would have
 * two transactions; with other buckets, it would not wait and would store
 * the writer's id twice. */
START_TEST(scope_careful_path_claims_several_orgs_in_one_statement)
{
    static const char *const orgs[] = {"tsvc_ca", "tsvc_ca", "tsvc_cb",
                                       "tsvc_cb", "tsvc_cb"};
    static const char *const ids[] = {"old_a", "c1", "c1", "held", "c2"};
    struct service_scope sc;
    struct message m[5];
    struct service_job j[5];
    struct many_arg a = {.jobs = j, .n = 5};
    long long now_s = (long long)time(NULL);
    long long w = now_s - (OLD_AT_S) + 3600; /* the window */
    PGconn *holder = PQconnectdb(admin_url);
    PGresult *res;
    pthread_t th;
    char sql[512];

    ck_assert(PQstatus(holder) == CONNECTION_OK);
    admin_exec("DROP TABLE IF EXISTS tsvc_past");
    admin_exec("CREATE TABLE tsvc_past PARTITION OF processed_messages"
               " FOR VALUES FROM ('" OLD_DAY "') TO ('1990-01-02')");
    org_add("tsvc_ca", "{}", true);
    org_add("tsvc_cb", "{}", true);
    admin_exec("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, failed_rules, payload_sha256, processed_at)"
               " VALUES ('tsvc_ca', $1, true, 0, '{}', sha256('p'), " OLD_AT
               ")",
               "old_a");
    service_scope_init(&sc);
    env.scope = &sc;
    settings.prepared = true;
    a.svc = create_ok("tsvc_ca");
    scope_skewed(&sc, now_s, now_s - 30, now_s + 2 * w, 0);
    snprintf(sql, sizeof sql,
             "BEGIN; SELECT poold_claim('tsvc_cb', ARRAY['held'],"
             " now() - interval '%lld seconds');"
             " INSERT INTO processed_messages (org_id, message_id, passed,"
             " checks, failed_rules, payload_sha256, processed_at)"
             " VALUES ('tsvc_cb', 'held', true, 0, '{}', sha256('p'), " OLD_AT
             ")",
             w);
    res = PQexec(holder, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s",
                  PQresultErrorMessage(res));
    PQclear(res);
    for (int k = 0; k < 5; k++) {
        job_init(&j[k], &m[k], ids[k], "p");
        j[k].org_id = orgs[k];
    }
    ck_assert_int_eq(pthread_create(&th, NULL, many_process, &a), 0);
    wait_backend_blocked(db_conn_backend_pid(service_conn(a.svc)));
    res = PQexec(holder, "COMMIT");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    pthread_join(th, NULL);
    ck_assert_msg(a.rc == POOLD_OK, "%s", a.err);
    for (int k = 0; k < 5; k++) {
        bool stored_before = k == 0 || k == 3;
        ck_assert_msg(j[k].status == POOLD_OK, "%s/%s: %d", orgs[k], ids[k],
                      j[k].status);
        ck_assert_msg(j[k].result.duplicate == stored_before,
                      "%s/%s: duplicate %d", orgs[k], ids[k],
                      j[k].result.duplicate);
    }
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = 'tsvc_cb' AND message_id = $1",
                              "held"),
                     1);
    ck_assert_int_eq(admin_ll("SELECT count(DISTINCT xmin::text) FROM"
                              " processed_messages WHERE org_id IN"
                              " ('tsvc_ca', 'tsvc_cb') AND message_id <> $1"
                              " AND processed_at > now() - interval '1 hour'",
                              "held"),
                     1);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM processed_messages"
                              " WHERE org_id IN ('tsvc_ca', 'tsvc_cb')"
                              " AND processed_at > now() - interval '1 hour'"
                              " AND message_id <> $1",
                              "held"),
                     3);
    PQfinish(holder);
    service_close(a.svc);
    admin_exec("DROP TABLE tsvc_past");
    env.scope = NULL;
    service_scope_destroy(&sc);
}
END_TEST

int main(void)
{
    const struct pgfix_case cases[] = {
        {"own",
         {own_each_rule_type, own_combined_rules_stored_in_order,
          own_duplicate_and_conflict, own_payload_bytes_hashed_exactly,
          own_stored_unknown_rule_name_is_skipped,
          own_concurrent_insert_after_snapshot, own_same_id_from_many_services,
          own_errors_hold_nothing, own_build_cost_is_honoured,
          own_message_forgotten_on_reset, own_db_error_writes_nothing}},
        {"pooled",
         {pooled_reacquired_equals_fresh, pooled_build_opens_no_connection,
          pooled_terminated_backend_replaced,
          pooled_idle_session_timeout_replaced, pooled_ttl_recycles,
          pooled_dirty_connection_destroyed, pooled_errors_hold_nothing,
          pooled_cap_reclaims_or_times_out,
          pooled_connect_failure_is_db_error}},
        {"group",
         {group_duplicate_and_conflict_in_one_commit,
          db_prepared_once_per_connection, db_deadline_ends_a_blocked_commit,
          db_abort_ends_a_blocked_commit,
          lookup_failure_after_insert_keeps_what_was_written,
          scope_fast_path_touches_no_other_partition,
          scope_guarded_form_yields_to_the_server_clock,
          scope_careful_path_claims_several_orgs_in_one_statement}},
    };

    return pgfix_run("service", cases, sizeof cases / sizeof cases[0]);
}
