/* clock.c — deadlines as timespecs, and sleeping for the simulated build
 * and process costs. */
#include "clock.h"

#include <errno.h>

void clock_sleep_ms(double ms)
{
    if (!(ms > 0))
        return;
    uint64_t ns = (uint64_t)(ms * 1e6);
    struct timespec ts = {.tv_sec = (time_t)(ns / NS_PER_S),
                          .tv_nsec = (long)(ns % NS_PER_S)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void clock_timespec_at(struct timespec *ts, uint64_t at_ns)
{
    ts->tv_sec = (time_t)(at_ns / NS_PER_S);
    ts->tv_nsec = (long)(at_ns % NS_PER_S);
}
