/* groupcommit.c — the commit pipeline: each request processes its message
 * on a service of its org, in parallel with the org's others; the writes of
 * every org join one queue, and a group of them one statement
 * (leader/follower group commit). */
#include "groupcommit.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "registry_internal.h"
#include "service.h"

/*
 * Leader/follower, with no timer on the fast path (docs/commit-pipeline.md).
 *
 * Every request borrows a service from its org's pool (the acquire timeout
 * and the waiter bound apply as for any request), processes its message on
 * it, then offers the write to the commit queue, which every org shares: a
 * statement stores rows of any org (the connection only stores them; each
 * was processed on a service of its own org, with its current rules), so
 * orgs that each have few writes in flight still make groups. If fewer commits
 * are in flight than allowed (gc_allowed: one, more only when latency says so),
 * it is the leader: it takes the queue (its own message first, up to
 * GC_GROUP_MAX), commits the group in one statement on its own service's
 * connection, hands every follower its result (a wake-up to each, no
 * broadcast), promotes the oldest follower still queued to lead the next
 * group, and answers its own request at once. Otherwise it queues and
 * sleeps on its own futex word until its result is there, it is promoted,
 * or its commit deadline approaches: then it leaves the queue and commits
 * alone. A group therefore forms from what finished processing while the
 * previous commit was in flight, as in MySQL's binary-log group commit and
 * PostgreSQL's WAL flush.
 *
 * Only a committer needs a service. A queued write gives its service back
 * to its org's pool (the pool size bounds processing, not the queue), but
 * the head of the queue keeps its own: it is the one promoted next. So do
 * writes queued beyond one full group (GC_GROUP_MAX): the queue is bounded by a
 * group plus the pool size, and requests beyond wait for a service as before
 * (POOLD_MAX_WAITING). A job that is to commit without a service (a
 * follower leaving the queue at its deadline, or promoted after the head
 * left) borrows one from its org's pool first. A service taken from a queued
 * write may be another org's: it goes back to that org's pool (item_e).
 */
#define GC_GROUP_MAX 64   /* messages per statement */
#define GC_INFLIGHT_MAX 4 /* commits in flight at most */
#ifndef GC_INFLIGHT_BASE
/* Commits in flight before the stagger. Other values only for the measurement
 * in docs/commit-pipeline.md (-DGC_INFLIGHT_BASE=2). */
#define GC_INFLIGHT_BASE 1
#endif
/* A second commit may start while one is in flight once that one has run
 * 1/GC_STAGGER_DIV of the mean commit latency: a write offered later waits
 * less than that for it and joins the next group; one offered earlier would
 * wait more than half a commit, and starts its own. (One in flight only,
 * measured with 1 org and 8 connections on 2 cores: commits back to back,
 * each the latency of an fdatasync plus the statement, with the CPU half
 * idle.) A stalled commit (a lock wait) lets the queue go the same way. */
#define GC_STAGGER_DIV 2
/* Gaps between writes are counted at most this many mean commit latencies
 * long, so an idle spell does not outweigh the next burst. */
#define GC_GAP_CAP_K 4
/* A queued follower leaves to commit alone this long before its commit
 * deadline: GC_RESERVE_K mean commit latencies, at least GC_RESERVE_MIN_NS. */
#define GC_RESERVE_K 2
#define GC_RESERVE_MIN_NS (100 * NS_PER_MS)
#define GC_EWMA_SHIFT 3 /* the latency mean moves 1/8 of the way per commit */
/* A write that would wait alone behind the commit in flight starts its own
 * (two in flight) unless GC_SIBLINGS_MIN or more writes are expected to
 * arrive during one commit (mean commit latency / mean gap between
 * writes): below that, waiting rarely makes a group and only adds a
 * commit's latency (PostgreSQL's commit_siblings, measured). */
#define GC_SIBLINGS_MIN 1

enum gc_state {
    GC_PENDING, /* processed, not offered yet */
    GC_QUEUED,  /* in the queue, waiting for a leader */
    GC_LEAD,    /* to commit: its own group (promoted, or first) */
    GC_ALONE,   /* to commit alone: its deadline is near */
    GC_TAKEN,   /* in a leader's group */
    GC_DONE     /* result in job */
};

/* One request's message; lives on the requesting thread's stack. */
struct gc_job {
    struct gc_job *next;      /* queue link while QUEUED */
    struct org_entry *e;      /* the request's org */
    struct org_entry *item_e; /* the org whose pool item is from */
    /* The service it holds, or NULL. While it is QUEUED with one, a job
     * about to commit without one may take it (gc_take_queued), with its
     * hold: so both are under b->lock while QUEUED. */
    struct pool_item *item;
    /* A reference to item_e's active part when the service was taken from
     * another request's queued write (gc_take_queued), which may end
     * before this one gives the service back; NULL for its own (its
     * request's admission holds that one). */
    struct org_active *item_ref;
    bool held; /* hold registered (reg_hold_begin) */
    struct holder hold;
    struct service_job job; /* message in, result and status out */
    uint64_t commit_ns;     /* its request's commit deadline */
    enum gc_state state;    /* under the batcher's lock */
    /* Its owner sleeps on this word (a futex), and only it is woken
     * (gc_wake, gc_done): the low bits count wake-ups, GC_EV_DONE says
     * its result is in (the last write any other thread makes to job). */
    atomic_uint ev;
    char err[REG_ERR_MAX]; /* the reason of a failed commit */
};

struct batcher {
    pthread_mutex_t lock;       /* never held across I/O */
    struct gc_job *head, *tail; /* QUEUED jobs, oldest first */
    unsigned queued;
    unsigned inflight;      /* commits started and not finished */
    unsigned sending;       /* of those, statements sent (gc_lead) */
    uint64_t last_start_ns; /* when the youngest of them started */
    uint64_t ewma_ns;       /* mean commit latency (0: none measured) */
    uint64_t last_offer_ns; /* when the last write was offered */
    uint64_t gap_ns;        /* mean gap between offers (same weight) */
    /* GET /stats, /metrics (struct reg_commit_totals) */
    atomic_uint_fast64_t statements; /* sent, each once */
    atomic_uint_fast64_t ns_sum;     /* what they took */
    atomic_uint_fast64_t overlapped; /* sent while another was */
};

struct batcher *groupcommit_create(void)
{
    struct batcher *b = calloc(1, sizeof *b);

    if (b == NULL)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

void groupcommit_destroy(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static uint64_t gc_max(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/*
 * A job's owner sleeps on its own futex word, not on a condition variable
 * of the batcher's lock: a follower woken by a condition variable must
 * take the lock back before it returns, and the leader that woke it still
 * holds it (it hands out the whole group's results under it), so the
 * follower would sleep a second time, on the lock, and the leader pay a
 * second wake-up for it when it unlocks. A follower that wakes to find its
 * result in (GC_EV_DONE) returns without the lock.
 */
#define GC_EV_DONE 0x80000000u
_Static_assert(sizeof(atomic_uint) == sizeof(uint32_t), "a futex word");

static void gc_futex_wake(atomic_uint *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Under b->lock: wake j (queued, or just promoted) to look at its state
 * again, which it does under the lock: so j (on its owner's stack) stays
 * until the lock is released. */
static void gc_wake(struct gc_job *j)
{
    unsigned ev = atomic_load_explicit(&j->ev, memory_order_relaxed);

    /* Every writer of ev holds b->lock. The count wraps below the done
     * bit; only gc_done sets that. */
    atomic_store_explicit(&j->ev, (ev & GC_EV_DONE) | ((ev + 1) & ~GC_EV_DONE),
                          memory_order_relaxed);
    gc_futex_wake(&j->ev);
}

/* j's result (job, err, state GC_DONE) is written: hand it over. j may
 * return, and its frame go, as soon as the bit is set; the futex wake
 * only names the address (at worst a spurious wake-up of whatever sleeps
 * there later, which every futex sleeper tolerates). */
static void gc_done(struct gc_job *j)
{
    atomic_fetch_or_explicit(&j->ev, GC_EV_DONE, memory_order_release);
    gc_futex_wake(&j->ev);
}

/* Under b->lock, which it releases: sleep until woken or until at_ns. True
 * if own's result is in (the lock is not taken back), else false with the
 * lock held again. */
static bool gc_sleep(struct batcher *b, struct gc_job *own, uint64_t at_ns)
{
    unsigned seen = atomic_load_explicit(&own->ev, memory_order_relaxed);
    struct timespec ts;

    pthread_mutex_unlock(&b->lock);
    if (!(seen & GC_EV_DONE)) {
        clock_timespec_at(&ts, at_ns);
        /* Absolute, on CLOCK_MONOTONIC; returns at once if ev moved. */
        syscall(SYS_futex, (uint32_t *)&own->ev, FUTEX_WAIT_BITSET_PRIVATE,
                seen, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    }
    if (atomic_load_explicit(&own->ev, memory_order_acquire) & GC_EV_DONE)
        return true;
    pthread_mutex_lock(&b->lock);
    return false;
}

/* Under b->lock: how long the youngest commit in flight runs before
 * another may start beside it. */
static uint64_t gc_stagger_ns(const struct batcher *b)
{
    return b->ewma_ns / GC_STAGGER_DIV;
}

/* Under b->lock: when a queued job leaves to commit alone. */
static uint64_t gc_leave_at(const struct batcher *b, const struct gc_job *j)
{
    uint64_t reserve = gc_max(GC_RESERVE_K * b->ewma_ns, GC_RESERVE_MIN_NS);
    return j->commit_ns > reserve ? j->commit_ns - reserve : 0;
}

/* Under b->lock: how many commits may be in flight now. One; one more
 * while a full group waits (up to GC_INFLIGHT_MAX); two once the one in
 * flight has run half a mean commit (stalled or not), or for a write with
 * no siblings. Not more for a stall: when the companion stalls too, the
 * stall is shared (a table lock, a slow disk) and more commits would only
 * cut the groups smaller. */
static unsigned gc_allowed(const struct batcher *b, uint64_t now)
{
    /* No siblings: the queue is empty and few writes are expected during
     * a commit. */
    bool alone = b->head == NULL && b->ewma_ns < GC_SIBLINGS_MIN * b->gap_ns;

    if (b->inflight > 0 && b->queued >= GC_GROUP_MAX)
        return b->inflight < GC_INFLIGHT_MAX ? b->inflight + 1
                                             : GC_INFLIGHT_MAX;
    if (b->inflight == GC_INFLIGHT_BASE &&
        (alone || now - b->last_start_ns >= gc_stagger_ns(b)))
        return GC_INFLIGHT_BASE + 1;
    return GC_INFLIGHT_BASE;
}

/* Under b->lock. */
static void gc_push(struct batcher *b, struct gc_job *j)
{
    j->next = NULL;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued++;
    atomic_fetch_add(&j->e->act->gc.queued, 1);
    j->state = GC_QUEUED;
}

/* Under b->lock: j (the head, or unlinked) left the queue. */
static void gc_left(struct batcher *b, struct gc_job *j)
{
    b->queued--;
    atomic_fetch_sub(&j->e->act->gc.queued, 1);
}

/* Under b->lock: unlink a QUEUED job. A new head of the queue is woken to
 * watch the commit in flight (gc_follow). */
static void gc_unlink(struct batcher *b, struct gc_job *j)
{
    struct gc_job **pp = &b->head, *prev = NULL;

    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = j->next;
    if (b->tail == j)
        b->tail = prev;
    gc_left(b, j);
    if (prev == NULL && b->head != NULL)
        gc_wake(b->head);
}

/* Under b->lock: count a commit starting now. */
static void gc_start(struct batcher *b, uint64_t now)
{
    b->inflight++;
    b->last_start_ns = now;
}

/* Under b->lock: while the queue has jobs and another commit is allowed,
 * promote its oldest to lead one. */
static void gc_kick(struct batcher *b, uint64_t now)
{
    while (b->head != NULL && b->inflight < gc_allowed(b, now)) {
        struct gc_job *j = b->head;

        /* Not gc_unlink: the next in the queue is the new leader's to take,
         * not a follower to wake. */
        b->head = j->next;
        if (b->head == NULL)
            b->tail = NULL;
        gc_left(b, j);
        j->state = GC_LEAD;
        gc_start(b, now);
        gc_wake(j);
    }
}

/* Count a statement for each org with messages in group[0..n). */
static void gc_count(struct gc_job *const *group, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct gc_counts *c = &group[i]->e->act->gc;
        size_t k = 0;

        while (k < i && group[k]->e != group[i]->e)
            k++;
        if (k == i) /* the org's first message in the group */
            atomic_fetch_add(&c->commits, 1);
        atomic_fetch_add(&c->messages, 1);
    }
}

/* Under b->lock, which it drops for the statement: commit own (LEAD:
 * with the queue, up to GC_GROUP_MAX; ALONE: by itself) on the service it
 * holds. Every follower in the group gets its result and is woken; own's
 * result is in own->job. Returns the statement's status (for own's
 * service). */
static int gc_lead(struct batcher *b, struct gc_job *own)
{
    struct service *svc = pool_item_object(own->item);
    struct gc_job *group[GC_GROUP_MAX];
    struct service_job jobs[GC_GROUP_MAX];
    uint64_t deadline = own->commit_ns, t0, t1, took;
    bool overlapped;
    char err[REG_ERR_MAX] = "";
    size_t n = 1;
    int rc;

    group[0] = own;
    if (own->state == GC_LEAD) {
        while (b->head != NULL && n < GC_GROUP_MAX) {
            struct gc_job *j = b->head;

            b->head = j->next;
            gc_left(b, j);
            j->state = GC_TAKEN;
            group[n++] = j;
        }
        if (b->head == NULL)
            b->tail = NULL;
        else
            gc_wake(b->head); /* the new head */
    }
    own->state = GC_TAKEN;
    for (size_t i = 0; i < n; i++) {
        jobs[i] = group[i]->job;
        if (group[i]->commit_ns < deadline)
            deadline = group[i]->commit_ns;
    }
    /* Beside a statement on the wire: inflight also counts a commit that
     * is promoted and not yet awake, or still borrowing a service. */
    overlapped = b->sending++ > 0;
    pthread_mutex_unlock(&b->lock);

    t0 = clock_now_ns();
    rc = service_commit_many(svc, jobs, n, deadline, err, sizeof err);
    t1 = clock_now_ns();
    took = t1 - t0;
    gc_count(group, n);
    atomic_fetch_add(&b->statements, 1);
    atomic_fetch_add(&b->ns_sum, took);
    if (overlapped)
        atomic_fetch_add(&b->overlapped, 1);

    pthread_mutex_lock(&b->lock);
    b->sending--;
    if (rc == POOLD_OK)
        b->ewma_ns = b->ewma_ns == 0
                         ? took
                         : b->ewma_ns - (b->ewma_ns >> GC_EWMA_SHIFT) +
                               (took >> GC_EWMA_SHIFT);
    for (size_t i = 0; i < n; i++) {
        struct gc_job *j = group[i];

        j->job = jobs[i];
        if (jobs[i].status != POOLD_OK && jobs[i].status != POOLD_ERR_CONFLICT)
            snprintf(j->err, sizeof j->err, "%s", err);
        j->state = GC_DONE;
        if (j != own)
            gc_done(j); /* its last use here */
    }
    b->inflight--;
    gc_kick(b, t1); /* the oldest follower leads the next group */
    return rc;
}

/* Under b->lock: own is QUEUED; sleep until it is committed (DONE: then
 * the lock is released), or is to commit (LEAD, ALONE), or the server
 * shuts down (then it leaves the queue: POOLD_ERR_SHUTDOWN). The head of
 * the queue also wakes when the commit in flight has run half a mean
 * commit, to start another beside it. */
static int gc_follow(struct registry *reg, struct batcher *b,
                     struct gc_job *own)
{
    for (;;) {
        uint64_t now = clock_now_ns(), wake;

        if (own->state == GC_DONE) {
            pthread_mutex_unlock(&b->lock);
            return POOLD_OK;
        }
        if (own->state == GC_LEAD)
            return POOLD_OK;
        if (own->state == GC_TAKEN) {
            /* Bounded by the group's deadline; the extra second only
             * guards against a lost wake-up (and a leader stuck past it
             * is waited for a second at a time, not spun on). */
            wake = own->commit_ns + NS_PER_S;
            if (wake <= now)
                wake = now + NS_PER_S;
            if (gc_sleep(b, own, wake))
                return POOLD_OK;
            continue;
        }
        if (atomic_load(&reg->shutting_down)) {
            gc_unlink(b, own);
            return POOLD_ERR_SHUTDOWN;
        }
        wake = gc_leave_at(b, own);
        if (now >= wake) {
            gc_unlink(b, own);
            own->state = GC_ALONE;
            gc_start(b, now);
            return POOLD_OK;
        }
        gc_kick(b, now);
        if (own->state != GC_QUEUED)
            continue;
        /* Only while the stagger can allow one more: past it, with two in
         * flight already, the head sleeps until a commit ends (or its own
         * deadline); a wake-up time in the past would spin. */
        if (own == b->head && b->inflight == GC_INFLIGHT_BASE &&
            b->last_start_ns + gc_stagger_ns(b) < wake)
            wake = b->last_start_ns + gc_stagger_ns(b);
        if (gc_sleep(b, own, wake))
            return POOLD_OK;
    }
}

/* A service for j: the hold that lists it (GET /pools/{org}/holders, of
 * the org the service is of). */
static void gc_hold(struct gc_job *j)
{
    if (j->item != NULL && !j->held) {
        reg_hold_begin(j->item_e, &j->hold, j->job.msg);
        j->held = true;
    }
}

/* j's service is gone (given back, or taken by a committer): its hold
 * ends. */
static void gc_unhold(struct gc_job *j)
{
    if (j->held) {
        reg_hold_end(j->item_e, &j->hold);
        j->held = false;
    }
}

/* Under b->lock, which it drops meanwhile: give own's service back. */
static void gc_drop(struct registry *reg, struct batcher *b, struct gc_job *own)
{
    struct pool_item *item = own->item;

    own->item = NULL;
    pthread_mutex_unlock(&b->lock);
    gc_unhold(own);
    reg_release(reg, own->item_e, item, POOLD_OK);
    pthread_mutex_lock(&b->lock);
}

/* Under b->lock: own takes the service of the youngest queued write that
 * holds one (beyond a full group, or the head), which then has none; false
 * if none does. Its hold ends with it (holders' lock nests inside the
 * batcher's). */
static bool gc_take_queued(struct batcher *b, struct gc_job *own)
{
    struct gc_job *last = NULL;

    for (struct gc_job *j = b->head; j != NULL; j = j->next)
        if (j->item != NULL)
            last = j;
    if (last == NULL)
        return false;
    own->item = last->item;
    own->item_e = last->item_e;
    /* last holds a reference to its service's org (its admission's, or
     * one it took here) while it is QUEUED: copied under b->lock. */
    own->item_ref =
        last->item_ref != NULL
            ? last->item_ref
            : registry_active_share(atomic_load(&last->item_e->act));
    last->item_ref = NULL;
    last->item = NULL;
    gc_unhold(last);
    return true;
}

/* Under b->lock, which it drops meanwhile: own is to commit (LEAD, ALONE)
 * and has no service. It takes one from a younger queued write (which is
 * then committed by a leader like any other queued write; a borrower
 * waiting for the pool while those hold the last services would wait for
 * nothing), else borrows one from the pool, waiting at most until half
 * the reserve a queued write leaves for its commit (gc_leave_at) is left.
 * On failure it gives up its place in flight. */
static int gc_borrow(struct registry *reg, struct batcher *b,
                     struct gc_job *own)
{
    uint64_t half, now, until, wait;
    struct pool_item *item;
    int rc;

    if (gc_take_queued(b, own))
        return POOLD_OK;
    half = gc_max(GC_RESERVE_K * b->ewma_ns, GC_RESERVE_MIN_NS) / 2;
    now = clock_now_ns();
    until = own->commit_ns > half ? own->commit_ns - half : 0;
    wait = until > now ? until - now : 0;
    pthread_mutex_unlock(&b->lock);
    db_thread_deadline(own->commit_ns);
    rc =
        pool_acquire(own->e->act->pool, reg->cfg.max_waiters ? wait : 0, &item);
    db_thread_deadline(0);
    pthread_mutex_lock(&b->lock);
    if (rc == POOLD_OK) {
        own->item = item;
        own->item_e = own->e;
        /* A service built for it (a connection waited for at the cap,
         * opened, checked) may take it to its commit deadline: a leader
         * that late commits alone, not the group, whose writes have more
         * time than its deadline leaves them (the next leads it). */
        now = clock_now_ns();
        if (own->state == GC_LEAD &&
            (own->commit_ns < half || now > own->commit_ns - half)) {
            own->state = GC_ALONE;
            gc_kick(b, now);
            if (b->head != NULL) /* it was left for this leader to take */
                gc_wake(b->head);
        }
        return POOLD_OK;
    }
    b->inflight--;
    gc_kick(b, clock_now_ns());
    return rc;
}

/* Offer own (processed on the service it holds) to the queue and see it
 * committed, by a leader or as one. *used: a statement ran on the
 * connection of the service own holds at the end. */
static int gc_offer(struct registry *reg, struct gc_job *own, bool *used)
{
    struct batcher *b = reg->batcher;
    uint64_t now = clock_now_ns();
    int rc = POOLD_OK;

    pthread_mutex_lock(&b->lock);
    if (b->last_offer_ns != 0) {
        /* A gap longer than a few commits says "alone" as well as any:
         * capped, so an idle spell does not outweigh the next burst. */
        uint64_t gap = now > b->last_offer_ns ? now - b->last_offer_ns : 0;
        uint64_t cap = GC_GAP_CAP_K * b->ewma_ns;

        if (gap > cap)
            gap = cap;
        b->gap_ns = b->gap_ns == 0 ? gap
                                   : b->gap_ns - (b->gap_ns >> GC_EWMA_SHIFT) +
                                         (gap >> GC_EWMA_SHIFT);
    }
    b->last_offer_ns = now;
    if (b->head == NULL && b->inflight < gc_allowed(b, now)) {
        own->state = GC_LEAD;
        gc_start(b, now);
    } else {
        bool head = b->head == NULL; /* keeps its service: leads next */

        gc_push(b, own);
        gc_kick(b, now);
        if (own->state == GC_QUEUED && !head && b->queued <= GC_GROUP_MAX)
            gc_drop(reg, b, own);
        rc = gc_follow(reg, b, own);
        if (own->state == GC_DONE) /* gc_follow released the lock */
            return rc;
    }
    if (rc == POOLD_OK && (own->state == GC_LEAD || own->state == GC_ALONE)) {
        if (own->item == NULL)
            rc = gc_borrow(reg, b, own);
        if (rc == POOLD_OK) {
            gc_hold(own); /* holders' lock nests inside the batcher's */
            *used = true;
            rc = gc_lead(b, own);
        }
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int groupcommit_process(struct registry *reg, struct org_entry *e,
                        const struct message *msg, struct service_result *out,
                        const struct reg_deadlines *dl, char *err,
                        size_t errlen)
{
    struct gc_job own = {.e = e,
                         .item_e = e,
                         .job = {.msg = msg, .org_id = e->org_id},
                         .commit_ns = dl->commit_ns};
    uint64_t now = clock_now_ns();
    uint64_t timeout = dl->acquire_ns > now ? dl->acquire_ns - now : 0;
    bool used = false;
    int rc, src = POOLD_OK;

    db_thread_deadline(dl->acquire_ns);
    rc = pool_acquire(e->act->pool, reg->cfg.max_waiters ? timeout : 0,
                      &own.item);
    db_thread_deadline(0);
    if (rc != POOLD_OK)
        return rc;
    gc_hold(&own);
    atomic_init(&own.ev, 0);
    rc = service_evaluate(pool_item_object(own.item), &own.job, 1, err, errlen);
    if (rc == POOLD_OK) {
        src = gc_offer(reg, &own, &used);
        if (own.state == GC_DONE)
            rc = own.job.status;
        else /* left the queue (shutdown) or found no service to lead */
            rc = src != POOLD_OK ? src : POOLD_ERR_SHUTDOWN;
    }
    gc_unhold(&own);
    if (own.item != NULL)
        reg_release(reg, own.item_e, own.item, used ? src : POOLD_OK);
    registry_active_release(own.item_ref); /* after its last use */
    *out = own.job.result;
    if (rc != POOLD_OK && rc != POOLD_ERR_CONFLICT && own.err[0] != '\0')
        snprintf(err, errlen, "%s", own.err);
    else if (rc == POOLD_ERR_CONFLICT)
        snprintf(err, errlen,
                 "message id %.*s was processed with another "
                 "payload",
                 (int)(msg->id_len > 128 ? 128 : msg->id_len), msg->id);
    return rc;
}

void groupcommit_totals(struct batcher *b, struct reg_commit_totals *out)
{
    out->statements = atomic_load(&b->statements);
    out->ns_sum = atomic_load(&b->ns_sum);
    out->overlapped = atomic_load(&b->overlapped);
}

void groupcommit_wake(struct batcher *b)
{
    pthread_mutex_lock(&b->lock);
    for (struct gc_job *j = b->head; j != NULL; j = j->next)
        gc_wake(j);
    pthread_mutex_unlock(&b->lock);
}

void groupcommit_add_stats(struct gc_counts *c, struct pool_stats *out)
{
    out->waiting += atomic_load(&c->queued);
    out->group_commits = atomic_load(&c->commits);
    out->group_messages = atomic_load(&c->messages);
}
