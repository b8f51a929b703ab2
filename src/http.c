/* http.c — the libmicrohttpd daemon (thread per connection), routing, body
 * limits, per-request context, access log and request metrics. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "handlers.h"
#include "handlers_test.h"
#include "intake.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"

/* Each connection has its own thread, whose stack holds libpq, jansson and
 * our handlers: 512 KiB leaves room for the sanitizer builds too. */
#define HTTP_THREAD_STACK ((size_t)(512 * 1024))
/* Request line + headers + read buffer per connection; larger header sets
 * get MHD's own 431/414. */
#define HTTP_CONN_MEMORY ((size_t)(32 * 1024))
/* An oversized chunked body is read and thrown away so the 413 can be sent
 * (libmicrohttpd cannot answer before the body's end); past this much more
 * the connection is closed without an answer instead, so a client cannot
 * keep a thread reading for long. */
#define HTTP_DISCARD_MAX ((uint64_t)1024 * 1024)
#define HTTP_METHOD_MAX 16
/* Bodies up to this size are kept in the request's context (a message of
 * the bench's shape is ~150 bytes). The context stays under 1 KiB with a
 * short path, so glibc serves it from its per-thread cache; a larger
 * block takes the slower path (malloc_consolidate showed in profiles). */
#define HTTP_BODY_INLINE ((size_t)256)
/* The waiting room holds 4 x POOLD_MAX_CLIENTS connections, at least this
 * many (and fewer if the descriptor limit says so). */
#define HTTP_ROOM_MIN 1024u

struct http_server {
    struct MHD_Daemon *daemon;
    struct intake *intake; /* accepts and hands connections to daemon */
    struct handlers *handlers;
    struct metrics *metrics;
    size_t max_body;
    /* Requests begun and not completed. Counted without the lock (two
     * lock round trips per request); the one that brings it to 0 takes
     * the lock to broadcast idle, so a waiter that saw it above 0 under
     * the lock is always woken. */
    atomic_uint inflight;
    pthread_mutex_t lock; /* for idle */
    pthread_cond_t idle;  /* broadcast when inflight drops to 0 */
    unsigned id_prefix;
    atomic_uint_fast64_t next_id;
};

/* Everything one request owns; freed in on_completed() only. */
struct request_ctx {
    struct http_server *srv;
    struct intake_conn *iconn; /* the connection's deadline record */
    char method[HTTP_METHOD_MAX];
    char *path;   /* copy of the URL path */
    char *param;  /* copy of the {org_id} segment, or NULL (at most 65 bytes:
                     longer than an org id can be is invalid anyway) */
    char *param2; /* copy of a second {...} segment, or NULL (as param) */
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    char allow[64]; /* Allow header of a 405 */
    uint64_t start_ns;
    char *body; /* at most max_body bytes: body_inline, or malloc'd */
    size_t body_len, body_cap;
    size_t max_body;    /* the route's body limit (handlers_body_limit) */
    uint64_t discarded; /* bytes of an oversized body thrown away */
    uint64_t body_wire; /* body bytes read, kept or not */
    bool chunked;       /* a Transfer-Encoding: body_wire is not as sent */
    bool refused;       /* answered at its headers, Connection: close */
    bool unauthorized;  /* credentials refused at the headers: its body is
                           read and thrown away, then answered refusal */
    struct http_response *refusal; /* that answer (malloc'd), kept as it
                                      was: never a handler on no body */
    bool too_large;
    bool responded;
    unsigned status;             /* 0 until a response is queued */
    size_t route;                /* index in handlers_routes, or nroutes */
    const struct route *matched; /* the route run, NULL: 404 or 405 */
    size_t param_len, param2_len;
    const char *error_code;
    char org[ORG_ID_MAX + 1];
    char detail[HTTP_DETAIL_MAX];
    /* A small message's body fits here, so a request of the common kind
     * costs one allocation (this context, its path after it), not three. */
    char body_inline[HTTP_BODY_INLINE];
    char path_buf[]; /* path points here */
};

/* ---- formatting without printf (a visible part of a request's CPU) ----- */

/* src into dst (cap bytes), cut to fit and NUL-terminated, as
 * snprintf(dst, cap, "%s", src) would. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* v in decimal into buf (at least 21 bytes); returns buf. */
static char *format_uint(char *buf, unsigned long long v)
{
    char tmp[21];
    size_t i = sizeof tmp, n;

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    n = sizeof tmp - i;
    memcpy(buf, tmp + i, n);
    buf[n] = '\0';
    return buf;
}

/* ns as milliseconds with three decimals ("12.345"), rounded to the
 * nearest microsecond, into buf (at least 26 bytes). */
static void format_ms(char *buf, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    size_t n;

    format_uint(buf, us / 1000);
    n = strlen(buf);
    buf[n] = '.';
    buf[n + 1] = (char)('0' + us % 1000 / 100);
    buf[n + 2] = (char)('0' + us % 100 / 10);
    buf[n + 3] = (char)('0' + us % 10);
    buf[n + 4] = '\0';
}

/* The low digits hex digits of v, lowercase, at buf (no NUL). */
static void format_hex(char *buf, uint64_t v, size_t digits)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = digits; i-- > 0; v >>= 4)
        buf[i] = hex[v & 0xf];
}

/* ---- routing ------------------------------------------------------------ */

static const char *segment_end(const char *s)
{
    while (*s != '\0' && *s != '/')
        s++;
    return s;
}

/* Match path against a pattern of "/"-separated segments; "{...}" matches
 * one non-empty segment, returned in *param / *param_len; "{...*}" all that
 * is left of the path, slashes included, when that is not empty (a last
 * segment only): empty segments inside it are its own ("/x" or "a//b" as
 * a message id), so it may begin with '/'. */
static bool pattern_match(const char *pattern, const char *path,
                          const char **param, size_t *param_len,
                          const char **param2, size_t *param2_len)
{
    const char *p = NULL, *p2 = NULL;
    size_t plen = 0, p2len = 0;

    while (*pattern != '\0' && *path != '\0') {
        const char *pe, *se;
        if (*pattern != '/' || *path != '/')
            return false;
        pattern++;
        path++;
        pe = segment_end(pattern);
        se = segment_end(path);
        if (*pattern == '{') {
            if (pe - pattern >= 3 && pe[-2] == '*') /* "{name*}": the rest */
                se = path + strlen(path);
            if (se == path)
                return false;
            if (p == NULL) {
                p = path;
                plen = (size_t)(se - path);
            } else {
                p2 = path;
                p2len = (size_t)(se - path);
            }
        } else if (pe - pattern != se - path ||
                   memcmp(pattern, path, (size_t)(pe - pattern)) != 0) {
            return false;
        }
        pattern = pe;
        path = se;
    }
    if (*pattern != '\0' || *path != '\0')
        return false;
    *param = p;
    *param_len = plen;
    *param2 = p2;
    *param2_len = p2len;
    return true;
}

bool http_route_match(const char *pattern, const char *path, const char **param,
                      size_t *param_len, const char **param2,
                      size_t *param2_len)
{
    return pattern_match(pattern, path, param, param_len, param2, param2_len);
}

/* Whether a request of method runs a row of row_method: its own, and HEAD
 * the GET row (RFC 9110 9.3.2; libmicrohttpd sends the headers of the
 * answer without its body). */
static bool method_runs(const char *method, const char *row_method)
{
    return strcmp(row_method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(row_method, "GET") == 0);
}

/* The route for (method, path); NULL with ctx->allow filled when the path
 * exists under other methods (405), NULL with it empty for 404. */
static const struct route *route_find(struct request_ctx *ctx,
                                      const char **param, size_t *param_len,
                                      const char **param2, size_t *param2_len)
{
    size_t o = 0;

    ctx->allow[0] = '\0';
    for (size_t i = 0; i < handlers_nroutes; i++) {
        const struct route *r = &handlers_routes[i];
        if (!pattern_match(r->pattern, ctx->path, param, param_len, param2,
                           param2_len))
            continue;
        if (method_runs(ctx->method, r->method)) {
            ctx->route = i;
            return r;
        }
        int n = snprintf(ctx->allow + o, sizeof ctx->allow - o, "%s%s%s",
                         o ? ", " : "", r->method,
                         strcmp(r->method, "GET") == 0 ? ", HEAD" : "");
        if (n > 0 && (size_t)n < sizeof ctx->allow - o)
            o += (size_t)n;
        ctx->route = i; /* a 405 counts under the path's route */
    }
    if (o == 0)
        ctx->route = handlers_nroutes;
    return NULL;
}

/* ---- responses ------------------------------------------------------------
 */

static enum MHD_Result queue(struct MHD_Connection *conn,
                             struct request_ctx *ctx,
                             struct http_response *resp)
{
    struct MHD_Response *r;
    enum MHD_Result ok;
    char retry[24];
    char *body = resp->body;

    r = MHD_create_response_from_buffer(resp->body_len, body,
                                        body ? MHD_RESPMEM_MUST_FREE
                                             : MHD_RESPMEM_PERSISTENT);
    resp->body = NULL; /* MHD frees it with the response, or here */
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    if (resp->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                resp->content_type);
    MHD_add_response_header(r, "X-Request-Id", ctx->request_id);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (resp->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->www_authenticate)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (resp->csp) {
        MHD_add_response_header(r, "Content-Security-Policy", resp->csp);
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
    }
    if (resp->retry_after_s > 0) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER,
                                format_uint(retry, resp->retry_after_s));
    }
    if (ctx->refused || handlers_is_draining(ctx->srv->handlers))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ok = MHD_queue_response(conn, resp->status, r);
    MHD_destroy_response(r);
    ctx->responded = true;
    ctx->status = resp->status;
    ctx->error_code = resp->error_code;
    copy_text(ctx->org, sizeof ctx->org, resp->org);
    copy_text(ctx->detail, sizeof ctx->detail, resp->detail);
    return ok;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn,
                                   struct request_ctx *ctx, unsigned status,
                                   const char *code, const char *message)
{
    struct http_response resp;

    memset(&resp, 0, sizeof resp);
    handlers_errorf(&resp, status, code, "%s", message);
    return queue(conn, ctx, &resp);
}

static enum MHD_Result queue_too_large(struct MHD_Connection *conn,
                                       struct request_ctx *ctx)
{
    char msg[96];

    snprintf(msg, sizeof msg, "the request body is larger than %zu bytes",
             ctx->max_body);
    return queue_error(conn, ctx, MHD_HTTP_CONTENT_TOO_LARGE,
                       "payload_too_large", msg);
}

/* ---- the request lifecycle --------------------------------------------------
 */

/* The client's X-Request-Id when it is one poold can carry safely into
 * headers, logs and JSON. */
static bool request_id_ok(const char *id)
{
    size_t n = 0;

    if (id == NULL)
        return false;
    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (n == HTTP_REQUEST_ID_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return false;
    }
    return n > 0;
}

static void request_id_set(struct request_ctx *ctx, struct MHD_Connection *conn)
{
    const char *id =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");

    if (request_id_ok(id)) {
        copy_text(ctx->request_id, sizeof ctx->request_id, id);
    } else { /* "%08x%08llx" of the prefix and the counter */
        uint64_t n = atomic_fetch_add(&ctx->srv->next_id, 1);
        size_t digits = 8;
        while (digits < 16 && (n >> (4 * digits)) != 0)
            digits++;
        format_hex(ctx->request_id, ctx->srv->id_prefix, 8);
        format_hex(ctx->request_id + 8, n, digits);
        ctx->request_id[8 + digits] = '\0';
    }
}

static struct intake_conn *conn_record(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static struct request_ctx *ctx_create(struct http_server *srv,
                                      struct MHD_Connection *conn,
                                      const char *url, const char *method)
{
    size_t url_len = strlen(url);
    struct request_ctx *ctx = malloc(sizeof *ctx + url_len + 1);

    if (ctx == NULL)
        return NULL;
    /* Everything but the two buffers starts zeroed, as calloc would. */
    memset(ctx, 0, offsetof(struct request_ctx, body_inline));
    ctx->srv = srv;
    ctx->start_ns = clock_now_ns();
    ctx->route = handlers_nroutes;
    copy_text(ctx->method, sizeof ctx->method, method);
    ctx->path = memcpy(ctx->path_buf, url, url_len + 1);
    ctx->body = ctx->body_inline;
    ctx->body_cap = sizeof ctx->body_inline;
    request_id_set(ctx, conn);
    ctx->iconn = conn_record(conn);
    ctx->chunked = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               "Transfer-Encoding") != NULL;
    intake_request_begun(srv->intake, ctx->iconn);
    atomic_fetch_add(&srv->inflight, 1);
    return ctx;
}

/* Let go of the body's buffer (the inline one is the context's). */
static void body_release(struct request_ctx *ctx)
{
    if (ctx->body != ctx->body_inline)
        free(ctx->body);
    ctx->body = NULL;
    ctx->body_len = ctx->body_cap = 0;
}

/* True when Content-Length announces more than the limit. */
static bool announced_too_large(struct MHD_Connection *conn, size_t max)
{
    const char *cl = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    char *end = NULL;
    unsigned long long n;

    if (cl == NULL)
        return false;
    errno = 0;
    n = strtoull(cl, &end, 10);
    if (end == cl || errno == ERANGE)
        return errno == ERANGE;
    return n > max;
}

/* A body larger than this (or chunked) is read only after the route's
 * credentials are checked at the headers: a client without them could
 * otherwise make poold hold POOLD_MAX_CLIENTS bodies of the batch limit
 * (4 GiB at the defaults) before its 401. Smaller ones are checked once,
 * with the body, as before. */
#define HTTP_EARLY_AUTH_BYTES ((size_t)16384)

/* The route needs credentials and the request's body is large (or of
 * unknown length), and the credentials in its headers are missing or
 * wrong. A client that sent Expect: 100-continue has sent no body yet:
 * true after queuing the answer handlers_run would give (401, 403 or 503),
 * which closes the connection. Any other is writing its body, and a close
 * with it unread would reach it as a reset, not as the 401 it should stop
 * on: the body is read and thrown away (ctx->unauthorized), and the final
 * call sends the refusal made here (checked again then, credentials that
 * pass by now, a key loaded meanwhile, would run the handler on no body).
 * A body announced over the limit is answered at once, with the 401 before
 * the 413. Either way no byte of it is kept. */
static bool credentials_refused(struct MHD_Connection *conn,
                                struct request_ctx *ctx, enum MHD_Result *ret)
{
    size_t early = HTTP_EARLY_AUTH_BYTES < ctx->max_body ? HTTP_EARLY_AUTH_BYTES
                                                         : ctx->max_body;
    const char *expect;
    struct http_request req;
    struct http_response resp;

    if (ctx->matched == NULL ||
        !(ctx->matched->flags & (ROUTE_ADMIN | ROUTE_CLIENT_KEY)) ||
        (!ctx->chunked && !announced_too_large(conn, early)))
        return false;
    memset(&req, 0, sizeof req);
    req.method = ctx->method;
    req.authorization = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    req.request_id = ctx->request_id;
    memset(&resp, 0, sizeof resp);
    if (handlers_authorize(ctx->srv->handlers, ctx->matched, &req, &resp))
        return false;
    expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_EXPECT);
    /* A body announced over the limit is answered at once, as a 413 would
     * be (DESIGN.md: the key before any body check). */
    if ((expect == NULL || strcasecmp(expect, "100-continue") != 0) &&
        !announced_too_large(conn, ctx->max_body)) {
        ctx->refusal = malloc(sizeof *ctx->refusal);
        if (ctx->refusal == NULL) {
            free(resp.body);
            *ret = MHD_NO;
            return true;
        }
        *ctx->refusal = resp;
        ctx->unauthorized = true;
        return false;
    }
    ctx->refused = true;
    intake_request_read(ctx->srv->intake, ctx->iconn); /* not read on */
    *ret = queue(conn, ctx, &resp);
    return true;
}

/* Keep a body chunk, or count it as discarded once over the limit. */
static bool body_append(struct request_ctx *ctx, const char *data, size_t n)
{
    size_t max = ctx->max_body;

    if (ctx->unauthorized) { /* as much as a body too large, then closed */
        ctx->discarded += n;
        return ctx->discarded <= max + HTTP_DISCARD_MAX;
    }
    if (!ctx->too_large && n > max - ctx->body_len) {
        ctx->too_large = true;
        body_release(ctx);
    }
    if (ctx->too_large) {
        ctx->discarded += n;
        return ctx->discarded <= HTTP_DISCARD_MAX;
    }
    if (ctx->body_len + n > ctx->body_cap) {
        size_t cap = ctx->body_cap;
        bool was_inline = ctx->body == ctx->body_inline;
        while (cap < ctx->body_len + n)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *p = realloc(was_inline ? NULL : ctx->body, cap);
        if (p == NULL)
            return false;
        if (was_inline)
            memcpy(p, ctx->body_inline, ctx->body_len);
        ctx->body = p;
        ctx->body_cap = cap;
    }
    memcpy(ctx->body + ctx->body_len, data, n);
    ctx->body_len += n;
    return true;
}

/* The headers that say where a request's body ends. */
struct framing {
    const char *length; /* the first Content-Length */
    bool lengths_differ;
    unsigned encodings; /* Transfer-Encoding headers */
    bool unchunked;     /* one of them is not "chunked" alone */
};

static enum MHD_Result framing_add(void *cls, enum MHD_ValueKind kind,
                                   const char *key, const char *value)
{
    struct framing *f = cls;

    (void)kind;
    if (value == NULL)
        value = "";
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->length == NULL)
            f->length = value;
        else if (strcmp(f->length, value) != 0)
            f->lengths_differ = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->encodings++;
        if (strcasecmp(value, "chunked") != 0)
            f->unchunked = true;
    }
    return MHD_YES;
}

/* Refuse a request whose body's end is ambiguous (RFC 9112 6.3): a front
 * proxy may take the other reading, and what poold would read as the
 * next request is smuggled past it. libmicrohttpd 0.9.75 takes the first
 * of several Content-Lengths, and the Transfer-Encoding over a
 * Content-Length; with a coding other than chunked it waits for a body
 * it cannot delimit until the read deadline. True after queuing the
 * answer, which closes the connection. */
static bool framing_refused(struct MHD_Connection *conn,
                            struct request_ctx *ctx, enum MHD_Result *ret)
{
    struct framing f = {NULL, false, 0, false};
    unsigned status = 400;
    const char *message;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_add, &f);
    if (f.encodings > 0 && (f.encodings > 1 || f.unchunked)) {
        status = MHD_HTTP_NOT_IMPLEMENTED;
        message = "Transfer-Encoding other than chunked is not supported";
    } else if (f.encodings > 0 && f.length != NULL) {
        message = "a request cannot carry both Transfer-Encoding and "
                  "Content-Length";
    } else if (f.lengths_differ) {
        message = "the request carries Content-Length headers that differ";
    } else {
        return false;
    }
    ctx->refused = true;
    intake_request_read(ctx->srv->intake, ctx->iconn); /* not read on */
    *ret =
        queue_error(conn, ctx, status,
                    status == 400 ? "bad_request" : "not_implemented", message);
    return true;
}

/* A copy of a path segment into *out, at most ORG_ID_MAX + 1 bytes (NULL
 * stays NULL); false when out of memory. */
static bool segment_copy(const char *seg, size_t *len, char **out)
{
    if (seg == NULL)
        return true;
    if (*len > ORG_ID_MAX)
        *len = ORG_ID_MAX + 1;
    *out = strndup(seg, *len);
    return *out != NULL;
}

/* Route the request, once, when its headers are in: ctx->matched (NULL
 * for 404 or 405, ctx->allow then says which), its path segments and its
 * body limit. False when out of memory. */
static bool route_request(struct request_ctx *ctx)
{
    const char *param = NULL, *param2 = NULL;

    ctx->matched =
        route_find(ctx, &param, &ctx->param_len, &param2, &ctx->param2_len);
    ctx->max_body = handlers_body_limit(ctx->srv->handlers, ctx->matched,
                                        ctx->srv->max_body);
    if (ctx->matched == NULL) {
        ctx->param_len = ctx->param2_len = 0;
        return true;
    }
    return segment_copy(param, &ctx->param_len, &ctx->param) &&
           segment_copy(param2, &ctx->param2_len, &ctx->param2);
}

/* The client's IP address as text ("" if unknown), for audit entries. */
static void peer_address(struct MHD_Connection *conn, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;

    buf[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
                  (socklen_t)len);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
                  (socklen_t)len);
}

static const char *query_arg(void *arg, const char *name)
{
    return MHD_lookup_connection_value(arg, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result dispatch(struct MHD_Connection *conn,
                                struct request_ctx *ctx)
{
    struct http_server *srv = ctx->srv;
    struct http_request req;
    struct http_response resp;
    const struct route *route = ctx->matched;
    char address[INET6_ADDRSTRLEN] = "";

    if (ctx->unauthorized) /* whatever the credentials say by now */
        return queue(conn, ctx, ctx->refusal);
    if (ctx->too_large)
        return queue_too_large(conn, ctx);
    if (route == NULL && ctx->allow[0] != '\0') {
        memset(&resp, 0, sizeof resp);
        handlers_errorf(&resp, 405, "method_not_allowed",
                        "method not allowed on this path; see Allow");
        resp.allow = ctx->allow;
        return queue(conn, ctx, &resp);
    }
    if (route == NULL)
        return queue_error(conn, ctx, 404, "not_found", "no such route");
    /* Only the admin routes audit who called (inet_ntop prints with
     * sprintf: not worth it on every message). */
    if (route->flags & ROUTE_ADMIN)
        peer_address(conn, address, sizeof address);
    memset(&req, 0, sizeof req);
    req.param2 = ctx->param2;
    req.param2_len = ctx->param2_len;
    req.client_address = address;
    req.query = query_arg;
    req.query_arg = conn;
    req.method = ctx->method;
    req.path = ctx->path;
    req.param = ctx->param;
    req.param_len = ctx->param_len;
    req.body = ctx->body;
    req.body_len = ctx->body_len;
    req.content_type = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    req.authorization = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    req.request_id = ctx->request_id;
    memset(&resp, 0, sizeof resp);
    handlers_run(srv->handlers, route, &req, &resp);
    return queue(conn, ctx, &resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct request_ctx *ctx = *con_cls;
    enum MHD_Result ret;

    (void)version;
    if (ctx == NULL) { /* headers received: first call */
        ctx = ctx_create(srv, conn, url, method);
        if (ctx == NULL)
            return MHD_NO;
        *con_cls = ctx;
        if (!route_request(ctx))
            return MHD_NO;
        if (framing_refused(conn, ctx, &ret))
            return ret;
        if (credentials_refused(conn, ctx, &ret))
            return ret;
        if (announced_too_large(conn, ctx->max_body)) {
            ctx->too_large = true;
            intake_request_read(srv->intake, ctx->iconn); /* not read on */
            return queue_too_large(conn, ctx);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* a body chunk: always consume it all */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        ctx->body_wire += n;
        if (ctx->responded)
            return MHD_YES;
        return body_append(ctx, upload_data, n) ? MHD_YES : MHD_NO;
    }
    if (ctx->responded)
        return MHD_YES;
    intake_request_read(srv->intake, ctx->iconn);
    return dispatch(conn, ctx); /* final call: the whole body is here */
}

static void log_request(const struct request_ctx *ctx,
                        enum MHD_RequestTerminationCode toe, uint64_t dur_ns)
{
    enum log_level level = ctx->status >= 500 ? LOG_WARN : LOG_INFO;
    char status[24], ms[32];

    if (!log_enabled(level))
        return;
    format_uint(status, ctx->status);
    format_ms(ms, dur_ns);
    log_event(level, "request", "id", ctx->request_id, "method", ctx->method,
              "path", ctx->path, "status", status, "duration_ms", ms, "org",
              ctx->org, "error", ctx->error_code ? ctx->error_code : "",
              "detail", ctx->detail, "end",
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok"
              : ctx->status                              ? "closed"
                                                         : "aborted",
              (const char *)NULL);
}

/* The one place a request's memory is freed. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct request_ctx *ctx = *con_cls;
    const union MHD_ConnectionInfo *hs;
    uint64_t dur;

    if (ctx == NULL)
        return;
    *con_cls = NULL;
    /* What this request took of the connection's bytes: its request line
     * and headers (libmicrohttpd's count, up to the blank line's end)
     * and its body, when sent as is. The intake tells a next request
     * already begun by it (intake_request_done). */
    hs = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    intake_request_done(srv->intake, ctx->iconn,
                        (hs != NULL ? hs->header_size : 0) + ctx->body_wire,
                        hs != NULL && !ctx->chunked && !ctx->too_large &&
                            !ctx->refused &&
                            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    dur = clock_now_ns() - ctx->start_ns;
    log_request(ctx, toe, dur);
    if (ctx->status != 0)
        metrics_observe_request(srv->metrics, ctx->route, ctx->method,
                                ctx->status, dur);
    body_release(ctx);
    if (ctx->refusal != NULL) /* NULL body once queued */
        free(ctx->refusal->body);
    free(ctx->refusal);
    free(ctx->param);
    free(ctx->param2);
    free(ctx);
    if (atomic_fetch_sub(&srv->inflight, 1) == 1) {
        pthread_mutex_lock(&srv->lock);
        pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *srv = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context =
            ci ? intake_conn_started(srv->intake, ci->connect_fd) : NULL;
        metrics_connection_add(srv->metrics, 1);
    } else {
        /* libmicrohttpd 0.9.75 closes the socket only after this returns
         * (daemon.c MHD_cleanup_connections), so the intake never shuts a
         * descriptor that was reused. */
        intake_conn_closed(srv->intake, *socket_context);
        *socket_context = NULL;
        metrics_connection_add(srv->metrics, -1);
    }
}

/* libmicrohttpd calls this as soon as a request line is in, before the
 * headers: the read deadline of a keep-alive connection's next request
 * starts there, not once its headers are complete (they may never be). */
static void *on_request_line(void *cls, const char *uri,
                             struct MHD_Connection *conn)
{
    struct http_server *srv = cls;

    (void)uri;
    intake_request_begun(srv->intake, conn_record(conn));
    return NULL; /* the request's context is made by on_request */
}

/* libmicrohttpd's own unescaping of the path and of each query name and
 * value (MHD_http_unescape: "%HH" decoded, any other '%' kept; '+' in a
 * query is already a space when this runs), except that "%00" is left as
 * the three characters it is. The path reaches us as a C string, and a
 * query value is read as one: a decoded NUL would cut it, and poold would
 * act on what comes before ("/pools/org_1%00x" as org_1). Left as is, it
 * makes the value invalid (400) or names nothing (404). */
static size_t unescape_without_nul(void *cls, struct MHD_Connection *conn,
                                   char *s)
{
    const char *r = s;
    char *w = s;

    (void)cls;
    (void)conn;
    while (*r != '\0') {
        int hi = r[0] == '%' ? keys_hex_digit(r[1]) : -1;
        int lo = hi >= 0 ? keys_hex_digit(r[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* The intake's hand-over: the daemon owns fd from here, success or not. */
static bool hand_over(void *arg, int fd, const struct sockaddr *addr,
                      socklen_t addrlen)
{
    struct http_server *srv = arg;

    return MHD_add_connection(srv->daemon, fd, addr, addrlen) == MHD_YES;
}

__attribute__((format(printf, 2, 0))) static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* A client gone mid-request (or cut by the read deadline, which the
     * intake logs in one line per check) is routine, not a warning: one
     * line per trickler would flood the log under attack. */
    log_event(strstr(msg, "connection closure") ||
                      strstr(msg, "with incomplete request")
                  ? LOG_DEBUG
                  : LOG_WARN,
              "libmicrohttpd", "detail", msg, (const char *)NULL);
}

/* ---- start and stop
 * ------------------------------------------------------------ */

static int server_init(struct http_server *srv)
{
    pthread_condattr_t ca;

    if (pthread_condattr_init(&ca) != 0)
        return POOLD_ERR_NOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&srv->idle, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        return POOLD_ERR_NOMEM;
    }
    pthread_condattr_destroy(&ca);
    if (pthread_mutex_init(&srv->lock, NULL) != 0) {
        pthread_cond_destroy(&srv->idle);
        return POOLD_ERR_NOMEM;
    }
    srv->id_prefix = (unsigned)(clock_now_ns() ^ ((uint64_t)getpid() << 16));
    atomic_init(&srv->next_id, 1);
    atomic_init(&srv->inflight, 0);
    return POOLD_OK;
}

/* Peek at most this much of a waiting connection: the header memory and a
 * body of up to 64 KiB (a larger one is judged by its first bytes). */
static size_t peek_max(size_t max_body)
{
    return HTTP_CONN_MEMORY + (max_body < 65536 ? max_body : 65536);
}

/* The daemon: thread per connection, no listen socket of its own (the
 * intake accepts and hands connections over), HTTPS when configured. */
static int daemon_start(struct http_server *srv,
                        const struct http_server_config *cfg, char *err,
                        size_t errlen)
{
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD |
                     MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    bool use_tls = cfg->tls_cert_pem != NULL && cfg->tls_key_pem != NULL;

    if (use_tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errlen,
                 "POOLD_TLS_CERT is set but this libmicrohttpd "
                 "was built without TLS (MHD_FEATURE_TLS)");
        return POOLD_ERR_INVALID;
    }
    if (use_tls)
        flags |= MHD_USE_TLS;
    else
        tls[0].option = MHD_OPTION_END;
    errno = 0;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, (void *)srv,
        /* The intake keeps to max_clients. libmicrohttpd's own limit must
         * never be reached: 0.9.75 refuses a connection handed over at its
         * limit leaving its cleanup mutex locked, and the daemon thread
         * deadlocks (fixed upstream in 67061d5c, v1.0.0). Far above ours,
         * it only ever sees our count. */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(2 * cfg->max_clients + 64),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->client_timeout_s,
        MHD_OPTION_THREAD_STACK_SIZE, HTTP_THREAD_STACK,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, (void *)srv,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, (void *)srv,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape_without_nul, (void *)NULL,
        MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        int e = errno;
        snprintf(err, errlen, "cannot start the HTTP server: %s",
                 use_tls ? "the TLS certificate or key was refused (see the "
                           "libmicrohttpd message above)"
                 : e     ? strerror(e)
                         : "see the libmicrohttpd message above");
        return POOLD_ERR_INVALID;
    }
    return POOLD_OK;
}

static int intake_open_for(struct http_server *srv,
                           const struct http_server_config *cfg, char *err,
                           size_t errlen)
{
    struct intake_config ic;

    memset(&ic, 0, sizeof ic);
    ic.addr = cfg->addr;
    ic.addrlen = cfg->addrlen;
    ic.max_clients = cfg->max_clients;
    /* Waiting costs a descriptor, no thread: room for a flood of several
     * times the slots before waiting connections are evicted. */
    ic.room = cfg->max_clients < HTTP_ROOM_MIN / 4 ? HTTP_ROOM_MIN
                                                   : 4 * cfg->max_clients;
    ic.read_timeout_ns = (uint64_t)cfg->request_read_timeout_s * NS_PER_S;
    ic.tls = cfg->tls_cert_pem != NULL;
    ic.peek_max = peek_max(cfg->max_body_bytes);
    ic.hand_over = hand_over;
    ic.arg = srv;
    ic.metrics = srv->metrics;
    return intake_start(&ic, &srv->intake, err, errlen);
}

int http_server_start(const struct http_server_config *cfg,
                      struct handlers *handlers, struct metrics *metrics,
                      struct http_server **out, char *err, size_t errlen)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    int rc;

    if (srv == NULL || server_init(srv) != POOLD_OK) {
        free(srv);
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    srv->handlers = handlers;
    srv->metrics = metrics;
    srv->max_body = cfg->max_body_bytes;
    rc = daemon_start(srv, cfg, err, errlen);
    if (rc == POOLD_OK)
        rc = intake_open_for(srv, cfg, err, errlen);
    if (rc != POOLD_OK) {
        if (srv->daemon != NULL)
            MHD_stop_daemon(srv->daemon);
        pthread_mutex_destroy(&srv->lock);
        pthread_cond_destroy(&srv->idle);
        free(srv);
        return rc;
    }
    *out = srv;
    return POOLD_OK;
}

unsigned http_server_port(struct http_server *srv)
{
    return intake_port(srv->intake);
}

void http_server_quiesce(struct http_server *srv)
{
    intake_quiesce(srv->intake);
}

unsigned http_server_inflight(struct http_server *srv)
{
    return atomic_load(&srv->inflight);
}

bool http_server_wait_idle(struct http_server *srv, uint64_t timeout_ns)
{
    struct timespec deadline;
    bool idle;

    clock_timespec_at(&deadline, clock_now_ns() + timeout_ns);
    pthread_mutex_lock(&srv->lock);
    while (atomic_load(&srv->inflight) > 0)
        if (pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline) ==
            ETIMEDOUT)
            break;
    idle = atomic_load(&srv->inflight) == 0;
    pthread_mutex_unlock(&srv->lock);
    return idle;
}

void http_server_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    intake_stop(srv->intake); /* nothing handed over from here on */
    MHD_stop_daemon(srv->daemon);
    intake_destroy(srv->intake);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->idle);
    free(srv);
}
