/* groupcommit.c — an org's commit queue: concurrent requests' writes
 * joined into one statement on one of the org's services. */
#include "groupcommit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "db.h"
#include "registry_internal.h"
#include "service.h"

/*
 * Group commit, with no timer. A request's message is queued on its org's
 * batcher; while fewer than the pool's max_size "flushers" run, the request
 * becomes one: it borrows a service from the pool as any request did
 * (stats, timeouts, the waiter bound and the connection cap rules hold),
 * then commits the queued messages, its own first, in one statement per
 * round until the queue is empty, and gives the service back. The other
 * requests wait on the batcher for their own result. At low load nobody is
 * queued and a group is one message; under load, a group is what piled up
 * during the previous commit.
 */
#define GC_GROUP_MAX 256 /* messages per statement */
#define GC_ROUNDS_MAX 16 /* rounds a flusher runs before handing over */

enum gc_state { GC_QUEUED, GC_TAKEN, GC_DONE };

/* One request's message; lives on the requesting thread's stack. */
struct gc_job {
    struct gc_job *next;    /* queue link while QUEUED */
    struct service_job job; /* message in, result and status out */
    uint64_t commit_ns;     /* its request's commit deadline */
    enum gc_state state;    /* under the batcher's lock */
    bool flushing;          /* its owner is a flusher: only the owner
                               takes it (at low load, every request
                               commits its own message at once) */
    char err[REG_ERR_MAX];  /* the reason of a failed commit */
};

struct batcher {
    pthread_mutex_t lock;       /* never held across I/O */
    pthread_cond_t cond;        /* a job done, a flusher gone, shutdown */
    struct gc_job *head, *tail; /* QUEUED jobs, oldest first */
    unsigned queued;
    unsigned flushers;
    /* Counted here and added to the pool's stats. */
    atomic_uint_fast64_t timeouts, rejected, commits, messages;
};

struct batcher *groupcommit_create(void)
{
    struct batcher *b = calloc(1, sizeof *b);
    pthread_condattr_t ca;

    if (b == NULL)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    return b;
}

void groupcommit_destroy(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Under b->lock. */
static void batcher_push(struct batcher *b, struct gc_job *j)
{
    j->next = NULL;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued++;
}

/* Under b->lock: unlink a QUEUED job. */
static void batcher_remove(struct batcher *b, struct gc_job *j)
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
    b->queued--;
}

/* Under b->lock: take up to max QUEUED jobs, own first if still queued,
 * then those whose owners wait (not those of other flushers). */
static size_t batcher_take(struct batcher *b, struct gc_job *own,
                           struct gc_job **out, size_t max)
{
    struct gc_job *j = b->head, *next;
    size_t n = 0;

    if (own->state == GC_QUEUED) {
        batcher_remove(b, own);
        own->state = GC_TAKEN;
        out[n++] = own;
    }
    for (; j != NULL && n < max; j = next) {
        next = j->next;
        if (j->flushing)
            continue;
        batcher_remove(b, j);
        j->state = GC_TAKEN;
        out[n++] = j;
    }
    return n;
}

/* Commit one group with svc; every job gets its result, DONE, and its
 * owner is woken. Returns the statement's status. */
static int gc_commit(struct org_entry *e, struct service *svc,
                     struct gc_job **group, size_t n)
{
    struct batcher *b = e->act->batcher;
    struct service_job jobs[GC_GROUP_MAX];
    uint64_t deadline = UINT64_MAX;
    char err[REG_ERR_MAX] = "";
    int rc;

    for (size_t i = 0; i < n; i++) {
        jobs[i] = group[i]->job;
        if (group[i]->commit_ns < deadline)
            deadline = group[i]->commit_ns;
    }
    rc = service_process_many(svc, jobs, n, deadline, err, sizeof err);
    atomic_fetch_add(&b->commits, 1);
    atomic_fetch_add(&b->messages, n);
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        group[i]->job = jobs[i];
        if (jobs[i].status != POOLD_OK && jobs[i].status != POOLD_ERR_CONFLICT)
            snprintf(group[i]->err, sizeof group[i]->err, "%s", err);
        group[i]->state = GC_DONE;
    }
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return rc;
}

/* Run as a flusher: borrow a service, commit groups until the queue is
 * empty (or the connection is wanted elsewhere), give it back. Own is
 * DONE on return unless the service could not be had (then own's status
 * says why, and own is out of the queue). */
static void gc_flush(struct registry *reg, struct org_entry *e,
                     struct gc_job *own, const struct reg_deadlines *dl)
{
    struct batcher *b = e->act->batcher;
    struct gc_job *group[GC_GROUP_MAX];
    struct pool_item *item;
    struct holder hold;
    uint64_t now = clock_now_ns();
    uint64_t timeout = dl->acquire_ns > now ? dl->acquire_ns - now : 0;
    int rc = POOLD_OK;

    db_thread_deadline(dl->acquire_ns);
    rc = pool_acquire(e->act->pool, reg->cfg.max_waiters ? timeout : 0, &item);
    db_thread_deadline(0);
    if (rc != POOLD_OK) {
        pthread_mutex_lock(&b->lock);
        if (own->state == GC_QUEUED) {
            batcher_remove(b, own);
            own->job.status = rc;
            own->state = GC_DONE;
        }
        pthread_mutex_unlock(&b->lock);
        return;
    }
    reg_hold_begin(e, &hold, own->job.msg);
    for (int round = 0; round < GC_ROUNDS_MAX; round++) {
        size_t n;

        pthread_mutex_lock(&b->lock);
        n = batcher_take(b, own, group, GC_GROUP_MAX);
        pthread_mutex_unlock(&b->lock);
        if (n == 0)
            break;
        rc = gc_commit(e, pool_item_object(item), group, n);
        if (rc == POOLD_ERR_DB || rc == POOLD_ERR_COMMIT_UNKNOWN ||
            rc == POOLD_ERR_NOMEM || rc == POOLD_ERR_INVALID)
            break; /* this connection is done for: released as broken */
        if (!db_conn_is_clean(service_conn(pool_item_object(item))))
            break; /* a lookup after the INSERT lost it: reset destroys it */
        if (pool_waiting(reg->conns) > atomic_load(&e->act->building) ||
            atomic_load(&reg->shutting_down))
            break; /* the connection is wanted elsewhere: hand over */
    }
    reg_hold_end(e, &hold);
    reg_release(reg, e, item, rc);
}

/* Wait until own is DONE, flushing when a flusher's place is free. */
static int gc_wait(struct registry *reg, struct org_entry *e,
                   struct gc_job *own, const struct reg_deadlines *dl)
{
    struct batcher *b = e->act->batcher;
    struct timespec ts;

    while (own->state != GC_DONE) {
        if (own->state == GC_QUEUED &&
            b->flushers < pool_max_size(e->act->pool)) {
            b->flushers++;
            own->flushing = true;
            pthread_mutex_unlock(&b->lock);
            gc_flush(reg, e, own, dl);
            pthread_mutex_lock(&b->lock);
            own->flushing = false;
            b->flushers--;
            pthread_cond_broadcast(&b->cond); /* a flusher's place is free */
            continue;
        }
        if (own->state == GC_QUEUED && (clock_now_ns() >= dl->acquire_ns ||
                                        atomic_load(&reg->shutting_down))) {
            batcher_remove(b, own);
            if (atomic_load(&reg->shutting_down))
                return POOLD_ERR_SHUTDOWN;
            atomic_fetch_add(&b->timeouts, 1);
            return POOLD_ERR_TIMEOUT;
        }
        /* A taken job's commit is bounded by its deadline; the extra
         * second only guards against a lost wake-up. */
        clock_timespec_at(&ts, own->state == GC_QUEUED
                                   ? dl->acquire_ns
                                   : dl->commit_ns + NS_PER_S);
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
    }
    return own->job.status;
}

/* One pass through the batcher: queue the message and wait for a flusher
 * to commit it (or to commit it as one). admit: apply POOLD_MAX_WAITING. */
int groupcommit_process(struct registry *reg, struct org_entry *e,
                        const struct message *msg, struct service_result *out,
                        const struct reg_deadlines *dl, bool admit, char *err,
                        size_t errlen)
{
    struct batcher *b = e->act->batcher;
    struct gc_job own = {
        .job = {.msg = msg}, .commit_ns = dl->commit_ns, .state = GC_QUEUED};
    int rc;

    pthread_mutex_lock(&b->lock);
    /* Every flusher busy: the request waits, within POOLD_MAX_WAITING. */
    if (admit && b->flushers >= pool_max_size(e->act->pool) &&
        b->queued >= reg->cfg.max_waiters) {
        pthread_mutex_unlock(&b->lock);
        atomic_fetch_add(&b->rejected, 1);
        return POOLD_ERR_WAITERS_FULL;
    }
    batcher_push(b, &own);
    rc = gc_wait(reg, e, &own, dl);
    pthread_mutex_unlock(&b->lock);
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

void groupcommit_wake(struct batcher *b)
{
    pthread_mutex_lock(&b->lock);
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void groupcommit_add_stats(struct batcher *b, struct pool_stats *out)
{
    pthread_mutex_lock(&b->lock);
    out->waiting += b->queued;
    pthread_mutex_unlock(&b->lock);
    out->total_timeouts += atomic_load(&b->timeouts);
    out->waiters_rejected += atomic_load(&b->rejected);
    out->group_commits = atomic_load(&b->commits);
    out->group_messages = atomic_load(&b->messages);
}
