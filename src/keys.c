/* keys.c — org API keys: generation, digest, and the live-key set. */
#include "keys.h"
#include "keys_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

struct keys_set {
    pthread_rwlock_t lock; /* guards everything below */
    struct keys_entry *v;  /* n entries, malloc'd */
    size_t n;
    size_t *slot;  /* open addressing: index + 1, 0 empty */
    size_t nslots; /* power of two, >= 2n */
    bool loaded;
};

static bool random_bytes(unsigned char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

void keys_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

int keys_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool keys_unhex(const char *s, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = keys_hex_digit(s[2 * i]), lo = keys_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

int keys_generate(char key[KEYS_KEY_LEN + 1], char key_id[KEYS_ID_LEN + 1])
{
    unsigned char secret[KEYS_SECRET_BYTES], id[8];

    if (!random_bytes(secret, sizeof secret) || !random_bytes(id, sizeof id))
        return POOLD_ERR_INVALID;
    memcpy(key, "pk_", 3);
    keys_hex(secret, sizeof secret, key + 3);
    memcpy(key_id, "key_", 4);
    keys_hex(id, sizeof id, key_id + 4);
    return POOLD_OK;
}

void keys_digest(const char *s, size_t len, unsigned char out[KEYS_DIGEST_LEN])
{
    /* SHA-256 cannot fail for a valid algorithm; gnutls needs no init for
     * the hash functions. */
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, s, len, out) != 0)
        abort();
}

bool keys_id_is_valid(const char *s, size_t len)
{
    if (s == NULL || len != KEYS_ID_LEN || memcmp(s, "key_", 4) != 0)
        return false;
    for (size_t i = 4; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* ---- the set -------------------------------------------------------- */

int keys_set_create(struct keys_set **out)
{
    struct keys_set *set = calloc(1, sizeof *set);

    if (set == NULL)
        return POOLD_ERR_NOMEM;
    if (pthread_rwlock_init(&set->lock, NULL) != 0) {
        free(set);
        return POOLD_ERR_NOMEM;
    }
    *out = set;
    return POOLD_OK;
}

void keys_set_destroy(struct keys_set *set)
{
    if (set == NULL)
        return;
    pthread_rwlock_destroy(&set->lock);
    free(set->v);
    free(set->slot);
    free(set);
}

/* The digest is uniformly random: its first bytes are a good hash. */
static size_t digest_hash(const unsigned char *d)
{
    uint64_t h;

    memcpy(&h, d, sizeof h);
    return (size_t)h;
}

/* The probe table of n entries; NULL when out of memory. */
static size_t *keys_slots(const struct keys_entry *v, size_t n, size_t *out)
{
    size_t nslots = 16;
    size_t *slot;

    while (nslots < 2 * n)
        nslots *= 2;
    slot = calloc(nslots, sizeof *slot);
    if (slot == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t s = digest_hash(v[i].digest) & (nslots - 1);
        while (slot[s] != 0)
            s = (s + 1) & (nslots - 1);
        slot[s] = i + 1;
    }
    *out = nslots;
    return slot;
}

/* Under the write lock: the set becomes v (n entries, taken). */
static int keys_set_install(struct keys_set *set, struct keys_entry *v,
                            size_t n)
{
    size_t nslots;
    size_t *slot = keys_slots(v, n, &nslots);

    if (slot == NULL) {
        free(v);
        return POOLD_ERR_NOMEM;
    }
    free(set->v);
    free(set->slot);
    set->v = v;
    set->n = n;
    set->slot = slot;
    set->nslots = nslots;
    set->loaded = true;
    return POOLD_OK;
}

int keys_set_replace(struct keys_set *set, const struct keys_entry *v, size_t n)
{
    struct keys_entry *copy = malloc((n ? n : 1) * sizeof *copy);
    int rc;

    if (copy == NULL)
        return POOLD_ERR_NOMEM;
    if (n > 0)
        memcpy(copy, v, n * sizeof *copy);
    pthread_rwlock_wrlock(&set->lock);
    rc = keys_set_install(set, copy, n);
    pthread_rwlock_unlock(&set->lock);
    return rc;
}

static int org_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

int keys_set_update(struct keys_set *set, const char (*orgs)[ORG_ID_MAX + 1],
                    size_t norgs, const struct keys_entry *v, size_t n)
{
    char(*sorted)[ORG_ID_MAX + 1] =
        malloc((norgs ? norgs : 1) * sizeof *sorted);
    struct keys_entry *next = NULL;
    size_t k = 0;
    int rc = POOLD_ERR_NOMEM;

    if (sorted == NULL)
        return rc;
    if (norgs > 0)
        memcpy(sorted, orgs, norgs * sizeof *sorted);
    qsort(sorted, norgs, sizeof *sorted, org_cmp);
    pthread_rwlock_wrlock(&set->lock);
    next = malloc((set->n + n ? set->n + n : 1) * sizeof *next);
    if (next != NULL) {
        /* The listed orgs' keys are replaced by v, the others' kept. */
        for (size_t i = 0; i < set->n; i++)
            if (bsearch(set->v[i].org_id, sorted, norgs, sizeof *sorted,
                        org_cmp) == NULL)
                next[k++] = set->v[i];
        if (n > 0)
            memcpy(next + k, v, n * sizeof *v);
        rc = keys_set_install(set, next, k + n);
    }
    pthread_rwlock_unlock(&set->lock);
    free(sorted);
    return rc;
}

bool keys_set_is_loaded(struct keys_set *set)
{
    bool loaded;

    pthread_rwlock_rdlock(&set->lock);
    loaded = set->loaded;
    pthread_rwlock_unlock(&set->lock);
    return loaded;
}

size_t keys_set_count(struct keys_set *set)
{
    size_t n;

    pthread_rwlock_rdlock(&set->lock);
    n = set->n;
    pthread_rwlock_unlock(&set->lock);
    return n;
}

/* Compare two digests in time independent of where they differ. */
static bool digest_equal(const unsigned char *a, const unsigned char *b)
{
    volatile unsigned char diff = 0;

    for (size_t i = 0; i < KEYS_DIGEST_LEN; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

bool keys_set_find(struct keys_set *set, const char *key, size_t len, char *org)
{
    unsigned char d[KEYS_DIGEST_LEN];
    bool found = false;

    if (key == NULL || len == 0)
        return false;
    keys_digest(key, len, d);
    pthread_rwlock_rdlock(&set->lock);
    if (set->nslots > 0) {
        size_t s = digest_hash(d) & (set->nslots - 1);
        for (; set->slot[s] != 0 && !found; s = (s + 1) & (set->nslots - 1)) {
            const struct keys_entry *e = &set->v[set->slot[s] - 1];
            if (digest_equal(e->digest, d)) {
                memcpy(org, e->org_id, sizeof e->org_id);
                found = true;
            }
        }
    }
    pthread_rwlock_unlock(&set->lock);
    return found;
}
