/* service.c — one org's processing service: rules + a connection. Building
 * it and evaluating its rules are here; the commit is service_commit.c. */
#include "service.h"
#include "service_internal.h"
#include "service_test.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "clock.h"
#include "keys.h"

/* ------------------------------------------------------- the connection */

/*
 * At the cap, connections sit in other orgs' idle services, which give them
 * back only when asked: ask (reclaim) before queueing. Once queued, every
 * service released anywhere gives its connection to the queue (registry),
 * so waiting is first come, first served across orgs, and a real shortage
 * shows in the connection pool's total_timeouts.
 */
static int svc_conn_take(const struct service_env *env, const char *org_id,
                         struct pool_item **item)
{
    int rc = pool_try_acquire(env->conns, 0, item);
    uint64_t wait = env->conn_acquire_timeout_ns;
    uint64_t deadline = db_thread_deadline_get(), now;

    if (rc == POOLD_ERR_TIMEOUT && env->reclaim != NULL &&
        env->reclaim(env->reclaim_arg, org_id))
        rc = pool_try_acquire(env->conns, 0, item);
    /* Within the request's deadline, when it has one. */
    if (rc == POOLD_ERR_TIMEOUT && deadline != 0) {
        now = clock_now_ns();
        wait = deadline > now ? deadline - now : 0;
        if (wait > env->conn_acquire_timeout_ns)
            wait = env->conn_acquire_timeout_ns;
    }
    if (rc == POOLD_ERR_TIMEOUT)
        rc = pool_acquire(env->conns, wait, item);
    return rc;
}

static int svc_conn_acquire_pooled(struct service *svc, char *err,
                                   size_t errlen)
{
    int rc = svc_conn_take(svc->env, svc->org_id, &svc->item);

    if (rc != POOLD_OK) {
        svc->item = NULL;
        snprintf(err, errlen, "org %s: no database connection: %s", svc->org_id,
                 poold_status_str(rc));
        return rc == POOLD_ERR_CREATE ? POOLD_ERR_DB : rc;
    }
    svc->conn = pool_item_object(svc->item);
    return POOLD_OK;
}

static int svc_conn_acquire(struct service *svc, char *err, size_t errlen)
{
    if (svc->env->conns != NULL)
        return svc_conn_acquire_pooled(svc, err, errlen);
    return db_conn_open(svc->env->db, clock_now_ns(), &svc->conn, err, errlen);
}

/* Give the connection back: reused only if clean and not closed by the
 * server meanwhile (zero round trips: the pool validates on acquire). */
static void svc_conn_release(struct service *svc)
{
    if (svc->item == NULL) {
        db_conn_close(svc->conn);
    } else if (db_conn_is_clean(svc->conn) &&
               db_conn_is_alive(svc->conn, 0, UINT64_MAX)) {
        pool_release(svc->env->conns, svc->item);
    } else {
        pool_release_broken(svc->env->conns, svc->item);
    }
    svc->item = NULL;
    svc->conn = NULL;
}

/* ------------------------------------------------------------ building */

/* The org's rules, from its row (catalog_load_org). */
static int svc_parse(void *arg, const char *config, size_t len,
                     long long version, char *err, size_t errlen)
{
    struct service *svc = arg;
    char why[256];
    int rc = rules_parse(config, len, &svc->rules, why, sizeof why);

    if (rc != POOLD_OK) {
        snprintf(err, errlen, "org %s: %s", svc->org_id, why);
        return rc == POOLD_ERR_NOMEM ? rc : POOLD_ERR_MISCONFIGURED;
    }
    svc->config_version = version;
    return POOLD_OK;
}

/* Read the org's row and parse its rules into svc. */
static int svc_load(struct service *svc, char *err, size_t errlen)
{
    int rc =
        catalog_load_org(svc->conn, svc->org_id, svc_parse, svc, err, errlen);

    if (rc == POOLD_OK)
        db_conn_touch(svc->conn, clock_now_ns());
    return rc;
}

/* Allocate a service for org_id and give it a connection. */
static int svc_new(const struct service_env *env, const char *org_id,
                   struct service **out, char *err, size_t errlen)
{
    size_t len = org_id ? strnlen(org_id, ORG_ID_MAX + 1) : 0;
    struct service *svc;

    *out = NULL;
    if (!orgid_is_valid(org_id, len)) {
        snprintf(err, errlen, "invalid org id");
        return POOLD_ERR_INVALID;
    }
    svc = calloc(1, sizeof *svc);
    if (svc == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    svc->env = env;
    memcpy(svc->org_id, org_id, len); /* calloc'd: stays terminated */
    *out = svc;
    return svc_conn_acquire(svc, err, errlen);
}

int service_create(const struct service_env *env, const char *org_id,
                   struct service **out, char *err, size_t errlen)
{
    struct service *svc;
    int rc;

    *out = NULL;
    rc = svc_new(env, org_id, &svc, err, errlen);
    if (rc == POOLD_OK)
        rc = svc_load(svc, err, errlen);
    if (rc != POOLD_OK) {
        service_close(svc);
        return rc;
    }
    clock_sleep_ms(env->build_cost_ms);
    *out = svc;
    return POOLD_OK;
}

int service_create_from(const struct service_env *env, const char *org_id,
                        struct ruleset *rules, long long version,
                        struct service **out, char *err, size_t errlen)
{
    struct service *svc;
    int rc;

    *out = NULL;
    rc = svc_new(env, org_id, &svc, err, errlen);
    if (rc != POOLD_OK) {
        rules_clear(rules);
        service_close(svc);
        return rc;
    }
    svc->rules = *rules; /* moved: the caller's copy is ours now */
    *rules = (struct ruleset){0};
    svc->config_version = version;
    clock_sleep_ms(env->build_cost_ms);
    *out = svc;
    return POOLD_OK;
}

void service_close(struct service *svc)
{
    if (svc == NULL)
        return;
    if (svc->conn != NULL)
        svc_conn_release(svc);
    rules_clear(&svc->rules);
    for (int i = 0; i < SVC_ARRS; i++)
        free(svc->arrs[i].buf);
    free(svc);
}

/* ---------------------------------------------------------- processing */

void service_hydrate(struct service *svc, const struct message *msg)
{
    svc->msg = msg;
}

int service_evaluate(struct service *svc, struct service_job *jobs, size_t n,
                     char *err, size_t errlen)
{
    for (size_t k = 0; k < n; k++) {
        const struct message *m = jobs[k].msg;
        struct service_result *r = &jobs[k].result;

        jobs[k].status = POOLD_ERR_INVALID;
        if (m == NULL || m->id == NULL || m->payload == NULL ||
            m->id_len > INT32_MAX / 2 || m->payload_len > INT32_MAX / 2) {
            snprintf(err, errlen, "no message to process");
            return POOLD_ERR_INVALID;
        }
        rules_eval(&svc->rules, m->id, m->id_len, m->payload, m->payload_len,
                   &r->verdict);
        r->passed = r->verdict.nfailed == 0;
        r->duplicate = false;
        static_assert(sizeof r->digest == KEYS_DIGEST_LEN, "SHA-256");
        keys_digest(m->payload, m->payload_len, r->digest);
    }
    if (n > 0)
        clock_sleep_ms(svc->env->process_cost_ms * (double)n);
    return POOLD_OK;
}

int service_process_many(struct service *svc, struct service_job *jobs,
                         size_t n, uint64_t deadline_ns, char *err,
                         size_t errlen)
{
    int rc = service_evaluate(svc, jobs, n, err, errlen);

    if (rc != POOLD_OK)
        return rc;
    return service_commit_many(svc, jobs, n, deadline_ns, err, errlen);
}

int service_process(struct service *svc, struct service_result *out, char *err,
                    size_t errlen)
{
    struct service_job job = {.msg = svc->msg};
    int rc = service_process_many(svc, &job, 1, 0, err, errlen);

    *out = job.result;
    return rc == POOLD_OK ? job.status : rc;
}

bool service_reset(struct service *svc)
{
    svc->msg = NULL;
    return db_conn_is_clean(svc->conn);
}

bool service_is_valid(struct service *svc, uint64_t now_ns)
{
    if (!db_conn_is_alive(svc->conn, now_ns, svc->env->conn_check_idle_ns))
        return false;
    return svc->item == NULL ||
           !pool_item_is_expired(svc->env->conns, svc->item, now_ns);
}

uint64_t service_conn_expiry(const struct service *svc)
{
    return svc->item != NULL ? pool_item_expiry(svc->item) : UINT64_MAX;
}

const char *service_org(const struct service *svc)
{
    return svc->org_id;
}

long long service_config_version(const struct service *svc)
{
    return svc->config_version;
}

const struct ruleset *service_rules(const struct service *svc)
{
    return &svc->rules;
}

struct db_conn *service_conn(struct service *svc)
{
    return svc->conn;
}
