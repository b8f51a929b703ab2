/* message.h — a message, what processing it gave, and one message of a
 * commit: the types the HTTP layer hands the registry. No database here
 * (cmake/header_check.cmake compiles it without libpq). */
#ifndef POOLD_MESSAGE_H
#define POOLD_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "rules.h"

/* A message as the service sees it; every pointer is borrowed. */
struct message {
    const char *id;
    size_t id_len;
    const char *payload;
    size_t payload_len;
    const char *request_id; /* borrowed; for holders/logs (may be NULL) */
    const char *route;      /* borrowed; for holders: "POST /process" */
};

struct service_result {
    bool passed;
    bool duplicate;
    struct rules_verdict verdict;
    unsigned char digest[32]; /* SHA-256 of the payload, stored with the row */
};

/* One message of a commit and what became of it. */
struct service_job {
    const struct message *msg;    /* borrowed for the call */
    const char *org_id;           /* its org (borrowed); NULL: the org of
                                     the service that commits it */
    struct service_result result; /* valid when status is POOLD_OK */
    int status;                   /* POOLD_OK (committed: inserted, or the
                                     stored duplicate), POOLD_ERR_CONFLICT,
                                     or the commit's error for this job */
};

#endif
