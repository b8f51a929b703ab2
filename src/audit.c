/* audit.c — the audit_log table: insert inside a change's transaction, list. */
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

int audit_insert(struct db_conn *conn, const struct audit_entry *e, char *err,
                 size_t errlen)
{
    const struct audit_actor *a = e->actor;
    const char *params[7] = {
        a && a->scope ? a->scope : "admin",
        a && a->address ? a->address : "",
        e->action,
        e->org_id,
        e->before,
        e->after,
        a ? a->request_id : NULL,
    };
    PGresult *res =
        db_exec(conn, "audit insert",
                "INSERT INTO audit_log (actor, action, org_id, before, after,"
                " request_id) VALUES (jsonb_build_object('scope', $1::text,"
                " 'address', $2::text), $3, $4, $5::jsonb, $6::jsonb, $7)",
                7, params, NULL, err, errlen);

    if (res == NULL)
        return POOLD_ERR_DB;
    PQclear(res);
    return POOLD_OK;
}

int audit_list(struct db_conn *conn, const char *org_id, unsigned limit,
               char **json, char *err, size_t errlen)
{
    char lim[16];
    const char *params[2] = {org_id, lim};
    PGresult *res;

    snprintf(lim, sizeof lim, "%u", limit);
    res = db_exec(
        conn, "audit list",
        "SELECT jsonb_build_object('entries', coalesce(jsonb_agg(e ORDER BY"
        " id DESC), '[]'))::text FROM (SELECT entry_id AS id,"
        " jsonb_build_object('at', to_char(at AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'actor', actor, 'action',"
        " action, 'org_id', org_id, 'before', before, 'after', after,"
        " 'request_id', request_id) AS e FROM audit_log"
        " WHERE $1::text IS NULL OR org_id = $1"
        " ORDER BY entry_id DESC LIMIT $2::integer) s",
        2, params, NULL, err, errlen);
    if (res == NULL)
        return POOLD_ERR_DB;
    *json = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (*json == NULL) {
        snprintf(err, errlen, "audit list: out of memory");
        return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}
