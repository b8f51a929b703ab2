/* admin_api.h — the tenant admin routes: /orgs, /orgs/{org_id}/keys and
 * /audit (parse / validate / act through tenants on the registry's admin
 * connection / render). Entries of handlers_routes; see DESIGN.md. */
#ifndef POOLD_ADMIN_API_H
#define POOLD_ADMIN_API_H

#include "handlers.h"

void admin_api_org_list(struct handlers *h, const struct http_request *req,
                        struct http_response *resp);
void admin_api_org_get(struct handlers *h, const struct http_request *req,
                       struct http_response *resp);
void admin_api_org_put(struct handlers *h, const struct http_request *req,
                       struct http_response *resp);
void admin_api_org_delete(struct handlers *h, const struct http_request *req,
                          struct http_response *resp);
void admin_api_key_create(struct handlers *h, const struct http_request *req,
                          struct http_response *resp);
void admin_api_key_list(struct handlers *h, const struct http_request *req,
                        struct http_response *resp);
void admin_api_key_revoke(struct handlers *h, const struct http_request *req,
                          struct http_response *resp);
void admin_api_audit(struct handlers *h, const struct http_request *req,
                     struct http_response *resp);

#endif
