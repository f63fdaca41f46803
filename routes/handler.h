/* What every handler uses: reading the request, running SQL whose results
 * belong to the request, answering, and registering routes.
 *
 *     static int get_order(server_req *r) { return routes_get_by_id(r, &GET_ORDER, "no such order"); }
 *
 *     static int create_order(server_req *r)
 *     {
 *         int64_t user_id;
 *         routes_order_input in;
 *         int rc = routes_path_id(r, "id", &user_id);
 *         if (rc == 0)
 *             rc = routes_body(r, routes_validate_order, &in);
 *         if (rc == 0)
 *             rc = routes_exec(r, NULL, &INSERT_ORDER, DB_PARAMS(DB_INT8(user_id), ...), &res);
 *         return rc < 0 ? rc : routes_created(r, "/orders/", db_row_json(res, 0));
 *     }
 *
 *     ROUTES({.method = "GET", .pattern = "/orders/{id}", .handler = get_order},
 *            {.method = "POST", .pattern = "/users/{id}/orders", .handler = create_order});
 *
 * Errors by return value: a helper that answered the request itself (404
 * for a bad id, 400/415/422 for a bad body) returns SERVER_ANSWERED; a
 * database call returns its negative errno. Either way the handler stops
 * with `if (rc < 0) return rc;` and routes_fail, run around every handler,
 * answers for what is not answered yet: 409 for a unique violation, 404
 * for a missing referenced row, 422 for a check violation, 503 when the
 * database is unreachable or the pool exhausted, 504 when the deadline
 * passed, 500 otherwise (never with SQL or a server message, which are
 * logged). Results of routes_exec / routes_batch / routes_gather belong to
 * the request and are freed with it. */
#ifndef H2PG_ROUTES_HANDLER_H
#define H2PG_ROUTES_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "db/db.h"
#include "db/tx.h"
#include "routes/auth.h"
#include "routes/input.h"
#include "server/http.h"

/* ---- registering: the one place a route is named ---- */

typedef struct routes_module {
    const server_route_def *routes;
    size_t n;
} routes_module;

/* Lists a module's routes (designated initializers of server_route_def).
 * Every module compiled into the service is found at start (a linker
 * section): adding a file with a ROUTES line adds its routes. */
#define ROUTES(...)                                                                                                    \
    static const server_route_def routes__table[] = {__VA_ARGS__};                                                    \
    __attribute__((used, section("h2pg_routes"))) static const routes_module routes__module = {                     \
        routes__table, sizeof(routes__table) / sizeof(routes__table[0])}

/* Every registered route, in link order (built once, at first call, before
 * any thread runs; static storage). NULL on ENOMEM. */
const server_route_def *routes_all(size_t *n);

/* ---- reading the request: 0, or answered and SERVER_ANSWERED ---- */

/* The path parameter `name` as a positive 64-bit id (else 404). */
int routes_path_id(server_req *r, const char *name, int64_t *id);

/* ?limit= (1..100, default 20) and ?after= (an id, default 0) (else 400). */
typedef struct routes_page {
    int64_t limit, after;
} routes_page;
int routes_page_params(server_req *r, routes_page *page);

/* The JSON body, read by routes_input_body (415 or 400), then checked by
 * validate into out (422 with its errors). */
typedef bool (*routes_validator)(json_t *body, void *out, json_t *errors);
int routes_body(server_req *r, routes_validator validate, void *out);

/* ---- SQL whose results belong to the request ---- */

/* db_exec (conn NULL: autocommit on a pool connection), db_exec_batch,
 * db_gather, with every result freed when the request ends. */
int routes_exec(server_req *r, db_conn *conn, const db_stmt *stmt, db_params params, PGresult **res);
int routes_batch(server_req *r, db_conn *conn, db_call *calls, size_t n, int flags);
int routes_gather(server_req *r, db_call *calls, size_t n);
/* db_read / db_read_batch (autocommit reads on the shared pipelined
 * connection), results freed with the request. */
int routes_read(server_req *r, const db_stmt *stmt, db_params params, PGresult **res);
int routes_read_batch(server_req *r, db_call *calls, size_t n);

/* GET by id: the {id} parameter, stmt's one row ($1 = id) as JSON, else
 * 404 with `missing` as the detail. */
int routes_get_by_id(server_req *r, const db_stmt *stmt, const char *missing);

/* ---- answering: each returns 0 ---- */

/* The JSON value (consumed; NULL answers 500). */
int routes_json(server_req *r, int status, json_t *body);
/* 201 with the object (consumed) and Location: prefix + its "id". */
int routes_created(server_req *r, const char *prefix, json_t *object);
/* {"items": rows as objects, "next_after": the last id when the page is
 * full, else null}. */
int routes_page_answer(server_req *r, const PGresult *rows, int64_t limit);
/* An RFC 9457 problem. */
int routes_problem(server_req *r, int status, const char *detail);

/* Answers for a failed call (rc < 0) as described at the top, unless the
 * request was answered already. The middleware calls it; a handler may
 * too. */
void routes_fail(server_req *r, int rc);

/* ---- who is calling ---- */

/* The caller whose bearer token the middleware accepted, or NULL when
 * authentication is off (AUTH_JWKS_FILE and AUTH_JWKS_URL unset: anyone
 * may do anything) or the route is open. Valid for the request's life. */
const routes_caller *routes_caller_of(const server_req *r);

/* Whether the caller may act for every user: an administrator, or anyone
 * while authentication is off. */
bool routes_acts_for_all(const server_req *r);
/* The caller's user id (0 when there is no authenticated caller). */
int64_t routes_caller_id(const server_req *r);

/* The {id} path parameter as a user the caller may act for (itself, or
 * anyone for routes_acts_for_all); another user's id reads as unknown:
 * 404, as a bad id does. */
int routes_path_user(server_req *r, int64_t *id);

/* GET by id of a row the caller may see: stmt takes $1 = the {id}, $2 =
 * routes_acts_for_all (bool) and $3 = routes_caller_id, and checks the
 * ownership itself (`WHERE id = $1 AND ($2 OR user_id = $3)`), so a row of
 * someone else is 404 like a missing one. */
int routes_get_owned(server_req *r, const db_stmt *stmt, const char *missing);

/* The middleware around every handler (server_app.around). Before the
 * handler: with authentication on, a route not marked open needs a valid
 * bearer token (else 401 with WWW-Authenticate; the reason is logged, not
 * sent), and its answer gets Cache-Control: no-store; with RATE_LIMIT_PER_S
 * set (an admin route answers 403 to a caller who is not an
 * administrator), a route not marked unlimited takes a token from its caller's bucket
 * (the token's sub, else the client address; 429 when empty) and every
 * answer carries RateLimit-Policy and RateLimit. Protected routes must not
 * be immediate: checking a token may await a fetch of the key set. Around
 * the handler: records database failures for the handler's task and its
 * children, and answers with routes_fail when the handler returns < 0
 * without answering. */
int routes_around(server_req *r, server_handler_fn handler);

/* The middleware's settings, from the configuration (once per worker). */
void routes_around_configure(const server_config *cfg);

#endif
