/* housekeeping.c — the registry's janitor: one thread, named steps a tick. */
#include "housekeeping.h"

#include <pthread.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "connpool.h"
#include "holders.h"
#include "housekeeping_test.h"
#include "log.h"
#include "registry_internal.h"

#define HK_HELD_LOG_MAX 16 /* held-too-long holds logged per org per tick */
#define HK_WARM_ROUND_NS (2 * NS_PER_S)    /* one round of warm connections */
#define HK_PRUNE_EVERY_NS (600 * NS_PER_S) /* org_changes pruned */
/* A heartbeat within a long tick: later than the next tick's would come
 * after a quick one (1 s), well before the fence (3.5 s). */
#define HK_BEAT_DUE_NS (3 * NS_PER_S / 2)
#define HK_BEAT_RECENT_NS (NS_PER_S / 2) /* the tick's own is not needed */
/* At the end: how long to wait for the backends of connections closed with
 * a statement in flight to go before leaving the cluster. */
#define HK_LINGER_WAIT_NS (2 * NS_PER_S)
#define HK_LINGER_POLL_MS 100.0

struct housekeeping {
    struct registry *reg;     /* borrowed; owns this */
    pthread_mutex_t lock;     /* guards stop, conn and conn_busy; never held
                                 across I/O */
    pthread_cond_t cond;      /* stop (CLOCK_MONOTONIC waits) */
    pthread_cond_t conn_cond; /* the connection or the admin token was
                                 given back */
    struct db_conn *conn;     /* NULL while taken, or none open */
    bool conn_busy;           /* taken: its taker does I/O on it */
    bool admin_busy;          /* an admin call or a resize runs */
    bool stop;
    /* The refresh steps (refresh..watch), on the tick's connection or an
     * admin call's: the tick only tries it (it never waits behind an admin
     * call, which is doing the same work then); an admin call waits for it
     * within its deadline. */
    pthread_mutex_t refresh_lock;
    /* refresh_lock's holder's only (so loads apply in the order read). */
    struct catalog_cursor cursor; /* where the last read of org_changes was */
    uint64_t pruned_ns;           /* org_changes last pruned (0: not yet) */
    bool prune_backlog;           /* the last prune was a full batch */
    uint64_t beat_ns;             /* the replica hook last ran (0: not yet) */
    /* The ticking thread's only (ticks never run twice at once). */
    bool was_down;
    uint64_t backoff_ns; /* 0: tick again after the refresh interval */
    unsigned seed;
    bool prewarmed;
    /* The lifecycle thread's (and start-up's, before it runs). */
    uint64_t lifecycle_due; /* the next round (0: at once) */
    /* Written before the threads start or by the hk thread; read after
     * joining it. */
    pthread_t thread, warm_thread, prewarm_thread, lifecycle_thread;
    bool started, warm_started, prewarm_started, lifecycle_started;
};

/* One tick, handed from step to step. */
struct hk_tick {
    clock_fn clock; /* NULL: the monotonic clock */
    void *clock_ctx;
    uint64_t now;         /* read from the clock before each step */
    struct db_conn *conn; /* taken while the steps flagged HK_CONN run */
    int rc;               /* POOLD_OK until a database step fails */
    bool reloaded;        /* the directory was reloaded this tick */
    bool refreshing;      /* refresh_lock held for the HK_REFRESH steps */
    bool beats;           /* the tick's own (not an admin call's refresh):
                             it keeps the replica's lease between steps */
    bool beaten;          /* a heartbeat ran between this tick's steps */
    char err[REG_ERR_MAX];
};

enum {
    HK_CONN = 1u,    /* runs with the housekeeping connection taken */
    HK_DB = 2u,      /* skipped once a database step of the tick failed */
    HK_LOADED = 4u,  /* skipped until the directory is loaded */
    HK_REFRESH = 8u, /* with refresh_lock held; skipped while an admin call
                        runs these steps itself */
};

/* -------------------------------------------------- the connection token */

/* Under hk->lock: wait until no one has the connection taken. */
static void hk_conn_wait_free(struct housekeeping *hk)
{
    while (hk->conn_busy) {
        if (registry_test_hook != NULL)
            registry_test_hook(hk->reg, REGISTRY_TEST_HK_CONN_BUSY);
        pthread_cond_wait(&hk->conn_cond, &hk->lock);
    }
}

struct db_conn *housekeeping_conn_take(struct housekeeping *hk)
{
    struct db_conn *conn;

    pthread_mutex_lock(&hk->lock);
    hk_conn_wait_free(hk);
    hk->conn_busy = true;
    conn = hk->conn;
    hk->conn = NULL;
    pthread_mutex_unlock(&hk->lock);
    return conn;
}

void housekeeping_conn_give(struct housekeeping *hk, struct db_conn *conn)
{
    pthread_mutex_lock(&hk->lock);
    if (!hk->conn_busy || hk->conn != NULL)
        abort(); /* given back without being taken */
    hk->conn = conn;
    hk->conn_busy = false;
    pthread_cond_broadcast(&hk->conn_cond);
    pthread_mutex_unlock(&hk->lock);
}

bool housekeeping_admin_take(struct housekeeping *hk, uint64_t deadline_ns)
{
    struct timespec ts;
    bool got;

    clock_timespec_at(&ts, deadline_ns);
    pthread_mutex_lock(&hk->lock);
    while (hk->admin_busy && clock_now_ns() < deadline_ns) {
        if (registry_test_hook != NULL)
            registry_test_hook(hk->reg, REGISTRY_TEST_HK_CONN_BUSY);
        pthread_cond_timedwait(&hk->conn_cond, &hk->lock, &ts);
    }
    got = !hk->admin_busy;
    if (got)
        hk->admin_busy = true;
    pthread_mutex_unlock(&hk->lock);
    return got;
}

void housekeeping_admin_give(struct housekeeping *hk)
{
    pthread_mutex_lock(&hk->lock);
    hk->admin_busy = false;
    pthread_cond_broadcast(&hk->conn_cond);
    pthread_mutex_unlock(&hk->lock);
}

int housekeeping_conn_ready(struct housekeeping *hk, struct db_conn **conn,
                            char *err, size_t errlen)
{
    const struct registry_config *cfg = &hk->reg->cfg;
    struct db_settings s = cfg->db;

    if (*conn != NULL &&
        db_conn_is_alive(*conn, clock_now_ns(), cfg->conn_check_idle_ns))
        return POOLD_OK;
    /* A backend still at work counts against the pool until it is gone. */
    connpool_close_outside(hk->reg->cp, *conn);
    *conn = NULL;
    s.application_name = "poold-housekeeping";
    s.fenceable = false; /* it renews the lease */
    return db_conn_open(&s, clock_now_ns(), conn, err, errlen);
}

/* ------------------------------------------- steps with the connection */

static enum hk_outcome step_connect(struct housekeeping *hk, struct hk_tick *t)
{
    t->rc = housekeeping_conn_ready(hk, &t->conn, t->err, sizeof t->err);
    return t->rc == POOLD_OK ? HK_RAN : HK_FAILED;
}

/* Old org_changes rows go about every ten minutes (any replica may), the
 * first time ten minutes after start: never in the way of readiness. A
 * batch at a time, one a tick while a backlog lasts: the tick's heartbeat
 * comes after this, and must not wait behind a day's bulk import. */
static void hk_prune(struct housekeeping *hk, struct hk_tick *t)
{
    char err[REG_ERR_MAX];
    uint64_t now = clock_now_ns();
    long long deleted;

    if (hk->pruned_ns == 0)
        hk->pruned_ns = now;
    if (!hk->prune_backlog && now - hk->pruned_ns < HK_PRUNE_EVERY_NS)
        return;
    hk->pruned_ns = now;
    hk->prune_backlog = false;
    if (catalog_prune_changes(t->conn, &deleted, err, sizeof err) != POOLD_OK)
        log_event(LOG_WARN, "org_changes not pruned", "error", err,
                  (const char *)NULL);
    else
        hk->prune_backlog = deleted == CATALOG_CHANGES_BATCH;
}

static enum hk_outcome step_replica_hook(struct housekeeping *hk,
                                         struct hk_tick *t);

/* In the tick, between its steps and within a long one: the replica's
 * heartbeat, once the last is HK_BEAT_DUE_NS old. The fence trips half a
 * lease (3.5 s) after the last renewal, whatever the tick is doing: a
 * whole directory load at a million orgs, or a bulk change's keys, must
 * not hold the renewal past it. */
static void hk_beat_if_due(struct housekeeping *hk, struct hk_tick *t)
{
    uint64_t now;

    if (!t->beats || hk->reg->hk_fn == NULL || t->conn == NULL ||
        t->rc != POOLD_OK || hk->beat_ns == 0)
        return;
    now = t->clock ? t->clock(t->clock_ctx) : clock_now_ns();
    if (now < hk->beat_ns + HK_BEAT_DUE_NS)
        return;
    t->now = now;
    step_replica_hook(hk, t);
    t->beaten = true; /* the tick's own heartbeat step is done with */
}

struct hk_pace {
    struct housekeeping *hk;
    struct hk_tick *t;
};

static void hk_pace(void *arg)
{
    struct hk_pace *p = arg;
    hk_beat_if_due(p->hk, p->t);
}

/* Apply what changed: the whole directory, or the changed orgs' rows. */
static int hk_apply_changes(struct housekeeping *hk, struct hk_tick *t,
                            const struct catalog_changes *ch)
{
    struct org_info *list = NULL;
    struct hk_pace arg = {hk, t};
    const struct catalog_pace pace = {hk_pace, &arg};
    size_t n = ch->n;
    int rc;

    if (ch->all)
        rc = catalog_load(t->conn, CATALOG_LOAD_PAGE, &pace, &list, &n, t->err,
                          sizeof t->err);
    else
        rc = catalog_load_some(t->conn, ch, &list, t->err, sizeof t->err);
    if (rc != POOLD_OK)
        return rc;
    hk_beat_if_due(hk, t); /* the apply takes a second at a million */
    if (ch->all)
        registry_apply_directory(hk->reg, list, n);
    else
        registry_apply_changes(hk->reg, list, n);
    free(list);
#ifdef __GLIBC__
    /* A whole load's result (a million rows: about 100 MB) was freed in
     * pieces below the entries made since: give those pages back. */
    if (ch->all)
        malloc_trim(0);
#endif
    return POOLD_OK;
}

/* Read which orgs changed since the last read (org_changes, indexed) and
 * apply those: nothing here grows with the number of orgs but a reload
 * of everything (at start, after a bulk write or a long outage). */
static enum hk_outcome step_refresh(struct housekeeping *hk, struct hk_tick *t)
{
    struct catalog_changes ch;
    uint64_t now = clock_now_ns();

    t->rc = catalog_changes_read(t->conn, &hk->cursor, now, &ch, t->err,
                                 sizeof t->err);
    if (t->rc != POOLD_OK)
        return HK_FAILED;
    if (ch.all || ch.n > 0) {
        t->rc = hk_apply_changes(hk, t, &ch);
        if (t->rc != POOLD_OK) {
            catalog_changes_free(&ch);
            return HK_FAILED;
        }
        t->reloaded = true;
    }
    catalog_cursor_advance(&hk->cursor, &ch, now);
    hk_prune(hk, t);
    return HK_RAN;
}

/* Idle services go now, lent ones on release; validate() refuses any that
 * slips between (version check), so stale configuration is never served. */
static void apply_pending_one(void *arg, struct org_entry *e, bool retire,
                              bool resize)
{
    struct registry *reg = arg;
    struct pool *pool = org_entry_pool(e);

    if (retire) {
        pool_retire_all(pool);
        log_event(LOG_INFO, "org configuration changed, services retired",
                  "org", org_entry_id(e), (const char *)NULL);
    }
    if (resize && pool_resize(pool, org_entry_size(reg, e)) != POOLD_OK)
        log_event(LOG_WARN, "pool resize from database failed", "org",
                  org_entry_id(e), (const char *)NULL);
}

/* Only the orgs a refresh marked (those with a pool that changed); the
 * marks stay until applied, even while the database is away. */
static enum hk_outcome step_apply_pending(struct housekeeping *hk,
                                          struct hk_tick *t)
{
    (void)t;
    return registry_foreach_pending(hk->reg, apply_pending_one, hk->reg) > 0
               ? HK_RAN
               : HK_SKIPPED;
}

/* The directory is loaded: requests may be routed. (Rules are no longer
 * parsed here for every org: an org's rules are read and parsed when its
 * pool builds its first service, and kept while it has a pool, so an idle
 * org costs no ruleset — issue 19.) */
static enum hk_outcome step_preload_rules(struct housekeeping *hk,
                                          struct hk_tick *t)
{
    if (!t->reloaded)
        return HK_SKIPPED;
    registry_mark_loaded(hk->reg);
    return HK_RAN;
}

static enum hk_outcome step_watch(struct housekeeping *hk, struct hk_tick *t)
{
    const struct registry_config *cfg = &hk->reg->cfg;

    if (cfg->watch == NULL)
        return HK_SKIPPED;
    t->rc = cfg->watch(cfg->watch_arg, t->conn, t->err, sizeof t->err);
    return t->rc == POOLD_OK ? HK_RAN : HK_FAILED;
}

/* With the connection taken, so no resize is between its store and its
 * apply: a pool whose size is not the stored one (orgs.pool_max_size as last
 * loaded or resized) is resized to it, whatever the cached size says. */
static void sync_size_one(void *arg, struct org_entry *e)
{
    struct registry *reg = arg;
    struct pool *pool = org_entry_pool(e);
    unsigned want = org_entry_size(reg, e);

    if (pool_max_size(pool) != want && pool_resize(pool, want) == POOLD_OK)
        log_event(LOG_WARN, "pool size differed from the stored one, resized",
                  "org", org_entry_id(e), (const char *)NULL);
}

static enum hk_outcome step_sync_sizes(struct housekeeping *hk,
                                       struct hk_tick *t)
{
    (void)t;
    registry_foreach_org(hk->reg, REG_LIVE, sync_size_one, hk->reg);
    return HK_RAN;
}

/* Readiness, or the connection dropped and the next tick backed off. */
static enum hk_outcome step_health(struct housekeeping *hk, struct hk_tick *t)
{
    if (t->rc == POOLD_OK) {
        registry_mark_db_ok(hk->reg, t->now);
        hk->backoff_ns = 0;
        return HK_RAN;
    }
    if (!hk->was_down)
        log_event(LOG_WARN, "database unreachable", "error", t->err,
                  (const char *)NULL);
    hk->was_down = true;
    connpool_close_outside(hk->reg->cp, t->conn);
    t->conn = NULL;
    hk->backoff_ns = breaker_next_backoff(hk->backoff_ns, &hk->seed);
    return HK_FAILED;
}

static void breaker_reset_one(void *arg, struct org_entry *e)
{
    (void)arg;
    breaker_success(org_entry_breaker(e));
}

/* The database answers again: requests may connect at once rather than
 * wait out a backoff window opened while it was down. */
static enum hk_outcome step_breakers(struct housekeeping *hk, struct hk_tick *t)
{
    (void)t;
    if (!hk->was_down)
        return HK_SKIPPED;
    registry_foreach_org(hk->reg, REG_ACTIVE, breaker_reset_one, NULL);
    breaker_success(&hk->reg->db_breaker);
    hk->was_down = false;
    log_event(LOG_INFO, "database reachable again", (const char *)NULL);
    return HK_RAN;
}

/* Connections closed while their backend was at work hold their places
 * until pg_stat_activity shows the backends gone (connpool.h); before the
 * heartbeat, which reports them as open. Not answered: they stay held. */
static enum hk_outcome step_closed_backends(struct housekeeping *hk,
                                            struct hk_tick *t)
{
    char err[REG_ERR_MAX];

    if (connpool_lingering(hk->reg->cp) == 0)
        return HK_SKIPPED;
    if (connpool_check_lingering(hk->reg->cp, t->conn, err, sizeof err) !=
        POOLD_OK) {
        log_event(LOG_WARN, "closed connections' backends not checked", "error",
                  err, (const char *)NULL);
        return HK_FAILED;
    }
    return HK_RAN;
}

static enum hk_outcome step_replica_hook(struct housekeeping *hk,
                                         struct hk_tick *t)
{
    struct registry *reg = hk->reg;

    if (reg->hk_fn == NULL)
        return HK_SKIPPED;
    reg->hk_fn(reg->hk_arg, t->conn, false); /* NULL: database down */
    /* When it ended: one held up (a locked cluster_replicas) makes the
     * next tick's steps no more due than a quick one. */
    hk->beat_ns = t->clock ? t->clock(t->clock_ctx) : clock_now_ns();
    return HK_RAN;
}

/* The tick's heartbeat step, unless one between its steps has just
 * ended (then the next tick's is soon enough). */
static enum hk_outcome step_tick_beat(struct housekeeping *hk,
                                      struct hk_tick *t)
{
    if (t->beaten && t->now < hk->beat_ns + HK_BEAT_RECENT_NS)
        return HK_SKIPPED;
    return step_replica_hook(hk, t);
}

/* --------------------------------------------- steps without connection */

static void maintain_one(void *arg, struct org_entry *e)
{
    pool_maintain(org_entry_pool(e), *(const uint64_t *)arg);
}

static enum hk_outcome step_maintain_pools(struct housekeeping *hk,
                                           struct hk_tick *t)
{
    registry_foreach_org(hk->reg, REG_LIVE, maintain_one, &t->now);
    return HK_RAN;
}

struct holds_arg {
    uint64_t now, warn_ns;
};

static void check_holds_one(void *arg, struct org_entry *e)
{
    const struct holds_arg *a = arg;
    struct holder_info held[HK_HELD_LOG_MAX];
    char ms[24];
    size_t k = holders_check(org_entry_holders(e), a->now, a->warn_ns, held,
                             HK_HELD_LOG_MAX);

    for (size_t j = 0; j < k; j++) {
        snprintf(ms, sizeof ms, "%llu",
                 (unsigned long long)(held[j].held_ns / NS_PER_MS));
        log_event(LOG_WARN, "service held too long", "org", org_entry_id(e),
                  "request_id", held[j].request_id, "route", held[j].route,
                  "held_ms", ms, (const char *)NULL);
    }
}

/* Flag and log, once each, the holds older than POOLD_HOLD_WARN_MS. */
static enum hk_outcome step_check_holds(struct housekeeping *hk,
                                        struct hk_tick *t)
{
    struct holds_arg a = {t->now, hk->reg->cfg.hold_warn_ns};

    if (a.warn_ns == 0)
        return HK_SKIPPED;
    /* Pooled, a hold is of a service: only orgs with services have one. */
    registry_foreach_org(hk->reg, hk->reg->cfg.pooled ? REG_LIVE : REG_ACTIVE,
                         check_holds_one, &a);
    return HK_RAN;
}

static enum hk_outcome step_maintain_conns(struct housekeeping *hk,
                                           struct hk_tick *t)
{
    if (hk->warm_started)
        return HK_SKIPPED; /* the warm thread maintains it */
    pool_maintain(hk->reg->conns, t->now);
    return HK_RAN;
}

/* A build queued for a connection just after the last service was released
 * idle would otherwise wait for the next release anywhere. */
static enum hk_outcome step_reclaim(struct housekeeping *hk, struct hk_tick *t)
{
    (void)t;
    if (!hk->reg->cfg.pooled)
        return HK_SKIPPED;
    registry_reclaim_for_waiters(hk->reg);
    return HK_RAN;
}

/* The active parts (pools) of orgs deleted from the table, once nothing
 * uses them: after apply_pending retired their services, and once every
 * request that had one ended. */
static enum hk_outcome step_free_gone(struct housekeeping *hk,
                                      struct hk_tick *t)
{
    (void)t;
    return registry_free_gone(hk->reg) > 0 ? HK_RAN : HK_SKIPPED;
}

/* Build one service for org_id and leave it idle in its pool. */
static void prewarm_one(struct registry *reg, const char *org_id)
{
    struct org_active *a;
    struct pool_item *item;

    if (registry_route(reg, org_id, &a) != POOLD_OK)
        return;
    /* Quiet: a prewarm that waits in vain is no client's timeout. */
    if (pool_try_acquire(a->pool, reg->cfg.acquire_timeout_ns, &item) ==
        POOLD_OK)
        pool_release(a->pool, item);
    registry_active_release(a);
}

static void prewarm_entry(void *arg, struct org_entry *e)
{
    struct registry *reg = arg;

    if (!atomic_load(&reg->shutting_down))
        prewarm_one(reg, org_entry_id(e));
}

/* Build one service for each org named by POOLD_PREWARM ("all" or a comma
 * list; names not in the directory are skipped). On a thread of its own:
 * builds may take long, and the ticks must go on (readiness, config). */
static void *prewarm_main(void *arg)
{
    struct registry *reg = arg;
    const char *list = reg->prewarm;

    if (strcmp(list, "all") == 0) {
        registry_foreach_org(reg, REG_EVERY, prewarm_entry, reg);
    } else {
        for (const char *p = list; *p && !atomic_load(&reg->shutting_down);) {
            char id[ORG_ID_MAX + 1];
            size_t len = strcspn(p, ",");
            if (len > 0 && len <= ORG_ID_MAX) {
                memcpy(id, p, len);
                id[len] = '\0';
                prewarm_one(reg, id);
            }
            p += len + (p[len] == ',');
        }
    }
    log_event(LOG_INFO, "prewarm done", "orgs", list, (const char *)NULL);
    return NULL;
}

static enum hk_outcome step_prewarm(struct housekeeping *hk, struct hk_tick *t)
{
    struct registry *reg = hk->reg;

    (void)t;
    if (hk->prewarmed || reg->prewarm[0] == '\0' || !reg->cfg.pooled)
        return HK_SKIPPED;
    hk->prewarmed = true;
    hk->prewarm_started =
        pthread_create(&hk->prewarm_thread, NULL, prewarm_main, reg) == 0;
    return hk->prewarm_started ? HK_RAN : HK_FAILED;
}

/* --------------------------------------------------------------- a tick */

enum {
    HK_STEP_CONNECT,
    HK_STEP_REFRESH,
    HK_STEP_APPLY_PENDING,
    HK_STEP_PRELOAD_RULES,
    HK_STEP_WATCH,
    HK_STEP_SYNC_SIZES,
    HK_STEP_HEALTH,
    HK_STEP_BREAKERS,
    HK_STEP_CLOSED_BACKENDS,
    HK_STEP_REPLICA_HOOK,
    HK_STEP_MAINTAIN_POOLS,
    HK_STEP_CHECK_HOLDS,
    HK_STEP_MAINTAIN_CONNS,
    HK_STEP_RECLAIM,
    HK_STEP_FREE_GONE,
    HK_STEP_PREWARM,
    HK_STEP__COUNT
};

struct hk_step {
    const char *name;
    unsigned flags;
    enum hk_outcome (*run)(struct housekeeping *hk, struct hk_tick *t);
};

static const struct hk_step hk_steps[HK_STEP__COUNT] = {
    [HK_STEP_CONNECT] = {"connect", HK_CONN, step_connect},
    [HK_STEP_REFRESH] = {"refresh", HK_CONN | HK_DB | HK_REFRESH, step_refresh},
    /* No HK_DB: a refresh's marks stay until applied, database or not. */
    [HK_STEP_APPLY_PENDING] = {"apply_pending", HK_CONN | HK_REFRESH,
                               step_apply_pending},
    [HK_STEP_PRELOAD_RULES] = {"preload_rules", HK_CONN | HK_DB | HK_REFRESH,
                               step_preload_rules},
    [HK_STEP_WATCH] = {"watch", HK_CONN | HK_DB | HK_REFRESH, step_watch},
    [HK_STEP_SYNC_SIZES] = {"sync_sizes", HK_CONN, step_sync_sizes},
    [HK_STEP_HEALTH] = {"health", HK_CONN, step_health},
    [HK_STEP_BREAKERS] = {"breakers", HK_CONN | HK_DB, step_breakers},
    [HK_STEP_CLOSED_BACKENDS] = {"closed_backends", HK_CONN | HK_DB,
                                 step_closed_backends},
    [HK_STEP_REPLICA_HOOK] = {"replica_hook", HK_CONN, step_tick_beat},
    [HK_STEP_MAINTAIN_POOLS] = {"maintain_pools", 0, step_maintain_pools},
    [HK_STEP_CHECK_HOLDS] = {"check_holds", 0, step_check_holds},
    [HK_STEP_MAINTAIN_CONNS] = {"maintain_conns", 0, step_maintain_conns},
    [HK_STEP_RECLAIM] = {"reclaim", 0, step_reclaim},
    [HK_STEP_FREE_GONE] = {"free_gone", 0, step_free_gone},
    [HK_STEP_PREWARM] = {"prewarm", HK_LOADED, step_prewarm},
};

const char *housekeeping_step_name(size_t i)
{
    return i < HK_STEP__COUNT ? hk_steps[i].name : NULL;
}

/* Run steps first..last of a tick (the caller has the connection taken if
 * any of them is HK_CONN). */
static void hk_run(struct housekeeping *hk, struct hk_tick *t, size_t first,
                   size_t last, struct hk_step_report *out, size_t max)
{
    for (size_t i = first; i <= last; i++) {
        const struct hk_step *s = &hk_steps[i];
        enum hk_outcome o = HK_SKIPPED;

        if ((s->flags & HK_CONN) && i != HK_STEP_CONNECT &&
            i != HK_STEP_REPLICA_HOOK)
            hk_beat_if_due(hk, t);
        t->now = t->clock ? t->clock(t->clock_ctx) : clock_now_ns();
        if (!((s->flags & HK_DB) && t->rc != POOLD_OK) &&
            !((s->flags & HK_LOADED) && !atomic_load(&hk->reg->loaded)) &&
            !((s->flags & HK_REFRESH) && !t->refreshing))
            o = s->run(hk, t);
        if (out != NULL && i < max)
            out[i] = (struct hk_step_report){s->name, o};
    }
}

/* The tick's steps without HK_CONN must not touch the connection. */
static void hk_give_back(struct housekeeping *hk, struct hk_tick *t)
{
    housekeeping_conn_give(hk, t->conn);
    t->conn = NULL;
}

size_t housekeeping_tick(struct housekeeping *hk, clock_fn clock,
                         void *clock_ctx, struct hk_step_report *out,
                         size_t max)
{
    struct hk_tick t = {.clock = clock, .clock_ctx = clock_ctx, .beats = true};
    bool taken = false;

    /* The connection is taken for the HK_CONN steps only (they come
     * first). It is the tick's own: admin calls use pooled connections. */
    for (size_t i = 0; i < HK_STEP__COUNT; i++) {
        bool conn = (hk_steps[i].flags & HK_CONN) != 0;
        bool refresh = (hk_steps[i].flags & HK_REFRESH) != 0;

        if (conn && !taken)
            t.conn = housekeeping_conn_take(hk);
        else if (!conn && taken)
            hk_give_back(hk, &t);
        taken = conn;
        /* Never waits: an admin call holding it runs these steps now. */
        if (refresh && !t.refreshing)
            t.refreshing = pthread_mutex_trylock(&hk->refresh_lock) == 0;
        else if (!refresh && t.refreshing) {
            pthread_mutex_unlock(&hk->refresh_lock);
            t.refreshing = false;
        }
        hk_run(hk, &t, i, i, out, max);
    }
    if (taken)
        hk_give_back(hk, &t);
    if (t.refreshing)
        pthread_mutex_unlock(&hk->refresh_lock);
    return HK_STEP__COUNT;
}

/* The monotonic deadline at_ns as a CLOCK_REALTIME time (for
 * pthread_mutex_timedlock, which knows no other clock). */
static void realtime_at(struct timespec *ts, uint64_t at_ns)
{
    uint64_t now = clock_now_ns(), left = at_ns > now ? at_ns - now : 0;

    clock_gettime(CLOCK_REALTIME, ts);
    left += (uint64_t)ts->tv_nsec;
    ts->tv_sec += (time_t)(left / NS_PER_S);
    ts->tv_nsec = (long)(left % NS_PER_S);
}

int housekeeping_refresh(struct housekeeping *hk, struct db_conn *conn,
                         char *err, size_t errlen)
{
    struct hk_tick t = {.conn = conn, .rc = POOLD_OK, .refreshing = true};
    uint64_t deadline = db_thread_deadline_get();
    struct timespec ts;

    /* Within the caller's deadline: the tick may be refreshing now. */
    if (deadline == 0)
        deadline = clock_now_ns() + hk->reg->cfg.acquire_timeout_ns;
    realtime_at(&ts, deadline);
    if (pthread_mutex_timedlock(&hk->refresh_lock, &ts) != 0) {
        snprintf(err, errlen,
                 "the directory refresh is busy; the next tick "
                 "does it");
        return POOLD_ERR_TIMEOUT;
    }
    hk_run(hk, &t, HK_STEP_REFRESH, HK_STEP_WATCH, NULL, 0);
    pthread_mutex_unlock(&hk->refresh_lock);
    if (t.rc != POOLD_OK)
        snprintf(err, errlen, "%s", t.err);
    return t.rc;
}

/* ------------------------------------------------------------ threads */

/* Under hk->lock: wait until ns from now or a stop. */
static void hk_wait(struct housekeeping *hk, uint64_t ns)
{
    struct timespec ts;

    clock_timespec_at(&ts, clock_now_ns() + ns);
    while (!hk->stop && pthread_cond_timedwait(&hk->cond, &hk->lock, &ts) == 0)
        ;
}

static void *hk_main(void *arg)
{
    struct housekeeping *hk = arg;
    uint64_t interval = hk->reg->cfg.refresh_interval_ns;

    pthread_mutex_lock(&hk->lock);
    while (!hk->stop) {
        pthread_mutex_unlock(&hk->lock);
        housekeeping_tick(hk, NULL, NULL, NULL, 0);
        pthread_mutex_lock(&hk->lock);
        hk_wait(hk, hk->backoff_ns ? hk->backoff_ns : interval);
    }
    pthread_mutex_unlock(&hk->lock);
    return NULL;
}

/* The connection pool's upkeep on a thread of its own: opening the
 * POOLD_DB_MIN_IDLE warm connections (at start-up, and after TTL recycling
 * or failures) must not stall the directory refresh. Each round is bounded
 * so that a stop is never held by a silent database for long. */
static void *warm_main(void *arg)
{
    struct housekeeping *hk = arg;
    struct registry *reg = hk->reg;

    pthread_mutex_lock(&hk->lock);
    while (!hk->stop) {
        pthread_mutex_unlock(&hk->lock);
        db_thread_deadline(clock_now_ns() + HK_WARM_ROUND_NS);
        pool_maintain(reg->conns, clock_now_ns());
        db_thread_deadline(0);
        pthread_mutex_lock(&hk->lock);
        hk_wait(hk, reg->cfg.refresh_interval_ns);
    }
    pthread_mutex_unlock(&hk->lock);
    return NULL;
}

/* After a round of processed_messages' partitions and the audit log's
 * retention (registry_config.lifecycle) that ended with rc: the next one
 * every lifecycle_interval_ns; a failure logged and tried again a minute
 * later at most. */
static void lifecycle_after(struct housekeeping *hk, int rc, const char *err)
{
    uint64_t interval = hk->reg->cfg.lifecycle_interval_ns;
    uint64_t retry = 60 * NS_PER_S;

    if (rc == POOLD_OK) {
        hk->lifecycle_due = clock_now_ns() + interval;
        return;
    }
    log_event(LOG_WARN, "data lifecycle step failed, will retry", "error", err,
              (const char *)NULL);
    hk->lifecycle_due = clock_now_ns() + (interval < retry ? interval : retry);
}

/* The lifecycle on a thread of its own: a round waits for table locks and
 * deletes rows, and must not hold up the tick, which renews the replica's
 * lease (DESIGN.md, "Background work never waits behind a request"). It
 * borrows a connection of the cap for a round (hourly at most), as an
 * operator call does: the one connection outside the cap is the tick's.
 * While the database does not answer the tick, no round is tried. */
static void *lifecycle_main(void *arg)
{
    struct housekeeping *hk = arg;
    struct registry *reg = hk->reg;
    const struct registry_config *cfg = &reg->cfg;
    char err[REG_ERR_MAX];
    uint64_t now;

    pthread_mutex_lock(&hk->lock);
    while (!hk->stop) {
        now = clock_now_ns();
        if (atomic_load(&reg->shutting_down))
            break;
        if (now < hk->lifecycle_due || !registry_db_answers(reg)) {
            hk_wait(hk, now < hk->lifecycle_due ? hk->lifecycle_due - now
                                                : reg->cfg.refresh_interval_ns);
            continue;
        }
        pthread_mutex_unlock(&hk->lock);
        lifecycle_after(hk,
                        registry_with_conn(reg, true, cfg->lifecycle,
                                           cfg->lifecycle_arg, err, sizeof err),
                        err);
        pthread_mutex_lock(&hk->lock);
    }
    pthread_mutex_unlock(&hk->lock);
    return NULL;
}

/* Connect and check the schema: POOLD_ERR_DB only for a reachable
 * database without it. */
static int hk_start_connect(struct housekeeping *hk, struct hk_tick *t)
{
    t->rc = housekeeping_conn_ready(hk, &t->conn, t->err, sizeof t->err);
    if (t->rc != POOLD_OK) {
        log_event(LOG_WARN, "database unreachable at start-up, will retry",
                  "error", t->err, (const char *)NULL);
        return POOLD_OK;
    }
    if (catalog_check_schema(t->conn, t->err, sizeof t->err) != POOLD_OK) {
        log_event(LOG_ERROR, "database schema missing", "error", t->err,
                  (const char *)NULL);
        return POOLD_ERR_DB;
    }
    return POOLD_OK;
}

int housekeeping_start(struct housekeeping *hk)
{
    struct registry *reg = hk->reg;
    struct hk_tick t = {.rc = POOLD_OK};
    int rc;

    t.conn = housekeeping_conn_take(hk);
    rc = hk_start_connect(hk, &t);
    t.refreshing = true; /* no thread runs yet */
    if (rc == POOLD_OK && t.rc == POOLD_OK) {
        hk_run(hk, &t, HK_STEP_REFRESH, HK_STEP_PRELOAD_RULES, NULL, 0);
        if (t.rc == POOLD_OK)
            registry_mark_db_ok(reg, clock_now_ns());
        /* Partitions exist before the first request (when the database
         * answers at start-up; else the lifecycle thread's first round). */
        if (t.rc == POOLD_OK && reg->cfg.lifecycle != NULL)
            lifecycle_after(hk,
                            reg->cfg.lifecycle(reg->cfg.lifecycle_arg, t.conn,
                                               t.err, sizeof t.err),
                            t.err);
    }
    if (rc == POOLD_OK)
        hk_run(hk, &t, HK_STEP_REPLICA_HOOK, HK_STEP_REPLICA_HOOK, NULL, 0);
    housekeeping_conn_give(hk, t.conn);
    if (rc != POOLD_OK)
        return rc;
    /* The warm thread first: the ticks read warm_started. */
    if (reg->cfg.pooled && reg->cfg.db_min_idle > 0) {
        hk->warm_started =
            pthread_create(&hk->warm_thread, NULL, warm_main, hk) == 0;
        if (!hk->warm_started)
            return POOLD_ERR_NOMEM;
    }
    if (pthread_create(&hk->thread, NULL, hk_main, hk) != 0)
        return POOLD_ERR_NOMEM;
    hk->started = true;
    if (reg->cfg.lifecycle != NULL) {
        hk->lifecycle_started = pthread_create(&hk->lifecycle_thread, NULL,
                                               lifecycle_main, hk) == 0;
        if (!hk->lifecycle_started)
            return POOLD_ERR_NOMEM;
    }
    return POOLD_OK;
}

/* ------------------------------------------------------------ lifecycle */

int housekeeping_create(struct registry *reg, struct housekeeping **out)
{
    struct housekeeping *hk = calloc(1, sizeof *hk);
    pthread_condattr_t ca;

    if (hk == NULL)
        return POOLD_ERR_NOMEM;
    hk->reg = reg;
    hk->seed = (unsigned)clock_now_ns() ^ (unsigned)(uintptr_t)hk;
    pthread_mutex_init(&hk->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hk->cond, &ca);
    pthread_cond_init(&hk->conn_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&hk->refresh_lock, NULL);
    *out = hk;
    return POOLD_OK;
}

void housekeeping_stop(struct housekeeping *hk)
{
    if (hk == NULL)
        return;
    pthread_mutex_lock(&hk->lock);
    hk->stop = true;
    pthread_cond_broadcast(&hk->cond);
    pthread_mutex_unlock(&hk->lock);
    if (hk->started)
        pthread_join(hk->thread, NULL);
    if (hk->warm_started)
        pthread_join(hk->warm_thread, NULL);
    if (hk->lifecycle_started)
        pthread_join(hk->lifecycle_thread, NULL);
    /* After the pools were shut down: its acquires fail at once. */
    if (hk->prewarm_started)
        pthread_join(hk->prewarm_thread, NULL);
    hk->started = hk->warm_started = hk->prewarm_started = false;
    hk->lifecycle_started = false;
}

/* At the end, on the housekeeping connection: wait (bounded) until the
 * backends of connections closed with a statement in flight are gone.
 * False if some may remain (not seen gone, or the database did not
 * answer). */
static bool hk_closed_backends_gone(struct housekeeping *hk)
{
    struct connpool *cp = hk->reg->cp;
    uint64_t until = clock_now_ns() + HK_LINGER_WAIT_NS;
    char err[REG_ERR_MAX];

    db_thread_deadline(until);
    while (connpool_lingering(cp) > 0 && clock_now_ns() < until &&
           connpool_check_lingering(cp, hk->conn, err, sizeof err) ==
               POOLD_OK &&
           connpool_lingering(cp) > 0)
        clock_sleep_ms(HK_LINGER_POLL_MS);
    db_thread_deadline(0);
    return connpool_lingering(cp) == 0;
}

void housekeeping_destroy(struct housekeeping *hk)
{
    struct registry *reg;

    if (hk == NULL)
        return;
    reg = hk->reg;
    /* Every pooled connection is closed: a replica gives its share back,
     * unless a backend of one may still be at work; then its lease
     * expires instead (bounded, and the others wait for it). */
    if (reg->hk_fn && hk->conn && !hk_closed_backends_gone(hk))
        log_event(LOG_WARN,
                  "backends of closed connections may still be at work: "
                  "the replica's share is left to expire with its lease",
                  (const char *)NULL);
    else if (reg->hk_fn && hk->conn)
        reg->hk_fn(reg->hk_arg, hk->conn, true);
    db_conn_close(hk->conn);
    catalog_cursor_deinit(&hk->cursor);
    pthread_cond_destroy(&hk->cond);
    pthread_cond_destroy(&hk->conn_cond);
    pthread_mutex_destroy(&hk->refresh_lock);
    pthread_mutex_destroy(&hk->lock);
    free(hk);
}
