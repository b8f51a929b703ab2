/* loadgen.c — poold's load generator for the seed's workloads: the seed's
 * batch shape, sequential single requests, and a fixed request rate.
 *
 * Plain sockets, HTTP/1.1 keep-alive, one connection per worker thread.
 * Every mode prints one JSON object on stdout (see --help); nothing else
 * goes to stdout, so scripts can parse it with jq.
 */
#define _GNU_SOURCE /* memmem */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX 96
#define ORG_MAX 16
#define PAYLOAD_BYTES 64                /* the seed's os.urandom(64) */
#define PAYLOAD_HEX (PAYLOAD_BYTES * 2) /* 128 hex characters */
#define REQ_MAX 1024                    /* one request, headers included */
#define RESP_MAX 65536                  /* one response */
#define STATUS_SLOTS 600                /* HTTP status histogram */

enum mode { MODE_BATCH, MODE_SINGLE, MODE_RATE };

struct options {
    enum mode mode;
    const char *host;
    const char *port;
    long n;          /* batch / single: requests */
    long workers;    /* batch: threads; rate: connections */
    long orgs;       /* org_000 .. org_<orgs-1> */
    long org_first;  /* first org number */
    long warmup;     /* single: unmeasured requests first */
    long id_space;   /* the seed's MESSAGE_IDS: msg_000000 .. */
    bool repeat_ids; /* seed-exact: ids drawn with replacement */
    double rate;     /* rate: requests per second, all connections */
    double duration; /* rate: seconds */
    uint64_t seed;
    const char *tag; /* put in every id: keeps runs apart */
};

struct message {
    char id[ID_MAX];
    char org[ORG_MAX];
    char payload[PAYLOAD_HEX + 1];
};

/* What one thread saw; merged after the join. */
struct tally {
    uint64_t status[STATUS_SLOTS]; /* [0] = transport errors */
    uint64_t duplicates;
    uint64_t *lat_ns; /* one per measured request */
    size_t nlat;
    size_t caplat;
    uint64_t *svc_ns; /* rate mode: send -> answer */
    size_t nsvc;
    size_t capsvc;
    uint64_t reconnects;
};

struct conn {
    int fd;
    char buf[RESP_MAX];
    size_t have; /* bytes in buf not yet consumed */
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* splitmix64: small, good enough, reproducible from --seed. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static void tally_push(uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        uint64_t *p = realloc(*a, ncap * sizeof *p);

        if (p == NULL)
            die("out of memory");
        *a = p;
        *cap = ncap;
    }
    (*a)[(*n)++] = v;
}

/* ---- messages --------------------------------------------------------- */

static void make_payload(uint64_t *rng, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < PAYLOAD_BYTES; i += 8) {
        uint64_t r = rng_next(rng);

        for (int j = 0; j < 8; j++) {
            unsigned b = (unsigned)(r >> (8 * j)) & 0xffu;

            out[2 * (i + j)] = hex[b >> 4];
            out[2 * (i + j) + 1] = hex[b & 0xfu];
        }
    }
    out[PAYLOAD_HEX] = '\0';
}

static void make_org(const struct options *o, uint64_t *rng, char *out)
{
    long k = o->org_first + (long)rng_below(rng, (uint64_t)o->orgs);

    snprintf(out, ORG_MAX, "org_%03ld", k);
}

/*
 * The seed's _make_messages: id from msg_000000..msg_<id_space-1>, org
 * uniform over the first `orgs` orgs, 64 random bytes as hex. Unless
 * repeat_ids, ids are drawn without replacement (so every request is a new
 * row); the tag sits after "msg_" so org rules on the "msg_" prefix hold.
 */
static struct message *make_messages(const struct options *o, long n)
{
    struct message *m = calloc((size_t)n, sizeof *m);
    long *perm = malloc((size_t)o->id_space * sizeof *perm);
    uint64_t rng = o->seed;

    if (m == NULL || perm == NULL)
        die("out of memory");
    for (long i = 0; i < o->id_space; i++)
        perm[i] = i;
    for (long i = 0; i < n; i++) {
        long k;

        if (o->repeat_ids) {
            k = (long)rng_below(&rng, (uint64_t)o->id_space);
        } else {
            long j = i + (long)rng_below(&rng, (uint64_t)(o->id_space - i));
            long t = perm[i];

            perm[i] = perm[j];
            perm[j] = t;
            k = perm[i];
        }
        snprintf(m[i].id, ID_MAX, "msg_%s%06ld", o->tag, k);
        make_org(o, &rng, m[i].org);
        make_payload(&rng, m[i].payload);
    }
    free(perm);
    return m;
}

static int format_request(const struct options *o, const struct message *m,
                          char *out, size_t outlen)
{
    char body[REQ_MAX / 2];
    int blen = snprintf(body, sizeof body,
                        "{\"id\":\"%s\",\"org_id\":\"%s\",\"payload\":\"%s\"}",
                        m->id, m->org, m->payload);
    int n;

    if (blen < 0 || (size_t)blen >= sizeof body)
        die("request body too long");
    n = snprintf(out, outlen,
                 "POST /process HTTP/1.1\r\n"
                 "Host: %s:%s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %d\r\n"
                 "\r\n%s",
                 o->host, o->port, blen, body);
    if (n < 0 || (size_t)n >= outlen)
        die("request too long");
    return n;
}

/* ---- HTTP over one keep-alive connection ------------------------------- */

static int conn_open(const struct options *o, struct conn *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res, *ai;
    int one = 1;

    c->fd = -1;
    c->have = 0;
    if (getaddrinfo(o->host, o->port, &hints, &res) != 0)
        return -1;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);

        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->fd = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return c->fd >= 0 ? 0 : -1;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->have = 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Header value by case-insensitive name within [hdr, end); NULL if none. */
static const char *find_header(const char *hdr, const char *end,
                               const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = hdr; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));

        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 &&
            p[nl] == ':') {
            p += nl + 1;
            while (p < eol && (*p == ' ' || *p == '\t'))
                p++;
            return p;
        }
        p = eol + 1;
    }
    return NULL;
}

static bool body_duplicate(const char *body, size_t len)
{
    static const char key[] = "\"duplicate\"";
    const char *end = body + len;

    for (const char *p = body; p + sizeof key - 1 <= end; p++) {
        if (memcmp(p, key, sizeof key - 1) != 0)
            continue;
        p += sizeof key - 1;
        while (p < end && (*p == ' ' || *p == ':'))
            p++;
        return p < end && *p == 't';
    }
    return false;
}

/*
 * Read one response. Returns the HTTP status (> 0) or -1 on a transport or
 * framing error; *dup says whether the body had "duplicate": true; *close
 * whether the server will close the connection.
 */
static int read_response(struct conn *c, bool *dup, bool *close_after)
{
    for (;;) {
        char *hend = c->have ? memmem(c->buf, c->have, "\r\n\r\n", 4) : NULL;

        if (hend != NULL) {
            size_t hlen = (size_t)(hend - c->buf) + 4;
            const char *cl = find_header(c->buf, hend, "Content-Length");
            const char *cn = find_header(c->buf, hend, "Connection");
            long status, blen = 0;
            char code[4];

            if (c->have < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0)
                return -1;
            memcpy(code, c->buf + 9, 3);
            code[3] = '\0';
            if (!parse_long(code, 100, 599, &status))
                return -1;
            if (cl != NULL) {
                char *e;

                errno = 0;
                blen = strtol(cl, &e, 10);
                if (errno != 0 || e == cl || blen < 0 ||
                    (size_t)blen > sizeof c->buf - hlen)
                    return -1;
            }
            *close_after = cn != NULL && strncasecmp(cn, "close", 5) == 0;
            if (c->have >= hlen + (size_t)blen) {
                *dup = status == 200 &&
                       body_duplicate(c->buf + hlen, (size_t)blen);
                c->have -= hlen + (size_t)blen;
                memmove(c->buf, c->buf + hlen + blen, c->have);
                return (int)status;
            }
        }
        if (c->have == sizeof c->buf)
            return -1;
        ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->have += (size_t)r;
    }
}

/* One request/response; reconnects once if a kept-alive connection died.
 * Returns the status, or 0 on a transport error. */
static int roundtrip(const struct options *o, struct conn *c, const char *req,
                     size_t len, struct tally *t, bool *dup)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool close_after = false;
        int st;

        if (c->fd < 0) {
            t->reconnects++; /* every mode opens its connection first */
            if (conn_open(o, c) != 0)
                return 0;
        }
        if (send_all(c->fd, req, len) != 0) {
            conn_close(c);
            continue;
        }
        st = read_response(c, dup, &close_after);
        if (st < 0) {
            conn_close(c);
            continue; /* the server may have closed an idle connection */
        }
        if (close_after)
            conn_close(c);
        return st;
    }
    return 0;
}

static void count(struct tally *t, int status, bool dup)
{
    t->status[status > 0 && status < STATUS_SLOTS ? status : 0]++;
    if (status == 200 && dup)
        t->duplicates++;
}

/* ---- statistics --------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array, in milliseconds. */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
    size_t k;

    if (n == 0)
        return 0.0;
    k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1e6;
}

static double median_ms(const uint64_t *v, size_t n)
{
    if (n == 0)
        return 0.0;
    if (n % 2)
        return (double)v[n / 2] / 1e6;
    return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2e6;
}

static double mean_ms(const uint64_t *v, size_t n)
{
    double s = 0;

    for (size_t i = 0; i < n; i++)
        s += (double)v[i];
    return n ? s / (double)n / 1e6 : 0.0;
}

static void merge(struct tally *into, struct tally *from)
{
    for (int i = 0; i < STATUS_SLOTS; i++)
        into->status[i] += from->status[i];
    into->duplicates += from->duplicates;
    into->reconnects += from->reconnects;
    for (size_t i = 0; i < from->nlat; i++)
        tally_push(&into->lat_ns, &into->nlat, &into->caplat, from->lat_ns[i]);
    for (size_t i = 0; i < from->nsvc; i++)
        tally_push(&into->svc_ns, &into->nsvc, &into->capsvc, from->svc_ns[i]);
    free(from->lat_ns);
    free(from->svc_ns);
    from->lat_ns = from->svc_ns = NULL;
}

static void print_counts(const struct tally *t)
{
    uint64_t total = 0, ok = t->status[200];
    bool first = true;

    for (int i = 0; i < STATUS_SLOTS; i++)
        total += t->status[i];
    printf("\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"non200\":%" PRIu64
           ",\"duplicates\":%" PRIu64 ",\"reconnects\":%" PRIu64
           ",\"status\":{",
           total, ok, total - ok, t->duplicates, t->reconnects);
    for (int i = 0; i < STATUS_SLOTS; i++) {
        if (t->status[i] == 0)
            continue;
        printf("%s\"%s%d\":%" PRIu64, first ? "" : ",", i ? "" : "transport_",
               i, t->status[i]);
        first = false;
    }
    printf("}");
}

static void print_latency(const char *name, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    printf(",\"%s\":{\"n\":%zu,\"mean_ms\":%.4f,\"median_ms\":%.4f,"
           "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,"
           "\"p999_ms\":%.4f,\"min_ms\":%.4f,\"max_ms\":%.4f}",
           name, n, mean_ms(v, n), median_ms(v, n), pct_ms(v, n, 50),
           pct_ms(v, n, 90), pct_ms(v, n, 99), pct_ms(v, n, 99.9),
           n ? (double)v[0] / 1e6 : 0.0, n ? (double)v[n - 1] / 1e6 : 0.0);
}

/* ---- batch: the seed's _run_batch -------------------------------------- */

struct batch {
    const struct options *o;
    const struct message *msgs;
    long n;
    long chunk; /* max(1, n // workers) */
    long nchunks;
    atomic_long next_chunk;  /* the executor's queue of chunks */
    pthread_barrier_t start; /* connected, ready: go */
};

struct worker {
    pthread_t tid;
    struct batch *b;
    int index;
    struct tally t;
    struct conn c;
    int connect_failed;
};

static void *batch_worker(void *arg)
{
    struct worker *w = arg;
    struct batch *b = w->b;
    char req[REQ_MAX];

    w->connect_failed = conn_open(b->o, &w->c) != 0;
    pthread_barrier_wait(&b->start);
    for (;;) {
        long k = atomic_fetch_add(&b->next_chunk, 1);

        if (k >= b->nchunks)
            break;
        long lo = k * b->chunk;
        long hi = lo + b->chunk < b->n ? lo + b->chunk : b->n;

        for (long i = lo; i < hi; i++) {
            int len = format_request(b->o, &b->msgs[i], req, sizeof req);
            uint64_t t0 = now_ns();
            bool dup = false;
            int st = roundtrip(b->o, &w->c, req, (size_t)len, &w->t, &dup);

            tally_push(&w->t.lat_ns, &w->t.nlat, &w->t.caplat, now_ns() - t0);
            count(&w->t, st, dup);
        }
    }
    conn_close(&w->c);
    return NULL;
}

static int run_batch(const struct options *o)
{
    struct batch b = {.o = o, .n = o->n};
    struct worker *ws = calloc((size_t)o->workers, sizeof *ws);
    struct tally all = {0};
    uint64_t t0, t1;
    int failed = 0;

    if (ws == NULL)
        die("out of memory");
    b.msgs = make_messages(o, o->n);
    b.chunk = o->n / o->workers > 0 ? o->n / o->workers : 1;
    b.nchunks = (o->n + b.chunk - 1) / b.chunk;
    atomic_init(&b.next_chunk, 0);
    pthread_barrier_init(&b.start, NULL, (unsigned)o->workers + 1);
    for (long i = 0; i < o->workers; i++) {
        ws[i].b = &b;
        ws[i].index = (int)i;
        if (pthread_create(&ws[i].tid, NULL, batch_worker, &ws[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&b.start);
    t0 = now_ns();
    for (long i = 0; i < o->workers; i++)
        pthread_join(ws[i].tid, NULL);
    t1 = now_ns();
    for (long i = 0; i < o->workers; i++) {
        failed += ws[i].connect_failed;
        merge(&all, &ws[i].t);
    }
    printf("{\"mode\":\"batch\",\"n\":%ld,\"workers\":%ld,\"orgs\":%ld,"
           "\"chunks\":%ld,\"wall_ms\":%.3f,\"rps\":%.1f,"
           "\"connect_failures\":%d,",
           o->n, o->workers, o->orgs, b.nchunks, (double)(t1 - t0) / 1e6,
           (double)o->n / ((double)(t1 - t0) / 1e9), failed);
    print_counts(&all);
    print_latency("latency", all.lat_ns, all.nlat);
    printf("}\n");
    pthread_barrier_destroy(&b.start);
    free(all.lat_ns);
    free(all.svc_ns);
    free((void *)b.msgs);
    free(ws);
    return all.status[200] == (uint64_t)o->n ? 0 : 1;
}

/* ---- single: sequential requests, the seed's test_bench_single_* -------- */

static int run_single(const struct options *o)
{
    long total = o->warmup + o->n;
    struct message *msgs = make_messages(o, total);
    struct tally t = {0}, warm = {0};
    struct conn *c = malloc(sizeof *c);
    char req[REQ_MAX];

    if (c == NULL)
        die("out of memory");
    if (conn_open(o, c) != 0)
        die("cannot connect");
    for (long i = 0; i < total; i++) {
        struct tally *into = i < o->warmup ? &warm : &t;
        int len = format_request(o, &msgs[i], req, sizeof req);
        uint64_t t0 = now_ns();
        bool dup = false;
        int st = roundtrip(o, c, req, (size_t)len, into, &dup);

        if (i >= o->warmup)
            tally_push(&t.lat_ns, &t.nlat, &t.caplat, now_ns() - t0);
        count(into, st, dup);
    }
    conn_close(c);
    printf("{\"mode\":\"single\",\"n\":%ld,\"warmup\":%ld,"
           "\"warmup_non200\":%" PRIu64 ",",
           o->n, o->warmup, (uint64_t)o->warmup - warm.status[200]);
    print_counts(&t);
    print_latency("latency", t.lat_ns, t.nlat);
    printf("}\n");
    free(t.lat_ns);
    free(warm.lat_ns);
    free(msgs);
    free(c);
    return t.status[200] == (uint64_t)o->n ? 0 : 1;
}

/* ---- rate: a fixed request rate over `workers` connections -------------- */

struct rater {
    pthread_t tid;
    const struct options *o;
    int index;
    uint64_t start_ns;
    uint64_t interval_ns; /* between this connection's requests */
    uint64_t end_ns;
    struct tally t;
    struct conn c;
    uint64_t late; /* sends that started after their schedule */
};

static void *rate_worker(void *arg)
{
    struct rater *r = arg;
    const struct options *o = r->o;
    uint64_t rng = o->seed ^ ((uint64_t)r->index * 0x9e3779b97f4a7c15u);
    char req[REQ_MAX];
    struct message m;

    if (conn_open(o, &r->c) != 0)
        r->c.fd = -1; /* roundtrip() retries and counts the failure */
    for (uint64_t k = 0;; k++) {
        uint64_t due = r->start_ns + k * r->interval_ns;
        uint64_t sent, done;
        bool dup = false;
        int st, len;

        if (due >= r->end_ns)
            break;
        snprintf(m.id, ID_MAX, "msg_%sc%d_%09" PRIu64, o->tag, r->index, k);
        make_org(o, &rng, m.org);
        make_payload(&rng, m.payload);
        len = format_request(o, &m, req, sizeof req);
        if (now_ns() < due)
            sleep_until_ns(due);
        else if (k > 0)
            r->late++;
        sent = now_ns();
        st = roundtrip(o, &r->c, req, (size_t)len, &r->t, &dup);
        done = now_ns();
        /* From the schedule, not from the send: a stalled server cannot
         * hide its queueing from us (coordinated omission). */
        tally_push(&r->t.lat_ns, &r->t.nlat, &r->t.caplat, done - due);
        tally_push(&r->t.svc_ns, &r->t.nsvc, &r->t.capsvc, done - sent);
        count(&r->t, st, dup);
    }
    conn_close(&r->c);
    return NULL;
}

static int run_rate(const struct options *o)
{
    struct rater *rs = calloc((size_t)o->workers, sizeof *rs);
    struct tally all = {0};
    uint64_t interval = (uint64_t)((double)o->workers / o->rate * 1e9);
    uint64_t t0 = now_ns() + 50000000u; /* 50 ms for the threads to start */
    uint64_t end = t0 + (uint64_t)(o->duration * 1e9), t1, late = 0;

    if (rs == NULL)
        die("out of memory");
    for (long i = 0; i < o->workers; i++) {
        rs[i].o = o;
        rs[i].index = (int)i;
        rs[i].interval_ns = interval;
        /* Stagger the connections so the rate is even, not bursts. */
        rs[i].start_ns = t0 + (uint64_t)i * interval / (uint64_t)o->workers;
        rs[i].end_ns = end;
        if (pthread_create(&rs[i].tid, NULL, rate_worker, &rs[i]) != 0)
            die("pthread_create");
    }
    for (long i = 0; i < o->workers; i++)
        pthread_join(rs[i].tid, NULL);
    t1 = now_ns();
    for (long i = 0; i < o->workers; i++) {
        late += rs[i].late;
        merge(&all, &rs[i].t);
    }
    printf("{\"mode\":\"rate\",\"target_rps\":%.1f,\"connections\":%ld,"
           "\"duration_s\":%.3f,\"achieved_rps\":%.1f,\"late_sends\":%" PRIu64
           ",",
           o->rate, o->workers, (double)(t1 - t0) / 1e9,
           (double)all.nlat / ((double)(t1 - t0) / 1e9), late);
    print_counts(&all);
    print_latency("latency", all.lat_ns, all.nlat);
    print_latency("service_time", all.svc_ns, all.nsvc);
    printf("}\n");
    free(all.lat_ns);
    free(all.svc_ns);
    free(rs);
    return all.status[200] == all.nlat ? 0 : 1;
}

/* ---- command line ------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: loadgen MODE [options]\n"
        "\n"
        "Sends POST /process requests to poold over HTTP/1.1 keep-alive, one\n"
        "connection per worker thread, and prints one JSON object on stdout.\n"
        "Messages are the seed's: id msg_<tag><%%06d> from a fixed set of\n"
        "--id-space ids, org_id uniform over --orgs orgs, payload = 64 random\n"
        "bytes as 128 hex characters. Exit status 0 when every answer was "
        "200.\n"
        "\n"
        "Modes:\n"
        "  batch    the seed's _run_batch: -n messages split into chunks of\n"
        "           max(1, n/workers), -w threads take chunks in turn; prints "
        "the\n"
        "           wall time from the first send to the last answer "
        "(connections\n"
        "           are opened before the clock starts)\n"
        "  single   -n sequential requests on one connection after --warmup\n"
        "           unmeasured ones; prints mean, median and percentiles\n"
        "  rate     --rate requests/s spread evenly over -w connections for\n"
        "           --duration seconds; latency is measured from each "
        "request's\n"
        "           scheduled time (no coordinated omission), service_time "
        "from\n"
        "           its send; a connection never has two requests in flight\n"
        "\n"
        "Options:\n"
        "  -H, --host HOST        poold's address (default 127.0.0.1)\n"
        "  -p, --port PORT        poold's port (default 8080)\n"
        "  -n, --requests N       batch/single: requests (default 200)\n"
        "  -w, --workers N        batch: threads; rate: connections (default "
        "4)\n"
        "  -o, --orgs N           orgs org_<first>..: (default 10)\n"
        "      --org-first K      number of the first org (default 0)\n"
        "      --warmup N         single: unmeasured requests first (default "
        "20)\n"
        "      --id-space N       size of the id set (default 10000, the "
        "seed's)\n"
        "      --repeat-ids       draw ids with replacement like the seed: "
        "some\n"
        "                         answers are then duplicates or 409 "
        "conflicts\n"
        "  -r, --rate R           rate: requests per second in all (default "
        "100)\n"
        "  -d, --duration S       rate: seconds (default 10)\n"
        "  -s, --seed N           random seed; same seed, same messages "
        "(default 1)\n"
        "  -t, --tag STR          put in every id after \"msg_\" (default "
        "empty);\n"
        "                         use a new tag per run to keep ids fresh\n"
        "  -h, --help             this text\n"
        "\n"
        "Output fields: requests, ok (200s), non200, duplicates (200 with\n"
        "\"duplicate\": true), status (histogram; transport_0 = no answer),\n"
        "latency {mean_ms, median_ms, p50_ms, p90_ms, p99_ms, p999_ms, ...};\n"
        "batch adds wall_ms and rps, rate adds achieved_rps and "
        "service_time.\n");
}

static void parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"requests", required_argument, NULL, 'n'},
        {"workers", required_argument, NULL, 'w'},
        {"orgs", required_argument, NULL, 'o'},
        {"org-first", required_argument, NULL, 'F'},
        {"warmup", required_argument, NULL, 'W'},
        {"id-space", required_argument, NULL, 'I'},
        {"repeat-ids", no_argument, NULL, 'R'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"seed", required_argument, NULL, 's'},
        {"tag", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long seed = 1;
    int ch;

    while ((ch = getopt_long(argc, argv, "H:p:n:w:o:r:d:s:t:h", longopts,
                             NULL)) != -1) {
        bool ok = true;

        switch (ch) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            o->port = optarg;
            break;
        case 'n':
            ok = parse_long(optarg, 1, 100000000, &o->n);
            break;
        case 'w':
            ok = parse_long(optarg, 1, 4096, &o->workers);
            break;
        case 'o':
            ok = parse_long(optarg, 1, 1000, &o->orgs);
            break;
        case 'F':
            ok = parse_long(optarg, 0, 999, &o->org_first);
            break;
        case 'W':
            ok = parse_long(optarg, 0, 100000000, &o->warmup);
            break;
        case 'I':
            ok = parse_long(optarg, 1, 1000000, &o->id_space);
            break;
        case 'R':
            o->repeat_ids = true;
            break;
        case 'r':
            ok = parse_double(optarg, 0.001, 1e7, &o->rate);
            break;
        case 'd':
            ok = parse_double(optarg, 0.001, 1e6, &o->duration);
            break;
        case 's':
            ok = parse_long(optarg, 0, LONG_MAX, &seed);
            break;
        case 't':
            o->tag = optarg;
            ok = strlen(optarg) <= 40 && strpbrk(optarg, "\"\\") == NULL;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
        if (!ok) {
            fprintf(stderr, "loadgen: invalid value for -%c: %s\n", ch, optarg);
            exit(2);
        }
    }
    o->seed = (uint64_t)seed;
    if (optind != argc - 1) {
        usage(stderr);
        exit(2);
    }
    if (strcmp(argv[optind], "batch") == 0)
        o->mode = MODE_BATCH;
    else if (strcmp(argv[optind], "single") == 0)
        o->mode = MODE_SINGLE;
    else if (strcmp(argv[optind], "rate") == 0)
        o->mode = MODE_RATE;
    else
        die("MODE must be batch, single or rate (see --help)");
    if (o->org_first + o->orgs > 1000)
        die("--org-first + --orgs must stay below 1000");
    if (!o->repeat_ids && o->mode != MODE_RATE &&
        o->n + (o->mode == MODE_SINGLE ? o->warmup : 0) > o->id_space)
        die("more requests than ids: raise --id-space or use --repeat-ids");
}

int main(int argc, char **argv)
{
    struct options o = {
        .mode = MODE_BATCH,
        .host = "127.0.0.1",
        .port = "8080",
        .n = 200,
        .workers = 4,
        .orgs = 10,
        .warmup = 20,
        .id_space = 10000,
        .rate = 100,
        .duration = 10,
        .tag = "",
    };

    parse_args(argc, argv, &o);
    switch (o.mode) {
    case MODE_BATCH:
        return run_batch(&o);
    case MODE_SINGLE:
        return run_single(&o);
    case MODE_RATE:
        return run_rate(&o);
    }
    return 2;
}
