/* malloc_count.c — an LD_PRELOAD shim counting a process's heap calls.
 *
 *   cc -std=c11 -O2 -fPIC -shared -o malloc_count.so malloc_count.c -ldl
 * -lpthread MALLOC_COUNT_FILE=/tmp/mc.json LD_PRELOAD=./malloc_count.so poold
 *   touch /tmp/mc.json.trigger   # the shim writes /tmp/mc.json, then
 *                                # removes the trigger (within ~5 ms)
 *
 * Counts calls to malloc, calloc, realloc, reallocarray and the aligned
 * allocators (posix_memalign, aligned_alloc, memalign), calls to free, and
 * the bytes in use (malloc_usable_size of every live block, so allocator
 * rounding is included, glibc's own per-chunk header is not). glibc routes
 * its internal allocations (strdup, fopen, ...) through these symbols, so
 * libpq's, jansson's and libmicrohttpd's allocations are counted too.
 *
 * Why a trigger file and not a signal: the process may block signals in
 * all its threads (sigwait) and then a handler would never run. The shim's
 * own thread blocks every signal, so it never takes the process's
 * SIGTERM/SIGINT either. The file is one line of JSON, written to a
 * temporary name and renamed, so a reader never sees half of it.
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

/* dlsym() itself calls calloc before we know the real one: serve those
 * few calls from here and never free them. */
static _Alignas(max_align_t) unsigned char boot_buf[16384];
static atomic_size_t boot_used;

static atomic_ullong n_malloc, n_calloc, n_realloc, n_memalign, n_free;
static atomic_llong bytes_in_use, bytes_peak;
static atomic_ullong bytes_total, n_dumps;

static char out_path[1024];
static char trigger_path[1040];

static int is_boot(const void *p)
{
    const unsigned char *c = p;

    return c >= boot_buf && c < boot_buf + sizeof boot_buf;
}

static void *boot_alloc(size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    size_t at = atomic_fetch_add(&boot_used, need);

    if (at + need > sizeof boot_buf)
        return NULL;
    return boot_buf + at;
}

static void resolve(void)
{
    static atomic_int done;

    if (atomic_load(&done))
        return;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    atomic_store(&done, 1);
}

static void track_add(void *p)
{
    long long now;
    long long peak;
    size_t sz;

    if (p == NULL || is_boot(p))
        return;
    sz = malloc_usable_size(p);
    atomic_fetch_add_explicit(&bytes_total, sz, memory_order_relaxed);
    now = atomic_fetch_add_explicit(&bytes_in_use, (long long)sz,
                                    memory_order_relaxed) +
          (long long)sz;
    peak = atomic_load_explicit(&bytes_peak, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak(&bytes_peak, &peak, now))
        ;
}

static void track_sub(void *p)
{
    if (p == NULL || is_boot(p))
        return;
    atomic_fetch_sub_explicit(&bytes_in_use, (long long)malloc_usable_size(p),
                              memory_order_relaxed);
}

void *malloc(size_t n)
{
    void *p;

    if (real_malloc == NULL)
        resolve();
    if (real_malloc == NULL)
        return boot_alloc(n);
    p = real_malloc(n);
    atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
    track_add(p);
    return p;
}

void *calloc(size_t nmemb, size_t size)
{
    void *p;

    if (real_calloc == NULL) {
        /* Called from inside dlsym: the boot buffer is zeroed already. */
        if (size && nmemb > SIZE_MAX / size)
            return NULL;
        return boot_alloc(nmemb * size);
    }
    p = real_calloc(nmemb, size);
    atomic_fetch_add_explicit(&n_calloc, 1, memory_order_relaxed);
    track_add(p);
    return p;
}

void *realloc(void *old, size_t n)
{
    void *p;

    if (real_realloc == NULL)
        resolve();
    if (old != NULL && is_boot(old)) {
        /* Rare: move a bootstrap block to the real heap; the old size is
         * unknown, so copy what is left of the buffer at most. */
        size_t avail =
            (size_t)(boot_buf + sizeof boot_buf - (unsigned char *)old);
        p = malloc(n);
        if (p != NULL)
            memcpy(p, old, n < avail ? n : avail);
        return p;
    }
    track_sub(old);
    p = real_realloc(old, n);
    atomic_fetch_add_explicit(&n_realloc, 1, memory_order_relaxed);
    if (p != NULL)
        track_add(p);
    else if (old != NULL && n != 0)
        track_add(old); /* failed: the old block is still live */
    return p;
}

void *reallocarray(void *old, size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(old, nmemb * size);
}

void free(void *p)
{
    if (p == NULL || is_boot(p))
        return;
    if (real_free == NULL)
        resolve();
    atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
    track_sub(p);
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    int rc;

    if (real_posix_memalign == NULL)
        resolve();
    rc = real_posix_memalign(out, align, n);
    atomic_fetch_add_explicit(&n_memalign, 1, memory_order_relaxed);
    if (rc == 0)
        track_add(*out);
    return rc;
}

void *aligned_alloc(size_t align, size_t n)
{
    void *p;

    if (real_aligned_alloc == NULL)
        resolve();
    p = real_aligned_alloc(align, n);
    atomic_fetch_add_explicit(&n_memalign, 1, memory_order_relaxed);
    track_add(p);
    return p;
}

void *memalign(size_t align, size_t n)
{
    void *p;

    if (real_memalign == NULL)
        resolve();
    p = real_memalign(align, n);
    atomic_fetch_add_explicit(&n_memalign, 1, memory_order_relaxed);
    track_add(p);
    return p;
}

/* ---- reporting ---------------------------------------------------------- */

/* For a program that wants to measure itself (dlsym(RTLD_DEFAULT, ...)). */
long long malloc_count_bytes_in_use(void);
unsigned long long malloc_count_allocs(void);

long long malloc_count_bytes_in_use(void)
{
    return atomic_load(&bytes_in_use);
}

unsigned long long malloc_count_allocs(void)
{
    return atomic_load(&n_malloc) + atomic_load(&n_calloc) +
           atomic_load(&n_realloc) + atomic_load(&n_memalign);
}

static void dump(void)
{
    char tmp[1100];
    char line[512];
    unsigned long long m = atomic_load(&n_malloc), c = atomic_load(&n_calloc),
                       r = atomic_load(&n_realloc),
                       a = atomic_load(&n_memalign);
    int len, fd;

    if (out_path[0] == '\0')
        return;
    len = snprintf(line, sizeof line,
                   "{\"seq\":%llu,\"allocs\":%llu,\"malloc\":%llu,"
                   "\"calloc\":%llu,\"realloc\":%llu,\"memalign\":%llu,"
                   "\"free\":%llu,\"bytes_in_use\":%lld,\"bytes_peak\":%lld,"
                   "\"bytes_total\":%llu}\n",
                   (unsigned long long)atomic_fetch_add(&n_dumps, 1) + 1,
                   m + c + r + a, m, c, r, a,
                   (unsigned long long)atomic_load(&n_free),
                   (long long)atomic_load(&bytes_in_use),
                   (long long)atomic_load(&bytes_peak),
                   (unsigned long long)atomic_load(&bytes_total));
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (len > 0 && write(fd, line, (size_t)len) == len) {
        close(fd);
        rename(tmp, out_path);
        return;
    }
    close(fd);
}

static void *watcher(void *arg)
{
    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 5000000};

    (void)arg;
    for (;;) {
        if (access(trigger_path, F_OK) == 0) {
            dump();
            unlink(trigger_path);
        }
        nanosleep(&tick, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void mc_init(void)
{
    const char *path = getenv("MALLOC_COUNT_FILE");
    sigset_t all, old;
    pthread_t tid;

    resolve();
    if (path == NULL || strlen(path) >= sizeof out_path)
        return;
    memcpy(out_path, path, strlen(path) + 1);
    snprintf(trigger_path, sizeof trigger_path, "%s.trigger", out_path);
    /* The watcher inherits a mask blocking everything: process-directed
     * signals keep going to the process's own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&tid, NULL, watcher, NULL) == 0)
        pthread_detach(tid);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

__attribute__((destructor)) static void mc_fini(void)
{
    dump();
}
