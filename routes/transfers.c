/* Transfers: move money between two accounts, read one.
 *
 * A transfer is one transaction: both account rows locked in id order (so
 * two transfers between the same accounts wait for each other instead of
 * deadlocking), the balance checked, both rows updated in one statement,
 * the transfer recorded. Serialization failures and deadlocks re-run it.
 * With an Idempotency-Key a 201 is stored with the key in the same
 * transaction (routes/idempotency.h), so a retried request gets the first
 * answer back instead of moving money twice; a 404 or 422 moved nothing and
 * is not stored, so its retry runs again. The transfer.created event is
 * emitted by routes_idempotent as the transaction's last statement, after
 * the outcome is stored; a replay emits none. */
#include <stdio.h>

#include "routes/idempotency.h"

#define TRANSFER_COLUMNS "id, from_account_id, to_account_id, amount_cents, created_at"

/* visible to administrators and to the owner of either account, checked
 * in the statement that reads it (routes_get_owned) */
static const db_stmt GET_TRANSFER =
    DB_QUERY("transfer_get",
             "SELECT " TRANSFER_COLUMNS " FROM transfers t WHERE id = $1 AND ($2::bool OR EXISTS "
             "(SELECT 1 FROM accounts a WHERE a.id IN (t.from_account_id, t.to_account_id) AND a.user_id = $3))",
             3, "iiiid");
/* the owners come with the locks: whose money it is is checked on the
 * rows this transaction holds, so no one can change it in between */
static const db_stmt LOCK_PAIR =
    DB_QUERY("transfer_lock",
             "SELECT id, balance_cents, user_id FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE", 2, "iii");
static const db_stmt MOVE =
    DB_STMT("transfer_move",
            "UPDATE accounts SET balance_cents = balance_cents + CASE WHEN id = $1 THEN -$3::bigint ELSE $3::bigint END "
            "WHERE id IN ($1, $2)",
            3);
static const db_stmt INSERT_TRANSFER =
    DB_QUERY("transfer_insert",
             "INSERT INTO transfers (from_account_id, to_account_id, amount_cents) VALUES ($1, $2, $3) "
             "RETURNING " TRANSFER_COLUMNS,
             3, "iiiid");

static bool transfer_input(json_t *body, void *in, json_t *errors) { return routes_input_transfer(body, in, errors); }

static int move_money(server_req *r, db_conn *tx, void *arg, routes_outcome *out)
{
    const routes_transfer_input *t = arg;
    bool any_owner = routes_acts_for_all(r);
    int64_t caller = routes_caller_id(r);
    PGresult *res;
    int rc = routes_exec(r, tx, &LOCK_PAIR, DB_PARAMS(DB_INT8(t->from_account_id), DB_INT8(t->to_account_id)), &res);
    if (rc < 0)
        return rc;
    int64_t from = -1, to = -1, owners[2] = {0, 0};
    for (int i = 0; i < PQntuples(res); i++) {
        bool is_from = db_get_int(res, i, 0) == t->from_account_id;
        /* money moves only out of the caller's own account; someone
         * else's reads as missing, so its existence does not leak */
        if (is_from && !any_owner && db_get_int(res, i, 2) != caller)
            continue;
        *(is_from ? &from : &to) = db_get_int(res, i, 1);
        owners[is_from ? 0 : 1] = db_get_int(res, i, 2);
    }
    if (from < 0)
        return routes_outcome_problem(out, 404, "the from_account_id account does not exist", NULL);
    if (to < 0)
        return routes_outcome_problem(out, 404, "the to_account_id account does not exist", NULL);
    if (from < t->amount_cents)
        return routes_outcome_problem(out, 422, "insufficient funds in the from_account_id account", "amount_cents");
    if (to > INT64_MAX - t->amount_cents)
        return routes_outcome_problem(
            out, 422, "the to_account_id balance would exceed the largest amount an account can hold", "amount_cents");
    db_params p = DB_PARAMS(DB_INT8(t->from_account_id), DB_INT8(t->to_account_id), DB_INT8(t->amount_cents));
    db_call calls[] = {{.stmt = &MOVE, .params = p}, {.stmt = &INSERT_TRANSFER, .params = p}};
    rc = routes_batch(r, tx, calls, 2, DB_BATCH_ATOMIC);
    if (rc < 0)
        return rc;
    routes_outcome_created(out, db_row_json(calls[1].result, 0));
    /* the event's owners, from the rows this transaction holds locked */
    out->owners[0] = owners[0];
    out->owners[1] = owners[1];
    return 0;
}

static int create_transfer(server_req *r)
{
    const char *key;
    routes_transfer_input in;
    int rc = routes_idempotency_key(r, &key);
    if (rc == 0)
        rc = routes_body(r, transfer_input, &in);
    if (rc < 0)
        return rc;
    char fingerprint[128];
    /* with a caller, the key is the caller's: someone else's request with
     * the same key and body must not get this caller's answer back */
    char who[32] = "";
    if (routes_caller_id(r) != 0)
        snprintf(who, sizeof(who), " by %lld", (long long)routes_caller_id(r));
    snprintf(fingerprint, sizeof(fingerprint), "POST /transfers %lld %lld %lld%s", (long long)in.from_account_id,
             (long long)in.to_account_id, (long long)in.amount_cents, who);
    return routes_idempotent(r, key, fingerprint, "/transfers/", "transfer.created", move_money, &in);
}

static int get_transfer(server_req *r) { return routes_get_owned(r, &GET_TRANSFER, "no such transfer"); }

ROUTES({.method = "POST", .pattern = "/transfers", .handler = create_transfer},
       {.method = "GET", .pattern = "/transfers/{id}", .handler = get_transfer});
