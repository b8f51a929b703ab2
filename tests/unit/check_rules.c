/* check_rules.c — unit tests of rules parsing and evaluation (no I/O). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

static struct ruleset rs;
static char err[256];

/* Parse a config that must be valid; fails the test otherwise. */
static void parse_ok(const char *json)
{
    int rc = rules_parse(json, strlen(json), &rs, err, sizeof err);
    ck_assert_msg(rc == POOLD_OK, "config %s: %s", json, err);
}

/* Parse a config that must be refused; err must mention want. */
static void parse_bad(const char *json, const char *want)
{
    err[0] = '\0';
    int rc = rules_parse(json, strlen(json), &rs, err, sizeof err);
    ck_assert_msg(rc == POOLD_ERR_MISCONFIGURED, "config %s accepted", json);
    ck_assert_msg(strstr(err, want) != NULL, "err \"%s\" lacks \"%s\"", err,
                  want);
    ck_assert_uint_eq(rs.n, 0);
    ck_assert_ptr_null(rs.rule);
}

static struct rules_verdict eval(const char *id, const char *payload)
{
    struct rules_verdict v;
    rules_eval(&rs, id, strlen(id), payload, strlen(payload), &v);
    return v;
}

static void teardown(void)
{
    rules_clear(&rs);
}

/* Passes (1 check, 0 failed) or fails (1 check, failed = the one rule). */
static void expect_one(const char *id, const char *payload, bool pass,
                       enum rule_type type)
{
    struct rules_verdict v = eval(id, payload);
    ck_assert_uint_eq(v.checks, 1);
    ck_assert_msg(v.nfailed == (pass ? 0u : 1u), "id %s payload \"%s\": %s", id,
                  payload, pass ? "failed" : "passed");
    if (!pass)
        ck_assert_int_eq(v.failed[0], type);
}

START_TEST(empty_config_has_no_rules)
{
    parse_ok("{}");
    ck_assert_uint_eq(rs.n, 0);
    struct rules_verdict v = eval("m", "anything");
    ck_assert_uint_eq(v.checks, 0);
    ck_assert_uint_eq(v.nfailed, 0);
    rules_clear(&rs);
    parse_ok("{\"rules\": []}");
    ck_assert_uint_eq(rs.n, 0);
    rules_clear(&rs);
    parse_ok("{\"other\": 1}"); /* unknown top-level keys are ignored */
    ck_assert_uint_eq(rs.n, 0);
}
END_TEST

START_TEST(copy_is_deep_and_evaluates_the_same)
{
    struct ruleset copy;
    parse_ok("{\"rules\":[{\"type\":\"id_prefix\",\"value\":\"msg_\"},"
             "{\"type\":\"max_payload_bytes\",\"value\":4},"
             "{\"type\":\"forbidden_substring\",\"value\":\"ff\"}]}");
    ck_assert_int_eq(rules_copy(&copy, &rs), POOLD_OK);
    ck_assert_uint_eq(copy.n, 3);
    ck_assert_ptr_ne(copy.rule[0].str, rs.rule[0].str);
    rules_clear(&rs); /* the copy must not share anything with it */
    struct rules_verdict v;
    rules_eval(&copy, "abc", 3, "00ff11", 6, &v);
    ck_assert_uint_eq(v.checks, 3);
    ck_assert_uint_eq(v.nfailed, 3);
    ck_assert_int_eq(v.failed[0], RULE_ID_PREFIX);
    ck_assert_int_eq(v.failed[2], RULE_FORBIDDEN_SUBSTRING);
    rules_clear(&copy);
    struct ruleset empty = {0}, copy2;
    ck_assert_int_eq(rules_copy(&copy2, &empty), POOLD_OK);
    ck_assert_uint_eq(copy2.n, 0);
    ck_assert_ptr_null(copy2.rule);
}
END_TEST

START_TEST(max_payload_bytes)
{
    parse_ok("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":4}]}");
    ck_assert_int_eq(rs.rule[0].num, 4);
    expect_one("m", "", true, RULE_MAX_PAYLOAD_BYTES);
    expect_one("m", "abcd", true, RULE_MAX_PAYLOAD_BYTES);
    expect_one("m", "abcde", false, RULE_MAX_PAYLOAD_BYTES);
    rules_clear(&rs);
    parse_ok("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":0}]}");
    expect_one("m", "", true, RULE_MAX_PAYLOAD_BYTES);
    expect_one("m", "a", false, RULE_MAX_PAYLOAD_BYTES);
}
END_TEST

START_TEST(min_payload_bytes)
{
    parse_ok("{\"rules\":[{\"type\":\"min_payload_bytes\",\"value\":3}]}");
    expect_one("m", "", false, RULE_MIN_PAYLOAD_BYTES);
    expect_one("m", "ab", false, RULE_MIN_PAYLOAD_BYTES);
    expect_one("m", "abc", true, RULE_MIN_PAYLOAD_BYTES);
    expect_one("m", "abcdef", true, RULE_MIN_PAYLOAD_BYTES);
    rules_clear(&rs);
    /* Bytes, not characters: "é" is two. */
    parse_ok("{\"rules\":[{\"type\":\"min_payload_bytes\",\"value\":2}]}");
    expect_one("m", "\xc3\xa9", true, RULE_MIN_PAYLOAD_BYTES);
}
END_TEST

START_TEST(hex_payload)
{
    parse_ok("{\"rules\":[{\"type\":\"hex_payload\"}]}");
    expect_one("m", "", true, RULE_HEX_PAYLOAD); /* even length 0 */
    expect_one("m", "00", true, RULE_HEX_PAYLOAD);
    expect_one("m", "09afAF", true, RULE_HEX_PAYLOAD);
    expect_one("m", "9f3a", true, RULE_HEX_PAYLOAD);
    expect_one("m", "abc", false, RULE_HEX_PAYLOAD);  /* odd */
    expect_one("m", "0g", false, RULE_HEX_PAYLOAD);   /* not a digit */
    expect_one("m", "0x12", false, RULE_HEX_PAYLOAD); /* no prefix */
    expect_one("m", "12 34", false, RULE_HEX_PAYLOAD);
    expect_one("m", "\xc3\xa9", false, RULE_HEX_PAYLOAD);
    /* The bytes just outside each range, anywhere in the payload. */
    const char *near[] = {"/0", "0:", "@0", "0G", "`0", "0g", "00\xb0\xb0"};
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++)
        expect_one("m", near[i], false, RULE_HEX_PAYLOAD);
    /* A NUL inside (by length: a C string would end there). */
    struct rules_verdict v;
    rules_eval(&rs, "m", 1, "0\0", 2, &v);
    ck_assert_uint_eq(v.nfailed, 1);
    rules_clear(&rs);
    parse_ok("{\"rules\":[{\"type\":\"hex_payload\",\"value\":null}]}");
    ck_assert_uint_eq(rs.n, 1);
}
END_TEST

START_TEST(id_prefix)
{
    parse_ok("{\"rules\":[{\"type\":\"id_prefix\",\"value\":\"msg_\"}]}");
    ck_assert_str_eq(rs.rule[0].str, "msg_");
    ck_assert_uint_eq(rs.rule[0].str_len, 4);
    expect_one("msg_1", "x", true, RULE_ID_PREFIX);
    expect_one("msg_", "x", true, RULE_ID_PREFIX);
    expect_one("msg", "x", false, RULE_ID_PREFIX); /* shorter than prefix */
    expect_one("MSG_1", "x", false, RULE_ID_PREFIX);
    expect_one("xmsg_1", "x", false, RULE_ID_PREFIX);
    rules_clear(&rs);
    parse_ok("{\"rules\":[{\"type\":\"id_prefix\",\"value\":\"\"}]}");
    expect_one("anything", "x", true, RULE_ID_PREFIX);
}
END_TEST

START_TEST(forbidden_substring)
{
    parse_ok("{\"rules\":[{\"type\":\"forbidden_substring\","
             "\"value\":\"dead\"}]}");
    expect_one("m", "beef", true, RULE_FORBIDDEN_SUBSTRING);
    expect_one("m", "dea", true, RULE_FORBIDDEN_SUBSTRING);
    expect_one("m", "DEAD", true, RULE_FORBIDDEN_SUBSTRING); /* exact bytes */
    expect_one("m", "dead", false, RULE_FORBIDDEN_SUBSTRING);
    expect_one("m", "00deadbeef", false, RULE_FORBIDDEN_SUBSTRING);
    expect_one("m", "beefdead", false, RULE_FORBIDDEN_SUBSTRING);
}
END_TEST

START_TEST(payload_is_bytes_not_c_string)
{
    /* The payload length is what counts, not strlen (no NUL is ever passed,
     * but a payload is not assumed to be terminated where it ends). */
    struct rules_verdict v;
    parse_ok("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":2},"
             "{\"type\":\"hex_payload\"}]}");
    rules_eval(&rs, "m", 1, "abXYZ", 2, &v);
    ck_assert_uint_eq(v.checks, 2);
    ck_assert_uint_eq(v.nfailed, 0);
}
END_TEST

START_TEST(combined_failures_in_config_order)
{
    struct rules_verdict v;
    parse_ok("{\"rules\":["
             "{\"type\":\"forbidden_substring\",\"value\":\"zz\"},"
             "{\"type\":\"max_payload_bytes\",\"value\":3},"
             "{\"type\":\"id_prefix\",\"value\":\"msg_\"},"
             "{\"type\":\"hex_payload\"},"
             "{\"type\":\"min_payload_bytes\",\"value\":1}]}");
    ck_assert_uint_eq(rs.n, 5);
    v = eval("other", "zzzz");
    ck_assert_uint_eq(v.checks, 5);
    ck_assert_uint_eq(v.nfailed, 4);
    ck_assert_int_eq(v.failed[0], RULE_FORBIDDEN_SUBSTRING);
    ck_assert_int_eq(v.failed[1], RULE_MAX_PAYLOAD_BYTES);
    ck_assert_int_eq(v.failed[2], RULE_ID_PREFIX);
    ck_assert_int_eq(v.failed[3], RULE_HEX_PAYLOAD);
    v = eval("msg_1", "ab");
    ck_assert_uint_eq(v.checks, 5);
    ck_assert_uint_eq(v.nfailed, 0);
    v = eval("msg_1", "");
    ck_assert_uint_eq(v.nfailed, 1);
    ck_assert_int_eq(v.failed[0], RULE_MIN_PAYLOAD_BYTES);
}
END_TEST

START_TEST(same_type_twice)
{
    struct rules_verdict v;
    parse_ok("{\"rules\":["
             "{\"type\":\"forbidden_substring\",\"value\":\"a\"},"
             "{\"type\":\"forbidden_substring\",\"value\":\"b\"}]}");
    v = eval("m", "ab");
    ck_assert_uint_eq(v.nfailed, 2);
    v = eval("m", "b");
    ck_assert_uint_eq(v.nfailed, 1);
    ck_assert_int_eq(v.failed[0], RULE_FORBIDDEN_SUBSTRING);
}
END_TEST

START_TEST(type_names_round_trip)
{
    for (int t = 0; t < RULE__COUNT; t++) {
        enum rule_type back;
        ck_assert(rule_type_parse(rule_type_str((enum rule_type)t), &back));
        ck_assert_int_eq(back, t);
    }
    enum rule_type dummy;
    ck_assert(!rule_type_parse("Max_payload_bytes", &dummy));
    ck_assert(!rule_type_parse("", &dummy));
    ck_assert_str_eq(rule_type_str(RULE__COUNT), "unknown");
}
END_TEST

/* The failed rules as stored (a text[] literal) and read back: every
 * name, RULES_MAX of the longest, none; a name another poold wrote is
 * skipped and reported, the others kept. */
START_TEST(failed_literal_round_trip)
{
    struct rules_verdict v = {.nfailed = 0}, back;
    char buf[RULES_FAILED_LITERAL_MAX], unknown[64] = "";

    ck_assert_uint_eq(rules_failed_literal(&v, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "{}");
    ck_assert_uint_eq(rules_failed_parse(buf, &back, unknown, sizeof unknown),
                      0);
    ck_assert_uint_eq(back.nfailed, 0);
    for (int t = 0; t < RULE__COUNT; t++)
        v.failed[v.nfailed++] = (enum rule_type)t;
    rules_failed_literal(&v, buf, sizeof buf);
    ck_assert_str_eq(buf, "{max_payload_bytes,min_payload_bytes,hex_payload,"
                          "id_prefix,forbidden_substring}");
    ck_assert_uint_eq(rules_failed_parse(buf, &back, unknown, sizeof unknown),
                      0);
    ck_assert_uint_eq(back.nfailed, v.nfailed);
    ck_assert_mem_eq(back.failed, v.failed, v.nfailed * sizeof v.failed[0]);
    v.nfailed = RULES_MAX;
    for (int i = 0; i < RULES_MAX; i++)
        v.failed[i] = RULE_FORBIDDEN_SUBSTRING;
    ck_assert_uint_lt(rules_failed_literal(&v, buf, sizeof buf), sizeof buf);
    ck_assert_uint_eq(rules_failed_parse(buf, &back, unknown, sizeof unknown),
                      0);
    ck_assert_uint_eq(back.nfailed, RULES_MAX);
    ck_assert_uint_eq(
        rules_failed_parse("{hex_payload,from_a_newer_poold,id_prefix,x}",
                           &back, unknown, sizeof unknown),
        2);
    ck_assert_str_eq(unknown, "from_a_newer_poold");
    ck_assert_uint_eq(back.nfailed, 2);
    ck_assert_int_eq(back.failed[0], RULE_HEX_PAYLOAD);
    ck_assert_int_eq(back.failed[1], RULE_ID_PREFIX);
}
END_TEST

START_TEST(misconfigurations)
{
    parse_bad("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":1},"
              "{\"type\":\"no_such_rule\"}]}",
              "rules[1] (type \"no_such_rule\"): unknown rule type");
    parse_bad("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":\"9\"}]}",
              "rules[0] (type \"max_payload_bytes\")");
    parse_bad("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":1.5}]}",
              "non-negative integer");
    parse_bad("{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":4.0}]}",
              "non-negative integer");
    parse_bad("{\"rules\":[{\"type\":\"min_payload_bytes\",\"value\":-1}]}",
              "rules[0] (type \"min_payload_bytes\")");
    parse_bad("{\"rules\":[{\"type\":\"min_payload_bytes\",\"value\":true}]}",
              "non-negative integer");
    parse_bad("{\"rules\":[{\"type\":\"min_payload_bytes\"}]}",
              "non-negative integer");
    parse_bad("{\"rules\":[{\"type\":\"id_prefix\",\"value\":3}]}",
              "rules[0] (type \"id_prefix\"): \"value\" must be a string");
    parse_bad("{\"rules\":[{\"type\":\"forbidden_substring\"}]}",
              "must be a non-empty string");
    parse_bad("{\"rules\":[{\"type\":\"hex_payload\",\"value\":1}]}",
              "takes no \"value\"");
    parse_bad("{\"rules\":[{\"value\":1}]}", "rules[0]: \"type\"");
    parse_bad("{\"rules\":[{\"type\":7}]}", "rules[0]: \"type\"");
    parse_bad("{\"rules\":[\"hex_payload\"]}", "rules[0]: must be an object");
    parse_bad("{\"rules\":{}}", "\"rules\" must be an array");
    parse_bad("{\"rules\":null}", "\"rules\" must be an array");
    parse_bad("[]", "must be a JSON object");
    parse_bad("{\"rules\":[", "not valid JSON");
    parse_bad("", "not valid JSON");
    parse_bad("{} {}", "not valid JSON"); /* trailing garbage */
    parse_bad("{\"rules\":[],\"rules\":[]}", "not valid JSON");
    parse_bad("{\"rules\":[{\"type\":\"id_prefix\",\"type\":\"hex_payload\","
              "\"value\":\"a\"}]}",
              "duplicate");
    parse_bad("{\"rules\":[{\"type\":\"id_prefix\",\"value\":\"a\\u0000b\"}]}",
              "not valid JSON");
}
END_TEST

/* Every payload contains "": DESIGN.md's "fails when the payload contains
 * value" would fail every message, so the value is refused instead. */
START_TEST(forbidden_substring_empty_is_refused)
{
    parse_bad("{\"rules\":[{\"type\":\"hex_payload\"},"
              "{\"type\":\"forbidden_substring\",\"value\":\"\"}]}",
              "rules[1] (type \"forbidden_substring\"): \"value\" must be a "
              "non-empty string");
}
END_TEST

/* {"rules":[ n x {"type":"hex_payload"} ]} */
static char *many_rules(size_t n)
{
    static const char one[] = "{\"type\":\"hex_payload\"},";
    size_t cap = 16 + n * (sizeof one - 1) + 4;
    char *s = malloc(cap);
    size_t o;

    ck_assert_ptr_nonnull(s);
    memcpy(s, "{\"rules\":[", 10);
    o = 10;
    for (size_t i = 0; i < n; i++) {
        memcpy(s + o, one, sizeof one - 1);
        o += sizeof one - 1;
    }
    if (n > 0)
        o--; /* the last comma */
    memcpy(s + o, "]}", 3);
    return s;
}

START_TEST(rules_max_is_the_limit)
{
    char *s = many_rules(RULES_MAX);
    parse_ok(s);
    ck_assert_uint_eq(rs.n, RULES_MAX);
    struct rules_verdict v = eval("m", "x");
    ck_assert_uint_eq(v.checks, RULES_MAX);
    ck_assert_uint_eq(v.nfailed, RULES_MAX);
    free(s);
    rules_clear(&rs);
    s = many_rules(RULES_MAX + 1);
    parse_bad(s, "at most 64");
    free(s);
}
END_TEST

START_TEST(error_in_late_rule_frees_earlier_strings)
{
    /* Strings of rules before the bad one were allocated: they must be
     * freed (LSan/valgrind see a leak otherwise). */
    parse_bad("{\"rules\":[{\"type\":\"id_prefix\",\"value\":\"abc\"},"
              "{\"type\":\"forbidden_substring\",\"value\":\"x\"},"
              "{\"type\":\"bogus\"}]}",
              "rules[2] (type \"bogus\")");
}
END_TEST

START_TEST(long_unknown_type_is_truncated_in_message)
{
    char json[600];
    char type[400];
    memset(type, 'x', sizeof type - 1);
    type[sizeof type - 1] = '\0';
    snprintf(json, sizeof json, "{\"rules\":[{\"type\":\"%s\"}]}", type);
    parse_bad(json, "unknown rule type");
    ck_assert_uint_lt(strlen(err), 200);
}
END_TEST

static Suite *rules_suite(void)
{
    Suite *s = suite_create("rules");
    TCase *tc = tcase_create("eval");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, empty_config_has_no_rules);
    tcase_add_test(tc, copy_is_deep_and_evaluates_the_same);
    tcase_add_test(tc, max_payload_bytes);
    tcase_add_test(tc, min_payload_bytes);
    tcase_add_test(tc, hex_payload);
    tcase_add_test(tc, id_prefix);
    tcase_add_test(tc, forbidden_substring);
    tcase_add_test(tc, payload_is_bytes_not_c_string);
    tcase_add_test(tc, combined_failures_in_config_order);
    tcase_add_test(tc, same_type_twice);
    tcase_add_test(tc, type_names_round_trip);
    tcase_add_test(tc, failed_literal_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, misconfigurations);
    tcase_add_test(tc, forbidden_substring_empty_is_refused);
    tcase_add_test(tc, rules_max_is_the_limit);
    tcase_add_test(tc, error_in_late_rule_frees_earlier_strings);
    tcase_add_test(tc, long_unknown_type_is_truncated_in_message);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rules_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
