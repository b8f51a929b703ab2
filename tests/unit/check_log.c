/* check_log.c — log.c: escaping of client bytes and valid one-line output. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Run fn with stderr captured into buf (NUL-terminated). */
static void capture(void (*fn)(const void *), const void *arg, char *buf,
                    size_t len)
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    size_t n;

    ck_assert_ptr_nonnull(tmp);
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    n = fread(buf, 1, len - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
}

START_TEST(escape_quotes_backslash_controls)
{
    char out[128];
    size_t n = log_escape(out, sizeof out, "a\"b\\c\nd\x01\x7f", 9);

    ck_assert_str_eq(out, "a\\\"b\\\\c\\u000ad\\u0001\\u007f");
    ck_assert_uint_eq(n, strlen(out));
}
END_TEST

START_TEST(escape_embedded_nul_and_utf8)
{
    char out[128];

    log_escape(out, sizeof out, "x\0y", 3);
    ck_assert_str_eq(out, "x\\u0000y");
    log_escape(out, sizeof out, "caf\xc3\xa9", 5); /* valid UTF-8 kept */
    ck_assert_str_eq(out, "caf\xc3\xa9");
    log_escape(out, sizeof out,
               "a\xff"
               "b\xc3",
               4); /* invalid replaced */
    ck_assert_str_eq(out, "a\\ufffdb\\ufffd");
    log_escape(out, sizeof out, "\xed\xa0\x80", 3); /* a surrogate */
    ck_assert_str_eq(out, "\\ufffd\\ufffd\\ufffd");
}
END_TEST

START_TEST(escape_truncates_on_boundaries)
{
    char out[8];

    /* "ab" + 6-byte escape does not fit in 7 bytes: stop before it. */
    ck_assert_uint_eq(log_escape(out, sizeof out, "ab\ncd", 5), 2);
    ck_assert_str_eq(out, "ab");
    ck_assert_uint_eq(log_escape(out, 1, "abc", 3), 0);
    ck_assert_str_eq(out, "");
    ck_assert_uint_eq(log_escape(out, 0, "abc", 3), 0);
    /* a multi-byte character is not split either */
    ck_assert_uint_eq(log_escape(out, 4, "ab\xc3\xa9", 4), 2);
}
END_TEST

struct ev {
    enum log_format fmt;
    const char *msg, *k1, *v1, *k2, *v2;
};

static void emit_event(const void *arg)
{
    const struct ev *e = arg;
    log_init(e->fmt, LOG_DEBUG);
    log_event(LOG_WARN, e->msg, e->k1, e->v1, e->k2, e->v2, (const char *)NULL);
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

START_TEST(json_line_is_valid_and_round_trips)
{
    static char buf[16384];
    struct ev e = {
        LOG_FORMAT_JSON, "req\n\"x\"",
        "path",          "/a\r\nforged {\"level\":\"error\"}\x1b[31m",
        "org",           "o\\\xff",
    };
    json_error_t jerr;
    json_t *root;

    capture(emit_event, &e, buf, sizeof buf);
    ck_assert_uint_eq(count_char(buf, '\n'), 1);
    ck_assert_int_eq(buf[strlen(buf) - 1], '\n');
    root = json_loads(buf, 0, &jerr);
    ck_assert_msg(root != NULL, "not JSON: %s (%s)", buf, jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(root, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(root, "msg")),
                     "req\n\"x\"");
    ck_assert_str_eq(json_string_value(json_object_get(root, "path")),
                     "/a\r\nforged {\"level\":\"error\"}\x1b[31m");
    ck_assert_str_eq(json_string_value(json_object_get(root, "org")),
                     "o\\\xef\xbf\xbd");
    ck_assert_ptr_nonnull(json_object_get(root, "ts"));
    json_decref(root);
}
END_TEST

START_TEST(json_line_stays_valid_when_truncated)
{
    static char buf[16384];
    static char big[3000];
    struct ev e = {LOG_FORMAT_JSON, "m", "a", big, "b", big};
    json_t *root;

    /* Escapes inflate 1 byte to 6: far over the line limit. */
    memset(big, '\n', sizeof big - 1);
    capture(emit_event, &e, buf, sizeof buf);
    ck_assert_uint_eq(count_char(buf, '\n'), 1);
    ck_assert_uint_le(strlen(buf), 4096);
    root = json_loads(buf, 0, NULL);
    ck_assert_msg(root != NULL, "truncated line is not JSON: %.200s", buf);
    json_decref(root);

    memset(big, 'x', sizeof big - 1);
    capture(emit_event, &e, buf, sizeof buf);
    root = json_loads(buf, 0, NULL);
    ck_assert_msg(root != NULL, "truncated line is not JSON");
    json_decref(root);
}
END_TEST

START_TEST(text_line_is_one_line)
{
    static char buf[16384];
    struct ev e = {LOG_FORMAT_TEXT, "hello\nworld", "path",
                   "/x\ny=\"z\"",   "org",          "o"};

    capture(emit_event, &e, buf, sizeof buf);
    ck_assert_uint_eq(count_char(buf, '\n'), 1);
    ck_assert_ptr_nonnull(strstr(buf, " warn hello\\u000aworld"));
    ck_assert_ptr_nonnull(strstr(buf, "path=\"/x\\u000ay=\\\"z\\\"\""));
    ck_assert_ptr_nonnull(strstr(buf, "org=\"o\""));
}
END_TEST

static void emit_below_level(const void *arg)
{
    (void)arg;
    log_init(LOG_FORMAT_TEXT, LOG_WARN);
    log_event(LOG_INFO, "hidden", (const char *)NULL);
    log_msgf(LOG_DEBUG, "hidden %d", 1);
    log_msgf(LOG_ERROR, "shown %s\n", "x");
}

START_TEST(levels_filter_and_msgf_escapes)
{
    char buf[4096];

    capture(emit_below_level, NULL, buf, sizeof buf);
    ck_assert_ptr_null(strstr(buf, "hidden"));
    ck_assert_ptr_nonnull(strstr(buf, "error shown x\\u000a"));
    ck_assert_uint_eq(count_char(buf, '\n'), 1);
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, escape_quotes_backslash_controls);
    tcase_add_test(tc, escape_embedded_nul_and_utf8);
    tcase_add_test(tc, escape_truncates_on_boundaries);
    tcase_add_test(tc, json_line_is_valid_and_round_trips);
    tcase_add_test(tc, json_line_stays_valid_when_truncated);
    tcase_add_test(tc, text_line_is_one_line);
    tcase_add_test(tc, levels_filter_and_msgf_escapes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(log_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
