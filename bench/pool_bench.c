/* pool_bench.c — cost of an acquire + release pair at 1, 2 and 8 threads. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

/*
 * N threads loop acquire + release of a trivial object on one pool of
 * max_size 4 for about S seconds (default 2). Printed per case:
 *     poold-pool threads=N ns_per_op=X
 * X = wall-clock ns / pairs completed by all threads together.
 */

#define BENCH_MAX_THREADS 8

struct bench_run {
    struct pool *pool;
    atomic_bool stop;
    atomic_bool failed;
};

struct bench_thread {
    pthread_t tid;
    struct bench_run *run;
    uint64_t pairs;
};

static int bench_obj_create(void *ctx, void **obj)
{
    static int the_object;
    (void)ctx;
    *obj = &the_object;
    return POOLD_OK;
}

static void bench_obj_destroy(void *ctx, void *obj,
                              enum pool_destroy_reason why)
{
    (void)ctx, (void)obj, (void)why;
}

static const struct pool_ops bench_ops = {
    .create = bench_obj_create,
    .destroy = bench_obj_destroy,
};

static void *bench_loop(void *arg)
{
    struct bench_thread *t = arg;
    uint64_t n = 0;
    while (!atomic_load_explicit(&t->run->stop, memory_order_relaxed)) {
        /* Check the clock only every 256 pairs: it is not free either. */
        for (int i = 0; i < 256; i++) {
            struct pool_item *it;
            if (pool_acquire(t->run->pool, 10 * NS_PER_S, &it) != POOLD_OK) {
                atomic_store(&t->run->failed, true);
                t->pairs = n;
                return NULL;
            }
            pool_release(t->run->pool, it);
        }
        n += 256;
    }
    t->pairs = n;
    return NULL;
}

/* Run one case; returns ns per pair, or a negative number on failure. */
static double bench_case(unsigned nthreads, double seconds)
{
    struct pool_config cfg = {.name = "bench", .max_size = 4};
    struct bench_run run = {.pool = NULL};
    struct bench_thread th[BENCH_MAX_THREADS];
    unsigned started = 0;
    double ns = -1;
    if (pool_create(&bench_ops, NULL, &cfg, &run.pool) != POOLD_OK)
        return -1;
    uint64_t t0 = clock_now_ns();
    for (; started < nthreads; started++) {
        th[started] = (struct bench_thread){.run = &run};
        if (pthread_create(&th[started].tid, NULL, bench_loop, &th[started]))
            break;
    }
    clock_sleep_ms(seconds * 1000.0);
    atomic_store(&run.stop, true);
    uint64_t pairs = 0;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(th[i].tid, NULL);
        pairs += th[i].pairs;
    }
    uint64_t elapsed = clock_now_ns() - t0;
    if (started == nthreads && !atomic_load(&run.failed) && pairs > 0)
        ns = (double)elapsed / (double)pairs;
    pool_destroy(run.pool);
    return ns;
}

static int bench_parse_seconds(int argc, char **argv, double *seconds)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") != 0 || i + 1 >= argc) {
            fprintf(stderr, "usage: %s [--seconds S]\n", argv[0]);
            return -1;
        }
        char *end;
        errno = 0;
        double s = strtod(argv[++i], &end);
        if (errno != 0 || *end != '\0' || !(s > 0 && s <= 3600)) {
            fprintf(stderr, "--seconds: want a number in (0, 3600]\n");
            return -1;
        }
        *seconds = s;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const unsigned cases[] = {1, 2, 8};
    double seconds = 2.0;
    if (bench_parse_seconds(argc, argv, &seconds) != 0)
        return 2;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double ns = bench_case(cases[i], seconds);
        if (ns < 0) {
            fprintf(stderr, "pool_bench: case threads=%u failed\n", cases[i]);
            return 1;
        }
        printf("poold-pool threads=%u ns_per_op=%.1f\n", cases[i], ns);
        fflush(stdout);
    }
    return 0;
}
