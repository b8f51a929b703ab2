/* pool_api.c — the pools and the server seen from outside: GET /stats,
 * /pools/{org_id} (get, resize, drain, pause, resume, holders), /metrics,
 * /healthz, /readyz, /cluster and the operator page /dashboard. Entries of
 * handlers_routes. */
#include "pool_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cluster.h"
#include "dashboard.h"
#include "metrics.h"
#include "ratelimit.h"
#include "registry.h"
#include "tenants.h"

static const struct handlers_config *cfg_of(struct handlers *h)
{
    return handlers_get_config(h);
}

/* ---- stats ----------------------------------------------------------------
 */
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

    if (cfg_of(h)->tenants != NULL && org_id == NULL)
        ratelimit_table_foreach(tenants_limits(cfg_of(h)->tenants), sum_refused,
                                &refused);
    else if (cfg_of(h)->tenants != NULL && org_id[0] != '\0')
        refused =
            ratelimit_table_refused(tenants_limits(cfg_of(h)->tenants), org_id);
    if (o != NULL)
        json_object_set_new(o, "rate_limited",
                            json_integer((json_int_t)refused));
    return o;
}

/* The connection pool's stats, with the connections closed while their
 * backend was at work, which still count against the budget (connpool.h). */
static json_t *conn_stats_json(struct handlers *h, const struct pool_stats *s)
{
    json_t *o = stats_with_limits(h, s, "");

    if (o != NULL)
        json_object_set_new(o, "closing", json_integer((json_int_t)s->held));
    return o;
}

/* An org pool's stats and whether the org is paused (operators). */
static json_t *org_stats_json(struct handlers *h, const struct pool_stats *st,
                              const char *org_id)
{
    json_t *o = stats_with_limits(h, st, org_id);
    bool paused = false;

    if (o != NULL &&
        registry_is_paused(cfg_of(h)->reg, org_id, &paused) == POOLD_OK)
        json_object_set_new(o, "paused", json_boolean(paused));
    return o;
}

/* Every org pool's stats, sorted by org_id (freed by the caller in any
 * case); with freed (or NULL), the freed pools' counts of the same
 * instant, and how many in *nfreed. */
static int snapshot_pools(struct handlers *h, struct pool_snapshot *snap,
                          struct pool_stats *freed, uint64_t *nfreed)
{
    uint64_t n;

    memset(snap, 0, sizeof *snap);
    n = registry_foreach_pool_freed(cfg_of(h)->reg, metrics_snapshot_add, snap,
                                    freed);
    if (nfreed != NULL)
        *nfreed = n;
    return metrics_snapshot_sort(snap);
}

void pool_api_stats(struct handlers *h, const struct http_request *req,
                    struct http_response *resp)
{
    struct pool_snapshot snap;
    struct pool_stats totals, conn;
    struct reg_commit_totals commits;
    json_t *pools = json_object(), *sums;
    uint64_t freed;

    (void)req;
    memset(&totals, 0, sizeof totals);
    /* The pools and the freed pools' counts of one instant: each pool in
     * one of them, so the totals never go down. */
    if (snapshot_pools(h, &snap, &conn, &freed) != POOLD_OK) {
        metrics_snapshot_free(&snap);
        json_decref(pools);
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    pool_stats_add(&totals, &conn); /* conn: reused below */
    for (size_t i = 0; pools && i < snap.n; i++) {
        json_object_set_new(
            pools, snap.v[i].org_id,
            org_stats_json(h, &snap.v[i].stats, snap.v[i].org_id));
        pool_stats_add(&totals, &snap.v[i].stats);
    }
    metrics_snapshot_free(&snap);
    /* A statement of several orgs counts once in the totals, and only
     * there what the statements took (mean: group_commit_ns_sum /
     * group_commits). */
    registry_commit_totals(cfg_of(h)->reg, &commits);
    totals.group_commits = commits.statements;
    sums = stats_with_limits(h, &totals, NULL);
    if (sums != NULL) {
        json_object_set_new(sums, "group_commit_ns_sum",
                            json_integer((json_int_t)commits.ns_sum));
        json_object_set_new(sums, "group_commits_overlapped",
                            json_integer((json_int_t)commits.overlapped));
        json_object_set_new(sums, "pools_freed",
                            json_integer((json_int_t)freed));
    }
    registry_conn_stats(cfg_of(h)->reg, &conn);
    handlers_render_json(resp, 200,
                         json_pack("{s:o?,s:o?,s:o?}", "pools", pools, "totals",
                                   sums, "connections",
                                   conn_stats_json(h, &conn)));
}

void pool_api_get(struct handlers *h, const struct http_request *req,
                  struct http_response *resp)
{
    struct pool_stats st;
    int rc;

    if (!handlers_org_param(req, resp))
        return;
    memset(&st, 0, sizeof st);
    rc = registry_pool_stats(cfg_of(h)->reg, resp->org, &st);
    if (rc != POOLD_OK)
        handlers_error_status(h, resp, rc);
    else
        handlers_render_json(resp, 200, org_stats_json(h, &st, resp->org));
}

/* {"max_size": N}, N a JSON integer in 1..ceiling. */
static bool validate_size(struct handlers *h, json_t *root, unsigned *size,
                          struct http_response *resp)
{
    json_t *v = json_object_get(root, "max_size");
    unsigned ceiling = cfg_of(h)->pool_ceiling;
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;

    if (n < 1 || n > (json_int_t)ceiling) {
        handlers_errorf(resp, 400, "invalid_size",
                        "field 'max_size' must be an integer from 1 to %u",
                        ceiling);
        return false;
    }
    *size = (unsigned)n;
    return true;
}

void pool_api_resize(struct handlers *h, const struct http_request *req,
                     struct http_response *resp)
{
    json_t *root = NULL;
    struct pool_stats st;
    unsigned size;
    int rc;

    if (!handlers_org_param(req, resp) ||
        !handlers_parse_body(req, resp, &root))
        return;
    if (validate_size(h, root, &size, resp)) {
        memset(&st, 0, sizeof st);
        struct audit_actor actor = {req->scope, req->client_address,
                                    req->request_id};
        rc = registry_resize_by(cfg_of(h)->reg, resp->org, size, &actor, &st,
                                resp->detail, sizeof resp->detail);
        if (rc == POOLD_ERR_INVALID) /* the detail names max_size */
            handlers_errorf(resp, 400, "invalid_size", "%s", resp->detail);
        else if (rc == POOLD_ERR_DB)
            handlers_errorf(resp, 503, "database_unavailable",
                            "the database did not answer: the new size may or "
                            "may not be stored; retrying is safe");
        else if (rc != POOLD_OK)
            handlers_error_status(h, resp, rc);
        else
            handlers_render_json(resp, 200,
                                 stats_with_limits(h, &st, resp->org));
    }
    json_decref(root);
}

void pool_api_metrics(struct handlers *h, const struct http_request *req,
                      struct http_response *resp)
{
    struct pool_snapshot snap;
    struct metrics_org_counts limits = {0};
    struct metrics_view view = {.pools = &snap};
    char *text = NULL;
    size_t len = 0;
    int rc = snapshot_pools(h, &snap, NULL, NULL);

    (void)req;
    registry_conn_stats(cfg_of(h)->reg, &view.conn);
    registry_commit_totals(cfg_of(h)->reg, &view.commits);
    view.ready = registry_is_ready(cfg_of(h)->reg);
    if (cfg_of(h)->tenants != NULL) {
        struct ratelimit_table *t = tenants_limits(cfg_of(h)->tenants);
        ratelimit_table_foreach(t, metrics_counts_add, &limits);
        /* Every org with a pool, at 0 until its first refusal: an alert on
         * rate() sees it before (DESIGN.md). */
        for (size_t i = 0; rc == POOLD_OK && i < snap.n; i++)
            if (!ratelimit_table_has(t, snap.v[i].org_id))
                metrics_counts_add(&limits, snap.v[i].org_id, 0);
        view.rate_limited = &limits;
    }
    if (rc == POOLD_OK)
        rc = metrics_render(cfg_of(h)->metrics, &view, &text, &len);
    metrics_snapshot_free(&snap);
    metrics_counts_free(&limits);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    free(resp->body);
    resp->body = text;
    resp->body_len = len;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

void pool_api_healthz(struct handlers *h, const struct http_request *req,
                      struct http_response *resp)
{
    (void)h;
    (void)req;
    handlers_render_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

/* A replica without its grant of the cluster budget yet: out of rotation,
 * though the database answers; its requests wait for a grant (up to the
 * acquire timeout, then pool_exhausted, as this says). */
static void readyz_starting(struct http_response *resp)
{
    resp->error_code = "pool_exhausted";
    resp->retry_after_s = 1;
    handlers_render_json(
        resp, 503,
        json_pack("{s:s,s:{s:s,s:s}}", "status", "starting", "error", "code",
                  "pool_exhausted", "message",
                  "this replica holds no share of the cluster's connection "
                  "budget yet; requests wait for one up to "
                  "POOLD_ACQUIRE_TIMEOUT_MS"));
}

void pool_api_readyz(struct handlers *h, const struct http_request *req,
                     struct http_response *resp)
{
    (void)req;
    if (handlers_is_draining(h))
        handlers_error_status(h, resp, POOLD_ERR_SHUTDOWN);
    else if (registry_awaits_grant(cfg_of(h)->reg))
        readyz_starting(resp);
    else if (!registry_is_ready(cfg_of(h)->reg))
        handlers_errorf(resp, 503, "database_unavailable",
                        "the database does not answer or the org directory "
                        "is not loaded yet");
    else
        handlers_render_json(resp, 200, json_pack("{s:s}", "status", "ready"));
}

/* ---- operators: drain, pause, resume, holders, dashboard ---------------- */

/* Who asks, for the audit entry of drain, pause and resume. */
static struct audit_actor operator_actor(const struct http_request *req)
{
    struct audit_actor actor = {req->scope, req->client_address,
                                req->request_id};
    return actor;
}

void pool_api_drain(struct handlers *h, const struct http_request *req,
                    struct http_response *resp)
{
    struct pool_stats after;
    struct audit_actor actor = operator_actor(req);
    int rc;

    if (!handlers_org_param(req, resp))
        return;
    memset(&after, 0, sizeof after);
    rc = registry_drain(cfg_of(h)->reg, resp->org, &actor, &after, resp->detail,
                        sizeof resp->detail);
    if (rc != POOLD_OK)
        handlers_error_status(h, resp, rc);
    else
        handlers_render_json(resp, 200, org_stats_json(h, &after, resp->org));
}

/* POST .../pause and .../resume: 200 {"org_id", "paused"}; the change and
 * its audit entry commit together. */
static void set_paused(struct handlers *h, const struct http_request *req,
                       struct http_response *resp, bool paused)
{
    struct audit_actor actor = operator_actor(req);
    int rc;

    if (!handlers_org_param(req, resp))
        return;
    rc = registry_set_paused(cfg_of(h)->reg, resp->org, paused, &actor,
                             resp->detail, sizeof resp->detail);
    if (rc == POOLD_ERR_DB)
        handlers_errorf(resp, 503, "database_unavailable",
                        "the database did not answer: the pause may or may "
                        "not be stored; retrying is safe");
    else if (rc != POOLD_OK)
        handlers_error_status(h, resp, rc);
    else
        handlers_render_json(
            resp, 200,
            json_pack("{s:s,s:b}", "org_id", resp->org, "paused", (int)paused));
}

void pool_api_pause(struct handlers *h, const struct http_request *req,
                    struct http_response *resp)
{
    set_paused(h, req, resp, true);
}

void pool_api_resume(struct handlers *h, const struct http_request *req,
                     struct http_response *resp)
{
    set_paused(h, req, resp, false);
}

void pool_api_holders(struct handlers *h, const struct http_request *req,
                      struct http_response *resp)
{
    struct holder_info *v = NULL;
    size_t n = 0;
    json_t *list;
    int rc;

    if (!handlers_org_param(req, resp))
        return;
    rc = registry_holders(cfg_of(h)->reg, resp->org, &v, &n);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, rc);
        return;
    }
    list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(
            list, json_pack("{s:s,s:s,s:I}", "request_id", v[i].request_id,
                            "route", v[i].route, "held_ms",
                            (json_int_t)(v[i].held_ns / 1000000)));
    free(v);
    handlers_render_json(resp, 200, json_pack("{s:o?}", "holders", list));
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
        handlers_errorf(resp, 404, "not_found", "no such route");
        return;
    }
    copy = malloc(a->len ? a->len : 1);
    if (copy == NULL) {
        handlers_error_status(NULL, resp, POOLD_ERR_NOMEM);
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

void pool_api_dashboard(struct handlers *h, const struct http_request *req,
                        struct http_response *resp)
{
    (void)h;
    (void)req;
    serve_asset(resp, "index.html");
}

void pool_api_dashboard_asset(struct handlers *h,
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
void pool_api_cluster(struct handlers *h, const struct http_request *req,
                      struct http_response *resp)
{
    struct cluster_replica *view = calloc(CLUSTER_MAX_REPLICAS, sizeof *view);
    json_t *list = json_array();
    size_t n = 0;

    (void)req;
    if (cfg_of(h)->cluster == NULL || view == NULL || list == NULL) {
        free(view);
        json_decref(list);
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        return;
    }
    n = cluster_snapshot(cfg_of(h)->cluster, view, CLUSTER_MAX_REPLICAS);
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(
            list, json_pack("{s:s,s:I,s:I,s:I,s:I,s:s,s:b}", "id", view[i].id,
                            "share", (json_int_t)view[i].share, "granted",
                            (json_int_t)view[i].granted, "open_connections",
                            (json_int_t)view[i].open_connections, "waiting",
                            (json_int_t)view[i].waiting, "heartbeat_at",
                            view[i].heartbeat_at, "self", (int)view[i].self));
    free(view);
    handlers_render_json(resp, 200, json_pack("{s:o?}", "replicas", list));
}
