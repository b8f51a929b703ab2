/* holders.h — who holds an org's lent services now (request id, route,
 * since when), and the once-per-hold "held too long" verdict. */
#ifndef POOLD_HOLDERS_H
#define POOLD_HOLDERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HOLDER_ID_MAX 128   /* a request id: DESIGN.md's X-Request-Id bound */
#define HOLDER_ROUTE_MAX 32 /* "POST /process/batch" fits */

/* One hold of a service. It lives on the borrowing thread's stack between
 * holders_add() and holders_remove(); others touch it only under the
 * list's lock. */
struct holder {
    struct holder *prev, *next;
    char request_id[HOLDER_ID_MAX + 1];
    char route[HOLDER_ROUTE_MAX];
    uint64_t since_ns;
    bool warned; /* counted in held_too_long already */
};

/* A copy of one hold, for readers (GET /pools/{org_id}/holders, logs). */
struct holder_info {
    char request_id[HOLDER_ID_MAX + 1];
    char route[HOLDER_ROUTE_MAX];
    uint64_t held_ns;
};

/* The holds of one org; in the caller's storage (init/deinit). */
struct holders {
    pthread_mutex_t lock; /* guards the list; never held across I/O */
    struct holder *head;
    unsigned n;
    atomic_uint_fast64_t held_too_long; /* holds flagged, ever */
};

void holders_init(struct holders *hs);
void holders_deinit(struct holders *hs); /* every hold removed before */

/* Record a hold starting at now_ns. request_id and route are copied
 * (truncated to fit; NULL: ""). h is the caller's until holders_remove(). */
void holders_add(struct holders *hs, struct holder *h, const char *request_id,
                 const char *route, uint64_t now_ns);

/* End a hold at now_ns. True if it lasted longer than warn_ns (0: never) and
 * was not flagged before: it is counted now and the caller logs it. */
bool holders_remove(struct holders *hs, struct holder *h, uint64_t now_ns,
                    uint64_t warn_ns);

/* Copy up to max holds into out (longest held first is not promised);
 * returns how many exist (may exceed max). */
size_t holders_list(struct holders *hs, struct holder_info *out, size_t max,
                    uint64_t now_ns);

/* Flag up to max holds older than warn_ns (0: none) not flagged yet: each
 * is counted once and copied into out for the caller to log. Those past
 * max stay unflagged for the next call, so every one is logged. Returns
 * how many were flagged (at most max). Thread-safe. */
size_t holders_check(struct holders *hs, uint64_t now_ns, uint64_t warn_ns,
                     struct holder_info *out, size_t max);

/* Holds flagged as too long, ever. Lock-free. */
uint64_t holders_held_too_long(struct holders *hs);

#endif
