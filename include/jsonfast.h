/* jsonfast.h — the request path's JSON without a tree: a flat object of
 * string members read in place, and JSON strings and numbers written
 * straight into a text buffer. jansson stays the judge of everything else:
 * the reader only accepts what json_loadb would accept, with the same
 * member values, and declines the rest, so the caller then asks jansson
 * (which says what is wrong). A leaf of the HTTP layer, thread-safe. */
#ifndef POOLD_JSONFAST_H
#define POOLD_JSONFAST_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

/* One member of a flat object: key and value point into the buffer read,
 * NUL-terminated there (the lengths exclude the NUL). */
struct jsonfast_member {
    const char *key, *val;
    size_t key_len, val_len;
};

/* Read buf (len bytes, modified in place) as one JSON object whose members
 * are all strings: at most cap members, keys unique, strings of valid UTF-8
 * without control characters, escapes only of the two-character kinds
 * (\" \\ \/ \b \f \n \r \t; a \u escape declines), blanks as JSON has them
 * around tokens, nothing after the object. True with *n members in out, in
 * the body's order; false when the body is anything else (then buf holds
 * garbage: read the original). */
bool jsonfast_read_flat(char *buf, size_t len, struct jsonfast_member *out,
                        size_t cap, size_t *n);

/* An array of flat objects read by jsonfast_read_list: the members of its
 * objects one object after another in items, object i's being
 * items[i > 0 ? ends[i - 1] : 0 .. ends[i]). The reader grows the arrays;
 * jsonfast_list_free() frees them. Zero it before the read, then set max. */
struct jsonfast_list {
    size_t max;      /* more objects than this: declined (0: no bound) */
    bool over;       /* declined because there were more than max */
    const char *key; /* the array member's key; NULL: the body had none */
    size_t key_len;
    size_t n; /* objects */
    struct jsonfast_member *items;
    size_t *ends;
    size_t nitems, items_cap, ends_cap;
};

/* Read buf as jsonfast_read_flat does, but one member (at most) may be an
 * array of flat objects of strings, each read as jsonfast_read_flat reads
 * a body with at most obj_cap members: the string members go to top (at
 * most cap, *n of them), the array to *list. False, as for
 * jsonfast_read_flat, on anything else, on more than list->max objects
 * (the reader never holds more) or when memory ran out; free list either
 * way. */
bool jsonfast_read_list(char *buf, size_t len, struct jsonfast_member *top,
                        size_t cap, size_t *n, size_t obj_cap,
                        struct jsonfast_list *list);
void jsonfast_list_free(struct jsonfast_list *list);

/* Append s (len bytes of valid UTF-8) as a JSON string, quotes included,
 * escaped as jansson's json_dumpb escapes it: '"', '\\' and the control
 * characters; the rest as is. */
void jsonfast_put_string(struct strbuf *b, const char *s, size_t len);

/* Append v in decimal. */
void jsonfast_put_uint(struct strbuf *b, unsigned long long v);

/* What a parser would build of len bytes of JSON, measured in one pass
 * with no tree, to check before it builds one: *values, how many values
 * at most (the containers opened and the commas between values, outside
 * strings, plus one: jansson takes about 200 bytes for an empty object,
 * so 4 MiB of "{}," make 300 MB), and *depth, the deepest nesting of
 * arrays and objects (jansson reads up to 2 048 levels by recursion, more
 * than a 512 KiB thread stack holds under a sanitizer). */
void jsonfast_measure(const char *buf, size_t len, size_t *values,
                      size_t *depth);

/* Drop the blanks between the tokens of text (valid JSON, NUL-terminated,
 * modified in place), as a compact json_dumpb writes it; strings stay as
 * they are. Returns the new length. No tree, no recursion: for JSON that
 * PostgreSQL wrote ("a": 1, [1, 2]). */
size_t jsonfast_compact(char *text);

/* Append a string literal. */
#define jsonfast_put_lit(b, lit) strbuf_append((b), (lit), sizeof(lit) - 1)

#endif
