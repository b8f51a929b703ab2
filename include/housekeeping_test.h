/* housekeeping_test.h — what only the housekeeping's tests call. */
#ifndef POOLD_HOUSEKEEPING_TEST_H
#define POOLD_HOUSEKEEPING_TEST_H

#include <stddef.h>

/* The name of a tick's step i (0-based, in order; static), NULL past the
 * last one. Thread-safe. */
const char *housekeeping_step_name(size_t i);

#endif
