/* status.c — names of the project-wide status codes. */
#include "status.h"

const char *poold_status_str(int status)
{
    switch ((enum poold_status)status) {
    case POOLD_OK:
        return "ok";
    case POOLD_ERR_NOMEM:
        return "out of memory";
    case POOLD_ERR_INVALID:
        return "invalid argument";
    case POOLD_ERR_TIMEOUT:
        return "timed out";
    case POOLD_ERR_WAITERS_FULL:
        return "too many waiters";
    case POOLD_ERR_SHUTDOWN:
        return "shutting down";
    case POOLD_ERR_CREATE:
        return "create failed";
    case POOLD_ERR_DB:
        return "database unavailable";
    case POOLD_ERR_UNKNOWN_ORG:
        return "unknown org";
    case POOLD_ERR_MISCONFIGURED:
        return "org misconfigured";
    case POOLD_ERR_CONFLICT:
        return "id conflict";
    case POOLD_ERR_NOT_FOUND:
        return "not found";
    case POOLD_ERR_NOT_READY:
        return "not ready";
    case POOLD_ERR_COMMIT_UNKNOWN:
        return "commit outcome unknown";
    case POOLD_ERR_PAUSED:
        return "org paused";
    case POOLD_ERR_DB_BUSY:
        return "database busy";
    case POOLD_ERR_CONNS_BUSY:
        return "connections busy";
    }
    return "unknown status";
}
