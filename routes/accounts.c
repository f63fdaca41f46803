/* Accounts: create, page through a user's accounts, read one. */
#include "routes/handler.h"

/* The account and its account.created event in one statement (as
 * users.c). */
static const db_stmt INSERT_ACCOUNT =
    DB_QUERY("account_insert",
             "WITH n AS (INSERT INTO accounts (user_id, balance_cents) VALUES ($1, $2) "
             "RETURNING id, user_id, balance_cents, created_at) "
             "SELECT n.* FROM n "
             "WHERE events_emit('account.created', events_resource(to_jsonb(n)), n.user_id, NULL) IS NOT NULL",
             2, "iiid");
/* the owner check in the statement that reads the row (routes_get_owned) */
static const db_stmt GET_ACCOUNT =
    DB_QUERY("account_get",
             "SELECT id, user_id, balance_cents, created_at FROM accounts WHERE id = $1 AND ($2::bool OR user_id = $3)",
             3, "iiid");
static const db_stmt ACCOUNT_USER_EXISTS = DB_QUERY("account_user_exists", "SELECT 1 FROM users WHERE id = $1", 1, "i");
static const db_stmt LIST_ACCOUNTS =
    DB_QUERY("account_list",
             "SELECT id, user_id, balance_cents, created_at FROM accounts WHERE user_id = $1 AND id > $2 ORDER BY id "
             "LIMIT $3",
             3, "iiid");

static bool account_input(json_t *body, void *in, json_t *errors) { return routes_input_account(body, in, errors); }

/* An unknown user is a foreign-key violation: 404. */
static int create_account(server_req *r)
{
    routes_account_input in;
    PGresult *res;
    int rc = routes_body(r, account_input, &in);
    if (rc == 0 && !routes_acts_for_all(r) && in.user_id != routes_caller_id(r)) {
        /* the caller knows which user it named: no existence to hide */
        return routes_problem(r, 403, "an account may be opened only for yourself");
    }
    if (rc == 0)
        rc = routes_exec(r, NULL, &INSERT_ACCOUNT, DB_PARAMS(DB_INT8(in.user_id), DB_INT8(in.balance_cents)), &res);
    return rc < 0 ? rc : routes_created(r, "/accounts/", db_row_json(res, 0));
}

/* The user check and the page go out together, in one round trip, on the
 * shared connection (as the orders page); an unknown user is 404, one
 * without accounts an empty page. */
static int list_accounts(server_req *r)
{
    int64_t user_id;
    routes_page page;
    int rc = routes_path_user(r, &user_id);
    if (rc == 0)
        rc = routes_page_params(r, &page);
    if (rc < 0)
        return rc;
    db_call calls[] = {DB_CALL(&ACCOUNT_USER_EXISTS, DB_INT8(user_id)),
                       DB_CALL(&LIST_ACCOUNTS, DB_INT8(user_id), DB_INT8(page.after), DB_INT8(page.limit))};
    rc = routes_read_batch(r, calls, 2);
    if (rc < 0)
        return rc;
    if (PQntuples(calls[0].result) == 0)
        return routes_problem(r, 404, "no such user");
    return routes_page_answer(r, calls[1].result, page.limit);
}

static int get_account(server_req *r) { return routes_get_owned(r, &GET_ACCOUNT, "no such account"); }

ROUTES({.method = "POST", .pattern = "/accounts", .handler = create_account},
       {.method = "GET", .pattern = "/users/{id}/accounts", .handler = list_accounts},
       {.method = "GET", .pattern = "/accounts/{id}", .handler = get_account});
