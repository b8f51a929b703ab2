/* metrics.h — HTTP counters and the Prometheus text rendering of all stats.
 * It renders what it is given: the caller gathers the pools' stats (from
 * the registry) into a pool_snapshot and a metrics_view. */
#ifndef POOLD_METRICS_H
#define POOLD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orgid.h"
#include "pool.h"
#include "registry.h"
#include "status.h"

/* Routes of every branch together, with room: the table is fixed-size. */
#define METRICS_MAX_ROUTES 64

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

/* Count n idle keep-alive connections closed to give their slots to
 * connections waiting for one. Accepts NULL. Thread-safe. */
void metrics_idle_closed_add(struct metrics *m, unsigned n);

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

/* Add a copy of one org's stats to the snapshot at snap (a struct
 * pool_snapshot, zeroed before the first add): the shape of
 * registry_foreach_pool()'s callback. On allocation failure snap->oom is
 * set and later adds do nothing. */
void metrics_snapshot_add(void *snap, const char *org_id,
                          const struct pool_stats *stats);
/* Once every org is added: sort by org_id. POOLD_ERR_NOMEM if an add
 * failed. Free the snapshot with metrics_snapshot_free() in any case. */
POOLD_MUSTCHECK int metrics_snapshot_sort(struct pool_snapshot *s);
void metrics_snapshot_free(struct pool_snapshot *s);

/* The org that sums the orgs past POOLD_METRICS_TOP_ORGS in every per-org
 * series (an addition: DESIGN.md does not name it). */
#define METRICS_OTHER_ORG "_other"

/* POOLD_METRICS_TOP_ORGS: per-org series for at most n orgs in
 * metrics_render() (0: every org). Thread-safe. */
void metrics_set_top_orgs(struct metrics *m, unsigned n);

/* Sum b into a (every counter and gauge, histogram buckets included). */

/* One counter per org, in any order: the rate-limit refusals. */
struct metrics_org_count {
    char org_id[ORG_ID_MAX + 1];
    uint64_t n;
};
struct metrics_org_counts {
    struct metrics_org_count *v; /* malloc'd */
    size_t n, cap;
    bool oom;
};

/* Add one org's count to counts (a struct metrics_org_counts, zeroed before
 * the first add): the shape of ratelimit_table_foreach()'s callback. On
 * allocation failure counts->oom is set, later adds do nothing and the
 * render fails with POOLD_ERR_NOMEM. Free with metrics_counts_free(). */
void metrics_counts_add(void *counts, const char *org_id, uint64_t n);
void metrics_counts_free(struct metrics_org_counts *c);

/* What a scrape shows besides the HTTP counters, gathered by the caller. */
struct metrics_view {
    struct pool_snapshot *pools;      /* sorted (metrics_snapshot_sort); the
                                         render bounds it to the top orgs */
    struct pool_stats conn;           /* the connection pool's stats */
    struct reg_commit_totals commits; /* the commit queue's statements */
    bool ready;                       /* poold_ready: directory loaded, db up */
    /* poold_rate_limited_total per org, or NULL: no such series (no rate
     * limits). The render bounds it to the top orgs by count, the rest
     * summed under METRICS_OTHER_ORG, and sorts it by org_id. */
    struct metrics_org_counts *rate_limited;
};

/*
 * Render everything in Prometheus text format 0.0.4: per-org pool series,
 * the connection pool, acquire-wait histograms, HTTP requests and durations,
 * the per-org rate-limit refusals.
 * *out is malloc'd (caller frees), *len its length (no NUL counted).
 * Thread-safe for distinct views.
 */
POOLD_MUSTCHECK int metrics_render(struct metrics *m, struct metrics_view *view,
                                   char **out, size_t *len);

#endif
