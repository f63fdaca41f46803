/* Accounts: create, read one. */
#include "routes/handler.h"

static const db_stmt INSERT_ACCOUNT =
    DB_STMT("account_insert",
            "INSERT INTO accounts (user_id, balance_cents) VALUES ($1, $2) RETURNING id, user_id, balance_cents, "
            "created_at",
            2);
static const db_stmt GET_ACCOUNT =
    DB_STMT("account_get", "SELECT id, user_id, balance_cents, created_at FROM accounts WHERE id = $1", 1);

static bool account_input(json_t *body, void *in, json_t *errors) { return routes_input_account(body, in, errors); }

/* An unknown user is a foreign-key violation: 404. */
static int create_account(server_req *r)
{
    routes_account_input in;
    PGresult *res;
    int rc = routes_body(r, account_input, &in);
    if (rc == 0)
        rc = routes_exec(r, NULL, &INSERT_ACCOUNT, DB_PARAMS(DB_INT8(in.user_id), DB_INT8(in.balance_cents)), &res);
    return rc < 0 ? rc : routes_created(r, "/accounts/", db_row_json(res, 0));
}

static int get_account(server_req *r) { return routes_get_by_id(r, &GET_ACCOUNT, "no such account"); }

ROUTES({.method = "POST", .pattern = "/accounts", .handler = create_account},
       {.method = "GET", .pattern = "/accounts/{id}", .handler = get_account});
