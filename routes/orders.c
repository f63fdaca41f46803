/* Orders: create for a user, page through a user's orders, read one. */
#include <errno.h>
#include <stdlib.h>

#include "db/db.h"
#include "routes/common.h"
#include "routes/routes.h"

static const db_stmt INSERT_ORDER =
    DB_STMT("order_insert",
            "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING " ROUTES_ORDER_COLUMNS,
            5);
static const db_stmt USER_EXISTS = DB_STMT("user_exists", "SELECT 1 FROM users WHERE id = $1", 1);
static const db_stmt LIST_ORDERS = DB_STMT(
    "order_list", "SELECT " ROUTES_ORDER_COLUMNS " FROM orders WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3", 3);
static const db_stmt GET_ORDER = DB_STMT("order_get", "SELECT " ROUTES_ORDER_COLUMNS " FROM orders WHERE id = $1", 1);

static int create_order(server_req *r)
{
    int64_t user_id;
    if (!routes_path_id(r, "id", &user_id))
        return 0;
    json_t *body = routes_body_object(r);
    if (body == NULL)
        return 0;
    json_t *errors = json_array();
    routes_order_input in;
    if (!routes_input_order(body, &in, errors)) {
        routes_invalid(r, errors);
        return 0;
    }
    json_decref(errors);
    uint64_t b_user, b_price, b_total;
    uint32_t b_qty;
    db_param p[] = {db_int8(&b_user, user_id), db_text(in.item, (int)in.item_len), db_int4(&b_qty, (int32_t)in.quantity),
                    db_int8(&b_price, in.price_cents), db_int8(&b_total, in.total_cents)};
    PGresult *res;
    int rc = db_exec(NULL, &INSERT_ORDER, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 404); /* the user does not exist */
    } else {
        json_t *o = routes_order_json(res, 0);
        routes_created(r, "/orders/", db_get_int(res, 0, 0), o);
        json_decref(o);
    }
    PQclear(res);
    return 0;
}

/* The user check and the page go out together, in one round trip. */
static int list_orders(server_req *r)
{
    int64_t user_id, limit, after;
    if (!routes_path_id(r, "id", &user_id) || !routes_page_params(r, &limit, &after))
        return 0;
    uint64_t b1, b2, b3;
    db_param pu[] = {db_int8(&b1, user_id)};
    db_param pl[] = {db_int8(&b1, user_id), db_int8(&b2, after), db_int8(&b3, limit)};
    db_call calls[] = {{.stmt = &USER_EXISTS, .params = pu}, {.stmt = &LIST_ORDERS, .params = pl}};
    int rc = db_exec_batch(NULL, calls, 2, 0);
    if (rc < 0) {
        server_respond_db_error(r, rc, calls[0].rc == -EREMOTEIO ? calls[0].result : calls[1].result, 0);
    } else if (PQntuples(calls[0].result) == 0) {
        server_respond_problem(r, 404, "no such user", NULL);
    } else {
        json_t *page = routes_page_json(calls[1].result, limit, routes_order_json);
        server_respond_json(r, 200, page);
        json_decref(page);
    }
    db_calls_clear(calls, 2);
    return 0;
}

static int get_order(server_req *r)
{
    int64_t id;
    if (!routes_path_id(r, "id", &id))
        return 0;
    uint64_t b;
    db_param p[] = {db_int8(&b, id)};
    PGresult *res;
    int rc = db_exec(NULL, &GET_ORDER, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 0);
    } else if (PQntuples(res) == 0) {
        server_respond_problem(r, 404, "no such order", NULL);
    } else {
        json_t *o = routes_order_json(res, 0);
        server_respond_json(r, 200, o);
        json_decref(o);
    }
    PQclear(res);
    return 0;
}

static const server_route_def table[] = {
    {"POST", "/users/{id}/orders", create_order, false},
    {"GET", "/users/{id}/orders", list_orders, false},
    {"GET", "/orders/{id}", get_order, false},
};

const server_route_def *routes_orders(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
