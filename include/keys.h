/* keys.h — org API keys: making them (kernel CSPRNG), their SHA-256 digest,
 * and the in-memory set of live keys that POST /process* checks without a
 * query. No SQL here: the tenants module loads the set from org_keys. */
#ifndef POOLD_KEYS_H
#define POOLD_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "orgid.h"
#include "status.h"

#define KEYS_DIGEST_LEN 32                       /* SHA-256 */
#define KEYS_SECRET_BYTES 24                     /* 192 random bits per key */
#define KEYS_KEY_LEN (3 + 2 * KEYS_SECRET_BYTES) /* "pk_" + hex */
#define KEYS_ID_LEN (4 + 16)                     /* "key_" + 16 hex */

/* One live key: what the set needs to answer "whose key is this?". */
struct keys_entry {
    unsigned char digest[KEYS_DIGEST_LEN];
    char key_id[KEYS_ID_LEN + 1];
    char org_id[ORG_ID_MAX + 1];
};

/*
 * A new key and its id from getrandom(2): key is "pk_" + 48 hex digits
 * (NUL-terminated in the caller's KEYS_KEY_LEN + 1 bytes), key_id "key_" +
 * 16 hex digits. POOLD_ERR_NOMEM-free; POOLD_ERR_INVALID if the kernel
 * gives no randomness (never expected).
 */
POOLD_MUSTCHECK int keys_generate(char key[KEYS_KEY_LEN + 1],
                                  char key_id[KEYS_ID_LEN + 1]);

/* SHA-256 of the len bytes at s (GnuTLS). */
void keys_digest(const char *s, size_t len, unsigned char out[KEYS_DIGEST_LEN]);

/* True if s is "key_" + 16 lower-case hex digits. */
bool keys_id_is_valid(const char *s, size_t len);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void keys_hex(const unsigned char *in, size_t n, char *out);

/* Parse 2 * n hex digits; false if s is not exactly that. */
bool keys_unhex(const char *s, size_t len, unsigned char *out, size_t n);
/* The value of hex digit c (either case), or -1; http.c's percent-decoding
 * uses it too. */
int keys_hex_digit(char c);

struct keys_set; /* opaque; thread-safe (a read-write lock) */

POOLD_MUSTCHECK int keys_set_create(struct keys_set **out);
void keys_set_destroy(struct keys_set *set); /* accepts NULL */

/* Replace every entry with the n given (copied) and mark the set loaded.
 * POOLD_ERR_NOMEM leaves the old entries in place. */
POOLD_MUSTCHECK int keys_set_replace(struct keys_set *set,
                                     const struct keys_entry *v, size_t n);

/* The keys of the norgs orgs listed become those of v[0..n) (each of
 * them of a listed org; copied); other orgs' keys are kept. NOMEM leaves
 * the set as it was. */
POOLD_MUSTCHECK int keys_set_update(struct keys_set *set,
                                    const char (*orgs)[ORG_ID_MAX + 1],
                                    size_t norgs, const struct keys_entry *v,
                                    size_t n);

/* True once keys_set_replace() succeeded once. */
bool keys_set_is_loaded(struct keys_set *set);

/*
 * Find the org of a presented key: digest it, look the digest up, compare
 * the whole digest in constant time. Copies the org id into org (ORG_ID_MAX
 * + 1 bytes) and returns true if the key is live.
 */
bool keys_set_find(struct keys_set *set, const char *key, size_t len,
                   char *org);

#endif
