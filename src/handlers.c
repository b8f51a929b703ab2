/* handlers.c — HTTP handlers: parse, validate, act on the registry, render. */
#include "handlers.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "admin_api.h"
#include "clock.h"
#include "cluster.h"
#include "dashboard.h"
#include "handlers_internal.h"
#include "messages_api.h"
#include "metrics.h"
#include "registry.h"
#include "rules.h"
#include "service.h"
#include "tenants.h"

#define MESSAGE_ID_MAX 128
#define ROUTE_PROCESS "POST /process"             /* a holder's route */
#define ROUTE_PROCESS_BATCH "POST /process/batch" /* a batch holder's route */
#define HANDLERS_MAX_BATCH_DEFAULT 1000 /* POOLD_MAX_BATCH's default */
#define RETRY_AFTER_MAX_S ((uint64_t)86400)

struct handlers {
    struct handlers_config cfg;
    atomic_bool draining;
};

static const char json_content_type[] = "application/json";

/* ---- the status-to-HTTP table -------------------------------------------- */

/* One row per status: everything the answer says about it, Retry-After
 * included. Messages are for any route that can fail with the status;
 * route-specific text (naming a field) belongs to the handler. */
static const struct status_http {
    int status;
    unsigned http;
    const char *code;
    const char *message;
    bool retry_after; /* send Retry-After (handlers_config.retry_after_s) */
} status_table[] = {
    {POOLD_ERR_TIMEOUT, 503, "pool_exhausted",
     "no processing service became free in time; retry later", true},
    {POOLD_ERR_WAITERS_FULL, 503, "pool_exhausted",
     "too many requests are waiting for this org; retry later", true},
    {POOLD_ERR_DB, 503, "database_unavailable",
     "the database is unavailable; nothing was written", false},
    {POOLD_ERR_NOT_READY, 503, "database_unavailable",
     "the org directory is not loaded yet: the database is unavailable", false},
    {POOLD_ERR_CREATE, 503, "database_unavailable",
     "a processing service could not be built; nothing was written", false},
    {POOLD_ERR_SHUTDOWN, 503, "shutting_down",
     "the server is shutting down; nothing was written", false},
    {POOLD_ERR_UNKNOWN_ORG, 404, "unknown_org",
     "no such org, or the org is disabled", false},
    {POOLD_ERR_NOT_FOUND, 404, "unknown_org",
     "no such org, or the org is disabled", false},
    {POOLD_ERR_MISCONFIGURED, 503, "org_misconfigured",
     "the org's configuration is invalid; nothing was written", false},
    {POOLD_ERR_CONFLICT, 409, "id_conflict",
     "this message id was already processed with another payload", false},
    {POOLD_ERR_COMMIT_UNKNOWN, 504, "commit_unknown",
     "the database stopped answering after the write was sent: it may or "
     "may not be committed; retrying the same id and payload is safe",
     false},
    {POOLD_ERR_INVALID, 400, "invalid_message",
     "a value in the request is out of range", false},
    {POOLD_ERR_PAUSED, 503, "org_paused",
     "the org is paused by an operator; nothing was written", true},
};

/* NOMEM or a status no layer documents: the server's fault. */
static const struct status_http status_internal = {0, 500, "internal_error",
                                                   "internal error", false};

static const struct status_http *status_find(int status)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].status == status)
            return &status_table[i];
    return &status_internal;
}

void handlers_status_http(int status, unsigned *http, const char **code,
                          const char **message)
{
    const struct status_http *row = status_find(status);
    *http = row->http;
    *code = row->code;
    *message = row->message;
}

/* ---- rendering ------------------------------------------------------------
 */

/* Serialise and take ownership of root; on failure a bare 500. */
static void render_json(struct http_response *resp, unsigned status,
                        json_t *root)
{
    size_t n = root ? json_dumpb(root, NULL, 0, JSON_COMPACT) : 0;
    char *buf = n ? malloc(n + 1) : NULL;

    if (buf != NULL && json_dumpb(root, buf, n, JSON_COMPACT) == n) {
        buf[n] = '\n';
        free(resp->body);
        resp->body = buf;
        resp->body_len = n + 1;
        resp->status = status;
    } else {
        free(buf);
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
        resp->status = 500;
        resp->error_code = "internal_error";
    }
    resp->content_type = json_content_type;
    json_decref(root);
}

void handlers_error(struct http_response *resp, unsigned status,
                    const char *code, const char *message)
{
    json_t *body =
        json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);

    /* A message quoting client bytes (jansson's "near '...'") may not be
     * valid UTF-8: fall back to a fixed text rather than fail. */
    if (body == NULL)
        body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
                         "the request was rejected");
    resp->error_code = code;
    render_json(resp, status, body);
}

static void error_for_status(struct handlers *h, struct http_response *resp,
                             int status)
{
    const struct status_http *row = status_find(status);

    handlers_error(resp, row->http, row->code, row->message);
    if (h != NULL && row->retry_after)
        resp->retry_after_s = status == POOLD_ERR_PAUSED
                                  ? h->cfg.paused_retry_after_s
                                  : h->cfg.retry_after_s;
}

static json_t *stats_json(const struct pool_stats *s)
{
    json_t *by = json_object();
    json_t *o;

    for (int r = 0; by && r < POOL_DESTROY__COUNT; r++)
        json_object_set_new(
            by, pool_destroy_reason_str((enum pool_destroy_reason)r),
            json_integer((json_int_t)s->destroyed_by[r]));
    o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o?,s:I,s:I,"
        "s:I,s:I,s:I}",
        "max_size", (json_int_t)s->max_size, "idle", (json_int_t)s->idle,
        "active", (json_int_t)s->active, "waiting", (json_int_t)s->waiting,
        "total_timeouts", (json_int_t)s->total_timeouts, "waiters_rejected",
        (json_int_t)s->waiters_rejected, "peak_active",
        (json_int_t)s->peak_active, "created", (json_int_t)s->created,
        "create_failures", (json_int_t)s->create_failures, "destroyed",
        (json_int_t)s->destroyed, "destroyed_by", by, "acquired",
        (json_int_t)s->acquired, "wait_count", (json_int_t)s->wait_count,
        "wait_ns_sum", (json_int_t)s->wait_ns_sum, "group_commits",
        (json_int_t)s->group_commits, "group_messages",
        (json_int_t)s->group_messages);
    if (o != NULL) {
        json_t *hist = json_array();
        for (int i = 0; hist && i < POOL_WAIT_BUCKETS; i++)
            json_array_append_new(hist,
                                  json_integer((json_int_t)s->wait_hist[i]));
        json_object_set_new(o, "held_too_long",
                            json_integer((json_int_t)s->held_too_long));
        json_object_set_new(o, "wait_hist", hist ? hist : json_array());
    }
    return o;
}

static void sum_refused(void *arg, const char *org_id, uint64_t refused)
{
    (void)org_id;
    *(uint64_t *)arg += refused;
}

/* The stats object with "rate_limited": requests of org_id refused by its
 * rate limit (NULL: all orgs; "": none, for the connection pool). */
static json_t *stats_with_limits(struct handlers *h, const struct pool_stats *s,
                                 const char *org_id)
{
    json_t *o = stats_json(s);
    uint64_t refused = 0;

    if (h->cfg.tenants != NULL && org_id == NULL)
        ratelimit_table_foreach(tenants_limits(h->cfg.tenants), sum_refused,
                                &refused);
    else if (h->cfg.tenants != NULL && org_id[0] != '\0')
        refused =
            ratelimit_table_refused(tenants_limits(h->cfg.tenants), org_id);
    if (o != NULL)
        json_object_set_new(o, "rate_limited",
                            json_integer((json_int_t)refused));
    return o;
}

/* ---- parsing and validation ------------------------------------------------
 */

/* "application/json", optionally followed by parameters such as charset. */
static bool content_type_is_json(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = strlen(want);

    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Parse the body strictly into an object; false after filling resp. */
static bool parse_json_body(const struct http_request *req,
                            struct http_response *resp, json_t **out)
{
    json_error_t jerr;
    char msg[JSON_ERROR_TEXT_LENGTH + 64];
    json_t *root;

    if (req->content_type != NULL && !content_type_is_json(req->content_type)) {
        handlers_error(resp, 415, "unsupported_media_type",
                       "Content-Type must be application/json");
        return false;
    }
    root = json_loadb(req->body ? req->body : "", req->body_len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        snprintf(msg, sizeof msg, "invalid JSON at byte %d: %s", jerr.position,
                 jerr.text);
        handlers_error(resp, 400, "invalid_json", msg);
        return false;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        handlers_error(resp, 400, "invalid_json",
                       "the body must be a JSON object");
        return false;
    }
    *out = root;
    return true;
}

/* No C0 control, DEL or C1 control (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
static bool has_control_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

static bool valid_org_param(const struct http_request *req,
                            struct http_response *resp)
{
    if (req->param == NULL || !orgid_is_valid(req->param, req->param_len)) {
        handlers_error(resp, 400, "invalid_org_id",
                       "org_id in the path must match ^[A-Za-z0-9_-]{1,64}$");
        return false;
    }
    snprintf(resp->org, sizeof resp->org, "%s", req->param);
    return true;
}

struct process_request {
    const char *id, *org_id, *payload; /* borrowed from root */
    size_t id_len, org_id_len, payload_len;
};

/* The member path of a field for messages: "id", or "messages[3].id". */
static void member_name(char *buf, size_t len, long index, const char *field)
{
    if (index < 0)
        snprintf(buf, len, "%s", field);
    else
        snprintf(buf, len, "messages[%ld].%s", index, field);
}

/* A message's id member (index -1: a single message's). */
static bool validate_id(json_t *obj, long index, struct process_request *p,
                        struct http_response *resp)
{
    json_t *id = json_object_get(obj, "id");
    char name[48], msg[160];

    member_name(name, sizeof name, index, "id");
    if (!json_is_string(id)) {
        snprintf(msg, sizeof msg,
                 "field '%s' is required and must be a "
                 "string",
                 name);
        handlers_error(resp, 400, "invalid_message", msg);
        return false;
    }
    p->id = json_string_value(id);
    p->id_len = json_string_length(id);
    if (p->id_len < 1 || p->id_len > MESSAGE_ID_MAX ||
        has_control_chars(p->id, p->id_len)) {
        snprintf(msg, sizeof msg,
                 "field '%s' must be 1-128 bytes without "
                 "control characters",
                 name);
        handlers_error(resp, 400, "invalid_message", msg);
        return false;
    }
    return true;
}

static bool validate_payload(json_t *obj, long index, struct process_request *p,
                             struct http_response *resp)
{
    json_t *payload = json_object_get(obj, "payload");
    char name[48], msg[160];

    if (!json_is_string(payload)) {
        member_name(name, sizeof name, index, "payload");
        snprintf(msg, sizeof msg,
                 "field '%s' is required and must be a "
                 "string",
                 name);
        handlers_error(resp, 400, "invalid_message", msg);
        return false;
    }
    p->payload = json_string_value(payload);
    p->payload_len = json_string_length(payload);
    return true;
}

/* The org_id member of a body: a valid org id, kept in p and resp. */
static bool validate_org(json_t *root, struct process_request *p,
                         struct http_response *resp)
{
    json_t *org = json_object_get(root, "org_id");

    if (!json_is_string(org) ||
        !orgid_is_valid(json_string_value(org), json_string_length(org))) {
        handlers_error(resp, 400, "invalid_org_id",
                       "field 'org_id' must be a string matching "
                       "^[A-Za-z0-9_-]{1,64}$");
        return false;
    }
    p->org_id = json_string_value(org);
    p->org_id_len = json_string_length(org);
    snprintf(resp->org, sizeof resp->org, "%s", p->org_id);
    return true;
}

static bool validate_message(json_t *root, struct process_request *p,
                             struct http_response *resp)
{
    return validate_id(root, -1, p, resp) && validate_org(root, p, resp) &&
           validate_payload(root, -1, p, resp);
}

/* ---- handlers
 * ---------------------------------------------------------------- */

static json_t *result_json(const struct process_request *p,
                           const struct service_result *r)
{
    json_t *failed = json_array();

    for (unsigned i = 0; failed && i < r->verdict.nfailed && i < RULES_MAX; i++)
        json_array_append_new(failed,
                              json_string(rule_type_str(r->verdict.failed[i])));
    return json_pack("{s:s%,s:s%,s:b,s:{s:I,s:o?},s:b}", "org_id", p->org_id,
                     p->org_id_len, "message_id", p->id, p->id_len, "passed",
                     (int)r->passed, "details", "checks",
                     (json_int_t)r->verdict.checks, "failed", failed,
                     "duplicate", (int)r->duplicate);
}

static void handle_process(struct handlers *h, const struct http_request *req,
                           struct http_response *resp)
{
    json_t *root = NULL;
    struct process_request p = {0};
    struct service_result result;
    struct message msg;
    int rc;

    if (!parse_json_body(req, resp, &root))
        return;
    if (!validate_message(root, &p, resp) ||
        !handlers_client_admit(h, req, p.org_id, 1, resp))
        goto out;
    msg.id = p.id;
    msg.id_len = p.id_len;
    msg.payload = p.payload;
    msg.payload_len = p.payload_len;
    msg.request_id = req->request_id;
    msg.route = ROUTE_PROCESS;
    memset(&result, 0, sizeof result);
    rc = registry_process(h->cfg.reg, p.org_id, &msg, &result, resp->detail,
                          sizeof resp->detail);
    if (rc != POOLD_OK)
        error_for_status(h, resp, rc);
    else
        render_json(resp, 200, result_json(&p, &result));
out:
    json_decref(root);
}

/* An org pool's stats and whether the org is paused (operators). */
static json_t *org_stats_json(struct handlers *h, const struct pool_stats *st,
                              const char *org_id)
{
    json_t *o = stats_with_limits(h, st, org_id);
    bool paused = false;

    if (o != NULL &&
        registry_is_paused(h->cfg.reg, org_id, &paused) == POOLD_OK)
        json_object_set_new(o, "paused", json_boolean(paused));
    return o;
}

/* ---- POST /process/batch ------------------------------------------------ */

struct batch {
    size_t n;
    struct process_request *req; /* borrowed strings from the body */
    struct message *msgs;
    struct service_job *jobs;
};

static void batch_free(struct batch *b)
{
    free(b->req);
    free(b->msgs);
    free(b->jobs);
}

/* messages[i]: an object with a valid id and payload, and, if it names an
 * org, the batch's. */
static bool validate_entry(json_t *m, long i, const struct process_request *top,
                           struct process_request *p,
                           struct http_response *resp)
{
    json_t *org = json_object_get(m, "org_id");
    char msg[160];

    if (!json_is_object(m)) {
        snprintf(msg, sizeof msg, "field 'messages[%ld]' must be an object", i);
        handlers_error(resp, 400, "invalid_message", msg);
        return false;
    }
    if (!validate_id(m, i, p, resp))
        return false;
    if (org != NULL &&
        (!json_is_string(org) || json_string_length(org) != top->org_id_len ||
         memcmp(json_string_value(org), top->org_id, top->org_id_len) != 0)) {
        snprintf(msg, sizeof msg,
                 "field 'messages[%ld].org_id' must equal "
                 "the batch's org_id",
                 i);
        handlers_error(resp, 400, "invalid_org_id", msg);
        return false;
    }
    p->org_id = top->org_id;
    p->org_id_len = top->org_id_len;
    return validate_payload(m, i, p, resp);
}

/* Every message carries the batch request's id and route (its holder). */
static bool validate_batch(struct handlers *h, const struct http_request *req,
                           json_t *root, struct batch *b,
                           struct process_request *top,
                           struct http_response *resp)
{
    json_t *list = json_object_get(root, "messages");
    char msg[160];

    if (!validate_org(root, top, resp))
        return false;
    if (!json_is_array(list) || json_array_size(list) < 1 ||
        json_array_size(list) > h->cfg.max_batch) {
        snprintf(msg, sizeof msg,
                 "field 'messages' must be an array of 1 "
                 "to %u messages",
                 h->cfg.max_batch);
        handlers_error(resp, 400, "invalid_message", msg);
        return false;
    }
    b->n = json_array_size(list);
    b->req = calloc(b->n, sizeof *b->req);
    b->msgs = calloc(b->n, sizeof *b->msgs);
    b->jobs = calloc(b->n, sizeof *b->jobs);
    if (b->req == NULL || b->msgs == NULL || b->jobs == NULL) {
        error_for_status(h, resp, POOLD_ERR_NOMEM);
        return false;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct process_request *p = &b->req[i];
        if (!validate_entry(json_array_get(list, i), (long)i, top, p, resp))
            return false;
        b->msgs[i] = (struct message){.id = p->id,
                                      .id_len = p->id_len,
                                      .payload = p->payload,
                                      .payload_len = p->payload_len,
                                      .request_id = req->request_id,
                                      .route = ROUTE_PROCESS_BATCH};
        b->jobs[i].msg = &b->msgs[i];
    }
    return true;
}

static json_t *batch_entry_json(struct handlers *h,
                                const struct process_request *p,
                                const struct service_job *j)
{
    unsigned http;
    const char *code, *message;

    if (j->status == POOLD_OK)
        return result_json(p, &j->result);
    (void)h;
    handlers_status_http(j->status, &http, &code, &message);
    return json_pack("{s:s%,s:{s:s,s:s}}", "message_id", p->id, p->id_len,
                     "error", "code", code, "message", message);
}

static void handle_process_batch(struct handlers *h,
                                 const struct http_request *req,
                                 struct http_response *resp)
{
    json_t *root = NULL, *results;
    struct process_request top = {0};
    struct batch b = {0};
    int rc;

    if (!parse_json_body(req, resp, &root))
        return;
    if (!validate_batch(h, req, root, &b, &top, resp) ||
        !handlers_client_admit(h, req, top.org_id, (unsigned)b.n, resp))
        goto out;
    rc = registry_process_batch(h->cfg.reg, top.org_id, b.jobs, b.n,
                                resp->detail, sizeof resp->detail);
    if (rc != POOLD_OK) {
        error_for_status(h, resp, rc);
        goto out;
    }
    results = json_array();
    for (size_t i = 0; results && i < b.n; i++)
        if (json_array_append_new(results,
                                  batch_entry_json(h, &b.req[i], &b.jobs[i])))
            break; /* out of memory: render_json answers 500 */
    render_json(resp, 200,
                json_pack("{s:s%,s:o?}", "org_id", top.org_id, top.org_id_len,
                          "results", results));
out:
    batch_free(&b);
    json_decref(root);
}

/* Every org pool's stats, sorted by org_id (freed by the caller in any
 * case). */
static int snapshot_pools(struct handlers *h, struct pool_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    registry_foreach_pool(h->cfg.reg, metrics_snapshot_add, snap);
    return metrics_snapshot_sort(snap);
}

static void handle_stats(struct handlers *h, const struct http_request *req,
                         struct http_response *resp)
{
    struct pool_snapshot snap;
    struct pool_stats totals, conn;
    json_t *pools = json_object();

    (void)req;
    memset(&totals, 0, sizeof totals);
    if (snapshot_pools(h, &snap) != POOLD_OK) {
        metrics_snapshot_free(&snap);
        json_decref(pools);
        error_for_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    for (size_t i = 0; pools && i < snap.n; i++) {
        json_object_set_new(
            pools, snap.v[i].org_id,
            org_stats_json(h, &snap.v[i].stats, snap.v[i].org_id));
        metrics_stats_add(&totals, &snap.v[i].stats);
    }
    metrics_snapshot_free(&snap);
    registry_conn_stats(h->cfg.reg, &conn);
    render_json(resp, 200,
                json_pack("{s:o?,s:o?,s:o?}", "pools", pools, "totals",
                          stats_with_limits(h, &totals, NULL), "connections",
                          stats_with_limits(h, &conn, "")));
}

static void handle_pool_get(struct handlers *h, const struct http_request *req,
                            struct http_response *resp)
{
    struct pool_stats st;
    int rc;

    if (!valid_org_param(req, resp))
        return;
    memset(&st, 0, sizeof st);
    rc = registry_pool_stats(h->cfg.reg, resp->org, &st);
    if (rc != POOLD_OK)
        error_for_status(h, resp, rc);
    else
        render_json(resp, 200, org_stats_json(h, &st, resp->org));
}

/* {"max_size": N}, N a JSON integer in 1..ceiling. */
static bool validate_size(struct handlers *h, json_t *root, unsigned *size,
                          struct http_response *resp)
{
    json_t *v = json_object_get(root, "max_size");
    char msg[128];
    json_int_t n;

    snprintf(msg, sizeof msg,
             "field 'max_size' must be an integer from 1 to %u",
             h->cfg.pool_ceiling);
    if (!json_is_integer(v)) {
        handlers_error(resp, 400, "invalid_size", msg);
        return false;
    }
    n = json_integer_value(v);
    if (n < 1 || n > (json_int_t)h->cfg.pool_ceiling) {
        handlers_error(resp, 400, "invalid_size", msg);
        return false;
    }
    *size = (unsigned)n;
    return true;
}

static void handle_pool_resize(struct handlers *h,
                               const struct http_request *req,
                               struct http_response *resp)
{
    json_t *root = NULL;
    struct pool_stats st;
    unsigned size;
    int rc;

    if (!valid_org_param(req, resp) || !parse_json_body(req, resp, &root))
        return;
    if (validate_size(h, root, &size, resp)) {
        memset(&st, 0, sizeof st);
        struct audit_actor actor = {req->scope, req->client_address,
                                    req->request_id};
        rc = registry_resize_by(h->cfg.reg, resp->org, size, &actor, &st,
                                resp->detail, sizeof resp->detail);
        if (rc == POOLD_ERR_INVALID) /* the detail names max_size */
            handlers_error(resp, 400, "invalid_size", resp->detail);
        else if (rc == POOLD_ERR_DB)
            handlers_error(resp, 503, "database_unavailable",
                           "the database did not answer: the new size may or "
                           "may not be stored; retrying is safe");
        else if (rc != POOLD_OK)
            error_for_status(h, resp, rc);
        else
            render_json(resp, 200, stats_with_limits(h, &st, resp->org));
    }
    json_decref(root);
}

struct text_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void
buf_printf(struct text_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void limit_line(void *arg, const char *org_id, uint64_t refused)
{
    buf_printf(arg, "poold_rate_limited_total{org=\"%s\"} %llu\n", org_id,
               (unsigned long long)refused);
}

/* Append the per-org rate-limit refusals to the rendered metrics. */
static bool metrics_append_limits(struct handlers *h, char **text, size_t *len)
{
    struct text_buf b = {*text, *len, *len, false};

    buf_printf(&b, "# HELP poold_rate_limited_total Requests refused by "
                   "the org's rate limit (429).\n"
                   "# TYPE poold_rate_limited_total counter\n");
    ratelimit_table_foreach(tenants_limits(h->cfg.tenants), limit_line, &b);
    *text = b.p;
    *len = b.len;
    return !b.oom;
}

static void handle_metrics(struct handlers *h, const struct http_request *req,
                           struct http_response *resp)
{
    struct pool_snapshot snap;
    struct metrics_view view = {.pools = &snap};
    char *text = NULL;
    size_t len = 0;
    int rc = snapshot_pools(h, &snap);

    (void)req;
    registry_conn_stats(h->cfg.reg, &view.conn);
    view.ready = registry_is_ready(h->cfg.reg);
    if (rc == POOLD_OK)
        rc = metrics_render(h->cfg.metrics, &view, &text, &len);
    metrics_snapshot_free(&snap);
    if (rc != POOLD_OK) {
        error_for_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    if (h->cfg.tenants != NULL && !metrics_append_limits(h, &text, &len)) {
        free(text);
        error_for_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    free(resp->body);
    resp->body = text;
    resp->body_len = len;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

static void handle_healthz(struct handlers *h, const struct http_request *req,
                           struct http_response *resp)
{
    (void)h;
    (void)req;
    render_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(struct handlers *h, const struct http_request *req,
                          struct http_response *resp)
{
    (void)req;
    if (handlers_is_draining(h))
        error_for_status(h, resp, POOLD_ERR_SHUTDOWN);
    else if (!registry_is_ready(h->cfg.reg))
        handlers_error(resp, 503, "database_unavailable",
                       "the database does not answer or the org directory "
                       "is not loaded yet");
    else
        render_json(resp, 200, json_pack("{s:s}", "status", "ready"));
}

/* ---- operators: drain, pause, resume, holders, dashboard (issue 13) ---- */

/* Who asks, for the audit entry of drain, pause and resume. */
static struct audit_actor operator_actor(const struct http_request *req)
{
    struct audit_actor actor = {req->scope, req->client_address,
                                req->request_id};
    return actor;
}

static void handle_pool_drain(struct handlers *h,
                              const struct http_request *req,
                              struct http_response *resp)
{
    struct pool_stats after;
    struct audit_actor actor = operator_actor(req);
    int rc;

    if (!valid_org_param(req, resp))
        return;
    memset(&after, 0, sizeof after);
    rc = registry_drain(h->cfg.reg, resp->org, &actor, &after, resp->detail,
                        sizeof resp->detail);
    if (rc != POOLD_OK)
        error_for_status(h, resp, rc);
    else
        render_json(resp, 200, org_stats_json(h, &after, resp->org));
}

/* POST .../pause and .../resume: 200 {"org_id", "paused"}; the change and
 * its audit entry commit together. */
static void set_paused(struct handlers *h, const struct http_request *req,
                       struct http_response *resp, bool paused)
{
    struct audit_actor actor = operator_actor(req);
    int rc;

    if (!valid_org_param(req, resp))
        return;
    rc = registry_set_paused(h->cfg.reg, resp->org, paused, &actor,
                             resp->detail, sizeof resp->detail);
    if (rc == POOLD_ERR_DB)
        handlers_error(resp, 503, "database_unavailable",
                       "the database did not answer: the pause may or may "
                       "not be stored; retrying is safe");
    else if (rc != POOLD_OK)
        error_for_status(h, resp, rc);
    else
        render_json(
            resp, 200,
            json_pack("{s:s,s:b}", "org_id", resp->org, "paused", (int)paused));
}

static void handle_pool_pause(struct handlers *h,
                              const struct http_request *req,
                              struct http_response *resp)
{
    set_paused(h, req, resp, true);
}

static void handle_pool_resume(struct handlers *h,
                               const struct http_request *req,
                               struct http_response *resp)
{
    set_paused(h, req, resp, false);
}

static void handle_pool_holders(struct handlers *h,
                                const struct http_request *req,
                                struct http_response *resp)
{
    struct holder_info *v = NULL;
    size_t n = 0;
    json_t *list;
    int rc;

    if (!valid_org_param(req, resp))
        return;
    rc = registry_holders(h->cfg.reg, resp->org, &v, &n);
    if (rc != POOLD_OK) {
        error_for_status(h, resp, rc);
        return;
    }
    list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(
            list, json_pack("{s:s,s:s,s:I}", "request_id", v[i].request_id,
                            "route", v[i].route, "held_ms",
                            (json_int_t)(v[i].held_ns / 1000000)));
    free(v);
    render_json(resp, 200, json_pack("{s:o?}", "holders", list));
}

/* Everything the page loads is its own: no inline code, nothing from
 * elsewhere, not framed. */
static const char dashboard_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

static void serve_asset(struct http_response *resp, const char *name)
{
    const struct dashboard_asset *a = dashboard_asset_find(name);
    char *copy;

    if (a == NULL) {
        handlers_error(resp, 404, "not_found", "no such route");
        return;
    }
    copy = malloc(a->len ? a->len : 1);
    if (copy == NULL) {
        error_for_status(NULL, resp, POOLD_ERR_NOMEM);
        return;
    }
    memcpy(copy, a->data, a->len);
    free(resp->body);
    resp->body = copy;
    resp->body_len = a->len;
    resp->status = 200;
    resp->content_type = a->content_type;
    resp->csp = dashboard_csp;
}

static void handle_dashboard(struct handlers *h, const struct http_request *req,
                             struct http_response *resp)
{
    (void)h;
    (void)req;
    serve_asset(resp, "index.html");
}

static void handle_dashboard_asset(struct handlers *h,
                                   const struct http_request *req,
                                   struct http_response *resp)
{
    char name[DASHBOARD_NAME_MAX + 1];

    (void)h;
    snprintf(name, sizeof name, "%.*s", (int)req->param_len, req->param);
    if (strcmp(name, "index.html") == 0 || req->param_len > DASHBOARD_NAME_MAX)
        name[0] = '\0'; /* the page itself is /dashboard */
    serve_asset(resp, name);
}

/* GET /cluster: the live replicas, their shares and open connections. */
static void handle_cluster(struct handlers *h, const struct http_request *req,
                           struct http_response *resp)
{
    struct cluster_replica *view = calloc(CLUSTER_MAX_REPLICAS, sizeof *view);
    json_t *list = json_array();
    size_t n = 0;

    (void)req;
    if (h->cfg.cluster == NULL || view == NULL || list == NULL) {
        free(view);
        json_decref(list);
        error_for_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    n = cluster_snapshot(h->cfg.cluster, view, CLUSTER_MAX_REPLICAS);
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(
            list, json_pack("{s:s,s:I,s:I,s:I,s:I,s:s,s:b}", "id", view[i].id,
                            "share", (json_int_t)view[i].share, "granted",
                            (json_int_t)view[i].granted, "open_connections",
                            (json_int_t)view[i].open_connections, "waiting",
                            (json_int_t)view[i].waiting, "heartbeat_at",
                            view[i].heartbeat_at, "self", (int)view[i].self));
    free(view);
    render_json(resp, 200, json_pack("{s:o?}", "replicas", list));
}

const struct route handlers_routes[] = {
    {"POST", "/process", handle_process, false, true},
    {"GET", "/stats", handle_stats, true, false},
    {"GET", "/pools/{org_id}", handle_pool_get, true, false},
    {"PUT", "/pools/{org_id}/size", handle_pool_resize, true, false},
    {"GET", "/metrics", handle_metrics, true, false},
    {"GET", "/healthz", handle_healthz, false, false},
    {"GET", "/readyz", handle_readyz, false, false},
    {"GET", "/orgs", admin_api_org_list, true, false},
    {"GET", "/orgs/{org_id}", admin_api_org_get, true, false},
    {"PUT", "/orgs/{org_id}", admin_api_org_put, true, false},
    {"DELETE", "/orgs/{org_id}", admin_api_org_delete, true, false},
    {"POST", "/orgs/{org_id}/keys", admin_api_key_create, true, false},
    {"GET", "/orgs/{org_id}/keys", admin_api_key_list, true, false},
    {"DELETE", "/orgs/{org_id}/keys/{key_id}", admin_api_key_revoke, true,
     false},
    {"GET", "/audit", admin_api_audit, true, false},
    {"POST", "/pools/{org_id}/drain", handle_pool_drain, true, false},
    {"POST", "/pools/{org_id}/pause", handle_pool_pause, true, false},
    {"POST", "/pools/{org_id}/resume", handle_pool_resume, true, false},
    {"GET", "/pools/{org_id}/holders", handle_pool_holders, true, false},
    {"GET", "/dashboard", handle_dashboard, false, false},
    {"GET", "/dashboard/{asset}", handle_dashboard_asset, false, false},
    {"POST", "/process/batch", handle_process_batch, false, true},
    {"GET", "/cluster", handle_cluster, true, false},
    {"GET", "/orgs/{org_id}/messages/{message_id*}", messages_api_get, false,
     false},
};
const size_t handlers_nroutes =
    sizeof handlers_routes / sizeof handlers_routes[0];

/* ---- authentication and the entry point ------------------------------------
 */

bool handlers_token_equal(const char *given, size_t given_len, const char *want,
                          size_t want_len)
{
    volatile unsigned char diff = (unsigned char)(given_len != want_len);

    /* Always walk the whole expected token; past the given one compare with
     * the expected byte itself XOR 0xff so a short prefix never matches. */
    for (size_t i = 0; i < want_len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i]
                                        : (unsigned char)(want[i] ^ 0xff);
        diff |= (unsigned char)(g ^ (unsigned char)want[i]);
    }
    return diff == 0;
}

/* The token of "Authorization: Bearer <token>", trimmed; false if the
 * header is absent or of another scheme. */
static bool bearer_token(const char *auth, const char **tok, size_t *len)
{
    const char *t;
    size_t n;

    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    t = auth + 7;
    while (*t == ' ')
        t++;
    n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    *tok = t;
    *len = n;
    return true;
}

/* "admin", "read" or NULL (no valid admin token). Both tokens are always
 * compared, so the time says nothing about which one nearly matched. */
static const char *admin_scope(struct handlers *h, const char *auth)
{
    const char *tok = "";
    size_t len = 0;
    bool admin, read = false;

    if (!bearer_token(auth, &tok, &len))
        return NULL;
    admin = handlers_token_equal(tok, len, h->cfg.admin_token,
                                 strlen(h->cfg.admin_token));
    if (h->cfg.read_token != NULL)
        read = handlers_token_equal(tok, len, h->cfg.read_token,
                                    strlen(h->cfg.read_token));
    return admin ? "admin" : read ? "read" : NULL;
}

static void unauthorized(struct http_response *resp, const char *message)
{
    handlers_error(resp, 401, "unauthorized", message);
    resp->www_authenticate = true;
}

/* The client key check of a client_auth route; false after filling resp. */
static bool client_key_check(struct handlers *h, const struct http_request *req,
                             char *key_org, struct http_response *resp)
{
    struct keys_set *keys = tenants_keys(h->cfg.tenants);
    const char *tok;
    size_t len;

    if (!keys_set_is_loaded(keys)) {
        handlers_error(resp, 503, "database_unavailable",
                       "the org keys are not loaded yet: the database is "
                       "unavailable; nothing was written");
        return false;
    }
    if (!bearer_token(req->authorization, &tok, &len) ||
        !keys_set_find(keys, tok, len, key_org)) {
        unauthorized(resp, "this endpoint needs Authorization: Bearer <a "
                           "live API key of the message's org>");
        return false;
    }
    return true;
}

size_t handlers_body_limit(const struct handlers *h, const struct route *route,
                           size_t default_limit)
{
    if (route != NULL && route->fn == handle_process_batch &&
        h->cfg.max_batch_bytes > 0)
        return h->cfg.max_batch_bytes;
    return default_limit;
}

void handlers_run(struct handlers *h, const struct route *route,
                  const struct http_request *req, struct http_response *resp)
{
    struct http_request r = *req;
    char key_org[ORG_ID_MAX + 1] = "";

    r.key_org = key_org;
    r.scope = NULL;
    if (route->admin) {
        r.scope = admin_scope(h, req->authorization);
        if (r.scope == NULL) {
            unauthorized(resp, "this endpoint needs Authorization: Bearer "
                               "<admin token>");
            return;
        }
        if (strcmp(r.scope, "read") == 0 && strcmp(req->method, "GET") != 0) {
            handlers_error(resp, 403, "forbidden",
                           "the read-only token cannot change anything; "
                           "use the admin token");
            return;
        }
    }
    if (route->client_auth && h->cfg.client_keys &&
        !client_key_check(h, req, key_org, resp))
        return;
    route->fn(h, &r, resp);
}

/* The org's rate limit for n messages; false after filling resp with 429. */
static bool rate_limit_admit(struct handlers *h, const char *org_id, unsigned n,
                             struct http_response *resp)
{
    enum ratelimit_verdict v;
    uint64_t retry_ns;
    char msg[160];

    if (h->cfg.tenants == NULL)
        return true;
    v = ratelimit_table_take(tenants_limits(h->cfg.tenants), org_id, n,
                             clock_now_ns(), &retry_ns);
    if (v == RATELIMIT_PASS)
        return true;
    if (v == RATELIMIT_NEVER) {
        snprintf(msg, sizeof msg,
                 "%u messages are more than the org's rate "
                 "limit burst: this request can never pass; send fewer at "
                 "a time",
                 n);
        retry_ns = NS_PER_S;
    } else {
        snprintf(msg, sizeof msg,
                 "the org is over its rate limit; retry "
                 "later (nothing was written)");
    }
    handlers_error(resp, 429, "rate_limited", msg);
    /* Whole seconds, at least 1, at most a day (a tiny rps could ask for
     * more than fits). */
    if (retry_ns > RETRY_AFTER_MAX_S * NS_PER_S)
        retry_ns = RETRY_AFTER_MAX_S * NS_PER_S;
    resp->retry_after_s = (unsigned)((retry_ns + NS_PER_S - 1) / NS_PER_S);
    if (resp->retry_after_s == 0)
        resp->retry_after_s = 1;
    return false;
}

bool handlers_client_admit(struct handlers *h, const struct http_request *req,
                           const char *org_id, unsigned n,
                           struct http_response *resp)
{
    int rc;

    if (h->cfg.client_keys &&
        (req->key_org == NULL || strcmp(req->key_org, org_id) != 0)) {
        handlers_error(resp, 403, "forbidden",
                       "this API key belongs to another org");
        return false;
    }
    rc = registry_admit(h->cfg.reg, org_id, resp->detail, sizeof resp->detail);
    if (rc != POOLD_OK) {
        error_for_status(h, resp, rc);
        return false;
    }
    return rate_limit_admit(h, org_id, n, resp);
}

int handlers_create(const struct handlers_config *cfg, struct handlers **out)
{
    struct handlers *h = calloc(1, sizeof *h);

    if (h == NULL)
        return POOLD_ERR_NOMEM;
    h->cfg = *cfg;
    if (h->cfg.max_batch == 0)
        h->cfg.max_batch = HANDLERS_MAX_BATCH_DEFAULT;
    atomic_init(&h->draining, false);
    *out = h;
    return POOLD_OK;
}

void handlers_destroy(struct handlers *h)
{
    free(h);
}

void handlers_set_draining(struct handlers *h)
{
    atomic_store(&h->draining, true);
}

bool handlers_is_draining(struct handlers *h)
{
    return atomic_load(&h->draining);
}

/* ---- for the handler modules (admin_api) --------------------------------- */

const struct handlers_config *handlers_get_config(struct handlers *h)
{
    return &h->cfg;
}

void handlers_render_json(struct http_response *resp, unsigned status,
                          json_t *root)
{
    render_json(resp, status, root);
}

bool handlers_parse_body(const struct http_request *req,
                         struct http_response *resp, json_t **out)
{
    return parse_json_body(req, resp, out);
}

void handlers_error_status(struct handlers *h, struct http_response *resp,
                           int status)
{
    error_for_status(h, resp, status);
}

bool handlers_org_param(const struct http_request *req,
                        struct http_response *resp)
{
    return valid_org_param(req, resp);
}

const char *handlers_org_reader(struct handlers *h,
                                const struct http_request *req, char *key_org,
                                struct http_response *resp)
{
    const char *scope = admin_scope(h, req->authorization);

    key_org[0] = '\0';
    if (scope != NULL)
        return scope;
    if (h->cfg.client_keys && !client_key_check(h, req, key_org, resp))
        return NULL;
    return "key";
}

/* ---- for the unit tests (handlers_internal.h) --------------------------- */

bool handlers_bearer_token(const char *auth, const char **tok, size_t *len)
{
    return bearer_token(auth, tok, len);
}

bool handlers_validate_message(json_t *root, struct handlers_message *out,
                               struct http_response *resp)
{
    struct process_request p = {0};

    if (!validate_message(root, &p, resp))
        return false;
    *out = (struct handlers_message){.id = p.id,
                                     .org_id = p.org_id,
                                     .payload = p.payload,
                                     .id_len = p.id_len,
                                     .org_id_len = p.org_id_len,
                                     .payload_len = p.payload_len};
    return true;
}

bool handlers_validate_batch(struct handlers *h, const struct http_request *req,
                             json_t *root, struct message *out, size_t out_cap,
                             size_t *n, struct http_response *resp)
{
    struct process_request top = {0};
    struct batch b = {0};
    bool ok = validate_batch(h, req, root, &b, &top, resp);

    *n = ok ? b.n : 0;
    for (size_t i = 0; ok && i < b.n && i < out_cap; i++)
        out[i] = b.msgs[i];
    batch_free(&b);
    return ok;
}
