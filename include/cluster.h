/* cluster.h — one connection budget for every replica sharing a database. */
#ifndef POOLD_CLUSTER_H
#define POOLD_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct db_conn;

/*
 * With POOLD_CLUSTER_MAX_CONNS set, replicas register in the table
 * cluster_replicas (sql/004_cluster.sql) and renew a lease about once a
 * second. Every live replica (heartbeat younger than the lease) gets a
 * share of the budget; the shares add up to the budget. A replica's
 * "granted" cap is what it may hold now: it raises it only in a transaction
 * holding the table's lock, when the sum of every live replica's granted
 * cap stays within the budget; it lowers its local cap first, and writes
 * the lower granted cap only once its open connections fit under it. So
 * the sum of the connections held never exceeds the budget while replicas
 * join, leave or die: a share is taken only after it was given up.
 */

#define CLUSTER_ID_MAX 128
/* A replica silent this long is dead: with a 1 s heartbeat, its share is
 * back with the others within 10 s of its death. */
#define CLUSTER_LEASE_S 7
#define CLUSTER_MAX_REPLICAS 256 /* rows read per heartbeat */

struct cluster; /* opaque */

/* The replica's own pool, as the cluster sees it (the registry's
 * connection pool). Called on the housekeeping thread, and set_cap also on
 * the fence's timer (never two set_cap at once: the cluster's cap lock is
 * held across it, no other lock of the cluster); all must be
 * thread-safe. */
struct cluster_local {
    /* Connections open now, those being opened or closed included. */
    unsigned (*open_conns)(void *arg);
    /* Requests waiting for a connection now (the busy measure). */
    unsigned (*waiting)(void *arg);
    /* Hold at most cap connections from now on (0: none): close idle ones
     * now and lent ones when they come back; never blocks long. */
    void (*set_cap)(void *arg, unsigned cap);
    void *arg;
};

struct cluster_config {
    unsigned budget;    /* POOLD_CLUSTER_MAX_CONNS; 0: standalone */
    unsigned local_max; /* POOLD_DB_MAX_CONNS */
    unsigned lease_s;   /* 0: CLUSTER_LEASE_S */
    struct cluster_local local;
};

/* One row of GET /cluster. */
struct cluster_replica {
    char id[CLUSTER_ID_MAX + 1];
    unsigned share;            /* its fair share of the budget */
    unsigned granted;          /* the cap it holds the right to now */
    unsigned open_connections; /* at its last heartbeat */
    unsigned waiting;          /* at its last heartbeat */
    char heartbeat_at[40];     /* RFC 3339 UTC */
    unsigned budget;           /* the POOLD_CLUSTER_MAX_CONNS it runs with */
    bool self;                 /* this process */
};

/* ---- the arithmetic (pure, no I/O; unit-tested) ------------------------- */

/* Split budget among n replicas in their order: budget / n each, and one
 * more to each of the first budget % n. out has n entries; their sum is
 * budget. */
void cluster_fair_shares(unsigned budget, size_t n, unsigned *out);

/* The granted cap to take now when wanting want while holding granted and
 * the other live replicas hold others (sum of their granted caps): never
 * lower than granted (lowering is separate), never more than want, and
 * never so much that others + the result exceeds budget. */
unsigned cluster_grant(unsigned budget, unsigned want, unsigned granted,
                       unsigned others);

/* The granted cap to record after shrinking towards want with open
 * connections still open: want once they fit under it, else granted (the
 * right is kept until they are gone). */
unsigned cluster_release(unsigned want, unsigned granted, unsigned open);

/* Must a replica whose last renewal was sent at renewed_ns (monotonic, 0:
 * never) stop holding connections at now_ns? True past half the lease:
 * the others take its share only after the whole lease, so it has the
 * other half to close them. */
bool cluster_fenced(uint64_t renewed_ns, uint64_t now_ns, unsigned lease_s);

/* ---- the replica -------------------------------------------------------- */

/* Create the cluster state with a fresh replica id (host, pid, random).
 * cfg is copied. Standalone (budget 0) does nothing in cluster_tick(). */
POOLD_MUSTCHECK int cluster_create(const struct cluster_config *cfg,
                                   struct cluster **out);

/* The fence's timer: a thread that sets the cap to 0 once half the lease
 * passed since the last renewal, whatever the heartbeat is waiting on;
 * the next renewal lifts it. Start after the local pool exists; stop
 * before it goes (cluster_destroy() stops it too). Standalone: nothing. */
POOLD_MUSTCHECK int cluster_fence_start(struct cluster *c);
void cluster_fence_stop(struct cluster *c);

/* Free. Accepts NULL. Does not touch the database (a stopped replica's
 * lease simply expires; cluster_leave() gives it up sooner). */
void cluster_destroy(struct cluster *c);

/* This replica's id; borrowed for the cluster's life. */
const char *cluster_id(const struct cluster *c);

/* True when POOLD_CLUSTER_MAX_CONNS is set. */
bool cluster_enabled(const struct cluster *c);

/*
 * One heartbeat, on the housekeeping thread with its connection (outside
 * the budget; NULL while the database is unreachable): renew the lease,
 * read the live replicas, then raise or lower this replica's cap through
 * cluster_local.set_cap() as described above. Also fences (cap 0) a
 * replica that could not renew for half a lease. Not thread-safe against
 * itself: one caller.
 */
POOLD_MUSTCHECK int cluster_tick(struct cluster *c, struct db_conn *conn,
                                 char *err, size_t errlen);

/* Remove this replica's row (on a clean stop, after its connections are
 * closed), so its share goes to the others at once. */
void cluster_leave(struct cluster *c, struct db_conn *conn);

/*
 * The live replicas as of the last heartbeat (standalone: this process
 * alone, share = local_max), at most max of them, in share order. Returns
 * the number written. Thread-safe.
 */
size_t cluster_snapshot(struct cluster *c, struct cluster_replica *out,
                        size_t max);

#endif
