/* fuzz_request.c — libFuzzer target over the request path a client
 * controls: any bytes as the body (and Content-Type, and the org id in the
 * URL) of every route, through parse, validate and render. The registry is
 * a stub that answers like the real one, and the tenant tables are stubs
 * never reached (no admin connection is ever lent), so no database is
 * needed and libpq is not linked (tests/fuzz/fuzz.cmake). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "handlers.h"
#include "jsonfast.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "tenants.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------ the registry, stubbed */

int registry_process(struct registry *reg, struct registry_admission *adm,
                     const struct message *msg, struct service_result *out,
                     char *err, size_t errlen)
{
    (void)reg;
    (void)adm;
    memset(out, 0, sizeof *out);
    if (msg->id_len == 0 || msg->id == NULL)
        __builtin_trap(); /* validation must have refused it */
    out->passed = msg->payload_len % 2 == 0;
    out->verdict.checks = 2;
    if (!out->passed)
        out->verdict.failed[out->verdict.nfailed++] = RULE_HEX_PAYLOAD;
    err[0] = '\0';
    (void)errlen;
    return msg->payload_len % 7 == 3 ? POOLD_ERR_CONFLICT : POOLD_OK;
}

int registry_process_batch(struct registry *reg, struct registry_admission *adm,
                           struct service_job *jobs, size_t n, char *err,
                           size_t errlen)
{
    if (n == 0)
        __builtin_trap(); /* validation must have refused it */
    for (size_t i = 0; i < n; i++) {
        jobs[i].status = registry_process(reg, adm, jobs[i].msg,
                                          &jobs[i].result, err, errlen);
        if (jobs[i].status == POOLD_ERR_CONFLICT && i % 2 == 1)
            return POOLD_ERR_COMMIT_UNKNOWN; /* a batch-wide failure too */
    }
    return POOLD_OK;
}

int registry_pool_stats(struct registry *reg, const char *org_id,
                        struct pool_stats *out)
{
    (void)reg;
    memset(out, 0, sizeof *out);
    out->max_size = 4;
    return org_id[0] == 'x' ? POOLD_ERR_UNKNOWN_ORG : POOLD_OK;
}

int registry_resize(struct registry *reg, const char *org_id, unsigned size,
                    struct pool_stats *out, char *err, size_t errlen)
{
    (void)reg;
    (void)org_id;
    memset(out, 0, sizeof *out);
    if (size < 1 || size > 256)
        __builtin_trap(); /* validation must have refused it */
    out->max_size = size;
    err[0] = '\0';
    (void)errlen;
    return POOLD_OK;
}

int registry_resize_by(struct registry *reg, const char *org_id, unsigned size,
                       const struct audit_actor *actor, struct pool_stats *out,
                       char *err, size_t errlen)
{
    (void)actor;
    return registry_resize(reg, org_id, size, out, err, errlen);
}

int registry_admit(struct registry *reg, const char *org_id,
                   struct registry_admission *adm, char *err, size_t errlen)
{
    (void)reg;
    err[0] = '\0';
    (void)errlen;
    /* The stubbed registry_process() needs none. */
    adm->org = NULL;
    adm->act = NULL;
    return org_id[0] == 'x' ? POOLD_ERR_UNKNOWN_ORG : POOLD_OK;
}

void registry_admission_release(struct registry_admission *adm)
{
    adm->org = NULL;
    adm->act = NULL;
}

/* No database: admin routes that need one answer 503. */
int registry_admin_begin(struct registry *reg, struct db_conn **conn, char *err,
                         size_t errlen)
{
    (void)reg;
    *conn = NULL;
    snprintf(err, errlen, "no database in the fuzzer");
    return POOLD_ERR_DB;
}

void registry_admin_end(struct registry *reg, struct db_conn *conn, bool wrote)
{
    (void)reg;
    (void)conn;
    (void)wrote;
    __builtin_trap(); /* never lent, so never given back */
}

void registry_foreach_pool(struct registry *reg,
                           void (*fn)(void *arg, const char *org_id,
                                      const struct pool_stats *stats),
                           void *arg)
{
    struct pool_stats st = {.max_size = 4, .idle = 1};
    (void)reg;
    fn(arg, "org_000", &st);
}

uint64_t registry_foreach_pool_freed(struct registry *reg,
                                     void (*fn)(void *arg, const char *org_id,
                                                const struct pool_stats *stats),
                                     void *arg, struct pool_stats *freed)
{
    if (freed != NULL)
        memset(freed, 0, sizeof *freed);
    registry_foreach_pool(reg, fn, arg);
    return 0;
}

void registry_conn_stats(struct registry *reg, struct pool_stats *out)
{
    (void)reg;
    memset(out, 0, sizeof *out);
    out->max_size = 32;
}

void registry_commit_totals(struct registry *reg, struct reg_commit_totals *out)
{
    (void)reg;
    memset(out, 0, sizeof *out);
}

uint64_t registry_pools_freed(struct registry *reg)
{
    (void)reg;
    return 0;
}

uint64_t registry_freed_stats(struct registry *reg, struct pool_stats *out)
{
    (void)reg;
    if (out != NULL)
        memset(out, 0, sizeof *out);
    return 0;
}

bool registry_is_ready(struct registry *reg)
{
    (void)reg;
    return true;
}

bool registry_awaits_grant(struct registry *reg)
{
    (void)reg;
    return false;
}

/* No database: GET /orgs/{org_id}/messages/{id} answers 503 once its
 * checks pass. */
int registry_message_get(struct registry *reg, const char *org_id,
                         const char *message_id, long long retention_s,
                         char **json, char *err, size_t errlen)
{
    (void)reg;
    (void)org_id;
    (void)retention_s;
    *json = NULL;
    if (message_id[0] == '\0')
        __builtin_trap(); /* validation must have refused it */
    snprintf(err, errlen, "no database in the fuzzer");
    return POOLD_ERR_DB;
}

int registry_drain(struct registry *reg, const char *org_id,
                   const struct audit_actor *actor, struct pool_stats *out,
                   char *err, size_t errlen)
{
    (void)actor;
    err[0] = '\0';
    (void)errlen;
    return registry_pool_stats(reg, org_id, out);
}

int registry_is_paused(struct registry *reg, const char *org_id, bool *out)
{
    (void)reg;
    *out = org_id[0] == 'p';
    return org_id[0] == 'x' ? POOLD_ERR_UNKNOWN_ORG : POOLD_OK;
}

int registry_set_paused(struct registry *reg, const char *org_id, bool paused,
                        const struct audit_actor *actor, char *err,
                        size_t errlen)
{
    (void)actor;
    (void)reg;
    (void)paused;
    err[0] = '\0';
    (void)errlen;
    return org_id[0] == 'd' ? POOLD_ERR_DB : POOLD_OK;
}

int registry_holders(struct registry *reg, const char *org_id,
                     struct holder_info **out, size_t *n)
{
    (void)reg;
    *n = org_id[0] == 'h' ? 1 : 0;
    *out = *n ? calloc(1, sizeof **out) : NULL;
    if (*n && *out == NULL)
        return POOLD_ERR_NOMEM;
    return POOLD_OK;
}

/* The cluster, stubbed: a standalone replica with no peers listed. The
 * handlers get a token pointer (never dereferenced): the real binary always
 * has a cluster, and GET /cluster answers 500 without one. */
static char cluster_token;

size_t cluster_snapshot(struct cluster *c, struct cluster_replica *out,
                        size_t max)
{
    (void)c;
    (void)out;
    (void)max;
    return 0;
}

/* ------------------------------------- the tenant tables, never reached */

/* cfg.tenants is NULL: no key or rate-limit lookup happens. */
struct keys_set *tenants_keys(struct tenants *t)
{
    (void)t;
    __builtin_trap();
}

struct ratelimit_table *tenants_limits(struct tenants *t)
{
    (void)t;
    __builtin_trap();
}

/* The admin routes: registry_admin_begin() never lends a connection. */
int tenants_org_list(struct db_conn *conn, const char *after, unsigned limit,
                     char **json, char *err, size_t errlen)
{
    (void)conn, (void)after, (void)limit, (void)json, (void)err, (void)errlen;
    __builtin_trap();
}

int audit_list(struct db_conn *conn, const char *org_id, unsigned limit,
               char **json, char *err, size_t errlen)
{
    (void)conn, (void)org_id, (void)limit, (void)json, (void)err, (void)errlen;
    __builtin_trap();
}

int tenants_org_get(struct db_conn *conn, const char *org_id, char **json,
                    char *err, size_t errlen)
{
    (void)conn, (void)org_id, (void)json, (void)err, (void)errlen;
    __builtin_trap();
}

int tenants_key_list(struct db_conn *conn, const char *org_id,
                     const char *after_id, unsigned limit, char **json,
                     char *err, size_t errlen)
{
    (void)conn, (void)org_id, (void)after_id, (void)limit, (void)json;
    (void)err, (void)errlen;
    __builtin_trap();
}

int tenants_org_put(struct db_conn *conn, const struct tenants_org *org,
                    const struct audit_actor *actor, bool *created, char **json,
                    char *err, size_t errlen)
{
    (void)conn, (void)org, (void)actor, (void)created, (void)json, (void)err,
        (void)errlen;
    __builtin_trap();
}

int tenants_org_delete(struct db_conn *conn, const char *org_id,
                       const struct audit_actor *actor, char *err,
                       size_t errlen)
{
    (void)conn, (void)org_id, (void)actor, (void)err, (void)errlen;
    __builtin_trap();
}

int tenants_key_create(struct db_conn *conn, const char *org_id,
                       const char *key_id, const unsigned char *digest,
                       const char *label, const struct audit_actor *actor,
                       char **json, char *err, size_t errlen)
{
    (void)conn, (void)org_id, (void)key_id, (void)digest, (void)label,
        (void)actor, (void)json, (void)err, (void)errlen;
    __builtin_trap();
}

int tenants_key_revoke(struct db_conn *conn, const char *org_id,
                       const char *key_id, const struct audit_actor *actor,
                       char *err, size_t errlen)
{
    (void)conn, (void)org_id, (void)key_id, (void)actor, (void)err,
        (void)errlen;
    __builtin_trap();
}

/* ----------------------------------------------------------- the target */

static struct handlers *h;
static struct metrics *m;

static void setup(void)
{
    struct handlers_config cfg = {.reg = NULL,
                                  .admin_token = "tok",
                                  .pool_ceiling = 256,
                                  .retry_after_s = 1};
    log_init(LOG_FORMAT_TEXT, LOG_ERROR);
    static const char *names[64];
    for (size_t i = 0; i < handlers_nroutes && i < 64; i++)
        names[i] = handlers_routes[i].pattern;
    if (metrics_create(names, handlers_nroutes, &m) != POOLD_OK)
        abort();
    cfg.metrics = m;
    cfg.cluster = (struct cluster *)(void *)&cluster_token;
    if (handlers_create(&cfg, &h) != POOLD_OK)
        abort();
}

/* Traps unless obj has the string members m[0..n) and no others. */
static void same_members(json_t *obj, const struct jsonfast_member *mem,
                         size_t n, size_t others)
{
    if (!json_is_object(obj) || json_object_size(obj) != n + others)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(obj, mem[i].key);
        if (!json_is_string(v) || json_string_length(v) != mem[i].val_len ||
            memcmp(json_string_value(v), mem[i].val, mem[i].val_len) != 0)
            __builtin_trap();
    }
}

/* jsonfast must never accept what jansson refuses, and must read the
 * members jansson reads (process_api.c trusts it for POST /process and
 * POST /process/batch). */
static void jsonfast_agrees(const char *body, size_t len)
{
    char *buf = malloc(len ? len : 1);
    struct jsonfast_member mem[8];
    struct jsonfast_list list = {0};
    size_t n;
    json_t *root =
        json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);

    memcpy(buf, body, len);
    if (jsonfast_read_flat(buf, len, mem, 8, &n))
        same_members(root, mem, n, 0);
    memcpy(buf, body, len);
    if (jsonfast_read_list(buf, len, mem, 8, &n, 8, &list)) {
        json_t *arr = list.key ? json_object_get(root, list.key) : NULL;
        same_members(root, mem, n, list.key != NULL);
        if (list.key != NULL &&
            (!json_is_array(arr) || json_array_size(arr) != list.n))
            __builtin_trap();
        for (size_t i = 0; list.key != NULL && i < list.n; i++) {
            size_t from = i > 0 ? list.ends[i - 1] : 0;
            same_members(json_array_get(arr, i), list.items + from,
                         list.ends[i] - from, 0);
        }
    }
    jsonfast_list_free(&list);
    json_decref(root);
    free(buf);
}

/* Input: first byte picks the route; then "content-type \n org \n body". */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (h == NULL)
        setup();
    if (size < 1)
        return 0;
    const struct route *route = &handlers_routes[data[0] % handlers_nroutes];
    /* Content-Type and the org id are C strings (as MHD gives them); the
     * body is exactly body_len bytes with no terminator, so ASan sees any
     * read past it. */
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    const char *nl1 = memchr(in, '\n', len);
    const char *org_in = nl1 ? nl1 + 1 : in + len;
    const char *nl2 = memchr(org_in, '\n', len - (size_t)(org_in - in));
    const char *body_in = nl2 ? nl2 + 1 : in + len;
    size_t ct_len = nl1 ? (size_t)(nl1 - in) : 0;
    size_t org_len = nl2 ? (size_t)(nl2 - org_in) : 0;
    size_t body_len = len - (size_t)(body_in - in);
    char *ct = strndup(in, ct_len);
    char *org = strndup(org_in, org_len);
    char *body = malloc(body_len ? body_len : 1);
    memcpy(body, body_in, body_len);
    struct http_request req = {
        .method = route->method,
        .path = route->pattern,
        .param = org,
        .param_len = org_len,
        .body = body,
        .body_len = body_len,
        .content_type = ct_len ? ct : NULL,
        .authorization = "Bearer tok",
        .request_id = "fuzz",
    };
    struct http_response resp;
    memset(&resp, 0, sizeof resp);
    jsonfast_agrees(body, body_len);
    handlers_run(h, route, &req, &resp);
    /* No input may produce a 5xx but 503, and 504 commit_unknown when the
     * stubbed registry says the commit's outcome is unknown. */
    if (resp.status < 200 ||
        (resp.status >= 500 && resp.status != 503 &&
         !(resp.status == 504 && resp.error_code != NULL &&
           strcmp(resp.error_code, "commit_unknown") == 0)))
        __builtin_trap();
    free(resp.body);
    free(ct);
    free(org);
    free(body);
    return 0;
}
