/* dashboard.c — look up the operator page's built-in files by name. */
#include "dashboard.h"

#include <string.h>

const struct dashboard_asset *dashboard_asset_find(const char *name)
{
    for (size_t i = 0; i < dashboard_nassets; i++)
        if (strcmp(dashboard_assets[i].name, name) == 0)
            return &dashboard_assets[i];
    return NULL;
}
