/* check_keys.c — keys.c: generation, digest, hex, the live-key set. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "keys_test.h"

START_TEST(generated_keys_are_distinct_and_well_formed)
{
    char k1[KEYS_KEY_LEN + 1], k2[KEYS_KEY_LEN + 1];
    char id1[KEYS_ID_LEN + 1], id2[KEYS_ID_LEN + 1];

    ck_assert_int_eq(keys_generate(k1, id1), POOLD_OK);
    ck_assert_int_eq(keys_generate(k2, id2), POOLD_OK);
    ck_assert_uint_eq(strlen(k1), KEYS_KEY_LEN);
    ck_assert(strncmp(k1, "pk_", 3) == 0);
    ck_assert_str_ne(k1, k2);
    ck_assert_str_ne(id1, id2);
    ck_assert(keys_id_is_valid(id1, strlen(id1)));
    /* 192 random bits: at least 128, as DESIGN.md asks. */
    ck_assert_int_ge(KEYS_SECRET_BYTES * 8, 128);
}
END_TEST

START_TEST(digest_is_sha256)
{
    unsigned char d[KEYS_DIGEST_LEN];
    char hex[2 * KEYS_DIGEST_LEN + 1];

    keys_digest("abc", 3, d); /* FIPS 180-2 test vector */
    keys_hex(d, sizeof d, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223"
                          "b00361a396177a9cb410ff61f20015ad");
}
END_TEST

START_TEST(key_ids_are_checked)
{
    ck_assert(keys_id_is_valid("key_0123456789abcdef", 20));
    ck_assert(!keys_id_is_valid("key_0123456789ABCDEF", 20));
    ck_assert(!keys_id_is_valid("key_0123456789abcde", 19));
    ck_assert(!keys_id_is_valid("kex_0123456789abcdef", 20));
    ck_assert(!keys_id_is_valid(NULL, 0));
}
END_TEST

START_TEST(hex_round_trip_and_rejects)
{
    unsigned char in[4] = {0x00, 0x7f, 0xa0, 0xff}, out[4];
    char hex[9];

    keys_hex(in, 4, hex);
    ck_assert_str_eq(hex, "007fa0ff");
    ck_assert(keys_unhex(hex, 8, out, 4));
    ck_assert_mem_eq(in, out, 4);
    ck_assert(!keys_unhex("007fa0f", 7, out, 4));
    ck_assert(!keys_unhex("007fa0fg", 8, out, 4));
}
END_TEST

static struct keys_entry entry(const char *key, const char *id, const char *org)
{
    struct keys_entry e;

    memset(&e, 0, sizeof e);
    keys_digest(key, strlen(key), e.digest);
    snprintf(e.key_id, sizeof e.key_id, "%s", id);
    snprintf(e.org_id, sizeof e.org_id, "%s", org);
    return e;
}

START_TEST(set_finds_live_keys_only)
{
    struct keys_set *set;
    struct keys_entry v[2] = {entry("pk_a", "key_000000000000000a", "org_a"),
                              entry("pk_b", "key_000000000000000b", "org_b")};
    char org[ORG_ID_MAX + 1];

    ck_assert_int_eq(keys_set_create(&set), POOLD_OK);
    ck_assert(!keys_set_is_loaded(set));
    ck_assert(!keys_set_find(set, "pk_a", 4, org));
    ck_assert_int_eq(keys_set_replace(set, v, 2), POOLD_OK);
    ck_assert(keys_set_is_loaded(set));
    ck_assert(keys_set_find(set, "pk_a", 4, org));
    ck_assert_str_eq(org, "org_a");
    ck_assert(keys_set_find(set, "pk_b", 4, org));
    ck_assert_str_eq(org, "org_b");
    ck_assert(!keys_set_find(set, "pk_c", 4, org));
    ck_assert(!keys_set_find(set, "pk_", 3, org));   /* a prefix */
    ck_assert(!keys_set_find(set, "pk_ab", 5, org)); /* an extension */
    ck_assert(!keys_set_find(set, "", 0, org));
    /* A reload without pk_a: revoked. */
    ck_assert_int_eq(keys_set_replace(set, &v[1], 1), POOLD_OK);
    ck_assert(!keys_set_find(set, "pk_a", 4, org));
    ck_assert(keys_set_find(set, "pk_b", 4, org));
    ck_assert_uint_eq(keys_set_count(set), 1);
    keys_set_destroy(set);
    keys_set_destroy(NULL);
}
END_TEST

START_TEST(set_holds_many_keys)
{
    enum { N = 5000 };
    struct keys_entry *v = calloc(N, sizeof *v);
    struct keys_set *set;
    char key[32], id[KEYS_ID_LEN + 1], org[ORG_ID_MAX + 1];

    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "pk_%d", i);
        snprintf(id, sizeof id, "key_%016x", i);
        v[i] = entry(key, id, i % 2 ? "org_odd" : "org_even");
    }
    ck_assert_int_eq(keys_set_create(&set), POOLD_OK);
    ck_assert_int_eq(keys_set_replace(set, v, N), POOLD_OK);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "pk_%d", i);
        ck_assert(keys_set_find(set, key, strlen(key), org));
        ck_assert_str_eq(org, i % 2 ? "org_odd" : "org_even");
    }
    ck_assert(!keys_set_find(set, "pk_5000", 7, org));
    keys_set_destroy(set);
    free(v);
}
END_TEST

/* Only the listed orgs' keys change: a changed org's keys are replaced
 * (a revocation, a new key), the others' are kept without being read. */
START_TEST(set_update_replaces_only_the_listed_orgs)
{
    struct keys_set *set;
    struct keys_entry v[3] = {entry("pk_a", "key_000000000000000a", "org_a"),
                              entry("pk_b", "key_000000000000000b", "org_b"),
                              entry("pk_c", "key_000000000000000c", "org_a")};
    const char orgs[2][ORG_ID_MAX + 1] = {"org_a", "org_z"};
    char org[ORG_ID_MAX + 1];

    ck_assert_int_eq(keys_set_create(&set), POOLD_OK);
    ck_assert_int_eq(keys_set_replace(set, v, 2), POOLD_OK);
    /* org_a: pk_a revoked, pk_c created; org_z (no keys) listed too. */
    ck_assert_int_eq(keys_set_update(set, orgs, 2, &v[2], 1), POOLD_OK);
    ck_assert(!keys_set_find(set, "pk_a", 4, org));
    ck_assert(keys_set_find(set, "pk_c", 4, org));
    ck_assert_str_eq(org, "org_a");
    ck_assert(keys_set_find(set, "pk_b", 4, org)); /* not listed: kept */
    ck_assert_str_eq(org, "org_b");
    ck_assert_uint_eq(keys_set_count(set), 2);
    /* Every key of a listed org gone (a deleted org). */
    ck_assert_int_eq(keys_set_update(set, orgs, 1, NULL, 0), POOLD_OK);
    ck_assert(!keys_set_find(set, "pk_c", 4, org));
    ck_assert_uint_eq(keys_set_count(set), 1);
    keys_set_destroy(set);
}
END_TEST

static Suite *keys_suite(void)
{
    Suite *s = suite_create("keys");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, generated_keys_are_distinct_and_well_formed);
    tcase_add_test(tc, digest_is_sha256);
    tcase_add_test(tc, key_ids_are_checked);
    tcase_add_test(tc, hex_round_trip_and_rejects);
    tcase_add_test(tc, set_finds_live_keys_only);
    tcase_add_test(tc, set_holds_many_keys);
    tcase_add_test(tc, set_update_replaces_only_the_listed_orgs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keys_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
