/* Accounts and transfers.
 *
 * A transfer is one transaction: both account rows locked in id order (so
 * two transfers between the same accounts wait for each other instead of
 * deadlocking), the balance checked, both rows updated in one statement, the
 * transfer recorded. Serialization failures and deadlocks re-run it
 * (db_tx_run). With an Idempotency-Key the outcome (201, 404 or 422, with
 * its body) is stored in the same transaction, so a retried request gets
 * the first answer back instead of moving money twice; the key's row is
 * claimed first, so a concurrent duplicate waits for the first to commit. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "db/db.h"
#include "db/tx.h"
#include "routes/common.h"
#include "routes/routes.h"

static const db_stmt INSERT_ACCOUNT =
    DB_STMT("account_insert",
            "INSERT INTO accounts (user_id, balance_cents) VALUES ($1, $2) RETURNING " ROUTES_ACCOUNT_COLUMNS, 2);
static const db_stmt GET_ACCOUNT =
    DB_STMT("account_get", "SELECT " ROUTES_ACCOUNT_COLUMNS " FROM accounts WHERE id = $1", 1);
static const db_stmt GET_TRANSFER =
    DB_STMT("transfer_get", "SELECT " ROUTES_TRANSFER_COLUMNS " FROM transfers WHERE id = $1", 1);
static const db_stmt LOCK_PAIR = DB_STMT(
    "transfer_lock", "SELECT id, balance_cents FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE", 2);
static const db_stmt MOVE =
    DB_STMT("transfer_move",
            "UPDATE accounts SET balance_cents = balance_cents + CASE WHEN id = $1 THEN -$3::bigint ELSE $3::bigint END "
            "WHERE id IN ($1, $2)",
            3);
static const db_stmt INSERT_TRANSFER =
    DB_STMT("transfer_insert",
            "INSERT INTO transfers (from_account_id, to_account_id, amount_cents) VALUES ($1, $2, $3) "
            "RETURNING " ROUTES_TRANSFER_COLUMNS,
            3);
static const db_stmt CLAIM_KEY =
    DB_STMT("idem_claim",
            "INSERT INTO idempotency_keys (key, request_hash, status, response_body) VALUES ($1, $2, 0, '') "
            "ON CONFLICT (key) DO NOTHING RETURNING 1",
            2);
static const db_stmt GET_KEY =
    DB_STMT("idem_get", "SELECT request_hash, status, response_body FROM idempotency_keys WHERE key = $1", 1);
static const db_stmt STORE_KEY =
    DB_STMT("idem_store", "UPDATE idempotency_keys SET status = $2, response_body = $3 WHERE key = $1", 3);

static int create_account(server_req *r)
{
    json_t *body = routes_body_object(r);
    if (body == NULL)
        return 0;
    json_t *errors = json_array();
    routes_account_input in;
    if (!routes_input_account(body, &in, errors)) {
        routes_invalid(r, errors);
        return 0;
    }
    json_decref(errors);
    uint64_t b1, b2;
    db_param p[] = {db_int8(&b1, in.user_id), db_int8(&b2, in.balance_cents)};
    PGresult *res;
    int rc = db_exec(NULL, &INSERT_ACCOUNT, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 404); /* no such user */
    } else {
        json_t *a = routes_account_json(res, 0);
        routes_created(r, "/accounts/", db_get_int(res, 0, 0), a);
        json_decref(a);
    }
    PQclear(res);
    return 0;
}

static int get_by_id(server_req *r, const db_stmt *stmt, json_t *(*to_json)(const PGresult *, int), const char *what)
{
    int64_t id;
    if (!routes_path_id(r, "id", &id))
        return 0;
    uint64_t b;
    db_param p[] = {db_int8(&b, id)};
    PGresult *res;
    int rc = db_exec(NULL, stmt, p, &res);
    if (rc < 0) {
        server_respond_db_error(r, rc, res, 0);
    } else if (PQntuples(res) == 0) {
        server_respond_problem(r, 404, what, NULL);
    } else {
        json_t *o = to_json(res, 0);
        server_respond_json(r, 200, o);
        json_decref(o);
    }
    PQclear(res);
    return 0;
}

static int get_account(server_req *r) { return get_by_id(r, &GET_ACCOUNT, routes_account_json, "no such account"); }
static int get_transfer(server_req *r) { return get_by_id(r, &GET_TRANSFER, routes_transfer_json, "no such transfer"); }

/* ---- POST /transfers ---- */

struct transfer {
    int64_t from, to, amount;
    const char *key;      /* Idempotency-Key, or NULL */
    char hash[65];        /* of the request, to tell a reuse with another body */
    /* the outcome, set by the body (which may run several times) */
    int status;           /* 201, 404, 409, 422, or 0 on a database error */
    char *response;       /* the body to send (malloc'd) */
    size_t response_len;
    int64_t transfer_id;  /* for Location on 201 */
    PGresult *failed;     /* the failing statement's result on -EREMOTEIO */
};

static void set_outcome(struct transfer *t, int status, char *body, size_t len)
{
    free(t->response);
    t->status = status;
    t->response = body;
    t->response_len = len;
}

static void set_problem(struct transfer *t, int status, const char *detail, const char *field)
{
    json_t *errors = NULL;
    if (field != NULL) {
        errors = json_array();
        routes_error(errors, field, detail);
    }
    size_t len;
    char *body = server_problem_json(status, detail, errors, &len);
    set_outcome(t, status, body, len);
}

static int keep_failure(struct transfer *t, int rc, PGresult *res)
{
    if (rc == -EREMOTEIO) {
        PQclear(t->failed);
        t->failed = res;
    } else {
        PQclear(res);
    }
    return rc;
}

/* Returns 1 when the key was used before (the stored or a 409 outcome is
 * set), 0 when this request now owns it, < 0 on a database error. */
static int claim_key(db_conn *tx, struct transfer *t)
{
    db_param p[] = {db_text(t->key, -1), db_text(t->hash, 64)};
    PGresult *res;
    int rc = db_exec(tx, &CLAIM_KEY, p, &res);
    if (rc < 0)
        return keep_failure(t, rc, res);
    int claimed = PQntuples(res);
    PQclear(res);
    if (claimed)
        return 0;
    rc = db_exec(tx, &GET_KEY, p, &res);
    if (rc < 0)
        return keep_failure(t, rc, res);
    int len;
    const char *hash = db_get_text(res, 0, 0, &len);
    if (len != 64 || memcmp(hash, t->hash, 64) != 0) {
        set_problem(t, 409, "this Idempotency-Key was used with a different request", NULL);
    } else {
        const char *body = db_get_text(res, 0, 2, &len);
        char *copy = malloc((size_t)len + 1);
        if (copy != NULL) {
            memcpy(copy, body, (size_t)len);
            copy[len] = '\0';
        }
        set_outcome(t, (int)db_get_int(res, 0, 1), copy, (size_t)len);
        if (t->status == 201) {
            json_t *j = json_loadb(body, (size_t)len, 0, NULL);
            t->transfer_id = json_integer_value(json_object_get(j, "id"));
            json_decref(j);
        }
    }
    PQclear(res);
    return 1;
}

static int transfer_body(db_conn *tx, void *arg)
{
    struct transfer *t = arg;
    set_outcome(t, 0, NULL, 0);
    if (t->key != NULL) {
        int rc = claim_key(tx, t);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    uint64_t bf, bt, ba;
    db_param pair[] = {db_int8(&bf, t->from), db_int8(&bt, t->to)};
    PGresult *res;
    int rc = db_exec(tx, &LOCK_PAIR, pair, &res);
    if (rc < 0)
        return keep_failure(t, rc, res);
    int64_t from_balance = -1, to_balance = -1;
    for (int i = 0; i < PQntuples(res); i++) {
        if (db_get_int(res, i, 0) == t->from)
            from_balance = db_get_int(res, i, 1);
        else
            to_balance = db_get_int(res, i, 1);
    }
    PQclear(res);
    if (from_balance < 0 || to_balance < 0) {
        set_problem(t, 404, from_balance < 0 ? "the from_account_id account does not exist"
                                             : "the to_account_id account does not exist",
                    NULL);
    } else if (from_balance < t->amount) {
        set_problem(t, 422, "insufficient funds in the from_account_id account", "amount_cents");
    } else if (to_balance > INT64_MAX - t->amount) {
        set_problem(t, 422, "the to_account_id balance would exceed the largest amount an account can hold",
                    "amount_cents");
    } else {
        db_param move[] = {db_int8(&bf, t->from), db_int8(&bt, t->to), db_int8(&ba, t->amount)};
        db_call calls[] = {{.stmt = &MOVE, .params = move}, {.stmt = &INSERT_TRANSFER, .params = move}};
        rc = db_exec_batch(tx, calls, 2, DB_BATCH_ATOMIC);
        if (rc < 0) {
            keep_failure(t, rc, calls[0].rc == -EREMOTEIO ? calls[0].result : calls[1].result);
            PQclear(calls[0].rc == -EREMOTEIO ? calls[1].result : calls[0].result);
            return rc;
        }
        json_t *j = routes_transfer_json(calls[1].result, 0);
        t->transfer_id = db_get_int(calls[1].result, 0, 0);
        db_calls_clear(calls, 2);
        char *body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (body == NULL)
            return -ENOMEM;
        set_outcome(t, 201, body, strlen(body));
    }
    if (t->key != NULL && t->response != NULL) {
        char status[8];
        snprintf(status, sizeof(status), "%d", t->status);
        db_param store[] = {db_text(t->key, -1), db_text(status, -1), db_text(t->response, (int)t->response_len)};
        rc = db_exec(tx, &STORE_KEY, store, &res);
        return keep_failure(t, rc, res);
    }
    return 0;
}

static void request_hash(struct transfer *t)
{
    char canon[96];
    int n = snprintf(canon, sizeof(canon), "POST /transfers %lld %lld %lld", (long long)t->from, (long long)t->to,
                     (long long)t->amount);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(canon, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(t->hash + 2 * i, 3, "%02x", md[i]);
}

static int create_transfer(server_req *r)
{
    struct transfer t = {.status = 0};
    t.key = server_req_header(r, "idempotency-key");
    if (t.key != NULL && !routes_input_idempotency_key(t.key, strlen(t.key))) {
        server_respond_problem(r, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return 0;
    }
    json_t *body = routes_body_object(r);
    if (body == NULL)
        return 0;
    json_t *errors = json_array();
    routes_transfer_input in;
    if (!routes_input_transfer(body, &in, errors)) {
        routes_invalid(r, errors);
        return 0;
    }
    json_decref(errors);
    t.from = in.from_account_id;
    t.to = in.to_account_id;
    t.amount = in.amount_cents;
    request_hash(&t);

    int rc = db_tx_run(&(db_tx_options){.isolation = DB_READ_COMMITTED, .max_retries = -1}, transfer_body, &t, NULL,
                       NULL);
    if (rc < 0) {
        server_respond_db_error(r, rc, t.failed, 404);
    } else if (t.status == 201) {
        char location[48];
        snprintf(location, sizeof(location), "/transfers/%lld", (long long)t.transfer_id);
        server_respond_header(r, "location", location);
        server_respond(r, 201, "application/json", t.response, t.response_len);
    } else {
        server_respond(r, t.status, "application/problem+json", t.response ? t.response : "{}",
                       t.response ? t.response_len : 2);
    }
    free(t.response);
    PQclear(t.failed);
    return 0;
}

static const server_route_def table[] = {
    {"POST", "/accounts", create_account, false},
    {"GET", "/accounts/{id}", get_account, false},
    {"POST", "/transfers", create_transfer, false},
    {"GET", "/transfers/{id}", get_transfer, false},
};

const server_route_def *routes_accounts(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
