/* pgconn_size.c — heap bytes one open libpq connection costs its client.
 *
 * Opens N connections with the keywords src/db.c uses, runs one
 * parameterised statement on each (so libpq's buffers reach their working
 * size), and prints the heap growth per connection as one JSON object.
 * Bytes come from bench/malloc_count.so when it is preloaded (the same
 * measure as poold's figures), else from glibc's mallinfo2().
 *
 *   pgconn_size [N] DATABASE_URL
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

static long long (*shim_bytes)(void);

static long long heap_bytes(void)
{
    if (shim_bytes != NULL)
        return shim_bytes();
    return (long long)mallinfo2().uordblks;
}

int main(int argc, char **argv)
{
    const char *const keys[] = {
        "dbname",           "connect_timeout",     "keepalives",
        "keepalives_idle",  "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "application_name",    NULL};
    const char *vals[] = {NULL, "5",     "1",           "30", "10",
                          "3",  "10000", "svc:org_000", NULL};
    const char *param[1] = {"org_000"};
    PGconn **conns;
    long n;
    char *end;
    long long before, opened, used;

    if (argc != 3) {
        fprintf(stderr, "usage: pgconn_size N DATABASE_URL\n");
        return 2;
    }
    errno = 0;
    n = strtol(argv[1], &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > 150) {
        fprintf(stderr, "pgconn_size: N must be 1..150\n");
        return 2;
    }
    vals[0] = argv[2];
    *(void **)&shim_bytes = dlsym(RTLD_DEFAULT, "malloc_count_bytes_in_use");
    conns = calloc((size_t)n, sizeof *conns);
    if (conns == NULL)
        return 1;
    before = heap_bytes();
    for (long i = 0; i < n; i++) {
        conns[i] = PQconnectdbParams(keys, vals, 1);
        if (conns[i] == NULL || PQstatus(conns[i]) != CONNECTION_OK) {
            fprintf(stderr, "pgconn_size: %s",
                    conns[i] ? PQerrorMessage(conns[i]) : "out of memory\n");
            return 1;
        }
    }
    opened = heap_bytes();
    for (long i = 0; i < n; i++) {
        PGresult *res = PQexecParams(conns[i],
                                     "SELECT config::text FROM orgs"
                                     " WHERE org_id = $1",
                                     1, NULL, param, NULL, NULL, 0);
        PQclear(res);
    }
    used = heap_bytes();
    printf(
        "{\"connections\":%ld,\"source\":\"%s\","
        "\"bytes_per_conn_opened\":%.0f,\"bytes_per_conn_after_query\":%.0f}\n",
        n, shim_bytes ? "malloc_count" : "mallinfo2",
        (double)(opened - before) / (double)n,
        (double)(used - before) / (double)n);
    for (long i = 0; i < n; i++)
        PQfinish(conns[i]);
    free(conns);
    return 0;
}
