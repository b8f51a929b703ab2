/* intake.h — client connections before and around libmicrohttpd: the listen
 * socket, a waiting room while every slot is taken, and the deadline for
 * reading a whole request. */
#ifndef POOLD_INTAKE_H
#define POOLD_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "status.h"

struct intake;      /* opaque */
struct intake_conn; /* one connection the HTTP server holds; opaque */
struct metrics;

/*
 * Hands an accepted, non-blocking socket to the HTTP server, which owns it
 * from then on in every case (it closes it itself when it cannot take it).
 * Returns true when the server took it. Called on the intake's thread.
 */
typedef bool (*intake_hand_over_fn)(void *arg, int fd,
                                    const struct sockaddr *addr,
                                    socklen_t addrlen);

struct intake_config {
    const struct sockaddr *addr; /* to bind; borrowed for the call */
    socklen_t addrlen;
    unsigned max_clients; /* slots: connections the server holds */
    unsigned room;        /* connections waiting for a slot at most (fewer when
                             RLIMIT_NOFILE leaves less after the slots) */
    uint64_t read_timeout_ns; /* request (headers and body) read deadline */
    bool tls;                 /* judge readiness by a whole TLS record */
    size_t peek_max;          /* bytes looked at to judge readiness */
    intake_hand_over_fn hand_over;
    void *arg; /* passed to hand_over */
    /* Counts the idle keep-alive connections closed to give their slots
     * to waiting ones; borrowed until intake_stop(), may be NULL. */
    struct metrics *metrics;
};

/*
 * Bind, listen and start the intake thread; raises the process's
 * RLIMIT_NOFILE soft limit to its hard limit. POOLD_ERR_INVALID with err set
 * when the address cannot be bound. The caller destroys the result with
 * intake_stop() then intake_destroy().
 */
POOLD_MUSTCHECK int intake_start(const struct intake_config *cfg,
                                 struct intake **out, char *err, size_t errlen);

/* The port bound (useful with port 0). */
unsigned intake_port(const struct intake *in);

/* Stop accepting and close the connections still waiting for a slot; the
 * deadlines of the server's connections keep being enforced. Idempotent,
 * thread-safe. */
void intake_quiesce(struct intake *in);

/* Stop the thread (joins it) and close the listen socket and the waiting
 * room. The intake_conn_* calls stay valid until intake_destroy(), so the
 * server can be stopped after this. Idempotent. */
void intake_stop(struct intake *in);

/* Free everything; call after the server stopped. Accepts NULL. */
void intake_destroy(struct intake *in);

/*
 * The server's connection notifications; all thread-safe. started() returns
 * the connection's record (NULL when out of memory: the connection then has
 * no read deadline); the server passes it back to the others, until
 * closed(), which must run before the server closes fd — libmicrohttpd
 * 0.9.75 calls its NOTIFY_CONNECTION CLOSED callback before it closes the
 * socket, which is what lets the intake shut a connection down without ever
 * touching a reused descriptor. Every function accepts a NULL conn.
 */
struct intake_conn *intake_conn_started(struct intake *in, int fd);
void intake_conn_closed(struct intake *in, struct intake_conn *c);
/* A request's headers arrived (the first handler call). */
void intake_request_begun(struct intake *in, struct intake_conn *c);
/* The request is fully read (the handler's final call, or answered early):
 * no read deadline until the next request begins. */
void intake_request_read(struct intake *in, struct intake_conn *c);
/* The request is over; the connection may idle until the next one.
 * wire_bytes: the bytes of the connection this request took (request line,
 * headers and body as sent), if exact; not exact (a chunked body, a body
 * not read) leaves the connection without the count for good. */
void intake_request_done(struct intake *in, struct intake_conn *c,
                         uint64_t wire_bytes, bool exact);

#endif
