/* breaker.h — a circuit breaker with jittered exponential backoff. Pure: the
 * caller passes "now" and the seed, so a test drives it with a fake clock. */
#ifndef POOLD_BREAKER_H
#define POOLD_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"

#define BREAKER_BACKOFF_MIN_NS (100 * NS_PER_MS)
#define BREAKER_BACKOFF_MAX_NS (5 * NS_PER_S)

/*
 * Closed while backoff_ns is 0: every attempt may go. After a failure it is
 * open for a jittered backoff window (attempts fail at once); the first
 * attempt after the window is the probe (half-open: the window is pushed on
 * meanwhile, so one probe at a time). A success closes it; another failure
 * doubles the backoff, up to BREAKER_BACKOFF_MAX_NS.
 *
 * The caller owns the storage (init/deinit). Every call but init/deinit is
 * thread-safe.
 */
struct breaker {
    pthread_mutex_t lock;   /* guards the fields below */
    uint64_t open_until_ns; /* attempts before this fail at once */
    uint64_t backoff_ns;    /* 0: closed (healthy) */
    unsigned seed;          /* rand_r() state for the jitter */
};

/* Closed, with the jitter's seed. */
void breaker_init(struct breaker *b, unsigned seed);
void breaker_deinit(struct breaker *b);

/* May an attempt go at now_ns? While the window is open, no; the first
 * caller after it is let through as the probe. */
bool breaker_allow(struct breaker *b, uint64_t now_ns);

/* The attempt failed at now_ns: open (again) with a longer window. */
void breaker_failure(struct breaker *b, uint64_t now_ns);

/* The attempt worked: closed. */
void breaker_success(struct breaker *b);

/*
 * The backoff after cur_ns (0: the first failure): doubled from
 * BREAKER_BACKOFF_MIN_NS up to BREAKER_BACKOFF_MAX_NS, then "full jitter"
 * keeps a random part of the upper half, [next/2, next], so a fleet of
 * poolds does not retry in lockstep. Advances *seed.
 */
uint64_t breaker_next_backoff(uint64_t cur_ns, unsigned *seed);

#endif
