/* pool_api.h — the pools and the server seen from outside: /stats,
 * /pools/{org_id} and its operator actions (resize, drain, pause, resume,
 * holders), /metrics, /healthz, /readyz, /cluster and /dashboard. Entries
 * of handlers_routes; see DESIGN.md. */
#ifndef POOLD_POOL_API_H
#define POOLD_POOL_API_H

#include "handlers.h"

void pool_api_stats(struct handlers *h, const struct http_request *req,
                    struct http_response *resp);
void pool_api_get(struct handlers *h, const struct http_request *req,
                  struct http_response *resp);
void pool_api_resize(struct handlers *h, const struct http_request *req,
                     struct http_response *resp);
void pool_api_drain(struct handlers *h, const struct http_request *req,
                    struct http_response *resp);
void pool_api_pause(struct handlers *h, const struct http_request *req,
                    struct http_response *resp);
void pool_api_resume(struct handlers *h, const struct http_request *req,
                     struct http_response *resp);
void pool_api_holders(struct handlers *h, const struct http_request *req,
                      struct http_response *resp);
void pool_api_metrics(struct handlers *h, const struct http_request *req,
                      struct http_response *resp);
void pool_api_healthz(struct handlers *h, const struct http_request *req,
                      struct http_response *resp);
void pool_api_readyz(struct handlers *h, const struct http_request *req,
                     struct http_response *resp);
void pool_api_cluster(struct handlers *h, const struct http_request *req,
                      struct http_response *resp);
void pool_api_dashboard(struct handlers *h, const struct http_request *req,
                        struct http_response *resp);
void pool_api_dashboard_asset(struct handlers *h,
                              const struct http_request *req,
                              struct http_response *resp);

#endif
