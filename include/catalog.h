/* catalog.h — the orgs table as poold reads and writes it (SQL lives here). */
#ifndef POOLD_CATALOG_H
#define POOLD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "audit.h"
#include "db.h"
#include "orgid.h"
#include "status.h"

struct org_info {
    char org_id[ORG_ID_MAX + 1];
    bool enabled;
    int pool_max_size; /* 0 when NULL (use the default) */
    long long version; /* orgs.config_version: bumped on every change */
    bool paused;       /* orgs.paused: POST /process* answer 503 */
};

/* Fail with a clear message unless the schema (sql/) has been applied. */
POOLD_MUSTCHECK int catalog_check_schema(struct db_conn *conn, char *err,
                                         size_t errlen);

/*
 * A fingerprint of the whole table: the row count and an order-independent
 * digest of every row's (org_id, config_version, enabled, pool_max_size,
 * paused).
 * If both are unchanged, nothing poold uses changed. A digest, not
 * max(config_version): sequence numbers are taken at update time, so a
 * transaction that commits after a later-numbered one would not move the
 * maximum and its change would be missed forever. One scan of orgs, no
 * rows sent.
 */
POOLD_MUSTCHECK int catalog_fingerprint(struct db_conn *conn, long long *count,
                                        long long *digest, char *err,
                                        size_t errlen);

/* Load every org. *out is malloc'd (caller frees), *n its length. */
POOLD_MUSTCHECK int catalog_load(struct db_conn *conn, struct org_info **out,
                                 size_t *n, char *err, size_t errlen);

/*
 * Call fn for every enabled org with its configuration text (borrowed for
 * the call, len bytes, NUL-terminated) and config_version: one query, for
 * parsing every org's rules ahead of its first request.
 */
POOLD_MUSTCHECK int catalog_load_configs(
    struct db_conn *conn,
    void (*fn)(void *arg, const char *org_id, const char *config, size_t len,
               long long version),
    void *arg, char *err, size_t errlen);

/* The named statement (db.h) catalog_load_org() prepares on a connection;
 * the others of DB_STMT_MAX are the service's. */
#define CATALOG_STMT_ORG 1

/* Takes one org's configuration text (borrowed for the call, len bytes,
 * NUL-terminated) and config_version; returns a status, err filled on
 * failure. */
typedef int (*catalog_config_fn)(void *arg, const char *config, size_t len,
                                 long long version, char *err, size_t errlen);

/*
 * Read org_id's row (a statement prepared once per connection, when the
 * connection's settings allow) and call fn with its configuration; fn's
 * status is returned. POOLD_ERR_UNKNOWN_ORG when the org has no row or is
 * disabled (err says which), POOLD_ERR_DB when the read fails. The service
 * builds its rules with it, on its own connection.
 */
POOLD_MUSTCHECK int catalog_load_org(struct db_conn *conn, const char *org_id,
                                     catalog_config_fn fn, void *arg, char *err,
                                     size_t errlen);

/* Store orgs.pool_max_size for org_id. POOLD_ERR_UNKNOWN_ORG if no row. */
POOLD_MUSTCHECK int catalog_store_pool_size(struct db_conn *conn,
                                            const char *org_id, unsigned size,
                                            char *err, size_t errlen);

/* Store orgs.paused for org_id (config_version is left alone: a pause is
 * not a configuration change). POOLD_ERR_UNKNOWN_ORG if no row. */
POOLD_MUSTCHECK int catalog_store_paused(struct db_conn *conn,
                                         const char *org_id, bool paused,
                                         char *err, size_t errlen);
/* As catalog_store_paused(), in one transaction with an audit entry
 * (pool.pause or pool.resume, before and after {"paused": b}) by actor;
 * actor NULL: no entry. */
POOLD_MUSTCHECK int catalog_store_paused_by(struct db_conn *conn,
                                            const char *org_id, bool paused,
                                            const struct audit_actor *actor,
                                            char *err, size_t errlen);

/* As catalog_store_pool_size(), in one transaction with an audit entry
 * (pool.resize, before and after {"pool_max_size": n}) by actor. */
POOLD_MUSTCHECK int catalog_store_pool_size_by(struct db_conn *conn,
                                               const char *org_id,
                                               unsigned size,
                                               const struct audit_actor *actor,
                                               char *err, size_t errlen);

/* processed_messages' lifecycle (sql/005_lifecycle.sql), in seconds. */
struct catalog_lifecycle {
    long long period_s;    /* a partition's length (>= the window) */
    long long retention_s; /* partitions ended this long ago go; 0: none */
    long long window_s;    /* POOLD_DEDUPE_WINDOW_S */
    double zone_s;         /* either side of a boundary: the careful path */
};

/* One maintenance round (poold_lifecycle_maintain): the window recorded,
 * partitions made ahead, old ones dropped. *created / *dropped count the
 * partitions. */
POOLD_MUSTCHECK int
catalog_lifecycle_maintain(struct db_conn *conn,
                           const struct catalog_lifecycle *lc, int *created,
                           int *dropped, char *err, size_t errlen);

/* The stored result of (org_id, message_id) not older than retention_s
 * (0: any age), newest first, as the JSON text of GET
 * /orgs/{org_id}/messages/{message_id} (*json malloc'd, the caller's).
 * POOLD_ERR_NOT_FOUND when there is none. message_id: NUL-terminated
 * UTF-8. */
POOLD_MUSTCHECK int catalog_message_get(struct db_conn *conn,
                                        const char *org_id,
                                        const char *message_id,
                                        long long retention_s, char **json,
                                        char *err, size_t errlen);

#endif
