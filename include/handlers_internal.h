/* handlers_internal.h — the pure pieces of handlers.c behind the route
 * handlers, exposed for its unit tests (tests/unit/check_handlers.c). Not
 * for other modules: they go through handlers.h. */
#ifndef POOLD_HANDLERS_INTERNAL_H
#define POOLD_HANDLERS_INTERNAL_H

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

/* POST /process/batch's body checks, as handle_process_batch runs them
 * (h gives max_batch; req the request id each message carries): true with
 * *n messages, the first out_cap copied into out (strings borrowed from
 * root and req); false with resp the 400 answer naming the member, e.g.
 * "messages[3].payload" (resp->body is the caller's to free). */
bool handlers_validate_batch(struct handlers *h, const struct http_request *req,
                             json_t *root, struct message *out, size_t out_cap,
                             size_t *n, struct http_response *resp);

#endif
