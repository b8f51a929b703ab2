/* check_log.c — log.c: escaping of client bytes and valid one-line output. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "status.h"

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
    log_event(LOG_DEBUG, "hidden 1", (const char *)NULL);
    log_event(LOG_ERROR, "shown x\n", (const char *)NULL);
    log_init(LOG_FORMAT_TEXT, LOG_ERROR);
    log_always(LOG_WARN, "always", (const char *)NULL);
}

START_TEST(levels_filter_and_msg_escapes)
{
    char buf[4096];

    capture(emit_below_level, NULL, buf, sizeof buf);
    ck_assert_ptr_null(strstr(buf, "hidden"));
    ck_assert_ptr_nonnull(strstr(buf, "error shown x\\u000a"));
    ck_assert_ptr_nonnull(strstr(buf, " warn always\n"));
    ck_assert_uint_eq(count_char(buf, '\n'), 2);
}
END_TEST

/* ---- the buffered writer ---------------------------------------------- */

#define WRITER_THREADS 8
#define WRITER_LINES 3000 /* 24000 lines of ~90 bytes: many buffer swaps */

static void *log_many(void *arg)
{
    char t[16], n[16];

    snprintf(t, sizeof t, "%d", (int)(intptr_t)arg);
    for (int i = 0; i < WRITER_LINES; i++) {
        snprintf(n, sizeof n, "%d", i);
        log_event(LOG_INFO, "line", "t", t, "n", n, (const char *)NULL);
    }
    return NULL;
}

/* Check that buf holds lines `... t="T" n="N"` with, for every T below
 * threads, N = 0, 1, ... lines-1 in that order and nothing else. */
static void assert_lines_in_order(char *buf, int threads, int lines)
{
    int next[WRITER_THREADS] = {0};
    char *eol;

    ck_assert_int_le(threads, WRITER_THREADS);
    for (char *l = buf; *l != '\0'; l = eol + 1) {
        const char *pt, *pn;
        long t, n;

        eol = strchr(l, '\n');
        ck_assert_msg(eol != NULL, "a line without its newline: %s", l);
        *eol = '\0';
        pt = strstr(l, " t=\"");
        pn = strstr(l, " n=\"");

        ck_assert_msg(pt && pn, "unexpected line: %s", l);
        t = strtol(pt + 4, NULL, 10);
        n = strtol(pn + 4, NULL, 10);
        ck_assert_int_ge(t, 0);
        ck_assert_int_lt(t, threads);
        ck_assert_msg(n == next[t], "thread %ld: line %ld, expected %d", t, n,
                      next[t]);
        next[t]++;
    }
    for (int t = 0; t < threads; t++)
        ck_assert_int_eq(next[t], lines);
}

static char *read_all_fd(int fd, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;

    ck_assert_ptr_nonnull(buf);
    while ((r = read(fd, buf + n, cap - n)) != 0) {
        if (r < 0)
            continue; /* EINTR */
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

START_TEST(writer_many_threads_all_lines_in_order)
{
    /* A long wait for room: on a loaded machine the writer may be slow, and
     * this test is about order and completeness, not dropping. */
    struct log_writer_config wc = {.flush_ms = 2, .full_wait_ms = 60000};
    pthread_t th[WRITER_THREADS];
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    size_t len;
    char *buf;

    ck_assert_ptr_nonnull(tmp);
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    log_init(LOG_FORMAT_TEXT, LOG_INFO);
    ck_assert_int_eq(log_start(&wc), POOLD_OK);
    for (int i = 0; i < WRITER_THREADS; i++)
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < WRITER_THREADS; i++)
        pthread_join(th[i], NULL);
    log_stop();
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    buf = read_all_fd(fileno(tmp), &len);
    fclose(tmp);
    ck_assert_uint_gt(len, (size_t)2 * 256 * 1024); /* swapped many times */
    assert_lines_in_order(buf, WRITER_THREADS, WRITER_LINES);
    free(buf);
}
END_TEST

START_TEST(writer_flush_returns_with_lines_written)
{
    /* A period far longer than the test: only log_flush can write. */
    struct log_writer_config wc = {.flush_ms = 600000};
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    char buf[4096];
    size_t n;

    ck_assert_ptr_nonnull(tmp);
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    log_init(LOG_FORMAT_TEXT, LOG_INFO);
    ck_assert_int_eq(log_start(&wc), POOLD_OK);
    log_event(LOG_INFO, "line", "t", "0", "n", "0", (const char *)NULL);
    log_flush();
    n = (size_t)pread(fileno(tmp), buf, sizeof buf - 1, 0);
    log_stop();
    dup2(saved, STDERR_FILENO);
    close(saved);
    fclose(tmp);
    buf[n] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, " info line t=\"0\" n=\"0\"\n"));
}
END_TEST

/* Fork a child whose stderr is a pipe; it starts the writer with a period
 * far longer than the test (so nothing is written by the timer), logs
 * `lines` lines and ends with end(). Returns its output and wait status. */
static char *child_output(void (*end)(void), int lines, int *status)
{
    int p[2];
    pid_t pid;
    size_t len;
    char *buf;

    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct log_writer_config wc = {.flush_ms = 600000};
        char n[16];

        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        close(p[1]);
        log_init(LOG_FORMAT_TEXT, LOG_INFO);
        if (log_start(&wc) != POOLD_OK)
            _exit(99);
        for (int i = 0; i < lines; i++) {
            snprintf(n, sizeof n, "%d", i);
            log_event(LOG_INFO, "line", "t", "0", "n", n, (const char *)NULL);
        }
        end();
        _exit(98); /* not reached */
    }
    close(p[1]);
    buf = read_all_fd(p[0], &len);
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, status, 0), pid);
    return buf;
}

/* How a child ends: exit (atexit runs log_stop), or a crash. */
static void end_exit(void)
{
    exit(0);
}

static void end_segv(void)
{
    raise(SIGSEGV);
}

static void end_abort(void)
{
    abort();
}

START_TEST(writer_exit_loses_nothing)
{
    int status;
    char *buf = child_output(end_exit, 500, &status);

    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    assert_lines_in_order(buf, 1, 500);
    free(buf);
}
END_TEST

static char *sanitizer_report(char *buf)
{
    static const char *const marks[] = {"AddressSanitizer", "ThreadSanitizer",
                                        "UndefinedBehaviorSanitizer", "=="};
    char *first = NULL;

    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        char *m = strstr(buf, marks[i]);
        if (m != NULL && (first == NULL || m < first))
            first = m;
    }
    while (first != NULL && first > buf && first[-1] != '\n')
        first--; /* the start of its line */
    return first;
}

/* The child dies of the signal (or, under a sanitizer whose handler we
 * chain to, exits non-zero after its report): either way its lines, still
 * in the buffer when it crashed, are in the output. */
static void assert_crash_keeps_lines(void (*end)(void), int sig)
{
    int status;
    char *buf = child_output(end, 200, &status);
    char *report;

    ck_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
    if (WIFSIGNALED(status))
        ck_assert_int_eq(WTERMSIG(status), sig);
    /* A sanitizer's report follows our lines: cut it off at its first
     * line ("AddressSanitizer:DEADLYSIGNAL", "==123==ERROR: ..."). */
    report = sanitizer_report(buf);
    if (report != NULL)
        *report = '\0';
    assert_lines_in_order(buf, 1, 200);
    free(buf);
}

START_TEST(writer_crash_segv_keeps_lines)
{
    assert_crash_keeps_lines(end_segv, SIGSEGV);
}
END_TEST

START_TEST(writer_crash_abort_keeps_lines)
{
    assert_crash_keeps_lines(end_abort, SIGABRT);
}
END_TEST

/* stderr is a pipe nobody reads: the logging thread must not block for
 * ever. It waits for room once, then lines are dropped and counted; when
 * the pipe is read again, what was kept arrives in order, followed by one
 * line with the count, and kept + dropped = logged. */
#define STUCK_LINES 20000

START_TEST(writer_stuck_stderr_drops_and_counts)
{
    int out[2], done[2];
    pid_t pid;
    struct pollfd pfd;
    char *buf, *eol, *mark;
    size_t len;
    long kept = 0, last = -1, dropped = -1;
    int status;

    ck_assert_int_eq(pipe(out), 0);
    ck_assert_int_eq(pipe(done), 0);
    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct log_writer_config wc = {.flush_ms = 1, .full_wait_ms = 50};
        char n[16];

        close(out[0]);
        close(done[0]);
        dup2(out[1], STDERR_FILENO);
        close(out[1]);
        log_init(LOG_FORMAT_TEXT, LOG_INFO);
        if (log_start(&wc) != POOLD_OK)
            _exit(99);
        for (int i = 0; i < STUCK_LINES; i++) {
            snprintf(n, sizeof n, "%d", i);
            log_event(LOG_INFO, "line", "t", "0", "n", n, (const char *)NULL);
        }
        if (write(done[1], "x", 1) != 1) /* logged everything: not stuck */
            _exit(97);
        log_stop();
        _exit(0);
    }
    close(out[1]);
    close(done[1]);
    /* Nobody reads `out` until the child says it is through its loop. */
    pfd.fd = done[0];
    pfd.events = POLLIN;
    ck_assert_msg(poll(&pfd, 1, 60000) == 1, "the logging thread blocked");
    close(done[0]);
    buf = read_all_fd(out[0], &len);
    close(out[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (char *l = buf; *l != '\0'; l = eol + 1) {
        eol = strchr(l, '\n');
        ck_assert_ptr_nonnull(eol);
        *eol = '\0';
        if ((mark = strstr(l, "log lines dropped")) != NULL) {
            ck_assert_int_eq(dropped, -1); /* said once */
            dropped = strtol(strstr(mark, "count=\"") + 7, NULL, 10);
        } else {
            long n = strtol(strstr(l, " n=\"") + 4, NULL, 10);
            ck_assert_int_gt(n, last); /* in order, with gaps */
            last = n;
            kept++;
        }
    }
    ck_assert_int_gt(dropped, 0);
    ck_assert_int_eq(kept + dropped, STUCK_LINES);
    free(buf);
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
    tcase_add_test(tc, levels_filter_and_msg_escapes);
    suite_add_tcase(s, tc);
    tc = tcase_create("writer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, writer_many_threads_all_lines_in_order);
    tcase_add_test(tc, writer_flush_returns_with_lines_written);
    tcase_add_test(tc, writer_exit_loses_nothing);
    tcase_add_test(tc, writer_crash_segv_keeps_lines);
    tcase_add_test(tc, writer_crash_abort_keeps_lines);
    tcase_add_test(tc, writer_stuck_stderr_drops_and_counts);
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
