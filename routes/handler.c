#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/handler.h"
#include "server/parse.h"

/* ---- registering ---- */

/* Bounds of the h2pg_routes section, made by the linker. */
extern const routes_module __start_h2pg_routes[], __stop_h2pg_routes[];

const server_route_def *routes_all(size_t *n)
{
    static server_route_def *all;
    static size_t count;
    if (all == NULL) {
        size_t total = 0;
        for (const routes_module *m = __start_h2pg_routes; m < __stop_h2pg_routes; m++)
            total += m->n;
        if ((all = calloc(total, sizeof(*all))) == NULL) {
            *n = 0;
            return NULL;
        }
        for (const routes_module *m = __start_h2pg_routes; m < __stop_h2pg_routes; m++) {
            memcpy(all + count, m->routes, m->n * sizeof(*m->routes));
            count += m->n;
        }
    }
    *n = count;
    return all;
}

/* ---- reading the request ---- */

static void decref(void *p) { json_decref(p); }
static void pqclear(void *p) { PQclear(p); }

int routes_path_id(server_req *r, const char *name, int64_t *id)
{
    const char *v = server_req_param(r, name);
    if (v == NULL || server_parse_id(v, strlen(v), id) < 0) {
        server_respond_problem(r, 404, "no such resource", NULL);
        return SERVER_ANSWERED;
    }
    return 0;
}

int routes_page_params(server_req *r, routes_page *page)
{
    size_t qlen;
    const char *q = server_req_query(r, &qlen);
    json_t *errors = json_array();
    if (!routes_input_page(q, qlen, &page->limit, &page->after, errors)) {
        server_respond_problem(r, 400, "bad query string", errors);
        return SERVER_ANSWERED;
    }
    json_decref(errors);
    return 0;
}

int routes_body(server_req *r, routes_validator validate, void *out)
{
    size_t len;
    const char *text = server_req_body(r, &len);
    json_t *body;
    char detail[256];
    int rc = routes_input_body(server_req_header(r, "content-type"), text, len, &body, detail, sizeof(detail));
    if (rc < 0) {
        server_respond_problem(r, rc == -ENOTSUP ? 415 : 400, detail, NULL);
        return SERVER_ANSWERED;
    }
    /* what the validator points into lives as long as the request */
    base_arena_defer(server_req_arena(r), decref, body);
    json_t *errors = json_array();
    if (!validate(body, out, errors)) {
        server_respond_problem(r, 422, "the request body failed validation", errors);
        return SERVER_ANSWERED;
    }
    json_decref(errors);
    return 0;
}

/* ---- who is calling ---- */

bool routes_acts_for_all(const server_req *r)
{
    const routes_caller *c = routes_caller_of(r);
    return c == NULL || c->admin;
}

int64_t routes_caller_id(const server_req *r)
{
    const routes_caller *c = routes_caller_of(r);
    return c != NULL ? c->user_id : 0;
}

int routes_path_user(server_req *r, int64_t *id)
{
    int rc = routes_path_id(r, "id", id);
    if (rc == 0 && !routes_acts_for_all(r) && *id != routes_caller_id(r)) {
        server_respond_problem(r, 404, "no such user", NULL);
        return SERVER_ANSWERED;
    }
    return rc;
}

/* ---- SQL ---- */

static void own(server_req *r, PGresult *res)
{
    if (res != NULL)
        base_arena_defer(server_req_arena(r), pqclear, res);
}

int routes_exec(server_req *r, db_conn *conn, const db_stmt *stmt, db_params params, PGresult **res)
{
    int rc = db_exec(conn, stmt, params, res);
    own(r, *res);
    return rc;
}

int routes_batch(server_req *r, db_conn *conn, db_call *calls, size_t n, int flags)
{
    int rc = db_exec_batch(conn, calls, n, flags);
    for (size_t i = 0; i < n; i++)
        own(r, calls[i].result);
    return rc;
}

int routes_gather(server_req *r, db_call *calls, size_t n)
{
    int rc = db_gather(calls, n);
    for (size_t i = 0; i < n; i++)
        own(r, calls[i].result);
    return rc;
}

int routes_read(server_req *r, const db_stmt *stmt, db_params params, PGresult **res)
{
    int rc = db_read(stmt, params, res);
    own(r, *res);
    return rc;
}

int routes_read_batch(server_req *r, db_call *calls, size_t n)
{
    int rc = db_read_batch(calls, n, 0);
    for (size_t i = 0; i < n; i++)
        own(r, calls[i].result);
    return rc;
}

int routes_get_by_id(server_req *r, const db_stmt *stmt, const char *missing)
{
    int64_t id;
    PGresult *res;
    int rc = routes_path_id(r, "id", &id);
    if (rc == 0)
        rc = routes_read(r, stmt, DB_PARAMS(DB_INT8(id)), &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        return routes_problem(r, 404, missing);
    return routes_json(r, 200, db_row_json(res, 0));
}

int routes_get_owned(server_req *r, const db_stmt *stmt, const char *missing)
{
    int64_t id;
    PGresult *res;
    int rc = routes_path_id(r, "id", &id);
    if (rc == 0)
        rc = routes_read(r, stmt,
                         DB_PARAMS(DB_INT8(id), DB_BOOL(routes_acts_for_all(r)), DB_INT8(routes_caller_id(r))), &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        return routes_problem(r, 404, missing);
    return routes_json(r, 200, db_row_json(res, 0));
}

/* ---- answering ---- */

int routes_json(server_req *r, int status, json_t *body)
{
    if (body == NULL) {
        server_respond_problem(r, 500, "the response could not be built", NULL);
        return 0;
    }
    server_respond_json(r, status, body);
    json_decref(body);
    return 0;
}

int routes_created(server_req *r, const char *prefix, json_t *object)
{
    char location[64];
    snprintf(location, sizeof(location), "%s%lld", prefix,
             (long long)json_integer_value(json_object_get(object, "id")));
    server_respond_header(r, "location", location);
    return routes_json(r, 201, object);
}

int routes_page_answer(server_req *r, const PGresult *rows, int64_t limit)
{
    int n = PQntuples(rows);
    json_t *next = n == limit && n > 0 ? json_integer(db_get_int(rows, n - 1, 0)) : json_null();
    return routes_json(r, 200, json_pack("{s:o, s:o}", "items", db_rows_json(rows), "next_after", next));
}

int routes_problem(server_req *r, int status, const char *detail)
{
    server_respond_problem(r, status, detail, NULL);
    return 0;
}
