/* service_commit.c — committing a service's processed messages: the
 * statements, groups of one or several orgs, a large batch by COPY. The
 * dedupe scope they are sent for: service_scope.c. */
#include "service.h"
#include "service_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "log.h"

/* A concurrent insert of the same key can make one statement see nothing
 * (see service_commit); it settles on the next try, so a few are plenty. */
#define SVC_COMMIT_TRIES 3
#define BYTEAOID 17 /* pg_type oids (catalog/pg_type_d.h) */
#define TEXTOID 25

/* The commit: named statements, prepared once per connection (db.h); 1 is
 * the org load's (CATALOG_STMT_ORG). */
enum {
    SVC_STMT_COMMIT = 2,
    SVC_STMT_COMMIT_ONE = 3,
    SVC_STMT_LOOKUP = 4,
    SVC_STMT_COMMIT_FAST = 5,
    SVC_STMT_COMMIT_ONE_FAST = 6,
    SVC_STMT_COMMIT_PROBE = 7,
    SVC_STMT_COMMIT_ONE_PROBE = 8,
    SVC_STMT_COMMIT_ORGS_PROBE = 9,
    SVC_STMT_COMMIT_ORGS_FAST = 10,
    SVC_STMT_COMMIT_ORGS = 11,
    SVC_STMT_COPY_PROBE = 12
};

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

static void arr_put16(struct svc_arr *a, uint16_t v)
{
    v = htons(v);
    arr_put(a, &v, sizeof v);
}

/* The header of a one-dimensional array without NULLs (array_recv), at the
 * end of a. */
static void arr_begin_at(struct svc_arr *a, Oid elem, size_t n)
{
    arr_put32(a, 1);           /* dimensions */
    arr_put32(a, 0);           /* has NULLs */
    arr_put32(a, elem);        /* element type */
    arr_put32(a, (uint32_t)n); /* length */
    arr_put32(a, 1);           /* lower bound */
}

/* a holds one such array from now on. */
static void arr_begin(struct svc_arr *a, Oid elem, size_t n)
{
    a->len = 0;
    a->oom = false;
    arr_begin_at(a, elem, n);
}

static void arr_elem(struct svc_arr *a, const void *p, size_t n)
{
    arr_put32(a, (uint32_t)n);
    arr_put(a, p, n);
}

/* ------------------------------------------------------------ commit */

/*
 * The commit is plain SQL that PostgreSQL runs as cheaply as pgbench's own
 * INSERT: the common case (every message new) costs one autocommit
 * INSERT … ON CONFLICT DO NOTHING, and only messages it did not insert are
 * looked up afterwards. Committed means the INSERT's CommandComplete and
 * ReadyForQuery arrived.
 *
 * One message: the command tag says whether the row went in. Several:
 * repeats of an id inside the group are set aside in C (only the first
 * occurrence goes to the database) and RETURNING names the inserted ids.
 * An id not inserted was stored before; the lookup compares its payload
 * digest: the same payload is a duplicate (the stored result answers), another
 * payload an id_conflict. The digest (SHA-256) is computed here while the
 * message is processed, in parallel on its service's thread, and sent in
 * place of the payload: 32 bytes a row, and no hashing in the statement. Under
 * READ COMMITTED a concurrent insert of the same key that commits after the
 * INSERT's snapshot makes ON CONFLICT skip while the lookup may not see the row
 * yet: such a message goes again.
 *
 * processed_messages is partitioned by time, each partition with its own
 * primary key (sql/006_lifecycle.sql): ON CONFLICT covers the partition the
 * row goes to, and within the dedupe window the row's id must also be
 * absent from the partitions before it. poold passes the bounds of the
 * partition "now" falls in (service_scope, read by housekeeping) as
 * parameters, and the statement picks its path with a few comparisons of
 * them against the server's now() (which also sets processed_at):
 *
 *   fast     ($10 <= now() < $9) the window starts inside this partition
 *            and no boundary is near: ON CONFLICT alone decides;
 *   probe    ($8 <= now() < $9) the window reaches into the partition
 *            before: one index probe there, pruned by constants
 *            (now() - $7 .. $11) before the statement starts;
 *   careful  otherwise (near a boundary, or bounds unknown or stale):
 *            poold_claim() locks the ids' hash buckets and answers the
 *            free ids with a snapshot taken after the locks, over the
 *            whole window.
 *
 * $7 the window (interval), $8 / $9 the partition minus the zone at both
 * ends, $10 its start plus the window (or the zone, if longer), $11 its
 * start; all NULL when unknown (poold_claim() then uses the window the
 * database records). Nothing in these statements reads another table: a
 * table in the plan, even in a branch never taken, costs its locks and
 * set-up on every execution.
 */
#define SVC_SINCE "now() - $7::interval"
#define SVC_CALM "now() >= $8::timestamptz AND now() < $9::timestamptz"
#define SVC_DEDUPE_CLAIM                                                       \
    "WITH c AS (SELECT poold_claim($1, " SVC_IDS ", " SVC_SINCE ") AS free"    \
    "  WHERE NOT coalesce(" SVC_CALM ", false)) "
#define SVC_FAST "now() >= $10::timestamptz AND now() < $9::timestamptz"
#define SVC_PROBE(id)                                                          \
    "NOT EXISTS (SELECT 1 FROM processed_messages p"                           \
    "  WHERE p.org_id = $1 AND p.message_id = " id                             \
    "  AND p.processed_at >= now() - $7::interval"                             \
    "  AND p.processed_at < $11::timestamptz)"
#define SVC_CLAIMED(id) id " = ANY ((SELECT free FROM c)::text[])"
/* clang-format off */
#define SVC_DEDUPE_WHERE(id)                                                   \
    " WHERE CASE WHEN " SVC_FAST " THEN true"                                  \
    " WHEN " SVC_CALM " THEN " SVC_PROBE(id)                                   \
    " ELSE " SVC_CLAIMED(id) " END ON CONFLICT DO NOTHING"
/* clang-format on */

/* The guarded forms, for when poold's clock says the fast or the probe path:
 * that path alone under a guard of the same comparisons, without the claim
 * (its CTE costs about 10 us a commit even unrun) and, fast, without the
 * probe (pruned to nothing, it still costs about the insert's routing). A
 * row whose guard fails is not inserted: the lookup answers it if stored
 * before, else it goes again with the statement above. */
#define SVC_FAST_WHERE " WHERE " SVC_FAST " ON CONFLICT DO NOTHING"
#define SVC_PROBE_WHERE(id)                                                    \
    " WHERE " SVC_CALM " AND " SVC_PROBE(id) " ON CONFLICT DO NOTHING"

/* The rows of a group: its arrays unnested side by side in a select list
 * (in step, one row per index), which PostgreSQL streams; unnest() of
 * several arrays in FROM stores each array's rows first (a tuplestore
 * apiece): 0.3-0.6 us a row more, measured on batches of 100. */
#define SVC_INSERT_MANY                                                        \
    "INSERT INTO processed_messages (org_id, message_id, passed, checks,"      \
    " failed_rules, payload_sha256)"                                           \
    " SELECT $1, i.message_id, i.passed, i.checks, i.failed::text[], i.digest" \
    " FROM (SELECT unnest($2::text[]) AS message_id,"                          \
    "  unnest($3::boolean[]) AS passed, unnest($4::integer[]) AS checks,"      \
    "  unnest($5::text[]) AS failed, unnest($6::bytea[]) AS digest) AS i"
#define SVC_INSERT_ONE                                                         \
    "INSERT INTO processed_messages (org_id, message_id, passed, checks,"      \
    " failed_rules, payload_sha256)"                                           \
    " SELECT $1, $2, $3::boolean, $4::integer, $5::text[], $6::bytea"

#define SVC_IDS "$2::text[]"
static const char svc_insert_many_sql[] =
    SVC_DEDUPE_CLAIM SVC_INSERT_MANY SVC_DEDUPE_WHERE(
        "i.message_id") " RETURNING message_id";
static const char svc_insert_many_fast_sql[] =
    SVC_INSERT_MANY SVC_FAST_WHERE " RETURNING message_id";
static const char svc_insert_many_probe_sql[] =
    SVC_INSERT_MANY SVC_PROBE_WHERE("i.message_id") " RETURNING message_id";
#undef SVC_IDS

/* A group of several orgs' writes ($1 their orgs, one per row), in the same
 * three forms. The full one claims every (org, id) pair in one call
 * (poold_claim_orgs(), one ascending pass over the buckets: claims made
 * org by org on one connection could wait for each other crosswise) and
 * inserts the pairs it answers free, by ordinal. */
#define SVC_INSERT_ORGS_ROWS(ord)                                              \
    "INSERT INTO processed_messages (org_id, message_id, passed, checks,"      \
    " failed_rules, payload_sha256)"                                           \
    " SELECT i.org_id, i.message_id, i.passed, i.checks, i.failed::text[],"    \
    "  i.digest"                                                               \
    " FROM (SELECT unnest($1::text[]) AS org_id,"                              \
    "  unnest($2::text[]) AS message_id, unnest($3::boolean[]) AS passed,"     \
    "  unnest($4::integer[]) AS checks, unnest($5::text[]) AS failed,"         \
    "  unnest($6::bytea[]) AS digest" ord ") AS i"
#define SVC_INSERT_ORGS SVC_INSERT_ORGS_ROWS("")
#define SVC_PROBE_ORGS                                                         \
    "NOT EXISTS (SELECT 1 FROM processed_messages p"                           \
    "  WHERE p.org_id = i.org_id AND p.message_id = i.message_id"              \
    "  AND p.processed_at >= now() - $7::interval"                             \
    "  AND p.processed_at < $11::timestamptz)"
/* clang-format off */
static const char svc_insert_orgs_sql[] =
    "WITH c AS (SELECT poold_claim_orgs($1::text[], $2::text[], " SVC_SINCE
    ") AS free WHERE NOT coalesce(" SVC_CALM ", false)) "
    SVC_INSERT_ORGS_ROWS(", generate_subscripts($1::text[], 1) AS ord")
    " WHERE CASE WHEN " SVC_FAST " THEN true"
    " WHEN " SVC_CALM " THEN " SVC_PROBE_ORGS
    " ELSE i.ord = ANY ((SELECT free FROM c)::bigint[]) END"
    " ON CONFLICT DO NOTHING RETURNING org_id, message_id";
/* clang-format on */
static const char svc_insert_orgs_fast_sql[] =
    SVC_INSERT_ORGS SVC_FAST_WHERE " RETURNING org_id, message_id";
static const char svc_insert_orgs_probe_sql[] =
    SVC_INSERT_ORGS " WHERE " SVC_CALM " AND " SVC_PROBE_ORGS
                    " ON CONFLICT DO NOTHING RETURNING org_id, message_id";

#define SVC_IDS "ARRAY[$2::text]"
static const char svc_insert_one_sql[] =
    SVC_DEDUPE_CLAIM SVC_INSERT_ONE SVC_DEDUPE_WHERE("$2::text");
static const char svc_insert_one_fast_sql[] = SVC_INSERT_ONE SVC_FAST_WHERE;
static const char svc_insert_one_probe_sql[] =
    SVC_INSERT_ONE SVC_PROBE_WHERE("$2::text");
#undef SVC_IDS

/* The stored rows of messages not inserted: ordinal, same payload, result;
 * within the window ($4, as $7 above) or the partition now falls in (whose
 * primary key holds an id for the whole partition, which may be longer than
 * the window), the newest last (an id may be stored again once its window
 * has passed and its partition is no longer the current one). */
static const char svc_lookup_sql[] =
    "SELECT i.ord, p.payload_sha256 = i.digest, p.passed,"
    " p.checks, p.failed_rules::text"
    " FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY"
    "  AS i(message_id, digest, ord)"
    " JOIN processed_messages p"
    "  ON p.org_id = $1 AND p.message_id = i.message_id"
    "  AND p.processed_at >= least(coalesce(now() - $4::interval,"
    "   (SELECT since FROM poold_dedupe_scope())),"
    "   (SELECT max(mp.lo) FROM message_partitions mp WHERE mp.lo <= now()))"
    " ORDER BY i.ord, p.processed_at";

#define TIMESTAMPTZOID 1184
#define INTERVALOID 1186
/* Their types: the window, then four bounds (struct svc_scope_args). */
#define SVC_SCOPE_TYPES                                                        \
    INTERVALOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID

#define BOOLOID 16
#define INT4OID 23
#define BOOLARRAYOID 1000
#define BYTEAARRAYOID 1001
#define INT4ARRAYOID 1007
#define TEXTARRAYOID 1009

/* A job of the round, by org and id: the group's repeats sort next to each
 * other. */
struct svc_key {
    const char *org;
    const char *id;
    size_t len;
    size_t k;     /* position in the round's idx[] */
    size_t first; /* position in idx[] of the id's first occurrence */
};

static int svc_key_cmp_id(const struct svc_key *x, const struct svc_key *y)
{
    size_t n = x->len < y->len ? x->len : y->len;
    int c = x->org == y->org ? 0 : strcmp(x->org, y->org);

    if (c == 0)
        c = memcmp(x->id, y->id, n);
    if (c != 0 || x->len == y->len)
        return c;
    return x->len < y->len ? -1 : 1;
}

static int svc_key_cmp(const void *a, const void *b)
{
    const struct svc_key *x = a, *y = b;
    int c = svc_key_cmp_id(x, y);

    if (c != 0)
        return c;
    return x->k < y->k ? -1 : x->k > y->k;
}

static const char *svc_job_org(const struct service *svc,
                               const struct service_job *j)
{
    return j->org_id != NULL ? j->org_id : svc->org_id;
}

static bool svc_same_payload(const struct message *a, const struct message *b)
{
    return a->payload_len == b->payload_len &&
           memcmp(a->payload, b->payload, a->payload_len) == 0;
}

/* The statements of an insert: the full one and the guarded forms. */
struct svc_insert_forms {
    unsigned stmt[3]; /* by enum svc_form */
    const char *sql[3];
};

static const struct svc_insert_forms svc_insert_many_forms = {
    {SVC_STMT_COMMIT, SVC_STMT_COMMIT_PROBE, SVC_STMT_COMMIT_FAST},
    {svc_insert_many_sql, svc_insert_many_probe_sql, svc_insert_many_fast_sql}};
static const struct svc_insert_forms svc_insert_orgs_forms = {
    {SVC_STMT_COMMIT_ORGS, SVC_STMT_COMMIT_ORGS_PROBE,
     SVC_STMT_COMMIT_ORGS_FAST},
    {svc_insert_orgs_sql, svc_insert_orgs_probe_sql, svc_insert_orgs_fast_sql}};
static const struct svc_insert_forms svc_insert_one_forms = {
    {SVC_STMT_COMMIT_ONE, SVC_STMT_COMMIT_ONE_PROBE, SVC_STMT_COMMIT_ONE_FAST},
    {svc_insert_one_sql, svc_insert_one_probe_sql, svc_insert_one_fast_sql}};

/* An insert's scope parameters ($7 .. $11, into values[6..10], which point
 * into *scope) and its statement: the guarded form of the path poold's
 * clock says, or the full one (no path sure, or a second try). */
static void svc_scope_bind(struct service *svc, struct svc_scope_args *scope,
                           const char **values, struct db_query *q,
                           const struct svc_insert_forms *forms, bool full)
{
    svc_scope_args(svc, scope);
    memcpy(&values[6], scope->values, sizeof scope->values);
    if (full)
        scope->form = SVC_FORM_FULL;
    q->stmt = forms->stmt[scope->form];
    q->sql = forms->sql[scope->form];
    svc->guarded = scope->form != SVC_FORM_FULL;
}

/* Fill the five insert arrays (six with the orgs') from the first
 * occurrences among keys. */
static bool svc_insert_arrays(struct service *svc, struct service_job *jobs,
                              const size_t *idx, const struct svc_key *keys,
                              size_t n, size_t nfirst, bool orgs)
{
    struct svc_arr *a = svc->arrs;
    char failed[RULES_FAILED_LITERAL_MAX];
    int narrs = orgs ? SVC_ARRS : SVC_ARRS - 1;

    arr_begin(&a[0], TEXTOID, nfirst);
    arr_begin(&a[1], BOOLOID, nfirst);
    arr_begin(&a[2], INT4OID, nfirst);
    arr_begin(&a[3], TEXTOID, nfirst);
    arr_begin(&a[4], BYTEAOID, nfirst);
    if (orgs)
        arr_begin(&a[5], TEXTOID, nfirst);
    for (size_t s = 0; s < n; s++) {
        const struct service_job *j = &jobs[idx[keys[s].k]];
        const struct service_result *r = &j->result;
        unsigned char passed = r->passed;
        uint32_t checks = htonl(r->verdict.checks);
        size_t flen;

        if (keys[s].first != keys[s].k)
            continue;
        flen = rules_failed_literal(&r->verdict, failed, sizeof failed);
        arr_elem(&a[0], j->msg->id, j->msg->id_len);
        arr_elem(&a[1], &passed, 1);
        arr_elem(&a[2], &checks, sizeof checks);
        arr_elem(&a[3], failed, flen);
        arr_elem(&a[4], r->digest, sizeof r->digest);
        if (orgs)
            arr_elem(&a[5], keys[s].org, strlen(keys[s].org));
    }
    for (int i = 0; i < narrs; i++)
        if (a[i].oom || a[i].len > INT32_MAX)
            return false;
    return true;
}

static int svc_arr_fail(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory building the commit");
    return POOLD_ERR_NOMEM;
}

/*
 * A batch of more than 64 messages goes by COPY when poold's clock says a
 * guarded path: PostgreSQL stores COPY's rows in multi-row steps, about a third
 * less of its CPU a row than the INSERT above (docs/benchmarks.md). COPY
 * has no ON CONFLICT, so it is all or nothing and only for new ids: an id
 * stored already in this partition fails it on the primary key (23505,
 * nothing stored) and the group goes again as the INSERT. Its WHERE is the
 * guarded form's, on the server's now(): a wrong guess stores nothing. On
 * the probe path the partition before is looked at first, by a read-only
 * statement under the same guard: no writer puts a row there while the
 * guard holds (as for the probe form, the zone covers a statement's life).
 */
/* COPY takes two round trips (its start, then the data) where the INSERT
 * takes one: for batches only, larger than any group of the commit queue
 * (GC_GROUP_MAX, 64), whose chain waits on every round trip. */
#define SVC_COPY_MIN 65
#define SVC_COPY_SQL                                                           \
    "COPY processed_messages (org_id, message_id, passed, checks,"             \
    " failed_rules, payload_sha256) FROM STDIN (FORMAT binary)"                \
    " WHERE now() >= '%s' AND now() < '%s' AND now() >= '%s'"
/* One index probe per id (LIMIT keeps the lateral a nested loop: a join
 * may be planned as a hash over the whole partition before). */
static const char svc_copy_probe_sql[] =
    "SELECT now(), coalesce(now() >= $3::timestamptz"
    " AND now() < $4::timestamptz, false) AND NOT EXISTS (SELECT 1"
    " FROM unnest($1::text[], $2::text[]) AS i(org_id, message_id),"
    " LATERAL (SELECT 1 FROM processed_messages p"
    "  WHERE p.org_id = i.org_id AND p.message_id = i.message_id"
    "  AND p.processed_at >= now() - $5::interval"
    "  AND p.processed_at < $6::timestamptz LIMIT 1) AS seen)";

/* The binary COPY stream of the first occurrences among keys, in a. */
static bool svc_copy_stream(struct svc_arr *a, struct service_job *jobs,
                            const size_t *idx, const struct svc_key *keys,
                            size_t n)
{
    static const char sig[11] = "PGCOPY\n\377\r\n"; /* and its NUL */

    a->len = 0;
    a->oom = false;
    arr_put(a, sig, sizeof sig);
    arr_put32(a, 0); /* flags */
    arr_put32(a, 0); /* header extension */
    for (size_t s = 0; s < n; s++) {
        const struct service_job *j = &jobs[idx[keys[s].k]];
        const struct rules_verdict *v = &j->result.verdict;
        unsigned char passed = j->result.passed;

        if (keys[s].first != keys[s].k)
            continue;
        arr_put16(a, 6);
        arr_elem(a, keys[s].org, strlen(keys[s].org));
        arr_elem(a, j->msg->id, j->msg->id_len);
        arr_elem(a, &passed, 1);
        arr_put32(a, 4);
        arr_put32(a, v->checks);
        /* failed_rules: a text[] as array_recv reads it */
        if (v->nfailed == 0) {
            arr_put32(a, 12);
            arr_put32(a, 0); /* no dimensions: '{}' */
            arr_put32(a, 0);
            arr_put32(a, TEXTOID);
        } else {
            size_t len = 20;
            for (unsigned i = 0; i < v->nfailed; i++)
                len += 4 + strlen(rule_type_str(v->failed[i]));
            arr_put32(a, (uint32_t)len);
            arr_begin_at(a, TEXTOID, v->nfailed);
            for (unsigned i = 0; i < v->nfailed; i++) {
                const char *name = rule_type_str(v->failed[i]);
                arr_elem(a, name, strlen(name));
            }
        }
        arr_elem(a, j->result.digest, sizeof j->result.digest);
    }
    arr_put16(a, 0xffff); /* the trailer: -1 */
    return !a->oom && a->len <= INT32_MAX;
}

/* On the probe path: true in *free when the guard holds and no id of the
 * group is in the partition before, within the window; at[] the server's
 * now() it looked at, as the session prints it (the COPY must not run
 * earlier: a clock stepped back would reach back further than the look). */
static int svc_copy_probe(struct service *svc, struct service_job *jobs,
                          const size_t *idx, const struct svc_key *keys,
                          size_t n, size_t nfirst,
                          const struct svc_scope_args *scope, bool *free_,
                          char *at, size_t atlen, uint64_t deadline_ns,
                          char *err, size_t errlen)
{
    const Oid types[6] = {TEXTARRAYOID,   TEXTARRAYOID, TIMESTAMPTZOID,
                          TIMESTAMPTZOID, INTERVALOID,  TIMESTAMPTZOID};
    const char *values[6] = {NULL,
                             NULL,
                             scope->values[1],
                             scope->values[2],
                             scope->values[0],
                             scope->values[4]};
    int lengths[6] = {0};
    const int formats[6] = {1, 1, 0, 0, 0, 0};
    const struct db_query q = {.stmt = SVC_STMT_COPY_PROBE,
                               .sql = svc_copy_probe_sql,
                               .nparams = 6,
                               .types = types,
                               .values = values,
                               .lengths = lengths,
                               .formats = formats};
    struct svc_arr *orgs = &svc->arrs[5], *ids = &svc->arrs[1];
    PGresult *res;
    int rc;

    arr_begin(orgs, TEXTOID, nfirst);
    arr_begin(ids, TEXTOID, nfirst);
    for (size_t s = 0; s < n; s++) {
        const struct service_job *j = &jobs[idx[keys[s].k]];
        if (keys[s].first != keys[s].k)
            continue;
        arr_elem(orgs, keys[s].org, strlen(keys[s].org));
        arr_elem(ids, j->msg->id, j->msg->id_len);
    }
    if (orgs->oom || ids->oom || orgs->len > INT32_MAX || ids->len > INT32_MAX)
        return svc_arr_fail(err, errlen);
    values[0] = orgs->buf;
    lengths[0] = (int)orgs->len;
    values[1] = ids->buf;
    lengths[1] = (int)ids->len;
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    *free_ = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    /* Quoted into the COPY's text: a timestamp's characters only. */
    if (*free_ && (PQgetlength(res, 0, 0) >= (int)atlen ||
                   strspn(PQgetvalue(res, 0, 0), "0123456789-:. +") !=
                       (size_t)PQgetlength(res, 0, 0)))
        *free_ = false;
    if (*free_)
        snprintf(at, atlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return POOLD_OK;
}

/* The group by COPY, when its form allows: *copied when every first
 * occurrence was stored by it; else nothing was, and the INSERT goes. */
static int svc_copy_many(struct service *svc, struct service_job *jobs,
                         const size_t *idx, const struct svc_key *keys,
                         size_t n, size_t nfirst, bool *copied,
                         uint64_t deadline_ns, char *err, size_t errlen)
{
    struct svc_scope_args scope;
    char sql[sizeof SVC_COPY_SQL + 3 * SERVICE_SCOPE_TS], at[SERVICE_SCOPE_TS];
    const char *from;
    bool free_ = true;
    unsigned long long rows;
    PGresult *res;
    int rc;

    *copied = false;
    svc_scope_args(svc, &scope);
    if (scope.form == SVC_FORM_FULL)
        return POOLD_OK;
    from = scope.form == SVC_FORM_FAST ? scope.ts[2] : scope.ts[0];
    snprintf(at, sizeof at, "%s", from);
    if (scope.form == SVC_FORM_PROBE) {
        rc = svc_copy_probe(svc, jobs, idx, keys, n, nfirst, &scope, &free_, at,
                            sizeof at, deadline_ns, err, errlen);
        if (rc != POOLD_OK || !free_)
            return rc;
    }
    if (!svc_copy_stream(&svc->arrs[0], jobs, idx, keys, n))
        return svc_arr_fail(err, errlen);
    snprintf(sql, sizeof sql, SVC_COPY_SQL, from, scope.ts[1], at);
    rc = db_copy_in(svc->conn, sql, svc->arrs[0].buf, svc->arrs[0].len,
                    deadline_ns, &res, err, errlen);
    if (rc == POOLD_ERR_DB && strcmp(db_conn_sqlstate(svc->conn), "23505") == 0)
        return POOLD_OK; /* an id stored already: nothing was */
    if (rc != POOLD_OK)
        return rc;
    /* All or none: the guard is the same for every row (now() is the
     * statement's). Rows stored otherwise would be answered from the
     * lookup, as stored before: never happens, but say so. */
    rows = strtoull(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    *copied = rows == nfirst;
    if (rows != 0 && rows != nfirst)
        log_event(LOG_ERROR, "COPY stored part of a batch", "org_id",
                  svc->org_id, (const char *)NULL);
    return POOLD_OK;
}

/* Insert the group's first occurrences; inserted[k] for each idx[k] whose
 * id went in (repeats included). orgs: the jobs are of several orgs. */
static int svc_insert_many(struct service *svc, struct service_job *jobs,
                           const size_t *idx, struct svc_key *keys, size_t n,
                           bool full, bool orgs, bool *inserted,
                           uint64_t deadline_ns, char *err, size_t errlen)
{
    const Oid types[11] = {orgs ? TEXTARRAYOID : TEXTOID,
                           TEXTARRAYOID,
                           BOOLARRAYOID,
                           INT4ARRAYOID,
                           TEXTARRAYOID,
                           BYTEAARRAYOID,
                           SVC_SCOPE_TYPES};
    const char *values[11] = {keys[0].org};
    int lengths[11] = {0};
    const int formats[11] = {orgs, 1, 1, 1, 1, 1};
    struct db_query q = {.stmt = SVC_STMT_COMMIT,
                         .sql = svc_insert_many_sql,
                         .nparams = 11,
                         .types = types,
                         .values = values,
                         .lengths = lengths,
                         .formats = formats,
                         .writes = true};
    struct svc_scope_args scope;
    size_t nfirst = 0;
    PGresult *res;
    int rc;

    for (size_t s = 0; s < n; s++) {
        bool repeat = s > 0 && svc_key_cmp_id(&keys[s], &keys[s - 1]) == 0;
        keys[s].first = repeat ? keys[s - 1].first : keys[s].k;
        nfirst += !repeat;
    }
    if (!full && nfirst >= SVC_COPY_MIN) {
        bool copied;
        rc = svc_copy_many(svc, jobs, idx, keys, n, nfirst, &copied,
                           deadline_ns, err, errlen);
        if (rc != POOLD_OK)
            return rc;
        if (copied) {
            for (size_t s = 0; s < n; s++)
                inserted[keys[s].k] = true;
            return POOLD_OK;
        }
    }
    if (!svc_insert_arrays(svc, jobs, idx, keys, n, nfirst, orgs))
        return svc_arr_fail(err, errlen);
    for (int i = 0; i < SVC_ARRS - 1; i++) {
        values[i + 1] = svc->arrs[i].buf;
        lengths[i + 1] = (int)svc->arrs[i].len;
    }
    if (orgs) {
        values[0] = svc->arrs[SVC_ARRS - 1].buf;
        lengths[0] = (int)svc->arrs[SVC_ARRS - 1].len;
    }
    svc_scope_bind(svc, &scope, values, &q,
                   orgs ? &svc_insert_orgs_forms : &svc_insert_many_forms,
                   full);
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    for (int row = 0; row < PQntuples(res); row++) {
        int col = orgs; /* the orgs' form returns (org_id, message_id) */
        struct svc_key want = {orgs ? PQgetvalue(res, row, 0) : keys[0].org,
                               PQgetvalue(res, row, col),
                               (size_t)PQgetlength(res, row, col), 0, 0};
        /* The first occurrence sorts first among its id's keys. */
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (svc_key_cmp(&keys[mid], &want) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t s = lo; s < n && svc_key_cmp_id(&keys[s], &want) == 0; s++)
            inserted[keys[s].k] = true;
    }
    PQclear(res);
    return POOLD_OK;
}

/* Apply a lookup row (stored before) to its job. */
static void svc_lookup_row(struct service_job *j, const PGresult *res, int row)
{
    long checks;
    char *end, unknown[64];

    if (strcmp(PQgetvalue(res, row, 1), "t") != 0) {
        j->status = POOLD_ERR_CONFLICT;
        return;
    }
    errno = 0;
    checks = strtol(PQgetvalue(res, row, 3), &end, 10);
    if (errno != 0 || *end != '\0' || checks < 0 || checks > (long)UINT32_MAX) {
        j->status = POOLD_ERR_DB; /* stored, but unreadable: say so */
        return;
    }
    j->result.duplicate = true;
    j->result.passed = strcmp(PQgetvalue(res, row, 2), "t") == 0;
    j->result.verdict.checks = (unsigned)checks;
    if (rules_failed_parse(PQgetvalue(res, row, 4), &j->result.verdict, unknown,
                           sizeof unknown) > 0)
        log_event(LOG_WARN, "stored failed rule not understood", "rule",
                  unknown, (const char *)NULL);
    j->status = POOLD_OK;
}

/* Read the stored rows of the jobs idx[0..*n) (none was inserted); on
 * return idx[0..*n) lists those with no row yet (to go again). */
static int svc_lookup(struct service *svc, struct service_job *jobs,
                      size_t *idx, size_t *n, bool *found, uint64_t deadline_ns,
                      char *err, size_t errlen)
{
    const Oid types[4] = {TEXTOID, TEXTARRAYOID, BYTEAARRAYOID, INTERVALOID};
    const char *values[4] = {svc_job_org(svc, &jobs[idx[0]])};
    int lengths[4] = {0};
    const int formats[4] = {0, 1, 1, 0};
    const struct db_query q = {.stmt = SVC_STMT_LOOKUP,
                               .sql = svc_lookup_sql,
                               .nparams = 4,
                               .types = types,
                               .values = values,
                               .lengths = lengths,
                               .formats = formats};
    struct svc_arr *a = svc->arrs;
    struct svc_scope_args scope;
    PGresult *res;
    size_t again = 0;
    int rc;

    arr_begin(&a[0], TEXTOID, *n);
    arr_begin(&a[4], BYTEAOID, *n);
    for (size_t k = 0; k < *n; k++) {
        const struct service_job *j = &jobs[idx[k]];
        arr_elem(&a[0], j->msg->id, j->msg->id_len);
        arr_elem(&a[4], j->result.digest, sizeof j->result.digest);
    }
    if (a[0].oom || a[4].oom || a[0].len > INT32_MAX || a[4].len > INT32_MAX)
        return svc_arr_fail(err, errlen);
    values[1] = a[0].buf;
    lengths[1] = (int)a[0].len;
    values[2] = a[4].buf;
    lengths[2] = (int)a[4].len;
    svc_scope_args(svc, &scope);
    values[3] = scope.values[0];
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    if (PQnfields(res) != 5) {
        snprintf(err, errlen, "reading stored results: %d columns",
                 PQnfields(res));
        PQclear(res);
        return POOLD_ERR_DB;
    }
    memset(found, 0, *n * sizeof *found);
    for (int row = 0; row < PQntuples(res); row++) {
        long ord = strtol(PQgetvalue(res, row, 0), NULL, 10);
        if (ord >= 1 && (size_t)ord <= *n) {
            svc_lookup_row(&jobs[idx[ord - 1]], res, row);
            found[ord - 1] = true;
        }
    }
    PQclear(res);
    for (size_t k = 0; k < *n; k++)
        if (!found[k])
            idx[again++] = idx[k];
    *n = again;
    return POOLD_OK;
}

/* The one-message INSERT: *inserted from the command tag. */
static int svc_insert_one(struct service *svc, struct service_job *j, bool full,
                          bool *inserted, uint64_t deadline_ns, char *err,
                          size_t errlen)
{
    char failed[RULES_FAILED_LITERAL_MAX], checks[16];
    const struct message *m = j->msg;
    struct svc_scope_args scope;
    /* id and digest in binary format, by length: neither needs a
     * terminating NUL. */
    const char *values[11] = {svc_job_org(svc, j),
                              m->id,
                              j->result.passed ? "t" : "f",
                              checks,
                              failed,
                              (const char *)j->result.digest};
    const Oid types[11] = {TEXTOID,  TEXTOID,        0, 0, 0,
                           BYTEAOID, SVC_SCOPE_TYPES};
    const int lengths[11] = {
        0, (int)m->id_len, 0, 0, 0, (int)sizeof j->result.digest};
    const int formats[11] = {0, 1, 0, 0, 0, 1};
    struct db_query q = {.stmt = SVC_STMT_COMMIT_ONE,
                         .sql = svc_insert_one_sql,
                         .nparams = 11,
                         .types = types,
                         .values = values,
                         .lengths = lengths,
                         .formats = formats,
                         .writes = true};
    PGresult *res;
    int rc;

    snprintf(checks, sizeof checks, "%u", j->result.verdict.checks);
    rules_failed_literal(&j->result.verdict, failed, sizeof failed);
    svc_scope_bind(svc, &scope, values, &q, &svc_insert_one_forms, full);
    rc = db_run(svc->conn, &q, deadline_ns, &res, err, errlen);
    if (rc != POOLD_OK)
        return rc;
    *inserted = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    return POOLD_OK;
}

/*
 * One round for the jobs listed in idx[0..*n): insert (full: the full
 * statement, svc_scope_bind), then look up what was not inserted. On return
 * idx[0..*n) lists the jobs to go again. POOLD_OK, or a statement's error
 * (every listed job is left for the caller to fail). keys and inserted have
 * room for *n entries. orgs: jobs of several orgs, inserted with no lookup
 * (what is left goes again org by org).
 */
static int svc_commit_once(struct service *svc, struct service_job *jobs,
                           size_t *idx, size_t *n, bool full, bool orgs,
                           struct svc_key *keys, bool *inserted, bool *wrote,
                           uint64_t deadline_ns, char *err, size_t errlen)
{
    size_t rest = 0;
    int rc;

    memset(inserted, 0, *n * sizeof *inserted);
    if (*n == 1) {
        rc = svc_insert_one(svc, &jobs[idx[0]], full, &inserted[0], deadline_ns,
                            err, errlen);
    } else {
        for (size_t k = 0; k < *n; k++) {
            const struct service_job *j = &jobs[idx[k]];
            keys[k] = (struct svc_key){svc_job_org(svc, j), j->msg->id,
                                       j->msg->id_len, k, k};
        }
        qsort(keys, *n, sizeof *keys, svc_key_cmp);
        rc = svc_insert_many(svc, jobs, idx, keys, *n, full, orgs, inserted,
                             deadline_ns, err, errlen);
    }
    if (rc != POOLD_OK)
        return rc;
    for (size_t s = 0; s < *n; s++) {
        size_t k = *n == 1 ? 0 : keys[s].k;
        struct service_job *j = &jobs[idx[k]];

        if (!inserted[k])
            continue;
        if (*n == 1 || keys[s].first == k) {
            j->status = POOLD_OK; /* inserted by this statement */
        } else { /* a repeat of an id this statement inserted */
            j->result.duplicate =
                svc_same_payload(j->msg, jobs[idx[keys[s].first]].msg);
            j->status = j->result.duplicate ? POOLD_OK : POOLD_ERR_CONFLICT;
        }
    }
    for (size_t k = 0; k < *n; k++) {
        *wrote |= inserted[k];
        if (!inserted[k])
            idx[rest++] = idx[k];
    }
    *n = rest;
    if (rest == 0 || orgs)
        return POOLD_OK;
    return svc_lookup(svc, jobs, idx, n, inserted, deadline_ns, err, errlen);
}

/* A round's working arrays, on the stack for a small group. */
enum { SVC_STACK_JOBS = 16 };
struct svc_round {
    size_t *idx;
    struct svc_key *keys;
    bool *ins;
    size_t stack_idx[SVC_STACK_JOBS];
    struct svc_key stack_keys[SVC_STACK_JOBS];
    bool stack_ins[SVC_STACK_JOBS];
};

/* r's arrays for n jobs; false (and none) when out of memory. */
static bool svc_round_init(struct svc_round *r, size_t n)
{
    if (n <= SVC_STACK_JOBS) {
        r->idx = r->stack_idx;
        r->keys = r->stack_keys;
        r->ins = r->stack_ins;
        return true;
    }
    r->idx = malloc(n * sizeof *r->idx);
    r->keys = malloc(n * sizeof *r->keys);
    r->ins = malloc(n * sizeof *r->ins);
    if (r->idx != NULL && r->keys != NULL && r->ins != NULL)
        return true;
    free(r->idx);
    free(r->keys);
    free(r->ins);
    return false;
}

static void svc_round_free(struct svc_round *r)
{
    if (r->idx != r->stack_idx) {
        free(r->idx);
        free(r->keys);
        free(r->ins);
    }
}

/* Every job listed gets status rc: nothing of them was sent. */
static int svc_fail_all(struct service_job *jobs, const size_t *sel, size_t n,
                        int rc)
{
    for (size_t k = 0; k < n; k++)
        jobs[sel ? sel[k] : k].status = rc;
    return rc;
}

/* Commit the jobs of one org, jobs[sel[0..n)] (sel NULL: jobs[0..n)):
 * every job gets its own status. */
static int svc_commit(struct service *svc, struct service_job *jobs,
                      const size_t *sel, size_t n, uint64_t deadline_ns,
                      char *err, size_t errlen)
{
    struct svc_round r;
    size_t left = n;
    bool wrote = false;
    int rc = POOLD_OK;

    if (!svc_round_init(&r, n)) {
        snprintf(err, errlen, "out of memory");
        return svc_fail_all(jobs, sel, n, POOLD_ERR_NOMEM);
    }
    for (size_t k = 0; k < n; k++)
        r.idx[k] = sel ? sel[k] : k;
    /* SVC_COMMIT_TRIES full statements; a guarded try is not counted. */
    for (int t = 0, tries = SVC_COMMIT_TRIES;
         rc == POOLD_OK && left > 0 && t < tries; t++) {
        svc->guarded = false;
        rc = svc_commit_once(svc, jobs, r.idx, &left, t > 0, false, r.keys,
                             r.ins, &wrote, deadline_ns, err, errlen);
        if (svc->guarded && rc == POOLD_OK && left > 0) {
            svc_guard_missed(svc);
            tries++;
        }
    }
    if (rc == POOLD_OK && left > 0) {
        snprintf(err, errlen,
                 "storing result: row neither inserted nor "
                 "found after %d tries",
                 SVC_COMMIT_TRIES);
        rc = POOLD_ERR_DB;
    }
    svc_fail_all(jobs, r.idx, left, rc);
    svc_round_free(&r);
    /* Rows this call inserted are committed, whatever failed after them:
     * a definite failure then belongs to the jobs it left undecided (none
     * of them was written), not to the whole call, which must not read as
     * "nothing written". An unknown outcome stays the call's. */
    return rc == POOLD_ERR_DB && wrote ? POOLD_OK : rc;
}

/* An error a row causes (data, a constraint, a trigger's RAISE): SQLSTATE
 * classes 22 and 23, P0001. Not a timeout, a lock wait, a deadlock or a
 * lost connection: those are the statement's, whatever its rows. */
static bool svc_row_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
           strcmp(sqlstate, "P0001") == 0;
}

/* The first org whose jobs failed in a group of several orgs. */
struct svc_org_error {
    const char *org;
    char err[512];
};

/* Did a job of sel[0..n) (NULL: jobs[0..n)) fail? A stored duplicate of
 * another payload is an answer, not a failure. */
static bool svc_some_failed(const struct service_job *jobs, const size_t *sel,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int st = jobs[sel != NULL ? sel[i] : i].status;
        if (st != POOLD_OK && st != POOLD_ERR_CONFLICT)
            return true;
    }
    return false;
}

/* The error text the failed jobs of a group get (every failed job gets
 * the same): one org's own, or, once a second org fails, none that names
 * another org's row; each org's own error is logged then. */
static void svc_org_failed(const char *org, const char *why, size_t before,
                           struct svc_org_error *first, char *err,
                           size_t errlen)
{
    if (before == 0) {
        first->org = org;
        snprintf(first->err, sizeof first->err, "%s", why);
        snprintf(err, errlen, "%s", why);
        return;
    }
    if (before == 1)
        log_event(LOG_WARN, "commit refused an org's rows", "org", first->org,
                  "error", first->err, (const char *)NULL);
    log_event(LOG_WARN, "commit refused an org's rows", "org", org, "error",
              why, (const char *)NULL);
    snprintf(err, errlen,
             "the database refused the rows of %zu orgs of one commit "
             "(each org's error is logged)",
             before + 1);
}

/*
 * Jobs of several orgs (a group of the shared commit queue): one statement
 * for all of them, in the form poold's clock says. What it leaves goes
 * again org by org with svc_commit() (a duplicate, to be looked up; a guard
 * that missed), and so does every job when a row's error failed the
 * statement (nothing written: one org's bad row must not fail the others'
 * messages). Any other failure is every job's, as for a group of one org.
 */
static int svc_commit_orgs(struct service *svc, struct service_job *jobs,
                           size_t n, uint64_t deadline_ns, char *err,
                           size_t errlen)
{
    struct svc_round r;
    struct svc_org_error first;
    char one[sizeof first.err];
    size_t left = n, failed = 0;
    bool wrote = false;
    int rc, worst = POOLD_OK;

    if (!svc_round_init(&r, n)) {
        snprintf(err, errlen, "out of memory");
        return svc_fail_all(jobs, NULL, n, POOLD_ERR_NOMEM);
    }
    for (size_t k = 0; k < n; k++)
        r.idx[k] = k;
    svc->guarded = false;
    rc = svc_commit_once(svc, jobs, r.idx, &left, false, true, r.keys, r.ins,
                         &wrote, deadline_ns, err, errlen);
    if (rc != POOLD_OK &&
        !(rc == POOLD_ERR_DB && svc_row_error(db_conn_sqlstate(svc->conn)))) {
        svc_round_free(&r);
        return svc_fail_all(jobs, NULL, n, rc);
    }
    /* Group what is left by org (svc_commit_once kept idx in order). The
     * statement's error may quote one org's row: no failed job gets it. */
    err[0] = '\0';
    for (size_t a = 0, b; a < left; a = b) {
        const char *org = svc_job_org(svc, &jobs[r.idx[a]]);
        size_t run = a;

        for (b = a; b < left; b++)
            if (strcmp(svc_job_org(svc, &jobs[r.idx[b]]), org) == 0) {
                size_t t = r.idx[b];
                memmove(&r.idx[run + 1], &r.idx[run],
                        (b - run) * sizeof *r.idx);
                r.idx[run++] = t;
            }
        b = run;
        snprintf(one, sizeof one, "a stored row could not be read back");
        rc = svc_commit(svc, jobs, &r.idx[a], b - a, deadline_ns, one,
                        sizeof one);
        if (rc == POOLD_OK)
            wrote = true;
        else if (worst == POOLD_OK || worst == POOLD_ERR_DB)
            worst = rc;
        if (svc_some_failed(jobs, &r.idx[a], b - a))
            svc_org_failed(org, one, failed++, &first, err, errlen);
    }
    svc_round_free(&r);
    return worst == POOLD_ERR_DB && wrote ? POOLD_OK : worst;
}

int service_commit_many(struct service *svc, struct service_job *jobs, size_t n,
                        uint64_t deadline_ns, char *err, size_t errlen)
{
    int rc;

    bool orgs = false;

    if (n == 0)
        return POOLD_OK;
    for (size_t k = 1; k < n && !orgs; k++)
        orgs = jobs[k].org_id != jobs[0].org_id &&
               strcmp(svc_job_org(svc, &jobs[k]), svc_job_org(svc, jobs)) != 0;
    rc = orgs ? svc_commit_orgs(svc, jobs, n, deadline_ns, err, errlen)
              : svc_commit(svc, jobs, NULL, n, deadline_ns, err, errlen);
    /* Every failed job gets err: a conflict's text (one message's id,
     * maybe another org's) only when none failed. */
    if (rc != POOLD_OK || svc_some_failed(jobs, NULL, n))
        return rc;
    for (size_t k = 0; k < n; k++)
        if (jobs[k].status == POOLD_ERR_CONFLICT) {
            const struct message *m = jobs[k].msg;
            snprintf(err, errlen,
                     "message id %.*s was processed with another payload",
                     (int)(m->id_len > 128 ? 128 : m->id_len), m->id);
        }
    return rc;
}
