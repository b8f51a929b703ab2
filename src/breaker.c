/* breaker.c — circuit breaker with jittered exponential backoff (pure). */
#include "breaker.h"

#include <stdlib.h>

void breaker_init(struct breaker *b, unsigned seed)
{
    pthread_mutex_init(&b->lock, NULL);
    b->open_until_ns = 0;
    b->backoff_ns = 0;
    b->seed = seed;
}

void breaker_deinit(struct breaker *b)
{
    pthread_mutex_destroy(&b->lock);
}

uint64_t breaker_next_backoff(uint64_t cur_ns, unsigned *seed)
{
    uint64_t next = cur_ns == 0 ? BREAKER_BACKOFF_MIN_NS : cur_ns * 2;
    if (next > BREAKER_BACKOFF_MAX_NS)
        next = BREAKER_BACKOFF_MAX_NS;
    return next / 2 + (uint64_t)rand_r(seed) % (next / 2 + 1);
}

bool breaker_allow(struct breaker *b, uint64_t now_ns)
{
    bool ok;
    pthread_mutex_lock(&b->lock);
    ok = now_ns >= b->open_until_ns;
    if (ok && b->backoff_ns != 0)
        b->open_until_ns = now_ns + b->backoff_ns;
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void breaker_failure(struct breaker *b, uint64_t now_ns)
{
    pthread_mutex_lock(&b->lock);
    b->backoff_ns = breaker_next_backoff(b->backoff_ns, &b->seed);
    b->open_until_ns = now_ns + b->backoff_ns;
    pthread_mutex_unlock(&b->lock);
}

void breaker_success(struct breaker *b)
{
    pthread_mutex_lock(&b->lock);
    b->backoff_ns = 0;
    b->open_until_ns = 0;
    pthread_mutex_unlock(&b->lock);
}
