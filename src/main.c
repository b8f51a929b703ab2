/* main.c — poold: configuration, start-up, signal wait and graceful drain. */
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>

#include "catalog.h"
#include "clock.h"
#include "cluster.h"
#include "config.h"
#include "handlers.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "service.h"
#include "tenants.h"

#define EXIT_CONFIG 2
#define DRAIN_TIMEOUT_NS (10 * NS_PER_S)
/* After the drain, aborted requests get this long to answer (504/503). */
#define ABORT_GRACE_NS (2 * NS_PER_S)
#define DB_CONNECT_TIMEOUT_S 5
#define ORG_REFRESH_NS NS_PER_S
/* A pause lasts as long as an operator wants; ask clients to come back in a
 * few seconds rather than hammer. */
#define PAUSED_RETRY_AFTER_S 5

/* Set once the drain is over: what is left of the shutdown is bounded, and
 * a signal repeated by a supervisor then must not turn exit 0 into 1. */
static atomic_bool drain_over;

static void registry_config_from(const struct poold_config *cfg,
                                 struct registry_config *rc)
{
    memset(rc, 0, sizeof *rc);
    rc->db.url = cfg->database_url;
    rc->db.application_name = "poold";
    rc->db.connect_timeout_s = DB_CONNECT_TIMEOUT_S;
    rc->db.statement_timeout_ms = cfg->statement_timeout_ms;
    rc->db.prepared = cfg->prepared_statements;
    /* Replicas: the cluster's fence ends statements on every connection of
     * the registry (housekeeping's own is opened from a copy, unfenced). */
    rc->db.fenceable = cfg->cluster_max_conns > 0;
    rc->pooled = cfg->pool_mode == CONFIG_POOL_MODE_POOLED;
    rc->default_size = cfg->pool_size;
    rc->ceiling = cfg->pool_ceiling;
    rc->max_waiters = cfg->max_waiting;
    rc->acquire_timeout_ns = (uint64_t)cfg->acquire_timeout_ms * NS_PER_MS;
    rc->db_max_conns = cfg->db_max_conns;
    rc->db_min_idle = cfg->db_min_idle;
    rc->conn_ttl_ns = (uint64_t)cfg->conn_ttl_s * NS_PER_S;
    rc->conn_check_idle_ns = (uint64_t)cfg->conn_check_idle_ms * NS_PER_MS;
    rc->build_cost_ms = cfg->build_cost_ms;
    rc->process_cost_ms = cfg->process_cost_ms;
    rc->prewarm = cfg->prewarm;
    rc->refresh_interval_ns = ORG_REFRESH_NS;
    rc->hold_warn_ns = (uint64_t)cfg->hold_warn_ms * NS_PER_MS;
}

static void log_startup(const struct poold_config *cfg, unsigned port)
{
    char host[INET6_ADDRSTRLEN] = "?";
    char portstr[8], pq[16];
    const struct sockaddr_storage *a = &cfg->listen_addr;

    if (cfg->listen_ipv6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, host,
                  sizeof host);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, host,
                  sizeof host);
    snprintf(portstr, sizeof portstr, "%u", port);
    snprintf(pq, sizeof pq, "%d.%d", PQlibVersion() / 10000,
             PQlibVersion() % 10000);
    log_event(LOG_INFO, "listening", "address", host, "port", portstr,
              "version", POOLD_VERSION, "libpq", pq, "libmicrohttpd",
              MHD_get_version(), "jansson", JANSSON_VERSION, "http_mode",
              "thread-per-connection", "tls", cfg->tls_cert ? "on" : "off",
              "pool_mode",
              cfg->pool_mode == CONFIG_POOL_MODE_POOLED ? "pooled" : "none",
              (const char *)NULL);
}

/* Blocks SIGTERM/SIGINT in this and every later thread; sigwait takes them. */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void drain_and_stop(struct http_server *srv, struct handlers *h,
                           struct registry *reg)
{
    char n[16];
    bool idle;

    handlers_set_draining(h);
    http_server_quiesce(srv);
    idle = http_server_wait_idle(srv, DRAIN_TIMEOUT_NS);
    snprintf(n, sizeof n, "%u", http_server_inflight(srv));
    log_event(idle ? LOG_INFO : LOG_WARN, idle ? "drained" : "drain timed out",
              "inflight", n, (const char *)NULL);
    if (!idle) {
        /* Requests still waiting on the database (a lock held elsewhere,
         * a silent server) end now: 504 if their write went out, else
         * 503; their connections are closed below. */
        registry_shutdown(reg);
        registry_abort(reg);
        idle = http_server_wait_idle(srv, ABORT_GRACE_NS);
        log_event(idle ? LOG_INFO : LOG_WARN,
                  "in-flight database calls "
                  "aborted",
                  "answered", idle ? "all" : "not all", (const char *)NULL);
    }
    atomic_store(&drain_over, true);
    /* Wake anything still waiting on a pool, so the connection threads that
     * MHD_stop_daemon joins can finish. */
    registry_shutdown(reg);
    http_server_stop(srv);
}

/* After the first signal: a second SIGTERM/SIGINT during the drain exits
 * at once. */
static void *second_signal(void *arg)
{
    const sigset_t *set = arg;
    int sig = 0;

    while (sigwait(set, &sig) != 0 || atomic_load(&drain_over))
        ;
    log_event(LOG_ERROR,
              "second signal during shutdown: exiting now "
              "without draining",
              "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
              (const char *)NULL);
    log_flush(); /* _exit skips the writer's atexit flush */
    _exit(1);
    return NULL;
}

/* The detached watcher outlives run(): it gets its own copy of the set,
 * not a pointer into run()'s frame (ASan: stack-use-after-scope in sigwait
 * once run() has returned). */
static void watch_second_signal(const sigset_t *set)
{
    static sigset_t watched;
    pthread_t t;

    watched = *set;
    if (pthread_create(&t, NULL, second_signal, &watched) == 0)
        pthread_detach(t);
}

/* Everything run() starts; stopped in reverse order by app_stop(). */
struct app {
    struct registry *reg;
    struct cluster *cluster; /* the replica's share of the budget */
    bool cluster_failing;    /* housekeeping thread only: log changes */
    struct metrics *metrics;
    struct handlers *handlers;
    struct http_server *srv;
    struct tenants *tenants; /* keys, rate limits: watched by the registry */
    const char *route_names[METRICS_MAX_ROUTES]; /* borrowed by metrics */
    struct catalog_lifecycle lifecycle; /* read by the housekeeping thread */
    struct service_scope scope; /* the partitions, for the commit's dedupe */
};

/* ---- the data lifecycle (docs/data-lifecycle.md) ------------------------ */

#define LIFECYCLE_ZONE_MAX_S 60.0
#define LIFECYCLE_INTERVAL_MAX_NS (3600 * NS_PER_S)

/* A partition lasts a day or twice the dedupe window if longer (so the
 * window reaches back one partition at most, and in the second half of a
 * partition not at all: the commit's fast path); the zone around a boundary
 * is a minute, or a quarter of a (compressed) partition; the maintenance
 * runs hourly, or four times a partition when they are shorter. */
static uint64_t lifecycle_from(const struct poold_config *cfg,
                               struct catalog_lifecycle *lc)
{
    long long day = cfg->lifecycle_day_s;
    uint64_t interval;

    lc->window_s = cfg->dedupe_window_s;
    lc->period_s = 2 * lc->window_s > day ? 2 * lc->window_s : day;
    lc->retention_s = (long long)cfg->retention_days * day;
    lc->audit_retention_s = (long long)cfg->audit_retention_days * day;
    lc->zone_s = (double)lc->period_s / 4.0;
    if (lc->zone_s > LIFECYCLE_ZONE_MAX_S)
        lc->zone_s = LIFECYCLE_ZONE_MAX_S;
    interval = (uint64_t)lc->period_s * NS_PER_S / 4;
    return interval < LIFECYCLE_INTERVAL_MAX_NS ? interval
                                                : LIFECYCLE_INTERVAL_MAX_NS;
}

/* registry_config.lifecycle: one maintenance round, logged when it changed
 * something; then the partitions, for the commit's dedupe check. */
static int lifecycle_run(void *arg, struct db_conn *conn, char *err,
                         size_t errlen)
{
    struct app *a = arg;
    const struct catalog_lifecycle *lc = &a->lifecycle;
    int64_t lo[SERVICE_SCOPE_PARTS], hi[SERVICE_SCOPE_PARTS];
    size_t n = 0;
    int created = 0, dropped = 0;
    long long pruned = 0;
    char c[16], d[16], p[24];
    char perr[256];
    int rc =
        catalog_lifecycle_maintain(conn, lc, &created, &dropped, err, errlen);
    /* The bounds are read also after a failed round (a lock it gave up
     * on): those made earlier still spare the INSERTs the careful path. */
    int prc = catalog_lifecycle_partitions(conn, lo, hi, SERVICE_SCOPE_PARTS,
                                           &n, perr, sizeof perr);

    if (prc == POOLD_OK)
        service_scope_set(&a->scope, lc->window_s, lc->zone_s, lo, hi, n);
    else if (rc == POOLD_OK) {
        snprintf(err, errlen, "%s", perr);
        rc = prc;
    }

    if (rc == POOLD_OK && (created > 0 || dropped > 0)) {
        snprintf(c, sizeof c, "%d", created);
        snprintf(d, sizeof d, "%d", dropped);
        log_event(LOG_INFO, "message partitions maintained", "created", c,
                  "dropped", d, (const char *)NULL);
    }
    if (rc == POOLD_OK)
        rc = catalog_audit_prune(conn, lc, &pruned, err, errlen);
    if (rc == POOLD_OK && pruned > 0) {
        snprintf(p, sizeof p, "%lld", pruned);
        log_event(LOG_INFO, "audit entries past their retention deleted",
                  "deleted", p, (const char *)NULL);
    }
    return rc;
}

/* ---- replicas: the cluster sees the registry's connection pool ---------- */

static unsigned app_conn_open(void *arg)
{
    return registry_conn_open(arg);
}

static unsigned app_conn_waiting(void *arg)
{
    return registry_conn_waiting(arg);
}

static void app_conn_set_cap(void *arg, unsigned cap)
{
    registry_set_conn_cap(arg, cap);
}

/* Housekeeping's hook: a heartbeat each round, the lease given up at the
 * end. Logs when heartbeats start or stop failing, not every second. */
static void app_cluster_hook(void *arg, struct db_conn *conn, bool stopping)
{
    struct app *a = arg;
    char err[256];

    if (stopping) {
        cluster_leave(a->cluster, conn);
        return;
    }
    bool failing = cluster_tick(a->cluster, conn, err, sizeof err) != POOLD_OK;
    if (failing && !a->cluster_failing)
        log_event(LOG_WARN, "cluster heartbeat failed", "replica",
                  cluster_id(a->cluster), "error", err, (const char *)NULL);
    else if (!failing && a->cluster_failing)
        log_event(LOG_INFO, "cluster heartbeat ok again", "replica",
                  cluster_id(a->cluster), (const char *)NULL);
    a->cluster_failing = failing;
}

/* Before registry_start(): with a budget, the replica holds no connection
 * until the lease table grants it a share. */
static int app_start_cluster(const struct poold_config *cfg, struct app *a)
{
    struct cluster_config cc = {
        .budget = cfg->cluster_max_conns,
        .local_max = cfg->db_max_conns,
        .local = {.open_conns = app_conn_open,
                  .waiting = app_conn_waiting,
                  .set_cap = app_conn_set_cap,
                  .arg = a->reg},
    };
    if (cluster_create(&cc, &a->cluster) != POOLD_OK)
        return POOLD_ERR_NOMEM;
    if (!cluster_enabled(a->cluster))
        return POOLD_OK;
    registry_set_conn_cap(a->reg, 0);
    registry_set_hk_hook(a->reg, app_cluster_hook, a);
    log_event(LOG_INFO, "cluster: joining", "replica", cluster_id(a->cluster),
              (const char *)NULL);
    return POOLD_OK;
}

static int app_start_handlers(const struct poold_config *cfg, struct app *a)
{
    struct handlers_config hc;

    for (size_t i = 0; i < handlers_nroutes && i < METRICS_MAX_ROUTES; i++)
        a->route_names[i] = handlers_routes[i].pattern;
    if (metrics_create(a->route_names, handlers_nroutes, &a->metrics) !=
        POOLD_OK)
        return POOLD_ERR_NOMEM;
    metrics_set_top_orgs(a->metrics, cfg->metrics_top_orgs);
    memset(&hc, 0, sizeof hc);
    hc.reg = a->reg;
    hc.metrics = a->metrics;
    hc.admin_token = cfg->admin_token;
    hc.cluster = a->cluster;
    hc.pool_ceiling = cfg->pool_ceiling;
    hc.retry_after_s = cfg->acquire_timeout_ms / 1000 + 1;
    hc.paused_retry_after_s = PAUSED_RETRY_AFTER_S;
    hc.max_batch = cfg->max_batch;
    hc.max_batch_bytes = cfg->max_batch_bytes;
    hc.read_token = cfg->read_token;
    hc.message_retention_s =
        (long long)cfg->retention_days * cfg->lifecycle_day_s;
    hc.client_keys = cfg->client_auth == CONFIG_CLIENT_AUTH_KEYS;
    hc.tenants = a->tenants;
    return handlers_create(&hc, &a->handlers);
}

static int app_start_http(const struct poold_config *cfg, struct app *a)
{
    struct http_server_config sc;
    char err[512] = "";

    memset(&sc, 0, sizeof sc);
    sc.addr = (const struct sockaddr *)&cfg->listen_addr;
    sc.addrlen = cfg->listen_addrlen;
    sc.ipv6 = cfg->listen_ipv6;
    sc.max_clients = cfg->max_clients;
    sc.client_timeout_s = cfg->client_timeout_s;
    sc.request_read_timeout_s = cfg->request_read_timeout_s;
    sc.max_body_bytes = cfg->max_body_bytes;
    sc.tls_cert_pem = cfg->tls_cert_pem;
    sc.tls_key_pem = cfg->tls_key_pem;
    int rc = http_server_start(&sc, a->handlers, a->metrics, &a->srv, err,
                               sizeof err);
    if (rc != POOLD_OK)
        log_event(LOG_ERROR, "cannot listen", "listen", cfg->listen, "error",
                  err, (const char *)NULL);
    return rc;
}

/* Start the registry (database may be down), handlers, then the server. */
static int app_start(const struct poold_config *cfg, struct app *a)
{
    struct registry_config rc;

    if (tenants_create(&a->tenants) != POOLD_OK)
        return POOLD_ERR_NOMEM;
    registry_config_from(cfg, &rc);
    rc.watch = tenants_watch;
    rc.watch_arg = a->tenants;
    rc.lifecycle_interval_ns = lifecycle_from(cfg, &a->lifecycle);
    rc.lifecycle = lifecycle_run;
    rc.lifecycle_arg = a;
    rc.scope = &a->scope;
    if (registry_create(&rc, &a->reg) != POOLD_OK ||
        app_start_cluster(cfg, a) != POOLD_OK ||
        registry_start(a->reg) != POOLD_OK) {
        log_event(LOG_ERROR, "cannot start the registry", (const char *)NULL);
        return POOLD_ERR_DB;
    }
    if (cluster_fence_start(a->cluster) != POOLD_OK ||
        app_start_handlers(cfg, a) != POOLD_OK)
        return POOLD_ERR_NOMEM;
    return app_start_http(cfg, a);
}

/* Stop what app_start() started, whatever it got to. Cannot fail. */
static void app_stop(struct app *a)
{
    if (a->srv != NULL) {
        registry_shutdown(a->reg);
        http_server_stop(a->srv);
    }
    if (a->reg != NULL)
        registry_shutdown(a->reg);
    cluster_fence_stop(a->cluster); /* before the pool it caps goes */
    registry_destroy(a->reg);       /* gives the cluster share back */
    cluster_destroy(a->cluster);
    handlers_destroy(a->handlers);
    metrics_destroy(a->metrics);
    tenants_destroy(a->tenants);
    service_scope_destroy(&a->scope);
}

static int run(const struct poold_config *cfg)
{
    struct app a = {0};
    sigset_t set;
    int sig = 0;

    block_signals(&set);
    service_scope_init(&a.scope);
    if (app_start(cfg, &a) != POOLD_OK) {
        app_stop(&a);
        return 1;
    }
    log_startup(cfg, http_server_port(a.srv));
    while (sigwait(&set, &sig) != 0)
        ;
    /* Readiness first: once the log says so, /readyz answers 503. */
    handlers_set_draining(a.handlers);
    log_event(LOG_INFO, "shutting down", "signal",
              sig == SIGTERM ? "SIGTERM" : "SIGINT", (const char *)NULL);
    watch_second_signal(&set);
    drain_and_stop(a.srv, a.handlers, a.reg);
    a.srv = NULL;
    app_stop(&a);
    log_event(LOG_INFO, "stopped", (const char *)NULL);
    return 0;
}

/* Connection threads come and go, and glibc gives threads up to 8 malloc
 * arenas per core: freed memory then sits in many arenas and the resident
 * size creeps up under a steady load while the heap in use stays flat
 * (bench/soak.sh showed it). Two arenas keep it flat; the per-thread
 * cache still serves most allocations without a lock. MALLOC_ARENA_MAX,
 * when set, is the operator's to choose. */
static void malloc_bound_arenas(void)
{
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 2);
}

int main(int argc, char **argv)
{
    struct poold_config cfg;
    char err[512] = "";
    int rc;

    switch (config_load(&cfg, argc, argv, NULL, NULL, err, sizeof err)) {
    case CONFIG_HELP:
        config_print_help(stdout);
        return 0;
    case CONFIG_VERSION:
        printf("poold %s\n", POOLD_VERSION);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "poold: %s\n", err);
        return EXIT_CONFIG;
    case CONFIG_OK:
        break;
    }
    malloc_bound_arenas();
    log_init(cfg.log_format, cfg.log_level);
    if (log_start(NULL) != POOLD_OK)
        log_event(LOG_WARN, "log writer thread not started; logging directly",
                  (const char *)NULL);
    json_object_seed(0);
    /* Whatever POOLD_LOG_LEVEL: without this line nobody has the token. */
    if (cfg.admin_token_generated)
        log_always(LOG_WARN, "POOLD_ADMIN_TOKEN is not set; generated one",
                   "admin_token", cfg.admin_token, (const char *)NULL);
    rc = run(&cfg);
    config_deinit(&cfg);
    log_stop(); /* every buffered line is out before the exit status */
    return rc;
}
