/* cluster_test.h — for the tests only: what a replica holds, read
 * back (tests/unit/check_cluster.c). */
#ifndef POOLD_CLUSTER_TEST_H
#define POOLD_CLUSTER_TEST_H

#include "cluster.h"

/* The cap this replica holds now (standalone: local_max). Thread-safe. */
unsigned cluster_cap(struct cluster *c);

#endif
