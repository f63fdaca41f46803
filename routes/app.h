/* The service as an application of the server: its routes, middleware,
 * per-worker database pools, database metrics and migrations. */
#ifndef H2PG_ROUTES_APP_H
#define H2PG_ROUTES_APP_H

#include "server/server.h"

/* Fills app and defines the database metrics; call once, before
 * server_main. 0 or -ENOMEM. */
int routes_app(server_app *app);

#endif
