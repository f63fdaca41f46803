/* Orders: create for a user, page through a user's orders, read one. */
#include "routes/handler.h"

#define ORDER_COLUMNS "id, user_id, item, quantity, price_cents, total_cents, created_at"

/* The order and its order.created event in one statement (as users.c). */
static const db_stmt INSERT_ORDER =
    DB_QUERY("order_insert",
             "WITH n AS (INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) "
             "VALUES ($1, $2, $3, $4, $5) RETURNING " ORDER_COLUMNS ") "
             "SELECT n.* FROM n "
             "WHERE events_emit('order.created', events_resource(to_jsonb(n)), n.user_id, NULL) IS NOT NULL",
             5, "iitiiid");
static const db_stmt USER_EXISTS = DB_QUERY("user_exists", "SELECT 1 FROM users WHERE id = $1", 1, "i");
static const db_stmt LIST_ORDERS =
    DB_QUERY("order_list", "SELECT " ORDER_COLUMNS " FROM orders WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3", 3,
             "iitiiid");
/* the owner check in the statement that reads the row (routes_get_owned) */
static const db_stmt GET_ORDER = DB_QUERY(
    "order_get", "SELECT " ORDER_COLUMNS " FROM orders WHERE id = $1 AND ($2::bool OR user_id = $3)", 3, "iitiiid");

static bool order_input(json_t *body, void *in, json_t *errors) { return routes_input_order(body, in, errors); }

/* An unknown user is a foreign-key violation: 404. */
static int create_order(server_req *r)
{
    int64_t user_id;
    routes_order_input in;
    PGresult *res;
    int rc = routes_path_user(r, &user_id);
    if (rc == 0)
        rc = routes_body(r, order_input, &in);
    if (rc == 0)
        rc = routes_exec(r, NULL, &INSERT_ORDER,
                         DB_PARAMS(DB_INT8(user_id), DB_TEXTN(in.item, in.item_len), DB_INT4(in.quantity),
                                   DB_INT8(in.price_cents), DB_INT8(in.total_cents)),
                         &res);
    return rc < 0 ? rc : routes_created(r, "/orders/", db_row_json(res, 0));
}

/* The user check and the page go out together, in one round trip. */
static int list_orders(server_req *r)
{
    int64_t user_id;
    routes_page page;
    int rc = routes_path_user(r, &user_id);
    if (rc == 0)
        rc = routes_page_params(r, &page);
    if (rc < 0)
        return rc;
    db_call calls[] = {DB_CALL(&USER_EXISTS, DB_INT8(user_id)),
                       DB_CALL(&LIST_ORDERS, DB_INT8(user_id), DB_INT8(page.after), DB_INT8(page.limit))};
    rc = routes_read_batch(r, calls, 2);
    if (rc < 0)
        return rc;
    if (PQntuples(calls[0].result) == 0)
        return routes_problem(r, 404, "no such user");
    return routes_page_answer(r, calls[1].result, page.limit);
}

static int get_order(server_req *r) { return routes_get_owned(r, &GET_ORDER, "no such order"); }

ROUTES({.method = "POST", .pattern = "/users/{id}/orders", .handler = create_order},
       {.method = "GET", .pattern = "/users/{id}/orders", .handler = list_orders},
       {.method = "GET", .pattern = "/orders/{id}", .handler = get_order});
