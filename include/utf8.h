/* utf8.h — what valid UTF-8 is (RFC 3629: no overlong form, no surrogate,
 * nothing above U+10FFFF), as jansson and our log lines both judge it. A
 * leaf: every layer may include it. */
#ifndef POOLD_UTF8_H
#define POOLD_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid multi-byte sequence at s (2..4; len >= 1 bytes
 * readable), or 0 when s[0] does not start one or the sequence is invalid
 * or truncated. ASCII (s[0] < 0x80) is 0 too: callers test it first. */
size_t utf8_seq_len(const unsigned char *s, size_t len);

/* True when the len bytes at s are valid UTF-8 (NUL bytes included). */
bool utf8_valid(const char *s, size_t len);

#endif
