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
 * Commit msg (of org e, which has a pool) through e's queue, within dl:
 * the request either commits a group itself, with a service it borrows
 * from e's pool, or waits for another request to commit its message in a
 * group. *out gets its result. Returns as registry_process() does; admit:
 * apply POOLD_MAX_WAITING (false for a retry). Thread-safe.
 */
POOLD_MUSTCHECK int groupcommit_process(struct registry *reg,
                                        struct org_entry *e,
                                        const struct message *msg,
                                        struct service_result *out,
                                        const struct reg_deadlines *dl,
                                        bool admit, char *err, size_t errlen);

/* Wake every request waiting on b (shutdown: they see it and leave). */
void groupcommit_wake(struct batcher *b);

/* Add b's figures to a pool's stats: its queued requests to waiting, its
 * timeouts and refusals, its statements and their messages. */
void groupcommit_add_stats(struct batcher *b, struct pool_stats *out);

#endif
