/* Users: create, page through, read with their first orders and accounts
 * (three reads in flight at once), update, delete. */
#include "routes/handler.h"

#define USER_COLUMNS "id, name, email, created_at"

/* The user and its user.created event in one statement, so one commits
 * if and only if the other does; the event last, just before the commit,
 * as events_emit wants (migrations/0006_events.sql). The qual is volatile,
 * so it runs for the row; the columns stay the user's. */
static const db_stmt INSERT_USER =
    DB_QUERY("user_insert",
             "WITH n AS (INSERT INTO users (name, email) VALUES ($1, $2) RETURNING " USER_COLUMNS ") "
             "SELECT n.* FROM n "
             "WHERE events_emit('user.created', events_resource(to_jsonb(n)), n.id, NULL) IS NOT NULL",
             2, "ittd");
static const db_stmt LIST_USERS =
    DB_QUERY("user_list", "SELECT " USER_COLUMNS " FROM users WHERE id > $1 ORDER BY id LIMIT $2", 2, "ittd");
static const db_stmt GET_USER = DB_QUERY("user_get", "SELECT " USER_COLUMNS " FROM users WHERE id = $1", 1, "ittd");
static const db_stmt USER_ORDERS =
    DB_QUERY("user_orders",
             "SELECT id, user_id, item, quantity, price_cents, total_cents, created_at FROM orders WHERE user_id = $1 "
             "ORDER BY id LIMIT 100",
             1, "iitiiid");
/* The first 100 of each, by id, so that a user with 200,000 accounts is
 * not a 17 MB answer; all of them: the paged routes, /users/{id}/orders and
 * /users/{id}/accounts. */
static const db_stmt USER_ACCOUNTS =
    DB_QUERY("user_accounts",
             "SELECT id, user_id, balance_cents, created_at FROM accounts WHERE user_id = $1 ORDER BY id LIMIT 100", 1,
             "iiid");
static const db_stmt UPDATE_USER =
    DB_QUERY("user_update",
             "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email) WHERE id = $1 "
             "RETURNING " USER_COLUMNS,
             3, "ittd");
static const db_stmt LOCK_USER = DB_QUERY("user_lock", "SELECT id FROM users WHERE id = $1 FOR UPDATE", 1, "i");
/* Locks every account of the user; counts those that hold money. */
static const db_stmt LOCK_USER_ACCOUNTS =
    DB_QUERY("user_lock_accounts",
             "SELECT count(*) FILTER (WHERE balance_cents <> 0) FROM "
             "(SELECT balance_cents FROM accounts WHERE user_id = $1 ORDER BY id FOR UPDATE) a",
             1, "i");
static const db_stmt DELETE_USER = DB_STMT("user_delete", "DELETE FROM users WHERE id = $1", 1);

static bool create_input(json_t *body, void *in, json_t *errors) { return routes_input_user(body, true, in, errors); }
static bool patch_input(json_t *body, void *in, json_t *errors) { return routes_input_user(body, false, in, errors); }

static int create_user(server_req *r)
{
    routes_user_input in;
    PGresult *res;
    int rc = routes_body(r, create_input, &in);
    if (rc == 0)
        rc = routes_exec(r, NULL, &INSERT_USER,
                         DB_PARAMS(DB_TEXTN(in.name, in.name_len), DB_TEXTN(in.email, in.email_len)), &res);
    return rc < 0 ? rc : routes_created(r, "/users/", db_row_json(res, 0));
}

static int list_users(server_req *r)
{
    routes_page page;
    PGresult *res;
    int rc = routes_page_params(r, &page);
    if (rc == 0)
        rc = routes_read(r, &LIST_USERS, DB_PARAMS(DB_INT8(page.after), DB_INT8(page.limit)), &res);
    return rc < 0 ? rc : routes_page_answer(r, res, page.limit);
}

/* The three reads run concurrently; an unknown user fails the gather at
 * once, which cancels the other two, on the server too. */
static int get_user(server_req *r)
{
    int64_t id;
    int rc = routes_path_user(r, &id);
    if (rc < 0)
        return rc;
    db_call c[] = {DB_CALL(&GET_USER, DB_INT8(id)), DB_CALL(&USER_ORDERS, DB_INT8(id)),
                   DB_CALL(&USER_ACCOUNTS, DB_INT8(id))};
    c[0].required = true;
    rc = routes_gather(r, c, 3);
    if (rc == -ENOENT)
        return routes_problem(r, 404, "no such user");
    if (rc < 0)
        return rc;
    return routes_json(r, 200,
                       json_pack("{s:o, s:o, s:o}", "user", db_row_json(c[0].result, 0), "orders",
                                 db_rows_json(c[1].result), "accounts", db_rows_json(c[2].result)));
}

static int patch_user(server_req *r)
{
    int64_t id;
    routes_user_input in;
    PGresult *res;
    int rc = routes_path_user(r, &id);
    if (rc == 0)
        rc = routes_body(r, patch_input, &in);
    if (rc == 0)
        rc = routes_exec(r, NULL, &UPDATE_USER,
                         DB_PARAMS(DB_INT8(id), DB_TEXT_OR_NULL(in.name, in.name_len),
                                   DB_TEXT_OR_NULL(in.email, in.email_len)),
                         &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        return routes_problem(r, 404, "no such user");
    return routes_json(r, 200, db_row_json(res, 0));
}

struct deletion {
    server_req *r;
    int64_t id;
    int status; /* 204, or the 404 / 409 found */
};

/* The user and its accounts locked, so no transfer can move money in
 * between; a balance that is not zero keeps the user. */
static int delete_body(db_conn *tx, void *arg)
{
    struct deletion *d = arg;
    PGresult *res;
    db_params id = DB_PARAMS(DB_INT8(d->id));
    int rc = routes_exec(d->r, tx, &LOCK_USER, id, &res);
    if (rc < 0 || (d->status = PQntuples(res) == 0 ? 404 : 204) != 204)
        return rc;
    rc = routes_exec(d->r, tx, &LOCK_USER_ACCOUNTS, id, &res);
    if (rc < 0 || (d->status = db_get_int(res, 0, 0) > 0 ? 409 : 204) != 204)
        return rc;
    return routes_exec(d->r, tx, &DELETE_USER, id, &res);
}

static int delete_user(server_req *r)
{
    struct deletion d = {.r = r};
    int rc = routes_path_user(r, &d.id);
    if (rc == 0)
        rc = db_tx(delete_body, &d);
    if (rc == -EREMOTEIO && db_failed_with("23503"))
        return routes_problem(r, 409, "the user's accounts have transfers on record and cannot be deleted");
    if (rc < 0)
        return rc;
    if (d.status == 404)
        return routes_problem(r, 404, "no such user");
    if (d.status == 409)
        return routes_problem(r, 409, "the user still holds money: every account balance must be zero");
    server_respond(r, 204, NULL, "", 0);
    return 0;
}

/* a user may read and change only itself (routes_path_user): another
 * user's id reads as unknown; creating and listing users is for
 * administrators */
ROUTES({.method = "POST", .pattern = "/users", .handler = create_user, .admin = true},
       {.method = "GET", .pattern = "/users", .handler = list_users, .admin = true},
       {.method = "GET", .pattern = "/users/{id}", .handler = get_user},
       {.method = "PATCH", .pattern = "/users/{id}", .handler = patch_user},
       {.method = "DELETE", .pattern = "/users/{id}", .handler = delete_user});
