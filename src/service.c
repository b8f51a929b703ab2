/* service.c — one org's processing service: rules + a connection. */
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "clock.h"
#include "log.h"

/* A concurrent insert of the same key can make one statement see nothing
 * (see service_commit); it settles on the next try, so a few are plenty. */
#define SVC_COMMIT_TRIES 3
#define BYTEAOID 17 /* pg_type oids (catalog/pg_type_d.h) */
#define TEXTOID 25

/* Small on purpose: an idle pooled service is this, its ruleset and the
 * pooled connection it holds. */
struct service {
    const struct service_env *env;  /* borrowed for the service's life */
    struct pool_item *item;         /* the pooled connection, or NULL when
                                       conn is our own (env->conns NULL) */
    struct db_conn *conn;           /* never NULL */
    const struct message *msg;      /* hydrated message (borrowed) or NULL */
    long long config_version;       /* of the orgs row rules came from */
    struct ruleset rules;
    char org_id[ORG_ID_MAX + 1];
};

/* Copy PQ's error for a failed statement, without its trailing newline. */
static void svc_pq_error(PGconn *pg, const PGresult *res, const char *what,
                         char *err, size_t errlen)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    size_t n;

    if (*msg == '\0')
        msg = PQerrorMessage(pg);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        n--;
    snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

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

    if (rc == POOLD_ERR_TIMEOUT && env->reclaim != NULL &&
        env->reclaim(env->reclaim_arg, org_id))
        rc = pool_try_acquire(env->conns, 0, item);
    if (rc == POOLD_ERR_TIMEOUT)
        rc = pool_acquire(env->conns, env->conn_acquire_timeout_ns, item);
    return rc;
}

static int svc_conn_acquire_pooled(struct service *svc, char *err,
                                   size_t errlen)
{
    int rc = svc_conn_take(svc->env, svc->org_id, &svc->item);

    if (rc != POOLD_OK) {
        svc->item = NULL;
        snprintf(err, errlen, "org %s: no database connection: %s",
                 svc->org_id, poold_status_str(rc));
        return rc == POOLD_ERR_CREATE ? POOLD_ERR_DB : rc;
    }
    svc->conn = pool_item_object(svc->item);
    return POOLD_OK;
}

static int svc_conn_acquire(struct service *svc, char *err, size_t errlen)
{
    if (svc->env->conns != NULL)
        return svc_conn_acquire_pooled(svc, err, errlen);
    return db_conn_open(svc->env->db, clock_now_ns(), &svc->conn, err,
                        errlen);
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

/* Read the org's row and parse its rules into svc. */
static int svc_load(struct service *svc, char *err, size_t errlen)
{
    const char *params[1] = { svc->org_id };
    PGconn *pg = db_conn_pg(svc->conn);
    PGresult *res = PQexecParams(
        pg,
        "SELECT enabled, config::text, config_version FROM orgs"
        " WHERE org_id = $1",
        1, NULL, params, NULL, NULL, 0);
    int rc;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        svc_pq_error(pg, res, "loading org", err, errlen);
        rc = POOLD_ERR_DB;
    } else if (PQntuples(res) == 0 ||
               strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        snprintf(err, errlen, "org %s %s", svc->org_id,
                 PQntuples(res) == 0 ? "not found" : "is disabled");
        rc = POOLD_ERR_UNKNOWN_ORG;
    } else {
        char why[256];
        svc->config_version = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        rc = rules_parse(PQgetvalue(res, 0, 1),
                         (size_t)PQgetlength(res, 0, 1), &svc->rules, why,
                         sizeof why);
        if (rc != POOLD_OK)
            snprintf(err, errlen, "org %s: %s", svc->org_id, why);
        if (rc != POOLD_OK && rc != POOLD_ERR_NOMEM)
            rc = POOLD_ERR_MISCONFIGURED;
    }
    PQclear(res);
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
    if (!catalog_org_id_is_valid(org_id, len)) {
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
    *rules = (struct ruleset){ 0 };
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
    free(svc);
}

/* ---------------------------------------------------------- processing */

void service_hydrate(struct service *svc, const struct message *msg)
{
    svc->msg = msg;
}

/* The failed rules as a text[] literal: {a,b}. Names need no quoting. */
static void svc_failed_literal(const struct rules_verdict *v, char *buf,
                               size_t len)
{
    size_t o = 0;

    buf[o++] = '{';
    for (unsigned i = 0; i < v->nfailed; i++) {
        int n = snprintf(buf + o, len - o, "%s%s", i ? "," : "",
                         rule_type_str(v->failed[i]));
        if (n < 0 || (size_t)n >= len - o - 1)
            abort(); /* the buffer is sized for RULES_MAX longest names */
        o += (size_t)n;
    }
    buf[o++] = '}';
    buf[o] = '\0';
}

/* Parse a stored failed_rules (text[] output, {a,b}) back into v. */
static void svc_failed_parse(const char *s, struct rules_verdict *v)
{
    char name[64];

    v->nfailed = 0;
    if (*s == '{')
        s++;
    while (*s != '\0' && *s != '}') {
        size_t n = strcspn(s, ",}");
        enum rule_type t;

        snprintf(name, sizeof name, "%.*s", (int)n, s);
        if (rule_type_parse(name, &t) && v->nfailed < RULES_MAX)
            v->failed[v->nfailed++] = t;
        else /* a name from a newer or older poold: keep the rest */
            log_event(LOG_WARN, "stored failed rule not understood", "rule",
                      name, (const char *)NULL);
        s += n;
        if (*s == ',')
            s++;
    }
}

/* Fill *out from a committed row: ours (inserted) or the stored one. */
static int svc_commit_row(struct service *svc, const PGresult *res,
                          struct service_result *out, char *err,
                          size_t errlen)
{
    long checks;
    char *end;

    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
        return POOLD_OK; /* inserted: out already holds our verdict */
    if (strcmp(PQgetvalue(res, 0, 4), "t") != 0) {
        const struct message *m = svc->msg;
        snprintf(err, errlen,
                 "message id %.*s was processed with another payload",
                 (int)(m->id_len > 128 ? 128 : m->id_len), m->id);
        return POOLD_ERR_CONFLICT;
    }
    errno = 0;
    checks = strtol(PQgetvalue(res, 0, 2), &end, 10);
    if (errno != 0 || *end != '\0' || checks < 0 || checks > (long)UINT32_MAX) {
        snprintf(err, errlen, "stored result has a bad checks value");
        return POOLD_ERR_DB;
    }
    out->duplicate = true;
    out->passed = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    out->verdict.checks = (unsigned)checks;
    svc_failed_parse(PQgetvalue(res, 0, 3), &out->verdict);
    return POOLD_OK;
}

/*
 * Insert the result row, or read the one already there, in one autocommit
 * statement: PGRES_TUPLES_OK means committed. Under READ COMMITTED a
 * concurrent insert of the same key that commits after this statement's
 * snapshot makes ON CONFLICT skip while the SELECT does not see the row:
 * zero rows, so the statement runs again with a new snapshot.
 */
static const char svc_commit_sql[] =
    "WITH ins AS ("
    " INSERT INTO processed_messages (org_id, message_id, passed, checks,"
    "  failed_rules, payload_sha256)"
    " VALUES ($1, $2, $3::boolean, $4::integer, $5::text[], sha256($6))"
    " ON CONFLICT (org_id, message_id) DO NOTHING RETURNING 1)"
    " SELECT true, NULL::boolean, NULL::integer, NULL::text, NULL::boolean"
    " FROM ins"
    " UNION ALL"
    " SELECT false, p.passed, p.checks, p.failed_rules::text,"
    "  p.payload_sha256 = sha256($6)"
    " FROM processed_messages p"
    " WHERE p.org_id = $1 AND p.message_id = $2"
    " AND NOT EXISTS (SELECT 1 FROM ins)";

static int svc_commit(struct service *svc, struct service_result *out,
                      char *err, size_t errlen)
{
    char failed[RULES_MAX * 24 + 3];
    char checks[16];
    const struct message *m = svc->msg;
    /* id and payload go in binary format, by length: neither needs a
     * terminating NUL, and the payload is hashed as its exact bytes. */
    const char *params[6] = { svc->org_id, m->id, out->passed ? "t" : "f",
                              checks, failed, m->payload };
    const Oid types[6] = { 0, TEXTOID, 0, 0, 0, BYTEAOID };
    const int lengths[6] = { 0, (int)m->id_len, 0, 0, 0,
                             (int)m->payload_len };
    const int formats[6] = { 0, 1, 0, 0, 0, 1 };
    PGconn *pg = db_conn_pg(svc->conn);

    snprintf(checks, sizeof checks, "%u", out->verdict.checks);
    svc_failed_literal(&out->verdict, failed, sizeof failed);
    for (int i = 0; i < SVC_COMMIT_TRIES; i++) {
        PGresult *res = PQexecParams(pg, svc_commit_sql, 6, types, params,
                                     lengths, formats, 0);
        int rc = POOLD_OK;

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            svc_pq_error(pg, res, "storing result", err, errlen);
            rc = POOLD_ERR_DB;
        } else if (PQntuples(res) == 1) {
            rc = svc_commit_row(svc, res, out, err, errlen);
        } else {
            PQclear(res);
            continue; /* raced with a concurrent insert: look again */
        }
        PQclear(res);
        return rc;
    }
    snprintf(err, errlen, "storing result: row neither inserted nor found "
             "after %d tries", SVC_COMMIT_TRIES);
    return POOLD_ERR_DB;
}

int service_process(struct service *svc, struct service_result *out,
                    char *err, size_t errlen)
{
    const struct message *m = svc->msg;
    int rc;

    if (m == NULL || m->id == NULL || m->payload == NULL ||
        m->id_len > INT32_MAX || m->payload_len > INT32_MAX) {
        snprintf(err, errlen, "no message to process");
        return POOLD_ERR_INVALID;
    }
    rules_eval(&svc->rules, m->id, m->id_len, m->payload, m->payload_len,
               &out->verdict);
    out->passed = out->verdict.nfailed == 0;
    out->duplicate = false;
    clock_sleep_ms(svc->env->process_cost_ms);
    rc = svc_commit(svc, out, err, errlen);
    if (rc == POOLD_OK)
        db_conn_touch(svc->conn, clock_now_ns());
    return rc;
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

/* --------------------------------------------- the connection pool's ops */

static int svc_conn_create(void *ctx, void **obj)
{
    const struct service_env *env = ctx;
    struct db_conn *conn = NULL;
    char err[512];
    int rc = db_conn_open(env->db, clock_now_ns(), &conn, err, sizeof err);

    if (rc != POOLD_OK) {
        /* The pool keeps only the code: the reason is logged here. */
        log_event(LOG_WARN, "database connection failed", "error", err,
                  (const char *)NULL);
        *obj = NULL;
        return rc == POOLD_ERR_NOMEM ? rc : POOLD_ERR_DB;
    }
    *obj = conn;
    return POOLD_OK;
}

static void svc_conn_destroy(void *ctx, void *obj,
                             enum pool_destroy_reason why)
{
    (void)ctx;
    (void)why;
    db_conn_close(obj);
}

static bool svc_conn_validate(void *ctx, void *obj, uint64_t idle_ns,
                              uint64_t now_ns)
{
    const struct service_env *env = ctx;

    (void)idle_ns; /* the connection knows its own last use */
    return db_conn_is_alive(obj, now_ns, env->conn_check_idle_ns);
}

static bool svc_conn_reset(void *ctx, void *obj)
{
    (void)ctx;
    return db_conn_is_clean(obj);
}

const struct pool_ops service_conn_pool_ops = {
    .create = svc_conn_create,
    .destroy = svc_conn_destroy,
    .validate = svc_conn_validate,
    .reset = svc_conn_reset,
};
