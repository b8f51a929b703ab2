/* registry_request.c — a request's path through the registry: admission,
 * a service of its org (made on first use), processing and the commit
 * through the org's commit queue (groupcommit.c), the retry of a write
 * whose outcome is unknown, batches, and POOLD_POOL_MODE=none. What it
 * shares with the registry's other files is in registry_internal.h. */
#include "registry.h"

#include <stdatomic.h>
#include <stdio.h>

#include "breaker.h"
#include "clock.h"
#include "db.h"
#include "groupcommit.h"
#include "log.h"
#include "registry_internal.h"

/* An unknown-outcome write is retried only with this much time left. */
#define REG_RETRY_MIN_NS (100 * NS_PER_MS)

/* A misconfiguration seen for the org's current version, without a query
 * (a: e's active part, referenced, or NULL). */
static bool entry_misconfigured(struct org_entry *e, struct org_active *a,
                                char *err, size_t errlen)
{
    bool hit;

    if (a == NULL)
        return false; /* never built: nothing seen yet */
    pthread_mutex_lock(&a->cache_lock);
    hit = a->misconf_version >= 0 &&
          a->misconf_version == atomic_load(&e->version);
    if (hit)
        snprintf(err, errlen, "%s", a->misconf_msg);
    pthread_mutex_unlock(&a->cache_lock);
    return hit;
}

static struct reg_deadlines reg_deadlines_from(const struct registry *reg,
                                               uint64_t start_ns)
{
    struct reg_deadlines dl;
    uint64_t st = (uint64_t)reg->cfg.db.statement_timeout_ms * NS_PER_MS;

    dl.acquire_ns = start_ns + reg->cfg.acquire_timeout_ns;
    dl.commit_ns = dl.acquire_ns + st + REG_DB_SLACK_NS;
    return dl;
}

/* The request (msg's request_id and route) holds one of e's services from
 * now until reg_hold_end(): GET /pools/{org_id}/holders lists it. A
 * request holds a service while it processes and while it commits; a
 * queued write gives its own back, but for the head of the queue
 * (groupcommit.c); a batch's request holds the batch's. */
void reg_hold_begin(struct org_entry *e, struct holder *hold,
                    const struct message *msg)
{
    holders_add(&e->act->holders, hold, msg->request_id, msg->route,
                clock_now_ns());
}

/* End a hold. One longer than POOLD_HOLD_WARN_MS and not flagged by
 * housekeeping yet is counted and logged here, once. */
void reg_hold_end(struct org_entry *e, struct holder *hold)
{
    if (holders_remove(&e->act->holders, hold, clock_now_ns(),
                       e->act->reg->cfg.hold_warn_ns))
        log_event(LOG_WARN, "service held too long", "org", e->org_id,
                  "request_id", hold->request_id, "route", hold->route,
                  (const char *)NULL);
}

/* Give a service back after a commit that ended with rc. */
void reg_release(struct registry *reg, struct org_entry *e,
                 struct pool_item *item, int rc)
{
    struct pool *pool = e->act->pool;

    if (rc == POOLD_ERR_DB || rc == POOLD_ERR_COMMIT_UNKNOWN)
        pool_release_broken(pool, item);
    else if (pool_waiting(reg->conns) > atomic_load(&e->act->building))
        /* Another org waits for a connection at the cap: this service's
         * goes to the first in that queue rather than to this org's next
         * request, so a busy org cannot keep every connection. Not when
         * the only waiters are this org's own builds: it would tear down a
         * working service to build the same one again. (Holding it for a
         * minimum time first was measured: p99 at a fixed rate went from
         * 4 to 74 ms, for no fewer rebuilds.) */
        pool_release_evict(pool, item);
    else
        pool_release(pool, item);
}

/*
 * A write whose answer was lost because its connection broke (not because
 * its deadline passed) goes once more, on another connection, while its
 * commit deadline leaves time: the retry inserts the row, or finds it with
 * the same payload (200, duplicate) if the first attempt had committed.
 * The retry may wait for a service until the commit deadline. Whatever
 * else it meets, the first attempt's outcome stays unknown (504). Not on a
 * fenced replica (db_fence): it would only wait for the lease, and the
 * client's own retry may go to a replica that holds one.
 */
static bool retry_worth(struct registry *reg, int rc,
                        const struct reg_deadlines *dl)
{
    return rc == POOLD_ERR_COMMIT_UNKNOWN &&
           !atomic_load(&reg->shutting_down) && !db_is_fenced() &&
           clock_now_ns() + REG_RETRY_MIN_NS < dl->commit_ns;
}

static int retry_outcome(struct org_entry *e, int first, int again,
                         const char *first_err, char *err, size_t errlen)
{
    log_event(again == POOLD_OK ? LOG_INFO : LOG_WARN,
              "commit outcome unknown: retried on another connection", "org",
              e->org_id, "error", first_err, "retry", poold_status_str(again),
              (const char *)NULL);
    if (again == POOLD_OK || again == POOLD_ERR_CONFLICT)
        return again;
    snprintf(err, errlen, "%s", first_err);
    return first;
}

static int process_pooled(struct registry *reg, struct org_entry *e,
                          const struct message *msg, struct service_result *out,
                          const struct reg_deadlines *dl, char *err,
                          size_t errlen)
{
    int rc = groupcommit_process(reg, e, msg, out, dl, err, errlen);
    char first_err[REG_ERR_MAX];
    struct reg_deadlines again = {dl->commit_ns, dl->commit_ns};

    if (!retry_worth(reg, rc, dl))
        return rc;
    snprintf(first_err, sizeof first_err, "%s", err);
    return retry_outcome(
        e, rc, groupcommit_process(reg, e, msg, out, &again, err, errlen),
        first_err, err, errlen);
}

/* POOLD_POOL_MODE=none: the seed's "alloc" baseline. A service and its
 * connection are built for the request and closed after it; the cap still
 * holds: a permit from reg->conns (a pool of tokens) per open connection. */
static int process_unpooled(struct registry *reg, struct org_entry *e,
                            struct service_job *jobs, size_t n,
                            const struct reg_deadlines *dl, char *err,
                            size_t errlen)
{
    struct service *svc;
    struct pool_item *permit;
    uint64_t timeout = reg->cfg.max_waiters ? reg->cfg.acquire_timeout_ns : 0;
    uint64_t gen;
    int rc = pool_acquire(reg->conns, timeout, &permit);
    if (rc != POOLD_OK)
        return rc;
    if (!breaker_allow(&reg->db_breaker, clock_now_ns())) {
        pool_release(reg->conns, permit);
        return POOLD_ERR_DB;
    }
    db_thread_deadline(dl->acquire_ns);
    gen = db_fence_generation();
    rc = service_create(&reg->env_none, e->org_id, &svc, err, errlen);
    db_thread_deadline(0);
    if (rc == POOLD_ERR_DB && !db_fence_since(gen))
        breaker_failure(&reg->db_breaker, clock_now_ns());
    else if (rc == POOLD_OK)
        breaker_success(&reg->db_breaker);
    if (rc == POOLD_OK) {
        struct holder hold;

        reg_hold_begin(e, &hold, jobs[0].msg);
        rc = service_process_many(svc, jobs, n, dl->commit_ns, err, errlen);
        reg_hold_end(e, &hold);
        service_close(svc);
    }
    pool_release(reg->conns, permit);
    return rc;
}

/* A batch is its own group: one service, one statement. */
static int batch_once(struct registry *reg, struct org_entry *e,
                      struct service_job *jobs, size_t n,
                      const struct reg_deadlines *dl, char *err, size_t errlen)
{
    struct pool_item *item;
    struct holder hold;
    uint64_t now = clock_now_ns();
    uint64_t timeout = dl->acquire_ns > now ? dl->acquire_ns - now : 0;
    int rc;

    db_thread_deadline(dl->acquire_ns);
    rc = pool_acquire(e->act->pool, reg->cfg.max_waiters ? timeout : 0, &item);
    db_thread_deadline(0);
    if (rc != POOLD_OK)
        return rc;
    reg_hold_begin(e, &hold, jobs[0].msg);
    rc = service_process_many(pool_item_object(item), jobs, n, dl->commit_ns,
                              err, errlen);
    reg_hold_end(e, &hold);
    reg_release(reg, e, item, rc);
    return rc;
}

/* A batch is retried like one message (retry_worth). */
static int process_batch_pooled(struct registry *reg, struct org_entry *e,
                                struct service_job *jobs, size_t n,
                                const struct reg_deadlines *dl, char *err,
                                size_t errlen)
{
    int rc = batch_once(reg, e, jobs, n, dl, err, errlen);
    char first_err[REG_ERR_MAX];
    struct reg_deadlines again = {dl->commit_ns, dl->commit_ns};

    if (!retry_worth(reg, rc, dl))
        return rc;
    snprintf(first_err, sizeof first_err, "%s", err);
    return retry_outcome(e, rc,
                         batch_once(reg, e, jobs, n, &again, err, errlen),
                         first_err, err, errlen);
}

/* The org is found and its active part referenced under the one read lock
 * admission takes anyway: the request path pays an atomic increment here
 * and a decrement in registry_admission_release() for the reference. */
int registry_admit(struct registry *reg, const char *org_id,
                   struct registry_admission *adm, char *err, size_t errlen)
{
    struct org_entry *e = NULL;
    struct org_active *a = NULL;
    int rc;

    err[0] = '\0';
    adm->org = NULL;
    adm->act = NULL;
    if (atomic_load(&reg->shutting_down))
        rc = POOLD_ERR_SHUTDOWN;
    else
        rc = registry_find_active(reg, org_id, &e, &a);
    if (rc == POOLD_OK && atomic_load(&e->paused))
        rc = POOLD_ERR_PAUSED;
    if (rc == POOLD_OK && entry_misconfigured(e, a, err, errlen))
        rc = POOLD_ERR_MISCONFIGURED;
    if (rc != POOLD_OK) {
        registry_active_release(a);
        registry_fill_error(rc, org_id, err, errlen);
        return rc;
    }
    adm->org = e;
    adm->act = a;
    return POOLD_OK;
}

void registry_admission_release(struct registry_admission *adm)
{
    registry_active_release(adm->act);
    adm->org = NULL;
    adm->act = NULL;
}

/* The admitted org's active part, made on its first request: referenced
 * by adm from then on, so e->act is it until the request ends. */
static int admission_activate(struct registry *reg,
                              struct registry_admission *adm)
{
    if (atomic_load(&reg->shutting_down))
        return POOLD_ERR_SHUTDOWN;
    if (adm->act != NULL)
        return POOLD_OK;
    return registry_active_acquire(reg, adm->org, &adm->act);
}

int registry_process(struct registry *reg, struct registry_admission *adm,
                     const struct message *msg, struct service_result *out,
                     char *err, size_t errlen)
{
    struct reg_deadlines dl = reg_deadlines_from(reg, clock_now_ns());
    struct service_job job = {.msg = msg};
    struct org_entry *e = adm->org;
    int rc = admission_activate(reg, adm);

    err[0] = '\0';
    if (rc == POOLD_OK && reg->cfg.pooled) {
        rc = process_pooled(reg, e, msg, out, &dl, err, errlen);
    } else if (rc == POOLD_OK) {
        rc = process_unpooled(reg, e, &job, 1, &dl, err, errlen);
        if (rc == POOLD_OK)
            rc = job.status;
        *out = job.result;
    }
    if (rc != POOLD_OK)
        registry_fill_error(rc, e->org_id, err, errlen);
    return rc;
}

int registry_process_batch(struct registry *reg, struct registry_admission *adm,
                           struct service_job *jobs, size_t n, char *err,
                           size_t errlen)
{
    struct reg_deadlines dl = reg_deadlines_from(reg, clock_now_ns());
    struct org_entry *e = adm->org;
    int rc = admission_activate(reg, adm);

    err[0] = '\0';
    if (rc == POOLD_OK && reg->cfg.pooled)
        rc = process_batch_pooled(reg, e, jobs, n, &dl, err, errlen);
    else if (rc == POOLD_OK)
        rc = process_unpooled(reg, e, jobs, n, &dl, err, errlen);
    if (rc != POOLD_OK)
        registry_fill_error(rc, e->org_id, err, errlen);
    return rc;
}
