/* Every route of the service, by module. Handlers answer with the
 * server_respond* calls (server/http.h) and read straight: database calls
 * await inside them. */
#ifndef H2PG_ROUTES_ROUTES_H
#define H2PG_ROUTES_ROUTES_H

#include <stddef.h>

#include "server/http.h"

/* The whole table, for server_run (static storage). */
const server_route_def *routes_all(size_t *n);

/* Per module (each returns its static table). */
const server_route_def *routes_health(size_t *n);
const server_route_def *routes_bench(size_t *n);
const server_route_def *routes_users(size_t *n);
const server_route_def *routes_orders(size_t *n);
const server_route_def *routes_accounts(size_t *n);
const server_route_def *routes_export(size_t *n);
const server_route_def *routes_openapi(size_t *n);

#endif
