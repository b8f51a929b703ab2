/* check_jsonfast.c — jsonfast.c: the flat reader accepts only what jansson
 * accepts, with the same members (hand-picked bodies and a seeded random
 * walk over mutations), and the writers print what json_dumpb prints. */
#include <check.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonfast.h"

#define CAP 8

/* jansson's verdict on body, as handlers_load_object asks for it. */
static json_t *jansson_object(const char *body, size_t len)
{
    json_t *root =
        json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);

    if (root != NULL && !json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Read body with jsonfast; when it accepts, jansson must accept it too,
 * with the same members, values byte for byte. Returns the verdict. */
static bool read_agrees(const char *body, size_t len)
{
    char *buf = malloc(len ? len : 1);
    struct jsonfast_member m[CAP];
    size_t n = 0;
    bool ok;

    ck_assert_ptr_nonnull(buf);
    memcpy(buf, body, len);
    ok = jsonfast_read_flat(buf, len, m, CAP, &n);
    if (ok) {
        json_t *root = jansson_object(body, len);
        ck_assert_msg(root != NULL,
                      "jsonfast accepted what jansson refuses: "
                      "%.*s",
                      (int)len, body);
        ck_assert_uint_eq(json_object_size(root), n);
        for (size_t i = 0; i < n; i++) {
            json_t *v;
            ck_assert_uint_eq(strlen(m[i].key), m[i].key_len);
            v = json_object_get(root, m[i].key);
            ck_assert_msg(json_is_string(v), "member %s", m[i].key);
            ck_assert_uint_eq(json_string_length(v), m[i].val_len);
            ck_assert(memcmp(json_string_value(v), m[i].val, m[i].val_len) ==
                      0);
            ck_assert_int_eq(m[i].val[m[i].val_len], '\0');
        }
        json_decref(root);
    }
    free(buf);
    return ok;
}

static bool reads(const char *body)
{
    return read_agrees(body, strlen(body));
}

START_TEST(reads_the_common_bodies)
{
    ck_assert(reads("{\"id\":\"m1\",\"org_id\":\"acme\",\"payload\":\"ab\"}"));
    ck_assert(reads(" \t\r\n{ \"id\" : \"m1\" ,\n\"payload\":\"\" } \n"));
    ck_assert(reads("{}"));
    ck_assert(reads("{\"a\":\"x\\\"y\\\\z\\/\\b\\f\\n\\r\\t\"}"));
    ck_assert(reads("{\"caf\xc3\xa9\":\"\xf0\x9f\x98\x80\x7f\"}"));
}
END_TEST

START_TEST(declines_the_rest)
{
    static const char *const no[] = {
        "",
        " ",
        "[]",
        "\"s\"",
        "{",
        "{\"a\"",
        "{\"a\":",
        "{\"a\":\"b\"",
        "{\"a\":\"b\",}",
        "{,\"a\":\"b\"}",
        "{\"a\":\"b\"}x",
        "{\"a\":\"b\"}{}",
        "{\"a\":1}",
        "{\"a\":null}",
        "{\"a\":true}",
        "{\"a\":{}}",
        "{\"a\":[]}",
        "{\"a\":\"b\",\"a\":\"c\"}",    /* a duplicate: jansson says which */
        "{\"a\":\"\\u0041\"}",          /* \u: left to jansson */
        "{\"a\":\"\\x\"}",              /* not an escape */
        "{\"a\":\"\\",                  /* truncated escape */
        "{\"a\":\"b\nc\"}",             /* raw control character */
        "{\"a\":\"\xc3\"}",             /* truncated UTF-8 */
        "{\"a\":\"\xed\xa0\x80\"}",     /* a surrogate */
        "{\"a\":\"\xc0\xaf\"}",         /* overlong */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "\xef\xbb\xbf{}",               /* a byte order mark */
        "\f{}",                         /* not a JSON blank */
        "{'a':'b'}",
        /* more members than cap */
        ("{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\","
         "\"7\":\"\",\"8\":\"\",\"9\":\"\"}"),
    };

    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        ck_assert_msg(!reads(no[i]), "accepted: %s", no[i]);
    /* An embedded NUL, inside a string and outside. */
    ck_assert(!read_agrees("{\"a\":\"b\0c\"}", 11));
    ck_assert(!read_agrees("{\"a\":\"b\"}\0", 10));
}
END_TEST

/* Rounds of a random walk: a tenth with POOLD_TEST_QUICK=1, which
 * scripts/test.sh sets under valgrind, where the whole walk takes minutes. */
static int walk_rounds(int n)
{
    const char *quick = getenv("POOLD_TEST_QUICK");

    return quick != NULL && strcmp(quick, "1") == 0 ? n / 10 : n;
}

/* Random edits of seed, rounds of 1 to 3 edits each (replace, delete or
 * insert a byte of alphabet): whatever jsonfast accepts, jansson must
 * accept with the same members (agrees asserts it). Seeded, so a failure
 * repeats. Returns how many edited bodies were accepted. */
static unsigned random_walk(const char *seed, const char *alphabet, int rounds,
                            bool (*agrees)(const char *, size_t))
{
    size_t seed_len = strlen(seed), nalpha = strlen(alphabet);
    uint64_t state = 0x9e3779b97f4a7c15u;
    char *body = malloc(seed_len + 8);
    unsigned accepted = 0;

    ck_assert_ptr_nonnull(body);
    for (int round = 0; round < rounds; round++) {
        size_t len = seed_len;
        memcpy(body, seed, len);
        for (int e = 0; e < 1 + round % 3; e++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            size_t at = (size_t)(state >> 8) % len;
            char c = alphabet[(state >> 40) % nalpha];
            switch ((state >> 56) % 3) {
            case 0: /* replace */
                body[at] = c;
                break;
            case 1: /* delete */
                memmove(body + at, body + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert */
                if (len < seed_len + 8) {
                    memmove(body + at + 1, body + at, len - at);
                    body[at] = c;
                    len++;
                }
            }
        }
        accepted += agrees(body, len);
    }
    free(body);
    return accepted;
}

START_TEST(random_edits_agree_with_jansson)
{
    int rounds = walk_rounds(200000);
    /* The alphabet's NUL-free: strlen measures it. */
    unsigned accepted = random_walk(
        "{\"id\":\"m\\n1\",\"org_id\":\"acme\",\"payload\":\"caf\xc3\xa9\"}",
        "{}[]\":,\\/ \t\r\nubfnrtx0aA\x01\x1f\x7f"
        "\xc3\xa9\xed\xa0\x80\xf0\x9f\xff",
        rounds, read_agrees);

    /* The walk did reach accepted bodies. */
    ck_assert_uint_gt(accepted, rounds / 200);
}
END_TEST

/* jansson's string member of obj named key: value and length as read. */
static void assert_member(json_t *obj, const struct jsonfast_member *m)
{
    json_t *v = json_object_get(obj, m->key);

    ck_assert_uint_eq(strlen(m->key), m->key_len);
    ck_assert_msg(json_is_string(v), "member %s", m->key);
    ck_assert_uint_eq(json_string_length(v), m->val_len);
    ck_assert(memcmp(json_string_value(v), m->val, m->val_len) == 0);
    ck_assert_int_eq(m->val[m->val_len], '\0');
}

/* Read body with jsonfast_read_list; when it accepts, jansson must accept
 * it too, with the same members, and the array's objects in order with
 * theirs. Returns the verdict. */
static bool list_agrees(const char *body, size_t len)
{
    char *buf = malloc(len ? len : 1);
    struct jsonfast_member top[CAP];
    struct jsonfast_list list = {0};
    size_t n = 0;
    bool ok;

    ck_assert_ptr_nonnull(buf);
    memcpy(buf, body, len);
    ok = jsonfast_read_list(buf, len, top, CAP, &n, CAP, &list);
    if (ok) {
        json_t *root = jansson_object(body, len), *arr;
        ck_assert_msg(root != NULL,
                      "jsonfast accepted what jansson refuses: "
                      "%.*s",
                      (int)len, body);
        ck_assert_uint_eq(json_object_size(root),
                          n + (list.key != NULL ? 1 : 0));
        for (size_t i = 0; i < n; i++)
            assert_member(root, &top[i]);
        if (list.key != NULL) {
            ck_assert_uint_eq(strlen(list.key), list.key_len);
            arr = json_object_get(root, list.key);
            ck_assert(json_is_array(arr));
            ck_assert_uint_eq(json_array_size(arr), list.n);
            for (size_t i = 0; i < list.n; i++) {
                size_t from = i > 0 ? list.ends[i - 1] : 0;
                json_t *obj = json_array_get(arr, i);
                ck_assert(json_is_object(obj));
                ck_assert_uint_eq(json_object_size(obj), list.ends[i] - from);
                for (size_t k = from; k < list.ends[i]; k++)
                    assert_member(obj, &list.items[k]);
            }
        }
        json_decref(root);
    }
    jsonfast_list_free(&list);
    free(buf);
    return ok;
}

static bool lists(const char *body)
{
    return list_agrees(body, strlen(body));
}

START_TEST(reads_the_common_batches)
{
    char big[64 * 40 + 64];
    size_t len;

    ck_assert(lists("{\"org_id\":\"acme\",\"messages\":[{\"id\":\"m1\","
                    "\"payload\":\"ab\"},{\"id\":\"m2\",\"payload\":\"\","
                    "\"org_id\":\"acme\"}]}"));
    ck_assert(lists(" { \"messages\" : [ { } , {\"a\":\"\\n\"} ] ,"
                    " \"org_id\" : \"x\" } "));
    ck_assert(lists("{\"messages\":[]}"));
    ck_assert(lists("{\"org_id\":\"acme\"}")); /* no array: flat */
    ck_assert(lists("{}"));
    /* Enough objects to grow the arrays several times. */
    len = (size_t)snprintf(big, sizeof big, "{\"messages\":[");
    for (int i = 0; i < 64; i++)
        len += (size_t)snprintf(big + len, sizeof big - len,
                                "%s{\"id\":\"m%02d\",\"p\":\"x\"}",
                                i ? "," : "", i);
    len += (size_t)snprintf(big + len, sizeof big - len, "]}");
    ck_assert(list_agrees(big, len));
}
END_TEST

START_TEST(declines_the_other_batches)
{
    static const char *const no[] = {
        "[]",
        "{\"m\":[\"x\"]}", /* not objects */
        "{\"m\":[1]}",
        "{\"m\":[[]]}",
        "{\"m\":[{\"a\":[]}]}", /* an array in an object */
        "{\"m\":[{\"a\":1}]}",
        "{\"m\":[{}],\"n\":[{}]}",  /* two arrays */
        "{\"m\":[{}],\"m\":\"x\"}", /* the array's key twice */
        "{\"m\":\"x\",\"m\":[{}]}",
        "{\"m\":[{}],\"m\":[{}]}",
        "{\"m\":[{\"a\":\"b\",\"a\":\"c\"}]}", /* a duplicate inside */
        "{\"m\":[{},]}",
        "{\"m\":[,{}]}",
        "{\"m\":[{}}",
        "{\"m\":[{}]",
        "{\"m\":[{}]}]",
        "{\"m\":[{}]}x",
        "{\"m\":[{\"a\":\"\\u0041\"}]}",
        ("{\"m\":[{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\","
         "\"6\":\"\",\"7\":\"\",\"8\":\"\",\"9\":\"\"}]}"),
    };

    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        ck_assert_msg(!lists(no[i]), "accepted: %s", no[i]);
}
END_TEST

/* A list longer than its max is declined, and never held: the reader
 * stops at the object past the max (a 4 MiB body of {"a":"b"} once made
 * it hold 420 000 objects before the count was checked). */
START_TEST(a_list_over_its_max_is_declined_early)
{
    enum { N = 5000 };
    size_t cap = 16 + N * 10, len, n;
    char *body = malloc(cap), *buf = malloc(cap);
    struct jsonfast_member top[CAP];
    struct jsonfast_list list = {0};

    ck_assert(body != NULL && buf != NULL);
    len = (size_t)snprintf(body, cap, "{\"m\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"a\":\"b\"}",
                                i ? "," : "");
    len += (size_t)snprintf(body + len, cap - len, "]}");
    for (size_t max = N - 1; max <= N + 1; max++) {
        memcpy(buf, body, len);
        memset(&list, 0, sizeof list);
        list.max = max;
        ck_assert_int_eq(jsonfast_read_list(buf, len, top, CAP, &n, CAP, &list),
                         max >= N);
        if (max < N) /* stopped at the object past the max */
            ck_assert_uint_le(list.n, max);
        else
            ck_assert_uint_eq(list.n, N);
        ck_assert(list.over == (max < N)); /* what the caller answers */
        jsonfast_list_free(&list);
    }
    free(body);
    free(buf);
}
END_TEST

START_TEST(random_batch_edits_agree_with_jansson)
{
    int rounds = walk_rounds(100000);
    unsigned accepted = random_walk(
        "{\"org_id\":\"acme\",\"messages\":[{\"id\":\"m\\n1\","
        "\"payload\":\"ab\"},{\"id\":\"m2\",\"payload\":\"caf\xc3\xa9\"}]}",
        "{}[]\":,\\ \tumx0\x01\xc3\xa9\xff", rounds, list_agrees);

    ck_assert_uint_gt(accepted, rounds / 100);
}
END_TEST

/* put_string's text must be json_dumpb's, byte for byte. */
static void assert_dumps_like_jansson(const char *s, size_t len)
{
    struct strbuf b = {0};
    json_t *str = json_stringn(s, len);
    char want[1024], *got;
    size_t want_len, got_len;

    ck_assert_ptr_nonnull(str);
    want_len =
        json_dumpb(str, want, sizeof want, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(str);
    jsonfast_put_string(&b, s, len);
    ck_assert_int_eq(strbuf_take(&b, &got, &got_len), 0);
    ck_assert_uint_eq(got_len, want_len);
    ck_assert_msg(memcmp(got, want, want_len) == 0, "%s vs %.*s", got,
                  (int)want_len, want);
    free(got);
}

START_TEST(strings_are_written_as_jansson_writes_them)
{
    char one[1];

    for (int c = 0; c < 0x80; c++) {
        one[0] = (char)c;
        assert_dumps_like_jansson(one, 1);
    }
    assert_dumps_like_jansson("", 0);
    assert_dumps_like_jansson("a\"b\\c/d\xc3\xa9\xf0\x9f\x98\x80", 14);
}
END_TEST

/* b's text must be want; b is empty after. */
static void assert_text(struct strbuf *b, const char *want)
{
    char *got;
    size_t len;

    ck_assert_int_eq(strbuf_take(b, &got, &len), 0);
    ck_assert_str_eq(got, want);
    ck_assert_uint_eq(len, strlen(want));
    free(got);
}

START_TEST(numbers_and_literals)
{
    struct strbuf b = {0};

    jsonfast_put_uint(&b, 0);
    jsonfast_put_lit(&b, ",");
    jsonfast_put_uint(&b, 42);
    jsonfast_put_lit(&b, ",");
    jsonfast_put_uint(&b, ULLONG_MAX);
    assert_text(&b, "0,42,18446744073709551615");
}
END_TEST

/* strbuf_reserve: the first allocation is the size asked for, and appends
 * past it still grow the buffer. */
START_TEST(reserve_then_grow)
{
    struct strbuf b = {0};

    strbuf_reserve(&b, 4);
    ck_assert_uint_eq(b.cap, 5);
    strbuf_append(&b, "abcd", 4);
    ck_assert_uint_eq(b.cap, 5);
    strbuf_append(&b, "efgh", 4);
    strbuf_printf(&b, "%d", 12);
    assert_text(&b, "abcdefgh12");
}
END_TEST

/* A string takes the room its escaped text needs, not the worst case: a
 * buffer reserved for the answer is not grown (and copied) by it. */
START_TEST(strings_take_their_exact_room)
{
    struct strbuf b = {0};

    strbuf_reserve(&b, 10);
    jsonfast_put_string(&b, "a\"b\n", 4); /* "a\"b\n": 8 bytes */
    ck_assert_uint_eq(b.cap, 11);
    jsonfast_put_lit(&b, "xy");
    ck_assert_uint_eq(b.cap, 11);
    assert_text(&b, "\"a\\\"b\\n\"xy");
}
END_TEST

/* PostgreSQL's jsonb text, compacted, is what jansson's compact writer
 * makes of the same value; blanks inside strings stay. */
START_TEST(compact_drops_only_the_blanks_between_tokens)
{
    static const char *const texts[] = {
        "{\"a\": 1, \"b\": [1, 2, {\"c\": null}], \"d\": true}",
        "{\"s\": \"two  words, \\\"quoted\\\" : [x]\", \"t\": \"\\\\\"}",
        "{\"k\": \"tab\\there\", \"e\": {}, \"f\": []}",
        " [ \"caf\xc3\xa9\" ,\n\t\"\\\\ \\\" \" ] \r\n",
        "\"a string alone\"",
        "[[[[]]]]",
    };

    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char buf[256], want[256];
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        size_t n, wn;

        ck_assert_msg(v != NULL, "%s", texts[i]);
        wn = json_dumpb(v, want, sizeof want, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
        snprintf(buf, sizeof buf, "%s", texts[i]);
        n = jsonfast_compact(buf);
        ck_assert_uint_eq(n, strlen(buf));
        ck_assert_msg(n == wn && memcmp(buf, want, n) == 0,
                      "%s: got %s, jansson writes %.*s", texts[i], buf, (int)wn,
                      want);
    }
}
END_TEST

/* Containers and commas outside strings, plus one: an upper bound of the
 * values a parser would make; and the deepest nesting, strings skipped. */
START_TEST(measure_skips_strings)
{
    static const struct {
        const char *text;
        size_t values, depth;
    } cases[] = {
        {"{}", 2, 1},
        {"{\"a\":1,\"b\":[1,2]}", 5, 2},
        {"{\"s\":\"{[,,]}\",\"t\":\"\\\",[\"}", 3, 1},
        {"\"\\\\\",[", 3, 1}, /* the string ends after the escaped \\ */
        {"[{},{},{}]", 7, 2},
        {"[[[]],[[[[]]]]]", 9, 5},
        {"\"[[[[\"", 1, 0},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t values, depth;

        jsonfast_measure(cases[i].text, strlen(cases[i].text), &values, &depth);
        ck_assert_msg(values == cases[i].values && depth == cases[i].depth,
                      "%s: %zu values, depth %zu", cases[i].text, values,
                      depth);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonfast");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, reads_the_common_bodies);
    tcase_add_test(tc, declines_the_rest);
    tcase_add_test(tc, random_edits_agree_with_jansson);
    tcase_add_test(tc, reads_the_common_batches);
    tcase_add_test(tc, declines_the_other_batches);
    tcase_add_test(tc, a_list_over_its_max_is_declined_early);
    tcase_add_test(tc, random_batch_edits_agree_with_jansson);
    tcase_add_test(tc, strings_are_written_as_jansson_writes_them);
    tcase_add_test(tc, numbers_and_literals);
    tcase_add_test(tc, reserve_then_grow);
    tcase_add_test(tc, strings_take_their_exact_room);
    tcase_add_test(tc, compact_drops_only_the_blanks_between_tokens);
    tcase_add_test(tc, measure_skips_strings);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
