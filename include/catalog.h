/* catalog.h — the orgs table as poold reads and writes it (SQL lives here). */
#ifndef POOLD_CATALOG_H
#define POOLD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    bool present;      /* false: no such row (catalog_load_some) */
};

/* Fail with a clear message unless the schema (sql/) has been applied. */
POOLD_MUSTCHECK int catalog_check_schema(struct db_conn *conn, char *err,
                                         size_t errlen);

/*
 * Change detection that reads only what changed (sql/005_org_changes.sql).
 * A cursor is the snapshot (pg_current_snapshot()) under which its owner
 * last read org_changes; the next read returns the org ids written by
 * transactions that snapshot did not see, so a transaction committing after
 * a later-started one is never missed (transaction ids, not a sequence).
 */
struct catalog_cursor {
    char *snap;       /* malloc'd pg_snapshot text; NULL: never read */
    uint64_t read_ns; /* when snap was read (caller's clock) */
};

/* A cursor older than this has lost rows to pruning: everything again. */
#define CATALOG_CURSOR_MAX_AGE_NS (12ull * 3600 * 1000000000ull)
/* Changed orgs read one by one at most; more is a reload of everything. */
#define CATALOG_CHANGES_MAX 1024 /* the query asks for one more */

/* What changed since a cursor: everything (all), or n org ids. */
struct catalog_changes {
    bool all;
    char (*ids)[ORG_ID_MAX + 1]; /* malloc'd; NULL when n is 0 */
    size_t n;
    char *next; /* malloc'd snapshot of this read: catalog_cursor_advance */
};

/*
 * Read what changed since cur (nothing is moved yet: the caller applies
 * it, then calls catalog_cursor_advance). A never-read or too old cursor
 * (now_ns) gives all. One indexed query.
 */
POOLD_MUSTCHECK int catalog_changes_read(struct db_conn *conn,
                                         const struct catalog_cursor *cur,
                                         uint64_t now_ns,
                                         struct catalog_changes *out, char *err,
                                         size_t errlen);

/* The changes were applied: cur moves to their snapshot (taking ch->next),
 * and ch is freed. */
void catalog_cursor_advance(struct catalog_cursor *cur,
                            struct catalog_changes *ch, uint64_t now_ns);

/* Free what a read left (also after a failed apply); ch may be zeroed. */
void catalog_changes_free(struct catalog_changes *ch);
void catalog_cursor_deinit(struct catalog_cursor *cur);

/* The ids as a text[] literal ("{a,b}"), malloc'd (org ids need no
 * quoting); NULL when out of memory. */
char *catalog_ids_array(const struct catalog_changes *ch);

/* Remove org_changes rows older than a day (a cursor that old reloads
 * everything), the oldest CATALOG_CHANGES_BATCH at most: one short
 * statement (a bulk import leaves a row per org), *deleted of them. */
#define CATALOG_CHANGES_BATCH 5000
POOLD_MUSTCHECK int catalog_prune_changes(struct db_conn *conn,
                                          long long *deleted, char *err,
                                          size_t errlen);

/* Called between the statements of a long load (a heartbeat that must
 * not wait for the whole of it). */
struct catalog_pace {
    void (*fn)(void *arg);
    void *arg;
};

/* Load every org, in org_id order, page rows a statement (keyset: each
 * statement short, whatever the number of orgs), pace->fn (when set)
 * between two. *out is malloc'd (caller frees), *n its length. */
#define CATALOG_LOAD_PAGE 50000
POOLD_MUSTCHECK int catalog_load(struct db_conn *conn, size_t page,
                                 const struct catalog_pace *pace,
                                 struct org_info **out, size_t *n, char *err,
                                 size_t errlen);

/* Load the orgs ch names, one entry per id in its order: present false
 * for an id without a row. *out is malloc'd (caller frees). */
POOLD_MUSTCHECK int catalog_load_some(struct db_conn *conn,
                                      const struct catalog_changes *ch,
                                      struct org_info **out, char *err,
                                      size_t errlen);

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
    long long audit_retention_s; /* audit entries older go; 0: none */
};

/* One maintenance round (poold_lifecycle_maintain): the window recorded,
 * partitions made ahead, old ones dropped. *created / *dropped count the
 * partitions. */
POOLD_MUSTCHECK int
catalog_lifecycle_maintain(struct db_conn *conn,
                           const struct catalog_lifecycle *lc, int *created,
                           int *dropped, char *err, size_t errlen);

/* Deletes the audit entries older than lc->audit_retention_s (nothing when
 * it is 0), oldest first, in statements of at most CATALOG_AUDIT_BATCH rows
 * and at most CATALOG_AUDIT_ROUND rows a call (the rest goes at the next
 * round: a first run on years of entries never holds the connection for
 * long). *deleted counts them. */
#define CATALOG_AUDIT_BATCH 5000
#define CATALOG_AUDIT_ROUND 100000
POOLD_MUSTCHECK int catalog_audit_prune(struct db_conn *conn,
                                        const struct catalog_lifecycle *lc,
                                        long long *deleted, char *err,
                                        size_t errlen);

/* The range partitions of processed_messages that end after now(), the
 * first max of them in order: [lo_us[i], hi_us[i]) in Unix microseconds (a
 * partition from the beginning of time starts at 0, the epoch). */
POOLD_MUSTCHECK int catalog_lifecycle_partitions(struct db_conn *conn,
                                                 int64_t *lo_us, int64_t *hi_us,
                                                 size_t max, size_t *n,
                                                 char *err, size_t errlen);

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
