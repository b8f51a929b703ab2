/* messages_api.h — reading a stored result over HTTP:
 * GET /orgs/{org_id}/messages/{message_id} (an entry of handlers_routes;
 * see DESIGN.md, "Data lifecycle", and docs/data-lifecycle.md). */
#ifndef POOLD_MESSAGES_API_H
#define POOLD_MESSAGES_API_H

#include "handlers.h"

/* 200 the stored result, 404 not_found when there is none within the
 * retention; for the org's key, the read token or the admin token. */
void messages_api_get(struct handlers *h, const struct http_request *req,
                      struct http_response *resp);

#endif
