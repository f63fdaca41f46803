/* Liveness and readiness. */
#include <errno.h>
#include <stdlib.h>

#include "db/db.h"
#include "routes/routes.h"
#include "server/aio/aio.h"
#include "server/server.h"

static int healthz(server_req *r)
{
    static const char body[] = "{\"status\":\"ok\"}";
    server_respond(r, 200, "application/json", body, sizeof(body) - 1);
    return 0;
}

static const db_stmt READY = DB_STMT("h2pg_ready", "SELECT 1", 0);

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
    int rc = db_exec(NULL, &READY, NULL, &res);
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

static const server_route_def table[] = {
    {"GET", "/healthz", healthz, true},
    {"GET", "/metrics", metrics, true},
    {"GET", "/readyz", readyz, false},
};

const server_route_def *routes_health(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
