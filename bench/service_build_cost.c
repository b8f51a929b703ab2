/* service_build_cost.c — what building (and closing) one org's service
 * costs: with a new connection each time, and with a pooled connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "connpool.h"
#include "db.h"
#include "pool.h"
#include "service.h"

/*
 *   service_build_cost [org_id [n]]     (DATABASE_URL in the environment)
 *
 * Builds and closes org_id's service (default org_001 of the demo orgs) n
 * times (default 200) each way and prints, per service:
 *     service-build own_ms=X pooled_ms=Y n=N org=ORG
 * A program that prints figures, not a test: nothing is asserted. The org
 * must exist and be enabled; nothing is written.
 */

#define BENCH_DEFAULT_N 200

/* Build and close n services of org; the wall time in ns, 0 on failure. */
static uint64_t build_loop(const struct service_env *env, const char *org,
                           long n)
{
    char err[512];
    uint64_t t0 = clock_now_ns();

    for (long i = 0; i < n; i++) {
        struct service *svc = NULL;
        int rc = service_create(env, org, &svc, err, sizeof err);
        if (rc != POOLD_OK) {
            fprintf(stderr, "service_create %s: %s (%s)\n", org, err,
                    poold_status_str(rc));
            return 0;
        }
        service_close(svc);
    }
    return clock_now_ns() - t0;
}

static int bench_args(int argc, char **argv, const char **org, long *n)
{
    char *end;

    *org = argc > 1 ? argv[1] : "org_001";
    *n = BENCH_DEFAULT_N;
    if (argc > 2) {
        *n = strtol(argv[2], &end, 10);
        if (*end != '\0' || *n < 1 || *n > 1000000) {
            fprintf(stderr, "n must be 1..1000000\n");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = getenv("DATABASE_URL"), *org;
    struct db_settings db = {.url = url,
                             .application_name = "poold-bench-build",
                             .connect_timeout_s = 5};
    struct service_env env = {.db = &db,
                              .conn_acquire_timeout_ns = NS_PER_S,
                              .conn_check_idle_ns = NS_PER_S};
    struct pool_config pc = {.name = "conns", .max_size = 1, .max_waiters = 1};
    uint64_t own_ns, pooled_ns;
    long n;

    if (url == NULL || bench_args(argc, argv, &org, &n) != 0) {
        fprintf(stderr, "usage: DATABASE_URL=... %s [org_id [n]]\n", argv[0]);
        return 2;
    }
    own_ns = build_loop(&env, org, n);
    if (own_ns == 0 ||
        pool_create(&connpool_conn_ops, &env, &pc, &env.conns) != POOLD_OK)
        return 1;
    /* Warm: the pool holds one open connection from here on. */
    pooled_ns = build_loop(&env, org, 1) ? build_loop(&env, org, n) : 0;
    pool_destroy(env.conns);
    if (pooled_ns == 0)
        return 1;
    printf("service-build own_ms=%.3f pooled_ms=%.3f n=%ld org=%s\n",
           (double)own_ns / (double)n / 1e6,
           (double)pooled_ns / (double)n / 1e6, n, org);
    return 0;
}
