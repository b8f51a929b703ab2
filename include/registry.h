/* registry.h — org_id -> service pool, routing, the shared connection cap. */
#ifndef POOLD_REGISTRY_H
#define POOLD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "holders.h"
#include "pool.h"
#include "audit.h"
#include "db_settings.h"
#include "message.h"
#include "status.h"

struct service_scope; /* service.h */

/*
 * Threads and ownership. The registry owns every org pool, every service
 * (an org's rules + one pooled connection) and the connection pool; no
 * caller ever holds a service or a connection past a call, except the
 * pooled connection lent by registry_admin_begin() until
 * registry_admin_end(). registry_create(), registry_set_hk_hook(),
 * registry_start() and registry_destroy() run on one thread, before and
 * after every other call; every other call is safe from many threads at
 * once. No lock is held across a database call (lock order:
 * src/registry_internal.h); calls that do I/O say so, and those that may
 * wait for the admin token (another admin call or resize has it) say that
 * too, and are bounded. Housekeeping (the watch, the replica heartbeat)
 * never waits for an admin call.
 */
struct db_conn;    /* db.h */
struct registry;   /* opaque */
struct org_entry;  /* an org of the directory: opaque, valid for the
                      registry's life */
struct org_active; /* what an org has once routed (its pool): opaque */

/* One request's admission of an org (registry_admit): the org, and a
 * reference to its active part once it has one, which keeps that from being
 * freed (a deleted org's is, once nobody uses it). The caller's storage,
 * zeroed before registry_admit(); ended by registry_admission_release(). */
struct registry_admission {
    struct org_entry *org;
    struct org_active *act; /* referenced, or NULL */
};

struct registry_config {
    struct db_settings db; /* borrowed strings must outlive the registry */
    bool pooled;           /* false: POOLD_POOL_MODE=none */
    unsigned default_size; /* POOLD_POOL_SIZE */
    unsigned ceiling;      /* POOLD_POOL_CEILING */
    unsigned max_waiters;  /* POOLD_MAX_WAITING */
    uint64_t acquire_timeout_ns; /* POOLD_ACQUIRE_TIMEOUT_MS */
    unsigned db_max_conns;       /* POOLD_DB_MAX_CONNS */
    unsigned db_min_idle;        /* POOLD_DB_MIN_IDLE (clamped to the cap;
                                    kept open by a thread of its own) */
    uint64_t conn_ttl_ns;        /* POOLD_CONN_TTL_S */
    uint64_t conn_check_idle_ns; /* POOLD_CONN_CHECK_IDLE_MS */
    double build_cost_ms;
    double process_cost_ms;
    const char *prewarm;          /* "all", "org_a,org_b", or "" */
    uint64_t refresh_interval_ns; /* org directory poll period (default 1 s) */
    uint64_t hold_warn_ns;        /* POOLD_HOLD_WARN_MS; 0: off */
    /* Optional: called by housekeeping after each directory refresh and
     * after each admin write, on the tick's or the admin call's connection,
     * with housekeeping's refresh lock held (so it never runs twice at
     * once; no registry lock held).
     * A failure counts as the database being unreachable. tenants_watch()
     * is one. */
    int (*watch)(void *arg, struct db_conn *conn, char *err, size_t errlen);
    void *watch_arg;
    /* Optional: the data lifecycle (processed_messages' partitions made
     * ahead, old ones dropped, the audit log pruned), run by housekeeping
     * at start-up on its connection, then every lifecycle_interval_ns on a
     * thread of its own with a connection of the pool. A failure is logged
     * and tried again within a minute. */
    int (*lifecycle)(void *arg, struct db_conn *conn, char *err, size_t errlen);
    void *lifecycle_arg;
    uint64_t lifecycle_interval_ns;
    /* Optional, borrowed: the partitions the lifecycle step last read, for
     * the commit's dedupe check (service_env.scope). */
    struct service_scope *scope;
};

/*
 * Create the registry: the connection pool, an empty org map. Does not touch
 * the database (it may be down); registry_start() loads the directory (on
 * the caller's thread, I/O) and begins the housekeeping thread that watches
 * it for changes, maintains every pool and prewarms (housekeeping.h).
 * *out is the caller's, freed by registry_destroy(). Not thread-safe.
 */
POOLD_MUSTCHECK int registry_create(const struct registry_config *cfg,
                                    struct registry **out);
POOLD_MUSTCHECK int registry_start(struct registry *reg);

/* Stop housekeeping, shut down and free every pool, service and
 * connection. Accepts NULL. Once no other call runs. */
void registry_destroy(struct registry *reg);

/* Refuse new work (POOLD_ERR_SHUTDOWN) and wake every waiter. Idempotent,
 * thread-safe (a signal handler's thread calls it). */
void registry_shutdown(struct registry *reg);

/* End every database wait of the process now, and every later one at once
 * (db_abort_all): requests whose write was sent answer
 * POOLD_ERR_COMMIT_UNKNOWN, the others POOLD_ERR_DB. For the end of a
 * shutdown's drain; irreversible. Thread-safe. */
void registry_abort(struct registry *reg);

/* True once the org directory is loaded and the last database contact
 * succeeded. Thread-safe, lock-free. */
bool registry_is_ready(struct registry *reg);

/* Ready but for a grant: the database answers and the directory is loaded,
 * but this replica holds no share of the cluster budget yet (cap 0). */
bool registry_awaits_grant(struct registry *reg);

/*
 * Admission, the one check of a message for org_id before any work: no
 * query, no pool created. POOLD_OK and *adm filled, or the status to
 * answer (*adm left empty): POOLD_ERR_SHUTDOWN, POOLD_ERR_NOT_READY,
 * POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_PAUSED, POOLD_ERR_MISCONFIGURED (err
 * says why). Whatever it returns, the caller ends *adm with
 * registry_admission_release() once done with the org. Thread-safe.
 */
POOLD_MUSTCHECK int registry_admit(struct registry *reg, const char *org_id,
                                   struct registry_admission *adm, char *err,
                                   size_t errlen);

/* End an admission: its reference is dropped (an atomic decrement, no
 * lock) and *adm emptied. Accepts an empty one. Thread-safe. */
void registry_admission_release(struct registry_admission *adm);

/*
 * Process one message for an admitted org (adm: registry_admit()'s, which
 * then also holds the reference to the pool this made): create its pool on
 * first use (once, even under concurrent first requests), borrow a service,
 * process, commit and release it. Returns POOLD_OK (row committed), or
 * POOLD_ERR_UNKNOWN_ORG (deleted since admitted), POOLD_ERR_MISCONFIGURED,
 * POOLD_ERR_TIMEOUT or POOLD_ERR_WAITERS_FULL (pool exhausted),
 * POOLD_ERR_CONFLICT, POOLD_ERR_DB (nothing written),
 * POOLD_ERR_COMMIT_UNKNOWN (sent, answer lost), POOLD_ERR_SHUTDOWN. err
 * gets a message for a person. Returns within the acquire timeout + the
 * statement timeout + 0.5 s whatever the database does. While it holds a
 * service (processing, leading a group, or queued at the head of its
 * org's commit queue), msg->request_id and msg->route are listed by
 * registry_holders().
 * Thread-safe: this is the request path (one call per request thread); the
 * service is borrowed and given back within the call. msg and out are the
 * caller's.
 */
POOLD_MUSTCHECK int registry_process(struct registry *reg,
                                     struct registry_admission *adm,
                                     const struct message *msg,
                                     struct service_result *out, char *err,
                                     size_t errlen);

/*
 * Process jobs[0..n) (messages of one org, n >= 1) in one statement on one
 * of the org's services, within the same time bound as registry_process().
 * Returns POOLD_OK when the statement answered: each job then has its own
 * status (POOLD_OK, POOLD_ERR_CONFLICT, rarely POOLD_ERR_DB). Otherwise the
 * batch's error, as registry_process() returns them: nothing was written
 * unless it is POOLD_ERR_COMMIT_UNKNOWN.
 * jobs are the caller's; jobs[0].msg's request_id and route are the
 * holder registry_holders() lists while the batch holds a service.
 * Thread-safe, as registry_process().
 */
POOLD_MUSTCHECK int registry_process_batch(struct registry *reg,
                                           struct registry_admission *adm,
                                           struct service_job *jobs, size_t n,
                                           char *err, size_t errlen);

/* One org's pool stats; zeros and the effective size if no pool exists yet.
 * POOLD_ERR_UNKNOWN_ORG / POOLD_ERR_NOT_READY as above. Thread-safe, no
 * I/O. */
POOLD_MUSTCHECK int registry_pool_stats(struct registry *reg,
                                        const char *org_id,
                                        struct pool_stats *out);

/* Resize an org's pool (1..ceiling) and store the size in orgs.pool_max_size.
 * Fills *out with the stats after the resize. POOLD_ERR_INVALID for a size
 * out of range, POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_DB. Thread-safe; an admin
 * call (registry_admin_begin: bounded): the store and the apply are one
 * step while it has the admin token, so resizes apply in the order the
 * database stored them. */
POOLD_MUSTCHECK int registry_resize(struct registry *reg, const char *org_id,
                                    unsigned size, struct pool_stats *out,
                                    char *err, size_t errlen);

/* As registry_resize(), and the change is recorded in the audit log with
 * actor (NULL: not recorded) in the same transaction. */
POOLD_MUSTCHECK int registry_resize_by(struct registry *reg, const char *org_id,
                                       unsigned size,
                                       const struct audit_actor *actor,
                                       struct pool_stats *out, char *err,
                                       size_t errlen);

/*
 * Begin an admin read or write: the admin token (admin calls and resizes
 * run one at a time per process), then a connection borrowed from the
 * connection pool (in mode none, one of its own under a permit), both
 * within POOLD_ACQUIRE_TIMEOUT_MS; the calling thread's database deadline
 * is then set to that + POOLD_STATEMENT_TIMEOUT_MS, so the whole call is
 * bounded (DESIGN.md). POOLD_OK with *conn (the caller's alone until
 * registry_admin_end(), on the same thread), or POOLD_ERR_CONNS_BUSY (no
 * connection in time while the database answers: all in use, or no grant
 * yet), POOLD_ERR_DB_BUSY (no turn, or no connection with the database not
 * answering lately: nothing was sent) or POOLD_ERR_DB (a connection of its
 * own could not be opened) with err set and nothing held. Housekeeping
 * never waits for it. Thread-safe; calling it twice without
 * registry_admin_end() between fails after the acquire timeout.
 */
POOLD_MUSTCHECK int registry_admin_begin(struct registry *reg,
                                         struct db_conn **conn, char *err,
                                         size_t errlen);

/*
 * Give the connection back. wrote: something was committed, so the
 * directory and the watch (keys, limits) are refreshed now (I/O), before
 * the connection is given back: this process serves the change from its
 * next request. A connection left unclean is closed.
 */
void registry_admin_end(struct registry *reg, struct db_conn *conn, bool wrote);

/* Call fn for every org pool that exists, under no lock that fn could
 * deadlock on; org_id and stats are borrowed for the call. Thread-safe. */
void registry_foreach_pool(struct registry *reg,
                           void (*fn)(void *arg, const char *org_id,
                                      const struct pool_stats *stats),
                           void *arg);

/* Pools freed so far: those of orgs deleted from the table, once nobody
 * used them any more (an org's pool is not freed otherwise). GET /stats
 * totals. Thread-safe. */
uint64_t registry_pools_freed(struct registry *reg);

/* What the freed pools had counted (acquires, timeouts, services created
 * and destroyed, group commits ...; the gauges 0) into *out (NULL: not
 * wanted), and how many pools were freed, read together. Thread-safe. */
uint64_t registry_freed_stats(struct registry *reg, struct pool_stats *out);

/* registry_foreach_pool(), and registry_freed_stats() into *freed (NULL:
 * not wanted, and 0 returned) read at the instant the list of pools is: a
 * pool freed meanwhile is in exactly one of them, so totals added up from
 * both never go down (GET /stats). Returns how many pools were freed.
 * Thread-safe. */
uint64_t registry_foreach_pool_freed(struct registry *reg,
                                     void (*fn)(void *arg, const char *org_id,
                                                const struct pool_stats *stats),
                                     void *arg, struct pool_stats *freed);

/* Stats of the connection pool (max_size is the cap now). Thread-safe. */
void registry_conn_stats(struct registry *reg, struct pool_stats *out);

/* The commit queue's statements (every org's groups; none in mode none
 * or for a batch): an org's group_commits counts a statement with several
 * orgs' messages for each of them, these once (GET /stats totals,
 * GET /metrics). */
struct reg_commit_totals {
    uint64_t statements; /* sent */
    uint64_t ns_sum;     /* what they took, sent to answered, summed: every
                            statement, failed ones and the org-by-org
                            retries of a several-org group included */
    uint64_t overlapped; /* sent while another statement was */
};
void registry_commit_totals(struct registry *reg,
                            struct reg_commit_totals *out);

/*
 * The stored result of (org_id, message_id), not older than retention_s
 * (0: any age), as the JSON text GET /orgs/{org_id}/messages/{message_id}
 * answers (*json malloc'd, the caller's). POOLD_ERR_NOT_FOUND when there is
 * none; POOLD_ERR_DB / POOLD_ERR_DB_BUSY / POOLD_ERR_CONNS_BUSY (as for
 * registry_admin_begin(); err says why). Read on a pooled
 * connection within an admin call's time bound, but without the admin token:
 * it waits for no operator call and no other read. At most
 * registry_lookups_max() run at once; one more is POOLD_ERR_WAITERS_FULL
 * at once (err says so). message_id is NUL-terminated UTF-8. Thread-safe.
 */
/* A quarter of the connection cap (POOLD_DB_MAX_CONNS, or a replica's
 * grant when lower), at least 1. */
#define REG_LOOKUPS_DIV 4
unsigned registry_lookups_max(const struct registry *reg);
POOLD_MUSTCHECK int registry_message_get(struct registry *reg,
                                         const char *org_id,
                                         const char *message_id,
                                         long long retention_s, char **json,
                                         char *err, size_t errlen);

/* ---- operators ---- */

/* Pause or resume an org: stored in orgs.paused first (every replica
 * follows within a refresh), then applied here at once; while paused,
 * registry_process() answers POOLD_ERR_PAUSED. Services are kept. With an
 * actor, the change and its audit entry (pool.pause / pool.resume) commit
 * together. Thread-safe; I/O on the housekeeping connection, as
 * registry_admin_begin/end.
 * POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_NOT_READY, POOLD_ERR_DB. */
POOLD_MUSTCHECK int registry_set_paused(struct registry *reg,
                                        const char *org_id, bool paused,
                                        const struct audit_actor *actor,
                                        char *err, size_t errlen);

/* Whether the org is paused now, in *out. Thread-safe, no I/O. */
POOLD_MUSTCHECK int registry_is_paused(struct registry *reg, const char *org_id,
                                       bool *out);

/* Drain an org's pool on this process: idle services are closed now, lent
 * ones when released, and the next build reads the org's row afresh.
 * With an actor, a pool.drain audit entry is written (a failure to write it
 * is logged; the drain is done anyway).
 * Fills *out with the stats after it. POOLD_ERR_UNKNOWN_ORG,
 * POOLD_ERR_NOT_READY. Thread-safe (the audit entry is an admin call). */
POOLD_MUSTCHECK int registry_drain(struct registry *reg, const char *org_id,
                                   const struct audit_actor *actor,
                                   struct pool_stats *out, char *err,
                                   size_t errlen);

/* Who holds the org's services now: *out is malloc'd (caller frees, may be
 * NULL when *n is 0). POOLD_ERR_UNKNOWN_ORG, POOLD_ERR_NOT_READY,
 * POOLD_ERR_NOMEM. Thread-safe, no I/O. */
POOLD_MUSTCHECK int registry_holders(struct registry *reg, const char *org_id,
                                     struct holder_info **out, size_t *n);
/*
 * Test seam, not an API (as pool_test_hook): a program that defines
 * registry_test_hook (tests/integration/check_registry.c) is called at these
 * points; poold defines none, so the weak symbol is NULL.
 */
enum registry_test_point {
    /* registry_resize() stored the size and has not applied it yet. */
    REGISTRY_TEST_RESIZE_STORED,
    /* About to wait for the admin token (housekeeping's lock held, as in
     * pthread_cond_wait). */
    REGISTRY_TEST_HK_CONN_BUSY,
    /* registry_set_paused() stored the flag and gave the admin token back:
     * another admin call may run from here. */
    REGISTRY_TEST_PAUSE_STORED,
};
__attribute__((weak)) void registry_test_hook(struct registry *reg,
                                              enum registry_test_point where);
/* ---- replicas (the cluster module drives these; see cluster.h) ---------- */

/*
 * A housekeeping hook: called on the housekeeping thread once per round
 * (about every refresh interval) with the housekeeping connection (outside
 * the connection cap; NULL while the database is unreachable) and
 * stopping false, and once from registry_destroy() after every pooled
 * connection is closed, with stopping true. conn is borrowed for the call.
 * Set before registry_start(); not thread-safe.
 */
typedef void (*registry_hk_fn)(void *arg, struct db_conn *conn, bool stopping);
void registry_set_hk_hook(struct registry *reg, registry_hk_fn fn, void *arg);

/*
 * Hold at most cap connections (0..POOLD_DB_MAX_CONNS; more is clamped):
 * the connection pool's max_size becomes cap (cap 0: no connection may be
 * opened, and the process is not ready), idle connections beyond it and
 * idle services of every org close now, lent ones when released. Never
 * blocks on a request. Thread-safe.
 */
void registry_set_conn_cap(struct registry *reg, unsigned cap);

/* PostgreSQL connections open now (in mode none: connection permits held),
 * those being opened or closed included. Thread-safe, cheap. */
unsigned registry_conn_open(struct registry *reg);

/* Requests or builds waiting for a connection now. Thread-safe, cheap. */
unsigned registry_conn_waiting(struct registry *reg);

#endif
