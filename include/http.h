/* http.h — the libmicrohttpd daemon: routing, body limits, request context,
 * access log, request metrics and the in-flight count for a graceful drain. */
#ifndef POOLD_HTTP_H
#define POOLD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "status.h"

struct handlers;    /* handlers.h */
struct metrics;     /* metrics.h */
struct http_server; /* opaque */

/* A client's own X-Request-Id is kept when it is 1 to this many bytes of
 * [A-Za-z0-9._:-]; otherwise poold makes one. */
#define HTTP_REQUEST_ID_MAX 128

struct http_server_config {
    const struct sockaddr *addr; /* borrowed for the call */
    socklen_t addrlen;
    bool ipv6;
    unsigned max_clients;            /* connections held at once (slots) */
    unsigned client_timeout_s;       /* MHD_OPTION_CONNECTION_TIMEOUT (idle) */
    unsigned request_read_timeout_s; /* a whole request read within this */
    size_t max_body_bytes;           /* larger bodies get 413 */
    /* PEM text of the certificate (chain) and key: HTTPS when both are set.
     * Borrowed: must outlive the server. */
    const char *tls_cert_pem;
    const char *tls_key_pem;
};

/*
 * Bind and start serving in thread-per-connection mode; connections are
 * accepted by the intake (intake.h), which holds them while every slot is
 * taken and enforces the request read deadline. handlers and metrics
 * are borrowed and must outlive the server. POOLD_ERR_INVALID with err set
 * when the daemon cannot start (address in use, ...).
 */
POOLD_MUSTCHECK int http_server_start(const struct http_server_config *cfg,
                                      struct handlers *handlers,
                                      struct metrics *metrics,
                                      struct http_server **out, char *err,
                                      size_t errlen);

/* The port actually bound (useful with port 0). */
unsigned http_server_port(struct http_server *srv);

/* Stop accepting new connections; requests already received carry on.
 * Idempotent. */
void http_server_quiesce(struct http_server *srv);

/* Wait until no request is in flight or timeout_ns passed; true if none is. */
bool http_server_wait_idle(struct http_server *srv, uint64_t timeout_ns);

/* Requests in flight now (headers seen, not completed). */
unsigned http_server_inflight(struct http_server *srv);

/* Stop the daemon (joins every connection thread) and free. Accepts NULL. */
void http_server_stop(struct http_server *srv);

#endif
