/* jsonfast.c — a flat object of strings read in place, and JSON written
 * without a tree (jsonfast.h). */
#include "jsonfast.h"

#include <stdlib.h>
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

/* Room for one more object of at most obj_cap members in list. */
static bool list_room(struct jsonfast_list *list, size_t obj_cap)
{
    if (list->nitems + obj_cap > list->items_cap) {
        size_t cap = 2 * list->items_cap + 16 * obj_cap;
        void *p = realloc(list->items, cap * sizeof *list->items);
        if (p == NULL)
            return false;
        list->items = p;
        list->items_cap = cap;
    }
    if (list->n == list->ends_cap) {
        size_t cap = 2 * list->ends_cap + 16;
        void *p = realloc(list->ends, cap * sizeof *list->ends);
        if (p == NULL)
            return false;
        list->ends = p;
        list->ends_cap = cap;
    }
    return true;
}

static bool read_object(char **pp, const char *end, struct jsonfast_member *out,
                        size_t cap, size_t *n, size_t obj_cap,
                        struct jsonfast_list *list);

/* The array whose '[' is at *pp, of flat objects, into list. */
static bool read_array(char **pp, const char *end, size_t obj_cap,
                       struct jsonfast_list *list)
{
    char *p = skip_blanks(*pp + 1, end);

    if (p < end && *p == ']') {
        *pp = p + 1;
        return true;
    }
    for (;;) {
        size_t k;
        if (list->max > 0 && list->n == list->max) {
            list->over = true;
            return false;
        }
        if (!list_room(list, obj_cap) ||
            !read_object(&p, end, list->items + list->nitems, obj_cap, &k, 0,
                         NULL))
            return false;
        list->nitems += k;
        list->ends[list->n++] = list->nitems;
        p = skip_blanks(p, end);
        if (p < end && *p == ',') {
            p = skip_blanks(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') {
            *pp = p + 1;
            return true;
        }
        return false;
    }
}

/* The object whose '{' is at *pp: string members into out (at most cap),
 * and, if list is not NULL, at most one array of flat objects (of at most
 * obj_cap members) into list. *pp is left after the '}'. */
static bool read_object(char **pp, const char *end, struct jsonfast_member *out,
                        size_t cap, size_t *n, size_t obj_cap,
                        struct jsonfast_list *list)
{
    char *p = *pp;
    size_t k = 0;

    if (p == end || *p != '{')
        return false;
    p = skip_blanks(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            struct jsonfast_member *m = &out[k];
            const char *key;
            size_t key_len;
            if (p == end || *p != '"' || !read_string(&p, end, &key, &key_len))
                return false;
            p = skip_blanks(p, end);
            if (p == end || *p != ':')
                return false;
            p = skip_blanks(p + 1, end);
            if (p < end && *p == '[' && list != NULL && list->key == NULL) {
                list->key = key;
                list->key_len = key_len;
                if (!read_array(&p, end, obj_cap, list))
                    return false;
            } else {
                if (k == cap || p == end || *p != '"' ||
                    !read_string(&p, end, &m->val, &m->val_len))
                    return false;
                m->key = key;
                m->key_len = key_len;
                k++;
            }
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
    if (!keys_unique(out, k))
        return false;
    if (list != NULL && list->key != NULL)
        for (size_t i = 0; i < k; i++)
            if (out[i].key_len == list->key_len &&
                memcmp(out[i].key, list->key, list->key_len) == 0)
                return false;
    *pp = p;
    *n = k;
    return true;
}

bool jsonfast_read_flat(char *buf, size_t len, struct jsonfast_member *out,
                        size_t cap, size_t *n)
{
    const char *end = buf + len;
    char *p = skip_blanks(buf, end);

    return read_object(&p, end, out, cap, n, 0, NULL) &&
           skip_blanks(p, end) == end;
}

bool jsonfast_read_list(char *buf, size_t len, struct jsonfast_member *top,
                        size_t cap, size_t *n, size_t obj_cap,
                        struct jsonfast_list *list)
{
    const char *end = buf + len;
    char *p = skip_blanks(buf, end);

    return obj_cap > 0 && read_object(&p, end, top, cap, n, obj_cap, list) &&
           skip_blanks(p, end) == end;
}

void jsonfast_list_free(struct jsonfast_list *list)
{
    free(list->items);
    free(list->ends);
    *list = (struct jsonfast_list){0};
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

/* A scan of JSON text that steps over strings. */
struct string_scan {
    bool in_string, escaped;
};

/* Whether byte c (the next of the text) belongs to a string, its quotes
 * included. */
static bool string_byte(struct string_scan *st, char c)
{
    if (st->in_string) {
        if (st->escaped)
            st->escaped = false;
        else if (c == '\\')
            st->escaped = true;
        else if (c == '"')
            st->in_string = false;
        return true;
    }
    st->in_string = c == '"';
    return st->in_string;
}

size_t jsonfast_compact(char *text)
{
    struct string_scan st = {false, false};
    char *w = text;

    for (const char *r = text; *r != '\0'; r++) {
        if (!string_byte(&st, *r) &&
            (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            continue;
        *w++ = *r;
    }
    *w = '\0';
    return (size_t)(w - text);
}

void jsonfast_measure(const char *buf, size_t len, size_t *values,
                      size_t *depth)
{
    struct string_scan st = {false, false};
    size_t open = 0;

    *values = 1;
    *depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (string_byte(&st, buf[i]))
            continue;
        if (buf[i] == '{' || buf[i] == '[') {
            (*values)++;
            if (++open > *depth)
                *depth = open;
        } else if (buf[i] == ',') {
            (*values)++;
        } else if ((buf[i] == '}' || buf[i] == ']') && open > 0) {
            open--;
        }
    }
}
