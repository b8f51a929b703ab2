/* service_scope.c — the dedupe scope a commit's statements are sent for:
 * the window and the bounds of the time partitions, as housekeeping last
 * read them, and which guarded form poold's clock says (the statements
 * themselves, and why: service_commit.c). */
#include "service.h"
#include "service_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* How far inside a path poold's clock must be to use its guarded form (a
 * wrong guess is safe, see service_commit.c, but costs a lookup and a
 * second try). */
#define SVC_FORM_MARGIN_US 1000000
/* After a guard left a message undecided, commits send the full statement
 * this long: a clock off for long costs one statement a commit, not three. */
#define SVC_GUARD_PAUSE_US 10000000

static void svc_scope_ts(char *buf, int64_t us)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    snprintf(buf, SERVICE_SCOPE_TS, "%04d-%02d-%02d %02d:%02d:%02d.%06ld+00",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(us % 1000000));
}

void service_scope_init(struct service_scope *sc)
{
    memset(sc, 0, sizeof *sc);
    pthread_mutex_init(&sc->lock, NULL);
}

void service_scope_destroy(struct service_scope *sc)
{
    pthread_mutex_destroy(&sc->lock);
}

void service_scope_set(struct service_scope *sc, long long window_s,
                       double zone_s, const int64_t *lo_us,
                       const int64_t *hi_us, size_t n)
{
    struct service_scope_part parts[SERVICE_SCOPE_PARTS];
    int64_t zone = (int64_t)(zone_s * 1e6), window = window_s * 1000000;
    int64_t fast = window > zone ? window : zone;

    if (n > SERVICE_SCOPE_PARTS)
        n = SERVICE_SCOPE_PARTS;
    for (size_t i = 0; i < n; i++) {
        struct service_scope_part *p = &parts[i];
        int64_t lo = lo_us[i] < 0 ? 0 : lo_us[i];

        p->lo_us = lo;
        p->hi_us = hi_us[i];
        svc_scope_ts(p->lo, lo);
        p->calm_from_us = lo + zone;
        svc_scope_ts(p->calm_from, p->calm_from_us);
        p->calm_to_us = hi_us[i] - zone;
        p->fast_from_us = lo + fast;
        svc_scope_ts(p->calm_to, p->calm_to_us);
        svc_scope_ts(p->fast_from, p->fast_from_us);
    }
    pthread_mutex_lock(&sc->lock);
    snprintf(sc->window, sizeof sc->window, "%lld seconds", window_s);
    memcpy(sc->parts, parts, n * sizeof *parts);
    sc->n = n;
    pthread_mutex_unlock(&sc->lock);
}

/* poold's clock in Unix microseconds, as commits read it; under sc->lock. */
static int64_t svc_scope_now(const struct service_scope *sc)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + sc->skew_us;
}

/* The window, the bounds of the partition poold's clock says now falls in,
 * and the form that clock says. The statement checks the bounds against the
 * server's now(): a wrong guess (clock skew, bounds housekeeping has not
 * read yet) inserts nothing with a guarded form, and sends the full
 * statement down the careful path. */
void svc_scope_args(const struct service *svc, struct svc_scope_args *a)
{
    struct service_scope *sc = svc->env->scope;
    int64_t now_us;

    memset(a->values, 0, sizeof a->values);
    a->form = SVC_FORM_FULL;
    if (sc == NULL)
        return;
    pthread_mutex_lock(&sc->lock);
    now_us = svc_scope_now(sc);
    if (sc->window[0] != '\0') {
        memcpy(a->window, sc->window, sizeof a->window);
        a->values[0] = a->window;
    }
    for (size_t i = 0; a->values[0] != NULL && i < sc->n; i++) {
        const struct service_scope_part *p = &sc->parts[i];
        if (p->lo_us > now_us || p->hi_us <= now_us)
            continue;
        memcpy(a->ts[0], p->calm_from, SERVICE_SCOPE_TS);
        memcpy(a->ts[1], p->calm_to, SERVICE_SCOPE_TS);
        memcpy(a->ts[2], p->fast_from, SERVICE_SCOPE_TS);
        memcpy(a->ts[3], p->lo, SERVICE_SCOPE_TS);
        for (int k = 0; k < SVC_SCOPE_PARAMS - 1; k++)
            a->values[k + 1] = a->ts[k];
        if (now_us >= p->calm_to_us - SVC_FORM_MARGIN_US ||
            now_us < sc->guard_pause_until_us)
            break;
        if (now_us >= p->fast_from_us + SVC_FORM_MARGIN_US)
            a->form = SVC_FORM_FAST;
        else if (now_us >= p->calm_from_us + SVC_FORM_MARGIN_US &&
                 now_us < p->fast_from_us - SVC_FORM_MARGIN_US)
            a->form = SVC_FORM_PROBE;
        break;
    }
    pthread_mutex_unlock(&sc->lock);
}

/* A guarded form left a message neither inserted nor stored: the clocks
 * disagree (or, rarely, a concurrent insert was not visible yet). */
void svc_guard_missed(const struct service *svc)
{
    struct service_scope *sc = svc->env->scope;
    int64_t now_us;
    bool pause;

    pthread_mutex_lock(&sc->lock);
    now_us = svc_scope_now(sc);
    pause = now_us >= sc->guard_pause_until_us;
    if (pause)
        sc->guard_pause_until_us = now_us + SVC_GUARD_PAUSE_US;
    pthread_mutex_unlock(&sc->lock);
    if (pause)
        log_event(LOG_WARN,
                  "commit sent for the wrong dedupe path: poold's clock and "
                  "the database's disagree, or poold's partition bounds are "
                  "stale; commits send the full statement for 10 s",
                  "org_id", svc->org_id, (const char *)NULL);
}
