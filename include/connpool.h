/* connpool.h — the process's PostgreSQL connection pool: callbacks, wiring. */
#ifndef POOLD_CONNPOOL_H
#define POOLD_CONNPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "db.h"
#include "pool.h"
#include "status.h"

struct service_env; /* service.h: the ops' ctx */

/*
 * One generic pool of struct db_conn * for every org (the shared connection
 * cap, POOLD_DB_MAX_CONNS). Its create goes through a circuit breaker and a
 * cap gate (the replicas' share: 0 opens nothing); its validate runs the
 * liveness ladder, its reset requires a clean connection. In
 * POOLD_POOL_MODE=none it holds permits instead (one per connection a
 * request opens itself): the generic pool is then a fair, counted semaphore.
 */
struct connpool_config {
    const struct db_settings *db; /* borrowed; must outlive the connpool */
    struct breaker *breaker;      /* every connection attempt; borrowed,
                                     must outlive the connpool; NULL: none */
    bool pooled;                  /* false: permits (POOLD_POOL_MODE=none) */
    unsigned max_conns;           /* POOLD_DB_MAX_CONNS, >= 1 */
    unsigned min_idle;            /* POOLD_DB_MIN_IDLE (clamped to max_conns;
                                     permits: ignored) */
    unsigned max_waiters;         /* permits: POOLD_MAX_WAITING; connections
                                     wait unbounded (builds queue here) */
    uint64_t ttl_ns;              /* POOLD_CONN_TTL_S (permits: none) */
    uint64_t check_idle_ns;       /* POOLD_CONN_CHECK_IDLE_MS */
};

struct connpool; /* opaque */

/* Create the pool; opens nothing (the database may be down). POOLD_OK and
 * *out (free with connpool_destroy()), or POOLD_ERR_NOMEM /
 * POOLD_ERR_INVALID. The cap starts at cfg->max_conns. */
POOLD_MUSTCHECK int connpool_create(const struct connpool_config *cfg,
                                    struct connpool **out);

/* Destroy the pool: every connection is closed. Call once no service holds
 * one (services first). Accepts NULL. */
void connpool_destroy(struct connpool *cp);

/* The generic pool itself, for acquire/release/stats; borrowed for the
 * connpool's life. Thread-safe (the pool's calls are). */
struct pool *connpool_pool(const struct connpool *cp);

/*
 * Let at most cap connections be open (clamped to max_conns; returned):
 * the pool's max_size becomes cap (1 when cap is 0, and create then fails
 * at once, so nothing opens). Idle connections beyond it close now, lent
 * ones when released; connections held by idle services are the caller's
 * to reclaim (registry_set_conn_cap). Thread-safe.
 */
unsigned connpool_set_cap(struct connpool *cp, unsigned cap);

/* The cap set last (0: no connection may be opened). Thread-safe, cheap. */
unsigned connpool_cap(struct connpool *cp);

/*
 * The budget as PostgreSQL counts it: a backend lives until it has read our
 * goodbye, and one given a statement that we stopped waiting for (its
 * deadline passed while the database was frozen or slow) reads it only
 * once that statement is done. A pooled connection closed so
 * (db_conn_lingers) keeps its place in the pool (pool_hold), counted in
 * pool_total() and the stats' "held", until connpool_check_lingering()
 * sees its backend gone from pg_stat_activity.
 *
 * connpool_close_outside(): close a connection of the process outside the
 * pool (the housekeeping one) the same way: if it lingers it takes a place
 * of the pool until seen gone. Accepts NULL. Thread-safe.
 */
void connpool_close_outside(struct connpool *cp, struct db_conn *conn);

/* Closed connections whose backend was not seen gone yet. Thread-safe. */
unsigned connpool_lingering(struct connpool *cp);

/* On conn (a connection outside the budget), one statement asks
 * pg_stat_activity which of those backends are still there (by pid, and
 * client_port over TCP, so a reused pid is not taken for ours); the places
 * of the others are given back. POOLD_OK (some may remain), or POOLD_ERR_DB
 * / POOLD_ERR_NOMEM with err: nothing is given back. Thread-safe. */
POOLD_MUSTCHECK int connpool_check_lingering(struct connpool *cp,
                                             struct db_conn *conn, char *err,
                                             size_t errlen);

/*
 * The bare connection ops, without breaker or cap: objects are struct
 * db_conn *, ctx is a struct service_env (its db and conn_check_idle_ns are
 * read). For tests that build a connection pool of their own.
 */
extern const struct pool_ops connpool_conn_ops;

#endif
