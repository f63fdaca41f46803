/* From a failed call to an answer: the one place that maps database
 * failures (by SQLSTATE) and runtime errors to HTTP statuses. */
#include <errno.h>
#include <string.h>

#include "base/log.h"
#include "routes/handler.h"
#include "server/server.h"

struct sqlstate_answer {
    const char *prefix; /* a SQLSTATE or its class */
    int status;
    const char *detail;
};

/* First match wins; the details never carry SQL or the server's words. */
static const struct sqlstate_answer SQLSTATES[] = {
    {"23505", 409, "a resource with the same unique value already exists"},
    {"23503", 404, "a referenced resource does not exist"},
    {"23514", 422, "the request violates a constraint"},
    {"22003", 422, "the request violates a constraint"},
    {"22001", 422, "the request violates a constraint"},
    {"57014", 504, "the statement was cancelled on the server (statement_timeout)"},
    {"57P01", 503, "the database is unavailable"},
    {"57P03", 503, "the database is unavailable"},
    {"08", 503, "the database is unavailable"},
};

static void fail_remote(server_req *r)
{
    const db_failure *f = db_failure_current();
    const char *st = f != NULL ? f->sqlstate : "";
    for (size_t i = 0; *st && i < sizeof(SQLSTATES) / sizeof(SQLSTATES[0]); i++) {
        if (strncmp(st, SQLSTATES[i].prefix, strlen(SQLSTATES[i].prefix)) == 0) {
            server_respond_problem(r, SQLSTATES[i].status, SQLSTATES[i].detail, NULL);
            return;
        }
    }
    if (*st == '\0')
        log_error("request %s: database error (no error result: a Prepare failed; see the warning above)",
                  server_req_id(r));
    else
        log_error("request %s: database error %s: %s", server_req_id(r), st, f->message);
    server_respond_problem(r, 500, "the request failed", NULL);
}

void routes_fail(server_req *r, int rc)
{
    if (server_responded(r) || rc >= 0)
        return;
    switch (rc) {
    case SERVER_ANSWERED:
        return;
    case -ETIMEDOUT:
        server_respond_problem(r, 504, "the request's deadline passed before it completed", NULL);
        return;
    case -EBUSY:
        server_respond_problem(r, 503, "no database connection became free in time", NULL);
        return;
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -EHOSTUNREACH:
        server_respond_problem(r, 503, "the database is unavailable", NULL);
        return;
    case -ECANCELED:
        /* the client is gone (nobody to answer) or the server is stopping:
         * the front end answers for both */
        return;
    case -EREMOTEIO:
        fail_remote(r);
        return;
    default:
        log_error("request %s: failed: %s", server_req_id(r), strerror(-rc));
        server_respond_problem(r, 500, "the request failed", NULL);
        return;
    }
}

int routes_around(server_req *r, server_handler_fn handler)
{
    db_failure f;
    db_failure_open(&f);
    int rc = handler(r);
    if (rc < 0)
        routes_fail(r, rc);
    db_failure_close(&f);
    return rc;
}
