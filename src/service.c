/* service.c — one org's processing service: rules + a connection. */
#include "service.h"

#include <arpa/inet.h>
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

/* A growable buffer for one binary array parameter of the commit; kept by
 * the service so a warm commit allocates nothing. */
struct svc_arr {
    char *buf;
    size_t len, cap;
    bool oom;
};
#define SVC_ARRS 5 /* ids, passed, checks, failed rules, payloads */

/* Small on purpose: an idle pooled service is this, its ruleset, its commit
 * buffers and the pooled connection it holds. */
struct service {
    const struct service_env *env; /* borrowed for the service's life */
    struct pool_item *item;        /* the pooled connection, or NULL when
                                      conn is our own (env->conns NULL) */
    struct db_conn *conn;          /* never NULL */
    const struct message *msg;     /* hydrated message (borrowed) or NULL */
    long long config_version;      /* of the orgs row rules came from */
    struct ruleset rules;
    struct svc_arr arrs[SVC_ARRS];
    char org_id[ORG_ID_MAX + 1];
};

/* The commit: named statements, prepared once per connection (db.h); 1 is
 * the org load's (CATALOG_STMT_ORG). */
enum { SVC_STMT_COMMIT = 2, SVC_STMT_COMMIT_ONE = 3 };

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

/* The failed rules as a text[] literal: {a,b}. Names need no quoting. */
static size_t svc_failed_literal(const struct rules_verdict *v, char *buf,
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
    return o;
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

/* ------------------------------------------ binary arrays for the commit */

/* Append n bytes; remembers an allocation failure. */
static void arr_put(struct svc_arr *a, const void *p, size_t n)
{
    if (a->oom)
        return;
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        char *b;
        while (cap < a->len + n)
            cap *= 2;
        if ((b = realloc(a->buf, cap)) == NULL) {
            a->oom = true;
            return;
        }
        a->buf = b;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, p, n);
    a->len += n;
}

static void arr_put32(struct svc_arr *a, uint32_t v)
{
    v = htonl(v);
    arr_put(a, &v, sizeof v);
}

/* The header of a one-dimensional array without NULLs (array_recv). */
static void arr_begin(struct svc_arr *a, Oid elem, size_t n)
{
    a->len = 0;
    a->oom = false;
    arr_put32(a, 1);           /* dimensions */
    arr_put32(a, 0);           /* has NULLs */
    arr_put32(a, elem);        /* element type */
    arr_put32(a, (uint32_t)n); /* length */
    arr_put32(a, 1);           /* lower bound */
}

static void arr_elem(struct svc_arr *a, const void *p, size_t n)
{
    arr_put32(a, (uint32_t)n);
    arr_put(a, p, n);
}

/* ------------------------------------------------------------ commit */

/*
 * Insert the result rows, or read the ones already there, in one autocommit
 * statement: PGRES_TUPLES_OK (and ReadyForQuery) means committed. One row
 * per message, in order, with a status:
 *   i  inserted;
 *   b  a repeat, in this statement, of an inserted id with the same payload;
 *   d  stored before with the same payload (the stored result follows);
 *   c  the id is taken with another payload;
 *   m  neither: under READ COMMITTED a concurrent insert of the same key that
 *      commits after this statement's snapshot makes ON CONFLICT skip while
 *      the join does not see the row. Those messages go again.
 * Only the first occurrence of an id is inserted; later ones are compared
 * with it (if it went in) or with the stored row.
 */
static const char svc_commit_sql[] =
    "WITH input AS ("
    " SELECT i.ord, i.message_id, i.passed, i.checks,"
    "  i.failed::text[] AS failed_rules, sha256(i.payload) AS h"
    " FROM unnest($2::text[], $3::boolean[], $4::integer[], $5::text[],"
    "  $6::bytea[]) WITH ORDINALITY"
    "  AS i(message_id, passed, checks, failed, payload, ord)),"
    " first AS (SELECT DISTINCT ON (message_id) * FROM input"
    "  ORDER BY message_id, ord),"
    " ins AS ("
    " INSERT INTO processed_messages (org_id, message_id, passed, checks,"
    "  failed_rules, payload_sha256)"
    " SELECT $1, message_id, passed, checks, failed_rules, h FROM first"
    " ORDER BY ord"
    " ON CONFLICT (org_id, message_id) DO NOTHING RETURNING message_id)"
    " SELECT i.ord,"
    "  CASE WHEN ins.message_id IS NOT NULL THEN"
    "   CASE WHEN i.ord = f.ord THEN 'i' WHEN i.h = f.h THEN 'b' ELSE 'c' END"
    "  WHEN p.message_id IS NULL THEN 'm'"
    "  WHEN p.payload_sha256 = i.h THEN 'd' ELSE 'c' END,"
    "  p.passed, p.checks, p.failed_rules::text"
    " FROM input i JOIN first f ON f.message_id = i.message_id"
    " LEFT JOIN ins ON ins.message_id = i.message_id"
    " LEFT JOIN processed_messages p"
    "  ON p.org_id = $1 AND p.message_id = i.message_id"
    " ORDER BY i.ord";

/* The same for one message, without arrays: a lone request (the common
 * case at low load) pays for no unnest, sort or join. Zero rows is 'm'. */
static const char svc_commit_one_sql[] =
    "WITH ins AS ("
    " INSERT INTO processed_messages (org_id, message_id, passed, checks,"
    "  failed_rules, payload_sha256)"
    " VALUES ($1, $2, $3::boolean, $4::integer, $5::text[], sha256($6))"
    " ON CONFLICT (org_id, message_id) DO NOTHING RETURNING 1)"
    " SELECT 1::bigint, 'i', NULL::boolean, NULL::integer, NULL::text"
    " FROM ins"
    " UNION ALL"
    " SELECT 1, CASE WHEN p.payload_sha256 = sha256($6) THEN 'd' ELSE 'c'"
    "  END, p.passed, p.checks, p.failed_rules::text"
    " FROM processed_messages p"
    " WHERE p.org_id = $1 AND p.message_id = $2"
    " AND NOT EXISTS (SELECT 1 FROM ins)";

#define BOOLOID 16
#define INT4OID 23
#define BOOLARRAYOID 1000
#define BYTEAARRAYOID 1001
#define INT4ARRAYOID 1007
#define TEXTARRAYOID 1009

/* Fill the five arrays from the jobs listed in idx[0..n). */
static bool svc_commit_arrays(struct service *svc, struct service_job *jobs,
                              const size_t *idx, size_t n)
{
    struct svc_arr *a = svc->arrs;
    char failed[RULES_MAX * 24 + 3];

    arr_begin(&a[0], TEXTOID, n);
    arr_begin(&a[1], BOOLOID, n);
    arr_begin(&a[2], INT4OID, n);
    arr_begin(&a[3], TEXTOID, n);
    arr_begin(&a[4], BYTEAOID, n);
    for (size_t k = 0; k < n; k++) {
        const struct service_job *j = &jobs[idx[k]];
        const struct service_result *r = &j->result;
        unsigned char passed = r->passed;
        uint32_t checks = htonl(r->verdict.checks);
        size_t flen = svc_failed_literal(&r->verdict, failed, sizeof failed);

        arr_elem(&a[0], j->msg->id, j->msg->id_len);
        arr_elem(&a[1], &passed, 1);
        arr_elem(&a[2], &checks, sizeof checks);
        arr_elem(&a[3], failed, flen);
        arr_elem(&a[4], j->msg->payload, j->msg->payload_len);
    }
    for (int i = 0; i < SVC_ARRS; i++)
        if (a[i].oom || a[i].len > INT32_MAX)
            return false;
    return true;
}

/* Apply one answer row to its job; false for 'm' (to go again). */
static bool svc_commit_row(struct service_job *j, const PGresult *res, int row)
{
    char st = PQgetvalue(res, row, 1)[0];
    long checks;
    char *end;

    switch (st) {
    case 'i':
        j->status = POOLD_OK;
        return true;
    case 'b':
        j->result.duplicate = true;
        j->status = POOLD_OK;
        return true;
    case 'c':
        j->status = POOLD_ERR_CONFLICT;
        return true;
    case 'd':
        break;
    default:
        return false;
    }
    errno = 0;
    checks = strtol(PQgetvalue(res, row, 3), &end, 10);
    if (errno != 0 || *end != '\0' || checks < 0 || checks > (long)UINT32_MAX) {
        j->status = POOLD_ERR_DB; /* stored, but unreadable: say so */
        return true;
    }
    j->result.duplicate = true;
    j->result.passed = strcmp(PQgetvalue(res, row, 2), "t") == 0;
    j->result.verdict.checks = (unsigned)checks;
    svc_failed_parse(PQgetvalue(res, row, 4), &j->result.verdict);
    j->status = POOLD_OK;
    return true;
}

/* svc_commit_once() for one job: *n becomes 0, or stays 1 to go again. */
static int svc_commit_one(struct service *svc, struct service_job *j, size_t *n,
                          uint64_t deadline_ns, char *err, size_t errlen)
{
    char failed[RULES_MAX * 24 + 3], checks[16];
    const struct message *m = j->msg;
    /* id and payload in binary format, by length: neither needs a
     * terminating NUL, and the payload is hashed as its exact bytes. */
    const char *values[6] = {svc->org_id, m->id,  j->result.passed ? "t" : "f",
                             checks,      failed, m->payload};
    const Oid types[6] = {TEXTOID, TEXTOID, 0, 0, 0, BYTEAOID};
    const int lengths[6] = {0, (int)m->id_len, 0, 0, 0, (int)m->payload_len};
    const int formats[6] = {0, 1, 0, 0, 0, 1};
    const struct db_query q = {.stmt = SVC_STMT_COMMIT_ONE,
                               .sql = svc_commit_one_sql,
                               .nparams = 6,
                               .types = types,
                               .values = values,
                               .lengths = lengths,
                               .formats = formats,
                               .writes = true};
    PGresult *res;
    int rc;

    snprintf(checks, sizeof checks, "%u", j->result.verdict.checks);
    svc_failed_literal(&j->result.verdict, failed, sizeof failed);
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    if (PQntuples(res) > 1 || PQnfields(res) != 5) {
        snprintf(err, errlen, "storing result: %d rows", PQntuples(res));
        PQclear(res);
        return POOLD_ERR_DB;
    }
    if (PQntuples(res) == 1 && svc_commit_row(j, res, 0))
        *n = 0;
    PQclear(res);
    return POOLD_OK;
}

/* One statement for the jobs listed in idx[0..*n); on return idx[0..*n)
 * lists the jobs to go again ('m'). POOLD_OK, or the statement's error
 * (every listed job is left for the caller to fail). */
static int svc_commit_once(struct service *svc, struct service_job *jobs,
                           size_t *idx, size_t *n, uint64_t deadline_ns,
                           char *err, size_t errlen)
{
    const Oid types[6] = {TEXTOID,      TEXTARRAYOID, BOOLARRAYOID,
                          INT4ARRAYOID, TEXTARRAYOID, BYTEAARRAYOID};
    const char *values[6] = {svc->org_id};
    int lengths[6] = {0};
    const int formats[6] = {0, 1, 1, 1, 1, 1};
    const struct db_query q = {.stmt = SVC_STMT_COMMIT,
                               .sql = svc_commit_sql,
                               .nparams = 6,
                               .types = types,
                               .values = values,
                               .lengths = lengths,
                               .formats = formats,
                               .writes = true};
    PGresult *res;
    size_t again = 0;
    int rc;

    if (*n == 1)
        return svc_commit_one(svc, &jobs[idx[0]], n, deadline_ns, err, errlen);
    if (!svc_commit_arrays(svc, jobs, idx, *n)) {
        snprintf(err, errlen, "out of memory building the commit");
        return POOLD_ERR_NOMEM;
    }
    for (int i = 0; i < SVC_ARRS; i++) {
        values[i + 1] = svc->arrs[i].buf;
        lengths[i + 1] = (int)svc->arrs[i].len;
    }
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    if (PQntuples(res) != (int)*n || PQnfields(res) != 5) {
        snprintf(err, errlen, "storing results: %d rows for %zu messages",
                 PQntuples(res), *n);
        PQclear(res);
        return POOLD_ERR_DB; /* impossible: the statement committed, though */
    }
    for (size_t k = 0; k < *n; k++)
        if (!svc_commit_row(&jobs[idx[k]], res, (int)k))
            idx[again++] = idx[k];
    PQclear(res);
    *n = again;
    return POOLD_OK;
}

/* Commit jobs[0..n): every job gets its own status. */
static int svc_commit(struct service *svc, struct service_job *jobs, size_t n,
                      uint64_t deadline_ns, char *err, size_t errlen)
{
    size_t stack_idx[64];
    size_t *idx = n <= 64 ? stack_idx : malloc(n * sizeof *idx);
    size_t left = n;
    int rc = POOLD_OK;

    if (idx == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = POOLD_ERR_NOMEM;
    }
    for (size_t k = 0; idx && k < n; k++)
        idx[k] = k;
    for (int t = 0; idx && rc == POOLD_OK && left > 0 && t < SVC_COMMIT_TRIES;
         t++)
        rc = svc_commit_once(svc, jobs, idx, &left, deadline_ns, err, errlen);
    if (rc == POOLD_OK && left > 0) {
        snprintf(err, errlen,
                 "storing result: row neither inserted nor "
                 "found after %d tries",
                 SVC_COMMIT_TRIES);
        rc = POOLD_ERR_DB;
    }
    for (size_t k = 0; idx && k < left; k++)
        jobs[idx[k]].status = rc;
    if (idx != stack_idx)
        free(idx);
    return rc;
}

int service_process_many(struct service *svc, struct service_job *jobs,
                         size_t n, uint64_t deadline_ns, char *err,
                         size_t errlen)
{
    int rc;

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
    }
    if (n == 0)
        return POOLD_OK;
    clock_sleep_ms(svc->env->process_cost_ms * (double)n);
    rc = svc_commit(svc, jobs, n, deadline_ns, err, errlen);
    for (size_t k = 0; k < n && rc == POOLD_OK; k++)
        if (jobs[k].status == POOLD_ERR_CONFLICT) {
            const struct message *m = jobs[k].msg;
            snprintf(err, errlen,
                     "message id %.*s was processed with another payload",
                     (int)(m->id_len > 128 ? 128 : m->id_len), m->id);
        }
    return rc;
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

static void svc_conn_destroy(void *ctx, void *obj, enum pool_destroy_reason why)
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
