/* housekeeping.h — the registry's janitor: one thread, named steps a tick. */
#ifndef POOLD_HOUSEKEEPING_H
#define POOLD_HOUSEKEEPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "db.h"
#include "status.h"

struct registry;
struct housekeeping; /* opaque; owned by the registry */

/*
 * A tick is a flat list of named steps run in order, each given "now" from
 * the tick's clock (the thread's is the monotonic clock; a test's is fake):
 *
 *   connect         the housekeeping connection (outside the cap) is alive
 *   refresh         org_changes since the last read; the changed orgs (or,
 *                   at start or after a bulk write, all) applied
 *   apply_pending   retire and resize what the reload marked
 *   preload_rules   the directory is loaded (rules are parsed when an
 *                   org's pool builds its first service, not here)
 *   watch           registry_config.watch (tenants: keys, rate limits)
 *   sync_sizes      a pool whose size is not the stored one is resized
 *   health          readiness, or "database unreachable" and a backoff
 *   breakers        the database answers again: every breaker closed
 *   closed_backends connections closed with a statement in flight give
 *                   their places back once pg_stat_activity shows their
 *                   backends gone (connpool_check_lingering)
 *   replica_hook    the cluster's hook (registry_set_hk_hook)
 *   maintain_pools  each org pool's lifetimes and idle timeouts
 *   check_holds     holds older than POOLD_HOLD_WARN_MS counted and logged
 *   maintain_conns  the connection pool (min idle), unless the warm thread
 *                   does it
 *   reclaim         builds waiting for a connection get an idle one
 *   free_gone       the pools of orgs deleted from the table are freed
 *                   once nothing uses them (registry_internal.h)
 *   prewarm         POOLD_PREWARM, once the directory is loaded (a thread)
 *
 * Steps up to replica_hook run with the housekeeping connection taken; a
 * step that needs the database is skipped once one before it failed, and
 * prewarm is skipped until the directory is loaded.
 *
 * registry_config.lifecycle (processed_messages' partitions, the audit
 * log's retention) is no step: it runs at start-up on the housekeeping
 * connection, then every lifecycle_interval_ns on a thread of its own with
 * a connection of the pool (registry_with_conn), so that its lock waits
 * and deletes never hold up the lease's renewal.
 */
enum hk_outcome {
    HK_RAN,     /* did its work */
    HK_FAILED,  /* a database step failed (the tick's later ones skip) */
    HK_SKIPPED, /* not due: no database, directory not loaded, nothing to
                   do this tick */
};

/* What one step of a tick did; name is static. */
struct hk_step_report {
    const char *name;
    enum hk_outcome outcome;
};

/* Allocate; no thread, no I/O. reg is borrowed for the housekeeping's life.
 * POOLD_OK and *out, or POOLD_ERR_NOMEM. */
POOLD_MUSTCHECK int housekeeping_create(struct registry *reg,
                                        struct housekeeping **out);

/*
 * Start-up, on the caller's thread: connect, check the schema (a reachable
 * database without it: POOLD_ERR_DB, logged; an unreachable one is not an
 * error, it is retried), load the directory, run the lifecycle once if
 * that worked, call the replica hook; then
 * start the housekeeping thread, the warm thread (POOLD_DB_MIN_IDLE) and
 * the lifecycle thread (registry_config.lifecycle).
 * Once.
 */
POOLD_MUSTCHECK int housekeeping_start(struct housekeeping *hk);

/* Stop and join every thread housekeeping started (the prewarm one after
 * its builds fail: shut the pools down first). Idempotent. */
void housekeeping_stop(struct housekeeping *hk);

/* After housekeeping_stop() and once every pooled connection is closed:
 * the replica hook is told (stopping), the housekeeping connection closed,
 * everything freed. Accepts NULL. */
void housekeeping_destroy(struct housekeeping *hk);

/*
 * Run one tick: every step in order, each given "now" as clock(clock_ctx)
 * reads it just before the step (clock NULL: the monotonic clock; a test
 * passes a fake one). Fills out[0..max) (out may be NULL) with each step's
 * outcome; returns the number of steps. Uses the housekeeping connection,
 * the tick's own: it never waits for an admin call or a resize (the
 * refresh steps are skipped, not waited for, while an admin call runs
 * them itself). The thread calls it about every refresh interval; a test may
 * call it instead (then start nothing). Not to be run twice at once.
 */
size_t housekeeping_tick(struct housekeeping *hk, clock_fn clock,
                         void *clock_ctx, struct hk_step_report *out,
                         size_t max);

/*
 * The housekeeping connection (the tick's; start-up and destroy use it
 * before and after the thread), one user at a time: take waits until no one
 * has it, and returns it (NULL or dead: pass it to housekeeping_conn_ready
 * before use). The taker may do I/O on it with no lock held, and must give
 * it back (the same, another one, or NULL after closing it) with
 * housekeeping_conn_give(). Thread-safe. Taking it twice on one thread
 * deadlocks.
 */
struct db_conn *housekeeping_conn_take(struct housekeeping *hk);
void housekeeping_conn_give(struct housekeeping *hk, struct db_conn *conn);

/*
 * The admin token: admin calls and resizes run one at a time (so two
 * resizes apply in the order stored), on a connection of the pool, never
 * on the tick's. take waits until deadline_ns (monotonic) at most: false
 * if another still has it. Thread-safe.
 */
bool housekeeping_admin_take(struct housekeeping *hk, uint64_t deadline_ns);
void housekeeping_admin_give(struct housekeeping *hk);

/* *conn alive, or closed and a new one opened into it (NULL on failure,
 * err set). For the taker of the connection. */
POOLD_MUSTCHECK int housekeeping_conn_ready(struct housekeeping *hk,
                                            struct db_conn **conn, char *err,
                                            size_t errlen);

/*
 * The steps refresh, apply_pending, preload_rules and watch, now, on conn
 * (the caller's: an admin write serves its change from this process's next
 * request). Waits for a tick running them, until the thread's database
 * deadline (db_thread_deadline) at most: POOLD_ERR_TIMEOUT then, and the
 * tick does it. POOLD_OK, or the failing step's status and err.
 */
POOLD_MUSTCHECK int housekeeping_refresh(struct housekeeping *hk,
                                         struct db_conn *conn, char *err,
                                         size_t errlen);

#endif
