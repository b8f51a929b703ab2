/* messages_api.c — GET /orgs/{org_id}/messages/{message_id}: parse /
 * authorise / read through catalog on a pooled connection of its own
 * (registry_message_get: not the admin connection) / render. */
#include "messages_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

#define MESSAGE_ID_MAX 128 /* bytes, as POST /process takes it */
#define ORGS_SEGMENT "/orgs/"
#define MESSAGES_SEGMENT "/messages/"

/* The {message_id*} rest of the path, whole (the route's second parameter keeps
 * 65 bytes only): what follows "/orgs/{org_id}/messages/" in the path, which
 * the server has already percent-decoded. Found after the org id, not by
 * searching: an org may be called "messages". */
static const char *message_id_of(const struct http_request *req, size_t *len)
{
    size_t at = strlen(ORGS_SEGMENT) + req->param_len;
    const char *p = req->path;

    *len = 0;
    if (p == NULL || req->param_len > ORG_ID_MAX || strlen(p) < at ||
        strncmp(p + at, MESSAGES_SEGMENT, strlen(MESSAGES_SEGMENT)) != 0)
        return "";
    p += at + strlen(MESSAGES_SEGMENT);
    *len = strlen(p);
    return p;
}

/* As POST /process checks "id": 1-128 bytes without control characters;
 * and UTF-8, as a JSON string is (jansson says). */
static bool message_id_valid(const char *id, size_t len)
{
    json_t *s;

    if (len < 1 || len > MESSAGE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    s = json_stringn(id, len);
    json_decref(s);
    return s != NULL;
}

void messages_api_get(struct handlers *h, const struct http_request *req,
                      struct http_response *resp)
{
    const struct handlers_config *cfg = handlers_get_config(h);
    char *json = NULL;
    size_t id_len;
    const char *id = message_id_of(req, &id_len);
    int rc;

    char key_org[ORG_ID_MAX + 1];

    /* 401 before any other check, as for POST /process. */
    if (handlers_org_reader(h, req, key_org, resp) == NULL ||
        !handlers_org_param(req, resp))
        return;
    if (!message_id_valid(id, id_len)) {
        handlers_errorf(resp, 400, "invalid_message", "%s",
                        "path segment 'message_id' must be 1-128 bytes of "
                        "UTF-8 without control characters (percent-encoded)");
        return;
    }
    if (key_org[0] != '\0' && strcmp(key_org, resp->org) != 0) {
        handlers_errorf(resp, 403, "forbidden", "%s",
                        "this key belongs to another org");
        return;
    }
    /* A key's lookups count against its org's rate limit, as messages do;
     * the admin token's do not. */
    if (key_org[0] != '\0' && !handlers_rate_admit(h, resp->org, 1, resp))
        return;
    rc = registry_message_get(cfg->reg, resp->org, id, cfg->message_retention_s,
                              &json, resp->detail, sizeof resp->detail);
    if (rc == POOLD_ERR_NOT_FOUND)
        handlers_errorf(resp, 404, "not_found", "%s",
                        "no such message for this org (never processed, or "
                        "past the retention)");
    else if (rc == POOLD_ERR_WAITERS_FULL) {
        handlers_errorf(resp, 503, "pool_exhausted", "%s; retry later",
                        resp->detail);
        resp->retry_after_s = 1;
    } else if (rc == POOLD_ERR_DB)
        handlers_errorf(resp, 503, "database_unavailable", "%s",
                        "the database is unavailable");
    else if (rc != POOLD_OK)
        handlers_error_status(h, resp, rc);
    else
        handlers_render_json(resp, 200, json_loads(json, 0, NULL));
    free(json);
}
