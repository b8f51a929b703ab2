/* jsonfast.c — a flat object of strings read in place, and JSON written
 * without a tree (jsonfast.h). */
#include "jsonfast.h"

#include <string.h>

#include "utf8.h"

/* JSON's four blanks (RFC 8259; jansson's lexer skips exactly these). */
static char *skip_blanks(char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The string whose opening quote is at *pp: decoded in place and
 * NUL-terminated (the decoded text is never longer than the encoded, so
 * the terminator lands at or before the closing quote). *pp is left after
 * the closing quote. False on anything jsonfast declines. */
static bool read_string(char **pp, const char *end, const char **s, size_t *len)
{
    char *p = *pp + 1, *o = p, *start = p;

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *o = '\0';
            *s = start;
            *len = (size_t)(o - start);
            *pp = p + 1;
            return true;
        }
        if (c == '\\') {
            if (end - p < 2)
                return false;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
                *o++ = p[1];
                break;
            case 'b':
                *o++ = '\b';
                break;
            case 'f':
                *o++ = '\f';
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 'r':
                *o++ = '\r';
                break;
            case 't':
                *o++ = '\t';
                break;
            default: /* \u (jansson judges surrogates and \u0000), or bad */
                return false;
            }
            p += 2;
        } else if (c < 0x20) {
            return false; /* a raw control character: invalid JSON */
        } else if (c < 0x80) {
            *o++ = *p++;
        } else {
            size_t n =
                utf8_seq_len((const unsigned char *)p, (size_t)(end - p));
            if (n == 0)
                return false;
            memmove(o, p, n);
            o += n;
            p += n;
        }
    }
    return false; /* no closing quote */
}

static bool keys_unique(const struct jsonfast_member *m, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (m[i].key_len == m[j].key_len &&
                memcmp(m[i].key, m[j].key, m[i].key_len) == 0)
                return false;
    return true;
}

bool jsonfast_read_flat(char *buf, size_t len, struct jsonfast_member *out,
                        size_t cap, size_t *n)
{
    const char *end = buf + len;
    char *p = skip_blanks(buf, end);
    size_t k = 0;

    if (p == end || *p != '{')
        return false;
    p = skip_blanks(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            struct jsonfast_member *m = &out[k];
            if (k == cap || p == end || *p != '"' ||
                !read_string(&p, end, &m->key, &m->key_len))
                return false;
            p = skip_blanks(p, end);
            if (p == end || *p != ':')
                return false;
            p = skip_blanks(p + 1, end);
            if (p == end || *p != '"' ||
                !read_string(&p, end, &m->val, &m->val_len))
                return false;
            k++;
            p = skip_blanks(p, end);
            if (p < end && *p == ',') {
                p = skip_blanks(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return false;
        }
    }
    if (skip_blanks(p, end) != end || !keys_unique(out, k))
        return false;
    *n = k;
    return true;
}

/* Bytes c takes in a JSON string as jsonfast_put_string writes it. */
static size_t escaped_len(unsigned char c)
{
    if (c == '"' || c == '\\')
        return 2;
    if (c >= 0x20)
        return 1;
    switch (c) {
    case '\b':
    case '\f':
    case '\n':
    case '\r':
    case '\t':
        return 2;
    default:
        return 6; /* \u00XX */
    }
}

void jsonfast_put_string(struct strbuf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o, *start;
    size_t need = 2;

    /* The exact length first: the buffer was reserved for the common
     * text, and room for the worst case (6 bytes a byte) would grow it. */
    for (size_t i = 0; i < len; i++)
        need += escaped_len((unsigned char)s[i]);
    o = start = strbuf_room(b, need);
    if (o == NULL)
        return;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            switch (c) {
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                memcpy(o, "u00", 3);
                o[3] = hex[c >> 4];
                o[4] = hex[c & 0xf];
                o += 5;
            }
        }
    }
    *o++ = '"';
    strbuf_commit(b, (size_t)(o - start));
}

void jsonfast_put_uint(struct strbuf *b, unsigned long long v)
{
    char digits[24];
    size_t i = sizeof digits;

    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    strbuf_append(b, digits + i, sizeof digits - i);
}
