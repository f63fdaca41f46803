/* The serving process: THREADS worker threads, each with its own event
 * loop, listening socket (SO_REUSEPORT, so the kernel spreads connections),
 * h2o context and timers. Threads share nothing mutable on the hot path.
 *
 * The server knows HTTP, not the database: what the handlers need on each
 * worker (connection pools), the middleware around every handler (error
 * mapping), extra metrics and the `migrate` subcommand come from the
 * application above it, described by a server_app.
 *
 * SIGTERM or SIGINT starts a graceful shutdown: /readyz turns 503, the
 * listeners close, requests in flight get SHUTDOWN_GRACE_MS to finish, then
 * whatever is left is cancelled, idle keep-alive connections are closed,
 * the application's worker state is stopped, and the process exits 0. */
#ifndef H2PG_SERVER_SERVER_H
#define H2PG_SERVER_SERVER_H

#include <stdbool.h>

#include "server/config.h"
#include "server/http.h"
#include "server/metrics.h"

typedef struct server_app {
    const server_route_def *routes;
    size_t nroutes;
    /* Middleware: runs each handler (NULL: the handler alone). */
    int (*around)(server_req *r, server_handler_fn handler);
    /* On each worker thread, in a task on its loop, before it accepts:
     * sets up what the handlers need; 0, or < 0 to stop the process (the
     * reason logged). *state is the worker's, handed to the hooks below. */
    int (*worker_start)(const server_config *cfg, int worker, void **state);
    /* When the shutdown starts, on each worker, before the grace period
     * (never awaits): end what would otherwise run until cancelled, such
     * as streams that never finish by themselves. */
    void (*worker_stopping)(void *state);
    /* At shutdown, in a task of the worker, after its requests ended. */
    void (*worker_stop)(void *state);
    /* Once a second on each worker: refresh the metrics the application
     * defined (server_metrics_define). */
    void (*worker_sample)(void *state);
    /* The migrate subcommand, and serve's MIGRATE_ON_START: 0 or an exit
     * status. Runs before any loop: blocking is fine. */
    int (*migrate)(const server_config *cfg);
} server_app;

/* The process: parses the configuration (a bad value exits 2 naming the
 * variable) and runs the subcommand: serve (the default), migrate,
 * healthcheck, --help, --version. Returns the exit status. */
int server_main(int argc, char **argv, const server_app *app);

/* Serves until a signal asks it to stop. Blocks; returns the exit status
 * (0 after a graceful stop; 1 if the listeners could not be set up, with
 * the reason logged). */
int server_run(const server_config *cfg, const server_app *app);

/* Checks what server_run would reject in cfg before anything starts
 * (TRUSTED_PROXIES; TLS_CERT_FILE/TLS_KEY_FILE, which it loads): 0 or -EINVAL
 * with a message naming the variable. */
int server_check_config(const server_config *cfg, char *err, size_t errlen);

/* Whether this worker is shutting down (readiness reports 503). */
bool server_stopping(void);

/* Every worker's metrics as Prometheus text (malloc'd; NULL on ENOMEM). */
char *server_render_metrics(size_t *len);

#endif
