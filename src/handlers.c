/* handlers.c — the route table, authentication (admin tokens, org API keys,
 * rate limits), the status-to-HTTP table and the shared steps of every
 * handler: parse a JSON body, render JSON, answer an error. The handlers
 * live in process_api.c, pool_api.c and admin_api.c. */
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
#include "handlers_test.h"
#include "jsonfast.h"
#include "keys.h"
#include "messages_api.h"
#include "ratelimit.h"
#include "pool_api.h"
#include "process_api.h"
#include "registry.h"
#include "tenants.h"
#include "utf8.h"

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
    {POOLD_ERR_DB_BUSY, 503, "database_unavailable",
     "the database did not answer in time; nothing was stored", false},
    {POOLD_ERR_CONNS_BUSY, 503, "pool_exhausted",
     "no database connection became free in time (every one is in use); "
     "nothing was sent to the database; retry later",
     true},
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
void handlers_render_json(struct http_response *resp, unsigned status,
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

/* Compacted, not read into a tree and written again: the database's JSON
 * text is valid at any depth and with any number, where jansson's reader
 * refuses an integer past 64 bits and its writer recurses once per level
 * (a thread's stack). */
void handlers_render_text(struct http_response *resp, unsigned status,
                          char *text)
{
    size_t n = text != NULL ? jsonfast_compact(text) : 0;
    char *body = text != NULL ? realloc(text, n + 2) : NULL;

    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    if (body != NULL) {
        body[n] = '\n';
        body[n + 1] = '\0';
        resp->body = body;
        resp->body_len = n + 1;
        resp->status = status;
    } else {
        free(text);
        resp->status = 500;
        resp->error_code = "internal_error";
    }
    resp->content_type = json_content_type;
}

/* Take b's text, a newline added, as resp's body; on failure a bare 500. */
void handlers_render_buf(struct http_response *resp, unsigned status,
                         struct strbuf *b)
{
    char *text;
    size_t n;

    strbuf_append(b, "\n", 1);
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    if (strbuf_take(b, &text, &n) == POOLD_OK) {
        resp->body = text;
        resp->body_len = n;
        resp->status = status;
    } else {
        resp->status = 500;
        resp->error_code = "internal_error";
    }
    resp->content_type = json_content_type;
}

void handlers_errorf(struct http_response *resp, unsigned status,
                     const char *code, const char *fmt, ...)
{
    char message[HANDLERS_MESSAGE_MAX];
    struct strbuf b = {0};
    size_t code_len = strlen(code), len;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    len = strlen(message);
    /* A message quoting client bytes (jansson's "near '...'") may not be
     * valid UTF-8: fall back to a fixed text rather than fail. */
    if (!utf8_valid(message, len)) {
        snprintf(message, sizeof message, "the request was rejected");
        len = strlen(message);
    }
    /* {"error":{"code":..,"message":..}}, written as json_dumpb would. */
    strbuf_reserve(&b, 48 + 6 * (code_len + len));
    jsonfast_put_lit(&b, "{\"error\":{\"code\":");
    jsonfast_put_string(&b, code, code_len);
    jsonfast_put_lit(&b, ",\"message\":");
    jsonfast_put_string(&b, message, len);
    jsonfast_put_lit(&b, "}}");
    resp->error_code = code;
    handlers_render_buf(resp, status, &b);
}

void handlers_error_status(struct handlers *h, struct http_response *resp,
                           int status)
{
    const struct status_http *row = status_find(status);

    handlers_errorf(resp, row->http, row->code, "%s", row->message);
    if (h != NULL && row->retry_after)
        resp->retry_after_s = status == POOLD_ERR_PAUSED
                                  ? h->cfg.paused_retry_after_s
                                  : h->cfg.retry_after_s;
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

bool handlers_body_is_json(const struct http_request *req,
                           struct http_response *resp)
{
    if (req->content_type != NULL && !content_type_is_json(req->content_type)) {
        handlers_errorf(resp, 415, "unsupported_media_type",
                        "Content-Type must be application/json");
        return false;
    }
    return true;
}

bool handlers_load_object(const struct http_request *req,
                          struct http_response *resp, json_t **out)
{
    return handlers_load_object_within(req, resp, HANDLERS_VALUES_MAX, NULL,
                                       out);
}

bool handlers_load_object_within(const struct http_request *req,
                                 struct http_response *resp, size_t max_values,
                                 const char *too_many, json_t **out)
{
    json_error_t jerr;
    json_t *root;
    size_t values = 0, depth = 0;

    if (req->body != NULL)
        jsonfast_measure(req->body, req->body_len, &values, &depth);
    if (depth > HANDLERS_DEPTH_MAX) {
        handlers_errorf(resp, 400, "invalid_json",
                        "the body is nested deeper than %d levels",
                        HANDLERS_DEPTH_MAX);
        return false;
    }
    if (values > max_values) {
        if (too_many != NULL)
            handlers_errorf(resp, 400, "invalid_message",
                            "%s (the body holds more than %zu JSON values)",
                            too_many, max_values);
        else
            handlers_errorf(resp, 400, "invalid_json",
                            "the body holds more than %zu JSON values",
                            max_values);
        return false;
    }
    root = json_loadb(req->body ? req->body : "", req->body_len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        handlers_errorf(resp, 400, "invalid_json",
                        "invalid JSON at byte %d: %s", jerr.position,
                        jerr.text);
        return false;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        handlers_errorf(resp, 400, "invalid_json",
                        "the body must be a JSON object");
        return false;
    }
    *out = root;
    return true;
}

/* Parse the body strictly into an object; false after filling resp. */
bool handlers_parse_body(const struct http_request *req,
                         struct http_response *resp, json_t **out)
{
    return handlers_body_is_json(req, resp) &&
           handlers_load_object(req, resp, out);
}

bool handlers_org_param(const struct http_request *req,
                        struct http_response *resp)
{
    if (req->param == NULL || !orgid_is_valid(req->param, req->param_len)) {
        handlers_errorf(resp, 400, "invalid_org_id",
                        "org_id in the path must match ^[A-Za-z0-9_-]{1,64}$");
        return false;
    }
    snprintf(resp->org, sizeof resp->org, "%s", req->param);
    return true;
}

/* The route table: the first row whose method and pattern match a request
 * runs it (http.c); a path that matches under other methods only is 405. */
/* clang-format off */
const struct route handlers_routes[] = {
    /* method   pattern                         handler                    flags             body */
    {"POST",   "/process",                       process_api_process,       ROUTE_CLIENT_KEY, BODY_DEFAULT},
    {"GET",    "/stats",                         pool_api_stats,            ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/pools/{org_id}",                pool_api_get,              ROUTE_ADMIN,      BODY_DEFAULT},
    {"PUT",    "/pools/{org_id}/size",           pool_api_resize,           ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/metrics",                       pool_api_metrics,          ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/healthz",                       pool_api_healthz,          ROUTE_OPEN,       BODY_DEFAULT},
    {"GET",    "/readyz",                        pool_api_readyz,           ROUTE_OPEN,       BODY_DEFAULT},
    {"GET",    "/orgs",                          admin_api_org_list,        ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/orgs/{org_id}",                 admin_api_org_get,         ROUTE_ADMIN,      BODY_DEFAULT},
    {"PUT",    "/orgs/{org_id}",                 admin_api_org_put,         ROUTE_ADMIN,      BODY_DEFAULT},
    {"DELETE", "/orgs/{org_id}",                 admin_api_org_delete,      ROUTE_ADMIN,      BODY_DEFAULT},
    {"POST",   "/orgs/{org_id}/keys",            admin_api_key_create,      ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/orgs/{org_id}/keys",            admin_api_key_list,        ROUTE_ADMIN,      BODY_DEFAULT},
    {"DELETE", "/orgs/{org_id}/keys/{key_id}",   admin_api_key_revoke,      ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/audit",                         admin_api_audit,           ROUTE_ADMIN,      BODY_DEFAULT},
    {"POST",   "/pools/{org_id}/drain",          pool_api_drain,            ROUTE_ADMIN,      BODY_DEFAULT},
    {"POST",   "/pools/{org_id}/pause",          pool_api_pause,            ROUTE_ADMIN,      BODY_DEFAULT},
    {"POST",   "/pools/{org_id}/resume",         pool_api_resume,           ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/pools/{org_id}/holders",        pool_api_holders,          ROUTE_ADMIN,      BODY_DEFAULT},
    {"GET",    "/dashboard",                     pool_api_dashboard,        ROUTE_OPEN,       BODY_DEFAULT},
    {"GET",    "/dashboard/{asset}",             pool_api_dashboard_asset,  ROUTE_OPEN,       BODY_DEFAULT},
    {"POST",   "/process/batch",                 process_api_batch,         ROUTE_CLIENT_KEY, BODY_BATCH},
    {"GET",    "/cluster",                       pool_api_cluster,          ROUTE_ADMIN,      BODY_DEFAULT},
    /* the org's key, the read token or the admin token: checked inside */
    {"GET",    "/orgs/{org_id}/messages/{message_id*}", messages_api_get, ROUTE_OPEN,       BODY_DEFAULT},
};
/* clang-format on */
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
    handlers_errorf(resp, 401, "unauthorized", "%s", message);
    resp->www_authenticate = true;
}

/* The client key check of a ROUTE_CLIENT_KEY route; false after filling
 * resp. */
static bool client_key_check(struct handlers *h, const struct http_request *req,
                             char *key_org, struct http_response *resp)
{
    struct keys_set *keys = tenants_keys(h->cfg.tenants);
    const char *tok;
    size_t len;

    if (!keys_set_is_loaded(keys)) {
        handlers_errorf(resp, 503, "database_unavailable",
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

size_t handlers_body_limit(const struct handlers *h, const struct route *route,
                           size_t default_limit)
{
    if (route != NULL && route->body == BODY_BATCH &&
        h->cfg.max_batch_bytes > 0)
        return h->cfg.max_batch_bytes;
    return default_limit;
}

/* The route's credentials: false after filling resp (401, 403, 503);
 * else *scope (admin routes) and key_org (a client key's org) set. */
static bool authorize(struct handlers *h, const struct route *route,
                      const struct http_request *req, const char **scope,
                      char *key_org, struct http_response *resp)
{
    *scope = NULL;
    key_org[0] = '\0';
    if (route->flags & ROUTE_ADMIN) {
        *scope = admin_scope(h, req->authorization);
        if (*scope == NULL) {
            unauthorized(resp, "this endpoint needs Authorization: Bearer "
                               "<admin token>");
            return false;
        }
        if (strcmp(*scope, "read") == 0 && strcmp(req->method, "GET") != 0 &&
            strcmp(req->method, "HEAD") != 0) {
            handlers_errorf(resp, 403, "forbidden",
                            "the read-only token cannot change anything; "
                            "use the admin token");
            return false;
        }
    }
    return !(route->flags & ROUTE_CLIENT_KEY) || !h->cfg.client_keys ||
           client_key_check(h, req, key_org, resp);
}

bool handlers_authorize(struct handlers *h, const struct route *route,
                        const struct http_request *req,
                        struct http_response *resp)
{
    const char *scope;
    char key_org[ORG_ID_MAX + 1];

    return authorize(h, route, req, &scope, key_org, resp);
}

void handlers_run(struct handlers *h, const struct route *route,
                  const struct http_request *req, struct http_response *resp)
{
    struct http_request r = *req;
    char key_org[ORG_ID_MAX + 1];

    r.key_org = key_org;
    if (authorize(h, route, req, &r.scope, key_org, resp))
        route->fn(h, &r, resp);
}

/* The org's rate limit for n messages; false after filling resp with 429. */
bool handlers_rate_admit(struct handlers *h, const char *org_id, unsigned n,
                         struct http_response *resp)
{
    enum ratelimit_verdict v;
    uint64_t retry_ns;

    if (h->cfg.tenants == NULL)
        return true;
    v = ratelimit_table_take(tenants_limits(h->cfg.tenants), org_id, n,
                             clock_now_ns(), &retry_ns);
    if (v == RATELIMIT_PASS)
        return true;
    if (v == RATELIMIT_NEVER) {
        handlers_errorf(resp, 429, "rate_limited",
                        "%u messages are more than the org's rate limit "
                        "burst: this request can never pass; send fewer at "
                        "a time",
                        n);
        retry_ns = NS_PER_S;
    } else {
        handlers_errorf(resp, 429, "rate_limited",
                        "the org is over its rate limit; retry later "
                        "(nothing was written)");
    }
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
                           struct registry_admission *adm,
                           struct http_response *resp)
{
    int rc;

    if (h->cfg.client_keys &&
        (req->key_org == NULL || strcmp(req->key_org, org_id) != 0)) {
        handlers_errorf(resp, 403, "forbidden",
                        "this API key belongs to another org");
        return false;
    }
    rc = registry_admit(h->cfg.reg, org_id, adm, resp->detail,
                        sizeof resp->detail);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, rc);
        return false;
    }
    return handlers_rate_admit(h, org_id, n, resp);
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

/* ---- for the handler modules (*_api.c) ----------------------------------- */

const struct handlers_config *handlers_get_config(struct handlers *h)
{
    return &h->cfg;
}

/* ---- for the unit tests (handlers_test.h) --------------------------- */

bool handlers_bearer_token(const char *auth, const char **tok, size_t *len)
{
    return bearer_token(auth, tok, len);
}
