/* log.c — escaped, single-line events on stderr, as text or JSON; written
 * synchronously, or through a buffer and a writer thread (log_start). */
#include "log.h"
#include "clock.h"
#include "status.h"
#include "utf8.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096
#define LOG_VALUE_MAX 1024

static enum log_format g_format = LOG_FORMAT_TEXT;
static enum log_level g_min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(enum log_format format, enum log_level min_level)
{
    g_format = format;
    g_min = min_level;
}

bool log_enabled(enum log_level level)
{
    return level >= g_min;
}

size_t log_escape(char *dst, size_t dstlen, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)src;
    size_t o = 0;

    if (dstlen == 0)
        return 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        char esc[7];
        const char *out = esc;
        size_t n, used = 1;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else if (c < 0x80) {
            esc[0] = (char)c;
            n = 1;
        } else if ((used = utf8_seq_len(u + i, len - i)) > 0) {
            out = src + i; /* a whole, valid UTF-8 sequence */
            n = used;
        } else {
            out = "\\ufffd"; /* invalid byte: keep JSON lines valid UTF-8 */
            n = 6;
            used = 1;
        }
        /* Never split an escape or a sequence: stop before it instead. */
        if (o + n >= dstlen)
            break;
        memcpy(dst + o, out, n);
        o += n;
        i += used;
    }
    dst[o] = '\0';
    return o;
}

/* Bytes kept free at the end of a line for the closing "}\n" and NUL. */
#define LOG_TAIL 3

/* Append to a bounded line buffer; silently truncates, but only callers that
 * append plain text (timestamps, keys) rely on that. */
static void put(char *line, size_t *o, const char *s)
{
    size_t n = strlen(s);
    size_t room = LOG_LINE_MAX - LOG_TAIL - *o;

    if (n > room)
        n = room;
    memcpy(line + *o, s, n);
    *o += n;
    line[*o] = '\0';
}

/* Append an escaped value; shortened on an escape boundary when the line is
 * nearly full, so the line stays valid JSON. */
static void put_escaped(char *line, size_t *o, const char *val)
{
    size_t room = LOG_LINE_MAX - LOG_TAIL - *o;
    size_t cap = room + 1 < LOG_VALUE_MAX ? room + 1 : LOG_VALUE_MAX;

    *o += log_escape(line + *o, cap, val, strlen(val));
}

static void put_field(char *line, size_t *o, const char *key, const char *val)
{
    size_t room, cap;

    /* Room for the key, its punctuation and at least the closing quote. */
    if (*o + strlen(key) + 6 >= LOG_LINE_MAX - LOG_TAIL)
        return;
    put(line, o, g_format == LOG_FORMAT_JSON ? ",\"" : " ");
    put(line, o, key);
    put(line, o, g_format == LOG_FORMAT_JSON ? "\":\"" : "=\"");
    /* The value may use the room left but one byte, kept for the quote. */
    room = LOG_LINE_MAX - LOG_TAIL - 1 - *o;
    cap = room + 1 < LOG_VALUE_MAX ? room + 1 : LOG_VALUE_MAX;
    *o += log_escape(line + *o, cap, val ? val : "", val ? strlen(val) : 0);
    put(line, o, "\"");
}

/* "2026-11-30T19:10:15.123Z" */
#define TS_LEN 24

/* The current UTC time with milliseconds into ts (TS_LEN + 1 bytes). The
 * part up to the seconds is formatted once a second per thread: gmtime_r and
 * snprintf per line were a visible part of a request's CPU. */
static void format_timestamp(char *ts)
{
    static _Thread_local time_t cached_sec = (time_t)-1;
    static _Thread_local char cached[64]; /* "...T19:10:15." */
    struct timespec now;
    long ms;

    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
        cached_sec = now.tv_sec;
    }
    memcpy(ts, cached, TS_LEN - 4);
    ms = (now.tv_nsec / 1000000) % 1000;
    ts[TS_LEN - 4] = (char)('0' + ms / 100);
    ts[TS_LEN - 3] = (char)('0' + ms / 10 % 10);
    ts[TS_LEN - 2] = (char)('0' + ms % 10);
    ts[TS_LEN - 1] = 'Z';
    ts[TS_LEN] = '\0';
}

/* Format one event into line (LOG_LINE_MAX bytes); returns its length,
 * newline included. */
static size_t format_line(char *line, enum log_level level, const char *msg,
                          va_list ap)
{
    char ts[TS_LEN + 1];
    size_t o = 0;

    if ((unsigned)level > LOG_ERROR)
        level = LOG_ERROR;
    format_timestamp(ts);
    line[0] = '\0';
    if (g_format == LOG_FORMAT_JSON) {
        put(line, &o, "{\"ts\":\"");
        put(line, &o, ts);
        put(line, &o, "\",\"level\":\"");
        put(line, &o, level_names[level]);
        put(line, &o, "\"");
        put_field(line, &o, "msg", msg);
    } else {
        put(line, &o, ts);
        put(line, &o, " ");
        put(line, &o, level_names[level]);
        put(line, &o, " ");
        put_escaped(line, &o, msg);
    }
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        put_field(line, &o, key, va_arg(ap, const char *));
    }
    /* The tail was reserved: the closing brace and newline always fit. */
    if (g_format == LOG_FORMAT_JSON)
        line[o++] = '}';
    line[o++] = '\n';
    line[o] = '\0';
    return o;
}

static size_t format_linef(char *line, enum log_level level, const char *msg,
                           ...)
{
    va_list ap;
    size_t n;

    va_start(ap, msg);
    n = format_line(line, level, msg, ap);
    va_end(ap);
    return n;
}

static void output(const char *line, size_t len);

static void emit(enum log_level level, const char *msg, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t n = format_line(line, level, msg, ap);

    output(line, n);
}

void log_event(enum log_level level, const char *msg, ...)
{
    va_list ap;

    if (level < g_min)
        return;
    va_start(ap, msg);
    emit(level, msg, ap);
    va_end(ap);
}

void log_always(enum log_level level, const char *msg, ...)
{
    va_list ap;

    va_start(ap, msg);
    emit(level, msg, ap);
    va_end(ap);
}

/* ---- the buffered writer ---------------------------------------------------
 *
 * Two buffers: callers append whole lines to `fill` under `mu` (the critical
 * section is one memcpy of at most LOG_LINE_MAX bytes); the writer thread
 * swaps `fill` with the empty `drain` and writes `drain` without the lock.
 * Lines reach the fd in the order they were appended, so each thread's lines
 * stay in order. The buffers are static so that the crash handler can write
 * them with nothing but write(2). */

#define LOG_BUF_BYTES (256 * 1024)

struct log_buf {
    char data[LOG_BUF_BYTES];
    _Atomic size_t len; /* bytes of whole lines; stored after the memcpy */
};

static struct log_buf g_bufs[2];

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* writer: data, a flush or stop */
    pthread_cond_t room; /* callers: `fill` was swapped out */
    pthread_cond_t done; /* flushers, log_stop: `written` moved, writer gone */
    bool conds_ready;
    /* Read by the crash handler without the lock: */
    _Atomic(struct log_buf *) fill;
    _Atomic(struct log_buf *) drain;
    _Atomic size_t drain_off; /* bytes of `drain` already written */
    /* Under mu: */
    uint64_t appended, written; /* bytes, ever */
    uint64_t dropped;           /* lines, since the writer last said so */
    bool running, stopping, flush_wanted, stalled;
    bool asleep; /* the writer waits for a line, not for its period */
    long flush_ns, full_wait_ns;
    int fd;
    pthread_t thread;
} g_w = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = STDERR_FILENO};

/* The crash signals whose previous actions the handler restores. */
static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE};
#define NCRASH (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction g_old_actions[NCRASH];
static atomic_bool g_handlers_installed;

/* write(2) all of p, retrying partial writes and EINTR; gives up on any other
 * error (the bytes are lost: there is nowhere else to put them).
 * Async-signal-safe. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Crash path: write what was taken but not yet written, then what is
 * buffered, restore the previous action and re-raise. Only async-signal-safe
 * calls. A line being written by the writer at that instant may appear twice;
 * a line whose memcpy was not finished is not written. */
static void crash_handler(int sig)
{
    int saved = errno;
    struct log_buf *d = atomic_load(&g_w.drain);
    struct log_buf *f = atomic_load(&g_w.fill);

    if (d != NULL) {
        size_t off = atomic_load(&g_w.drain_off);
        size_t len = atomic_load(&d->len);
        if (off < len)
            write_all(g_w.fd, d->data + off, len - off);
    }
    if (f != NULL && f != d)
        write_all(g_w.fd, f->data, atomic_load(&f->len));
    for (size_t i = 0; i < NCRASH; i++)
        if (crash_signals[i] == sig)
            sigaction(sig, &g_old_actions[i], NULL);
    errno = saved;
    raise(sig); /* pending until we return; then the previous action runs */
}

static void install_crash_handlers(void)
{
    struct sigaction sa;

    if (atomic_exchange(&g_handlers_installed, true))
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = crash_handler;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NCRASH; i++)
        sigaction(crash_signals[i], &sa, &g_old_actions[i]);
}

/* Swap the buffers (under mu): `drain` is published before `fill` changes,
 * so a crash in between sees the lines twice rather than not at all. */
static struct log_buf *swap_buffers(void)
{
    struct log_buf *b = atomic_load(&g_w.fill);
    struct log_buf *empty = atomic_load(&g_w.drain);

    atomic_store(&g_w.drain_off, 0);
    atomic_store(&g_w.drain, b);
    atomic_store(&g_w.fill, empty);
    g_w.flush_wanted = false;
    g_w.stalled = false;
    pthread_cond_broadcast(&g_w.room);
    return b;
}

/* Write b (taken by swap_buffers) and, if lines were dropped, one line that
 * says how many. Without the lock. */
static void write_batch(struct log_buf *b, uint64_t dropped)
{
    size_t len = atomic_load(&b->len);
    size_t off = 0;

    while (off < len) {
        size_t chunk = len - off < 65536 ? len - off : 65536;
        write_all(g_w.fd, b->data + off, chunk);
        off += chunk;
        atomic_store(&g_w.drain_off, off);
    }
    if (dropped > 0) {
        char line[LOG_LINE_MAX], n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)dropped);
        write_all(g_w.fd, line,
                  format_linef(line, LOG_WARN,
                               "log lines dropped: stderr did not take them",
                               "count", n, (const char *)NULL));
    }
}

/* The writer's loop. Under load it wakes once a period and writes what
 * gathered (one futex wait and one write per period, whatever the rate);
 * after a period without lines it sleeps until a line arrives, so an idle
 * poold does not wake 200 times a second. */
static void *writer_main(void *arg)
{
    bool waited = false; /* a period has passed since the last write */

    (void)arg;
    pthread_mutex_lock(&g_w.mu);
    for (;;) {
        struct log_buf *b;
        uint64_t dropped;
        struct timespec ts;
        bool empty = atomic_load(&g_w.fill)->len == 0 && g_w.dropped == 0;

        if (empty && g_w.stopping)
            break;
        if (empty && waited) {
            pthread_cond_broadcast(&g_w.done); /* nothing left to flush */
            g_w.asleep = true;
            while (g_w.asleep && !g_w.stopping)
                pthread_cond_wait(&g_w.wake, &g_w.mu);
            g_w.asleep = false;
            waited = false;
            continue;
        }
        if (!waited && !g_w.stopping && !g_w.flush_wanted &&
            atomic_load(&g_w.fill)->len < LOG_BUF_BYTES / 2) {
            clock_timespec_at(&ts, clock_now_ns() + (uint64_t)g_w.flush_ns);
            pthread_cond_timedwait(&g_w.wake, &g_w.mu, &ts);
            waited = true;
            continue;
        }
        b = swap_buffers();
        dropped = g_w.dropped;
        g_w.dropped = 0;
        pthread_mutex_unlock(&g_w.mu);
        write_batch(b, dropped);
        pthread_mutex_lock(&g_w.mu);
        g_w.written += atomic_load(&b->len);
        atomic_store(&b->len, 0);
        atomic_store(&g_w.drain_off, 0);
        pthread_cond_broadcast(&g_w.done);
        waited = false;
    }
    g_w.running = false;
    g_w.stopping = false;
    pthread_cond_broadcast(&g_w.done);
    pthread_mutex_unlock(&g_w.mu);
    return NULL;
}

/* Append one line (under mu, writer running). Waits for room at most
 * full_wait_ns, and not at all once a wait has timed out and the writer has
 * not swapped since (stderr is stuck: every request would wait): then the
 * line is counted as dropped. */
static void append_locked(const char *line, size_t len)
{
    struct timespec deadline;
    bool have_deadline = false;
    struct log_buf *f;

    while (f = atomic_load(&g_w.fill), f->len + len > LOG_BUF_BYTES) {
        if (g_w.stalled || !g_w.running || g_w.stopping) {
            g_w.dropped++;
            return;
        }
        if (!have_deadline) {
            clock_timespec_at(&deadline,
                              clock_now_ns() + (uint64_t)g_w.full_wait_ns);
            have_deadline = true;
        }
        pthread_cond_signal(&g_w.wake);
        if (pthread_cond_timedwait(&g_w.room, &g_w.mu, &deadline) == ETIMEDOUT)
            g_w.stalled = true;
    }
    memcpy(f->data + f->len, line, len);
    atomic_store(&f->len, f->len + len);
    g_w.appended += len;
    /* Wake the writer only if it sleeps (idle) or the buffer is half full:
     * under load it wakes by itself once a period. */
    if (g_w.asleep || f->len >= LOG_BUF_BYTES / 2) {
        g_w.asleep = false;
        pthread_cond_signal(&g_w.wake);
    }
}

static void output(const char *line, size_t len)
{
    pthread_mutex_lock(&g_w.mu);
    /* While log_stop drains, wait for it: a line written at once would
     * overtake this thread's lines still in the buffer. */
    while (g_w.stopping)
        pthread_cond_wait(&g_w.done, &g_w.mu);
    if (g_w.running) {
        append_locked(line, len);
        pthread_mutex_unlock(&g_w.mu);
        return;
    }
    pthread_mutex_unlock(&g_w.mu);
    /* One fputs of a whole line: stdio locks the stream, lines never mix. */
    fputs(line, stderr);
}

static void init_conds(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_w.wake, &ca);
    pthread_cond_init(&g_w.room, &ca);
    pthread_cond_init(&g_w.done, &ca);
    pthread_condattr_destroy(&ca);
}

static void atexit_register_once(void)
{
    static atomic_bool registered;

    if (!atomic_exchange(&registered, true))
        atexit(log_stop);
}

int log_start(const struct log_writer_config *cfg)
{
    sigset_t all, old;
    int rc;

    pthread_mutex_lock(&g_w.mu);
    if (g_w.running) {
        pthread_mutex_unlock(&g_w.mu);
        return POOLD_OK;
    }
    if (!g_w.conds_ready) {
        init_conds();
        g_w.conds_ready = true;
    }
    fflush(stderr); /* what stdio holds goes first */
    g_w.fd = STDERR_FILENO;
    g_w.flush_ns =
        (long)(cfg && cfg->flush_ms ? cfg->flush_ms : LOG_FLUSH_MS_DEFAULT) *
        1000000L;
    g_w.full_wait_ns =
        (long)(cfg && cfg->full_wait_ms ? cfg->full_wait_ms
                                        : LOG_FULL_WAIT_MS_DEFAULT) *
        1000000L;
    atomic_store(&g_w.fill, &g_bufs[0]);
    atomic_store(&g_w.drain, &g_bufs[1]);
    g_w.running = true;
    /* The writer takes no asynchronous signal: main sigwaits for them. */
    sigfillset(&all);
    for (size_t i = 0; i < NCRASH; i++)
        sigdelset(&all, crash_signals[i]);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&g_w.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        g_w.running = false;
    pthread_mutex_unlock(&g_w.mu);
    if (rc != 0)
        return POOLD_ERR_NOMEM;
    install_crash_handlers();
    atexit_register_once();
    return POOLD_OK;
}

void log_flush(void)
{
    uint64_t target;

    pthread_mutex_lock(&g_w.mu);
    target = g_w.appended;
    while (g_w.running && g_w.written < target) {
        g_w.flush_wanted = true;
        g_w.asleep = false;
        pthread_cond_signal(&g_w.wake);
        pthread_cond_wait(&g_w.done, &g_w.mu);
    }
    pthread_mutex_unlock(&g_w.mu);
}

void log_stop(void)
{
    pthread_t t;

    pthread_mutex_lock(&g_w.mu);
    if (!g_w.running || g_w.stopping) {
        pthread_mutex_unlock(&g_w.mu);
        return;
    }
    g_w.stopping = true;
    t = g_w.thread;
    pthread_cond_signal(&g_w.wake);
    pthread_mutex_unlock(&g_w.mu);
    pthread_join(t, NULL);
}
