/* check_catalog.c — the catalog (org ids, schema check, changes, the
 * orgs load and pool sizes) against a real PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "catalog.h"
#include "clock.h"
#include "db.h"
#include "orgid.h"
#include "pg_fixture.h"

START_TEST(org_id_validator)
{
    static const char *good[] = {"a", "org_001", "A-b_9", "tsvc_x"};
    static const char *bad[] = {"",  "org 1", "org/1", "org.1",
                                "ö", "a\n",   "a'b",   "%"};
    char max[ORG_ID_MAX + 2];

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert(orgid_is_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!orgid_is_valid(bad[i], strlen(bad[i])), "%s", bad[i]);
    memset(max, 'x', sizeof max);
    ck_assert(orgid_is_valid(max, ORG_ID_MAX));
    ck_assert(!orgid_is_valid(max, ORG_ID_MAX + 1));
    ck_assert(!orgid_is_valid("ab\0c", 4)); /* embedded NUL */
    ck_assert(!orgid_is_valid(NULL, 0));
}
END_TEST

/* Read what changed since *cur and move it; true if id is among them. */
static bool changed(struct db_conn *conn, struct catalog_cursor *cur,
                    const char *id, size_t *n)
{
    struct catalog_changes ch;
    bool found = false;

    ck_assert_int_eq(
        catalog_changes_read(conn, cur, clock_now_ns(), &ch, err, sizeof err),
        POOLD_OK);
    ck_assert_msg(!ch.all, "a cursor that was read must not reload all");
    for (size_t i = 0; i < ch.n; i++)
        found |= strcmp(ch.ids[i], id) == 0;
    *n = ch.n;
    catalog_cursor_advance(cur, &ch, clock_now_ns());
    return found;
}

START_TEST(catalog_schema_changes_load_store)
{
    struct db_conn *conn = open_conn();
    struct catalog_cursor cur = {0};
    struct catalog_changes ch;
    struct org_info *orgs;
    size_t n;
    bool found = false;

    ck_assert_int_eq(catalog_check_schema(conn, err, sizeof err), POOLD_OK);
    /* A cursor never read: everything. */
    ck_assert_int_eq(
        catalog_changes_read(conn, &cur, clock_now_ns(), &ch, err, sizeof err),
        POOLD_OK);
    ck_assert(ch.all);
    catalog_cursor_advance(&cur, &ch, clock_now_ns());
    ck_assert(!changed(conn, &cur, "tsvc_cat", &n));
    ck_assert_uint_eq(n, 0);
    org_add("tsvc_cat", "{}", false);
    ck_assert(changed(conn, &cur, "tsvc_cat", &n));
    ck_assert_uint_eq(n, 1);
    ck_assert(!changed(conn, &cur, "tsvc_cat", &n)); /* read once */

    long long row_version = admin_ll(
        "SELECT config_version FROM orgs WHERE org_id = $1", "tsvc_cat");
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_cat", 7, err, sizeof err),
        POOLD_OK);
    /* A resize is a change poold reads (it applies sizes set in SQL) but
     * no configuration change: the row's version stays. */
    ck_assert(changed(conn, &cur, "tsvc_cat", &n));
    long long version2 = admin_ll(
        "SELECT config_version FROM orgs WHERE org_id = $1", "tsvc_cat");
    ck_assert_int_eq(version2, row_version);
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_nope", 7, err, sizeof err),
        POOLD_ERR_UNKNOWN_ORG);
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_cat", 0, err, sizeof err),
        POOLD_ERR_INVALID);

    ck_assert_int_eq(catalog_load(conn, 0, NULL, &orgs, &n, err, sizeof err),
                     POOLD_OK);
    ck_assert_uint_ge(n, 1);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(orgs[i].org_id, "tsvc_cat") != 0)
            continue;
        found = true;
        ck_assert(!orgs[i].enabled);
        ck_assert_int_eq(orgs[i].pool_max_size, 7);
        ck_assert_int_eq(orgs[i].version, version2);
    }
    ck_assert(found);
    free(orgs);

    /* The changed orgs' rows, one per id, a deleted one not present. */
    admin_exec("DELETE FROM orgs WHERE org_id = 'tsvc_cat'");
    org_add("tsvc_cat2", "{}", true);
    ck_assert_int_eq(
        catalog_changes_read(conn, &cur, clock_now_ns(), &ch, err, sizeof err),
        POOLD_OK);
    ck_assert_uint_eq(ch.n, 2);
    ck_assert_int_eq(catalog_load_some(conn, &ch, &orgs, err, sizeof err),
                     POOLD_OK);
    for (size_t i = 0; i < ch.n; i++) {
        ck_assert_str_eq(orgs[i].org_id, ch.ids[i]);
        ck_assert(orgs[i].present == (strcmp(ch.ids[i], "tsvc_cat2") == 0));
    }
    free(orgs);
    catalog_cursor_advance(&cur, &ch, clock_now_ns());
    catalog_cursor_deinit(&cur);
    db_conn_close(conn);
}
END_TEST

/* A transaction that started first and commits after a later one's change
 * was read is still read: transaction ids, not commit order. Fails with a
 * "largest number seen" cursor. */
START_TEST(catalog_changes_committed_out_of_order)
{
    struct db_conn *conn = open_conn();
    struct catalog_cursor cur = {0};
    struct catalog_changes ch;
    PGconn *slow = PQconnectdb(admin_url);
    size_t n;

    org_add("tsvc_ooo1", "{}", true);
    org_add("tsvc_ooo2", "{}", true);
    ck_assert_int_eq(
        catalog_changes_read(conn, &cur, clock_now_ns(), &ch, err, sizeof err),
        POOLD_OK);
    catalog_cursor_advance(&cur, &ch, clock_now_ns());
    ck_assert_int_eq(PQstatus(slow), CONNECTION_OK);
    PQclear(PQexec(slow, "BEGIN"));
    /* The slow one writes first (its xid is the smaller) ... */
    PGresult *r = PQexec(slow, "UPDATE orgs SET config = '{\"rules\": []}'"
                               " WHERE org_id = 'tsvc_ooo1'");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    /* ... a later one commits and is read ... */
    admin_exec("UPDATE orgs SET config = '{\"rules\": []}'"
               " WHERE org_id = 'tsvc_ooo2'");
    ck_assert(changed(conn, &cur, "tsvc_ooo2", &n));
    ck_assert_uint_eq(n, 1);
    /* ... then the slow one commits: read now. */
    r = PQexec(slow, "COMMIT");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    ck_assert(changed(conn, &cur, "tsvc_ooo1", &n));
    ck_assert_uint_eq(n, 1);
    PQfinish(slow);
    catalog_cursor_deinit(&cur);
    db_conn_close(conn);
}
END_TEST

/* Rows older than a day go; newer ones stay. */
static void count_pace(void *arg)
{
    (*(int *)arg)++;
}

/* The whole load goes a page at a time, in org_id order, every org once,
 * the pace called between two pages. */
START_TEST(catalog_load_pages_through_every_org)
{
    struct db_conn *conn = open_conn();
    struct org_info *orgs = NULL;
    int paced = 0;
    const struct catalog_pace pace = {count_pace, &paced};
    long long all;
    size_t n;

    for (int i = 0; i < 7; i++) {
        char id[32];
        snprintf(id, sizeof id, "tcat_page%d", i);
        org_add(id, "{}", true);
    }
    all = admin_ll("SELECT count(*) FROM orgs WHERE $1::text IS NOT NULL", "x");
    ck_assert_int_eq(catalog_load(conn, 3, &pace, &orgs, &n, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq((long long)n, all);
    ck_assert_int_eq(paced, all / 3);
    for (size_t i = 1; i < n; i++)
        ck_assert_int_lt(strcmp(orgs[i - 1].org_id, orgs[i].org_id), 0);
    free(orgs);
    db_conn_close(conn);
}
END_TEST

/* Rows older than a day go, a batch at a time, the oldest first. */
START_TEST(catalog_prune_changes_keeps_a_day)
{
    struct db_conn *conn = open_conn();
    long long deleted;

    admin_exec("DELETE FROM org_changes WHERE at < now() - interval '1 day'");
    admin_exec("INSERT INTO org_changes (org_id, at) VALUES"
               " ('tcat_prune_old', now() - interval '25 hours'),"
               " ('tcat_prune_new', now() - interval '23 hours')");
    admin_exec("INSERT INTO org_changes (org_id, at) SELECT 'tcat_bulk',"
               " now() - interval '26 hours' FROM generate_series(1, 5004)");
    ck_assert_int_eq(catalog_prune_changes(conn, &deleted, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(deleted, CATALOG_CHANGES_BATCH);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM org_changes WHERE"
                              " org_id = $1",
                              "tcat_prune_old"),
                     1); /* the bulk's rows were older */
    ck_assert_int_eq(catalog_prune_changes(conn, &deleted, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(deleted, 5);
    ck_assert_int_eq(catalog_prune_changes(conn, &deleted, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(deleted, 0);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM org_changes WHERE"
                              " org_id = $1",
                              "tcat_prune_old"),
                     0);
    ck_assert_int_eq(admin_ll("SELECT count(*) FROM org_changes WHERE"
                              " org_id = $1",
                              "tcat_prune_new"),
                     1);
    admin_exec("DELETE FROM org_changes WHERE org_id = 'tcat_prune_new'");
    db_conn_close(conn);
}
END_TEST

START_TEST(catalog_schema_missing_is_explained)
{
    char url[512];
    struct db_conn *conn = NULL;

    /* The superuser's "postgres" database has no poold tables. */
    snprintf(url, sizeof url, "%s", admin_url);
    char *slash = strrchr(url, '/');
    ck_assert_ptr_nonnull(slash);
    snprintf(slash, sizeof url - (size_t)(slash - url), "/postgres");
    struct db_settings s = settings;
    s.url = url;
    ck_assert_int_eq(db_conn_open(&s, clock_now_ns(), &conn, err, sizeof err),
                     POOLD_OK);
    ck_assert_int_eq(catalog_check_schema(conn, err, sizeof err), POOLD_ERR_DB);
    ck_assert_msg(strstr(err, "table orgs not found: apply the schema, "
                              "sql/0*.sql, again") != NULL,
                  "%s", err);
    db_conn_close(conn);
    /* A schema older than poold (an upgrade without applying sql/): the
     * function the careful dedupe path needs, dropped in a transaction
     * that is rolled back. */
    conn = open_conn();
    pg_ok(conn, "BEGIN");
    pg_ok(conn, "DROP FUNCTION poold_claim_orgs(text[], text[], timestamptz)");
    ck_assert_int_eq(catalog_check_schema(conn, err, sizeof err), POOLD_ERR_DB);
    ck_assert_msg(strstr(err, "function poold_claim_orgs not found") != NULL,
                  "%s", err);
    pg_ok(conn, "ROLLBACK");
    ck_assert_int_eq(catalog_check_schema(conn, err, sizeof err), POOLD_OK);
    db_conn_close(conn);
}
END_TEST

int main(void)
{
    const struct pgfix_case cases[] = {
        {"catalog",
         {org_id_validator, catalog_schema_changes_load_store,
          catalog_changes_committed_out_of_order,
          catalog_prune_changes_keeps_a_day,
          catalog_load_pages_through_every_org,
          catalog_schema_missing_is_explained}},
    };

    return pgfix_run("catalog", cases, sizeof cases / sizeof cases[0]);
}
