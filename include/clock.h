/* clock.h — monotonic time in nanoseconds, the one clock poold reads. */
#ifndef POOLD_CLOCK_H
#define POOLD_CLOCK_H

#include <stdint.h>
#include <time.h>

#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)

/* A clock callback: pools and tests inject one to make time exact. */
typedef uint64_t (*clock_fn)(void *clock_ctx);

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The CLOCK_MONOTONIC time at_ns (a deadline) as a timespec, for
 * pthread_cond_timedwait() on a condition variable whose clock is
 * CLOCK_MONOTONIC (pthread_condattr_setclock), or an absolute
 * FUTEX_WAIT_BITSET (groupcommit.c). The one conversion poold
 * has: a deadline d from now is clock_timespec_at(&ts, clock_now_ns() + d).
 * Pure. */
void clock_timespec_at(struct timespec *ts, uint64_t at_ns);

/* Sleep for a (possibly fractional) number of milliseconds; <= 0 returns. */
void clock_sleep_ms(double ms);

#endif
