/* handlers_test.h — for the unit tests only (tests/unit/check_handlers.c):
 * the pure pieces behind the route handlers (handlers.c, process_api.c) and
 * the server's path matching (http.c). No module includes it but those that
 * define these functions; others go through handlers.h and http.h. */
#ifndef POOLD_HANDLERS_TEST_H
#define POOLD_HANDLERS_TEST_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "handlers.h"
#include "message.h"

/* The validated members of a POST /process body; borrowed from the JSON. */
struct handlers_message {
    const char *id, *org_id, *payload;
    size_t id_len, org_id_len, payload_len;
};

/* The token of "Authorization: Bearer <token>" (scheme case-insensitive,
 * blanks around the token trimmed): true with *tok (into auth) and *len;
 * false when auth is NULL or of another scheme. */
bool handlers_bearer_token(const char *auth, const char **tok, size_t *len);

/* POST /process's body checks (id, then org_id, then payload): true with
 * *out filled (borrowed from root) and resp->org set; false with resp the
 * 400 answer naming the first bad member (resp->body is the caller's to
 * free). */
bool handlers_validate_message(json_t *root, struct handlers_message *out,
                               struct http_response *resp);

/* POST /process/batch's body checks, as process_api_batch runs them
 * (h gives max_batch; req the request id each message carries): true with
 * *n messages, the first out_cap copied into out (strings borrowed from
 * root and req); false with resp the 400 answer naming the member, e.g.
 * "messages[3].payload" (resp->body is the caller's to free). */
bool handlers_validate_batch(struct handlers *h, const struct http_request *req,
                             json_t *root, struct message *out, size_t out_cap,
                             size_t *n, struct http_response *resp);

/* Match path against a route pattern (handlers_routes[i].pattern): the same
 * "/"-separated segments, "{...}" matching one non-empty segment. True with
 * the first and second "{...}" segments in *param and *param2 (pointers
 * into path; NULL and 0 when the pattern has none); false leaves them
 * untouched. Pure and thread-safe (the server's routing, in http.c). */
bool http_route_match(const char *pattern, const char *path, const char **param,
                      size_t *param_len, const char **param2,
                      size_t *param2_len);

#endif
