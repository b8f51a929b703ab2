/* service_test.h — for the tests only (tests/integration/check_service.c):
 * one message through a service at a time (hydrate, then process); poold
 * itself commits through service_process_many(). */
#ifndef POOLD_SERVICE_TEST_H
#define POOLD_SERVICE_TEST_H

#include "service.h"

/* Attach a message for the next service_process(). msg is borrowed until
 * service_reset(). */
void service_hydrate(struct service *svc, const struct message *msg);

/*
 * Evaluate the rules on the hydrated message and commit the result row, once:
 * the same (org, id, payload) again gives the stored result with duplicate
 * set and writes nothing. Returns POOLD_OK (the row is committed),
 * POOLD_ERR_CONFLICT (same id, other payload), POOLD_ERR_DB (nothing was
 * written; the service should then be released as broken) or
 * POOLD_ERR_COMMIT_UNKNOWN (sent, answer lost; release as broken).
 */
POOLD_MUSTCHECK int service_process(struct service *svc,
                                    struct service_result *out, char *err,
                                    size_t errlen);

/* The org this service was built for; borrowed for the service's life. */
const char *service_org(const struct service *svc);

#endif
