/* strbuf.c — a growable text buffer (printf appends, remembered failure). */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_FIRST_CAP 4096

/* Room for n more bytes and a NUL; false (and oom) when it cannot be had. */
static bool grow(struct strbuf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->oom)
        return false;
    if (b->cap - b->len > n)
        return true;
    cap = b->cap ? b->cap : STRBUF_FIRST_CAP;
    while (cap - b->len <= n)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (!grow(b, (size_t)n))
            return;
    }
}

void strbuf_reserve(struct strbuf *b, size_t n)
{
    char *p;

    if (b->oom || b->cap - b->len > n)
        return;
    if (b->p != NULL) {
        grow(b, n);
        return;
    }
    p = malloc(n + 1);
    if (p == NULL) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->p[0] = '\0';
    b->cap = n + 1;
}

char *strbuf_room(struct strbuf *b, size_t n)
{
    return grow(b, n) ? b->p + b->len : NULL;
}

void strbuf_commit(struct strbuf *b, size_t n)
{
    b->len += n;
    b->p[b->len] = '\0';
}

void strbuf_append(struct strbuf *b, const char *s, size_t n)
{
    char *dst = strbuf_room(b, n);

    if (dst == NULL)
        return;
    memcpy(dst, s, n);
    strbuf_commit(b, n);
}

int strbuf_take(struct strbuf *b, char **out, size_t *len)
{
    int rc = POOLD_OK;

    if (b->oom || b->p == NULL) {
        free(b->p);
        rc = POOLD_ERR_NOMEM;
    } else {
        *out = b->p;
        *len = b->len;
    }
    memset(b, 0, sizeof *b);
    return rc;
}
