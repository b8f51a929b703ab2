/* keys_test.h — for the tests only: the live key set read back
 * (tests/unit/check_keys.c). */
#ifndef POOLD_KEYS_TEST_H
#define POOLD_KEYS_TEST_H

#include "keys.h"

/* Number of live keys. */
size_t keys_set_count(struct keys_set *set);

#endif
