/* handlers.h — the route table and the request handlers (parse / validate /
 * act / render), the status-to-HTTP table and admin authentication. */
#ifndef POOLD_HANDLERS_H
#define POOLD_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

#include "catalog.h"
#include "metrics.h"
#include "registry.h"
#include "status.h"

struct handlers; /* opaque */

struct handlers_config {
    struct registry *reg;    /* borrowed; outlives the handlers */
    struct metrics *metrics; /* borrowed; outlives the handlers */
    const char *admin_token; /* borrowed; compared in constant time */
    unsigned pool_ceiling;   /* largest size PUT accepts */
    unsigned retry_after_s;  /* Retry-After of 503 pool_exhausted */
    unsigned max_batch;      /* POOLD_MAX_BATCH: messages per batch */
    size_t max_batch_bytes;  /* POOLD_MAX_BATCH_BYTES: batch body limit */
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
    const char *error_code;   /* static, for the log; NULL on success */
    char org[ORG_ID_MAX + 1]; /* validated org of the request, for the log */
    char detail[HTTP_DETAIL_MAX]; /* for the log only, never sent */
};

typedef void (*handler_fn)(struct handlers *h, const struct http_request *req,
                           struct http_response *resp);

struct route {
    const char *method;
    const char *pattern; /* segments; "{org_id}" matches one segment */
    handler_fn fn;
    bool admin; /* needs Authorization: Bearer <admin token> */
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

/* The body limit of route (NULL: no route): POOLD_MAX_BATCH_BYTES for
 * POST /process/batch, else the server's default. Thread-safe. */
size_t handlers_body_limit(const struct handlers *h, const struct route *route,
                           size_t default_limit);

/* Run a route: admin check (401), then its handler. */
void handlers_run(struct handlers *h, const struct route *route,
                  const struct http_request *req, struct http_response *resp);

/* Fill resp with the JSON error body {"error":{"code":..,"message":..}}. */
void handlers_error(struct http_response *resp, unsigned status,
                    const char *code, const char *message);

/* Map a poold status to (HTTP status, error code); never 0/NULL. */
void handlers_status_http(int status, unsigned *http, const char **code,
                          const char **message);

/* Constant-time comparison of a presented token with the expected one: the
 * time depends on the expected length only. */
bool handlers_token_equal(const char *given, size_t given_len, const char *want,
                          size_t want_len);

#endif
