/* groupcommit.h — the commit queue: the writes of concurrent requests, of
 * any org, joined into one statement. Part of the registry
 * (src/registry_internal.h has the lock order); no caller outside the
 * registry's files. */
#ifndef POOLD_GROUPCOMMIT_H
#define POOLD_GROUPCOMMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct batcher; /* opaque: one per registry, every org's writes */

/* An org's share of the queue, kept in its active part (GET /stats). */
struct gc_counts {
    atomic_uint_fast64_t commits;  /* statements with its messages */
    atomic_uint_fast64_t messages; /* its messages those committed */
    atomic_uint queued;            /* its writes in the queue now */
};
struct message;
struct org_entry;
struct pool_stats;
struct reg_commit_totals;
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
 * commits a group (its own message first, with other orgs' writes) on a
 * service's connection or waits for a leader to commit its message in a
 * group. *out gets its result. Returns as registry_process() does.
 * Thread-safe.
 */
POOLD_MUSTCHECK int
groupcommit_process(struct registry *reg, struct org_entry *e,
                    const struct message *msg, struct service_result *out,
                    const struct reg_deadlines *dl, char *err, size_t errlen);

/* The statements b sent so far, each counted once. */
void groupcommit_totals(struct batcher *b, struct reg_commit_totals *out);

/* Wake every request queued on b (shutdown: they see it and leave). */
void groupcommit_wake(struct batcher *b);

/* Add an org's figures to its pool's stats: its queued requests to
 * waiting, the statements with its messages and those messages. */
void groupcommit_add_stats(struct gc_counts *c, struct pool_stats *out);

#endif
