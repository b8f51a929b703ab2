/* service.h — one org's processing service: config + rules + a connection. */
#ifndef POOLD_SERVICE_H
#define POOLD_SERVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "message.h"
#include "pool.h"
#include "rules.h"
#include "status.h"

struct service; /* opaque */

/*
 * processed_messages' range partitions as housekeeping last read them, and
 * the dedupe window (docs/data-lifecycle.md): the commit passes the bounds
 * of the partition "now" falls in as statement parameters, and the
 * statement picks its dedupe path by comparing them with the server's now().
 * Written by the lifecycle step, read by every commit, under lock.
 */
#define SERVICE_SCOPE_PARTS 8
#define SERVICE_SCOPE_TS                                                       \
    80 /* "YYYY-MM-DD HH:MM:SS.uuuuuu+00", room for any int */
struct service_scope_part {
    int64_t lo_us, hi_us; /* Unix microseconds, [lo, hi) */
    int64_t calm_from_us, calm_to_us, fast_from_us; /* as the texts below */
    /* The statement's parameters, as timestamptz text: lo; calm_from,
     * calm_to (the partition minus the zone at both ends); fast_from (the
     * window no longer reaches before lo, and calm). */
    char lo[SERVICE_SCOPE_TS], calm_from[SERVICE_SCOPE_TS],
        calm_to[SERVICE_SCOPE_TS], fast_from[SERVICE_SCOPE_TS];
};
struct service_scope {
    pthread_mutex_t lock;
    char window[32]; /* interval text, "" until set: no window known */
    /* Added to poold's clock when a commit picks its statement: 0, but a
     * test sets a clock ahead of the server's to make them disagree. */
    int64_t skew_us;
    /* Until then (poold's clock, Unix microseconds) commits send the full
     * statement: a guarded one missed (service.c). */
    int64_t guard_pause_until_us;
    size_t n;
    struct service_scope_part parts[SERVICE_SCOPE_PARTS];
};

void service_scope_init(struct service_scope *sc);
void service_scope_destroy(struct service_scope *sc);
/* Replace the partitions (n bounds, [lo_us[i], hi_us[i]), ascending; at most
 * SERVICE_SCOPE_PARTS are kept) and the window and zone they were made for. */
void service_scope_set(struct service_scope *sc, long long window_s,
                       double zone_s, const int64_t *lo_us,
                       const int64_t *hi_us, size_t n);

/*
 * What every service of the process shares; owned by the caller (the
 * registry), read-only while services exist.
 */
struct service_env {
    /* The process's connection pool (objects are struct db_conn *), or NULL
     * for POOLD_POOL_MODE=none: each service then opens its own connection
     * with db and closes it in service_close(). */
    struct pool *conns;
    const struct db_settings *db; /* for opening connections */
    uint64_t conn_acquire_timeout_ns;
    uint64_t conn_check_idle_ns; /* POOLD_CONN_CHECK_IDLE_MS */
    double build_cost_ms;        /* POOLD_BUILD_COST_MS */
    double process_cost_ms;      /* POOLD_PROCESS_COST_MS */
    /* Called when the connection pool is at its cap, before waiting on it:
     * should make another org's idle service give its connection back. Returns
     * true if one was freed. Optional. */
    bool (*reclaim)(void *arg, const char *org_id);
    void *reclaim_arg;
    /* The partitions the commit's dedupe check uses, or NULL (or none known
     * yet): every commit then takes the careful path (locks, the whole
     * window). */
    struct service_scope *scope;
};

/*
 * Build a service for org_id: take a connection (pooled, or new when
 * env->conns is NULL), load the org's row and parse its rules, sleep the
 * simulated build cost. Returns POOLD_OK and *out, or
 * POOLD_ERR_UNKNOWN_ORG (no row, or disabled), POOLD_ERR_MISCONFIGURED
 * (err names the org and the rule), POOLD_ERR_TIMEOUT (connection pool
 * exhausted), POOLD_ERR_DB. On error nothing is held.
 * env is borrowed for the service's life.
 */
POOLD_MUSTCHECK int service_create(const struct service_env *env,
                                   const char *org_id, struct service **out,
                                   char *err, size_t errlen);

/*
 * As service_create(), but from rules already loaded and parsed for the
 * org's current config_version: no query. The service takes *rules over
 * (they are moved in, or freed on error; *rules is left empty).
 * The registry uses it to rebuild an org's service cheaply when the
 * connection cap makes orgs take turns; it must pass the rules of the
 * version its directory holds, so no stale configuration can come in.
 */
POOLD_MUSTCHECK int service_create_from(const struct service_env *env,
                                        const char *org_id,
                                        struct ruleset *rules,
                                        long long version, struct service **out,
                                        char *err, size_t errlen);

/* Give a healthy, clean connection back to the connection pool (a broken or
 * dirty one is destroyed) and free everything else. Accepts NULL. */
void service_close(struct service *svc);

/*
 * The two steps of service_process_many(), for a caller that processes on
 * one service and commits on another (group commit). service_evaluate:
 * the rules (and POOLD_PROCESS_COST_MS) on jobs[0..n), each job's result
 * filled and its status left POOLD_ERR_INVALID until committed; no I/O.
 * POOLD_OK, or POOLD_ERR_INVALID for a job without a message.
 * service_commit_many: commit jobs[0..n) evaluated by any service of the
 * same org, on svc's connection; returns and sets statuses as
 * service_process_many() does.
 */
POOLD_MUSTCHECK int service_evaluate(struct service *svc,
                                     struct service_job *jobs, size_t n,
                                     char *err, size_t errlen);
POOLD_MUSTCHECK int service_commit_many(struct service *svc,
                                        struct service_job *jobs, size_t n,
                                        uint64_t deadline_ns, char *err,
                                        size_t errlen);

/*
 * Evaluate the rules on jobs[0..n) and commit them in one INSERT, then
 * read the stored rows of those it did not insert (a message whose row a
 * concurrent insert hid goes again, alone with the others in that case),
 * waiting for the database until deadline_ns (0: the
 * connection's default wait). Every job gets its own status: POOLD_OK,
 * POOLD_ERR_CONFLICT, POOLD_ERR_DB (not written), POOLD_ERR_COMMIT_UNKNOWN
 * (sent, answer lost: maybe written). A repeated id within jobs commits
 * once; the repeat is a duplicate (same payload) or a conflict. Returns
 * POOLD_OK if the INSERT answered and either every job is settled or it
 * wrote rows (then a job whose stored row could not be read afterwards has
 * POOLD_ERR_DB: nothing of it was written); else the error every unsettled
 * job got: POOLD_ERR_DB (nothing written), POOLD_ERR_COMMIT_UNKNOWN. Check
 * db_conn_is_clean(service_conn(svc)) before using the service again.
 * POOLD_ERR_INVALID for a job without a message (nothing is sent). jobs are
 * the caller's; err is for a person.
 */
POOLD_MUSTCHECK int service_process_many(struct service *svc,
                                         struct service_job *jobs, size_t n,
                                         uint64_t deadline_ns, char *err,
                                         size_t errlen);

/* Forget the message; true if the service is back to its freshly built state
 * (its connection clean and alive), false if it must be destroyed. */
bool service_reset(struct service *svc);

/* True if the service may be lent again at now_ns: its connection is alive
 * and not past its TTL. */
bool service_is_valid(struct service *svc, uint64_t now_ns);

/* When the service's pooled connection reaches its TTL (UINT64_MAX: it
 * has none of the pool's). */
uint64_t service_conn_expiry(const struct service *svc);

/* orgs.config_version of the row the service was built from. */
long long service_config_version(const struct service *svc);

/* The ruleset in use; borrowed for the service's life (for tests). */
const struct ruleset *service_rules(const struct service *svc);

/* The connection in use; borrowed for the service's life (for tests). */
struct db_conn *service_conn(struct service *svc);

#endif
