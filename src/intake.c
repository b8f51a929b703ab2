/* intake.c — accepts client connections, keeps them in a waiting room while
 * every slot is taken (whole requests first), closes idle keep-alive
 * connections to make room for waiting ones, and cuts connections whose
 * request is not read within the deadline. */
#define _GNU_SOURCE /* accept4, memmem */
#include "intake.h"

#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"

/* How often deadlines are checked: a cut comes at most this late. */
#define INTAKE_TICK_NS (200 * NS_PER_MS)
/* A waiting connection whose request has not arrived may give its place in
 * a full room to a newer one once it waited this long. */
#define INTAKE_EVICT_AGE_NS (500 * NS_PER_MS)
/* A keep-alive connection idle this long since its answer may be closed to
 * give its slot to a waiting connection. A client that sends its next
 * request within a second (a round trip and its own work) keeps its
 * connection; an attacker who wants to hold every slot this way has to
 * send a request per slot every second, not one per client timeout. */
#define INTAKE_IDLE_GRACE_NS (1 * NS_PER_S)
#define INTAKE_ACCEPT_BATCH 64
#define INTAKE_EVENTS 64

enum conn_state {
    CONN_ROOM,     /* accepted, waiting for a slot; the intake owns fd */
    CONN_HANDED,   /* given to the server, not started yet */
    CONN_READING,  /* the server reads a request: the deadline runs */
    CONN_HANDLING, /* fully read; being handled or answered */
    CONN_IDLE_NEW, /* between requests (keep-alive), no byte count yet */
    CONN_IDLE,     /* between requests, idle_bytes counted */
    CONN_CUT,      /* shut down by the deadline; the server closes it */
};

struct intake_conn {
    struct intake_conn *prev, *next; /* in exactly one list below */
    int fd;
    enum conn_state state;
    bool watched;        /* room: fd is in the epoll set */
    bool ready;          /* room: in the ready list (the request is in) */
    uint64_t began_ns;   /* accepted, or the current request's first byte */
    uint64_t idle_bytes; /* CONN_IDLE: tcpi_bytes_received at the first
                            check after the previous request */
    uint64_t idle_ns;    /* CONN_IDLE(_NEW): when the last answer went */
    uint64_t taken;      /* bytes its answered requests took, if !untaken */
    bool untaken;        /* taken is unknown (TLS, chunked, a body not read) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct conn_list {
    struct intake_conn *head, *tail;
    unsigned n;
};

struct intake {
    struct intake_config cfg; /* cfg.addr is not kept */
    int listen_fd, epoll_fd, wake_fd;
    unsigned port;
    pthread_t thread;
    bool thread_started;
    /* The intake thread's own (no lock): the waiting room, oldest first,
     * split by whether the whole request is already in. */
    struct conn_list ready, waiting;
    bool listening;
    uint64_t accept_pause_until; /* after EMFILE and the like */
    char *peek;                  /* cfg.peek_max bytes */
    atomic_uint room_n;          /* ready.n + waiting.n, read by closed() */
    pthread_mutex_t lock;        /* guards what follows */
    struct conn_list handed, active;
    bool quiesced, stopping;
    struct intake_conn **idle; /* cfg.max_clients: idle_close()'s scratch */
};

/* Time since t; 0 when t is later than now (stamped by another thread
 * after now was read): an unsigned difference would wrap to "forever". */
static uint64_t age(uint64_t now, uint64_t t)
{
    return now > t ? now - t : 0;
}

/* ---- lists ----------------------------------------------------------------
 */

static void list_push(struct conn_list *l, struct intake_conn *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(struct conn_list *l, struct intake_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

static void wake(struct intake *in)
{
    uint64_t one = 1;
    ssize_t n = write(in->wake_fd, &one, sizeof one);
    (void)n; /* a full counter already means "wake up" */
}

/* ---- is the whole request in? ----------------------------------------------
 */

/* The value of header name (lower case, with ':') in head, or NULL. */
static const char *header_find(const char *head, size_t len, const char *name,
                               size_t *vlen)
{
    size_t nlen = strlen(name);

    for (const char *p = head, *end = head + len; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t line = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (line > nlen && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen;
            while (v < p + line && (*v == ' ' || *v == '\t'))
                v++;
            *vlen = (size_t)(p + line - v);
            return v;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    return NULL;
}

/* True when buf holds a whole HTTP request (headers and the body its
 * Content-Length announces), or as much as we look at; only an order of
 * preference, so approximate is fine. */
static bool http_request_in(const char *b, size_t n)
{
    const char *end = memmem(b, n, "\r\n\r\n", 4);
    const char *v;
    size_t head, vlen;

    if (end == NULL)
        return false;
    head = (size_t)(end + 4 - b);
    v = header_find(b, head, "content-length:", &vlen);
    if (v != NULL) {
        unsigned long long cl = 0;
        for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++)
            cl = cl * 10 + (unsigned long long)(v[i] - '0');
        return n - head >= cl;
    }
    v = header_find(b, head, "transfer-encoding:", &vlen);
    if (v != NULL && memmem(v, vlen, "chunked", 7) != NULL)
        return n - head >= 5 && memcmp(b + n - 5, "0\r\n\r\n", 5) == 0;
    return true;
}

/* A TLS client speaks first with a whole handshake record (ClientHello). */
static bool tls_record_in(const unsigned char *b, size_t n)
{
    if (n < 5)
        return false;
    if (b[0] != 0x16) /* not a handshake: the server ends it at once */
        return true;
    return n >= 5 + (((size_t)b[3] << 8) | b[4]);
}

/* 1: the request is in, 0: not yet, -1: the peer closed or failed. */
static int room_peek(struct intake *in, struct intake_conn *c)
{
    ssize_t n =
        recv(c->fd, in->peek, in->cfg.peek_max, MSG_PEEK | MSG_DONTWAIT);

    if (n == 0)
        return -1;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0
                                                                         : -1;
    if ((size_t)n >= in->cfg.peek_max)
        return 1; /* as much as we look at: the server judges the rest */
    if (in->cfg.tls)
        return tls_record_in((const unsigned char *)in->peek, (size_t)n);
    return http_request_in(in->peek, (size_t)n);
}

/* ---- the waiting room (intake thread only) ----------------------------------
 */

static void room_unlink(struct intake *in, struct intake_conn *c)
{
    list_remove(c->ready ? &in->ready : &in->waiting, c);
    atomic_store(&in->room_n, in->ready.n + in->waiting.n);
    if (c->watched)
        epoll_ctl(in->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    c->watched = false;
}

static void room_drop(struct intake *in, struct intake_conn *c)
{
    room_unlink(in, c);
    close(c->fd);
    free(c);
}

/* An epoll event on a waiting connection: has its request come in? */
static void room_event(struct intake *in, struct intake_conn *c)
{
    int r;

    if (c->ready)
        return; /* stays ready; a closed peer is the server's to see */
    r = room_peek(in, c);
    if (r < 0) {
        room_drop(in, c);
    } else if (r > 0) {
        list_remove(&in->waiting, c);
        list_push(&in->ready, c);
        c->ready = true;
    }
}

/* Watch the connections that stayed in the room since the last pass. */
static void room_watch_new(struct intake *in)
{
    struct intake_conn *c = in->waiting.tail;

    while (c != NULL && !c->watched) {
        struct intake_conn *prev = c->prev;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(in->epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            room_drop(in, c);
        } else {
            c->watched = true;
            room_event(in, c);
        }
        c = prev;
    }
}

static void room_close_all(struct intake *in)
{
    while (in->ready.head)
        room_drop(in, in->ready.head);
    while (in->waiting.head)
        room_drop(in, in->waiting.head);
}

/* Room for one more: a free place, or the oldest waiting connection whose
 * request has not come in gives its place up. */
static bool room_make_space(struct intake *in, uint64_t now)
{
    struct intake_conn *old = in->waiting.head;

    if (in->ready.n + in->waiting.n < in->cfg.room)
        return true;
    if (old == NULL || age(now, old->began_ns) < INTAKE_EVICT_AGE_NS)
        return false;
    room_drop(in, old);
    return true;
}

static void accept_some(struct intake *in, uint64_t now)
{
    for (int i = 0; i < INTAKE_ACCEPT_BATCH && room_make_space(in, now); i++) {
        struct intake_conn *c = calloc(1, sizeof *c);
        int fd;

        if (c == NULL)
            return;
        c->addrlen = sizeof c->addr;
        fd = accept4(in->listen_fd, (struct sockaddr *)&c->addr, &c->addrlen,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            free(c);
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                in->accept_pause_until = now + INTAKE_TICK_NS;
            if (e == ECONNABORTED || e == EINTR)
                continue;
            return;
        }
        c->fd = fd;
        c->state = CONN_ROOM;
        c->began_ns = now;
        list_push(&in->waiting, c);
        atomic_store(&in->room_n, in->ready.n + in->waiting.n);
    }
}

static bool slot_free(struct intake *in)
{
    bool free_slot;

    pthread_mutex_lock(&in->lock);
    free_slot = !in->quiesced && !in->stopping &&
                in->handed.n + in->active.n < in->cfg.max_clients;
    pthread_mutex_unlock(&in->lock);
    return free_slot;
}

/* Hand waiting connections to the server while slots are free: whole
 * requests first, then the others, each in arrival order. */
static void hand_over_some(struct intake *in)
{
    while ((in->ready.head || in->waiting.head) && slot_free(in)) {
        struct intake_conn *c =
            in->ready.head ? in->ready.head : in->waiting.head;
        int fd = c->fd;

        room_unlink(in, c);
        pthread_mutex_lock(&in->lock);
        c->state = CONN_HANDED;

        list_push(&in->handed, c);
        pthread_mutex_unlock(&in->lock);
        /* c may be started, closed and freed by the server before this
         * returns true: only a refusal leaves it to us. */
        if (!in->cfg.hand_over(in->cfg.arg, fd, (struct sockaddr *)&c->addr,
                               c->addrlen)) {
            pthread_mutex_lock(&in->lock);
            list_remove(&in->handed, c);
            pthread_mutex_unlock(&in->lock);
            free(c);
        }
    }
}

static void listen_sync(struct intake *in, uint64_t now, bool quiesced)
{
    struct intake_conn *old = in->waiting.head;
    bool want =
        !quiesced && now >= in->accept_pause_until &&
        (in->ready.n + in->waiting.n < in->cfg.room ||
         (old != NULL && age(now, old->began_ns) >= INTAKE_EVICT_AGE_NS));

    if (want == in->listening)
        return;
    if (want) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = in};
        if (epoll_ctl(in->epoll_fd, EPOLL_CTL_ADD, in->listen_fd, &ev) != 0)
            return;
    } else {
        epoll_ctl(in->epoll_fd, EPOLL_CTL_DEL, in->listen_fd, NULL);
    }
    in->listening = want;
}

/* ---- deadlines
 * ------------------------------------------------------------------- */

static bool bytes_received(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;

    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) +
                  sizeof ti.tcpi_bytes_received)
        return false;
    *out = ti.tcpi_bytes_received;
    return true;
}

/* A whole request waits for a slot, not for its client: it may wait twice
 * the deadline (slots held by long requests) before it is given up. */
static unsigned room_expire(struct intake *in, struct conn_list *l,
                            uint64_t now)
{
    unsigned n = 0;

    for (struct intake_conn *c = l->head, *next; c != NULL; c = next) {
        next = c->next;
        if (age(now, c->began_ns) >
            (c->ready ? 2 : 1) * in->cfg.read_timeout_ns) {
            room_drop(in, c);
            n++;
        }
    }
    return n;
}

/* Under the lock: the server closes fd only after intake_conn_closed(),
 * which takes this lock, so the descriptor shut here is the client's. */
static unsigned active_expire(struct intake *in, uint64_t now)
{
    unsigned n = 0;

    for (struct intake_conn *c = in->active.head; c != NULL; c = c->next) {
        uint64_t bytes;
        if (c->state == CONN_IDLE_NEW) {
            /* Not counted at the answer (TCP_INFO failed then): bytes of
             * a next request that came before this count start its
             * deadline at its next byte, or at its request line. */
            c->state = bytes_received(c->fd, &c->idle_bytes) ? CONN_IDLE
                                                             : CONN_HANDLING;
        } else if (c->state == CONN_IDLE && bytes_received(c->fd, &bytes) &&
                   bytes != c->idle_bytes) {
            c->state = CONN_READING; /* the next request's first bytes */
            c->began_ns = now;
        }
        if (c->state != CONN_READING ||
            age(now, c->began_ns) <= in->cfg.read_timeout_ns)
            continue;
        if (!in->cfg.tls && room_peek(in, c) > 0) {
            /* The whole request sits unread in the socket: the server is
             * late (a busy machine), not the client. Give it time. */
            c->began_ns = now;
        } else {
            shutdown(c->fd, SHUT_RDWR);
            c->state = CONN_CUT;
            n++;
        }
    }
    return n;
}

/* Longest idle first. */
static int idle_cmp(const void *a, const void *b)
{
    const struct intake_conn *x = *(struct intake_conn *const *)a;
    const struct intake_conn *y = *(struct intake_conn *const *)b;

    return (x->idle_ns > y->idle_ns) - (x->idle_ns < y->idle_ns);
}

/* Under the lock, as active_expire(). A slot for each of the room's
 * `waiting` connections that no free slot or closing connection will
 * serve: idle keep-alive connections give theirs, the longest idle first,
 * those idle INTAKE_IDLE_GRACE_NS at least, none with a byte of a next
 * request in. A server may close an idle connection at any time (RFC 9112
 * 9.3.1); its client retries on a new one. */
static unsigned idle_close(struct intake *in, unsigned waiting, uint64_t now)
{
    unsigned held = in->handed.n + in->active.n, covered = 0, k = 0, n = 0;

    if (held < in->cfg.max_clients)
        covered = in->cfg.max_clients - held;
    for (struct intake_conn *c = in->active.head; c != NULL; c = c->next) {
        if (c->state == CONN_CUT)
            covered++; /* its slot frees as the server closes it */
        else if (c->state == CONN_IDLE && k < in->cfg.max_clients &&
                 age(now, c->idle_ns) >= INTAKE_IDLE_GRACE_NS)
            in->idle[k++] = c;
    }
    if (waiting <= covered || k == 0)
        return 0;
    qsort(in->idle, k, sizeof *in->idle, idle_cmp);
    for (unsigned i = 0; i < k && n < waiting - covered; i++) {
        struct intake_conn *c = in->idle[i];
        uint64_t bytes;
        if (!bytes_received(c->fd, &bytes) || bytes != c->idle_bytes)
            continue; /* its next request began: its deadline runs */
        shutdown(c->fd, SHUT_RDWR);
        c->state = CONN_CUT;
        n++;
    }
    return n;
}

static void log_count(enum log_level level, const char *msg, const char *k1,
                      unsigned v1, const char *k2, unsigned v2)
{
    char a[16], b[16];

    snprintf(a, sizeof a, "%u", v1);
    snprintf(b, sizeof b, "%u", v2);
    log_event(level, msg, k1, a, k2, b, (const char *)NULL);
}

static void deadlines(struct intake *in, uint64_t now)
{
    unsigned waiting =
        room_expire(in, &in->ready, now) + room_expire(in, &in->waiting, now);
    /* Only whole requests ask for an idle connection's slot: a silent
     * connection in the room must not turn idle slots into its own. */
    unsigned room = in->ready.n, reading, idle = 0;

    pthread_mutex_lock(&in->lock);
    reading = active_expire(in, now);
    if (room > 0)
        idle = idle_close(in, room, now);
    pthread_mutex_unlock(&in->lock);
    if (reading + waiting > 0)
        log_count(LOG_WARN, "request read timeout: connections closed",
                  "reading", reading, "waiting", waiting);
    if (idle > 0) {
        metrics_idle_closed_add(in->cfg.metrics, idle);
        /* Routine when keep-alive clients hold every slot: info. */
        log_count(LOG_INFO, "idle connections closed for waiting ones",
                  "closed", idle, "waiting", room);
    }
}

/* ---- the thread
 * ------------------------------------------------------------------- */

static void *intake_main(void *arg)
{
    struct intake *in = arg;
    struct epoll_event ev[INTAKE_EVENTS];
    uint64_t next_tick = clock_now_ns() + INTAKE_TICK_NS;

    listen_sync(in, clock_now_ns(), false);

    for (;;) {
        uint64_t now = clock_now_ns();
        int timeout =
            now >= next_tick
                ? 0
                : (int)((next_tick - now + NS_PER_MS - 1) / NS_PER_MS);
        int n = epoll_wait(in->epoll_fd, ev, INTAKE_EVENTS, timeout);
        bool accept_ready = false, quiesced, stopping;

        pthread_mutex_lock(&in->lock);
        quiesced = in->quiesced;
        stopping = in->stopping;
        pthread_mutex_unlock(&in->lock);
        if (stopping)
            break;
        now = clock_now_ns();
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == in) {
                accept_ready = true;
            } else if (ev[i].data.ptr == &in->wake_fd) {
                uint64_t v;
                ssize_t r = read(in->wake_fd, &v, sizeof v);
                (void)r;
            } else if (!quiesced) {
                room_event(in, ev[i].data.ptr);
            }
        }
        if (quiesced) {
            room_close_all(in);
        } else {
            if (accept_ready && in->listening)
                accept_some(in, now);
            hand_over_some(in);
            room_watch_new(in);
        }
        if (now >= next_tick) {
            now = clock_now_ns();
            deadlines(in, now);
            next_tick = now + INTAKE_TICK_NS;
        }
        listen_sync(in, now, quiesced);
    }
    return NULL;
}

/* ---- start and stop
 * ----------------------------------------------------------- */

/* Descriptors for the slots and the room: ask for the hard limit, as
 * servers do (the soft default is often 1024), then keep the room within
 * what is left after the slots and a reserve for the database and logs. */
#define INTAKE_FD_RESERVE 256

static unsigned room_fit(unsigned max_clients, unsigned room)
{
    struct rlimit rl;
    rlim_t left;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return room;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return room;
    left = rl.rlim_cur > (rlim_t)max_clients + INTAKE_FD_RESERVE
               ? rl.rlim_cur - max_clients - INTAKE_FD_RESERVE
               : 1;
    return left < room ? (unsigned)left : room;
}

static int listen_open(const struct intake_config *cfg, unsigned *port,
                       char *err, size_t errlen)
{
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int one = 1;
    int fd = socket(cfg->addr->sa_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (cfg->addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, cfg->addr, cfg->addrlen) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) != 0)
        goto fail;
    *port = ntohs(bound.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&bound)->sin6_port
                      : ((struct sockaddr_in *)&bound)->sin_port);
    return fd;
fail:
    snprintf(err, errlen, "cannot listen: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static int intake_open(struct intake *in, char *err, size_t errlen)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &in->wake_fd};

    in->listen_fd = listen_open(&in->cfg, &in->port, err, errlen);
    if (in->listen_fd < 0)
        return POOLD_ERR_INVALID;
    in->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    in->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    in->peek = malloc(in->cfg.peek_max);
    in->idle = calloc(in->cfg.max_clients + 1, sizeof *in->idle);
    if (in->epoll_fd < 0 || in->wake_fd < 0 || in->peek == NULL ||
        in->idle == NULL ||
        epoll_ctl(in->epoll_fd, EPOLL_CTL_ADD, in->wake_fd, &ev) != 0) {
        snprintf(err, errlen, "cannot start the intake: %s", strerror(errno));
        return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}

int intake_start(const struct intake_config *cfg, struct intake **out,
                 char *err, size_t errlen)
{
    struct intake *in = calloc(1, sizeof *in);
    int rc;

    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return POOLD_ERR_NOMEM;
    }
    in->cfg = *cfg;
    in->listen_fd = in->epoll_fd = in->wake_fd = -1;
    atomic_init(&in->room_n, 0);
    pthread_mutex_init(&in->lock, NULL);
    in->cfg.room = room_fit(cfg->max_clients, cfg->room);
    rc = intake_open(in, err, errlen);
    in->cfg.addr = NULL;
    /* Published before the thread starts: the server's callbacks may run
     * as soon as the first connection is handed over. */
    *out = in;
    if (rc == POOLD_OK && pthread_create(&in->thread, NULL, intake_main, in)) {
        snprintf(err, errlen, "cannot start the intake thread");
        rc = POOLD_ERR_NOMEM;
    }
    if (rc != POOLD_OK) {
        *out = NULL;
        intake_stop(in);
        intake_destroy(in);
        return rc;
    }
    in->thread_started = true;
    return POOLD_OK;
}

unsigned intake_port(const struct intake *in)
{
    return in->port;
}

void intake_quiesce(struct intake *in)
{
    pthread_mutex_lock(&in->lock);
    in->quiesced = true;
    pthread_mutex_unlock(&in->lock);
    wake(in);
}

void intake_stop(struct intake *in)
{
    if (in == NULL)
        return;
    pthread_mutex_lock(&in->lock);
    in->stopping = true;
    pthread_mutex_unlock(&in->lock);
    if (in->thread_started) {
        wake(in);
        pthread_join(in->thread, NULL);
        in->thread_started = false;
    }
    room_close_all(in);
    if (in->listen_fd >= 0)
        close(in->listen_fd);
    in->listen_fd = -1;
}

void intake_destroy(struct intake *in)
{
    if (in == NULL)
        return;
    while (in->handed.head) {
        struct intake_conn *c = in->handed.head;
        list_remove(&in->handed, c);
        free(c);
    }
    while (in->active.head) {
        struct intake_conn *c = in->active.head;
        list_remove(&in->active, c);
        free(c);
    }
    if (in->epoll_fd >= 0)
        close(in->epoll_fd);
    if (in->wake_fd >= 0)
        close(in->wake_fd);
    free(in->peek);
    free(in->idle);
    pthread_mutex_destroy(&in->lock);
    free(in);
}

/* ---- the server's notifications
 * ------------------------------------------------ */

struct intake_conn *intake_conn_started(struct intake *in, int fd)
{
    struct intake_conn *c;

    pthread_mutex_lock(&in->lock);
    for (c = in->handed.tail; c != NULL; c = c->prev)
        if (c->fd == fd)
            break;
    if (c != NULL)
        list_remove(&in->handed, c);
    pthread_mutex_unlock(&in->lock);
    if (c == NULL) { /* not ours (cannot happen): its deadline starts now */
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return NULL;
        c->fd = fd;
        c->began_ns = clock_now_ns();
    }
    pthread_mutex_lock(&in->lock);
    /* Since it was accepted; or, for a request that was all in before we
     * handed it over, from now: the time it waited was ours, not its. */
    if (c->ready)
        c->began_ns = clock_now_ns();
    c->state = CONN_READING;
    list_push(&in->active, c);
    pthread_mutex_unlock(&in->lock);
    return c;
}

void intake_conn_closed(struct intake *in, struct intake_conn *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&in->lock);
    list_remove(&in->active, c);
    pthread_mutex_unlock(&in->lock);
    free(c);
    if (atomic_load(&in->room_n) > 0)
        wake(in); /* a slot for the room */
}

void intake_request_begun(struct intake *in, struct intake_conn *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&in->lock);
    if (c->state == CONN_IDLE || c->state == CONN_IDLE_NEW) {
        c->state = CONN_READING;
        c->began_ns = clock_now_ns();
    }
    pthread_mutex_unlock(&in->lock);
}

void intake_request_read(struct intake *in, struct intake_conn *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&in->lock);
    if (c->state == CONN_READING)
        c->state = CONN_HANDLING;
    pthread_mutex_unlock(&in->lock);
}

void intake_request_done(struct intake *in, struct intake_conn *c,
                         uint64_t wire_bytes, bool exact)
{
    uint64_t bytes = 0, now;
    bool counted;

    if (c == NULL)
        return;
    /* Counted now, as the answer goes: a client that sends the first
     * lines of its next request at once and goes silent must not have
     * them in the count the idle deadline compares with. */
    counted = bytes_received(c->fd, &bytes);
    now = clock_now_ns();
    pthread_mutex_lock(&in->lock);
    c->taken += wire_bytes;
    c->untaken = c->untaken || !exact || in->cfg.tls;
    if (c->state == CONN_CUT) {
        /* the server closes it */
    } else if (counted && !c->untaken && bytes > c->taken) {
        /* More came than the requests answered took: the next request's
         * first bytes are in (sent with this one, or since), perhaps
         * without a whole request line, so no callback will say so. Its
         * deadline starts at this answer. Under TLS the count holds
         * record overhead, and a chunked body's framing is not told us:
         * those wait for the next byte or the request line, as below. */
        c->state = CONN_READING;
        c->began_ns = now;
    } else {
        c->state = counted ? CONN_IDLE : CONN_IDLE_NEW;
        c->idle_bytes = bytes;
        c->idle_ns = now;
    }
    pthread_mutex_unlock(&in->lock);
}
