/* groupcommit.h — an org's commit queue: the writes of concurrent requests
 * joined into one statement. Part of the registry (src/registry_internal.h
 * has the lock order); no caller outside the registry's files. */
#ifndef POOLD_GROUPCOMMIT_H
#define POOLD_GROUPCOMMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

struct batcher; /* opaque: one per org pool */
struct message;
struct org_entry;
struct pool_stats;
struct reg_deadlines;
struct registry;
struct service_result;

/* A new, empty queue, or NULL (out of memory). Freed by
 * groupcommit_destroy(), which accepts NULL, once nobody uses it. */
struct batcher *groupcommit_create(void);
void groupcommit_destroy(struct batcher *b);

/*
 * Process msg (of org e, which has a pool) and commit it, within dl: the
 * request borrows a service from e's pool (503 pool_exhausted when none is
 * free by dl->acquire_ns), evaluates the rules on it, and then either
 * commits a group (its own message first) on that service's connection or
 * waits, holding it, for a leader to commit its message in a group. *out
 * gets its result. Returns as registry_process() does. Thread-safe.
 */
POOLD_MUSTCHECK int
groupcommit_process(struct registry *reg, struct org_entry *e,
                    const struct message *msg, struct service_result *out,
                    const struct reg_deadlines *dl, char *err, size_t errlen);

/* Wake every request queued on b (shutdown: they see it and leave). */
void groupcommit_wake(struct batcher *b);

/* Add b's figures to a pool's stats: its queued requests to waiting, its
 * statements and their messages. */
void groupcommit_add_stats(struct batcher *b, struct pool_stats *out);

#endif
