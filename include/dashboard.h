/* dashboard.h — the operator's page (GET /dashboard): files built into the
 * binary at build time (cmake/embed_assets.cmake makes the table from
 * dashboard/), so poold serves it with nothing fetched from elsewhere. */
#ifndef POOLD_DASHBOARD_H
#define POOLD_DASHBOARD_H

#include <stddef.h>

#define DASHBOARD_NAME_MAX 64

struct dashboard_asset {
    const char *name;          /* file name in dashboard/, e.g. "app.js" */
    const unsigned char *data; /* static, never freed */
    size_t len;
    const char *content_type; /* static */
};

/* The generated table (dashboard_assets.c in the build tree). */
extern const struct dashboard_asset dashboard_assets[];
extern const size_t dashboard_nassets;

/* The asset called name, or NULL. Thread-safe (read-only data). */
const struct dashboard_asset *dashboard_asset_find(const char *name);

#endif
