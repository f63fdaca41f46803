/* Transactions that retry themselves (what asyncpg users write by hand
 * around `async with conn.transaction()`).
 *
 *     static int move_money(db_conn *tx, void *arg) { ... db_exec(tx, ...) ... }
 *     rc = db_tx_run(&(db_tx_options){.isolation = DB_READ_COMMITTED}, move_money, &args);
 *
 * The body runs between BEGIN and COMMIT on one borrowed connection. When a
 * statement or the COMMIT fails with a serialization failure (40001) or a
 * deadlock (40P01), the transaction is rolled back and the whole body runs
 * again, after a short randomised pause, up to max_retries times; so a body
 * must keep no state across attempts other than what it re-derives. BEGIN
 * travels in the same round trip as the body's first statement. */
#ifndef H2PG_DB_TX_H
#define H2PG_DB_TX_H

#include <stdbool.h>

#include "db/db.h"

typedef enum db_isolation { DB_READ_COMMITTED, DB_REPEATABLE_READ, DB_SERIALIZABLE } db_isolation;

typedef struct db_tx_options {
    db_isolation isolation;
    bool read_only;
    int max_retries; /* -1: the process default (TX_MAX_RETRIES) */
} db_tx_options;

/* Returns the body's own negative value to roll back with that error; any
 * value >= 0 commits. */
typedef int (*db_tx_body)(db_conn *tx, void *arg);

/* Runs body in a transaction. Returns what the committed body returned
 * (>= 0), the body's own error (rolled back), a database error as db_exec
 * (-EREMOTEIO after the retries ran out; *last, if given, then holds the
 * failing SQLSTATE), or -ETIMEDOUT / -ECANCELED / -EBUSY / -ECONNREFUSED /
 * -ECONNRESET. -ECONNRESET during COMMIT means the outcome is unknown.
 * *attempts (if given) counts the runs of body. */
int db_tx_run(const db_tx_options *o, db_tx_body body, void *arg, int *attempts, char last[6]);

/* db_tx_run with READ COMMITTED, the default retries and no reporting:
 * what most handlers want. */
int db_tx(db_tx_body body, void *arg);

/* The body's last statement and the COMMIT in one round trip (one
 * pipeline segment: if the statement fails, the COMMIT does not run and
 * the transaction rolls back as usual). Returns as db_exec, the
 * statement's result in *res (the caller frees it); a failed COMMIT (a
 * serialization failure at commit) is -EREMOTEIO like any statement, and
 * retried the same way. After 0 the transaction is committed: the body
 * returns at once with its result, and db_tx_run has nothing left to
 * commit. For work that must happen last, just before the commit, such as
 * an events_emit whose lock is held until then. */
int db_tx_exec_commit(db_conn *tx, const db_stmt *stmt, db_params params, PGresult **res);

/* The process default for max_retries (set once at start). */
void db_tx_set_default_retries(int n);

/* The SQLSTATE of the last statement that failed on c ("" if none). */
const char *db_conn_last_sqlstate(const db_conn *c);

#endif
