/* db.h — one PostgreSQL connection: open with timeouts, bounded statements,
 * prepared statements once per connection, liveness, cleanliness. */
#ifndef POOLD_DB_H
#define POOLD_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "db_settings.h"
#include "status.h"

struct db_conn; /* opaque: a PGconn plus its open time, last use and the
                   statements prepared on it */

/* Named statements a db_query may use (bit index in the connection's set of
 * prepared statements). 0 is "unnamed, never prepared". */
#define DB_STMT_MAX 16

struct db_query {
    unsigned stmt;   /* 1..DB_STMT_MAX: prepared on first use on
                        each connection (when settings allow);
                        0: unnamed statement */
    const char *sql; /* one statement; static for stmt != 0 */
    int nparams;
    const Oid *types; /* may be NULL (server infers) */
    const char *const *values;
    const int *lengths; /* may be NULL when every format is text */
    const int *formats; /* may be NULL: all text */
    bool writes;        /* may commit: a lost answer is "unknown" */
};

/*
 * Open a connection with keepalives, tcp_user_timeout, application_name,
 * the session timeouts and client_connection_check_interval set (ours are
 * appended as separate keywords, expand_dbname=1), asynchronously: the
 * whole opening (TCP, TLS, authentication) ends by the earlier of
 * connect_timeout_s from now and the thread's deadline (db_thread_deadline).
 * Returns POOLD_OK and *out, or POOLD_ERR_DB with the reason in err. The
 * caller owns *out and frees it with db_conn_close().
 */
POOLD_MUSTCHECK int db_conn_open(const struct db_settings *settings,
                                 uint64_t now_ns, struct db_conn **out,
                                 char *err, size_t errlen);

/* Close and free. Accepts NULL. Never waits for the server. */
void db_conn_close(struct db_conn *conn);

/*
 * Would closing conn now leave its backend at work? True when a statement
 * was sent and its answer was not read to the end (its deadline passed,
 * or db_abort_all()) while the server had not closed the connection: the
 * backend reads our goodbye only once that statement is done, and until
 * then PostgreSQL still counts it. *pid gets the backend's process id and
 * *port our end's TCP port (pg_stat_activity.client_port; -1 on a Unix
 * socket), which identify it in pg_stat_activity.
 */
bool db_conn_lingers(const struct db_conn *conn, int *pid, int *port);

/*
 * Run one statement and wait for its whole answer (every result, up to
 * ReadyForQuery, so an autocommit write is known committed) until
 * deadline_ns (CLOCK_MONOTONIC; 0: now + the settings' query_wait_ns),
 * never later than the thread's deadline when one is set, and never past
 * db_abort_all() or, on a fenceable connection, db_fence(). Returns:
 * - POOLD_OK and *out, a result of status TUPLES_OK, COMMAND_OK or
 *   EMPTY_QUERY that the caller PQclear()s;
 * - POOLD_ERR_DB: the server answered an error (the statement did not
 *   commit; err has its message), or nothing that could commit was sent;
 * - POOLD_ERR_COMMIT_UNKNOWN: q->writes, the statement was sent, and the
 *   answer did not come (deadline, abort, fence, lost, FATAL): it may or
 *   may not have committed.
 * After a missed deadline or a lost connection the connection is doomed:
 * db_conn_is_clean() and db_conn_is_alive() say false, so it is destroyed.
 * One thread at a time per connection.
 */
POOLD_MUSTCHECK int db_run(struct db_conn *conn, const struct db_query *q,
                           uint64_t deadline_ns, PGresult **out, char *err,
                           size_t errlen);

/*
 * COPY … FROM STDIN, bounded and answered as db_run(): sql the COPY
 * statement (simple protocol, never prepared), data[0..len) the whole of
 * its input. *out is the COPY's result (PQcmdTuples: the rows stored). A
 * failure before the end of the data was sent is POOLD_ERR_DB (nothing
 * can have been stored); after it, as db_run() with q->writes.
 */
POOLD_MUSTCHECK int db_copy_in(struct db_conn *conn, const char *sql,
                               const char *data, size_t len,
                               uint64_t deadline_ns, PGresult **out, char *err,
                               size_t errlen);

/*
 * A cap on every deadline of the calling thread's database calls (opening,
 * liveness checks, statements); 0 removes it. The registry sets it to the
 * request's acquire deadline while a service is being found or built.
 */
void db_thread_deadline(uint64_t deadline_ns);

/* The calling thread's cap set above (0: none). */
uint64_t db_thread_deadline_get(void);

/* Make every database wait of the process, now and later, end at once (as a
 * missed deadline). For the end of a shutdown. Thread-safe, async-signal
 * unsafe. Irreversible. */
void db_abort_all(void);

/*
 * The cluster's fence (a replica whose lease lapsed holds no connections):
 * raised, every wait on a fenceable connection (db_settings) opened before
 * ends at once, as a missed deadline (a write's answer is "unknown"),
 * unless its answer is already there; no statement is sent on one
 * (POOLD_ERR_DB, nothing sent); none opens while it is up. Such a
 * connection is past the fence for good, lowered or not: neither alive
 * nor clean, so it is closed when given back, its backend gone once it
 * notices (client_connection_check_interval). Lowered when the lease is
 * renewed. Thread-safe.
 */
void db_fence(bool up);
bool db_is_fenced(void);

/* The number of fences raised so far; and whether one is up or was raised
 * since gen (a failure then is the fence's, not the database's: breakers
 * do not count it). */
uint64_t db_fence_generation(void);
bool db_fence_since(uint64_t gen);

/*
 * The liveness ladder: local status, then a zero-round-trip look at the
 * socket for a server-side close (FATAL then EOF), then, only when the
 * connection was last used more than check_idle_ns ago, one empty query
 * (bounded like db_run with no deadline).
 */
bool db_conn_is_alive(struct db_conn *conn, uint64_t now_ns,
                      uint64_t check_idle_ns);

/* True if the connection may be reused: not doomed, CONNECTION_OK and
 * PQTRANS_IDLE. */
bool db_conn_is_clean(const struct db_conn *conn);

/* The SQLSTATE of the last db_run()'s error ("" if none, or no error). */
const char *db_conn_sqlstate(const struct db_conn *conn);

/* Record a use (after a successful query), for the idle check above. */
void db_conn_touch(struct db_conn *conn, uint64_t now_ns);

/* The libpq handle, borrowed for as long as conn lives. Blocking libpq calls
 * on it are not bounded: use db_run() or db_exec(). */
PGconn *db_conn_pg(struct db_conn *conn);

/*
 * Run one parameterised statement (text parameters, the unnamed statement)
 * through db_run() (bounded by the connection's default wait; a lost answer
 * is an error here). Returns the result (caller PQclear()s it) when it is
 * PGRES_TUPLES_OK or PGRES_COMMAND_OK; NULL with "what: <libpq message>" in err
 * otherwise. sqlstate, when not NULL, gets the error's SQLSTATE ("" if none).
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
