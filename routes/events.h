/* GET /events (routes/events.c): each worker's event hub, set up and torn
 * down by the application (routes/app.c). All on the worker's thread. */
#ifndef H2PG_ROUTES_EVENTS_H
#define H2PG_ROUTES_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "db/pool.h"

/* Before the worker serves: where its hub LISTENs (NULL: it polls), how
 * often it polls (ns; with LISTEN, it sweeps every ten times that) and the
 * heartbeat interval (ns). The pool is borrowed and must outlive the hub. */
void routes_events_configure(db_pool *listen_pool, int64_t poll, int64_t heartbeat);

/* The shutdown started: every stream ends (clients reconnect elsewhere
 * with Last-Event-ID). Never awaits. */
void routes_events_stopping(void);

/* After the worker's requests ended, before its pools go: stops the hub. */
void routes_events_stop(void);

/* Streams open on this worker now. */
size_t routes_events_subscribers(void);

#endif
