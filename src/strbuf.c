/* strbuf.c — a growable text buffer (printf appends, remembered failure). */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_FIRST_CAP 4096

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
        size_t cap = b->cap ? b->cap : STRBUF_FIRST_CAP;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
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
