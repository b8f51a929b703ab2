/* db_settings.h — how to open a database connection: the settings alone,
 * without libpq, so a module's config struct can hold them. */
#ifndef POOLD_DB_SETTINGS_H
#define POOLD_DB_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

struct db_settings {
    const char *url;              /* libpq connection string or URI; borrowed */
    const char *application_name; /* shown in pg_stat_activity; borrowed */
    unsigned connect_timeout_s;   /* bound on opening a connection */
    unsigned statement_timeout_ms; /* statement_timeout, lock_timeout and
                                      idle_in_transaction_session_timeout
                                      of the session; 0: server defaults */
    uint64_t query_wait_ns;        /* client-side bound on one statement when
                                      the caller gives no deadline (0: 5 s) */
    bool prepared;                 /* POOLD_PREPARED_STATEMENTS: named
                                      statements, prepared once per
                                      connection; false: unnamed only */
    bool fenceable;                /* counts against the cluster's budget:
                                      db_fence() ends its statements (all
                                      but housekeeping's own connections) */
};

#endif
