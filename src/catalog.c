/* catalog.c — the orgs table: schema check, changes, load, resize;
 * processed_messages' lifecycle and the read of one stored result. */
#include "catalog.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* An integer cell as long long; false if it is not one. */
static bool catalog_get_ll(const PGresult *res, int row, int col,
                           long long *out)
{
    const char *s = PQgetvalue(res, row, col);
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

int catalog_check_schema(struct db_conn *conn, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT to_regclass('orgs') IS NOT NULL,"
        " to_regclass('processed_messages') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid ="
        " to_regclass('orgs') AND attname = 'config_version'"
        " AND NOT attisdropped),"
        " to_regclass('org_keys') IS NOT NULL,"
        " to_regclass('audit_log') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid ="
        " to_regclass('orgs') AND attname = 'rate_limit_rps'"
        " AND NOT attisdropped),"
        " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid ="
        " to_regclass('orgs') AND attname = 'paused'"
        " AND NOT attisdropped),"
        " to_regclass('org_changes') IS NOT NULL,"
        " to_regclass('message_partitions') IS NOT NULL,"
        " to_regprocedure('poold_claim_orgs(text[],text[],timestamptz)')"
        " IS NOT NULL";
    static const char *const names[] = {"table orgs",
                                        "table processed_messages",
                                        "column orgs.config_version",
                                        "table org_keys",
                                        "table audit_log",
                                        "column orgs.rate_limit_rps",
                                        "column orgs.paused",
                                        "table org_changes",
                                        "table message_partitions",
                                        "function poold_claim_orgs"};
    PGresult *res =
        db_exec(conn, "schema check", sql, 0, NULL, NULL, err, errlen);

    if (res == NULL)
        return POOLD_ERR_DB;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        if (strcmp(PQgetvalue(res, 0, i), "t") != 0) {
            snprintf(err, errlen,
                     "%s not found: apply the schema, sql/0*.sql, again "
                     "(safe to repeat: for f in sql/0*.sql; do psql "
                     "\"$DATABASE_URL\" -v ON_ERROR_STOP=1 -f \"$f\"; done)",
                     names[i]);
            PQclear(res);
            return POOLD_ERR_DB;
        }
    }
    PQclear(res);
    return POOLD_OK;
}

/* ---- change detection (sql/005_org_changes.sql) --------------------- */

void catalog_changes_free(struct catalog_changes *ch)
{
    free(ch->ids);
    free(ch->next);
    memset(ch, 0, sizeof *ch);
}

void catalog_cursor_deinit(struct catalog_cursor *cur)
{
    free(cur->snap);
    cur->snap = NULL;
}

void catalog_cursor_advance(struct catalog_cursor *cur,
                            struct catalog_changes *ch, uint64_t now_ns)
{
    free(cur->snap);
    cur->snap = ch->next;
    cur->read_ns = now_ns;
    ch->next = NULL;
    catalog_changes_free(ch);
}

/* Rows of the changes query into out: column 0 the snapshot (every row),
 * column 1 a changed org id or NULL (no change), '*' everything. */
static int changes_take(PGresult *res, struct catalog_changes *out)
{
    size_t rows = (size_t)PQntuples(res);

    if (rows == 0 || (out->next = strdup(PQgetvalue(res, 0, 0))) == NULL)
        return POOLD_ERR_NOMEM;
    if (rows > CATALOG_CHANGES_MAX) {
        out->all = true;
        return POOLD_OK;
    }
    out->ids = calloc(rows, sizeof *out->ids);
    if (out->ids == NULL)
        return POOLD_ERR_NOMEM;
    for (size_t i = 0; i < rows; i++) {
        const char *id = PQgetvalue(res, (int)i, 1);
        size_t len = strlen(id);

        if (PQgetisnull(res, (int)i, 1))
            continue;
        if (strcmp(id, "*") == 0)
            out->all = true;
        else if (orgid_is_valid(id, len))
            memcpy(out->ids[out->n++], id, len + 1);
    }
    return POOLD_OK;
}

int catalog_changes_read(struct db_conn *conn, const struct catalog_cursor *cur,
                         uint64_t now_ns, struct catalog_changes *out,
                         char *err, size_t errlen)
{
    const char *params[1] = {cur->snap};
    bool stale =
        cur->snap == NULL || now_ns - cur->read_ns > CATALOG_CURSOR_MAX_AGE_NS;
    /* One statement: its snapshot is the one returned, so a change is
     * either read now or not visible in it (and read next time). */
    PGresult *res = db_exec(
        conn, "orgs changes",
        stale ? "SELECT pg_current_snapshot()::text, NULL::text"
              : "SELECT pg_current_snapshot()::text, c.org_id FROM (SELECT 1)"
                " one LEFT JOIN (SELECT DISTINCT org_id FROM org_changes"
                " WHERE xid >= pg_snapshot_xmin($1::pg_snapshot) AND NOT"
                " pg_visible_in_snapshot(xid, $1::pg_snapshot) LIMIT 1025) c"
                " ON true",
        stale ? 0 : 1, params, NULL, err, errlen);
    int rc;

    memset(out, 0, sizeof *out);
    if (res == NULL)
        return POOLD_ERR_DB;
    rc = changes_take(res, out);
    PQclear(res);
    out->all |= stale;
    if (rc != POOLD_OK) {
        catalog_changes_free(out);
        snprintf(err, errlen, "orgs changes: out of memory");
    }
    return rc;
}

char *catalog_ids_array(const struct catalog_changes *ch)
{
    size_t cap = 3 + ch->n * (ORG_ID_MAX + 1), len = 1;
    char *s = malloc(cap);

    if (s == NULL)
        return NULL;
    s[0] = '{';
    for (size_t i = 0; i < ch->n; i++) {
        size_t l = strlen(ch->ids[i]);
        if (i > 0)
            s[len++] = ',';
        memcpy(s + len, ch->ids[i], l);
        len += l;
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

int catalog_prune_changes(struct db_conn *conn, long long *deleted, char *err,
                          size_t errlen)
{
    char batch[16];
    const char *params[1] = {batch};
    PGresult *res;

    *deleted = 0;
    snprintf(batch, sizeof batch, "%d", CATALOG_CHANGES_BATCH);
    /* org_changes_at_idx finds them; the table has no key: by ctid. */
    res = db_exec(conn, "orgs changes prune",
                  "DELETE FROM org_changes WHERE ctid = ANY (ARRAY("
                  "SELECT ctid FROM org_changes WHERE at < now() -"
                  " interval '1 day' ORDER BY at LIMIT $1::integer))",
                  1, params, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    *deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return POOLD_OK;
}

/* The columns catalog_row() reads, of the orgs a load selects. */
#define CATALOG_ORGS_SELECT                                                    \
    "SELECT org_id, enabled, coalesce(pool_max_size, 0), config_version,"      \
    " paused FROM orgs"

/* One row of the load query into *org; false if a value is malformed. */
static bool catalog_row(const PGresult *res, int row, struct org_info *org)
{
    const char *id = PQgetvalue(res, row, 0);
    size_t len = strlen(id);
    long long size;

    if (!orgid_is_valid(id, len))
        return false;
    memcpy(org->org_id, id, len + 1);
    org->enabled = strcmp(PQgetvalue(res, row, 1), "t") == 0;
    if (!catalog_get_ll(res, row, 2, &size) || size < 0 || size > INT_MAX ||
        !catalog_get_ll(res, row, 3, &org->version))
        return false;
    org->pool_max_size = (int)size;
    org->paused = strcmp(PQgetvalue(res, row, 4), "t") == 0;
    org->present = true;
    return true;
}

/* One page of the whole load, after the org_id in after ("": from the
 * first), appended to *orgs (cap *cap, *kept used); after becomes the
 * page's last id. Two statements, not one with "$1 IS NULL OR": under
 * generic plans only this one uses the key's index. Returns the rows the
 * page had, or a status (err set). */
static long catalog_load_page(struct db_conn *conn, char *after, size_t page,
                              struct org_info **orgs, size_t *cap, size_t *kept,
                              char *err, size_t errlen)
{
    char lim[24];
    const char *params[2] = {lim, after};
    PGresult *res;
    size_t rows;

    snprintf(lim, sizeof lim, "%zu", page);
    res = db_exec(conn, "orgs load",
                  after[0] == '\0' ? CATALOG_ORGS_SELECT
                      " ORDER BY org_id LIMIT $1::integer"
                                   : CATALOG_ORGS_SELECT
                      " WHERE org_id > $2 ORDER BY org_id LIMIT $1::integer",
                  after[0] == '\0' ? 1 : 2, params, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    rows = (size_t)PQntuples(res);
    if (*kept + rows > *cap) {
        size_t want = *cap ? *cap : rows;
        struct org_info *v;
        while (want < *kept + rows)
            want *= 2;
        if ((v = realloc(*orgs, want * sizeof *v)) == NULL) {
            PQclear(res);
            snprintf(err, errlen, "orgs load: out of memory");
            return POOLD_ERR_NOMEM;
        }
        *orgs = v;
        *cap = want;
    }
    for (size_t i = 0; i < rows; i++) {
        if (catalog_row(res, (int)i, &(*orgs)[*kept]))
            (*kept)++;
        else /* the table's CHECK makes this impossible; skip, say so */
            log_event(LOG_WARN, "orgs row skipped: malformed", "org_id",
                      PQgetvalue(res, (int)i, 0), (const char *)NULL);
    }
    if (rows > 0)
        snprintf(after, ORG_ID_MAX + 1, "%s",
                 PQgetvalue(res, (int)rows - 1, 0));
    PQclear(res);
    return (long)rows;
}

int catalog_load(struct db_conn *conn, size_t page,
                 const struct catalog_pace *pace, struct org_info **out,
                 size_t *n, char *err, size_t errlen)
{
    struct org_info *orgs = NULL;
    size_t cap = 0, kept = 0;
    char after[ORG_ID_MAX + 1] = "";
    long rows;

    *out = NULL;
    *n = 0;
    if (page == 0)
        page = CATALOG_LOAD_PAGE;
    while ((rows = catalog_load_page(conn, after, page, &orgs, &cap, &kept, err,
                                     errlen)) == (long)page) {
        if (pace != NULL && pace->fn != NULL)
            pace->fn(pace->arg);
    }
    if (rows < 0) {
        free(orgs);
        return (int)rows;
    }
    if (orgs == NULL && (orgs = calloc(1, sizeof *orgs)) == NULL) {
        snprintf(err, errlen, "orgs load: out of memory");
        return POOLD_ERR_NOMEM;
    }
    *out = orgs;
    *n = kept;
    return POOLD_OK;
}

int catalog_load_some(struct db_conn *conn, const struct catalog_changes *ch,
                      struct org_info **out, char *err, size_t errlen)
{
    char *ids = catalog_ids_array(ch);
    const char *params[1] = {ids};
    PGresult *res = NULL;
    struct org_info *orgs = calloc(ch->n ? ch->n : 1, sizeof *orgs);

    *out = NULL;
    if (ids != NULL && orgs != NULL)
        res = db_exec(conn, "orgs load some",
                      CATALOG_ORGS_SELECT " WHERE org_id = ANY ($1::text[])", 1,
                      params, NULL, err, errlen);
    else
        snprintf(err, errlen, "orgs load: out of memory");
    free(ids);
    if (res == NULL) {
        free(orgs);
        return ids == NULL || orgs == NULL ? POOLD_ERR_NOMEM : POOLD_ERR_DB;
    }
    /* Every id listed, found or not; the rows fill the ones found. */
    for (size_t i = 0; i < ch->n; i++)
        memcpy(orgs[i].org_id, ch->ids[i], sizeof orgs[i].org_id);
    for (int r = 0; r < PQntuples(res); r++) {
        struct org_info o;
        if (!catalog_row(res, r, &o))
            continue;
        for (size_t i = 0; i < ch->n; i++)
            if (strcmp(orgs[i].org_id, o.org_id) == 0)
                orgs[i] = o;
    }
    PQclear(res);
    *out = orgs;
    return POOLD_OK;
}

int catalog_load_org(struct db_conn *conn, const char *org_id,
                     catalog_config_fn fn, void *arg, char *err, size_t errlen)
{
    const char *params[1] = {org_id};
    const struct db_query q = {
        .stmt = CATALOG_STMT_ORG,
        .sql = "SELECT enabled, config::text, config_version FROM orgs"
               " WHERE org_id = $1",
        .nparams = 1,
        .values = params};
    PGresult *res = NULL;
    long long version = 0;
    char why[256];
    int rc = db_run(conn, &q, 0, &res, why, sizeof why);

    if (rc != POOLD_OK || PQresultStatus(res) != PGRES_TUPLES_OK ||
        (PQntuples(res) > 0 && !catalog_get_ll(res, 0, 2, &version))) {
        snprintf(err, errlen, "loading org: %s",
                 rc != POOLD_OK ? why : "unexpected result");
        rc = POOLD_ERR_DB;
    } else if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        snprintf(err, errlen, "org %s %s", org_id,
                 PQntuples(res) == 0 ? "not found" : "is disabled");
        rc = POOLD_ERR_UNKNOWN_ORG;
    } else {
        rc = fn(arg, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1),
                version, err, errlen);
    }
    PQclear(res);
    return rc;
}

/* Set one column of an org's row: sql takes $1 org_id and $2 the value
 * and answers a row when the org exists. */
static int store_org_column(struct db_conn *conn, const char *what,
                            const char *sql, const char *org_id,
                            const char *value, char *err, size_t errlen)
{
    const char *params[2] = {org_id, value};
    PGresult *res = db_exec(conn, what, sql, 2, params, NULL, err, errlen);
    int rows;

    if (res == NULL)
        return POOLD_ERR_DB;
    rows = PQntuples(res);
    PQclear(res);
    if (rows == 0) {
        snprintf(err, errlen, "org %.64s not found", org_id);
        return POOLD_ERR_UNKNOWN_ORG;
    }
    return POOLD_OK;
}

int catalog_store_pool_size(struct db_conn *conn, const char *org_id,
                            unsigned size, char *err, size_t errlen)
{
    char size_s[16];

    if (size < 1 || size > INT_MAX) {
        snprintf(err, errlen, "pool size %u out of range", size);
        return POOLD_ERR_INVALID;
    }
    snprintf(size_s, sizeof size_s, "%u", size);
    return store_org_column(conn, "store pool size",
                            "UPDATE orgs SET pool_max_size = $2::integer"
                            " WHERE org_id = $1 RETURNING 1",
                            org_id, size_s, err, errlen);
}

int catalog_store_paused(struct db_conn *conn, const char *org_id, bool paused,
                         char *err, size_t errlen)
{
    return store_org_column(conn, "store paused",
                            "UPDATE orgs SET paused = $2::boolean"
                            " WHERE org_id = $1 RETURNING 1",
                            org_id, paused ? "true" : "false", err, errlen);
}

/*
 * One column of an org's row changed and audited in one transaction: sql
 * takes $1 org_id and $2 the new value and answers the before and after
 * JSON texts of the locked row (no row: POOLD_ERR_UNKNOWN_ORG). a->actor,
 * a->action and a->org_id are the caller's; before/after are filled here.
 */
static int store_audited(struct db_conn *conn, const char *what,
                         const char *sql, const char *const params[2],
                         struct audit_entry *a, char *err, size_t errlen)
{
    PGresult *res;
    int rc;

    if ((rc = db_begin(conn, err, errlen)) != POOLD_OK)
        return rc;
    res = db_exec(conn, what, sql, 2, params, NULL, err, errlen);
    if (res == NULL) {
        db_rollback(conn);
        return POOLD_ERR_DB;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        db_rollback(conn);
        snprintf(err, errlen, "org %.64s not found", params[0]);
        return POOLD_ERR_UNKNOWN_ORG;
    }
    a->before = PQgetvalue(res, 0, 0);
    a->after = PQgetvalue(res, 0, 1);
    rc = audit_insert(conn, a, err, errlen);
    PQclear(res);
    if (rc == POOLD_OK)
        rc = db_commit(conn, err, errlen);
    else
        db_rollback(conn);
    return rc;
}

int catalog_store_paused_by(struct db_conn *conn, const char *org_id,
                            bool paused, const struct audit_actor *actor,
                            char *err, size_t errlen)
{
    const char *params[2] = {org_id, paused ? "true" : "false"};
    struct audit_entry a = {actor, paused ? "pool.pause" : "pool.resume",
                            org_id, NULL, NULL};

    if (actor == NULL)
        return catalog_store_paused(conn, org_id, paused, err, errlen);
    /* The old value from the locked row, the new one from the update. */
    return store_audited(
        conn, "store paused",
        "WITH old AS (SELECT org_id, paused FROM orgs"
        " WHERE org_id = $1 FOR UPDATE), upd AS (UPDATE orgs o SET"
        " paused = $2::boolean FROM old WHERE o.org_id ="
        " old.org_id RETURNING o.paused)"
        " SELECT jsonb_build_object('paused', old.paused)::text,"
        " jsonb_build_object('paused', upd.paused)::text FROM old, upd",
        params, &a, err, errlen);
}

int catalog_store_pool_size_by(struct db_conn *conn, const char *org_id,
                               unsigned size, const struct audit_actor *actor,
                               char *err, size_t errlen)
{
    char size_s[16];
    const char *params[2] = {org_id, size_s};
    struct audit_entry a = {actor, "pool.resize", org_id, NULL, NULL};

    if (size < 1 || size > INT_MAX) {
        snprintf(err, errlen, "pool size %u out of range", size);
        return POOLD_ERR_INVALID;
    }
    snprintf(size_s, sizeof size_s, "%u", size);
    /* The old value from the locked row, the new one from the update. */
    return store_audited(
        conn, "store pool size",
        "WITH old AS (SELECT org_id, pool_max_size FROM orgs"
        " WHERE org_id = $1 FOR UPDATE), upd AS (UPDATE orgs o SET"
        " pool_max_size = $2::integer FROM old WHERE o.org_id ="
        " old.org_id RETURNING o.pool_max_size)"
        " SELECT jsonb_build_object('pool_max_size',"
        " old.pool_max_size)::text, jsonb_build_object("
        "'pool_max_size', upd.pool_max_size)::text FROM old, upd",
        params, &a, err, errlen);
}

/* ------------------------------------------------------- data lifecycle */

int catalog_lifecycle_maintain(struct db_conn *conn,
                               const struct catalog_lifecycle *lc, int *created,
                               int *dropped, char *err, size_t errlen)
{
    char period[24], retention[24], window[24], zone[32];
    const char *params[4] = {period, retention, window, zone};
    PGresult *res;

    snprintf(period, sizeof period, "%lld", lc->period_s);
    snprintf(retention, sizeof retention, "%lld", lc->retention_s);
    snprintf(window, sizeof window, "%lld", lc->window_s);
    snprintf(zone, sizeof zone, "%.3f", lc->zone_s);
    res = db_exec(conn, "data lifecycle",
                  "SELECT created, dropped FROM poold_lifecycle_maintain("
                  "$1::bigint, $2::bigint, $3::bigint, $4::float8)",
                  4, params, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    *created = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    *dropped = (int)strtol(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return POOLD_OK;
}

int catalog_audit_prune(struct db_conn *conn,
                        const struct catalog_lifecycle *lc, long long *deleted,
                        char *err, size_t errlen)
{
    char retention[24], batch[16];
    const char *params[2] = {retention, batch};
    PGresult *res;
    long long n;

    *deleted = 0;
    if (lc->audit_retention_s <= 0)
        return POOLD_OK;
    snprintf(retention, sizeof retention, "%lld", lc->audit_retention_s);
    snprintf(batch, sizeof batch, "%d", CATALOG_AUDIT_BATCH);
    do {
        /* audit_log_at_idx (sql/007_audit_retention.sql) finds them. */
        res = db_exec(conn, "audit retention",
                      "DELETE FROM audit_log WHERE entry_id IN"
                      " (SELECT entry_id FROM audit_log WHERE at < now() -"
                      " make_interval(secs => $1::bigint) ORDER BY at"
                      " LIMIT $2::integer)",
                      2, params, NULL, err, errlen);
        if (res == NULL)
            return POOLD_ERR_DB;
        n = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        *deleted += n;
    } while (n == CATALOG_AUDIT_BATCH && *deleted < CATALOG_AUDIT_ROUND);
    return POOLD_OK;
}

int catalog_lifecycle_partitions(struct db_conn *conn, int64_t *lo_us,
                                 int64_t *hi_us, size_t max, size_t *n,
                                 char *err, size_t errlen)
{
    PGresult *res;

    *n = 0;
    res = db_exec(conn, "message partitions",
                  "SELECT floor(extract(epoch FROM greatest(lo, 'epoch'))"
                  " * 1e6)::bigint, floor(extract(epoch FROM hi) * 1e6)::bigint"
                  " FROM message_partitions WHERE hi > now() ORDER BY lo",
                  0, NULL, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    for (int row = 0; row < PQntuples(res) && *n < max; row++) {
        lo_us[*n] = strtoll(PQgetvalue(res, row, 0), NULL, 10);
        hi_us[*n] = strtoll(PQgetvalue(res, row, 1), NULL, 10);
        (*n)++;
    }
    PQclear(res);
    return POOLD_OK;
}

int catalog_message_get(struct db_conn *conn, const char *org_id,
                        const char *message_id, long long retention_s,
                        char **json, char *err, size_t errlen)
{
    char retention[24];
    const char *params[3] = {org_id, message_id, retention};
    PGresult *res;

    snprintf(retention, sizeof retention, "%lld", retention_s);
    res = db_exec(
        conn, "message lookup",
        "SELECT json_build_object('org_id', org_id, 'message_id', message_id,"
        " 'passed', passed, 'details', json_build_object('checks', checks,"
        " 'failed', to_json(failed_rules)), 'processed_at',"
        " to_char(processed_at AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text"
        " FROM processed_messages WHERE org_id = $1 AND message_id = $2"
        " AND ($3::bigint = 0"
        "  OR processed_at >= now() - make_interval(secs => $3::bigint))"
        " ORDER BY processed_at DESC LIMIT 1",
        3, params, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return POOLD_ERR_NOT_FOUND;
    }
    *json = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (*json == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}
