/* audit.h — the audit log of admin writes (SQL lives here): record one
 * entry inside the caller's transaction, list entries newest first. */
#ifndef POOLD_AUDIT_H
#define POOLD_AUDIT_H

#include <stddef.h>

#include "status.h"

struct db_conn;

/* Who did it: the token's scope ("admin") and the client's address. */
struct audit_actor {
    const char *scope;      /* borrowed */
    const char *address;    /* borrowed; "" when unknown */
    const char *request_id; /* borrowed; the request's X-Request-Id */
};

/*
 * One entry. before/after are JSON texts (NULL: null), typically the
 * object's state as the API shows it, or SQL expressions' results the
 * caller already has. Every pointer is borrowed for the call.
 */
struct audit_entry {
    const struct audit_actor *actor;
    const char *action; /* pool.resize, org.put, org.delete, key.create,
                           key.revoke, pool.drain, pool.pause, pool.resume */
    const char *org_id; /* NULL: not about one org */
    const char *before; /* JSON text or NULL */
    const char *after;  /* JSON text or NULL */
};

/*
 * Insert one entry on conn. Call it inside the transaction of the change it
 * records (db_begin() ... audit_insert() ... db_commit()), so the entry and
 * the change commit together or not at all; for a change with no database
 * write (drain), call it alone. POOLD_ERR_DB with err set on failure.
 */
POOLD_MUSTCHECK int audit_insert(struct db_conn *conn,
                                 const struct audit_entry *e, char *err,
                                 size_t errlen);

/*
 * The newest limit entries (of org_id, or of all orgs when NULL) as JSON
 * text {"entries":[...]} in *json (malloc'd, caller frees).
 */
POOLD_MUSTCHECK int audit_list(struct db_conn *conn, const char *org_id,
                               unsigned limit, char **json, char *err,
                               size_t errlen);

#endif
