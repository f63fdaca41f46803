/* Liveness and readiness. */
#include <errno.h>
#include <stdlib.h>

#include "aio/aio.h"
#include "routes/handler.h"
#include "server/server.h"

static int healthz(server_req *r)
{
    static const char body[] = "{\"status\":\"ok\"}";
    server_respond(r, 200, "application/json", body, sizeof(body) - 1);
    return 0;
}

static const db_stmt READY = DB_QUERY("h2pg_ready", "SELECT 1", 0, "i");

/* Ready when a pool connection answers SELECT 1 within a second. */
static int readyz(server_req *r)
{
    if (server_stopping()) {
        server_respond_problem(r, 503, "the server is shutting down", NULL);
        return 0;
    }
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_SEC(1));
    PGresult *res = NULL;
    int rc = db_exec(NULL, &READY, DB_NO_PARAMS, &res);
    bool expired = aio_timeout_close(&scope) < 0;
    PQclear(res);
    if (rc == 0) {
        static const char body[] = "{\"status\":\"ready\"}";
        server_respond(r, 200, "application/json", body, sizeof(body) - 1);
    } else if (rc != -ECANCELED) {
        server_respond_problem(r, 503, expired ? "the database did not answer in time" : "the database is unavailable",
                               NULL);
    }
    return 0;
}

static int metrics(server_req *r)
{
    size_t len;
    char *text = server_render_metrics(&len);
    if (text == NULL) {
        server_respond_problem(r, 500, "out of memory", NULL);
        return 0;
    }
    server_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return 0;
}

/* probes and scrapes: open, and never rate limited */
ROUTES({.method = "GET", .pattern = "/healthz", .handler = healthz, .immediate = true, .open = true, .unlimited = true},
       {.method = "GET", .pattern = "/metrics", .handler = metrics, .immediate = true, .open = true, .unlimited = true},
       {.method = "GET", .pattern = "/readyz", .handler = readyz, .open = true, .unlimited = true});
