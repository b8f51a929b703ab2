/* orgid.c — the org-id check every layer shares. */
#include "orgid.h"

bool orgid_is_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > ORG_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}
