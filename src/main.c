/* main.c — poold: configuration, start-up, signal wait and graceful drain. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>

#include "clock.h"
#include "config.h"
#include "handlers.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "tenants.h"

#define EXIT_CONFIG 2
#define DRAIN_TIMEOUT_NS (10 * NS_PER_S)
#define DB_CONNECT_TIMEOUT_S 5
#define ORG_REFRESH_NS NS_PER_S

static void registry_config_from(const struct poold_config *cfg,
                                 struct registry_config *rc)
{
    memset(rc, 0, sizeof *rc);
    rc->db.url = cfg->database_url;
    rc->db.application_name = "poold";
    rc->db.connect_timeout_s = DB_CONNECT_TIMEOUT_S;
    rc->db.statement_timeout_ms = cfg->statement_timeout_ms;
    rc->pooled = cfg->pool_mode == CONFIG_POOL_MODE_POOLED;
    rc->default_size = cfg->pool_size;
    rc->ceiling = cfg->pool_ceiling;
    rc->max_waiters = cfg->max_waiting;
    rc->acquire_timeout_ns = (uint64_t)cfg->acquire_timeout_ms * NS_PER_MS;
    rc->db_max_conns = cfg->db_max_conns;
    rc->conn_ttl_ns = (uint64_t)cfg->conn_ttl_s * NS_PER_S;
    rc->conn_check_idle_ns = (uint64_t)cfg->conn_check_idle_ms * NS_PER_MS;
    rc->build_cost_ms = cfg->build_cost_ms;
    rc->process_cost_ms = cfg->process_cost_ms;
    rc->prewarm = cfg->prewarm;
    rc->refresh_interval_ns = ORG_REFRESH_NS;
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
    /* Wake anything still waiting on a pool, so the connection threads that
     * MHD_stop_daemon joins can finish. */
    registry_shutdown(reg);
    http_server_stop(srv);
}

/* Everything run() starts; stopped in reverse order by app_stop(). */
struct app {
    struct registry *reg;
    struct metrics *metrics;
    struct handlers *handlers;
    struct http_server *srv;
    struct tenants *tenants; /* keys, rate limits: watched by the registry */
    const char *route_names[METRICS_MAX_ROUTES]; /* borrowed by metrics */
};

static int app_start_handlers(const struct poold_config *cfg, struct app *a)
{
    struct handlers_config hc;

    for (size_t i = 0; i < handlers_nroutes && i < METRICS_MAX_ROUTES; i++)
        a->route_names[i] = handlers_routes[i].pattern;
    if (metrics_create(a->route_names, handlers_nroutes, &a->metrics) !=
        POOLD_OK)
        return POOLD_ERR_NOMEM;
    memset(&hc, 0, sizeof hc);
    hc.reg = a->reg;
    hc.metrics = a->metrics;
    hc.admin_token = cfg->admin_token;
    hc.pool_ceiling = cfg->pool_ceiling;
    hc.retry_after_s = cfg->acquire_timeout_ms / 1000 + 1;
    hc.read_token = cfg->read_token;
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
    if (registry_create(&rc, &a->reg) != POOLD_OK ||
        registry_start(a->reg) != POOLD_OK) {
        log_event(LOG_ERROR, "cannot start the registry", (const char *)NULL);
        return POOLD_ERR_DB;
    }
    if (app_start_handlers(cfg, a) != POOLD_OK)
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
    registry_destroy(a->reg);
    handlers_destroy(a->handlers);
    metrics_destroy(a->metrics);
    tenants_destroy(a->tenants);
}

static int run(const struct poold_config *cfg)
{
    struct app a = { 0 };
    sigset_t set;
    int sig = 0;

    block_signals(&set);
    if (app_start(cfg, &a) != POOLD_OK) {
        app_stop(&a);
        return 1;
    }
    log_startup(cfg, http_server_port(a.srv));
    while (sigwait(&set, &sig) != 0)
        ;
    log_event(LOG_INFO, "shutting down", "signal",
              sig == SIGTERM ? "SIGTERM" : "SIGINT", (const char *)NULL);
    drain_and_stop(a.srv, a.handlers, a.reg);
    a.srv = NULL;
    app_stop(&a);
    log_event(LOG_INFO, "stopped", (const char *)NULL);
    return 0;
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
    log_init(cfg.log_format, LOG_INFO);
    if (log_start(NULL) != POOLD_OK)
        log_event(LOG_WARN, "log writer thread not started; logging directly",
                  (const char *)NULL);
    json_object_seed(0);
    if (cfg.admin_token_generated)
        log_event(LOG_WARN, "POOLD_ADMIN_TOKEN is not set; generated one",
                  "admin_token", cfg.admin_token, (const char *)NULL);
    rc = run(&cfg);
    config_deinit(&cfg);
    log_stop(); /* every buffered line is out before the exit status */
    return rc;
}
