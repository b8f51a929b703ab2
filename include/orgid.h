/* orgid.h — what an org id is: its longest length and its validity check.
 * A leaf: no database, no HTTP, so every layer may include it. */
#ifndef POOLD_ORGID_H
#define POOLD_ORGID_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of the longest org id (a buffer for one needs ORG_ID_MAX + 1). */
#define ORG_ID_MAX 64

/* True if the len bytes at s match ^[A-Za-z0-9_-]{1,64}$ (an embedded NUL
 * fails). s may be NULL (false). Pure, thread-safe. */
bool orgid_is_valid(const char *s, size_t len);

#endif
