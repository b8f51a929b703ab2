/* metrics.h — HTTP counters and the Prometheus text rendering of all stats. */
#ifndef POOLD_METRICS_H
#define POOLD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "pool.h"
#include "registry.h"
#include "status.h"

#define METRICS_MAX_ROUTES 32

struct metrics; /* opaque; every counter is a relaxed atomic: lock-free */

/*
 * Create the HTTP counters for nroutes routes (<= METRICS_MAX_ROUTES - 1);
 * route index nroutes is "unmatched" (404 not_found). route_names are the
 * route patterns, borrowed for the life of the metrics. The route x method
 * x status table is fixed-size, so memory is bounded whatever clients send.
 */
POOLD_MUSTCHECK int metrics_create(const char *const *route_names,
                                   size_t nroutes, struct metrics **out);

/* Accepts NULL. */
void metrics_destroy(struct metrics *m);

/* Count one answered request. Unknown methods count as "OTHER", statuses
 * outside the known set as "other". Thread-safe. */
void metrics_observe_request(struct metrics *m, size_t route,
                             const char *method, unsigned status,
                             uint64_t duration_ns);

/* Open HTTP connections gauge (+1 / -1). Thread-safe. */
void metrics_connection_add(struct metrics *m, int delta);

/* A copy of every org pool's stats, sorted by org_id. */
struct pool_snapshot_entry {
    char org_id[ORG_ID_MAX + 1];
    struct pool_stats stats;
};
struct pool_snapshot {
    struct pool_snapshot_entry *v; /* malloc'd */
    size_t n, cap;
    bool oom;
};

/* Take the snapshot; POOLD_ERR_NOMEM on allocation failure. Free it with
 * metrics_snapshot_free() in any case. */
POOLD_MUSTCHECK int metrics_snapshot_pools(struct registry *reg,
                                           struct pool_snapshot *out);
void metrics_snapshot_free(struct pool_snapshot *s);

/* Sum b into a (every counter and gauge, histogram buckets included). */
void metrics_stats_add(struct pool_stats *a, const struct pool_stats *b);

/*
 * Render everything in Prometheus text format 0.0.4: per-org pool series,
 * the connection pool, acquire-wait histograms, HTTP requests and durations.
 * *out is malloc'd (caller frees), *len its length (no NUL counted).
 */
POOLD_MUSTCHECK int metrics_render(struct metrics *m, struct registry *reg,
                                   char **out, size_t *len);

#endif
