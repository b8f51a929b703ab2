/* handlers.h — what the server (http.c) and the handler modules share: the
 * request and response, the route table, authentication and admission, the
 * status-to-HTTP table and the steps every handler takes (parse a JSON
 * body, render JSON, answer an error). The handlers themselves are in
 * process_api.c, pool_api.c and admin_api.c. */
#ifndef POOLD_HANDLERS_H
#define POOLD_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "orgid.h"
#include "status.h"
#include "strbuf.h"

/* No header here may reach libpq-fe.h (cmake/header_check.cmake checks):
 * the modules the handlers use are only named. */
struct cluster;
struct registry_admission;
struct metrics;
struct registry;
struct tenants;

struct handlers; /* opaque */

struct handlers_config {
    struct registry *reg;          /* borrowed; outlives the handlers */
    struct metrics *metrics;       /* borrowed; outlives the handlers */
    const char *admin_token;       /* borrowed; compared in constant time */
    struct cluster *cluster;       /* borrowed, for GET /cluster; NULL: none */
    unsigned pool_ceiling;         /* largest size PUT accepts */
    unsigned retry_after_s;        /* Retry-After of 503 pool_exhausted */
    unsigned paused_retry_after_s; /* Retry-After of 503 org_paused */
    unsigned max_batch;            /* POOLD_MAX_BATCH: messages per batch */
    size_t max_batch_bytes;        /* POOLD_MAX_BATCH_BYTES: batch body limit */
    const char *read_token;        /* borrowed; NULL: no read-only scope */
    bool client_keys;              /* POOLD_CLIENT_AUTH=keys */
    struct tenants *tenants;       /* borrowed; keys, rate limits, org SQL */
    long long message_retention_s; /* GET .../messages/{id}: older is 404;
                                      0: kept forever */
};

/* What the server gives a handler; every pointer is borrowed for the call. */
struct http_request {
    const char *method;
    const char *path;
    const char *param; /* the {org_id} path segment, or NULL */
    size_t param_len;
    const char *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    const char *request_id;
    /* A second "{...}" path segment (the {key_id} of a key route), or
     * NULL; at most 65 bytes are kept, like param. */
    const char *param2;
    size_t param2_len;
    const char *client_address; /* the peer's IP address for a ROUTE_ADMIN
                                   route (audited), "" if unknown and for
                                   the other routes */
    /* A query-string argument by name, NULL when absent (borrowed for the
     * call). */
    const char *(*query)(void *query_arg, const char *name);
    void *query_arg;
    /* Set by handlers_run() for a ROUTE_CLIENT_KEY route: the org of the
     * presented key ("" when POOLD_CLIENT_AUTH=none). */
    const char *key_org;
    /* Set by handlers_run() for an admin route: "admin" or "read". */
    const char *scope;
};

#define HTTP_DETAIL_MAX 256

/* What a handler fills; the server sends it and frees body. */
struct http_response {
    unsigned status;
    char *body; /* malloc'd, owned by the response */
    size_t body_len;
    const char *content_type; /* static string */
    const char *allow;        /* static string for 405, else NULL */
    unsigned retry_after_s;   /* > 0: send Retry-After */
    bool www_authenticate;    /* send WWW-Authenticate: Bearer */
    const char *csp;          /* static Content-Security-Policy, or NULL */
    const char *error_code;   /* static, for the log; NULL on success */
    char org[ORG_ID_MAX + 1]; /* validated org of the request, for the log */
    char detail[HTTP_DETAIL_MAX]; /* for the log only, never sent */
};

typedef void (*handler_fn)(struct handlers *h, const struct http_request *req,
                           struct http_response *resp);

/* Who may call a route (struct route.flags); ROUTE_OPEN: anyone. */
#define ROUTE_OPEN 0u
/* Authorization: Bearer <admin token>; a GET also takes the read token,
 * another method with it is 403 forbidden. */
#define ROUTE_ADMIN (1u << 0)
/* With POOLD_CLIENT_AUTH=keys: an API key of a live org, checked before
 * anything else (401); the handler then checks it is the message's org. */
#define ROUTE_CLIENT_KEY (1u << 1)

/* Which body limit a route has (struct route.body). */
enum route_body {
    BODY_DEFAULT, /* POOLD_MAX_BODY_BYTES, the server's */
    BODY_BATCH,   /* POOLD_MAX_BATCH_BYTES when set, else the default */
};

/* One row of the route table: a request whose method and path match runs
 * fn once the flags' credentials are checked; its body may be as long as
 * the body column says (longer: 413 before it is read). */
struct route {
    const char *method;
    const char *pattern; /* segments; "{org_id}" matches one segment */
    handler_fn fn;
    unsigned flags; /* ROUTE_OPEN, or ROUTE_ADMIN / ROUTE_CLIENT_KEY */
    enum route_body body;
};

/* The route table, and its length. */
extern const struct route handlers_routes[];
extern const size_t handlers_nroutes;

POOLD_MUSTCHECK int handlers_create(const struct handlers_config *cfg,
                                    struct handlers **out);
void handlers_destroy(struct handlers *h); /* accepts NULL */

/* Readiness turns 503 shutting_down from now on. Thread-safe. */
void handlers_set_draining(struct handlers *h);
bool handlers_is_draining(struct handlers *h);

/* The body limit of route (NULL: no route): its body column read with the
 * config, default_limit being the server's. Thread-safe. */
size_t handlers_body_limit(const struct handlers *h, const struct route *route,
                           size_t default_limit);

/* The route's credentials, from req's method and authorization alone (no
 * body): false after filling resp with the 401, 403 or 503 handlers_run
 * would answer. http.c asks before it reads a large body, so a client
 * without them never makes poold hold one. */
bool handlers_authorize(struct handlers *h, const struct route *route,
                        const struct http_request *req,
                        struct http_response *resp);

/* Run a route: admin check (401), then its handler. */
void handlers_run(struct handlers *h, const struct route *route,
                  const struct http_request *req, struct http_response *resp);

/* Fill resp with the JSON error body {"error":{"code":..,"message":..}},
 * the message formatted as by printf (at most HANDLERS_MESSAGE_MAX - 1
 * bytes kept). The one way every handler answers an error. */
#define HANDLERS_MESSAGE_MAX 512
__attribute__((format(printf, 4, 5))) void
handlers_errorf(struct http_response *resp, unsigned status, const char *code,
                const char *fmt, ...);

/* Map a poold status to (HTTP status, error code); never 0/NULL. */
void handlers_status_http(int status, unsigned *http, const char **code,
                          const char **message);

/*
 * For ROUTE_CLIENT_KEY routes, after the body is parsed and the org_id
 * validated: a key of another org (403 forbidden), an org unknown or
 * disabled (404), misconfigured (503), over its rate limit for n messages
 * (429 rate_limited with Retry-After; "can never pass" when n exceeds the
 * burst). Returns true with *adm filled (registry_admit()) when the request
 * may go on; false after filling resp. Either way the caller ends *adm
 * (zeroed before) with registry_admission_release(). POST /process and POST
 * /process/batch both call it.
 */
bool handlers_client_admit(struct handlers *h, const struct http_request *req,
                           const char *org_id, unsigned n,
                           struct registry_admission *adm,
                           struct http_response *resp);
/* The org's rate limit alone, for n: false after filling resp (429, as
 * above). GET /orgs/{org_id}/messages/{id} takes one per lookup by key. */
bool handlers_rate_admit(struct handlers *h, const char *org_id, unsigned n,
                         struct http_response *resp);

/* ---- for the handler modules (*_api.c). All thread-safe: they read
 * the config (fixed after handlers_create) and fill the caller's resp. */
/* The config given to handlers_create(), borrowed for the handlers' life. */
const struct handlers_config *handlers_get_config(struct handlers *h);
/* Serialise root (reference taken) into resp with status. */
void handlers_render_json(struct http_response *resp, unsigned status,
                          json_t *root);
/* JSON text (malloc'd, taken), compacted, and a newline into resp with
 * status. On an allocation failure a bare 500. */
void handlers_render_text(struct http_response *resp, unsigned status,
                          char *text);
/* b's text (built with jsonfast's writers) and a newline into resp with
 * status; b is empty after. On an allocation failure a bare 500. */
void handlers_render_buf(struct http_response *resp, unsigned status,
                         struct strbuf *b);
/* Content-Type check (415) and a strict JSON object body (400); on true
 * *out is the caller's reference. The two steps are also apart:
 * handlers_body_is_json (415) and handlers_load_object (400). */
bool handlers_parse_body(const struct http_request *req,
                         struct http_response *resp, json_t **out);
bool handlers_body_is_json(const struct http_request *req,
                           struct http_response *resp);
bool handlers_load_object(const struct http_request *req,
                          struct http_response *resp, json_t **out);
/* The same, refusing (400 invalid_json) before any tree is built a body of
 * more than max_values JSON values or nested deeper than
 * HANDLERS_DEPTH_MAX (jsonfast_measure): what the body limit alone bounds
 * is bytes, and a tree takes up to 80 times as many, and a thread's stack
 * per level. handlers_load_object allows HANDLERS_VALUES_MAX. too_many, if
 * not NULL, is the message of a 400 invalid_message answered instead for
 * too many values (the field a caller knows they must be in). */
#define HANDLERS_VALUES_MAX 4096
#define HANDLERS_DEPTH_MAX 64
bool handlers_load_object_within(const struct http_request *req,
                                 struct http_response *resp, size_t max_values,
                                 const char *too_many, json_t **out);
/* resp from a poold status (the status-to-HTTP table). */
void handlers_error_status(struct handlers *h, struct http_response *resp,
                           int status);
/* req->param is a valid org id (copied into resp->org), else 400
 * invalid_org_id filled in. */
bool handlers_org_param(const struct http_request *req,
                        struct http_response *resp);

/* Who may read an org's data (GET /orgs/{org_id}/messages/{message_id}):
 * "admin" or "read" for those tokens, else "key" with the presented key's
 * org in key_org (ORG_ID_MAX + 1 bytes; "" with POOLD_CLIENT_AUTH=none: any
 * caller); NULL after filling resp with 401 (no valid credential) or 503
 * (the keys are not loaded yet). The caller answers 403 for another org. */
const char *handlers_org_reader(struct handlers *h,
                                const struct http_request *req, char *key_org,
                                struct http_response *resp);
/* Constant-time comparison of a presented token with the expected one: the
 * time depends on the expected length only. */
bool handlers_token_equal(const char *given, size_t given_len, const char *want,
                          size_t want_len);

#endif
