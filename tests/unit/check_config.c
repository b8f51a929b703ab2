/* check_config.c — config.c: defaults, environment, flags, validation. */
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* A fake environment: NULL-terminated "NAME=value" strings. */
static const char *fake_getenv(void *arg, const char *name)
{
    const char *const *env = arg;
    size_t n = strlen(name);

    for (; env && *env; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

static enum config_result load(struct poold_config *cfg, const char **env,
                               int argc, const char **argv, char *err)
{
    return config_load(cfg, argc, (char **)argv, fake_getenv, (void *)env, err,
                       256);
}

START_TEST(defaults_match_the_design)
{
    struct poold_config c;
    char err[256];
    const char *argv[] = {"poold"};

    ck_assert_int_eq(load(&c, NULL, 1, argv, err), CONFIG_OK);
    ck_assert_str_eq(c.database_url, "postgresql:///pools");
    ck_assert_str_eq(c.listen, "0.0.0.0:8080");
    ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&c.listen_addr)->sin_port),
                      8080);
    ck_assert(c.admin_token_generated);
    ck_assert_uint_eq(strlen(c.admin_token), 64);
    ck_assert_int_eq(c.client_auth, CONFIG_CLIENT_AUTH_KEYS);
    ck_assert_ptr_null(c.read_token);
    ck_assert_uint_eq(c.pool_size, 4);
    ck_assert_uint_eq(c.pool_ceiling, 256);
    ck_assert_uint_eq(c.acquire_timeout_ms, 5000);
    ck_assert_uint_eq(c.max_waiting, 64);
    ck_assert_uint_eq(c.db_max_conns, 32);
    ck_assert_uint_eq(c.conn_ttl_s, 300);
    ck_assert_uint_eq(c.conn_check_idle_ms, 1000);
    ck_assert_str_eq(c.prewarm, "");
    ck_assert_uint_eq(c.max_body_bytes, 65536);
    ck_assert_uint_eq(c.max_clients, 1024);
    ck_assert_uint_eq(c.client_timeout_s, 30);
    ck_assert_int_eq(c.pool_mode, CONFIG_POOL_MODE_POOLED);
    ck_assert(c.build_cost_ms == 0 && c.process_cost_ms == 0);
    ck_assert_int_eq(c.log_format, LOG_FORMAT_TEXT);
    ck_assert_int_eq(c.log_level, LOG_INFO);
    ck_assert_uint_eq(c.audit_retention_days, 365);
    ck_assert_uint_eq(c.request_read_timeout_s, 10);
    ck_assert_ptr_null(c.tls_cert);
    ck_assert_ptr_null(c.tls_key_pem);
    config_deinit(&c);
}
END_TEST

START_TEST(env_then_flags_win)
{
    struct poold_config c;
    char err[256];
    const char *env[] = {
        "POOLD_POOL_SIZE=8",         "POOLD_ADMIN_TOKEN=envtok",
        "POOLD_LOG_FORMAT=json",     "DATABASE_URL=host=x",
        "POOLD_PROCESS_COST_MS=0.5", NULL};
    const char *argv[] = {"poold",
                          "--pool-size",
                          "9",
                          "--admin-token=flag",
                          "--pool-mode=none",
                          "--listen",
                          "[::1]:0",
                          "--prewarm",
                          "org_001,org-2",
                          "--log-level=warn"};

    ck_assert_int_eq(load(&c, env, 10, argv, err), CONFIG_OK);
    ck_assert_int_eq(c.log_level, LOG_WARN);
    ck_assert_uint_eq(c.pool_size, 9);
    ck_assert_str_eq(c.admin_token, "flag");
    ck_assert(!c.admin_token_generated);
    ck_assert_int_eq(c.log_format, LOG_FORMAT_JSON);
    ck_assert_str_eq(c.database_url, "host=x");
    ck_assert(c.process_cost_ms == 0.5);
    ck_assert_int_eq(c.pool_mode, CONFIG_POOL_MODE_NONE);
    ck_assert(c.listen_ipv6);
    ck_assert_str_eq(c.prewarm, "org_001,org-2");
    config_deinit(&c);
}
END_TEST

/* Each invalid input must fail and name its setting. */
static const struct bad {
    const char *env;   /* NAME=value or NULL */
    const char *flag;  /* --flag=value or NULL */
    const char *names; /* expected in the message */
} bad_inputs[] = {
    {"POOLD_POOL_SIZE=abc", NULL, "POOLD_POOL_SIZE"},
    {"POOLD_POOL_SIZE=0", NULL, "POOLD_POOL_SIZE"},
    {"POOLD_POOL_SIZE= 4", NULL, "POOLD_POOL_SIZE"},
    {NULL, "--pool-size=4x", "--pool-size"},
    {NULL, "--pool-size=-1", "POOLD_POOL_SIZE"},
    {NULL, "--pool-size=99999999999999999999", "POOLD_POOL_SIZE"},
    {NULL, "--pool-size=300", "POOLD_POOL_CEILING"},
    {NULL, "--max-body-bytes=0", "POOLD_MAX_BODY_BYTES"},
    {NULL, "--client-timeout-s=", "POOLD_CLIENT_TIMEOUT_S"},
    {NULL, "--listen=nohost", "POOLD_LISTEN"},
    {"POOLD_CLIENT_AUTH=key", NULL, "POOLD_CLIENT_AUTH"},
    {NULL, "--read-token=a b", "POOLD_READ_TOKEN"},
    {NULL, "--listen=1.2.3.4:65536", "POOLD_LISTEN"},
    {NULL, "--listen=1.2.3:80", "POOLD_LISTEN"},
    {NULL, "--listen=[::1:80", "POOLD_LISTEN"},
    {NULL, "--listen=:80", "POOLD_LISTEN"},
    {NULL, "--pool-mode=sometimes", "POOLD_POOL_MODE"},
    {NULL, "--log-format=xml", "POOLD_LOG_FORMAT"},
    {NULL, "--log-level=verbose", "expected debug, info, warn or error"},
    {"POOLD_AUDIT_RETENTION_DAYS=36501", NULL, "POOLD_AUDIT_RETENTION_DAYS"},
    {NULL, "--build-cost-ms=nan", "POOLD_BUILD_COST_MS"},
    {NULL, "--process-cost-ms=-1", "POOLD_PROCESS_COST_MS"},
    {NULL, "--prewarm=org_1,,org_2", "POOLD_PREWARM"},
    {NULL, "--admin-token=has space", "POOLD_ADMIN_TOKEN"},
    {NULL, "--no-such-flag=1", "--no-such-flag"},
    {NULL, "positional", "positional"},
    {NULL, "--pool-size", "needs a value"},
    {NULL, "--request-read-timeout-s=0", "POOLD_REQUEST_READ_TIMEOUT_S"},
    {NULL, "--request-read-timeout-s=3601", "POOLD_REQUEST_READ_TIMEOUT_S"},
    {NULL, "--tls-cert=/etc/hostname", "POOLD_TLS_KEY"},
    {"POOLD_TLS_KEY=/etc/hostname", NULL, "POOLD_TLS_CERT"},
    {"POOLD_TLS_KEY=/nonexistent/key.pem", "--tls-cert=/nonexistent/c.pem",
     "POOLD_TLS_CERT"},
    {"POOLD_TLS_KEY=/etc/hostname", "--tls-cert=/etc/hostname",
     "POOLD_TLS_CERT"}, /* not PEM */
};

START_TEST(invalid_values_name_the_setting)
{
    const struct bad *b = &bad_inputs[_i];
    struct poold_config c;
    char err[256] = "";
    const char *env[] = {b->env, NULL};
    const char *argv[] = {"poold", b->flag};

    ck_assert_int_eq(load(&c, env, b->flag ? 2 : 1, argv, err), CONFIG_ERROR);
    ck_assert_msg(strstr(err, b->names) != NULL, "'%s' does not name %s", err,
                  b->names);
    ck_assert_ptr_null(c.database_url); /* nothing left to free */
}
END_TEST

START_TEST(help_and_version)
{
    struct poold_config c;
    char err[256];
    const char *h[] = {"poold", "--pool-size=4", "--help"};
    const char *v[] = {"poold", "--version"};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    ck_assert_int_eq(load(&c, NULL, 3, h, err), CONFIG_HELP);
    ck_assert_int_eq(load(&c, NULL, 2, v, err), CONFIG_VERSION);
    config_print_help(f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "--acquire-timeout-ms"));
    ck_assert_ptr_nonnull(strstr(text, "POOLD_CONN_CHECK_IDLE_MS"));
    ck_assert_ptr_nonnull(strstr(text, "default: 65536"));
    free(text);
}
END_TEST

START_TEST(listen_parsing)
{
    struct sockaddr_storage a;
    socklen_t len;
    bool v6;

    ck_assert(config_parse_listen("0.0.0.0:0", &a, &len, &v6));
    ck_assert(!v6 && len == sizeof(struct sockaddr_in));
    ck_assert(config_parse_listen("[::]:8080", &a, &len, &v6));
    ck_assert(v6 && len == sizeof(struct sockaddr_in6));
    ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&a)->sin6_port), 8080);
    ck_assert(!config_parse_listen("127.0.0.1:+80", &a, &len, &v6));
    ck_assert(!config_parse_listen("127.0.0.1:", &a, &len, &v6));
    ck_assert(!config_parse_listen("::1:80", &a, &len, &v6));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, defaults_match_the_design);
    tcase_add_test(tc, env_then_flags_win);
    tcase_add_loop_test(tc, invalid_values_name_the_setting, 0,
                        (int)(sizeof bad_inputs / sizeof bad_inputs[0]));
    tcase_add_test(tc, help_and_version);
    tcase_add_test(tc, listen_parsing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
