/* registry_internal.h — what the registry's files share; not an API.
 *
 * The registry is five files with one job each: registry.c (the org map,
 * each org's active part and service pool, routing, the connection-cap
 * policy, the directory, lifecycle), registry_request.c (a request's path:
 * admission, processing, the commit, the unknown-outcome retry, batches),
 * groupcommit.c (the commit queue: requests' writes, of any org, joined into
 * one statement), registry_ops.c (the operator API: stats, resize, pause,
 * drain, holders, the admin connection, the replica cap) and
 * housekeeping.c (its thread and the tick's steps).
 *
 * Lock order. Every mutex of the registry and its split modules:
 *
 *   reg->lock          rwlock: the org map (buckets, the arena, entries'
 *                      facts), the active and gone lists, pending marks,
 *                      an entry's act pointer being set or cleared (the
 *                      references to actives: struct org_active)
 *   reg->live_lock     the live list and every active's nservices (taken
 *                      by a service's create/destroy callbacks)
 *   a->cache_lock      one org's rules and misconfiguration caches
 *   reg->batcher->lock the commit queue (groupcommit.c); its jobs'
 *                      conditions wait on it
 *   a->holders.lock    one org's holds (holders.c)
 *   a->build_breaker.lock, reg->db_breaker.lock   (breaker.c)
 *   hk->lock           housekeeping: the stop flag, the housekeeping
 *                      connection's "taken" flag and the admin token
 *                      (housekeeping.c)
 *   a pool's lock      each service pool, the connection pool (pool.c)
 *
 * (a is e->act, the active part of an org's entry.) They nest in that
 * order only, and in practice barely do: under reg->lock only lock-free
 * pool calls run (pool_create, pool_total) and, in registry_free_gone(),
 * reg->live_lock and a freed pool's lock (its last stats) are taken;
 * under reg->live_lock only
 * pool_oldest_idle (lock-free), under reg->batcher->lock only
 * a->holders.lock (a committer's hold begins, or a queued write's ends
 * when a committer takes its service), and each of the others is a leaf —
 * nothing else is taken while it is held, but the log's own mutex (log_event),
 * which is innermost everywhere. No lock is held across libpq or network I/O
 * but one: hk->refresh_lock, outermost, held by whoever runs the refresh steps
 * (the tick on its own connection, or an admin call after a write on its pooled
 * one; each statement bounded). The tick only tries it and skips those steps
 * when it is taken; an admin call waits for it within its deadline. The
 * housekeeping connection and the admin token are handed over as tokens, waited
 * for on hk->lock's condition but never used under it.
 */
#ifndef POOLD_REGISTRY_INTERNAL_H
#define POOLD_REGISTRY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "catalog.h"
#include "clock.h"
#include "connpool.h"
#include "groupcommit.h"
#include "holders.h"
#include "housekeeping.h"
#include "orgid.h"
#include "registry.h"
#include "rules.h"
#include "service.h"

#define REG_ERR_MAX 256
/* A client's wait beyond the server's statement timeout. */
#define REG_DB_SLACK_NS (500 * NS_PER_MS)

/*
 * What an org has once a request was routed to it (issue 19: an idle org
 * pays for none of it): its pool, its group commit, its holders, its
 * build breaker and caches. Made on the org's first request (pooled mode:
 * with its pool) and published in org_entry.act; freed by housekeeping once
 * the org is gone from the orgs table and nobody holds a reference
 * (registry_free_gone), or by registry_destroy().
 *
 * Lifetime. Whoever uses an active part outside reg->lock holds a reference
 * (refs) from where it got the pointer until it is done with it:
 *
 *   - A reference is taken only where the pointer is found and the free
 *     cannot run: under reg->lock (read or write) from e->act, reg->active,
 *     reg->pending (registry_find_active, registry_active_acquire, the
 *     snapshots, registry_foreach_pending); under reg->live_lock from
 *     reg->live, which lists only actives with services (REG_LIVE,
 *     registry_reclaim); or as a copy of a reference its taker knows held
 *     while it copies (registry_active_share: a committer taking a queued
 *     write's service, groupcommit.c).
 *   - It is dropped with registry_active_release(), an atomic decrement:
 *     no lock, and the dropper never frees.
 *   - The free is decided under reg->lock (write) with reg->live_lock
 *     held, for an active whose org is still gone (present false: an org
 *     created again keeps its active part), with refs 0, no services
 *     (nservices 0: so not on reg->live), no pending mark, nothing in its
 *     pool and none of its writes queued. It is unlinked from e->act,
 *     reg->active and reg->gone there, then freed with no lock held: no
 *     new reference can be taken to what none of those lists names.
 *   - While a reference is held, e->act stays the referenced active (only
 *     the free clears it, and only at refs 0): a holder may read it
 *     through the entry (org_entry_pool() and the like).
 *
 * Every service, waiter, lent item, queued write and hold of an org is a
 * request's or a housekeeping call's that holds a reference, so refs 0
 * implies the rest; they are checked anyway, as cheap atomic loads.
 */
struct org_active {
    struct org_entry *entry; /* its org */
    struct registry *reg;
    /* reg->active, newest first (under reg->lock) */
    struct org_active *next, *prev;
    /* reg->live (under reg->live_lock): the actives that have services.
     * Every service holds a connection, so there are at most as many as
     * connections: eviction, maintenance and holds walk only these. */
    struct org_active *live_prev, *live_next;
    unsigned nservices; /* services built and not destroyed (live_lock) */
    atomic_uint refs;   /* references held (see above) */
    struct pool *pool;  /* the org's services; NULL in mode none */
    /* Its share of the commit queue all orgs share (groupcommit.c). */
    struct gc_counts gc;
    struct holders holders; /* who holds this org's services now */
    /* Guards the two caches below (never held across I/O). */
    pthread_mutex_t cache_lock;
    /* The last misconfiguration seen, cached for its version so a broken
     * org costs no query per request. */
    long long misconf_version; /* -1: none */
    char misconf_msg[REG_ERR_MAX];
    struct breaker build_breaker; /* this org's service builds */
    /* The rules of the last service built from the orgs row, for the
     * version they came from: later builds of that version copy them
     * instead of querying (orgs take turns at the connection cap, and a
     * rebuild must cost a connection handoff, not a round trip). */
    struct ruleset cached_rules;
    long long cached_version;
    bool cached; /* cached_rules hold cached_version's */
    /* Builds of this org in progress (they may be waiting for a
     * connection at the cap). */
    atomic_uint building;
    /* Set by a directory refresh, done after it (under reg->lock); an
     * active with a mark is on reg->pending once. */
    bool pending_retire;
    bool pending_resize;
    /* On reg->gone (under reg->lock): its org went from the table since. */
    bool gone;
    struct org_active *gone_next;
};

/*
 * One org of the directory (orgs table): only what routing and admission
 * decide with, about 48 bytes with its id (stored once, here). Entries are
 * created by the housekeeping thread when it loads the directory, carved
 * from reg->arena, and never freed before registry_destroy() (an org created
 * again finds its entry), so a pointer to one stays valid without holding
 * the registry lock. Its active part does not: see struct org_active.
 */
struct org_entry {
    struct org_entry *next; /* hash chain */
    /* NULL until the first request, and again once freed (gone). Set and
     * cleared under reg->lock (write). */
    _Atomic(struct org_active *) act;
    /* Directory facts, written by housekeeping under reg->lock (write),
     * read lock-free by the validate callback: atomics. */
    atomic_llong version; /* orgs.config_version */
    atomic_int size;      /* orgs.pool_max_size, 0: default */
    unsigned load_gen;    /* the last whole load that listed it */
    atomic_bool enabled;
    atomic_bool present; /* still in the orgs table */
    atomic_bool paused;  /* orgs.paused: requests get 503 org_paused */
    char org_id[];       /* NUL-terminated, at most ORG_ID_MAX */
};

/* Which orgs registry_foreach_org() visits. */
enum reg_orgs {
    REG_LIVE,   /* those with services now (at most the connection cap) */
    REG_POOLED, /* those with a pool (every org routed in pooled mode) */
    REG_ACTIVE, /* every org routed at least once (pool or not) */
    REG_EVERY,  /* the whole directory: once, for POOLD_PREWARM=all */
};

/* A request's absolute deadlines, counted from its full receipt: finding
 * or building a service ends by acquire_ns, the commit's wait by
 * commit_ns, so every request ends within the acquire timeout + the
 * statement timeout + the slack (DESIGN.md). */
struct reg_deadlines {
    uint64_t acquire_ns;
    uint64_t commit_ns;
};

struct registry {
    struct registry_config cfg;
    char *prewarm; /* owned copy of cfg.prewarm */
    struct service_env env;
    struct service_env env_none; /* POOLD_POOL_MODE=none: own connections */
    struct connpool *cp;         /* owns the connection pool */
    struct pool *conns;          /* connpool_pool(cp): db connections; in
                                    mode none, permits (one per connection
                                    a request opens) */
    struct breaker db_breaker;   /* every connection attempt, all orgs */
    /* The commit queue every org's writes join (groupcommit.c); NULL in
     * mode none. */
    struct batcher *batcher;

    pthread_rwlock_t lock; /* the map, active and pending */
    struct org_entry **buckets;
    size_t nbuckets;
    size_t nentries;
    unsigned load_gen;       /* whole directory loads so far (under the lock) */
    struct reg_arena *arena; /* where entries are carved from */
    struct org_active *active; /* every active, newest first */
    size_t nactive;
    struct org_active **pending; /* actives with a pending mark */
    size_t npending, cap_pending;
    struct org_active *gone; /* actives of orgs gone from the table */
    /* Actives freed so far, and their pools' counters at the free (gauges
     * zeroed): /stats totals add them, so that a total never goes down.
     * Both under live_lock, added as the active leaves reg->active. */
    uint64_t freed;
    struct pool_stats freed_stats;
    pthread_mutex_t live_lock; /* live and every nservices; a leaf */
    struct org_active *live;   /* actives with services (org_active) */
    size_t nlive;

    atomic_bool loaded; /* the directory was loaded once */
    atomic_bool shutting_down;
    atomic_uint lookups;             /* registry_message_get calls in flight */
    atomic_uint_fast64_t last_ok_ns; /* last successful db contact */

    struct housekeeping *hk; /* its thread, connection and steps */
    /* The admin call that has the admin token's (registry_admin_begin). */
    struct pool_item *admin_item; /* a pooled connection, or a permit */
    struct db_conn *admin_own;    /* mode none: its own connection */
    /* Replicas: the cluster's hook (cluster.h); set before start. */
    registry_hk_fn hk_fn;
    void *hk_arg;
};

/* ---- the org map (registry.c); every call is thread-safe ---------------- */

/* Call fn(arg, e) for the orgs which says, of a snapshot taken under the
 * lock, with no registry lock held: fn may do I/O. But for REG_EVERY, the
 * snapshot holds a reference to each org's active part while fn runs.
 * REG_LIVE costs what the connection cap is, REG_POOLED and REG_ACTIVE what
 * the orgs that had requests are; only REG_EVERY grows with the directory. */
void registry_foreach_org(struct registry *reg, enum reg_orgs which,
                          void (*fn)(void *arg, struct org_entry *e),
                          void *arg);
/* The same for REG_POOLED or REG_ACTIVE, and the freed pools' counts
 * (registry_freed_stats()) into *freed (not NULL), read under the lock the
 * snapshot is taken under, where registry_free_gone() moves a pool from
 * one to the other: each pool is in exactly one. Returns how many pools
 * were freed. */
uint64_t registry_foreach_active(struct registry *reg, enum reg_orgs which,
                                 void (*fn)(void *arg, struct org_entry *e),
                                 void *arg, struct pool_stats *freed);

/* Call fn(arg, e, retire, resize) for each org a directory change marked
 * for retiring or resizing since the last call, taking the marks (and a
 * reference to its active part while fn runs); returns how many. */
size_t registry_foreach_pending(struct registry *reg,
                                void (*fn)(void *arg, struct org_entry *e,
                                           bool retire, bool resize),
                                void *arg);

/* The org (known, present and enabled) and a reference to its active part,
 * with its pool, created on first use (pooled mode); the caller ends it with
 * registry_active_release(). POOLD_ERR_NOT_READY, POOLD_ERR_UNKNOWN_ORG,
 * NOMEM. */
POOLD_MUSTCHECK int registry_route(struct registry *reg, const char *org_id,
                                   struct org_active **out);

/* An entry's id; borrowed for the registry's life. */
const char *org_entry_id(const struct org_entry *e);

/* An entry's active parts: only for a caller that holds a reference to it
 * (a registry_foreach_org() or registry_foreach_pending() callback does),
 * which they are borrowed for. NULL for an org never routed. */
struct pool *org_entry_pool(struct org_entry *e);
struct holders *org_entry_holders(struct org_entry *e);
struct breaker *org_entry_breaker(struct org_entry *e);

/* The org's pool size now: orgs.pool_max_size as last loaded or resized,
 * else POOLD_POOL_SIZE, at most POOLD_POOL_CEILING. */
unsigned org_entry_size(const struct registry *reg, struct org_entry *e);

/* Apply a loaded directory (catalog_load's rows, n of them) to the map:
 * new orgs added, facts updated, changed or vanished orgs marked for
 * retiring, resized ones for resizing. No I/O; takes reg->lock. Call with
 * housekeeping's refresh lock held, so loads apply in the order they were
 * read. */
void registry_apply_directory(struct registry *reg, const struct org_info *list,
                              size_t n);

/* Apply the rows of the orgs that changed (catalog_load_some's: present
 * false for a deleted one); as registry_apply_directory otherwise. */
void registry_apply_changes(struct registry *reg, const struct org_info *list,
                            size_t n);

/* The directory is loaded: requests may be routed (logged the first time). */
void registry_mark_loaded(struct registry *reg);

/* The database answered at now_ns (readiness). */
void registry_mark_db_ok(struct registry *reg, uint64_t now_ns);

/* The database answered the tick lately (within a refresh interval and
 * the readiness grace). */
bool registry_db_answers(struct registry *reg);

/* Run fn on a connection of the cap, got within the acquire timeout, as an
 * operator call gets one: for reads and background work that count
 * against the cap (a message lookup, the data lifecycle). fn runs within
 * the statement timeout after the acquire deadline, or (per_statement: a
 * round of many statements) with each statement bounded on its own. The
 * database is marked answering if it did. fn's status, or why no
 * connection came, in err. */
typedef int (*registry_conn_fn)(void *arg, struct db_conn *conn, char *err,
                                size_t errlen);
int registry_with_conn(struct registry *reg, bool per_statement,
                       registry_conn_fn fn, void *arg, char *err,
                       size_t errlen);

/* The cap policy: while builds wait for a connection, the longest-idle
 * services of the orgs give theirs back. */
void registry_reclaim_for_waiters(struct registry *reg);

/* The longest-idle service of an org other than org_id ("": any) gives its
 * connection back; false when there is none. (arg: the registry; the
 * service env's reclaim callback.) */
bool registry_reclaim(void *arg, const char *org_id);

/* ---- shared by the registry's files ------------------------------------ */

/* The org, known, present and enabled, without creating its pool.
 * POOLD_ERR_NOT_READY, POOLD_ERR_UNKNOWN_ORG. No I/O. */
POOLD_MUSTCHECK int registry_find_entry(struct registry *reg,
                                        const char *org_id,
                                        struct org_entry **out);

/* The org as registry_find_entry() finds it, and in *act a reference to
 * its active part, or NULL if it has none (never routed, or freed): under
 * the one read lock of the map. The caller ends a reference with
 * registry_active_release(). No I/O. */
POOLD_MUSTCHECK int registry_find_active(struct registry *reg,
                                         const char *org_id,
                                         struct org_entry **out,
                                         struct org_active **act);

/* A reference to e's active part, or NULL if it has none. No I/O. */
struct org_active *registry_active_find(struct registry *reg,
                                        struct org_entry *e);

/* A reference to e's active part and pool, made if it has none (concurrent
 * first requests make exactly one). POOLD_OK, POOLD_ERR_UNKNOWN_ORG (gone
 * from the table: no active part is made for it) or POOLD_ERR_NOMEM. */
POOLD_MUSTCHECK int registry_active_acquire(struct registry *reg,
                                            struct org_entry *e,
                                            struct org_active **out);

/* One more reference to a, for a caller that knows a reference to a is
 * held by someone while it calls this, or that holds reg->lock where it
 * found a (a not NULL); returns a. */
struct org_active *registry_active_share(struct org_active *a);

/* End a reference (an atomic decrement; the last one frees nothing: see
 * registry_free_gone). Accepts NULL. */
void registry_active_release(struct org_active *a);

/* Free a (its pool, caches, holders, breaker): for an active nobody can
 * reach any more (registry_free_gone, registry_destroy). Accepts NULL. */
void registry_active_destroy(struct org_active *a);

/* Free the active parts of the orgs gone from the table that nobody uses
 * any more (struct org_active); those that still have idle services are
 * retired, for a later call. Returns how many were freed. For housekeeping
 * (the free_gone step): may close services (I/O), with no registry lock
 * held meanwhile. */
size_t registry_free_gone(struct registry *reg);

/* err gets the message for a person that goes with rc for org_id, unless
 * err already holds one. */
void registry_fill_error(int rc, const char *org_id, char *err, size_t errlen);

/* The three below: the caller holds a reference to e's active part. */

/* The request (msg's request_id and route) holds one of e's services from
 * reg_hold_begin() to reg_hold_end(): GET /pools/{org_id}/holders lists
 * it. A hold longer than POOLD_HOLD_WARN_MS is logged and counted once. */
void reg_hold_begin(struct org_entry *e, struct holder *hold,
                    const struct message *msg);
void reg_hold_end(struct org_entry *e, struct holder *hold);

/* Give a service back to e's pool after a commit that ended with rc:
 * broken after a database error, to another org's waiting build while
 * anyone waits for a connection at the cap, else to the pool. */
void reg_release(struct registry *reg, struct org_entry *e,
                 struct pool_item *item, int rc);

/* One org's pool stats: the pool's, its commit queue's and its holders'; a
 * is e's active part, referenced by the caller, or NULL (zeros). */
void registry_entry_stats(struct registry *reg, struct org_entry *e,
                          struct org_active *a, struct pool_stats *out);

#endif
