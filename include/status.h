/* status.h — the project-wide status codes (0 ok, negative errors). */
#ifndef POOLD_STATUS_H
#define POOLD_STATUS_H

#define POOLD_MUSTCHECK __attribute__((warn_unused_result))

/*
 * Every fallible function in poold returns one of these. Lower layers return
 * a code and fill a caller's message buffer; only the HTTP layer maps a code
 * to an HTTP status (status_http() in handlers), and it logs once.
 */
enum poold_status {
    POOLD_OK = 0,
    POOLD_ERR_NOMEM = -1,           /* allocation failed */
    POOLD_ERR_INVALID = -2,         /* bad argument from the caller */
    POOLD_ERR_TIMEOUT = -3,         /* waited for a pooled object, none came */
    POOLD_ERR_WAITERS_FULL = -4,    /* too many waiters: refused at once */
    POOLD_ERR_SHUTDOWN = -5,        /* the pool or server is shutting down */
    POOLD_ERR_CREATE = -6,          /* a pool's create callback failed */
    POOLD_ERR_DB = -7,              /* database unreachable or query failed */
    POOLD_ERR_UNKNOWN_ORG = -8,     /* org not in orgs, or disabled */
    POOLD_ERR_MISCONFIGURED = -9,   /* org's rules cannot be parsed */
    POOLD_ERR_CONFLICT = -10,       /* message id reused with another payload */
    POOLD_ERR_NOT_FOUND = -11,      /* no such object */
    POOLD_ERR_NOT_READY = -12,      /* org directory not loaded yet (db down) */
    POOLD_ERR_COMMIT_UNKNOWN = -13, /* a write was sent and its answer did not
                                     come: it may or may not be committed */
    POOLD_ERR_PAUSED = -14,         /* the org is paused by an operator */
    POOLD_ERR_DB_BUSY = -15,    /* no connection (or admin turn) in time: the
                                   database did not answer, nothing was sent */
    POOLD_ERR_CONNS_BUSY = -16, /* no connection in time while the database
                                   answers: every one in use, nothing sent */
};

/* A static, human-readable name for a status ("timeout", ...). Never NULL. */
const char *poold_status_str(int status);

#endif
