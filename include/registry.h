/* registry.h — org_id -> service pool, routing, the shared connection cap. */
#ifndef POOLD_REGISTRY_H
#define POOLD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "service.h"
#include "status.h"

struct registry; /* opaque */

struct registry_config {
    struct db_settings db;       /* borrowed strings must outlive the registry */
    bool pooled;                 /* false: POOLD_POOL_MODE=none */
    unsigned default_size;       /* POOLD_POOL_SIZE */
    unsigned ceiling;            /* POOLD_POOL_CEILING */
    unsigned max_waiters;        /* POOLD_MAX_WAITING */
    uint64_t acquire_timeout_ns; /* POOLD_ACQUIRE_TIMEOUT_MS */
    unsigned db_max_conns;       /* POOLD_DB_MAX_CONNS */
    unsigned db_min_idle;        /* POOLD_DB_MIN_IDLE (clamped to the cap;
                                    kept open by a thread of its own) */
    uint64_t conn_ttl_ns;        /* POOLD_CONN_TTL_S */
    uint64_t conn_check_idle_ns; /* POOLD_CONN_CHECK_IDLE_MS */
    double build_cost_ms;
    double process_cost_ms;
    const char *prewarm;         /* "all", "org_a,org_b", or "" */
    uint64_t refresh_interval_ns;/* org directory poll period (default 1 s) */
};

/*
 * Create the registry: the connection pool, an empty org map. Does not touch
 * the database (it may be down); registry_start() begins the housekeeping
 * thread that loads the org directory, watches it for changes, maintains
 * every pool and prewarms.
 */
POOLD_MUSTCHECK int registry_create(const struct registry_config *cfg,
                                    struct registry **out);
POOLD_MUSTCHECK int registry_start(struct registry *reg);

/* Stop housekeeping, shut down and free every pool. Accepts NULL. */
void registry_destroy(struct registry *reg);

/* Refuse new work (POOLD_ERR_SHUTDOWN) and wake every waiter. */
void registry_shutdown(struct registry *reg);

/* End every database wait of the process now, and every later one at once
 * (db_abort_all): requests whose write was sent answer
 * POOLD_ERR_COMMIT_UNKNOWN, the others POOLD_ERR_DB. For the end of a
 * shutdown's drain; irreversible. Thread-safe. */
void registry_abort(struct registry *reg);

/* True once the org directory is loaded and the last database contact
 * succeeded. */
bool registry_is_ready(struct registry *reg);

/*
 * Process one message for org_id: find or create the org's pool (once, even
 * under concurrent first requests), borrow a service, hydrate, process,
 * reset and release it. Returns POOLD_OK (row committed), or
 * POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_MISCONFIGURED, POOLD_ERR_TIMEOUT or
 * POOLD_ERR_WAITERS_FULL (pool exhausted), POOLD_ERR_CONFLICT, POOLD_ERR_DB
 * (nothing written), POOLD_ERR_COMMIT_UNKNOWN (sent, answer lost),
 * POOLD_ERR_NOT_READY, POOLD_ERR_SHUTDOWN. err gets a message for a person.
 * Returns within the acquire timeout + the statement timeout + 0.5 s
 * whatever the database does.
 */
POOLD_MUSTCHECK int registry_process(struct registry *reg, const char *org_id,
                                     const struct message *msg,
                                     struct service_result *out, char *err,
                                     size_t errlen);

/*
 * Process jobs[0..n) (messages of one org, n >= 1) in one statement on one
 * of the org's services, within the same time bound as registry_process().
 * Returns POOLD_OK when the statement answered: each job then has its own
 * status (POOLD_OK, POOLD_ERR_CONFLICT, rarely POOLD_ERR_DB). Otherwise the
 * batch's error, as registry_process() returns them: nothing was written
 * unless it is POOLD_ERR_COMMIT_UNKNOWN. jobs are the caller's.
 */
POOLD_MUSTCHECK int registry_process_batch(struct registry *reg,
                                           const char *org_id,
                                           struct service_job *jobs, size_t n,
                                           char *err, size_t errlen);

/* One org's pool stats; zeros and the effective size if no pool exists yet.
 * POOLD_ERR_UNKNOWN_ORG / POOLD_ERR_NOT_READY as above. */
POOLD_MUSTCHECK int registry_pool_stats(struct registry *reg,
                                        const char *org_id,
                                        struct pool_stats *out);

/* Resize an org's pool (1..ceiling) and store the size in orgs.pool_max_size.
 * Fills *out with the stats after the resize. POOLD_ERR_INVALID for a size
 * out of range, POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_DB. */
POOLD_MUSTCHECK int registry_resize(struct registry *reg, const char *org_id,
                                    unsigned size, struct pool_stats *out,
                                    char *err, size_t errlen);

/* Call fn for every org pool that exists, under no lock that fn could
 * deadlock on; org_id and stats are borrowed for the call. */
void registry_foreach_pool(struct registry *reg,
                           void (*fn)(void *arg, const char *org_id,
                                      const struct pool_stats *stats),
                           void *arg);

/* Stats of the connection pool (max_size is POOLD_DB_MAX_CONNS). */
void registry_conn_stats(struct registry *reg, struct pool_stats *out);

#endif
