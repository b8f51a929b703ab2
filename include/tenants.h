/* tenants.h — the tenant tables as poold reads and writes them (SQL lives
 * here): org management, org API keys, and the watch that keeps this
 * process's live-key set and rate limits in step with the database. */
#ifndef POOLD_TENANTS_H
#define POOLD_TENANTS_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define TENANTS_LABEL_MAX 128

struct audit_actor;     /* audit.h */
struct db_conn;         /* db.h */
struct keys_set;        /* keys.h */
struct ratelimit_table; /* ratelimit.h */
struct tenants;         /* opaque */

/* The key set and the rate-limit table are owned by the tenants object. */
POOLD_MUSTCHECK int tenants_create(struct tenants **out);
void tenants_destroy(struct tenants *t); /* accepts NULL */

/* Borrowed for the life of t; both are thread-safe. */
struct keys_set *tenants_keys(struct tenants *t);
struct ratelimit_table *tenants_limits(struct tenants *t);

/*
 * The registry's watch hook (struct registry_config.watch), run by its
 * housekeeping thread about once a second and after every admin write, on
 * its connection, one call at a time (no lock held): one indexed query
 * reads which orgs' keys or limits changed since its last read
 * (org_changes, catalog_changes_read), and only those orgs' live keys and
 * limits are reloaded (all of them the first time). So a revocation or a
 * limit changed
 * anywhere is seen here within one poll, and no request ever queries for a
 * key. arg is the tenants.
 */
POOLD_MUSTCHECK int tenants_watch(void *arg, struct db_conn *conn, char *err,
                                  size_t errlen);

/* What PUT /orgs/{org_id} stores: the whole org but `paused`. */
struct tenants_org {
    const char *org_id;      /* valid org id; borrowed */
    const char *config_json; /* a JSON object (rules already validated) */
    bool enabled;
    unsigned pool_max_size; /* 0: NULL (the default size) */
    double rate_rps;        /* 0: no limit */
    unsigned rate_burst;
};

/*
 * Every function below runs on conn (the registry's admin connection) and
 * returns POOLD_OK, POOLD_ERR_UNKNOWN_ORG (no such org), POOLD_ERR_NOT_FOUND
 * (no such key), POOLD_ERR_DB (err says what; the change is rolled back or
 * was never sent) or POOLD_ERR_NOMEM. JSON results are malloc'd texts the
 * caller frees. Writes record their audit entry in the same transaction.
 */

/* {"orgs":[org,...],"next":org_id|null}: limit orgs after `after` (NULL:
 * from the start) in org_id order. */
POOLD_MUSTCHECK int tenants_org_list(struct db_conn *conn, const char *after,
                                     unsigned limit, char **json, char *err,
                                     size_t errlen);

/* The org object {"org_id","enabled","config","pool_max_size",
 * "rate_limit","paused"}. */
POOLD_MUSTCHECK int tenants_org_get(struct db_conn *conn, const char *org_id,
                                    char **json, char *err, size_t errlen);

/* Create or replace; *created says which. *json is the org after. */
POOLD_MUSTCHECK int tenants_org_put(struct db_conn *conn,
                                    const struct tenants_org *org,
                                    const struct audit_actor *actor,
                                    bool *created, char **json, char *err,
                                    size_t errlen);

/* Delete the org and revoke its keys; its messages stay. */
POOLD_MUSTCHECK int tenants_org_delete(struct db_conn *conn, const char *org_id,
                                       const struct audit_actor *actor,
                                       char *err, size_t errlen);

/* Live (unrevoked) keys an org may hold at once: enough for rotation and
 * one per client, and a bound on what every poold keeps of them. */
#define TENANTS_LIVE_KEYS_MAX 100

/* Store a new key's digest. label may be NULL. *json is {"key_id",
 * "label","created_at"} (the caller adds the key itself).
 * POOLD_ERR_CONFLICT: the org holds TENANTS_LIVE_KEYS_MAX live keys. */
POOLD_MUSTCHECK int tenants_key_create(struct db_conn *conn, const char *org_id,
                                       const char *key_id,
                                       const unsigned char *digest,
                                       const char *label,
                                       const struct audit_actor *actor,
                                       char **json, char *err, size_t errlen);

/* {"keys":[{"key_id","label","created_at","revoked_at"},...],"next"}:
 * the org's keys, revoked ones too, oldest first, at most limit of them,
 * those after the key after_id (NULL: from the first); "next" is the last
 * one's key_id when more follow, else null. POOLD_ERR_INVALID (err says
 * why): after_id is not one of the org's keys. */
POOLD_MUSTCHECK int tenants_key_list(struct db_conn *conn, const char *org_id,
                                     const char *after_id, unsigned limit,
                                     char **json, char *err, size_t errlen);

/* Revoke; a key already revoked is POOLD_OK (nothing recorded). */
POOLD_MUSTCHECK int tenants_key_revoke(struct db_conn *conn, const char *org_id,
                                       const char *key_id,
                                       const struct audit_actor *actor,
                                       char *err, size_t errlen);

#endif
