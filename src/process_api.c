/* process_api.c — POST /process and POST /process/batch: parse and validate
 * the messages, admit them, process them through the registry, render the
 * results. Entries of handlers_routes. */
#include "process_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "handlers_test.h"
#include "registry.h"
#include "rules.h"

#define MESSAGE_ID_MAX 128
#define ROUTE_PROCESS "POST /process"             /* a holder's route */
#define ROUTE_PROCESS_BATCH "POST /process/batch" /* a batch holder's route */

static const struct handlers_config *cfg_of(struct handlers *h)
{
    return handlers_get_config(h);
}
/* No C0 control, DEL or C1 control (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
static bool has_control_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

struct process_request {
    const char *id, *org_id, *payload; /* borrowed from root */
    size_t id_len, org_id_len, payload_len;
};

/* The member path of a field for messages: "id", or "messages[3].id". */
static void member_name(char *buf, size_t len, long index, const char *field)
{
    if (index < 0)
        snprintf(buf, len, "%s", field);
    else
        snprintf(buf, len, "messages[%ld].%s", index, field);
}

/* A message's id member (index -1: a single message's). */
static bool validate_id(json_t *obj, long index, struct process_request *p,
                        struct http_response *resp)
{
    json_t *id = json_object_get(obj, "id");
    char name[48];

    member_name(name, sizeof name, index, "id");
    if (!json_is_string(id)) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field '%s' is required and must be a "
                        "string",
                        name);
        return false;
    }
    p->id = json_string_value(id);
    p->id_len = json_string_length(id);
    if (p->id_len < 1 || p->id_len > MESSAGE_ID_MAX ||
        has_control_chars(p->id, p->id_len)) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field '%s' must be 1-128 bytes without "
                        "control characters",
                        name);
        return false;
    }
    return true;
}

static bool validate_payload(json_t *obj, long index, struct process_request *p,
                             struct http_response *resp)
{
    json_t *payload = json_object_get(obj, "payload");
    char name[48];

    if (!json_is_string(payload)) {
        member_name(name, sizeof name, index, "payload");
        handlers_errorf(resp, 400, "invalid_message",
                        "field '%s' is required and must be a "
                        "string",
                        name);
        return false;
    }
    p->payload = json_string_value(payload);
    p->payload_len = json_string_length(payload);
    return true;
}

/* The org_id member of a body: a valid org id, kept in p and resp. */
static bool validate_org(json_t *root, struct process_request *p,
                         struct http_response *resp)
{
    json_t *org = json_object_get(root, "org_id");

    if (!json_is_string(org) ||
        !orgid_is_valid(json_string_value(org), json_string_length(org))) {
        handlers_errorf(resp, 400, "invalid_org_id",
                        "field 'org_id' must be a string matching "
                        "^[A-Za-z0-9_-]{1,64}$");
        return false;
    }
    p->org_id = json_string_value(org);
    p->org_id_len = json_string_length(org);
    snprintf(resp->org, sizeof resp->org, "%s", p->org_id);
    return true;
}

static bool validate_message(json_t *root, struct process_request *p,
                             struct http_response *resp)
{
    return validate_id(root, -1, p, resp) && validate_org(root, p, resp) &&
           validate_payload(root, -1, p, resp);
}

/* ---- POST /process ------------------------------------------------------ */

static json_t *result_json(const struct process_request *p,
                           const struct service_result *r)
{
    json_t *failed = json_array();

    for (unsigned i = 0; failed && i < r->verdict.nfailed && i < RULES_MAX; i++)
        json_array_append_new(failed,
                              json_string(rule_type_str(r->verdict.failed[i])));
    return json_pack("{s:s%,s:s%,s:b,s:{s:I,s:o?},s:b}", "org_id", p->org_id,
                     p->org_id_len, "message_id", p->id, p->id_len, "passed",
                     (int)r->passed, "details", "checks",
                     (json_int_t)r->verdict.checks, "failed", failed,
                     "duplicate", (int)r->duplicate);
}

void process_api_process(struct handlers *h, const struct http_request *req,
                         struct http_response *resp)
{
    json_t *root = NULL;
    struct process_request p = {0};
    struct service_result result;
    struct message msg;
    struct org_entry *org = NULL;
    int rc;

    if (!handlers_parse_body(req, resp, &root))
        return;
    if (!validate_message(root, &p, resp) ||
        !handlers_client_admit(h, req, p.org_id, 1, &org, resp))
        goto out;
    msg.id = p.id;
    msg.id_len = p.id_len;
    msg.payload = p.payload;
    msg.payload_len = p.payload_len;
    msg.request_id = req->request_id;
    msg.route = ROUTE_PROCESS;
    memset(&result, 0, sizeof result);
    rc = registry_process(cfg_of(h)->reg, org, &msg, &result, resp->detail,
                          sizeof resp->detail);
    if (rc != POOLD_OK)
        handlers_error_status(h, resp, rc);
    else
        handlers_render_json(resp, 200, result_json(&p, &result));
out:
    json_decref(root);
}

/* ---- POST /process/batch ------------------------------------------------ */

struct batch {
    size_t n;
    struct process_request *req; /* borrowed strings from the body */
    struct message *msgs;
    struct service_job *jobs;
};

static void batch_free(struct batch *b)
{
    free(b->req);
    free(b->msgs);
    free(b->jobs);
}

/* messages[i]: an object with a valid id and payload, and, if it names an
 * org, the batch's. */
static bool validate_entry(json_t *m, long i, const struct process_request *top,
                           struct process_request *p,
                           struct http_response *resp)
{
    json_t *org = json_object_get(m, "org_id");

    if (!json_is_object(m)) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field 'messages[%ld]' must be an object", i);
        return false;
    }
    if (!validate_id(m, i, p, resp))
        return false;
    if (org != NULL &&
        (!json_is_string(org) || json_string_length(org) != top->org_id_len ||
         memcmp(json_string_value(org), top->org_id, top->org_id_len) != 0)) {
        handlers_errorf(resp, 400, "invalid_org_id",
                        "field 'messages[%ld].org_id' must equal "
                        "the batch's org_id",
                        i);
        return false;
    }
    p->org_id = top->org_id;
    p->org_id_len = top->org_id_len;
    return validate_payload(m, i, p, resp);
}

/* Every message carries the batch request's id and route (its holder). */
static bool validate_batch(struct handlers *h, const struct http_request *req,
                           json_t *root, struct batch *b,
                           struct process_request *top,
                           struct http_response *resp)
{
    json_t *list = json_object_get(root, "messages");

    if (!validate_org(root, top, resp))
        return false;
    if (!json_is_array(list) || json_array_size(list) < 1 ||
        json_array_size(list) > cfg_of(h)->max_batch) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field 'messages' must be an array of 1 "
                        "to %u messages",
                        cfg_of(h)->max_batch);
        return false;
    }
    b->n = json_array_size(list);
    b->req = calloc(b->n, sizeof *b->req);
    b->msgs = calloc(b->n, sizeof *b->msgs);
    b->jobs = calloc(b->n, sizeof *b->jobs);
    if (b->req == NULL || b->msgs == NULL || b->jobs == NULL) {
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        return false;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct process_request *p = &b->req[i];
        if (!validate_entry(json_array_get(list, i), (long)i, top, p, resp))
            return false;
        b->msgs[i] = (struct message){.id = p->id,
                                      .id_len = p->id_len,
                                      .payload = p->payload,
                                      .payload_len = p->payload_len,
                                      .request_id = req->request_id,
                                      .route = ROUTE_PROCESS_BATCH};
        b->jobs[i].msg = &b->msgs[i];
    }
    return true;
}

static json_t *batch_entry_json(struct handlers *h,
                                const struct process_request *p,
                                const struct service_job *j)
{
    unsigned http;
    const char *code, *message;

    if (j->status == POOLD_OK)
        return result_json(p, &j->result);
    (void)h;
    handlers_status_http(j->status, &http, &code, &message);
    return json_pack("{s:s%,s:{s:s,s:s}}", "message_id", p->id, p->id_len,
                     "error", "code", code, "message", message);
}

void process_api_batch(struct handlers *h, const struct http_request *req,
                       struct http_response *resp)
{
    json_t *root = NULL, *results;
    struct process_request top = {0};
    struct batch b = {0};
    struct org_entry *org = NULL;
    int rc;

    if (!handlers_parse_body(req, resp, &root))
        return;
    if (!validate_batch(h, req, root, &b, &top, resp) ||
        !handlers_client_admit(h, req, top.org_id, (unsigned)b.n, &org, resp))
        goto out;
    rc = registry_process_batch(cfg_of(h)->reg, org, b.jobs, b.n, resp->detail,
                                sizeof resp->detail);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, rc);
        goto out;
    }
    results = json_array();
    for (size_t i = 0; results && i < b.n; i++)
        if (json_array_append_new(results,
                                  batch_entry_json(h, &b.req[i], &b.jobs[i])))
            break; /* out of memory: render_json answers 500 */
    handlers_render_json(resp, 200,
                         json_pack("{s:s%,s:o?}", "org_id", top.org_id,
                                   top.org_id_len, "results", results));
out:
    batch_free(&b);
    json_decref(root);
}

/* ---- for the unit tests (handlers_test.h) --------------------------- */

bool handlers_validate_message(json_t *root, struct handlers_message *out,
                               struct http_response *resp)
{
    struct process_request p = {0};

    if (!validate_message(root, &p, resp))
        return false;
    *out = (struct handlers_message){.id = p.id,
                                     .org_id = p.org_id,
                                     .payload = p.payload,
                                     .id_len = p.id_len,
                                     .org_id_len = p.org_id_len,
                                     .payload_len = p.payload_len};
    return true;
}

bool handlers_validate_batch(struct handlers *h, const struct http_request *req,
                             json_t *root, struct message *out, size_t out_cap,
                             size_t *n, struct http_response *resp)
{
    struct process_request top = {0};
    struct batch b = {0};
    bool ok = validate_batch(h, req, root, &b, &top, resp);

    *n = ok ? b.n : 0;
    for (size_t i = 0; ok && i < b.n && i < out_cap; i++)
        out[i] = b.msgs[i];
    batch_free(&b);
    return ok;
}
