/* db.h — one PostgreSQL connection: open with timeouts, liveness, cleanliness. */
#ifndef POOLD_DB_H
#define POOLD_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "status.h"

struct db_conn; /* opaque: a PGconn plus its open time and last use */

struct db_settings {
    const char *url;              /* libpq connection string or URI; borrowed */
    const char *application_name; /* shown in pg_stat_activity; borrowed */
    unsigned connect_timeout_s;   /* libpq connect_timeout (>= 2 effective) */
    unsigned statement_timeout_ms;/* statement_timeout, lock_timeout and
                                     idle_in_transaction_session_timeout
                                     of the session; 0: server defaults */
};

/*
 * Open a connection with connect_timeout, keepalives, tcp_user_timeout and
 * application_name set (parameters given in url win over none of these:
 * ours are appended as separate keywords, expand_dbname=1). Returns POOLD_OK
 * and *out, or POOLD_ERR_DB with libpq's message in err. The caller owns
 * *out and frees it with db_conn_close().
 */
POOLD_MUSTCHECK int db_conn_open(const struct db_settings *settings,
                                 uint64_t now_ns, struct db_conn **out,
                                 char *err, size_t errlen);

/* Close and free. Accepts NULL. */
void db_conn_close(struct db_conn *conn);

/*
 * The liveness ladder: local status, then a zero-round-trip look at the
 * socket for a server-side close (FATAL then EOF), then, only when the
 * connection was last used more than check_idle_ns ago, one empty query.
 */
bool db_conn_is_alive(struct db_conn *conn, uint64_t now_ns,
                      uint64_t check_idle_ns);

/* True if the connection may be reused: CONNECTION_OK and PQTRANS_IDLE. */
bool db_conn_is_clean(const struct db_conn *conn);

/* Record a use (after a successful query), for the idle check above. */
void db_conn_touch(struct db_conn *conn, uint64_t now_ns);

/* The backend's process id (for tests and logs). */
int db_conn_backend_pid(const struct db_conn *conn);

/* The libpq handle, borrowed for as long as conn lives. */
PGconn *db_conn_pg(struct db_conn *conn);

/*
 * Run one parameterised statement (text parameters, the unnamed statement).
 * Returns the result (caller PQclear()s it) when it is PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK; NULL with "what: <libpq message>" in err otherwise.
 * sqlstate, when not NULL, gets the error's SQLSTATE ("" if none).
 */
PGresult *db_exec(struct db_conn *conn, const char *what, const char *sql,
                  int nparams, const char *const *params, char *sqlstate,
                  char *err, size_t errlen);

/* BEGIN / COMMIT; ROLLBACK cannot fail (a broken connection is found by
 * db_conn_is_clean() afterwards). */
POOLD_MUSTCHECK int db_begin(struct db_conn *conn, char *err, size_t errlen);
POOLD_MUSTCHECK int db_commit(struct db_conn *conn, char *err, size_t errlen);
void db_rollback(struct db_conn *conn);

#endif
