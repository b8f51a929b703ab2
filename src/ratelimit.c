/* ratelimit.c — token buckets per org: the pure bucket and the org table. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

void ratelimit_bucket_init(struct ratelimit_bucket *b, double rps,
                           unsigned burst, uint64_t now_ns)
{
    b->rps = rps;
    b->burst = (double)burst;
    b->tokens = (double)burst;
    b->last_ns = now_ns;
}

static void bucket_refill(struct ratelimit_bucket *b, uint64_t now_ns)
{
    if (now_ns > b->last_ns) {
        double add = (double)(now_ns - b->last_ns) / (double)NS_PER_S * b->rps;
        b->tokens = fmin(b->burst, b->tokens + add);
    }
    b->last_ns = now_ns > b->last_ns ? now_ns : b->last_ns;
}

enum ratelimit_verdict ratelimit_bucket_take(struct ratelimit_bucket *b,
                                             unsigned n, uint64_t now_ns,
                                             uint64_t *retry_ns)
{
    double need;

    *retry_ns = 0;
    if ((double)n > b->burst) {
        *retry_ns = UINT64_MAX;
        return RATELIMIT_NEVER;
    }
    bucket_refill(b, now_ns);
    if (b->tokens >= (double)n) {
        b->tokens -= (double)n;
        return RATELIMIT_PASS;
    }
    need = ((double)n - b->tokens) / b->rps * (double)NS_PER_S;
    *retry_ns = need >= 1e18 ? UINT64_MAX : (uint64_t)ceil(need);
    return RATELIMIT_WAIT;
}

bool ratelimit_valid(double rps, long long burst)
{
    return isfinite(rps) && rps > 0 && rps <= RATELIMIT_RPS_MAX && burst >= 1 &&
           burst <= RATELIMIT_BURST_MAX;
}

/* ---- the table -------------------------------------------------------- */

struct rl_entry {
    char org_id[ORG_ID_MAX + 1];
    bool limited;
    bool seen;                      /* listed by the sync in progress */
    struct ratelimit_bucket bucket; /* meaningful when limited */
    uint64_t refused;
};

struct ratelimit_table {
    pthread_mutex_t lock; /* guards v, n, cap */
    struct rl_entry *v;   /* sorted by org_id */
    size_t n, cap;
};

int ratelimit_table_create(struct ratelimit_table **out)
{
    struct ratelimit_table *t = calloc(1, sizeof *t);

    if (t == NULL)
        return POOLD_ERR_NOMEM;
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        return POOLD_ERR_NOMEM;
    }
    *out = t;
    return POOLD_OK;
}

void ratelimit_table_destroy(struct ratelimit_table *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->v);
    free(t);
}

/* Under lock: the entry's index, or where it would go (*found false). */
static size_t rl_search(const struct ratelimit_table *t, const char *org_id,
                        bool *found)
{
    size_t lo = 0, hi = t->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->v[mid].org_id, org_id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Under lock: the org's entry, added (not limited) if missing; NULL on
 * allocation failure. */
static struct rl_entry *rl_get(struct ratelimit_table *t, const char *org_id)
{
    bool found;
    size_t i = rl_search(t, org_id, &found);

    if (found)
        return &t->v[i];
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct rl_entry *v = realloc(t->v, cap * sizeof *v);
        if (v == NULL)
            return NULL;
        t->v = v;
        t->cap = cap;
    }
    memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof t->v[0]);
    t->n++;
    memset(&t->v[i], 0, sizeof t->v[i]);
    snprintf(t->v[i].org_id, sizeof t->v[i].org_id, "%s", org_id);
    return &t->v[i];
}

static void rl_apply(struct rl_entry *e, const struct ratelimit_setting *s,
                     uint64_t now_ns)
{
    bool same = e->limited && e->bucket.rps == s->rps &&
                e->bucket.burst == (double)s->burst;

    if (same)
        return;
    if (e->limited) { /* keep what was spent, no fuller than the new burst */
        bucket_refill(&e->bucket, now_ns);
        double tokens = fmin(e->bucket.tokens, (double)s->burst);
        ratelimit_bucket_init(&e->bucket, s->rps, s->burst, now_ns);
        e->bucket.tokens = tokens;
    } else {
        ratelimit_bucket_init(&e->bucket, s->rps, s->burst, now_ns);
    }
    e->limited = true;
}

int ratelimit_table_sync(struct ratelimit_table *t,
                         const struct ratelimit_setting *v, size_t n,
                         uint64_t now_ns)
{
    int rc = POOLD_OK;

    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++)
        t->v[i].seen = false;
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = rl_get(t, v[i].org_id);
        if (e == NULL) {
            rc = POOLD_ERR_NOMEM;
            continue;
        }
        e->seen = true;
        if (v[i].rps > 0)
            rl_apply(e, &v[i], now_ns); /* a limit already there keeps
                                           what was spent */
        else
            e->limited = false;
    }
    for (size_t i = 0; i < t->n; i++)
        if (!t->v[i].seen)
            t->v[i].limited = false;
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int ratelimit_table_update(struct ratelimit_table *t,
                           const struct ratelimit_setting *v, size_t n,
                           uint64_t now_ns)
{
    int rc = POOLD_OK;

    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < n; i++) {
        bool found;
        size_t j = rl_search(t, v[i].org_id, &found);
        struct rl_entry *e = found ? &t->v[j] : NULL;

        if (v[i].rps <= 0) { /* no limit: an entry only keeps its count */
            if (e != NULL)
                e->limited = false;
        } else if (e != NULL || (e = rl_get(t, v[i].org_id)) != NULL) {
            rl_apply(e, &v[i], now_ns);
        } else {
            rc = POOLD_ERR_NOMEM;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

enum ratelimit_verdict ratelimit_table_take(struct ratelimit_table *t,
                                            const char *org_id, unsigned n,
                                            uint64_t now_ns, uint64_t *retry_ns)
{
    enum ratelimit_verdict v = RATELIMIT_PASS;
    bool found;
    size_t i;

    *retry_ns = 0;
    pthread_mutex_lock(&t->lock);
    i = rl_search(t, org_id, &found);
    if (found && t->v[i].limited) {
        v = ratelimit_bucket_take(&t->v[i].bucket, n, now_ns, retry_ns);
        if (v != RATELIMIT_PASS)
            t->v[i].refused++;
    }
    pthread_mutex_unlock(&t->lock);
    return v;
}

uint64_t ratelimit_table_refused(struct ratelimit_table *t, const char *org_id)
{
    uint64_t refused = 0;
    bool found;
    size_t i;

    pthread_mutex_lock(&t->lock);
    i = rl_search(t, org_id, &found);
    if (found)
        refused = t->v[i].refused;
    pthread_mutex_unlock(&t->lock);
    return refused;
}

bool ratelimit_table_has(struct ratelimit_table *t, const char *org_id)
{
    bool found;

    pthread_mutex_lock(&t->lock);
    rl_search(t, org_id, &found);
    pthread_mutex_unlock(&t->lock);
    return found;
}

void ratelimit_table_foreach(struct ratelimit_table *t,
                             void (*fn)(void *arg, const char *org_id,
                                        uint64_t refused),
                             void *arg)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++)
        fn(arg, t->v[i].org_id, t->v[i].refused);
    pthread_mutex_unlock(&t->lock);
}
