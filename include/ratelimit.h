/* ratelimit.h — per-org token buckets (POOLD rate limits), in memory, one
 * set per poold process. Pure: every decision takes "now" from the caller. */
#ifndef POOLD_RATELIMIT_H
#define POOLD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orgid.h"
#include "status.h"

#define RATELIMIT_RPS_MAX 1000000.0
#define RATELIMIT_BURST_MAX 1000000

/* A token bucket: burst tokens at most, refilled at rps per second. */
struct ratelimit_bucket {
    double rps;       /* > 0 */
    double burst;     /* >= 1 */
    double tokens;    /* 0 .. burst */
    uint64_t last_ns; /* when tokens was last brought up to date */
};

enum ratelimit_verdict {
    RATELIMIT_PASS,  /* n tokens taken */
    RATELIMIT_WAIT,  /* not now: *retry_ns until n tokens are there */
    RATELIMIT_NEVER, /* n > burst: can never pass */
};

/* A full bucket. */
void ratelimit_bucket_init(struct ratelimit_bucket *b, double rps,
                           unsigned burst, uint64_t now_ns);

/* Take n tokens if there are n, else say how long until there are. */
enum ratelimit_verdict ratelimit_bucket_take(struct ratelimit_bucket *b,
                                             unsigned n, uint64_t now_ns,
                                             uint64_t *retry_ns);

/* True when rps and burst are inside the documented ranges. */
bool ratelimit_valid(double rps, long long burst);

/* One org's limit as stored (rps 0: none). */
struct ratelimit_setting {
    char org_id[ORG_ID_MAX + 1];
    double rps;
    unsigned burst;
};

struct ratelimit_table; /* opaque; thread-safe (one mutex, no I/O under it) */

POOLD_MUSTCHECK int ratelimit_table_create(struct ratelimit_table **out);
void ratelimit_table_destroy(struct ratelimit_table *t); /* accepts NULL */

/*
 * Make the table's limits exactly v[0..n): orgs listed get their limit (a
 * changed limit starts with its bucket no fuller than the new burst), orgs
 * not listed have none. Refusal counts are kept.
 */
POOLD_MUSTCHECK int ratelimit_table_sync(struct ratelimit_table *t,
                                         const struct ratelimit_setting *v,
                                         size_t n, uint64_t now_ns);

/* As ratelimit_table_sync() for the n orgs listed only (rps 0: that org
 * has no limit now); the others' limits are kept. */
POOLD_MUSTCHECK int ratelimit_table_update(struct ratelimit_table *t,
                                           const struct ratelimit_setting *v,
                                           size_t n, uint64_t now_ns);

/* Admit n messages of org_id at now_ns. An org without a limit always
 * passes. A refusal (WAIT or NEVER) is counted for the org. */
enum ratelimit_verdict ratelimit_table_take(struct ratelimit_table *t,
                                            const char *org_id, unsigned n,
                                            uint64_t now_ns,
                                            uint64_t *retry_ns);

/* Requests refused for org_id so far (0 for an org never refused). */
uint64_t ratelimit_table_refused(struct ratelimit_table *t, const char *org_id);

/* True when org_id has an entry (it has, or had, a limit): then
 * ratelimit_table_foreach() visits it. */
bool ratelimit_table_has(struct ratelimit_table *t, const char *org_id);

/* Call fn for every org with a refusal count or a limit; under the table's
 * lock, so fn must not call back into the table. */
void ratelimit_table_foreach(struct ratelimit_table *t,
                             void (*fn)(void *arg, const char *org_id,
                                        uint64_t refused),
                             void *arg);

#endif
