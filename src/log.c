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

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_init(enum log_format format, enum log_level min_level)
{
    g_format = format;
    g_min = min_level;
}

size_t log_escape(char *dst, size_t dstlen, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (dstlen == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        char esc[7];
        size_t n;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (o + n >= dstlen)
            break;
        memcpy(dst + o, esc, n);
        o += n;
    }
    dst[o] = '\0';
    return o;
}

/* Append to a bounded line buffer; silently truncates. */
static void put(char *line, size_t *o, const char *s)
{
    size_t n = strlen(s);
    if (*o + n >= LOG_LINE_MAX)
        n = LOG_LINE_MAX - 1 - *o;
    memcpy(line + *o, s, n);
    *o += n;
    line[*o] = '\0';
}

static void put_field(char *line, size_t *o, const char *key, const char *val)
{
    char esc[LOG_VALUE_MAX];

    log_escape(esc, sizeof esc, val ? val : "", val ? strlen(val) : 0);
    if (g_format == LOG_FORMAT_JSON) {
        put(line, o, ",\"");
        put(line, o, key);
        put(line, o, "\":\"");
        put(line, o, esc);
        put(line, o, "\"");
    } else {
        put(line, o, " ");
        put(line, o, key);
        put(line, o, "=\"");
        put(line, o, esc);
        put(line, o, "\"");
    }
}

static void emit(enum log_level level, const char *msg, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ts[64];
    size_t o = 0;
    struct timespec now;
    struct tm tm;

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
        char esc[LOG_VALUE_MAX];
        log_escape(esc, sizeof esc, msg, strlen(msg));
        put(line, &o, esc);
    }
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        put_field(line, &o, key, va_arg(ap, const char *));
    }
    if (g_format == LOG_FORMAT_JSON)
        put(line, &o, "}");
    /* One fputs of a whole line: stdio locks the stream, lines never mix. */
    put(line, &o, "\n");
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
