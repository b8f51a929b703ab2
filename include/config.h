/* config.h — poold's settings: a key table read from the environment and flags.
 */
#ifndef POOLD_CONFIG_H
#define POOLD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <sys/socket.h>

#include "log.h"
#include "status.h"

enum config_pool_mode { CONFIG_POOL_MODE_POOLED, CONFIG_POOL_MODE_NONE };
enum config_client_auth { CONFIG_CLIENT_AUTH_KEYS, CONFIG_CLIENT_AUTH_NONE };

/*
 * Every field is named like its variable (pool_size for POOLD_POOL_SIZE).
 * Strings are owned by the config and freed by config_deinit().
 */
struct poold_config {
    char *database_url;                  /* DATABASE_URL */
    char *listen;                        /* POOLD_LISTEN, as given: host:port */
    struct sockaddr_storage listen_addr; /* parsed from listen */
    socklen_t listen_addrlen;
    bool listen_ipv6;
    char *admin_token;             /* POOLD_ADMIN_TOKEN, or generated */
    bool admin_token_generated;    /* true: 64 hex chars from /dev/urandom */
    unsigned pool_size;            /* POOLD_POOL_SIZE, <= pool_ceiling */
    unsigned pool_ceiling;         /* POOLD_POOL_CEILING */
    unsigned acquire_timeout_ms;   /* POOLD_ACQUIRE_TIMEOUT_MS */
    unsigned max_waiting;          /* POOLD_MAX_WAITING */
    unsigned db_max_conns;         /* POOLD_DB_MAX_CONNS */
    unsigned conn_ttl_s;           /* POOLD_CONN_TTL_S */
    unsigned conn_check_idle_ms;   /* POOLD_CONN_CHECK_IDLE_MS */
    unsigned statement_timeout_ms; /* POOLD_STATEMENT_TIMEOUT_MS, 0: none */
    char *prewarm;             /* POOLD_PREWARM: "all", a comma list or "" */
    unsigned max_body_bytes;   /* POOLD_MAX_BODY_BYTES */
    unsigned max_clients;      /* POOLD_MAX_CLIENTS */
    unsigned client_timeout_s; /* POOLD_CLIENT_TIMEOUT_S */
    enum config_pool_mode pool_mode; /* POOLD_POOL_MODE */
    double build_cost_ms;            /* POOLD_BUILD_COST_MS */
    double process_cost_ms;          /* POOLD_PROCESS_COST_MS */
    enum log_format log_format;      /* POOLD_LOG_FORMAT */
    enum log_level log_level;        /* POOLD_LOG_LEVEL */
    unsigned hold_warn_ms;           /* POOLD_HOLD_WARN_MS, 0: off */
    unsigned metrics_top_orgs;       /* POOLD_METRICS_TOP_ORGS, 0: all */
    bool prepared_statements;        /* POOLD_PREPARED_STATEMENTS */
    unsigned db_min_idle;            /* POOLD_DB_MIN_IDLE, as given (the
                                        registry clamps it to the cap) */
    unsigned max_batch;              /* POOLD_MAX_BATCH */
    unsigned max_batch_bytes;        /* POOLD_MAX_BATCH_BYTES */
    unsigned request_read_timeout_s; /* POOLD_REQUEST_READ_TIMEOUT_S */
    char *tls_cert;     /* POOLD_TLS_CERT: PEM file path, NULL: plain HTTP */
    char *tls_key;      /* POOLD_TLS_KEY: PEM file path, NULL with tls_cert */
    char *tls_cert_pem; /* the files' contents, read by config_load() */
    char *tls_key_pem;
    enum config_client_auth client_auth; /* POOLD_CLIENT_AUTH */
    char *read_token;                    /* POOLD_READ_TOKEN, NULL: none */
    unsigned cluster_max_conns;    /* POOLD_CLUSTER_MAX_CONNS, 0: standalone */
    unsigned retention_days;       /* POOLD_RETENTION_DAYS, 0: forever */
    unsigned dedupe_window_s;      /* POOLD_DEDUPE_WINDOW_S, <= the retention */
    unsigned audit_retention_days; /* POOLD_AUDIT_RETENTION_DAYS, 0: forever */
    unsigned lifecycle_day_s;      /* POOLD_LIFECYCLE_DAY_S (tests: 86400) */
};

enum config_result {
    CONFIG_OK,      /* run */
    CONFIG_HELP,    /* --help was given: print config_print_help(), exit 0 */
    CONFIG_VERSION, /* --version was given: print the version, exit 0 */
    CONFIG_ERROR,   /* err names the setting: exit 2 */
};

/* Look a variable up; returns NULL when unset. The result is borrowed. */
typedef const char *(*config_getenv_fn)(void *arg, const char *name);

/*
 * Fill cfg from defaults, then the environment (getenv_fn, NULL: getenv()),
 * then argv[1..argc-1] (--flag value or --flag=value; flags win). Generates
 * an admin token when none is set; reads the TLS files (both or neither). On
 * CONFIG_ERROR err holds a message that names the setting; cfg is left empty.
 * On CONFIG_OK the caller frees cfg with config_deinit(); on HELP/VERSION cfg
 * holds nothing to free.
 */
POOLD_MUSTCHECK enum config_result config_load(struct poold_config *cfg,
                                               int argc, char **argv,
                                               config_getenv_fn getenv_fn,
                                               void *getenv_arg, char *err,
                                               size_t errlen);

/* Free the strings; accepts a zeroed or already freed config. */
void config_deinit(struct poold_config *cfg);

/* Every setting: flag, variable, default and a line of meaning. */
void config_print_help(FILE *out);

/* Parse "host:port" ("1.2.3.4:80", "[::1]:80", port 0 = any free port). */
POOLD_MUSTCHECK bool config_parse_listen(const char *s,
                                         struct sockaddr_storage *addr,
                                         socklen_t *addrlen, bool *ipv6);

#endif
