/* log.c — escaped, single-line events on stderr, as text or JSON. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid
 * (overlong, surrogate, above U+10FFFF, truncated). */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned cp;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
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

static void emit(enum log_level level, const char *msg, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ts[64];
    size_t o = 0;
    struct timespec now;
    struct tm tm;

    if ((unsigned)level > LOG_ERROR)
        level = LOG_ERROR;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(now.tv_nsec / 1000000) % 1000);
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
    /* One fputs of a whole line: stdio locks the stream, lines never mix. */
    fputs(line, stderr);
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

static void emit_plain(enum log_level level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    emit(level, msg, ap);
    va_end(ap);
}

void log_msgf(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_VALUE_MAX];
    va_list ap;

    if (level < g_min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit_plain(level, msg, (const char *)NULL);
}
