/* clock.c — sleeping for the simulated build and process costs. */
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
