/* process_api.h — the message routes: POST /process and POST /process/batch
 * (parse / validate / admit / process through the registry / render).
 * Entries of handlers_routes; see DESIGN.md. */
#ifndef POOLD_PROCESS_API_H
#define POOLD_PROCESS_API_H

#include "handlers.h"

void process_api_process(struct handlers *h, const struct http_request *req,
                         struct http_response *resp);
void process_api_batch(struct handlers *h, const struct http_request *req,
                       struct http_response *resp);

#endif
