/* Users: create, page through, read with their orders and accounts (three
 * reads in flight at once), update, delete. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/pool.h"
#include "db/tx.h"
#include "routes/common.h"
#include "routes/routes.h"
#include "server/aio/aio.h"

static const db_stmt INSERT_USER =
    DB_STMT("user_insert", "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING " ROUTES_USER_COLUMNS, 2);
static const db_stmt LIST_USERS =
    DB_STMT("user_list", "SELECT " ROUTES_USER_COLUMNS " FROM users WHERE id > $1 ORDER BY id LIMIT $2", 2);
static const db_stmt GET_USER = DB_STMT("user_get", "SELECT " ROUTES_USER_COLUMNS " FROM users WHERE id = $1", 1);
static const db_stmt USER_ORDERS = DB_STMT(
    "user_orders", "SELECT " ROUTES_ORDER_COLUMNS " FROM orders WHERE user_id = $1 ORDER BY id LIMIT 100", 1);
static const db_stmt USER_ACCOUNTS =
    DB_STMT("user_accounts", "SELECT " ROUTES_ACCOUNT_COLUMNS " FROM accounts WHERE user_id = $1 ORDER BY id", 1);
static const db_stmt UPDATE_USER =
    DB_STMT("user_update",
            "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email) WHERE id = $1 "
            "RETURNING " ROUTES_USER_COLUMNS,
            3);
static const db_stmt LOCK_USER = DB_STMT("user_lock", "SELECT id FROM users WHERE id = $1 FOR UPDATE", 1);
static const db_stmt LOCK_USER_ACCOUNTS =
    DB_STMT("user_lock_accounts", "SELECT balance_cents FROM accounts WHERE user_id = $1 ORDER BY id FOR UPDATE", 1);
static const db_stmt DELETE_USER = DB_STMT("user_delete", "DELETE FROM users WHERE id = $1", 1);

/* Reads and checks the body of POST (every field required) or PATCH. */
static bool user_fields(server_req *r, bool all, routes_user_input *in)
{
    json_t *body = routes_body_object(r);
    if (body == NULL)
        return false;
    json_t *errors = json_array();
    if (!routes_input_user(body, all, in, errors)) {
        routes_invalid(r, errors);
        return false;
    }
    json_decref(errors);
    return true;
}

static int create_user(server_req *r)
{
    routes_user_input in;
    if (!user_fields(r, true, &in))
        return 0;
    db_param p[] = {db_text(in.name, (int)in.name_len), db_text(in.email, (int)in.email_len)};
    PGresult *res;
    int rc = db_exec(NULL, &INSERT_USER, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 0);
    } else {
        json_t *u = routes_user_json(res, 0);
        routes_created(r, "/users/", db_get_int(res, 0, 0), u);
        json_decref(u);
    }
    PQclear(res);
    return 0;
}

static int list_users(server_req *r)
{
    int64_t limit, after;
    if (!routes_page_params(r, &limit, &after))
        return 0;
    uint64_t b1, b2;
    db_param p[] = {db_int8(&b1, after), db_int8(&b2, limit)};
    PGresult *res;
    int rc = db_exec(NULL, &LIST_USERS, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 0);
    } else {
        json_t *page = routes_page_json(res, limit, routes_user_json);
        server_respond_json(r, 200, page);
        json_decref(page);
    }
    PQclear(res);
    return 0;
}

/* One of the three concurrent reads of GET /users/{id}. They share one
 * borrowed connection: queued in the same loop turn, they go out in one
 * write and come back pipelined, in one round trip. */
struct read {
    const db_stmt *stmt;
    int64_t id;
    bool must_exist;
    db_conn *conn;
    PGresult *res;
};

static int read_one(void *arg)
{
    struct read *rd = arg;
    uint64_t b;
    db_param p[] = {db_int8(&b, rd->id)};
    int rc = db_exec(rd->conn, rd->stmt, p, &rd->res);
    if (rc == 0 && rd->must_exist && PQntuples(rd->res) == 0)
        return -ENOENT; /* the group cancels the other reads, on the server too */
    return rc;
}

static int get_user(server_req *r)
{
    int64_t id;
    if (!routes_path_id(r, "id", &id))
        return 0;
    db_conn *conn;
    int rc = db_pool_acquire(db_pool_current(), &conn);
    if (rc < 0) {
        server_respond_db_error(r, rc, NULL, 0);
        return 0;
    }
    struct read reads[3] = {
        {.stmt = &GET_USER, .id = id, .must_exist = true, .conn = conn},
        {.stmt = &USER_ORDERS, .id = id, .conn = conn},
        {.stmt = &USER_ACCOUNTS, .id = id, .conn = conn},
    };
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 3; i++)
        aio_group_spawn(&g, read_one, &reads[i]);
    rc = aio_group_join(&g);
    /* if a read was interrupted, the connection went to the janitor (which
     * cancels what is left on the server) and this release is a no-op */
    db_pool_release(conn);
    if (rc == -ENOENT) {
        server_respond_problem(r, 404, "no such user", NULL);
    } else if (rc < 0) {
        const PGresult *failed = NULL;
        for (int i = 0; i < 3 && failed == NULL; i++)
            if (PQresultStatus(reads[i].res) == PGRES_FATAL_ERROR)
                failed = reads[i].res;
        server_respond_db_error(r, rc, failed, 0);
    } else {
        json_t *orders = json_array(), *accounts = json_array();
        for (int i = 0; i < PQntuples(reads[1].res); i++)
            json_array_append_new(orders, routes_order_json(reads[1].res, i));
        for (int i = 0; i < PQntuples(reads[2].res); i++)
            json_array_append_new(accounts, routes_account_json(reads[2].res, i));
        json_t *body =
            json_pack("{s:o, s:o, s:o}", "user", routes_user_json(reads[0].res, 0), "orders", orders, "accounts", accounts);
        server_respond_json(r, 200, body);
        json_decref(body);
    }
    for (int i = 0; i < 3; i++)
        PQclear(reads[i].res);
    return 0;
}

static int patch_user(server_req *r)
{
    int64_t id;
    if (!routes_path_id(r, "id", &id))
        return 0;
    routes_user_input in;
    if (!user_fields(r, false, &in))
        return 0;
    uint64_t b;
    db_param p[] = {db_int8(&b, id), in.name ? db_text(in.name, (int)in.name_len) : db_null(),
                    in.email ? db_text(in.email, (int)in.email_len) : db_null()};
    PGresult *res;
    int rc = db_exec(NULL, &UPDATE_USER, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 0);
    } else if (PQntuples(res) == 0) {
        server_respond_problem(r, 404, "no such user", NULL);
    } else {
        json_t *u = routes_user_json(res, 0);
        server_respond_json(r, 200, u);
        json_decref(u);
    }
    PQclear(res);
    return 0;
}

enum { DELETED, NO_USER, HOLDS_MONEY };

struct delete_args {
    int64_t id;
    int outcome;
    PGresult *failed;
};

static int delete_body(db_conn *tx, void *arg)
{
    struct delete_args *a = arg;
    uint64_t b;
    db_param p[] = {db_int8(&b, a->id)};
    PQclear(a->failed);
    a->failed = NULL;
    a->outcome = DELETED;
    PGresult *res;
    int rc = db_exec(tx, &LOCK_USER, p, &res);
    if (rc == 0 && PQntuples(res) == 0)
        a->outcome = NO_USER;
    if (rc == 0 && a->outcome == DELETED) {
        PQclear(res);
        /* lock the accounts too, so no transfer can move money in between */
        rc = db_exec(tx, &LOCK_USER_ACCOUNTS, p, &res);
        for (int i = 0; rc == 0 && i < PQntuples(res); i++)
            if (db_get_int(res, i, 0) != 0)
                a->outcome = HOLDS_MONEY;
    }
    if (rc == 0 && a->outcome == DELETED) {
        PQclear(res);
        rc = db_exec(tx, &DELETE_USER, p, &res);
    }
    if (rc == -EREMOTEIO)
        a->failed = res;
    else
        PQclear(res);
    return rc;
}

static int delete_user(server_req *r)
{
    struct delete_args a = {.outcome = DELETED};
    if (!routes_path_id(r, "id", &a.id))
        return 0;
    int rc = db_tx_run(&(db_tx_options){.isolation = DB_READ_COMMITTED, .max_retries = -1}, delete_body, &a, NULL, NULL);
    if (rc < 0) {
        if (strcmp(db_sqlstate(a.failed), "23503") == 0)
            server_respond_problem(r, 409, "the user's accounts have transfers on record and cannot be deleted", NULL);
        else
            server_respond_db_error(r, rc, a.failed, 0);
    } else if (a.outcome == NO_USER) {
        server_respond_problem(r, 404, "no such user", NULL);
    } else if (a.outcome == HOLDS_MONEY) {
        server_respond_problem(r, 409, "the user still holds money: every account balance must be zero", NULL);
    } else {
        server_respond(r, 204, NULL, "", 0);
    }
    PQclear(a.failed);
    return 0;
}

static const server_route_def table[] = {
    {"POST", "/users", create_user, false},         {"GET", "/users", list_users, false},
    {"GET", "/users/{id}", get_user, false},        {"PATCH", "/users/{id}", patch_user, false},
    {"DELETE", "/users/{id}", delete_user, false},
};

const server_route_def *routes_users(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
