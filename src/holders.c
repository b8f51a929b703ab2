/* holders.c — a list of the holds on an org's services, for operators. */
#include "holders.h"

#include <stdio.h>
#include <string.h>

void holders_init(struct holders *hs)
{
    pthread_mutex_init(&hs->lock, NULL);
    hs->head = NULL;
    hs->n = 0;
    atomic_init(&hs->held_too_long, 0);
}

void holders_deinit(struct holders *hs)
{
    pthread_mutex_destroy(&hs->lock);
}

void holders_add(struct holders *hs, struct holder *h, const char *request_id,
                 const char *route, uint64_t now_ns)
{
    snprintf(h->request_id, sizeof h->request_id, "%s",
             request_id ? request_id : "");
    snprintf(h->route, sizeof h->route, "%s", route ? route : "");
    h->since_ns = now_ns;
    h->warned = false;
    h->prev = NULL;
    pthread_mutex_lock(&hs->lock);
    h->next = hs->head;
    if (hs->head != NULL)
        hs->head->prev = h;
    hs->head = h;
    hs->n++;
    pthread_mutex_unlock(&hs->lock);
}

static bool holder_over(const struct holder *h, uint64_t now_ns,
                        uint64_t warn_ns)
{
    return warn_ns > 0 && now_ns > h->since_ns &&
           now_ns - h->since_ns > warn_ns;
}

bool holders_remove(struct holders *hs, struct holder *h, uint64_t now_ns,
                    uint64_t warn_ns)
{
    bool flag;

    pthread_mutex_lock(&hs->lock);
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        hs->head = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    hs->n--;
    flag = !h->warned && holder_over(h, now_ns, warn_ns);
    h->warned |= flag;
    pthread_mutex_unlock(&hs->lock);
    if (flag)
        atomic_fetch_add(&hs->held_too_long, 1);
    return flag;
}

static void holder_copy(struct holder_info *out, const struct holder *h,
                        uint64_t now_ns)
{
    memcpy(out->request_id, h->request_id, sizeof out->request_id);
    memcpy(out->route, h->route, sizeof out->route);
    out->held_ns = now_ns > h->since_ns ? now_ns - h->since_ns : 0;
}

size_t holders_list(struct holders *hs, struct holder_info *out, size_t max,
                    uint64_t now_ns)
{
    size_t i = 0, n;

    pthread_mutex_lock(&hs->lock);
    for (struct holder *h = hs->head; h != NULL && i < max; h = h->next)
        holder_copy(&out[i++], h, now_ns);
    n = hs->n;
    pthread_mutex_unlock(&hs->lock);
    return n;
}

size_t holders_check(struct holders *hs, uint64_t now_ns, uint64_t warn_ns,
                     struct holder_info *out, size_t max)
{
    size_t flagged = 0;

    if (warn_ns == 0)
        return 0;
    pthread_mutex_lock(&hs->lock);
    for (struct holder *h = hs->head; h != NULL && flagged < max; h = h->next) {
        if (h->warned || !holder_over(h, now_ns, warn_ns))
            continue;
        h->warned = true;
        holder_copy(&out[flagged++], h, now_ns);
    }
    pthread_mutex_unlock(&hs->lock);
    atomic_fetch_add(&hs->held_too_long, flagged);
    return flagged;
}

uint64_t holders_held_too_long(struct holders *hs)
{
    return atomic_load(&hs->held_too_long);
}
