/* metrics.c — lock-free HTTP counters and Prometheus text exposition. */
#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static const char *const method_names[] = {"GET",  "POST",  "PUT",     "DELETE",
                                           "HEAD", "PATCH", "OPTIONS", "OTHER"};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

static const unsigned status_values[] = {200, 201, 204, 400, 401, 403,
                                         404, 405, 409, 413, 415, 429,
                                         500, 501, 503, 504, 0};
#define NSTATUSES (sizeof status_values / sizeof status_values[0])

/* Request duration buckets, seconds; +Inf is implicit. */
static const double duration_le_s[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NDURATION (sizeof duration_le_s / sizeof duration_le_s[0])

struct route_metrics {
    _Atomic uint64_t requests[NMETHODS][NSTATUSES];
    _Atomic uint64_t duration_bucket[NDURATION + 1]; /* not cumulative */
    _Atomic uint64_t duration_ns_sum;
    _Atomic uint64_t duration_count;
};

struct metrics {
    const char *const *route_names;
    size_t nroutes; /* + 1 for "unmatched" */
    struct route_metrics route[METRICS_MAX_ROUTES];
    _Atomic int64_t connections_open;
    _Atomic uint64_t idle_closed; /* idle keep-alive connections closed */
    _Atomic unsigned top_orgs;    /* per-org series at most; 0: every org */
};

void metrics_set_top_orgs(struct metrics *m, unsigned n)
{
    atomic_store(&m->top_orgs, n);
}

int metrics_create(const char *const *route_names, size_t nroutes,
                   struct metrics **out)
{
    struct metrics *m;

    if (nroutes + 1 > METRICS_MAX_ROUTES)
        return POOLD_ERR_INVALID;
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return POOLD_ERR_NOMEM;
    m->route_names = route_names;
    m->nroutes = nroutes;
    *out = m;
    return POOLD_OK;
}

void metrics_destroy(struct metrics *m)
{
    free(m);
}

static size_t method_index(const char *method)
{
    for (size_t i = 0; i + 1 < NMETHODS; i++)
        if (strcmp(method, method_names[i]) == 0)
            return i;
    return NMETHODS - 1;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i + 1 < NSTATUSES; i++)
        if (status_values[i] == status)
            return i;
    return NSTATUSES - 1;
}

void metrics_observe_request(struct metrics *m, size_t route,
                             const char *method, unsigned status,
                             uint64_t duration_ns)
{
    struct route_metrics *r;
    size_t b = 0;
    double s = (double)duration_ns / 1e9;

    if (m == NULL)
        return;
    if (route > m->nroutes)
        route = m->nroutes;
    r = &m->route[route];
    atomic_fetch_add_explicit(
        &r->requests[method_index(method)][status_index(status)], 1,
        memory_order_relaxed);
    while (b < NDURATION && s > duration_le_s[b])
        b++;
    atomic_fetch_add_explicit(&r->duration_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->duration_ns_sum, duration_ns,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&r->duration_count, 1, memory_order_relaxed);
}

void metrics_connection_add(struct metrics *m, int delta)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->connections_open, delta,
                                  memory_order_relaxed);
}

void metrics_idle_closed_add(struct metrics *m, unsigned n)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->idle_closed, n, memory_order_relaxed);
}

/* ---- pool snapshots ------------------------------------------------------ */

/* v (n of *cap elements of size bytes used) with room for one more: v
 * itself, or v moved to a larger block (*cap updated); NULL when that
 * allocation fails (v is left as it was). */
static void *grow(void *v, size_t n, size_t *cap, size_t size)
{
    size_t want = *cap ? 2 * *cap : 16;
    void *p;

    if (n < *cap)
        return v;
    if ((p = realloc(v, want * size)) != NULL)
        *cap = want;
    return p;
}

void metrics_snapshot_add(void *snap, const char *org_id,
                          const struct pool_stats *stats)
{
    struct pool_snapshot *s = snap;
    struct pool_snapshot_entry *v;

    if (s->oom)
        return;
    if ((v = grow(s->v, s->n, &s->cap, sizeof *v)) == NULL) {
        s->oom = true;
        return;
    }
    s->v = v;
    snprintf(s->v[s->n].org_id, sizeof s->v[s->n].org_id, "%s", org_id);
    s->v[s->n].stats = *stats;
    s->n++;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pool_snapshot_entry *)a)->org_id,
                  ((const struct pool_snapshot_entry *)b)->org_id);
}

int metrics_snapshot_sort(struct pool_snapshot *s)
{
    if (s->oom)
        return POOLD_ERR_NOMEM;
    if (s->n > 1)
        qsort(s->v, s->n, sizeof s->v[0], entry_cmp);
    return POOLD_OK;
}

void metrics_snapshot_free(struct pool_snapshot *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ---- text output ----------------------------------------------------------
 */

static void sb_family(struct strbuf *b, const char *name, const char *type,
                      const char *help)
{
    strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One pool_stats field, as a gauge or counter. */
struct stat_series {
    const char *suffix; /* after "<prefix>_" */
    const char *type;
    const char *help;
    size_t offset;
};

#define STAT(f) offsetof(struct pool_stats, f)
static const struct stat_series stat_series[] = {
    {"max_size", "gauge", "Largest number of objects the pool may hold.",
     STAT(max_size)},
    {"idle", "gauge", "Objects idle in the pool.", STAT(idle)},
    {"active", "gauge", "Objects lent out.", STAT(active)},
    {"waiting", "gauge", "Acquires waiting for an object.", STAT(waiting)},
    {"peak_active", "gauge", "Most objects lent out at once.",
     STAT(peak_active)},
    {"timeouts_total", "counter", "Acquires that timed out waiting.",
     STAT(total_timeouts)},
    {"waiters_rejected_total", "counter",
     "Acquires refused at once: the waiter bound was reached.",
     STAT(waiters_rejected)},
    {"created_total", "counter", "Objects built.", STAT(created)},
    {"create_failures_total", "counter", "Object builds that failed.",
     STAT(create_failures)},
    {"acquired_total", "counter", "Successful acquires.", STAT(acquired)},
    {"waited_total", "counter", "Acquires that had to wait.", STAT(wait_count)},
    {"held_too_long_total", "counter",
     "Lends held longer than POOLD_HOLD_WARN_MS (logged once each).",
     STAT(held_too_long)},
    {"group_commits_total", "counter",
     "Commit statements of an org's messages (group commit).",
     STAT(group_commits)},
    {"group_messages_total", "counter",
     "Messages committed by those statements.", STAT(group_messages)},
};
#define NSTAT_SERIES (sizeof stat_series / sizeof stat_series[0])

static uint64_t stat_value(const struct pool_stats *s, size_t offset)
{
    return *(const uint64_t *)((const char *)s + offset);
}

/* labels: "" or `org="x"`; sep: "" or "," to join with more labels. */
static void render_pool_histogram(struct strbuf *b, const char *name,
                                  const char *labels,
                                  const struct pool_stats *s)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";

    for (size_t i = 0; i < POOL_WAIT_BUCKETS; i++) {
        cum += s->wait_hist[i];
        if (pool_wait_bucket_le_ns[i] == UINT64_MAX)
            strbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels,
                          sep, (unsigned long long)cum);
        else
            strbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels,
                          sep, (double)pool_wait_bucket_le_ns[i] / 1e9,
                          (unsigned long long)cum);
    }
    if (pool_wait_bucket_le_ns[POOL_WAIT_BUCKETS - 1] != UINT64_MAX)
        strbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                      (unsigned long long)cum);
    strbuf_printf(b, "%s_sum%s%s%s %.9f\n", name, *labels ? "{" : "", labels,
                  *labels ? "}" : "", (double)s->wait_ns_sum / 1e9);
    strbuf_printf(b, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels,
                  *labels ? "}" : "", (unsigned long long)cum);
}

static void render_org_pools(struct strbuf *b, const struct pool_snapshot *snap)
{
    char name[128], labels[128];

    for (size_t k = 0; k < NSTAT_SERIES; k++) {
        snprintf(name, sizeof name, "poold_pool_%s", stat_series[k].suffix);
        sb_family(b, name, stat_series[k].type, stat_series[k].help);
        for (size_t i = 0; i < snap->n; i++)
            strbuf_printf(b, "%s{org=\"%s\"} %llu\n", name, snap->v[i].org_id,
                          (unsigned long long)stat_value(
                              &snap->v[i].stats, stat_series[k].offset));
    }
    sb_family(b, "poold_pool_destroyed_total", "counter",
              "Objects destroyed, by reason.");
    for (size_t i = 0; i < snap->n; i++)
        for (int r = 0; r < POOL_DESTROY__COUNT; r++)
            strbuf_printf(
                b,
                "poold_pool_destroyed_total{org=\"%s\",reason=\"%s\"} "
                "%llu\n",
                snap->v[i].org_id,
                pool_destroy_reason_str((enum pool_destroy_reason)r),
                (unsigned long long)snap->v[i].stats.destroyed_by[r]);
    sb_family(b, "poold_pool_acquire_wait_seconds", "histogram",
              "Time acquires waited for a service.");
    for (size_t i = 0; i < snap->n; i++) {
        snprintf(labels, sizeof labels, "org=\"%s\"", snap->v[i].org_id);
        render_pool_histogram(b, "poold_pool_acquire_wait_seconds", labels,
                              &snap->v[i].stats);
    }
}

static void render_conn_pool(struct strbuf *b, const struct pool_stats *s)
{
    char name[128];

    for (size_t k = 0; k < NSTAT_SERIES; k++) {
        /* Holds are a service's, not a connection's. */
        if (stat_series[k].offset == STAT(held_too_long))
            continue;
        snprintf(name, sizeof name, "poold_db_connections_%s",
                 stat_series[k].suffix);
        sb_family(b, name, stat_series[k].type, stat_series[k].help);
        strbuf_printf(b, "%s %llu\n", name,
                      (unsigned long long)stat_value(s, stat_series[k].offset));
    }
    sb_family(b, "poold_db_connections_closing", "gauge",
              "Connections closed with a statement in flight whose backend "
              "PostgreSQL may still show: they count against the budget.");
    strbuf_printf(b, "poold_db_connections_closing %llu\n",
                  (unsigned long long)s->held);
    sb_family(b, "poold_db_connections_destroyed_total", "counter",
              "PostgreSQL connections closed, by reason.");
    for (int r = 0; r < POOL_DESTROY__COUNT; r++)
        strbuf_printf(b,
                      "poold_db_connections_destroyed_total{reason=\"%s\"} "
                      "%llu\n",
                      pool_destroy_reason_str((enum pool_destroy_reason)r),
                      (unsigned long long)s->destroyed_by[r]);
    sb_family(b, "poold_db_connections_acquire_wait_seconds", "histogram",
              "Time acquires waited for a PostgreSQL connection.");
    render_pool_histogram(b, "poold_db_connections_acquire_wait_seconds", "",
                          s);
}

/* The commit queue's statements, every org's (an org's series count a
 * statement with several orgs' messages for each of them). */
static void render_commits(struct strbuf *b, const struct reg_commit_totals *c)
{
    sb_family(b, "poold_group_commit_seconds", "summary",
              "What the commit queue's statements took, sent to answered, "
              "failed ones included (the mean: _sum / _count).");
    strbuf_printf(b, "poold_group_commit_seconds_sum %.9f\n",
                  (double)c->ns_sum / 1e9);
    strbuf_printf(b, "poold_group_commit_seconds_count %llu\n",
                  (unsigned long long)c->statements);
    sb_family(b, "poold_group_commits_overlapped_total", "counter",
              "Commit queue statements sent while another was sent and "
              "not yet answered.");
    strbuf_printf(b, "poold_group_commits_overlapped_total %llu\n",
                  (unsigned long long)c->overlapped);
}

static uint64_t load(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static const char *route_name(const struct metrics *m, size_t r)
{
    return r < m->nroutes ? m->route_names[r] : "unmatched";
}

static void render_http(struct strbuf *b, struct metrics *m)
{
    sb_family(b, "poold_http_requests_total", "counter",
              "HTTP requests answered, by route pattern, method and status.");
    for (size_t r = 0; r <= m->nroutes; r++)
        for (size_t i = 0; i < NMETHODS; i++)
            for (size_t s = 0; s < NSTATUSES; s++) {
                uint64_t n = load(&m->route[r].requests[i][s]);
                char status[12] = "other";
                if (n == 0)
                    continue;
                if (status_values[s] != 0)
                    snprintf(status, sizeof status, "%u", status_values[s]);
                strbuf_printf(b,
                              "poold_http_requests_total{route=\"%s\","
                              "method=\"%s\",status=\"%s\"} %llu\n",
                              route_name(m, r), method_names[i], status,
                              (unsigned long long)n);
            }
    sb_family(b, "poold_http_request_duration_seconds", "histogram",
              "Time from request headers to response, by route pattern.");
    for (size_t r = 0; r <= m->nroutes; r++) {
        struct route_metrics *rm = &m->route[r];
        uint64_t cum = 0;
        for (size_t i = 0; i <= NDURATION; i++) {
            cum += load(&rm->duration_bucket[i]);
            if (i < NDURATION)
                strbuf_printf(b,
                              "poold_http_request_duration_seconds_bucket{"
                              "route=\"%s\",le=\"%g\"} %llu\n",
                              route_name(m, r), duration_le_s[i],
                              (unsigned long long)cum);
            else
                strbuf_printf(b,
                              "poold_http_request_duration_seconds_bucket{"
                              "route=\"%s\",le=\"+Inf\"} %llu\n",
                              route_name(m, r), (unsigned long long)cum);
        }
        strbuf_printf(b,
                      "poold_http_request_duration_seconds_sum{route=\"%s\"} "
                      "%.9f\n",
                      route_name(m, r),
                      (double)load(&rm->duration_ns_sum) / 1e9);
        strbuf_printf(b,
                      "poold_http_request_duration_seconds_count{route=\"%s\"}"
                      " %llu\n",
                      route_name(m, r), (unsigned long long)cum);
    }
    sb_family(b, "poold_http_connections_open", "gauge",
              "HTTP connections open now.");
    strbuf_printf(b, "poold_http_connections_open %lld\n",
                  (long long)atomic_load(&m->connections_open));
    sb_family(b, "poold_http_idle_connections_closed_total", "counter",
              "Idle keep-alive connections closed to give their slot to a "
              "waiting connection.");
    strbuf_printf(b, "poold_http_idle_connections_closed_total %llu\n",
                  (unsigned long long)load(&m->idle_closed));
}

/* Busiest first: most acquires ever (monotonic, so the set is stable),
 * then most in use now, then by name. */
static int busier_cmp(const void *a, const void *b)
{
    const struct pool_snapshot_entry *x = a, *y = b;
    uint64_t ux = x->stats.active + x->stats.waiting;
    uint64_t uy = y->stats.active + y->stats.waiting;

    if (x->stats.acquired != y->stats.acquired)
        return x->stats.acquired > y->stats.acquired ? -1 : 1;
    if (ux != uy)
        return ux > uy ? -1 : 1;
    return strcmp(x->org_id, y->org_id);
}

/* Keep the top busiest orgs of snap (sorted by name again) and fold the
 * rest into one entry, org "_other", so a scrape stays bounded whatever the
 * number of orgs. No-op when top is 0 or not exceeded. */
static void snapshot_bound(struct pool_snapshot *snap, unsigned top)
{
    struct pool_snapshot_entry other;

    if (top == 0 || snap->n <= top)
        return;
    qsort(snap->v, snap->n, sizeof snap->v[0], busier_cmp);
    memset(&other, 0, sizeof other);
    snprintf(other.org_id, sizeof other.org_id, "%s", METRICS_OTHER_ORG);
    for (size_t i = top; i < snap->n; i++)
        pool_stats_add(&other.stats, &snap->v[i].stats);
    snap->n = top;
    qsort(snap->v, snap->n, sizeof snap->v[0], entry_cmp);
    snap->v[snap->n++] = other; /* the array held more than top: room */
}

/* ---- per-org counts (the rate-limit refusals) ---------------------------- */

void metrics_counts_add(void *counts, const char *org_id, uint64_t n)
{
    struct metrics_org_counts *c = counts;
    struct metrics_org_count *v;

    if (c->oom)
        return;
    if ((v = grow(c->v, c->n, &c->cap, sizeof *v)) == NULL) {
        c->oom = true;
        return;
    }
    c->v = v;
    snprintf(c->v[c->n].org_id, sizeof c->v[c->n].org_id, "%s", org_id);
    c->v[c->n].n = n;
    c->n++;
}

void metrics_counts_free(struct metrics_org_counts *c)
{
    free(c->v);
    memset(c, 0, sizeof *c);
}

static int count_name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct metrics_org_count *)a)->org_id,
                  ((const struct metrics_org_count *)b)->org_id);
}

/* Largest count first, then by name. */
static int count_most_cmp(const void *a, const void *b)
{
    const struct metrics_org_count *x = a, *y = b;

    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return strcmp(x->org_id, y->org_id);
}

/* As snapshot_bound() for counts: the top orgs with the largest
 * counts, sorted by org_id, then METRICS_OTHER_ORG summing the rest. */
static void counts_bound(struct metrics_org_counts *c, unsigned top)
{
    struct metrics_org_count other;

    if (c->n == 0)
        return; /* c->v may be NULL: qsort must not see it */
    if (top == 0 || c->n <= top) {
        qsort(c->v, c->n, sizeof c->v[0], count_name_cmp);
        return;
    }
    qsort(c->v, c->n, sizeof c->v[0], count_most_cmp);
    memset(&other, 0, sizeof other);
    snprintf(other.org_id, sizeof other.org_id, "%s", METRICS_OTHER_ORG);
    for (size_t i = top; i < c->n; i++)
        other.n += c->v[i].n;
    c->n = top;
    qsort(c->v, c->n, sizeof c->v[0], count_name_cmp);
    c->v[c->n++] = other; /* the array held more than top: room */
}

static void render_rate_limited(struct strbuf *b, struct metrics_org_counts *c,
                                unsigned top)
{
    if (c->oom) {
        b->oom = true;
        return;
    }
    counts_bound(c, top);
    sb_family(b, "poold_rate_limited_total", "counter",
              "Requests refused by the org's rate limit (429).");
    for (size_t i = 0; i < c->n; i++)
        strbuf_printf(b, "poold_rate_limited_total{org=\"%s\"} %llu\n",
                      c->v[i].org_id, (unsigned long long)c->v[i].n);
}

int metrics_render(struct metrics *m, struct metrics_view *view, char **out,
                   size_t *len)
{
    struct strbuf b = {0};
    struct pool_snapshot *snap = view->pools;

    sb_family(&b, "poold_pool_orgs", "gauge",
              "Org pools that exist (all of them, whatever "
              "POOLD_METRICS_TOP_ORGS).");
    strbuf_printf(&b, "poold_pool_orgs %zu\n", snap->n);
    snapshot_bound(snap, atomic_load(&m->top_orgs));
    sb_family(&b, "poold_build_info", "gauge", "poold's version.");
    strbuf_printf(&b, "poold_build_info{version=\"%s\"} 1\n", POOLD_VERSION);
    sb_family(&b, "poold_ready", "gauge",
              "1 when the org directory is loaded and the database answers.");
    strbuf_printf(&b, "poold_ready %d\n", view->ready ? 1 : 0);
    render_org_pools(&b, snap);
    render_conn_pool(&b, &view->conn);
    render_commits(&b, &view->commits);
    render_http(&b, m);
    if (view->rate_limited != NULL)
        render_rate_limited(&b, view->rate_limited, atomic_load(&m->top_orgs));
    return strbuf_take(&b, out, len);
}
