/* The serving process: THREADS worker threads, each with its own event
 * loop, listening socket (SO_REUSEPORT, so the kernel spreads connections),
 * h2o context, database pool slice and timers. Threads share nothing
 * mutable on the hot path.
 *
 * SIGTERM or SIGINT starts a graceful shutdown: /readyz turns 503, the
 * listeners close, requests in flight get SHUTDOWN_GRACE_MS to finish, then
 * whatever is left is cancelled (with its queries), idle keep-alive
 * connections are closed, the pools are closed, and the process exits 0. */
#ifndef H2PG_SERVER_SERVER_H
#define H2PG_SERVER_SERVER_H

#include <stdbool.h>

#include "server/config.h"
#include "server/http.h"

/* Serves routes until a signal asks it to stop. Blocks; returns the exit
 * status (0 after a graceful stop; 1 if the listeners could not be set up,
 * with the reason logged). */
int server_run(const server_config *cfg, const server_route_def *routes, size_t nroutes);

/* Checks what server_run would reject in cfg before anything starts
 * (TRUSTED_PROXIES; TLS_CERT_FILE/TLS_KEY_FILE, which it loads): 0 or -EINVAL
 * with a message naming the variable. */
int server_check_config(const server_config *cfg, char *err, size_t errlen);

/* Whether this worker is shutting down (readiness reports 503). */
bool server_stopping(void);

/* Every worker's metrics as Prometheus text (malloc'd; NULL on ENOMEM). */
char *server_render_metrics(size_t *len);

#endif
