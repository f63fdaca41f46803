/* From a failed call to an answer: the one place that maps database
 * failures (by SQLSTATE) and runtime errors to HTTP statuses. */
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "aio/aio.h"
#include "base/log.h"
#include "routes/handler.h"
#include "routes/limit.h"
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

static _Thread_local routes_limit limit;

void routes_around_configure(const server_config *cfg)
{
    limit.per_s = cfg->rate_limit_per_s;
    limit.burst = cfg->rate_limit_burst > 0 ? cfg->rate_limit_burst : cfg->rate_limit_per_s > 0 ? cfg->rate_limit_per_s : 1;
}

const routes_caller *routes_caller_of(const server_req *r) { return server_req_local(r); }

/* Takes a token from the caller's bucket and says so in the headers
 * (draft-ietf-httpapi-ratelimit-headers: the policy is BURST requests per
 * the seconds an empty bucket takes to fill; t is, while requests remain,
 * when the bucket is full again, and when none remain, when one is). */
static bool within_limit(server_req *r, const routes_caller *caller)
{
    char key[80], v[96];
    if (caller != NULL)
        snprintf(key, sizeof(key), "u:%lld", (long long)caller->user_id);
    else
        snprintf(key, sizeof(key), "a:%s", server_req_client_addr(r));
    routes_limit_result res;
    routes_limit_take(&limit, key, aio_now(), &res);
    snprintf(v, sizeof(v), "\"default\";q=%lld;w=%lld", (long long)limit.burst,
             (long long)ceil(limit.burst / limit.per_s));
    server_respond_header(r, "ratelimit-policy", v);
    snprintf(v, sizeof(v), "\"default\";r=%lld;t=%lld", (long long)res.remaining,
             (long long)(res.remaining > 0 ? res.full_in : res.retry_after));
    server_respond_header(r, "ratelimit", v);
    if (res.allowed)
        return true;
    snprintf(v, sizeof(v), "%lld", (long long)res.retry_after);
    server_respond_header(r, "retry-after", v);
    server_respond_problem(r, 429, "too many requests; retry after the time Retry-After says", NULL);
    return false;
}

int routes_around(server_req *r, server_handler_fn handler)
{
    const server_route_def *def = server_req_route_def(r);
    routes_caller *caller = NULL;
    int auth = 0;
    const char *reason = NULL;
    bool sent = false;
    if (!def->open && routes_auth_enabled()) {
        if ((caller = base_arena_alloc(server_req_arena(r), sizeof(*caller))) == NULL)
            return -ENOMEM;
        auth = routes_auth_request(r, caller, &reason, &sent);
    }
    if (limit.per_s > 0 && !def->unlimited && !within_limit(r, auth == 0 ? caller : NULL))
        return 0;
    if (auth < 0) {
        /* the reason is for the operator: a client learns nothing from it */
        log_info("request %s: 401: %s", server_req_id(r), reason);
        server_respond_header(r, "www-authenticate",
                              sent ? "Bearer realm=\"h2pg\", error=\"invalid_token\"" : "Bearer realm=\"h2pg\"");
        server_respond_problem(r, 401, "a valid bearer token is required", NULL);
        return 0;
    }
    if (caller != NULL) {
        server_req_set_local(r, caller);
        server_respond_header(r, "cache-control", "no-store");
        if (def->admin && !caller->admin) {
            log_info("request %s: 403: user %lld is not an administrator", server_req_id(r),
                     (long long)caller->user_id);
            server_respond_problem(r, 403, "only an administrator may do this", NULL);
            return 0;
        }
    }
    db_failure f;
    db_failure_open(&f);
    int rc = handler(r);
    if (rc < 0)
        routes_fail(r, rc);
    db_failure_close(&f);
    return rc;
}
