/* tenants.c — org management, org API keys and their watch (SQL). */
#include "tenants.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "clock.h"
#include "audit.h"
#include "db.h"
#include "keys.h"
#include "ratelimit.h"
#include "log.h"

struct tenants {
    struct keys_set *keys;
    struct ratelimit_table *limits;
    /* Written by the watch only (one at a time: the registry's
     * housekeeping connection is taken while it runs). */
    struct catalog_cursor cursor; /* its own read of org_changes */
    bool loaded;
};

/* The org as the API shows it, from a row of orgs. */
#define ORG_JSON                                                               \
    "jsonb_build_object('org_id', org_id, 'enabled', enabled, 'config',"       \
    " config, 'pool_max_size', pool_max_size, 'rate_limit', CASE WHEN"         \
    " rate_limit_rps IS NULL THEN NULL ELSE jsonb_build_object('rps',"         \
    " rate_limit_rps, 'burst', rate_limit_burst) END, 'paused', paused)"
#define RFC3339(col)                                                           \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define KEY_JSON                                                               \
    "jsonb_build_object('key_id', key_id, 'label', label, "                    \
    "'created_at', " RFC3339("created_at") ", 'revoked_at', " RFC3339(         \
        "revoked_at") ")"

int tenants_create(struct tenants **out)
{
    struct tenants *t = calloc(1, sizeof *t);

    if (t == NULL || keys_set_create(&t->keys) != POOLD_OK ||
        ratelimit_table_create(&t->limits) != POOLD_OK) {
        tenants_destroy(t);
        return POOLD_ERR_NOMEM;
    }
    *out = t;
    return POOLD_OK;
}

void tenants_destroy(struct tenants *t)
{
    if (t == NULL)
        return;
    keys_set_destroy(t->keys);
    ratelimit_table_destroy(t->limits);
    catalog_cursor_deinit(&t->cursor);
    free(t);
}

struct keys_set *tenants_keys(struct tenants *t)
{
    return t->keys;
}

struct ratelimit_table *tenants_limits(struct tenants *t)
{
    return t->limits;
}

/* ---- helpers ---------------------------------------------------------- */

static bool get_ll(const PGresult *res, int row, int col, long long *out)
{
    const char *s = PQgetvalue(res, row, col);
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

/* The first cell of a one-row result as a malloc'd string (NULL: SQL null
 * gives *out NULL and POOLD_OK). */
static int take_text(PGresult *res, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0))
        return POOLD_OK;
    *out = strdup(PQgetvalue(res, 0, 0));
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}

/* One statement expected to return at most one text cell into *out. */
static int query_text(struct db_conn *conn, const char *what, const char *sql,
                      int n, const char *const *params, char **out, char *err,
                      size_t errlen)
{
    PGresult *res = db_exec(conn, what, sql, n, params, NULL, err, errlen);
    int rc;

    *out = NULL;
    if (res == NULL)
        return POOLD_ERR_DB;
    rc = take_text(res, out, err, errlen);
    PQclear(res);
    return rc;
}

/* ---- the watch -------------------------------------------------------- */

/* Fill one entry from a row; false skips the row. */
typedef bool (*row_fill_fn)(const PGresult *res, int row, void *entry);

/* Run a watch query and make an array of its rows' entries (size bytes
 * each): *out is malloc'd (caller frees, also on failure), *kept entries. */
static int load_rows(struct db_conn *conn, const char *what, const char *sql,
                     const char *ids, size_t size, row_fill_fn fill, void **out,
                     size_t *kept, char *err, size_t errlen)
{
    const char *params[1] = {ids};
    PGresult *res =
        db_exec(conn, what, sql, ids ? 1 : 0, params, NULL, err, errlen);
    unsigned char *v;
    size_t n;

    *out = NULL;
    *kept = 0;
    if (res == NULL)
        return POOLD_ERR_DB;
    n = (size_t)PQntuples(res);
    v = calloc(n ? n : 1, size);
    if (v == NULL) {
        PQclear(res);
        return POOLD_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (fill(res, (int)i, v + *kept * size))
            (*kept)++;
    PQclear(res);
    *out = v;
    return POOLD_OK;
}

static bool key_fill(const PGresult *res, int row, void *entry)
{
    struct keys_entry *e = entry;
    const char *hex = PQgetvalue(res, row, 2);

    if (!keys_unhex(hex, strlen(hex), e->digest, KEYS_DIGEST_LEN))
        return false; /* the table's CHECK makes this impossible */
    snprintf(e->key_id, sizeof e->key_id, "%s", PQgetvalue(res, row, 0));
    snprintf(e->org_id, sizeof e->org_id, "%s", PQgetvalue(res, row, 1));
    return true;
}

/* The live keys: every org's (ch NULL), or only the changed orgs'. */
static int load_keys(struct tenants *t, struct db_conn *conn,
                     const struct catalog_changes *ch, const char *ids,
                     char *err, size_t errlen)
{
    void *v;
    size_t n;
    int rc = load_rows(conn, "keys load",
                       ids ? "SELECT key_id, org_id, encode(digest, 'hex')"
                             " FROM org_keys WHERE revoked_at IS NULL AND"
                             " org_id = ANY ($1::text[])"
                           : "SELECT key_id, org_id, encode(digest, 'hex')"
                             " FROM org_keys WHERE revoked_at IS NULL",
                       ids, sizeof(struct keys_entry), key_fill, &v, &n, err,
                       errlen);

    if (rc == POOLD_OK)
        rc = ids ? keys_set_update(t->keys, ch->ids, ch->n, v, n)
                 : keys_set_replace(t->keys, v, n);
    free(v);
    return rc;
}

static bool limit_fill(const PGresult *res, int row, void *entry)
{
    struct ratelimit_setting *l = entry;
    double rps = strtod(PQgetvalue(res, row, 1), NULL);
    long long burst;

    if (!get_ll(res, row, 2, &burst) || !ratelimit_valid(rps, burst))
        return false; /* the table's CHECK makes this impossible */
    snprintf(l->org_id, sizeof l->org_id, "%s", PQgetvalue(res, row, 0));
    l->rps = rps;
    l->burst = (unsigned)burst;
    return true;
}

/* The limits of every org (ids NULL), or of the changed orgs only: each
 * of those listed, with rps 0 when it has none (or is gone). */
static int load_limits(struct tenants *t, struct db_conn *conn,
                       const struct catalog_changes *ch, const char *ids,
                       char *err, size_t errlen)
{
    struct ratelimit_setting *v, *all = NULL;
    size_t n;
    int rc = load_rows(conn, "rate limits load",
                       ids ? "SELECT org_id, rate_limit_rps,"
                             " rate_limit_burst FROM orgs WHERE"
                             " rate_limit_rps IS NOT NULL AND"
                             " org_id = ANY ($1::text[])"
                           : "SELECT org_id, rate_limit_rps,"
                             " rate_limit_burst FROM orgs WHERE"
                             " rate_limit_rps IS NOT NULL",
                       ids, sizeof(struct ratelimit_setting), limit_fill,
                       (void **)&v, &n, err, errlen);

    if (rc == POOLD_OK && ids == NULL)
        rc = ratelimit_table_sync(t->limits, v, n, clock_now_ns());
    else if (rc == POOLD_OK && (all = calloc(ch->n + 1, sizeof *all)) == NULL)
        rc = POOLD_ERR_NOMEM;
    if (rc == POOLD_OK && ids != NULL) {
        for (size_t i = 0; i < ch->n; i++)
            memcpy(all[i].org_id, ch->ids[i], sizeof all[i].org_id);
        for (size_t i = 0; i < ch->n; i++)
            for (size_t j = 0; j < n; j++)
                if (strcmp(all[i].org_id, v[j].org_id) == 0)
                    all[i] = v[j];
        rc = ratelimit_table_update(t->limits, all, ch->n, clock_now_ns());
    }
    free(all);
    free(v);
    return rc;
}

/* Keys and limits of what changed: everything, or the changed orgs'. */
static int tenants_apply(struct tenants *t, struct db_conn *conn,
                         const struct catalog_changes *ch, char *err,
                         size_t errlen)
{
    char *ids = NULL;
    int rc;

    if (!ch->all && (ids = catalog_ids_array(ch)) == NULL)
        return POOLD_ERR_NOMEM;
    rc = load_keys(t, conn, ch, ids, err, errlen);
    if (rc == POOLD_OK)
        rc = load_limits(t, conn, ch, ids, err, errlen);
    free(ids);
    return rc;
}

int tenants_watch(void *arg, struct db_conn *conn, char *err, size_t errlen)
{
    struct tenants *t = arg;
    struct catalog_changes ch;
    uint64_t now = clock_now_ns();
    /* org_changes notes key writes too: a revocation, a new key and a
     * changed limit are all read as a change of their org. */
    int rc = catalog_changes_read(conn, &t->cursor, now, &ch, err, errlen);

    if (rc != POOLD_OK)
        return rc;
    if (ch.all || ch.n > 0)
        rc = tenants_apply(t, conn, &ch, err, errlen);
    if (rc != POOLD_OK) {
        catalog_changes_free(&ch);
        return rc;
    }
    catalog_cursor_advance(&t->cursor, &ch, now);
    if (!t->loaded)
        log_event(LOG_INFO, "org keys loaded", (const char *)NULL);
    t->loaded = true;
    return POOLD_OK;
}

/* ---- orgs ------------------------------------------------------------- */

int tenants_org_list(struct db_conn *conn, const char *after, unsigned limit,
                     char **json, char *err, size_t errlen)
{
    char lim[16];
    const char *params[2] = {after, lim};
    int rc;

    snprintf(lim, sizeof lim, "%u", limit);
    rc = query_text(
        conn, "orgs list",
        "WITH page AS (SELECT org_id, " ORG_JSON " AS j, row_number() OVER"
        " (ORDER BY org_id) AS n FROM orgs WHERE $1::text IS NULL OR"
        " org_id > $1 ORDER BY org_id LIMIT $2::integer + 1)"
        " SELECT jsonb_build_object('orgs', coalesce((SELECT jsonb_agg(j"
        " ORDER BY n) FROM page WHERE n <= $2::integer), '[]'), 'next',"
        " (SELECT org_id FROM page WHERE n = $2::integer AND EXISTS (SELECT"
        " 1 FROM page WHERE n > $2::integer)))::text",
        2, params, json, err, errlen);
    if (rc == POOLD_OK && *json == NULL) {
        snprintf(err, errlen, "orgs list: no answer");
        rc = POOLD_ERR_DB;
    }
    return rc;
}

int tenants_org_get(struct db_conn *conn, const char *org_id, char **json,
                    char *err, size_t errlen)
{
    const char *params[1] = {org_id};
    int rc = query_text(conn, "org get",
                        "SELECT " ORG_JSON "::text FROM orgs WHERE org_id = $1",
                        1, params, json, err, errlen);

    if (rc == POOLD_OK && *json == NULL)
        rc = POOLD_ERR_UNKNOWN_ORG;
    return rc;
}

/* The org's JSON, locked for this transaction (NULL if no such org). */
static int org_lock(struct db_conn *conn, const char *org_id, char **before,
                    char *err, size_t errlen)
{
    const char *params[1] = {org_id};

    return query_text(conn, "org lock",
                      "SELECT " ORG_JSON "::text FROM orgs WHERE org_id = $1"
                      " FOR UPDATE",
                      1, params, before, err, errlen);
}

/* The body of a transaction that failed: roll back, keep rc. */
static int tx_fail(struct db_conn *conn, int rc)
{
    db_rollback(conn);
    return rc;
}

/* End a transaction whose change went as rc says: record a (NULL: nothing
 * to record) and commit, or roll back. The entry commits with the change
 * or not at all. */
static int tx_finish(struct db_conn *conn, int rc, const struct audit_entry *a,
                     char *err, size_t errlen)
{
    if (rc == POOLD_OK && a != NULL)
        rc = audit_insert(conn, a, err, errlen);
    if (rc == POOLD_OK)
        return db_commit(conn, err, errlen);
    db_rollback(conn);
    return rc;
}

int tenants_org_put(struct db_conn *conn, const struct tenants_org *org,
                    const struct audit_actor *actor, bool *created, char **json,
                    char *err, size_t errlen)
{
    char size[16], rps[40], burst[16];
    const char *params[6] = {
        org->org_id,
        org->enabled ? "t" : "f",
        org->config_json,
        org->pool_max_size ? size : NULL,
        org->rate_rps > 0 ? rps : NULL,
        org->rate_rps > 0 ? burst : NULL,
    };
    struct audit_entry a = {actor, "org.put", org->org_id, NULL, NULL};
    char *before = NULL;
    int rc;

    *json = NULL;
    snprintf(size, sizeof size, "%u", org->pool_max_size);
    snprintf(rps, sizeof rps, "%.17g", org->rate_rps);
    snprintf(burst, sizeof burst, "%u", org->rate_burst);
    if ((rc = db_begin(conn, err, errlen)) != POOLD_OK)
        return rc;
    if ((rc = org_lock(conn, org->org_id, &before, err, errlen)) != POOLD_OK)
        return tx_fail(conn, rc);
    rc = query_text(
        conn, "org put",
        "INSERT INTO orgs AS o (org_id, enabled, config, pool_max_size,"
        " rate_limit_rps, rate_limit_burst) VALUES ($1, $2::boolean,"
        " $3::jsonb, $4::integer, $5::double precision, $6::integer)"
        " ON CONFLICT (org_id) DO UPDATE SET enabled = EXCLUDED.enabled,"
        " config = EXCLUDED.config, pool_max_size = EXCLUDED.pool_max_size,"
        " rate_limit_rps = EXCLUDED.rate_limit_rps, rate_limit_burst ="
        " EXCLUDED.rate_limit_burst RETURNING " ORG_JSON "::text",
        6, params, json, err, errlen);
    a.before = before;
    a.after = *json;
    rc = tx_finish(conn, rc, &a, err, errlen);
    *created = before == NULL;
    free(before);
    if (rc != POOLD_OK) {
        free(*json);
        *json = NULL;
    }
    return rc;
}

int tenants_org_delete(struct db_conn *conn, const char *org_id,
                       const struct audit_actor *actor, char *err,
                       size_t errlen)
{
    const char *params[1] = {org_id};
    struct audit_entry a = {actor, "org.delete", org_id, NULL, NULL};
    char *before = NULL;
    PGresult *res;
    int rc;

    if ((rc = db_begin(conn, err, errlen)) != POOLD_OK)
        return rc;
    if ((rc = org_lock(conn, org_id, &before, err, errlen)) != POOLD_OK)
        return tx_fail(conn, rc);
    if (before == NULL)
        return tx_fail(conn, POOLD_ERR_UNKNOWN_ORG);
    res = db_exec(conn, "org delete",
                  "WITH revoked AS (UPDATE org_keys SET revoked_at = now()"
                  " WHERE org_id = $1 AND revoked_at IS NULL)"
                  " DELETE FROM orgs WHERE org_id = $1",
                  1, params, NULL, err, errlen);
    rc = res ? POOLD_OK : POOLD_ERR_DB;
    PQclear(res);
    a.before = before;
    rc = tx_finish(conn, rc, &a, err, errlen);
    free(before);
    return rc;
}

/* ---- keys ------------------------------------------------------------- */

/* Lock the org's row against a concurrent delete; UNKNOWN_ORG if none.
 * exclusive also serialises the org's key creations (FOR NO KEY UPDATE,
 * which message inserts do not wait for; its key writes, FOR SHARE, do). */
static int org_share(struct db_conn *conn, const char *org_id, bool exclusive,
                     char *err, size_t errlen)
{
    const char *params[1] = {org_id};
    PGresult *res = db_exec(
        conn, exclusive ? "org lock" : "org check",
        exclusive ? "SELECT 1 FROM orgs WHERE org_id = $1 FOR NO KEY UPDATE"
                  : "SELECT 1 FROM orgs WHERE org_id = $1 FOR SHARE",
        1, params, NULL, err, errlen);
    int rc;

    if (res == NULL)
        return POOLD_ERR_DB;
    rc = PQntuples(res) > 0 ? POOLD_OK : POOLD_ERR_UNKNOWN_ORG;
    PQclear(res);
    return rc;
}

int tenants_key_create(struct db_conn *conn, const char *org_id,
                       const char *key_id, const unsigned char *digest,
                       const char *label, const struct audit_actor *actor,
                       char **json, char *err, size_t errlen)
{
    char hex[2 * KEYS_DIGEST_LEN + 1], max[16];
    const char *params[5] = {key_id, org_id, label, hex, max};
    struct audit_entry a = {actor, "key.create", org_id, NULL, NULL};
    int rc;

    *json = NULL;
    keys_hex(digest, KEYS_DIGEST_LEN, hex);
    if ((rc = db_begin(conn, err, errlen)) != POOLD_OK)
        return rc;
    if ((rc = org_share(conn, org_id, true, err, errlen)) != POOLD_OK)
        return tx_fail(conn, rc);
    snprintf(max, sizeof max, "%d", TENANTS_LIVE_KEYS_MAX);
    rc = query_text(conn, "key create",
                    "INSERT INTO org_keys (key_id, org_id, label, digest)"
                    " SELECT $1, $2, $3, decode($4, 'hex') WHERE (SELECT"
                    " count(*) FROM org_keys WHERE org_id = $2 AND revoked_at"
                    " IS NULL) < $5::integer RETURNING "
                    "jsonb_build_object('key_id', key_id, 'label', label,"
                    " 'created_at', " RFC3339("created_at") ")::text",
                    5, params, json, err, errlen);
    if (rc == POOLD_OK && *json == NULL) {
        snprintf(err, errlen, "the org already has %d live keys",
                 TENANTS_LIVE_KEYS_MAX);
        return tx_fail(conn, POOLD_ERR_CONFLICT);
    }
    a.after = *json;
    rc = tx_finish(conn, rc, &a, err, errlen);
    if (rc != POOLD_OK) {
        free(*json);
        *json = NULL;
    }
    return rc;
}

int tenants_key_list(struct db_conn *conn, const char *org_id,
                     const char *after_id, unsigned limit, char **json,
                     char *err, size_t errlen)
{
    char lim[16];
    const char *params[3] = {org_id, after_id, lim};
    int rc;

    snprintf(lim, sizeof lim, "%u", limit);
    /* NULL: no such org; '': no such key to start after. */
    rc = query_text(
        conn, "key list",
        "WITH cur AS (SELECT created_at, key_id FROM org_keys WHERE org_id ="
        " $1 AND key_id = $2), page AS (SELECT key_id, " KEY_JSON " AS j,"
        " row_number() OVER (ORDER BY created_at, key_id) AS n FROM org_keys"
        " WHERE org_id = $1 AND ($2::text IS NULL OR (created_at, key_id) >"
        " (SELECT created_at, key_id FROM cur)) ORDER BY created_at, key_id"
        " LIMIT $3::integer + 1)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM orgs WHERE org_id = $1)"
        " THEN NULL WHEN $2::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
        " cur) THEN '' ELSE jsonb_build_object('keys', coalesce((SELECT"
        " jsonb_agg(j ORDER BY n) FROM page WHERE n <= $3::integer), '[]'),"
        " 'next', (SELECT key_id FROM page WHERE n = $3::integer AND EXISTS"
        " (SELECT 1 FROM page WHERE n > $3::integer)))::text END",
        3, params, json, err, errlen);
    if (rc == POOLD_OK && *json == NULL)
        rc = POOLD_ERR_UNKNOWN_ORG;
    if (rc == POOLD_OK && **json == '\0') {
        free(*json);
        *json = NULL;
        snprintf(err, errlen, "query 'after': no such key for this org");
        rc = POOLD_ERR_INVALID;
    }
    return rc;
}

int tenants_key_revoke(struct db_conn *conn, const char *org_id,
                       const char *key_id, const struct audit_actor *actor,
                       char *err, size_t errlen)
{
    const char *params[2] = {org_id, key_id};
    struct audit_entry a = {actor, "key.revoke", org_id, NULL, NULL};
    char *state = NULL, *after = NULL;
    int rc;

    if ((rc = db_begin(conn, err, errlen)) != POOLD_OK)
        return rc;
    if ((rc = org_share(conn, org_id, false, err, errlen)) != POOLD_OK)
        return tx_fail(conn, rc);
    rc = query_text(conn, "key find",
                    "SELECT " KEY_JSON "::text FROM org_keys WHERE org_id = $1"
                    " AND key_id = $2 FOR UPDATE",
                    2, params, &state, err, errlen);
    if (rc == POOLD_OK && state == NULL)
        rc = POOLD_ERR_NOT_FOUND;
    if (rc == POOLD_OK)
        rc = query_text(conn, "key revoke",
                        "UPDATE org_keys SET revoked_at = now() WHERE org_id"
                        " = $1 AND key_id = $2 AND revoked_at IS NULL"
                        " RETURNING " KEY_JSON "::text",
                        2, params, &after, err, errlen);
    a.before = state;
    a.after = after;
    /* Recorded only when revoked now, not when it already was. */
    rc = tx_finish(conn, rc, after != NULL ? &a : NULL, err, errlen);
    free(state);
    free(after);
    return rc;
}
