/* strbuf.h — the project's growable text buffer: printf-style appends, an
 * allocation failure remembered (later appends do nothing) and reported once,
 * when the text is taken. Not thread-safe: one renderer owns one buffer. */
#ifndef POOLD_STRBUF_H
#define POOLD_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

struct strbuf {
    char *p; /* malloc'd, NUL-terminated once anything is appended */
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete */
};

/* Append; zero-initialise the buffer before the first call. */
__attribute__((format(printf, 2, 3))) void strbuf_printf(struct strbuf *b,
                                                         const char *fmt, ...);

/* Make room for at least n more bytes (and the NUL) in one allocation:
 * the first one of a buffer is then exactly n + 1 bytes, not the 4 KiB an
 * append starts with. */
void strbuf_reserve(struct strbuf *b, size_t n);

/* Append n bytes of s (no NUL needed in s). */
void strbuf_append(struct strbuf *b, const char *s, size_t n);

/* Write in place: strbuf_room gives room for n more bytes and a NUL
 * (NULL after an allocation failure: skip the write); strbuf_commit then
 * adds the m <= n bytes written. */
char *strbuf_room(struct strbuf *b, size_t n);
void strbuf_commit(struct strbuf *b, size_t m);

/* The text into *out (malloc'd, the caller frees) and its length, without
 * the NUL, into *len: POOLD_OK, or POOLD_ERR_NOMEM when an append failed or
 * nothing was appended (the text is freed). The buffer is empty after. */
POOLD_MUSTCHECK int strbuf_take(struct strbuf *b, char **out, size_t *len);

#endif
