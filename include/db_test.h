/* db_test.h — for the tests only: which backend a connection
 * is (tests/integration/check_db.c, check_service.c). */
#ifndef POOLD_DB_TEST_H
#define POOLD_DB_TEST_H

#include "db.h"

/* The backend's process id (for tests). */
int db_conn_backend_pid(const struct db_conn *conn);

#endif
