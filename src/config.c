/* config.c — settings from a key table: defaults, environment, then flags. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_TOKEN_BYTES 32
#define ADMIN_TOKEN_MAX 256

struct config_key;
typedef bool (*config_parse_fn)(const struct config_key *key, const char *val,
                                struct poold_config *cfg, char *err,
                                size_t errlen);

struct config_key {
    const char *env;  /* variable name */
    const char *flag; /* long option without "--" */
    const char *def;  /* default, parsed like any value; NULL: unset */
    config_parse_fn parse;
    size_t offset;   /* of the field in struct poold_config */
    double min, max; /* for numbers */
    const char *help;
};

#define FIELD(f) offsetof(struct poold_config, f)

static bool parse_string(const struct config_key *, const char *,
                         struct poold_config *, char *, size_t);
static bool parse_unsigned(const struct config_key *, const char *,
                           struct poold_config *, char *, size_t);
static bool parse_double(const struct config_key *, const char *,
                         struct poold_config *, char *, size_t);
static bool parse_listen(const struct config_key *, const char *,
                         struct poold_config *, char *, size_t);
static bool parse_token(const struct config_key *, const char *,
                        struct poold_config *, char *, size_t);
static bool parse_prewarm(const struct config_key *, const char *,
                          struct poold_config *, char *, size_t);
static bool parse_choice(const struct config_key *, const char *,
                         struct poold_config *, char *, size_t);
static bool parse_path(const struct config_key *, const char *,
                       struct poold_config *, char *, size_t);
static bool parse_read_token(const struct config_key *, const char *,
                             struct poold_config *, char *, size_t);

static const struct config_key config_keys[] = {
    {"DATABASE_URL", "database-url", "postgresql:///pools", parse_string,
     FIELD(database_url), 0, 0, "libpq connection string or URI"},
    {"POOLD_LISTEN", "listen", "0.0.0.0:8080", parse_listen, FIELD(listen), 0,
     0, "address:port to serve HTTP on (IPv4, or [IPv6]; port 0: any)"},
    {"POOLD_ADMIN_TOKEN", "admin-token", NULL, parse_token, FIELD(admin_token),
     0, 0, "bearer token for admin endpoints (unset: generated, logged once)"},
    {"POOLD_POOL_SIZE", "pool-size", "4", parse_unsigned, FIELD(pool_size), 1,
     4096, "default max_size of an org's service pool"},
    {"POOLD_POOL_CEILING", "pool-ceiling", "256", parse_unsigned,
     FIELD(pool_ceiling), 1, 4096, "largest pool size PUT accepts"},
    {"POOLD_ACQUIRE_TIMEOUT_MS", "acquire-timeout-ms", "5000", parse_unsigned,
     FIELD(acquire_timeout_ms), 0, 600000,
     "wait for a pooled service before answering 503"},
    {"POOLD_MAX_WAITING", "max-waiting", "64", parse_unsigned,
     FIELD(max_waiting), 0, 100000, "waiters per org before an immediate 503"},
    {"POOLD_DB_MAX_CONNS", "db-max-conns", "32", parse_unsigned,
     FIELD(db_max_conns), 1, 10000,
     "open PostgreSQL connections at most, all orgs together"},
    {"POOLD_CONN_TTL_S", "conn-ttl-s", "300", parse_unsigned, FIELD(conn_ttl_s),
     0, 2592000, "recycle a connection older than this, jittered (0: never)"},
    {"POOLD_CONN_CHECK_IDLE_MS", "conn-check-idle-ms", "1000", parse_unsigned,
     FIELD(conn_check_idle_ms), 0, 3600000,
     "liveness-check a connection idle longer than this"},
    {"POOLD_STATEMENT_TIMEOUT_MS", "statement-timeout-ms", "5000",
     parse_unsigned, FIELD(statement_timeout_ms), 0, 600000,
     "cancel a query or a lock wait after this long (0: server defaults)"},
    {"POOLD_PREWARM", "prewarm", "", parse_prewarm, FIELD(prewarm), 0, 0,
     "orgs to build at start-up: all, a comma list, or empty"},
    {"POOLD_MAX_BODY_BYTES", "max-body-bytes", "65536", parse_unsigned,
     FIELD(max_body_bytes), 1, 67108864, "request body limit in bytes"},
    {"POOLD_MAX_CLIENTS", "max-clients", "1024", parse_unsigned,
     FIELD(max_clients), 1, 16384,
     "HTTP connections held at once (one thread each)"},
    {"POOLD_CLIENT_TIMEOUT_S", "client-timeout-s", "30", parse_unsigned,
     FIELD(client_timeout_s), 1, 3600,
     "close a client connection idle this long"},
    {"POOLD_POOL_MODE", "pool-mode", "pooled", parse_choice, FIELD(pool_mode),
     0, 0, "pooled, or none: build a service per request and close it after"},
    {"POOLD_BUILD_COST_MS", "build-cost-ms", "0", parse_double,
     FIELD(build_cost_ms), 0, 60000,
     "extra simulated cost of building a service (fractions allowed)"},
    {"POOLD_PROCESS_COST_MS", "process-cost-ms", "0", parse_double,
     FIELD(process_cost_ms), 0, 60000,
     "extra simulated cost of processing a message (fractions allowed)"},
    {"POOLD_LOG_FORMAT", "log-format", "text", parse_choice, FIELD(log_format),
     0, 0, "json or text"},
    {"POOLD_LOG_LEVEL", "log-level", "info", parse_choice, FIELD(log_level), 0,
     0,
     "debug, info, warn or error: the lowest level logged (warn: no line "
     "for a request answered below 500)"},
    {"POOLD_HOLD_WARN_MS", "hold-warn-ms", "10000", parse_unsigned,
     FIELD(hold_warn_ms), 0, 86400000,
     "log and count a service lent longer than this, once (0: off)"},
    {"POOLD_METRICS_TOP_ORGS", "metrics-top-orgs", "100", parse_unsigned,
     FIELD(metrics_top_orgs), 0, 100000,
     "per-org metric series for the busiest N orgs; the rest summed as "
     "org=\"_other\" (0: every org)"},
    {"POOLD_PREPARED_STATEMENTS", "prepared-statements", "on", parse_choice,
     FIELD(prepared_statements), 0, 0,
     "on: named statements prepared once per connection; off: unnamed "
     "(PgBouncer transaction mode before 1.21)"},
    {"POOLD_DB_MIN_IDLE", "db-min-idle", "4", parse_unsigned,
     FIELD(db_min_idle), 0, 10000,
     "connections kept open and idle, opened at start-up and topped up in "
     "the background (clamped to POOLD_DB_MAX_CONNS)"},
    {"POOLD_MAX_BATCH", "max-batch", "1000", parse_unsigned, FIELD(max_batch),
     1, 100000, "messages per POST /process/batch"},
    {"POOLD_MAX_BATCH_BYTES", "max-batch-bytes", "4194304", parse_unsigned,
     FIELD(max_batch_bytes), 1, 268435456,
     "body limit of POST /process/batch in bytes"},
    {"POOLD_REQUEST_READ_TIMEOUT_S", "request-read-timeout-s", "10",
     parse_unsigned, FIELD(request_read_timeout_s), 1, 3600,
     "close a connection whose request (headers and body) is not read this "
     "long after it began"},
    {"POOLD_TLS_CERT", "tls-cert", NULL, parse_path, FIELD(tls_cert), 0, 0,
     "PEM certificate (chain) file: serve HTTPS (with POOLD_TLS_KEY)"},
    {"POOLD_TLS_KEY", "tls-key", NULL, parse_path, FIELD(tls_key), 0, 0,
     "PEM private key file of POOLD_TLS_CERT"},
    {"POOLD_CLIENT_AUTH", "client-auth", "keys", parse_choice,
     FIELD(client_auth), 0, 0,
     "keys: POST /process* needs an org API key; none: no client auth"},
    {"POOLD_READ_TOKEN", "read-token", NULL, parse_read_token,
     FIELD(read_token), 0, 0,
     "bearer token for the read-only admin endpoints (GETs); unset: none"},
    {"POOLD_CLUSTER_MAX_CONNS", "cluster-max-conns", "0", parse_unsigned,
     FIELD(cluster_max_conns), 0, 100000,
     "connections all replicas sharing the database may hold together "
     "(0: standalone)"},
    {"POOLD_RETENTION_DAYS", "retention-days", "30", parse_unsigned,
     FIELD(retention_days), 0, 36500,
     "processed rows older than this are dropped, a time partition at a "
     "time (0: kept forever)"},
    {"POOLD_DEDUPE_WINDOW_S", "dedupe-window-s", "604800", parse_unsigned,
     FIELD(dedupe_window_s), 1, 3153600000U,
     "a message id seen this recently is always a duplicate or an "
     "id_conflict (at most the retention)"},
    {"POOLD_AUDIT_RETENTION_DAYS", "audit-retention-days", "365",
     parse_unsigned, FIELD(audit_retention_days), 0, 36500,
     "audit entries older than this are deleted, at start-up and hourly "
     "(0: kept forever)"},
    {"POOLD_LIFECYCLE_DAY_S", "lifecycle-day-s", "86400", parse_unsigned,
     FIELD(lifecycle_day_s), 10, 86400,
     "test setting (compressed time): the seconds of one retention day, "
     "also the shortest partition"},
};

#define NKEYS (sizeof config_keys / sizeof config_keys[0])

static void *field(struct poold_config *cfg, const struct config_key *key)
{
    return (char *)cfg + key->offset;
}

static bool fail(const struct config_key *key, const char *val, char *err,
                 size_t errlen, const char *why)
{
    snprintf(err, errlen, "invalid %s (--%s) '%.64s': %s", key->env, key->flag,
             val, why);
    return false;
}

static bool replace_string(char **dst, const char *val)
{
    char *copy = strdup(val);
    if (copy == NULL)
        return false;
    free(*dst);
    *dst = copy;
    return true;
}

static bool parse_string(const struct config_key *key, const char *val,
                         struct poold_config *cfg, char *err, size_t errlen)
{
    if (!replace_string(field(cfg, key), val))
        return fail(key, val, err, errlen, "out of memory");
    return true;
}

static bool parse_unsigned(const struct config_key *key, const char *val,
                           struct poold_config *cfg, char *err, size_t errlen)
{
    char *end = NULL;
    long long n;
    char why[96];

    errno = 0;
    n = strtoll(val, &end, 10);
    if (end == val || *end != '\0' || isspace((unsigned char)*val))
        return fail(key, val, err, errlen, "not an integer");
    if (errno == ERANGE)
        n = LLONG_MAX; /* reported as out of range below */
    if (n < (long long)key->min || n > (long long)key->max) {
        snprintf(why, sizeof why, "out of range %.0f..%.0f", key->min,
                 key->max);
        return fail(key, val, err, errlen, why);
    }
    *(unsigned *)field(cfg, key) = (unsigned)n;
    return true;
}

static bool parse_double(const struct config_key *key, const char *val,
                         struct poold_config *cfg, char *err, size_t errlen)
{
    char *end = NULL;
    double d;
    char why[96];

    errno = 0;
    d = strtod(val, &end);
    if (end == val || *end != '\0' || errno != 0 || !isfinite(d) ||
        isspace((unsigned char)*val))
        return fail(key, val, err, errlen, "not a number");
    if (d < key->min || d > key->max) {
        snprintf(why, sizeof why, "out of range %g..%g", key->min, key->max);
        return fail(key, val, err, errlen, why);
    }
    *(double *)field(cfg, key) = d;
    return true;
}

static bool parse_port(const char *s, unsigned *port)
{
    char *end = NULL;
    long n;

    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    n = strtol(s, &end, 10);
    if (*end != '\0' || errno != 0 || n < 0 || n > 65535)
        return false;
    *port = (unsigned)n;
    return true;
}

bool config_parse_listen(const char *s, struct sockaddr_storage *addr,
                         socklen_t *addrlen, bool *ipv6)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    size_t hlen;
    unsigned port;

    if (colon == NULL || !parse_port(colon + 1, &port))
        return false;
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= sizeof host)
        return false;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(addr, 0, sizeof *addr);
    if (host[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
        if (hlen < 3 || host[hlen - 1] != ']')
            return false;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return false;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *addrlen = sizeof *a6;
        *ipv6 = true;
        return true;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return false;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *addrlen = sizeof *a4;
    *ipv6 = false;
    return true;
}

static bool parse_listen(const struct config_key *key, const char *val,
                         struct poold_config *cfg, char *err, size_t errlen)
{
    if (!config_parse_listen(val, &cfg->listen_addr, &cfg->listen_addrlen,
                             &cfg->listen_ipv6))
        return fail(key, val, err, errlen,
                    "expected IPv4:port or [IPv6]:port, port 0..65535");
    return parse_string(key, val, cfg, err, errlen);
}

/* A token travels in a header: visible ASCII only, bounded. */
static bool parse_token(const struct config_key *key, const char *val,
                        struct poold_config *cfg, char *err, size_t errlen)
{
    size_t n = strlen(val);

    if (n == 0) { /* empty means unset: generate one */
        free(cfg->admin_token);
        cfg->admin_token = NULL;
        return true;
    }
    if (n > ADMIN_TOKEN_MAX)
        return fail(key, "(hidden)", err, errlen, "longer than 256 bytes");
    for (size_t i = 0; i < n; i++)
        if (val[i] <= 0x20 || val[i] >= 0x7f)
            return fail(key, "(hidden)", err, errlen,
                        "only visible ASCII characters are allowed");
    return parse_string(key, val, cfg, err, errlen);
}

static bool org_id_chars_ok(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static bool parse_prewarm(const struct config_key *key, const char *val,
                          struct poold_config *cfg, char *err, size_t errlen)
{
    if (*val != '\0' && strcmp(val, "all") != 0) {
        for (const char *p = val;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (!org_id_chars_ok(p, len))
                return fail(key, val, err, errlen,
                            "expected all, or a comma list of org ids");
            if (comma == NULL)
                break;
            p = comma + 1;
        }
    }
    return parse_string(key, val, cfg, err, errlen);
}

/* The settings that are one of a few words, and the value each word gives
 * its field (of the type parse_choice's switch names). */
#define CHOICES_MAX 4
static const struct config_choice {
    size_t offset;                 /* FIELD() */
    const char *word[CHOICES_MAX]; /* NULL after the last */
    int value[CHOICES_MAX];
} config_choices[] = {
    {FIELD(pool_mode),
     {"pooled", "none"},
     {CONFIG_POOL_MODE_POOLED, CONFIG_POOL_MODE_NONE}},
    {FIELD(log_format), {"json", "text"}, {LOG_FORMAT_JSON, LOG_FORMAT_TEXT}},
    {FIELD(log_level),
     {"debug", "info", "warn", "error"},
     {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR}},
    {FIELD(prepared_statements), {"on", "off"}, {true, false}},
    {FIELD(client_auth),
     {"keys", "none"},
     {CONFIG_CLIENT_AUTH_KEYS, CONFIG_CLIENT_AUTH_NONE}},
};

static bool parse_choice(const struct config_key *key, const char *val,
                         struct poold_config *cfg, char *err, size_t errlen)
{
    const struct config_choice *c = config_choices;
    char why[96];
    size_t i, n, o;
    int v;

    while (c->offset != key->offset)
        if (++c == config_choices + sizeof config_choices / sizeof *c)
            abort(); /* a key table row without its choice row */
    for (n = 0; n < CHOICES_MAX && c->word[n] != NULL; n++)
        ;
    for (i = 0; i < n && strcmp(val, c->word[i]) != 0; i++)
        ;
    if (i == n) { /* "expected a, b or c" */
        o = 0;
        for (size_t k = 0; k < n && o < sizeof why; k++)
            o += (size_t)snprintf(why + o, sizeof why - o, "%s%s",
                                  k == 0      ? "expected "
                                  : k + 1 < n ? ", "
                                              : " or ",
                                  c->word[k]);
        return fail(key, val, err, errlen, why);
    }
    v = c->value[i];
    switch (key->offset) {
    case FIELD(pool_mode):
        cfg->pool_mode = (enum config_pool_mode)v;
        break;
    case FIELD(log_format):
        cfg->log_format = (enum log_format)v;
        break;
    case FIELD(log_level):
        cfg->log_level = (enum log_level)v;
        break;
    case FIELD(client_auth):
        cfg->client_auth = (enum config_client_auth)v;
        break;
    default: /* an on/off setting */
        *(bool *)field(cfg, key) = v != 0;
    }
    return true;
}

/* A file path; empty means unset. */
static bool parse_path(const struct config_key *key, const char *val,
                       struct poold_config *cfg, char *err, size_t errlen)
{
    char **dst = field(cfg, key);

    if (*val == '\0') {
        free(*dst);
        *dst = NULL;
        return true;
    }
    return parse_string(key, val, cfg, err, errlen);
}

#define TLS_FILE_MAX (1024 * 1024)

/* The whole of a PEM file, NUL-terminated; NULL with err naming env. */
static char *pem_read(const char *env, const char *path, char *err,
                      size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;

    if (f == NULL) {
        snprintf(err, errlen, "invalid %s '%.200s': %s", env, path,
                 strerror(errno));
        return NULL;
    }
    buf = malloc(TLS_FILE_MAX + 1);
    if (buf != NULL) {
        n = fread(buf, 1, TLS_FILE_MAX + 1, f);
        buf[n <= TLS_FILE_MAX ? n : TLS_FILE_MAX] = '\0';
    }
    if (buf == NULL || ferror(f) || n > TLS_FILE_MAX ||
        strstr(buf, "-----BEGIN ") == NULL) {
        snprintf(err, errlen, "invalid %s '%.200s': %s", env, path,
                 buf == NULL        ? "out of memory"
                 : ferror(f)        ? "cannot be read"
                 : n > TLS_FILE_MAX ? "larger than 1 MiB"
                                    : "not a PEM file");
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    return buf;
}

/* POOLD_TLS_CERT and POOLD_TLS_KEY: both or neither, both readable. */
static bool tls_load(struct poold_config *cfg, char *err, size_t errlen)
{
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        snprintf(err, errlen, "%s is set but %s is not: set both for HTTPS",
                 cfg->tls_cert ? "POOLD_TLS_CERT" : "POOLD_TLS_KEY",
                 cfg->tls_cert ? "POOLD_TLS_KEY" : "POOLD_TLS_CERT");
        return false;
    }
    if (cfg->tls_cert == NULL)
        return true;
    cfg->tls_cert_pem = pem_read("POOLD_TLS_CERT", cfg->tls_cert, err, errlen);
    if (cfg->tls_cert_pem == NULL)
        return false;
    cfg->tls_key_pem = pem_read("POOLD_TLS_KEY", cfg->tls_key, err, errlen);
    return cfg->tls_key_pem != NULL;
}

static const struct config_key *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(config_keys[i].flag) == len &&
            memcmp(config_keys[i].flag, name, len) == 0)
            return &config_keys[i];
    return NULL;
}

static const char *default_getenv(void *arg, const char *name)
{
    (void)arg;
    return getenv(name);
}

static bool apply_defaults_and_env(struct poold_config *cfg,
                                   config_getenv_fn getenv_fn, void *arg,
                                   char *err, size_t errlen)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        const char *v;
        if (k->def != NULL && !k->parse(k, k->def, cfg, err, errlen))
            return false; /* a default that does not parse is a bug */
        v = getenv_fn(arg, k->env);
        if (v != NULL && !k->parse(k, v, cfg, err, errlen))
            return false;
    }
    return true;
}

/* Returns CONFIG_OK after applying every flag, or HELP/VERSION/ERROR. */
static enum config_result apply_flags(struct poold_config *cfg, int argc,
                                      char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq, *name, *val;
        const struct config_key *k;
        size_t nlen;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return CONFIG_HELP;
        if (strcmp(a, "--version") == 0)
            return CONFIG_VERSION;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            snprintf(err, errlen, "unexpected argument '%.64s' (see --help)",
                     a);
            return CONFIG_ERROR;
        }
        name = a + 2;
        eq = strchr(name, '=');
        nlen = eq ? (size_t)(eq - name) : strlen(name);
        k = find_flag(name, nlen);
        if (k == NULL) {
            snprintf(err, errlen, "unknown option '%.64s' (see --help)", a);
            return CONFIG_ERROR;
        }
        if (eq != NULL) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "option --%s (%s) needs a value", k->flag,
                     k->env);
            return CONFIG_ERROR;
        }
        if (!k->parse(k, val, cfg, err, errlen))
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

static bool generate_token(struct poold_config *cfg, char *err, size_t errlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[ADMIN_TOKEN_BYTES];
    char *tok;
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    while (fd >= 0 && got < sizeof raw) {
        ssize_t n = read(fd, raw + got, sizeof raw - got);
        if (n <= 0 && errno != EINTR)
            break;
        if (n > 0)
            got += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    tok = malloc(2 * sizeof raw + 1);
    if (got < sizeof raw || tok == NULL) {
        free(tok);
        snprintf(err, errlen,
                 "POOLD_ADMIN_TOKEN unset and no token could "
                 "be generated from /dev/urandom");
        return false;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        tok[2 * i] = hex[raw[i] >> 4];
        tok[2 * i + 1] = hex[raw[i] & 0xf];
    }
    tok[2 * sizeof raw] = '\0';
    cfg->admin_token = tok;
    cfg->admin_token_generated = true;
    return true;
}

enum config_result config_load(struct poold_config *cfg, int argc, char **argv,
                               config_getenv_fn getenv_fn, void *getenv_arg,
                               char *err, size_t errlen)
{
    enum config_result r;

    memset(cfg, 0, sizeof *cfg);
    if (!apply_defaults_and_env(cfg, getenv_fn ? getenv_fn : default_getenv,
                                getenv_arg, err, errlen)) {
        r = CONFIG_ERROR;
        goto out;
    }
    r = apply_flags(cfg, argc, argv, err, errlen);
    if (r != CONFIG_OK)
        goto out;
    if (cfg->pool_size > cfg->pool_ceiling) {
        snprintf(err, errlen,
                 "invalid POOLD_POOL_SIZE (--pool-size) %u: larger than "
                 "POOLD_POOL_CEILING (--pool-ceiling) %u",
                 cfg->pool_size, cfg->pool_ceiling);
        r = CONFIG_ERROR;
        goto out;
    }
    if (cfg->retention_days > 0 &&
        (double)cfg->dedupe_window_s >
            (double)cfg->retention_days * cfg->lifecycle_day_s) {
        snprintf(err, errlen,
                 "invalid POOLD_DEDUPE_WINDOW_S (--dedupe-window-s) %u: "
                 "longer than POOLD_RETENTION_DAYS (--retention-days) %u",
                 cfg->dedupe_window_s, cfg->retention_days);
        r = CONFIG_ERROR;
        goto out;
    }
    if (!tls_load(cfg, err, errlen) ||
        (cfg->admin_token == NULL && !generate_token(cfg, err, errlen)))
        r = CONFIG_ERROR;
out:
    if (r != CONFIG_OK)
        config_deinit(cfg);
    return r;
}

/* As the admin token, but empty means none (nothing is generated). */
static bool parse_read_token(const struct config_key *key, const char *val,
                             struct poold_config *cfg, char *err, size_t errlen)
{
    size_t n = strlen(val);

    if (n == 0) {
        free(cfg->read_token);
        cfg->read_token = NULL;
        return true;
    }
    if (n > ADMIN_TOKEN_MAX)
        return fail(key, "(hidden)", err, errlen, "longer than 256 bytes");
    for (size_t i = 0; i < n; i++)
        if (val[i] <= 0x20 || val[i] >= 0x7f)
            return fail(key, "(hidden)", err, errlen,
                        "only visible ASCII characters are allowed");
    return parse_string(key, val, cfg, err, errlen);
}

void config_deinit(struct poold_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->database_url);
    free(cfg->listen);
    free(cfg->admin_token);
    free(cfg->prewarm);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_cert_pem);
    if (cfg->tls_key_pem != NULL) /* a private key: leave no copy behind */
        explicit_bzero(cfg->tls_key_pem, strlen(cfg->tls_key_pem));
    free(cfg->tls_key_pem);
    free(cfg->read_token);
    memset(cfg, 0, sizeof *cfg);
}

void config_print_help(FILE *out)
{
    fprintf(out, "usage: poold [--help] [--version] [--flag value | "
                 "--flag=value]...\n\n"
                 "Every setting is read from its environment variable and "
                 "from its flag;\nflags win.\n\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        fprintf(out, "  --%-20s %-26s default: %s\n      %s\n", k->flag, k->env,
                k->def ? (*k->def ? k->def : "(empty)") : "(unset)", k->help);
    }
}
