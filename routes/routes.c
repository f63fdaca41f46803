#include <stdlib.h>
#include <string.h>

#include "routes/routes.h"

typedef const server_route_def *(*table_fn)(size_t *n);

static const table_fn modules[] = {routes_health, routes_bench, routes_users, routes_orders, routes_accounts, routes_export, routes_openapi};

const server_route_def *routes_all(size_t *n)
{
    /* built once at start, before any thread; lives as long as the process */
    static server_route_def *all;
    static size_t count;
    if (all == NULL) {
        size_t total = 0, k;
        for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
            modules[i](&k);
            total += k;
        }
        all = calloc(total, sizeof(*all));
        if (all == NULL) {
            *n = 0;
            return NULL;
        }
        for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
            const server_route_def *t = modules[i](&k);
            memcpy(all + count, t, k * sizeof(*t));
            count += k;
        }
    }
    *n = count;
    return all;
}
