/* admin_api.c — org management, org API keys and the audit log over HTTP. */
#include "admin_api.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "ratelimit.h"
#include "registry.h"
#include "rules.h"
#include "tenants.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* ---- shared steps ----------------------------------------------------- */

static struct registry *reg_of(struct handlers *h)
{
    return handlers_get_config(h)->reg;
}

/* A database failure: for a write its outcome may be unknown, say so. */
static void db_failed(struct http_response *resp, bool write)
{
    handlers_errorf(resp, 503, "database_unavailable",
                    write ? "the database did not answer: the change may or "
                            "may not be stored; GET it to see, retrying is "
                            "safe"
                          : "the database is unavailable");
}

/* Map a tenants status to the answer; the success case is the caller's. */
static void fail(struct handlers *h, struct http_response *resp, int rc,
                 bool write)
{
    if (rc == POOLD_ERR_DB)
        db_failed(resp, write);
    else if (rc == POOLD_ERR_NOT_FOUND)
        handlers_errorf(resp, 404, "not_found", "no such key for this org");
    else if (rc == POOLD_ERR_UNKNOWN_ORG)
        handlers_errorf(resp, 404, "unknown_org", "no such org");
    else if (rc == POOLD_ERR_INVALID) /* only a key page's cursor */
        handlers_errorf(resp, 400, "invalid_message",
                        "query 'after' is not a key of this org");
    else
        handlers_error_status(h, resp, rc);
}

static void no_content(struct http_response *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->status = 204;
    resp->content_type = NULL;
}

static struct audit_actor actor_of(const struct http_request *req)
{
    struct audit_actor a = {req->scope ? req->scope : "admin",
                            req->client_address ? req->client_address : "",
                            req->request_id};
    return a;
}

/* ?limit=: absent gives def; else 1..PAGE_MAX or 400. */
static bool query_limit(const struct http_request *req, unsigned def,
                        unsigned *out, struct http_response *resp)
{
    const char *s = req->query ? req->query(req->query_arg, "limit") : NULL;
    char *end;
    long n;

    *out = def;
    if (s == NULL)
        return true;
    errno = 0;
    n = strtol(s, &end, 10);
    /* Digits only: strtol alone would take " 5" and "+5". */
    if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || n < 1 ||
        n > PAGE_MAX) {
        handlers_errorf(resp, 400, "invalid_message",
                        "query 'limit' must be an integer from 1 to 1000");
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/* An optional org id in the query (?after=, ?org_id=): NULL if absent. */
static bool query_org(const struct http_request *req, const char *name,
                      const char **out, struct http_response *resp)
{
    const char *s = req->query ? req->query(req->query_arg, name) : NULL;

    *out = s;
    if (s == NULL || orgid_is_valid(s, strlen(s)))
        return true;
    handlers_errorf(resp, 400, "invalid_org_id",
                    "query '%s' must match ^[A-Za-z0-9_-]{1,64}$", name);
    return false;
}

/* ---- orgs ------------------------------------------------------------- */

/* The reads: one page (?limit= and an optional org id: the org list, the
 * audit trail), one org's object, or a page of one org's keys. */
typedef int (*page_fn)(struct db_conn *conn, const char *org_id, unsigned limit,
                       char **json, char *err, size_t errlen);
typedef int (*org_read_fn)(struct db_conn *conn, const char *org_id,
                           char **json, char *err, size_t errlen);

struct admin_read {
    page_fn page;       /* or NULL: org, or keys */
    org_read_fn org;    /* or NULL: keys */
    const char *org_id; /* borrowed; NULL for a page of every org */
    const char *after;  /* keys: the key_id to start after, or NULL */
    unsigned limit;     /* for page and keys */
};

/* Run a read on the admin connection, answer 200 with the database's
 * JSON. */
static void read_json(struct handlers *h, struct http_response *resp,
                      const struct admin_read *r)
{
    struct db_conn *conn;
    char *json = NULL;
    int rc = registry_admin_begin(reg_of(h), &conn, resp->detail,
                                  sizeof resp->detail);

    if (rc == POOLD_OK) {
        if (r->page)
            rc = r->page(conn, r->org_id, r->limit, &json, resp->detail,
                         sizeof resp->detail);
        else if (r->org)
            rc = r->org(conn, r->org_id, &json, resp->detail,
                        sizeof resp->detail);
        else
            rc = tenants_key_list(conn, r->org_id, r->after, r->limit, &json,
                                  resp->detail, sizeof resp->detail);
        registry_admin_end(reg_of(h), conn, false);
    }
    if (rc != POOLD_OK)
        fail(h, resp, rc, false);
    else
        handlers_render_text(resp, 200, json);
}

static void read_page(struct handlers *h, const struct http_request *req,
                      struct http_response *resp, const char *org_param,
                      page_fn fn)
{
    struct admin_read r = {.page = fn};

    if (query_limit(req, PAGE_DEFAULT, &r.limit, resp) &&
        query_org(req, org_param, &r.org_id, resp))
        read_json(h, resp, &r);
}

static void read_org(struct handlers *h, const struct http_request *req,
                     struct http_response *resp, org_read_fn fn)
{
    struct admin_read r = {.org = fn, .org_id = resp->org};

    if (handlers_org_param(req, resp))
        read_json(h, resp, &r);
}

void admin_api_org_list(struct handlers *h, const struct http_request *req,
                        struct http_response *resp)
{
    read_page(h, req, resp, "after", tenants_org_list);
}

void admin_api_org_get(struct handlers *h, const struct http_request *req,
                       struct http_response *resp)
{
    read_org(h, req, resp, tenants_org_get);
}

/* Levels of arrays and objects a config may nest: rules need three or four;
 * jansson writes a tree back recursively, on a thread's stack. */
#define CONFIG_DEPTH_MAX 32
/* A real number at least this large becomes, in jsonb, an integer jansson
 * cannot read back (64 bits): the org would not load. */
#define CONFIG_REAL_MAX 9223372036854775808.0 /* 2^63 */

/* Whether v nests at most CONFIG_DEPTH_MAX - depth more levels and holds
 * no number poold could not read back; else why, in err. */
static bool config_storable(json_t *v, unsigned depth, char *err, size_t len)
{
    const char *key;
    json_t *m;
    size_t i;

    if (json_is_real(v) && fabs(json_real_value(v)) >= CONFIG_REAL_MAX) {
        snprintf(err, len,
                 "the number %g is out of range (at most %.3g "
                 "either way)",
                 json_real_value(v), CONFIG_REAL_MAX);
        return false;
    }
    if (!json_is_array(v) && !json_is_object(v))
        return true;
    if (depth > CONFIG_DEPTH_MAX) {
        snprintf(err, len, "nested deeper than %d levels", CONFIG_DEPTH_MAX);
        return false;
    }
    json_array_foreach(v, i, m)
    {
        if (!config_storable(m, depth + 1, err, len))
            return false;
    }
    json_object_foreach(v, key, m)
    {
        if (!config_storable(m, depth + 1, err, len))
            return false;
    }
    return true;
}

/* "config": an object whose rules the service's own parser accepts. */
static bool put_config(json_t *root, char **config, struct http_response *resp)
{
    json_t *c = json_object_get(root, "config");
    struct ruleset rs;
    char err[256];

    if (!json_is_object(c)) {
        handlers_errorf(resp, 400, "invalid_config",
                        "field 'config' is required and must be an object "
                        "like {\"rules\":[...]}");
        return false;
    }
    if (!config_storable(c, 1, err, sizeof err)) {
        handlers_errorf(resp, 400, "invalid_config", "field 'config': %s", err);
        return false;
    }
    *config = json_dumps(c, JSON_COMPACT);
    if (*config == NULL) {
        handlers_errorf(resp, 400, "invalid_config",
                        "field 'config' cannot be serialised");
        return false;
    }
    if (rules_parse(*config, strlen(*config), &rs, err, sizeof err) !=
        POOLD_OK) {
        handlers_errorf(resp, 400, "invalid_config", "field 'config': %s", err);
        free(*config);
        *config = NULL;
        return false;
    }
    rules_clear(&rs);
    return true;
}

/* "rate_limit": absent or null (no limit), or {"rps", "burst"} in range. */
static bool put_rate_limit(json_t *root, struct tenants_org *org,
                           struct http_response *resp)
{
    json_t *rl = json_object_get(root, "rate_limit");
    json_t *rps, *burst;

    org->rate_rps = 0;
    org->rate_burst = 0;
    if (rl == NULL || json_is_null(rl))
        return true;
    rps = json_object_get(rl, "rps");
    burst = json_object_get(rl, "burst");
    if (!json_is_object(rl) || !json_is_number(rps) ||
        !json_is_integer(burst) ||
        !ratelimit_valid(json_number_value(rps), json_integer_value(burst))) {
        handlers_errorf(resp, 400, "invalid_config",
                        "field 'rate_limit' must be null or {\"rps\": a number "
                        "0 < rps <= 1000000, \"burst\": an integer from 1 to "
                        "1000000}");
        return false;
    }
    org->rate_rps = json_number_value(rps);
    org->rate_burst = (unsigned)json_integer_value(burst);
    return true;
}

/* Every field of a PUT body; false after filling resp. */
static bool put_validate(struct handlers *h, json_t *root,
                         struct tenants_org *org, char **config,
                         struct http_response *resp)
{
    json_t *enabled = json_object_get(root, "enabled");
    json_t *size = json_object_get(root, "pool_max_size");
    unsigned ceiling = handlers_get_config(h)->pool_ceiling;

    if (!put_config(root, config, resp))
        return false;
    if (enabled != NULL && !json_is_boolean(enabled)) {
        handlers_errorf(resp, 400, "invalid_config",
                        "field 'enabled' must be true or false");
        return false;
    }
    org->enabled = enabled == NULL || json_is_true(enabled);
    org->pool_max_size = 0;
    if (size != NULL && !json_is_null(size)) {
        if (!json_is_integer(size) || json_integer_value(size) < 1 ||
            json_integer_value(size) > (json_int_t)ceiling) {
            handlers_errorf(resp, 400, "invalid_size",
                            "field 'pool_max_size' must be null or "
                            "an integer from 1 to %u",
                            ceiling);
            return false;
        }
        org->pool_max_size = (unsigned)json_integer_value(size);
    }
    return put_rate_limit(root, org, resp);
}

void admin_api_org_put(struct handlers *h, const struct http_request *req,
                       struct http_response *resp)
{
    struct tenants_org org = {0};
    struct audit_actor actor = actor_of(req);
    struct db_conn *conn;
    json_t *root = NULL;
    char *config = NULL, *json = NULL;
    bool created = false;
    int rc;

    if (!handlers_org_param(req, resp) ||
        !handlers_parse_body(req, resp, &root))
        return;
    if (!put_validate(h, root, &org, &config, resp))
        goto out;
    org.org_id = resp->org;
    org.config_json = config;
    rc = registry_admin_begin(reg_of(h), &conn, resp->detail,
                              sizeof resp->detail);
    if (rc == POOLD_OK) {
        rc = tenants_org_put(conn, &org, &actor, &created, &json, resp->detail,
                             sizeof resp->detail);
        registry_admin_end(reg_of(h), conn, rc == POOLD_OK);
    }
    if (rc != POOLD_OK)
        fail(h, resp, rc, true);
    else
        handlers_render_text(resp, created ? 201 : 200, json);
out:
    free(config);
    json_decref(root);
}

/* DELETE of an org (key_id NULL) or the revocation of one of its keys,
 * resp->org validated: 204. */
static void remove_one(struct handlers *h, const struct http_request *req,
                       struct http_response *resp, const char *key_id)
{
    struct audit_actor actor = actor_of(req);
    struct db_conn *conn;
    int rc = registry_admin_begin(reg_of(h), &conn, resp->detail,
                                  sizeof resp->detail);

    if (rc == POOLD_OK) {
        rc = key_id ? tenants_key_revoke(conn, resp->org, key_id, &actor,
                                         resp->detail, sizeof resp->detail)
                    : tenants_org_delete(conn, resp->org, &actor, resp->detail,
                                         sizeof resp->detail);
        registry_admin_end(reg_of(h), conn, rc == POOLD_OK);
    }
    if (rc != POOLD_OK)
        fail(h, resp, rc, true);
    else
        no_content(resp);
}

void admin_api_org_delete(struct handlers *h, const struct http_request *req,
                          struct http_response *resp)
{
    if (handlers_org_param(req, resp))
        remove_one(h, req, resp, NULL);
}

/* ---- keys ------------------------------------------------------------- */

/* The optional {"label": "..."} body: *label borrowed from *root. */
static bool key_label(const struct http_request *req, json_t **root,
                      const char **label, struct http_response *resp)
{
    json_t *l;

    *label = NULL;
    *root = NULL;
    if (req->body_len == 0)
        return true;
    if (!handlers_parse_body(req, resp, root))
        return false;
    l = json_object_get(*root, "label");
    if (l == NULL || json_is_null(l))
        return true;
    if (!json_is_string(l) || json_string_length(l) > TENANTS_LABEL_MAX) {
        handlers_errorf(resp, 400, "invalid_message",
                        "field 'label' must be a string of at most 128 bytes");
        return false;
    }
    *label = json_string_value(l);
    return true;
}

/* {"key_id","label","created_at"} from the database, plus the key. */
static void render_new_key(struct http_response *resp, char *json,
                           const char *key)
{
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);

    free(json);
    if (root != NULL)
        json_object_set_new(root, "key", json_string(key));
    handlers_render_json(resp, 201, root);
}

void admin_api_key_create(struct handlers *h, const struct http_request *req,
                          struct http_response *resp)
{
    struct audit_actor actor = actor_of(req);
    char key[KEYS_KEY_LEN + 1], key_id[KEYS_ID_LEN + 1];
    unsigned char digest[KEYS_DIGEST_LEN];
    struct db_conn *conn;
    const char *label;
    json_t *root = NULL;
    char *json = NULL;
    int rc;

    if (!handlers_org_param(req, resp) || !key_label(req, &root, &label, resp))
        goto out;
    if (keys_generate(key, key_id) != POOLD_OK) {
        handlers_error_status(h, resp, POOLD_ERR_NOMEM);
        goto out;
    }
    keys_digest(key, strlen(key), digest);
    rc = registry_admin_begin(reg_of(h), &conn, resp->detail,
                              sizeof resp->detail);
    if (rc == POOLD_OK) {
        rc = tenants_key_create(conn, resp->org, key_id, digest, label, &actor,
                                &json, resp->detail, sizeof resp->detail);
        /* The watch reloads the live keys before the lock is released:
         * the key works here from the next request. */
        registry_admin_end(reg_of(h), conn, rc == POOLD_OK);
    }
    if (rc == POOLD_ERR_CONFLICT)
        handlers_errorf(resp, 409, "too_many_keys",
                        "the org already has %d live keys: revoke one first",
                        TENANTS_LIVE_KEYS_MAX);
    else if (rc != POOLD_OK)
        fail(h, resp, rc, true);
    else
        render_new_key(resp, json, key);
out:
    memset(key, 0, sizeof key);
    json_decref(root);
}

/* A page of the org's keys: ?after=<key_id>&limit= (1..PAGE_MAX, default
 * PAGE_MAX, so a client that does not page sees up to 1 000 keys). */
void admin_api_key_list(struct handlers *h, const struct http_request *req,
                        struct http_response *resp)
{
    struct admin_read r = {.org_id = resp->org};

    if (!handlers_org_param(req, resp) ||
        !query_limit(req, PAGE_MAX, &r.limit, resp))
        return;
    r.after = req->query ? req->query(req->query_arg, "after") : NULL;
    if (r.after != NULL && !keys_id_is_valid(r.after, strlen(r.after))) {
        handlers_errorf(resp, 400, "invalid_message",
                        "query 'after' must be a key_id (key_ and 16 hex "
                        "digits)");
        return;
    }
    read_json(h, resp, &r);
}

void admin_api_key_revoke(struct handlers *h, const struct http_request *req,
                          struct http_response *resp)
{
    if (!handlers_org_param(req, resp))
        return;
    if (!keys_id_is_valid(req->param2, req->param2_len)) {
        handlers_errorf(resp, 404, "not_found", "no such key for this org");
        return;
    }
    remove_one(h, req, resp, req->param2);
}

/* ---- audit ------------------------------------------------------------ */

void admin_api_audit(struct handlers *h, const struct http_request *req,
                     struct http_response *resp)
{
    read_page(h, req, resp, "org_id", audit_list);
}
