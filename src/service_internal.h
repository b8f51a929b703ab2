/* service_internal.h — what service.c and service_commit.c share; not an
 * API. service.c builds a service and evaluates its rules;
 * service_commit.c commits processed messages on its connection. */
#ifndef POOLD_SERVICE_INTERNAL_H
#define POOLD_SERVICE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "orgid.h"
#include "rules.h"
#include "service.h"

/* A growable buffer for one binary array parameter of the commit; kept by
 * the service so a warm commit allocates nothing. */
struct svc_arr {
    char *buf;
    size_t len, cap;
    bool oom;
};
#define SVC_ARRS 6 /* ids, passed, checks, failed rules, digests, orgs */

/* Small on purpose: an idle pooled service is this, its ruleset, its commit
 * buffers and the pooled connection it holds. */
struct service {
    const struct service_env *env; /* borrowed for the service's life */
    struct pool_item *item;        /* the pooled connection, or NULL when
                                      conn is our own (env->conns NULL) */
    struct db_conn *conn;          /* never NULL */
    const struct message *msg;     /* hydrated message (borrowed) or NULL */
    long long config_version;      /* of the orgs row rules came from */
    struct ruleset rules;
    struct svc_arr arrs[SVC_ARRS];
    bool guarded; /* the last insert sent a guarded form */
    char org_id[ORG_ID_MAX + 1];
};

#define SVC_SCOPE_PARAMS 5 /* $7 .. $11 of the inserts */

/* The scope parameters of a commit, copied out of the shared scope. */
struct svc_scope_args {
    char window[32];
    char ts[SVC_SCOPE_PARAMS - 1][SERVICE_SCOPE_TS];
    const char *values[SVC_SCOPE_PARAMS]; /* NULL: unknown */
    enum svc_form { SVC_FORM_FULL, SVC_FORM_PROBE, SVC_FORM_FAST } form;
};

/* The window, the bounds of the partition poold's clock says now falls in,
 * and the form that clock says (service_scope.c). */
void svc_scope_args(const struct service *svc, struct svc_scope_args *a);

/* A guarded form left a message undecided: commits send the full
 * statement for a while, and poold says so once (service_scope.c). */
void svc_guard_missed(const struct service *svc);

#endif
