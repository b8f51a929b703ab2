/* check_catalog.c — the catalog (org ids, schema check, fingerprint, the
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

START_TEST(catalog_schema_fingerprint_load_store)
{
    struct db_conn *conn = open_conn();
    long long count, version, count2, version2;
    struct org_info *orgs;
    size_t n;
    bool found = false;

    ck_assert_int_eq(catalog_check_schema(conn, err, sizeof err), POOLD_OK);
    ck_assert_int_eq(
        catalog_fingerprint(conn, &count, &version, err, sizeof err), POOLD_OK);
    org_add("tsvc_cat", "{}", false);
    ck_assert_int_eq(
        catalog_fingerprint(conn, &count2, &version2, err, sizeof err),
        POOLD_OK);
    ck_assert_int_eq(count2, count + 1);
    ck_assert_int_ne(version2, version);

    long long row_version = admin_ll(
        "SELECT config_version FROM orgs WHERE org_id = $1", "tsvc_cat");
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_cat", 7, err, sizeof err),
        POOLD_OK);
    /* A resize moves the fingerprint (poold applies sizes set in SQL)
     * but is no configuration change: the row's version stays. */
    ck_assert_int_eq(
        catalog_fingerprint(conn, &count, &version, err, sizeof err), POOLD_OK);
    ck_assert_int_ne(version, version2);
    version2 = admin_ll("SELECT config_version FROM orgs WHERE org_id = $1",
                        "tsvc_cat");
    ck_assert_int_eq(version2, row_version);
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_nope", 7, err, sizeof err),
        POOLD_ERR_UNKNOWN_ORG);
    ck_assert_int_eq(
        catalog_store_pool_size(conn, "tsvc_cat", 0, err, sizeof err),
        POOLD_ERR_INVALID);

    ck_assert_int_eq(catalog_load(conn, &orgs, &n, err, sizeof err), POOLD_OK);
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
    ck_assert_msg(strstr(err, "table orgs not found: apply sql/") != NULL, "%s",
                  err);
    db_conn_close(conn);
}
END_TEST

int main(void)
{
    const struct pgfix_case cases[] = {
        {"catalog",
         {org_id_validator, catalog_schema_fingerprint_load_store,
          catalog_schema_missing_is_explained}},
    };

    return pgfix_run("catalog", cases, sizeof cases / sizeof cases[0]);
}
