/* check_handlers.c — the handlers' pure pieces: the status-to-HTTP table,
 * token comparison, bearer parsing, route matching and the bodies of POST
 * /process and POST /process/batch. No database, no server. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "handlers.h"
#include "handlers_test.h"
#include "http.h"
#include "status.h"

/* ---- helpers ------------------------------------------------------------ */

/* A handlers object with only what the pure functions read. */
static struct handlers *handlers_for_test(unsigned max_batch)
{
    struct handlers_config cfg = {.admin_token = "admin-token",
                                  .retry_after_s = 7,
                                  .paused_retry_after_s = 11,
                                  .max_batch = max_batch};
    struct handlers *h = NULL;

    ck_assert_int_eq(handlers_create(&cfg, &h), POOLD_OK);
    return h;
}

static json_t *json_of(const char *text)
{
    json_error_t e;
    json_t *root = json_loads(text, 0, &e);

    ck_assert_msg(root != NULL, "bad test JSON %s: %s", text, e.text);
    return root;
}

/* resp is a JSON error answer with this status and code; returns its
 * message (static copy) and frees the body. */
static const char *error_of(struct http_response *resp, unsigned status,
                            const char *code)
{
    static char message[256];
    json_error_t e;
    json_t *body;
    const char *c = NULL, *m = NULL;

    ck_assert_uint_eq(resp->status, status);
    ck_assert_ptr_nonnull(resp->body);
    body = json_loadb(resp->body, resp->body_len, 0, &e);
    ck_assert_msg(body != NULL, "answer is not JSON: %s", e.text);
    ck_assert_int_eq(
        json_unpack(body, "{s:{s:s,s:s}}", "error", "code", &c, "message", &m),
        0);
    ck_assert_str_eq(c, code);
    ck_assert_str_eq(resp->error_code, code);
    snprintf(message, sizeof message, "%s", m);
    json_decref(body);
    free(resp->body);
    resp->body = NULL;
    return message;
}

/* ---- the status-to-HTTP table ------------------------------------------- */

static const struct {
    int status;
    unsigned http;
    const char *code;
    unsigned retry_after_s; /* with handlers_for_test()'s settings */
} expected_status[] = {
    {POOLD_ERR_NOMEM, 500, "internal_error", 0},
    {POOLD_ERR_INVALID, 400, "invalid_message", 0},
    {POOLD_ERR_TIMEOUT, 503, "pool_exhausted", 7},
    {POOLD_ERR_WAITERS_FULL, 503, "pool_exhausted", 7},
    {POOLD_ERR_SHUTDOWN, 503, "shutting_down", 0},
    {POOLD_ERR_CREATE, 503, "database_unavailable", 0},
    {POOLD_ERR_DB, 503, "database_unavailable", 0},
    {POOLD_ERR_UNKNOWN_ORG, 404, "unknown_org", 0},
    {POOLD_ERR_MISCONFIGURED, 503, "org_misconfigured", 0},
    {POOLD_ERR_CONFLICT, 409, "id_conflict", 0},
    {POOLD_ERR_NOT_FOUND, 404, "unknown_org", 0},
    {POOLD_ERR_NOT_READY, 503, "database_unavailable", 0},
    {POOLD_ERR_COMMIT_UNKNOWN, 504, "commit_unknown", 0},
    {POOLD_ERR_PAUSED, 503, "org_paused", 11},
    {POOLD_ERR_DB_BUSY, 503, "database_unavailable", 0},
    {POOLD_ERR_CONNS_BUSY, 503, "pool_exhausted", 7},
};
#define NEXPECTED (sizeof expected_status / sizeof expected_status[0])

/* Every error status poold names (poold_status_str knows it) is in the
 * table above: a new status cannot go unmapped silently. */
START_TEST(status_every_error_is_listed)
{
    size_t named = 0;

    for (int s = -1; s > -100; s--) {
        bool listed = false;
        if (strcmp(poold_status_str(s), "unknown status") == 0)
            continue;
        named++;
        for (size_t i = 0; i < NEXPECTED; i++)
            listed |= expected_status[i].status == s;
        ck_assert_msg(listed, "status %d (%s) is not in the test's table", s,
                      poold_status_str(s));
    }
    ck_assert_uint_eq(named, NEXPECTED);
}
END_TEST

/* Each status: a 4xx/5xx with a code and a message; an answer with that
 * code in its body; Retry-After exactly where the table says. */
START_TEST(status_maps_to_http_code_and_retry_after)
{
    struct handlers *h = handlers_for_test(0);

    for (size_t i = 0; i < NEXPECTED; i++) {
        unsigned http = 0;
        const char *code = NULL, *message = NULL;
        struct http_response resp = {0};
        int s = expected_status[i].status;

        handlers_status_http(s, &http, &code, &message);
        ck_assert_msg(http == expected_status[i].http, "%s: %u",
                      poold_status_str(s), http);
        ck_assert_str_eq(code, expected_status[i].code);
        ck_assert_msg(http >= 400 && http <= 599, "%u", http);
        ck_assert_msg(message != NULL && message[0] != '\0', "%s", code);

        handlers_error_status(h, &resp, s);
        ck_assert_str_eq(error_of(&resp, http, code), message);
        ck_assert_msg(resp.retry_after_s == expected_status[i].retry_after_s,
                      "%s: Retry-After %u", code, resp.retry_after_s);
    }
    handlers_destroy(h);
}
END_TEST

START_TEST(status_unknown_is_internal_error)
{
    static const int odd[] = {POOLD_OK, 1, -99, -1000};
    struct http_response resp = {0};

    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        unsigned http = 0;
        const char *code = NULL, *message = NULL;
        handlers_status_http(odd[i], &http, &code, &message);
        ck_assert_uint_eq(http, 500);
        ck_assert_str_eq(code, "internal_error");
        ck_assert_ptr_nonnull(message);
    }
    /* Without handlers (no settings): no Retry-After, still an answer. */
    handlers_error_status(NULL, &resp, POOLD_ERR_TIMEOUT);
    error_of(&resp, 503, "pool_exhausted");
    ck_assert_uint_eq(resp.retry_after_s, 0);
}
END_TEST

/* ---- tokens ------------------------------------------------------------- */

static bool token_eq(const char *given, const char *want)
{
    return handlers_token_equal(given, strlen(given), want, strlen(want));
}

START_TEST(token_equal_only_for_the_same_bytes)
{
    ck_assert(token_eq("s3cret-token", "s3cret-token"));
    ck_assert(token_eq("", ""));
    ck_assert(!token_eq("s3cret-tokem", "s3cret-token"));  /* last byte */
    ck_assert(!token_eq("t3cret-token", "s3cret-token"));  /* first byte */
    ck_assert(!token_eq("s3cret", "s3cret-token"));        /* a prefix */
    ck_assert(!token_eq("s3cret-token!", "s3cret-token")); /* longer */
    ck_assert(!token_eq("", "s3cret-token"));
    ck_assert(!token_eq("x", ""));
    ck_assert(!token_eq("S3CRET-TOKEN", "s3cret-token")); /* case counts */
    /* Lengths, not NULs, delimit: an embedded NUL is a byte like another. */
    ck_assert(handlers_token_equal("ab\0c", 4, "ab\0c", 4));
    ck_assert(!handlers_token_equal("ab\0c", 4, "ab\0d", 4));
    ck_assert(!handlers_token_equal("ab", 2, "ab\0", 3));
}
END_TEST

/* tok/len of a header, or NULL when it is no bearer token. */
static char *bearer_of(const char *auth)
{
    static char buf[128];
    const char *tok = NULL;
    size_t len = 0;

    if (!handlers_bearer_token(auth, &tok, &len))
        return NULL;
    ck_assert_uint_lt(len, sizeof buf);
    memcpy(buf, tok, len);
    buf[len] = '\0';
    return buf;
}

START_TEST(bearer_token_parsing)
{
    ck_assert_str_eq(bearer_of("Bearer abc"), "abc");
    ck_assert_str_eq(bearer_of("bearer abc"), "abc"); /* scheme: any case */
    ck_assert_str_eq(bearer_of("BEARER abc"), "abc");
    ck_assert_str_eq(bearer_of("Bearer    abc \t "), "abc");
    ck_assert_str_eq(bearer_of("Bearer a b"), "a b"); /* inside: kept */
    ck_assert_str_eq(bearer_of("Bearer "), "");       /* empty: no match */
    ck_assert_ptr_null(bearer_of(NULL));
    ck_assert_ptr_null(bearer_of(""));
    ck_assert_ptr_null(bearer_of("Bearer"));
    ck_assert_ptr_null(bearer_of("Basic YWRtaW46eA=="));
    ck_assert_ptr_null(bearer_of("Bearerabc"));
    ck_assert_ptr_null(bearer_of(" Bearer abc"));
}
END_TEST

/* ---- routing ------------------------------------------------------------ */

struct match {
    bool ok;
    char param[80], param2[80];
};

static struct match match(const char *pattern, const char *path)
{
    struct match m = {0};
    const char *p = NULL, *p2 = NULL;
    size_t n = 0, n2 = 0;

    m.ok = http_route_match(pattern, path, &p, &n, &p2, &n2);
    if (m.ok && p != NULL)
        snprintf(m.param, sizeof m.param, "%.*s", (int)n, p);
    if (m.ok && p2 != NULL)
        snprintf(m.param2, sizeof m.param2, "%.*s", (int)n2, p2);
    return m;
}

START_TEST(route_pattern_matching)
{
    struct match m;

    ck_assert(match("/stats", "/stats").ok);
    ck_assert_str_eq(match("/stats", "/stats").param, "");
    ck_assert(!match("/stats", "/stats/").ok);
    ck_assert(!match("/stats", "//stats").ok);
    ck_assert(!match("/stats", "/stat").ok);
    ck_assert(!match("/stats", "/statsx").ok);
    ck_assert(!match("/stats", "stats").ok);
    ck_assert(!match("/stats", "").ok);
    ck_assert(!match("/process", "/process/batch").ok);
    ck_assert(!match("/process/batch", "/process").ok);

    m = match("/pools/{org_id}", "/pools/org_001");
    ck_assert(m.ok);
    ck_assert_str_eq(m.param, "org_001");
    ck_assert_str_eq(m.param2, "");
    ck_assert(!match("/pools/{org_id}", "/pools/").ok); /* empty segment */
    ck_assert(!match("/pools/{org_id}", "/pools").ok);
    ck_assert(!match("/pools/{org_id}", "/pools/a/b").ok);
    ck_assert(!match("/pools/{org_id}/size", "/pools//size").ok);
    /* Any bytes but "/" make a segment: the handler validates the id. */
    ck_assert_str_eq(match("/pools/{org_id}", "/pools/a%20b").param, "a%20b");

    m = match("/orgs/{org_id}/keys/{key_id}", "/orgs/o1/keys/k_9");
    ck_assert(m.ok);
    ck_assert_str_eq(m.param, "o1");
    ck_assert_str_eq(m.param2, "k_9");
    ck_assert(!match("/orgs/{org_id}/keys/{key_id}", "/orgs/o1/keys/").ok);
    ck_assert(!match("/orgs/{org_id}/keys/{key_id}", "/orgs/o1/key/k").ok);

    /* "{...*}": the rest of the path, slashes included (a message id). */
    m = match("/orgs/{org_id}/messages/{message_id*}",
              "/orgs/o1/messages/a/b/");
    ck_assert(m.ok);
    ck_assert_str_eq(m.param, "o1");
    ck_assert_str_eq(m.param2, "a/b/");
    ck_assert_str_eq(
        match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages/m1")
            .param2,
        "m1");
    ck_assert(
        !match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages/")
             .ok);
    ck_assert(
        !match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages")
             .ok);
    /* Empty segments belong to the rest: ids "/x", "a//b", "/". */
    ck_assert_str_eq(
        match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages//x")
            .param2,
        "/x");
    ck_assert_str_eq(
        match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages/a//b")
            .param2,
        "a//b");
    ck_assert_str_eq(
        match("/orgs/{org_id}/messages/{message_id*}", "/orgs/o1/messages//")
            .param2,
        "/");
    ck_assert(
        !match("/orgs/{org_id}/messages/{message_id*}", "/orgs//messages/x")
             .ok);
}
END_TEST

/* The route the table gives (method, path), as the server looks it up:
 * the first row whose pattern matches and method is the same; NULL if
 * none. *allowed: whether the path exists under another method (405). */
static const struct route *route_of(const char *method, const char *path,
                                    bool *allowed)
{
    *allowed = false;
    for (size_t i = 0; i < handlers_nroutes; i++) {
        const struct route *r = &handlers_routes[i];
        const char *p, *p2;
        size_t n, n2;
        if (!http_route_match(r->pattern, path, &p, &n, &p2, &n2))
            continue;
        if (strcmp(r->method, method) == 0)
            return r;
        *allowed = true;
    }
    return NULL;
}

/* Every row is reachable: no earlier row shadows it. */
START_TEST(route_table_rows_are_all_reachable)
{
    for (size_t i = 0; i < handlers_nroutes; i++) {
        const struct route *r = &handlers_routes[i];
        char path[128];
        size_t o = 0;
        bool allowed;

        ck_assert_ptr_nonnull(r->fn);
        /* The pattern with each "{...}" made a concrete segment. */
        for (const char *c = r->pattern; *c != '\0' && o + 4 < sizeof path;) {
            if (*c == '{') {
                memcpy(path + o, "x_1", 3);
                o += 3;
                c = strchr(c, '}') + 1;
            } else {
                path[o++] = *c++;
            }
        }
        path[o] = '\0';
        ck_assert_msg(route_of(r->method, path, &allowed) == r, "%s %s",
                      r->method, path);
    }
}
END_TEST

START_TEST(route_table_lookups)
{
    const struct route *r;
    bool allowed;

    r = route_of("POST", "/process", &allowed);
    ck_assert_ptr_nonnull(r);
    ck_assert((r->flags & ROUTE_CLIENT_KEY) && !(r->flags & ROUTE_ADMIN));
    ck_assert_int_eq(r->body, BODY_DEFAULT);
    r = route_of("POST", "/process/batch", &allowed);
    ck_assert_ptr_nonnull(r);
    ck_assert((r->flags & ROUTE_CLIENT_KEY) && !(r->flags & ROUTE_ADMIN));
    ck_assert_int_eq(r->body, BODY_BATCH);
    ck_assert_ptr_ne(r, route_of("POST", "/process", &allowed));
    r = route_of("GET", "/healthz", &allowed);
    ck_assert(r != NULL && r->flags == ROUTE_OPEN);
    r = route_of("GET", "/readyz", &allowed);
    ck_assert(r != NULL && !(r->flags & ROUTE_ADMIN));
    r = route_of("GET", "/metrics", &allowed);
    ck_assert(r != NULL && (r->flags & ROUTE_ADMIN));
    r = route_of("PUT", "/pools/org_001/size", &allowed);
    ck_assert(r != NULL && (r->flags & ROUTE_ADMIN));
    r = route_of("DELETE", "/orgs/o1/keys/k1", &allowed);
    ck_assert(r != NULL && (r->flags & ROUTE_ADMIN));

    /* 405: the path exists under another method. */
    ck_assert_ptr_null(route_of("GET", "/process", &allowed));
    ck_assert(allowed);
    ck_assert_ptr_null(route_of("DELETE", "/stats", &allowed));
    ck_assert(allowed);
    /* 404: no such path. */
    ck_assert_ptr_null(route_of("GET", "/nope", &allowed));
    ck_assert(!allowed);
    ck_assert_ptr_null(route_of("GET", "/pools/", &allowed));
    ck_assert(!allowed);
    ck_assert_ptr_null(route_of("GET", "/stats/", &allowed));
    ck_assert(!allowed);
}
END_TEST

/* ---- POST /process ------------------------------------------------------ */

/* Validate text as a POST /process body; on failure return the error's
 * message (for the code given), on success NULL with *m filled. */
static const char *message_error(const char *text, const char *code,
                                 struct handlers_message *m)
{
    json_t *root = json_of(text);
    struct http_response resp = {0};
    const char *msg = NULL;

    if (!handlers_validate_message(root, m, &resp))
        msg = error_of(&resp, 400, code);
    json_decref(root);
    ck_assert_ptr_null(resp.body);
    return msg;
}

START_TEST(process_body_valid)
{
    struct handlers_message m;
    json_t *root = json_of("{\"id\":\"m-1\",\"org_id\":\"org_001\","
                           "\"payload\":\"caf\\u00e9\"}");
    struct http_response resp = {0};

    ck_assert(handlers_validate_message(root, &m, &resp));
    ck_assert_uint_eq(m.id_len, 3);
    ck_assert_mem_eq(m.id, "m-1", 3);
    ck_assert_uint_eq(m.org_id_len, 7);
    ck_assert_mem_eq(m.org_id, "org_001", 7);
    ck_assert_uint_eq(m.payload_len, 5); /* UTF-8 bytes */
    ck_assert_mem_eq(m.payload, "caf\xc3\xa9", 5);
    ck_assert_str_eq(resp.org, "org_001");
    ck_assert_ptr_null(resp.body);
    json_decref(root);

    /* An empty payload and a 128-byte id are valid. */
    char body[400];
    snprintf(body, sizeof body,
             "{\"id\":\"%0128d\",\"org_id\":\"o\",\"payload\":\"\"}", 0);
    ck_assert_ptr_null(message_error(body, NULL, &m));
    ck_assert_uint_eq(m.id_len, 128);
    ck_assert_uint_eq(m.payload_len, 0);
}
END_TEST

START_TEST(process_body_names_the_bad_member)
{
    static const struct {
        const char *body, *code, *says;
    } bad[] = {
        {"{\"org_id\":\"o\",\"payload\":\"p\"}", "invalid_message",
         "field 'id' is required and must be a string"},
        {"{\"id\":7,\"org_id\":\"o\",\"payload\":\"p\"}", "invalid_message",
         "field 'id' is required"},
        {"{\"id\":null,\"org_id\":\"o\",\"payload\":\"p\"}", "invalid_message",
         "field 'id' is required"},
        {"{\"id\":\"\",\"org_id\":\"o\",\"payload\":\"p\"}", "invalid_message",
         "field 'id' must be 1-128 bytes"},
        {"{\"id\":\"a\\u0001\",\"org_id\":\"o\",\"payload\":\"p\"}",
         "invalid_message", "without control characters"},
        {"{\"id\":\"a\\u007f\",\"org_id\":\"o\",\"payload\":\"p\"}",
         "invalid_message", "without control characters"},
        {"{\"id\":\"a\\u0085\",\"org_id\":\"o\",\"payload\":\"p\"}",
         "invalid_message", "without control characters"},
        {"{\"id\":\"a\",\"payload\":\"p\"}", "invalid_org_id",
         "field 'org_id' must be a string"},
        {"{\"id\":\"a\",\"org_id\":\"bad org\",\"payload\":\"p\"}",
         "invalid_org_id", "^[A-Za-z0-9_-]{1,64}$"},
        {"{\"id\":\"a\",\"org_id\":\"\",\"payload\":\"p\"}", "invalid_org_id",
         "field 'org_id'"},
        {"{\"id\":\"a\",\"org_id\":[\"o\"],\"payload\":\"p\"}",
         "invalid_org_id", "field 'org_id'"},
        {"{\"id\":\"a\",\"org_id\":\"o\"}", "invalid_message",
         "field 'payload' is required and must be a string"},
        {"{\"id\":\"a\",\"org_id\":\"o\",\"payload\":{}}", "invalid_message",
         "field 'payload' is required"},
        /* Several bad members: the first in id, org_id, payload order. */
        {"{\"id\":\"\",\"org_id\":\"bad org\"}", "invalid_message",
         "field 'id'"},
        {"{\"id\":\"a\",\"org_id\":\"bad org\"}", "invalid_org_id",
         "field 'org_id'"},
    };
    struct handlers_message m;
    char body[300];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *msg = message_error(bad[i].body, bad[i].code, &m);
        ck_assert_msg(msg != NULL, "accepted: %s", bad[i].body);
        ck_assert_msg(strstr(msg, bad[i].says) != NULL, "%s: %s", bad[i].body,
                      msg);
    }
    /* Bounds: a 129-byte id, a 65-byte org id. */
    snprintf(body, sizeof body,
             "{\"id\":\"%0129d\",\"org_id\":\"o\",\"payload\":\"\"}", 0);
    ck_assert_ptr_nonnull(message_error(body, "invalid_message", &m));
    snprintf(body, sizeof body,
             "{\"id\":\"a\",\"org_id\":\"%065d\",\"payload\":\"\"}", 0);
    ck_assert_ptr_nonnull(message_error(body, "invalid_org_id", &m));
    snprintf(body, sizeof body,
             "{\"id\":\"a\",\"org_id\":\"%064d\",\"payload\":\"\"}", 0);
    ck_assert_ptr_null(message_error(body, NULL, &m));
}
END_TEST

/* ---- POST /process/batch ------------------------------------------------ */

#define BATCH_MAX 4

/* Validate root as a batch body (max BATCH_MAX); on failure the error's
 * message (for code), on success NULL with out/n filled (borrowed from
 * root). */
static const char *batch_error(json_t *root, const char *code,
                               struct message *out, size_t *n)
{
    struct handlers *h = handlers_for_test(BATCH_MAX);
    struct http_request req = {.request_id = "req-42"};
    struct http_response resp = {0};
    const char *msg = NULL;

    if (!handlers_validate_batch(h, &req, root, out, BATCH_MAX, n, &resp))
        msg = error_of(&resp, 400, code);
    else
        ck_assert_str_eq(resp.org, "o1");
    handlers_destroy(h);
    return msg;
}

START_TEST(batch_body_valid)
{
    struct message m[BATCH_MAX];
    size_t n = 0;
    json_t *root = json_of("{\"org_id\":\"o1\",\"messages\":["
                           "{\"id\":\"a\",\"payload\":\"1\"},"
                           "{\"id\":\"b\",\"payload\":\"\","
                           "\"org_id\":\"o1\"},"
                           "{\"id\":\"a\",\"payload\":\"3\"}]}");

    ck_assert_ptr_null(batch_error(root, NULL, m, &n));
    ck_assert_uint_eq(n, 3);
    /* Each message carries the batch's request id and route (its holder);
     * a repeated id is the commit's business, not the validator's. */
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(m[i].request_id, "req-42");
        ck_assert_str_eq(m[i].route, "POST /process/batch");
        ck_assert_uint_eq(m[i].id_len, 1);
    }
    ck_assert_uint_eq(m[1].payload_len, 0);
    ck_assert_mem_eq(m[2].payload, "3", 1);
    json_decref(root);
}
END_TEST

START_TEST(batch_body_names_the_bad_member)
{
    static const struct {
        const char *body, *code, *says;
    } bad[] = {
        {"{\"messages\":[{\"id\":\"a\",\"payload\":\"p\"}]}", "invalid_org_id",
         "field 'org_id'"},
        {"{\"org_id\":\"o1\"}", "invalid_message",
         "field 'messages' must be an array of 1 to 4 messages"},
        {"{\"org_id\":\"o1\",\"messages\":{}}", "invalid_message",
         "field 'messages' must be an array"},
        {"{\"org_id\":\"o1\",\"messages\":[]}", "invalid_message",
         "field 'messages' must be an array of 1 to 4"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\"},"
         "{\"id\":\"b\",\"payload\":\"p\"},{\"id\":\"c\",\"payload\":\"p\"},"
         "{\"id\":\"d\",\"payload\":\"p\"},{\"id\":\"e\",\"payload\":\"p\"}]}",
         "invalid_message", "of 1 to 4 messages"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\"},"
         "\"b\"]}",
         "invalid_message", "field 'messages[1]' must be an object"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\"},"
         "{\"id\":\"b\",\"payload\":\"p\"},{\"id\":\"c\",\"payload\":\"p\"},"
         "{\"id\":\"d\"}]}",
         "invalid_message",
         "field 'messages[3].payload' is required and must be a string"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\"},"
         "{\"id\":\"\",\"payload\":\"p\"}]}",
         "invalid_message", "field 'messages[1].id' must be 1-128 bytes"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"payload\":\"p\"}]}",
         "invalid_message", "field 'messages[0].id' is required"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\"},"
         "{\"id\":\"b\",\"payload\":\"p\",\"org_id\":\"o2\"}]}",
         "invalid_org_id",
         "field 'messages[1].org_id' must equal the batch's org_id"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\","
         "\"org_id\":\"o1x\"}]}",
         "invalid_org_id", "field 'messages[0].org_id'"},
        {"{\"org_id\":\"o1\",\"messages\":[{\"id\":\"a\",\"payload\":\"p\","
         "\"org_id\":7}]}",
         "invalid_org_id", "field 'messages[0].org_id'"},
    };
    struct message m[BATCH_MAX];
    size_t n = 99;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *root = json_of(bad[i].body);
        const char *msg = batch_error(root, bad[i].code, m, &n);
        json_decref(root);
        ck_assert_msg(msg != NULL, "accepted: %s", bad[i].body);
        ck_assert_msg(strstr(msg, bad[i].says) != NULL, "%s: %s", bad[i].body,
                      msg);
        ck_assert_uint_eq(n, 0);
    }
}
END_TEST

static Suite *handlers_suite(void)
{
    Suite *s = suite_create("handlers");
    TCase *tc = tcase_create("status");

    tcase_add_test(tc, status_every_error_is_listed);
    tcase_add_test(tc, status_maps_to_http_code_and_retry_after);
    tcase_add_test(tc, status_unknown_is_internal_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("auth");
    tcase_add_test(tc, token_equal_only_for_the_same_bytes);
    tcase_add_test(tc, bearer_token_parsing);
    suite_add_tcase(s, tc);
    tc = tcase_create("routes");
    tcase_add_test(tc, route_pattern_matching);
    tcase_add_test(tc, route_table_rows_are_all_reachable);
    tcase_add_test(tc, route_table_lookups);
    suite_add_tcase(s, tc);
    tc = tcase_create("bodies");
    tcase_add_test(tc, process_body_valid);
    tcase_add_test(tc, process_body_names_the_bad_member);
    tcase_add_test(tc, batch_body_valid);
    tcase_add_test(tc, batch_body_names_the_bad_member);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(handlers_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
