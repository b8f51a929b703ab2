/* process_api.c — POST /process and POST /process/batch: parse and validate
 * the messages, admit them, process them through the registry, render the
 * results. Entries of handlers_routes. */
#include "process_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "handlers_test.h"
#include "jsonfast.h"
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
    const char *id, *org_id, *payload; /* borrowed from the body */
    size_t id_len, org_id_len, payload_len;
};

/* A member of a body object as validation sees it: absent, a string (s
 * NUL-terminated after len bytes, which may hold NULs), or of another
 * type. Read from a jansson tree or from jsonfast's flat members alike,
 * so both give the same answers. */
struct member {
    enum { MEMBER_ABSENT, MEMBER_STRING, MEMBER_OTHER } kind;
    const char *s;
    size_t len;
};

/* The members of a message that validation reads. */
struct message_members {
    struct member id, org_id, payload;
};

static struct member member_of_json(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    if (v == NULL)
        return (struct member){.kind = MEMBER_ABSENT};
    if (!json_is_string(v))
        return (struct member){.kind = MEMBER_OTHER};
    return (struct member){.kind = MEMBER_STRING,
                           .s = json_string_value(v),
                           .len = json_string_length(v)};
}

static void members_of_json(json_t *obj, struct message_members *mm)
{
    mm->id = member_of_json(obj, "id");
    mm->org_id = member_of_json(obj, "org_id");
    mm->payload = member_of_json(obj, "payload");
}

static struct member member_of_flat(const struct jsonfast_member *m, size_t n,
                                    const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < n; i++)
        if (m[i].key_len == len && memcmp(m[i].key, name, len) == 0)
            return (struct member){
                .kind = MEMBER_STRING, .s = m[i].val, .len = m[i].val_len};
    return (struct member){.kind = MEMBER_ABSENT};
}

static void members_of_flat(const struct jsonfast_member *m, size_t n,
                            struct message_members *mm)
{
    mm->id = member_of_flat(m, n, "id");
    mm->org_id = member_of_flat(m, n, "org_id");
    mm->payload = member_of_flat(m, n, "payload");
}

/* The member path of a field for messages: "id", or "messages[3].id". */
static void member_name(char *buf, size_t len, long index, const char *field)
{
    if (index < 0)
        snprintf(buf, len, "%s", field);
    else
        snprintf(buf, len, "messages[%ld].%s", index, field);
}

/* A member that must be there as a string: else 400 invalid_message. */
static bool required_string(const struct member *m, long index,
                            const char *field, struct http_response *resp)
{
    char name[48];

    if (m->kind == MEMBER_STRING)
        return true;
    member_name(name, sizeof name, index, field);
    handlers_errorf(resp, 400, "invalid_message",
                    "field '%s' is required and must be a string", name);
    return false;
}

/* A message's id member (index -1: a single message's). */
static bool validate_id(const struct member *id, long index,
                        struct process_request *p, struct http_response *resp)
{
    char name[48];

    if (!required_string(id, index, "id", resp))
        return false;
    p->id = id->s;
    p->id_len = id->len;
    if (p->id_len < 1 || p->id_len > MESSAGE_ID_MAX ||
        has_control_chars(p->id, p->id_len)) {
        member_name(name, sizeof name, index, "id");
        handlers_errorf(resp, 400, "invalid_message",
                        "field '%s' must be 1-128 bytes without "
                        "control characters",
                        name);
        return false;
    }
    return true;
}

static bool validate_payload(const struct member *payload, long index,
                             struct process_request *p,
                             struct http_response *resp)
{
    if (!required_string(payload, index, "payload", resp))
        return false;
    p->payload = payload->s;
    p->payload_len = payload->len;
    return true;
}

/* The org_id member of a body: a valid org id, kept in p and resp. */
static bool validate_org(const struct member *org, struct process_request *p,
                         struct http_response *resp)
{
    if (org->kind != MEMBER_STRING || !orgid_is_valid(org->s, org->len)) {
        handlers_errorf(resp, 400, "invalid_org_id",
                        "field 'org_id' must be a string matching "
                        "^[A-Za-z0-9_-]{1,64}$");
        return false;
    }
    p->org_id = org->s;
    p->org_id_len = org->len;
    memcpy(resp->org, org->s, org->len + 1); /* valid: at most ORG_ID_MAX */
    return true;
}

static bool validate_message(const struct message_members *mm,
                             struct process_request *p,
                             struct http_response *resp)
{
    return validate_id(&mm->id, -1, p, resp) &&
           validate_org(&mm->org_id, p, resp) &&
           validate_payload(&mm->payload, -1, p, resp);
}

/* ---- POST /process ------------------------------------------------------ */

/* A result as json_dumpb printed the tree it replaced: {"org_id", "message_id",
 * "passed", "details": {"checks", "failed": [rule types]}, "duplicate"}. */
static void put_result(struct strbuf *b, const struct process_request *p,
                       const struct service_result *r)
{
    jsonfast_put_lit(b, "{\"org_id\":");
    jsonfast_put_string(b, p->org_id, p->org_id_len);
    jsonfast_put_lit(b, ",\"message_id\":");
    jsonfast_put_string(b, p->id, p->id_len);
    if (r->passed)
        jsonfast_put_lit(b, ",\"passed\":true,\"details\":{\"checks\":");
    else
        jsonfast_put_lit(b, ",\"passed\":false,\"details\":{\"checks\":");
    jsonfast_put_uint(b, r->verdict.checks);
    jsonfast_put_lit(b, ",\"failed\":[");
    for (unsigned i = 0; i < r->verdict.nfailed && i < RULES_MAX; i++) {
        const char *type = rule_type_str(r->verdict.failed[i]);
        if (i > 0)
            jsonfast_put_lit(b, ",");
        jsonfast_put_string(b, type, strlen(type));
    }
    if (r->duplicate)
        jsonfast_put_lit(b, "]},\"duplicate\":true}");
    else
        jsonfast_put_lit(b, "]},\"duplicate\":false}");
}

/* Bodies up to this size are read on the stack (a message of the bench's
 * shape is ~150 bytes; the connection thread's stack is 512 KiB). */
#define PROCESS_BODY_INLINE 4096
/* A /process body read without jansson has at most this many members. */
#define PROCESS_FLAT_MAX 8
/* JSON values a body may hold before jansson reads it: a message has
 * three, and a client's extra members are ignored, not refused; beyond
 * this the body is refused unread (400). */
#define PROCESS_VALUES_MAX 256
/* The same for a batch, per message allowed. */
#define BATCH_VALUES_PER_MESSAGE 8

void process_api_process(struct handlers *h, const struct http_request *req,
                         struct http_response *resp)
{
    char inline_body[PROCESS_BODY_INLINE];
    char *copy = NULL, *buf = inline_body;
    struct jsonfast_member flat[PROCESS_FLAT_MAX];
    size_t nflat;
    struct message_members mm;
    json_t *root = NULL;
    struct process_request p = {0};
    struct service_result result;
    struct message msg;
    struct registry_admission adm = {0};
    struct strbuf b = {0};
    int rc;

    if (!handlers_body_is_json(req, resp))
        return;
    /* The common body, an object of string members, is read in place from
     * a copy; anything else goes to jansson, which judges it. */
    if (req->body_len >= sizeof inline_body)
        buf = copy = malloc(req->body_len);
    if (buf != NULL && req->body_len > 0)
        memcpy(buf, req->body, req->body_len);
    if (buf != NULL && req->body_len > 0 &&
        jsonfast_read_flat(buf, req->body_len, flat, PROCESS_FLAT_MAX,
                           &nflat)) {
        members_of_flat(flat, nflat, &mm);
    } else if (handlers_load_object_within(req, resp, PROCESS_VALUES_MAX, NULL,
                                           &root)) {
        members_of_json(root, &mm);
    } else {
        goto out;
    }
    if (!validate_message(&mm, &p, resp) ||
        !handlers_client_admit(h, req, p.org_id, 1, &adm, resp))
        goto out;
    msg.id = p.id;
    msg.id_len = p.id_len;
    msg.payload = p.payload;
    msg.payload_len = p.payload_len;
    msg.request_id = req->request_id;
    msg.route = ROUTE_PROCESS;
    memset(&result, 0, sizeof result);
    rc = registry_process(cfg_of(h)->reg, &adm, &msg, &result, resp->detail,
                          sizeof resp->detail);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, rc);
        goto out;
    }
    strbuf_reserve(&b, 128 + 2 * (p.org_id_len + p.id_len) +
                           24 * (size_t)result.verdict.nfailed);
    put_result(&b, &p, &result);
    handlers_render_buf(resp, 200, &b);
out:
    registry_admission_release(&adm);
    free(copy);
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

/* A batch body as validation reads it: from jsonfast's members (the common
 * body: strings, and one array of flat objects of strings) or from a
 * jansson tree, so both give the same answers. */
struct batch_body {
    struct member org;                /* the top object's org_id */
    bool is_array;                    /* its messages member is an array */
    size_t n;                         /* of n entries */
    json_t *list;                     /* that array, from jansson; or */
    const struct jsonfast_list *flat; /* that array, from jsonfast */
};

/* Entry i's members; false if it is not an object. */
static bool entry_members(const struct batch_body *bb, size_t i,
                          struct message_members *mm)
{
    if (bb->flat != NULL) {
        size_t from = i > 0 ? bb->flat->ends[i - 1] : 0;

        members_of_flat(bb->flat->items + from, bb->flat->ends[i] - from, mm);
        return true;
    }
    json_t *m = json_array_get(bb->list, i);
    if (!json_is_object(m))
        return false;
    members_of_json(m, mm);
    return true;
}

/* messages[i]: an object with a valid id and payload, and, if it names an
 * org, the batch's. */
static bool validate_entry(const struct batch_body *bb, long i,
                           const struct process_request *top,
                           struct process_request *p,
                           struct http_response *resp)
{
    struct message_members mm;
    const struct member *org = &mm.org_id;

    if (!entry_members(bb, (size_t)i, &mm)) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field 'messages[%ld]' must be an object", i);
        return false;
    }
    if (!validate_id(&mm.id, i, p, resp))
        return false;
    if (org->kind != MEMBER_ABSENT &&
        (org->kind != MEMBER_STRING || org->len != top->org_id_len ||
         memcmp(org->s, top->org_id, top->org_id_len) != 0)) {
        handlers_errorf(resp, 400, "invalid_org_id",
                        "field 'messages[%ld].org_id' must equal "
                        "the batch's org_id",
                        i);
        return false;
    }
    p->org_id = top->org_id;
    p->org_id_len = top->org_id_len;
    return validate_payload(&mm.payload, i, p, resp);
}

#define MESSAGES_RULE "field 'messages' must be an array of 1 to %u messages"

/* 400 for a batch whose messages are not 1 to POOLD_MAX_BATCH objects. */
static void messages_invalid(struct handlers *h, struct http_response *resp)
{
    handlers_errorf(resp, 400, "invalid_message", MESSAGES_RULE,
                    cfg_of(h)->max_batch);
}

/* Every message carries the batch request's id and route (its holder). */
static bool validate_batch(struct handlers *h, const struct http_request *req,
                           const struct batch_body *bb, struct batch *b,
                           struct process_request *top,
                           struct http_response *resp)
{
    if (!validate_org(&bb->org, top, resp))
        return false;
    if (!bb->is_array || bb->n < 1 || bb->n > cfg_of(h)->max_batch) {
        messages_invalid(h, resp);
        return false;
    }
    b->n = bb->n;
    b->req = calloc(b->n, sizeof *b->req);
    b->msgs = calloc(b->n, sizeof *b->msgs);
    b->jobs = calloc(b->n, sizeof *b->jobs);
    if (b->req == NULL || b->msgs == NULL || b->jobs == NULL) {
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        return false;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct process_request *p = &b->req[i];
        if (!validate_entry(bb, (long)i, top, p, resp))
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

/* One entry of a batch's results: the result, or the message's error. */
static void put_batch_entry(struct strbuf *b, const struct process_request *p,
                            const struct service_job *j)
{
    unsigned http;
    const char *code, *message;

    if (j->status == POOLD_OK) {
        put_result(b, p, &j->result);
        return;
    }
    handlers_status_http(j->status, &http, &code, &message);
    jsonfast_put_lit(b, "{\"message_id\":");
    jsonfast_put_string(b, p->id, p->id_len);
    jsonfast_put_lit(b, ",\"error\":{\"code\":");
    jsonfast_put_string(b, code, strlen(code));
    jsonfast_put_lit(b, ",\"message\":");
    jsonfast_put_string(b, message, strlen(message));
    jsonfast_put_lit(b, "}}");
}

static struct batch_body batch_of_json(json_t *root)
{
    json_t *list = json_object_get(root, "messages");

    return (struct batch_body){.org = member_of_json(root, "org_id"),
                               .is_array = json_is_array(list),
                               .n = json_array_size(list),
                               .list = list};
}

/* A batch body's top object without jansson: its string members. */
#define BATCH_TOP_MAX 8

/* Is the array the reader took that of the member "messages"? */
static bool list_is_messages(const struct jsonfast_list *list)
{
    return list->key != NULL && list->key_len == 8 &&
           memcmp(list->key, "messages", 8) == 0;
}

static bool batch_of_flat(char *buf, size_t len, struct jsonfast_list *list,
                          struct batch_body *bb)
{
    struct jsonfast_member top[BATCH_TOP_MAX];
    size_t ntop;
    bool messages;

    if (buf == NULL || len == 0 ||
        !jsonfast_read_list(buf, len, top, BATCH_TOP_MAX, &ntop,
                            PROCESS_FLAT_MAX, list))
        return false;
    messages = list_is_messages(list);
    *bb = (struct batch_body){.org = member_of_flat(top, ntop, "org_id"),
                              .is_array = messages,
                              .n = messages ? list->n : 0,
                              .flat = list};
    return true;
}

void process_api_batch(struct handlers *h, const struct http_request *req,
                       struct http_response *resp)
{
    json_t *root = NULL;
    char *copy = NULL;
    struct jsonfast_list list = {0};
    struct batch_body bb;
    struct process_request top = {0};
    struct batch b = {0};
    struct registry_admission adm = {0};
    struct strbuf out = {0};
    int rc;

    if (!handlers_body_is_json(req, resp))
        return;
    /* The common body is read in place from a copy (as for POST
     * /process); anything else goes to jansson, which judges it. */
    if (req->body_len > 0 && (copy = malloc(req->body_len)) != NULL)
        memcpy(copy, req->body, req->body_len);
    /* One more than allowed, so that validate_batch names the count; the
     * reader stops at a longer list, which is refused as too long if it
     * is the messages (the first array of another member, ignored, is
     * not). Any other body goes to jansson, bounded by its values: past
     * them, the messages are too many (or too large), and the answer says
     * so. */
    list.max = (size_t)cfg_of(h)->max_batch + 1;
    if (!batch_of_flat(copy, req->body_len, &list, &bb)) {
        char too_many[sizeof MESSAGES_RULE + 64];

        if (list.over && list_is_messages(&list)) {
            messages_invalid(h, resp);
            goto out;
        }
        jsonfast_list_free(&list);
        snprintf(too_many, sizeof too_many,
                 MESSAGES_RULE " of %d JSON values each on average at most",
                 cfg_of(h)->max_batch, BATCH_VALUES_PER_MESSAGE);
        if (!handlers_load_object_within(
                req, resp,
                BATCH_VALUES_PER_MESSAGE * (size_t)cfg_of(h)->max_batch + 64,
                too_many, &root))
            goto out;
        bb = batch_of_json(root);
    }
    if (!validate_batch(h, req, &bb, &b, &top, resp) ||
        !handlers_client_admit(h, req, top.org_id, (unsigned)b.n, &adm, resp))
        goto out;
    rc = registry_process_batch(cfg_of(h)->reg, &adm, b.jobs, b.n, resp->detail,
                                sizeof resp->detail);
    if (rc != POOLD_OK) {
        handlers_error_status(h, resp, rc);
        goto out;
    }
    /* {"org_id":..,"results":[..]}, as json_dumpb printed its tree. */
    strbuf_reserve(&out, 64 + b.n * 256);
    jsonfast_put_lit(&out, "{\"org_id\":");
    jsonfast_put_string(&out, top.org_id, top.org_id_len);
    jsonfast_put_lit(&out, ",\"results\":[");
    for (size_t i = 0; i < b.n; i++) {
        if (i > 0)
            jsonfast_put_lit(&out, ",");
        put_batch_entry(&out, &b.req[i], &b.jobs[i]);
    }
    jsonfast_put_lit(&out, "]}");
    handlers_render_buf(resp, 200, &out);
out:
    registry_admission_release(&adm);
    batch_free(&b);
    jsonfast_list_free(&list);
    free(copy);
    json_decref(root);
}

/* ---- for the unit tests (handlers_test.h) --------------------------- */

bool handlers_validate_message(json_t *root, struct handlers_message *out,
                               struct http_response *resp)
{
    struct process_request p = {0};
    struct message_members mm;

    members_of_json(root, &mm);
    if (!validate_message(&mm, &p, resp))
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
    struct batch_body bb = batch_of_json(root);
    bool ok = validate_batch(h, req, &bb, &b, &top, resp);

    *n = ok ? b.n : 0;
    for (size_t i = 0; ok && i < b.n && i < out_cap; i++)
        out[i] = b.msgs[i];
    batch_free(&b);
    return ok;
}
