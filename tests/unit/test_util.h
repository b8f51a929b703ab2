/* test_util.h — helpers shared by the Check tests (unit and integration).
 *
 * A test that waits for a state another thread (or process) reaches polls
 * for it with wait_until(): it sleeps between checks (a spin loop steals
 * the CPU from the very thread it waits for on a loaded 2-core machine) and
 * fails with a message at its deadline, never passing by running out of
 * time. Assert the state the wait starts from first, so that the wait
 * cannot pass vacuously. */
#ifndef POOLD_TEST_UTIL_H
#define POOLD_TEST_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"

/* Time between two checks of a condition. */
#define TEST_POLL_MS 2.0

/* A condition to wait for: true once the state is reached. Called from the
 * waiting thread only. */
typedef bool (*test_cond_fn)(void *arg);

/* Wait until cond(arg) holds, checking every TEST_POLL_MS; fail the test,
 * naming what was awaited and where, when timeout_ms pass first. */
#define wait_until(cond, arg, timeout_ms, what)                                \
    test_wait_until((cond), (arg), (timeout_ms), (what), __FILE__, __LINE__)

static inline void test_wait_until(test_cond_fn cond, void *arg,
                                   unsigned timeout_ms, const char *what,
                                   const char *file, int line)
{
    uint64_t end = clock_now_ns() + (uint64_t)timeout_ms * NS_PER_MS;

    while (!cond(arg)) {
        if (clock_now_ns() >= end)
            ck_abort_msg("%s:%d: %s did not happen within %u ms", file, line,
                         what, timeout_ms);
        clock_sleep_ms(TEST_POLL_MS);
    }
}

#endif
