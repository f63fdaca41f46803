/* Running SQL from a task: prepared statements, parameters, results.
 *
 *     static db_stmt WORLD = DB_STMT("world_by_id", "SELECT id, randomnumber FROM world WHERE id = $1", 1);
 *     uint32_t buf;
 *     db_param p[] = {db_int4(&buf, id)};
 *     PGresult *r;
 *     int rc = db_exec(NULL, &WORLD, p, &r);   // awaits; any pool connection
 *
 * Every statement is a prepared statement with out-of-line parameters: no
 * SQL text is ever built from input. Statements are prepared once per
 * connection, lazily, in the same round trip as their first execution.
 * Results come back in binary format; read them with the accessors below.
 *
 * Errors (negative errno):
 *   -EREMOTEIO    the server rejected the statement: the PGresult is still
 *                 returned, see db_sqlstate()
 *   -ETIMEDOUT    the task's deadline passed (the statement is cancelled on
 *                 the server; its connection is drained and reused or closed)
 *   -ECANCELED    the task was cancelled (same clean-up)
 *   -EBUSY        no pool connection within the pool's acquire timeout
 *   -ECONNREFUSED the database cannot be reached
 *   -ECONNRESET   the connection was lost while the statement ran
 *   -ENOMEM
 */
#ifndef H2PG_DB_DB_H
#define H2PG_DB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

/* A statement, defined once (usually static) and shared by every thread. */
typedef struct db_stmt {
    const char *name; /* unique among statements; used as the prepared statement's name */
    const char *sql;
    int nparams;
} db_stmt;

#define DB_STMT(name_, sql_, nparams_) {.name = (name_), .sql = (sql_), .nparams = (nparams_)}

/* One parameter: bytes plus their format (0 text, 1 binary). NULL value: SQL NULL. */
typedef struct db_param {
    const char *value;
    int len;
    int format;
} db_param;

static inline db_param db_null(void) { return (db_param){NULL, 0, 0}; }
/* Text (also for numbers given as text): s must be NUL-terminated at len
 * (libpq sends text up to the NUL) and stay valid until the exec call
 * returns or suspends. len -1: strlen. */
db_param db_text(const char *s, int len);
/* Binary integers; buf holds the network-order bytes and must outlive the call. */
db_param db_int4(uint32_t *buf, int32_t v);
db_param db_int8(uint64_t *buf, int64_t v);
/* A bool as text ("t"/"f"). */
db_param db_bool(bool v);

/* Opaque: a pooled, non-blocking connection (see pool.h). */
typedef struct db_conn db_conn;

/* Runs one statement and awaits its result, which the caller frees with
 * PQclear (also on -EREMOTEIO; NULL on other errors). conn NULL: borrows a
 * connection from the thread's pool for this statement (autocommit). */
int db_exec(db_conn *conn, const db_stmt *stmt, const db_param *params, PGresult **res);

/* One statement of a batch. */
typedef struct db_call {
    const db_stmt *stmt;
    const db_param *params;
    PGresult *result; /* set by db_exec_batch: success or error result, or NULL */
    int rc;           /* 0, -EREMOTEIO, or -ECANCELED if skipped after an earlier error (atomic batches) */
} db_call;

enum {
    /* All statements in one implicit transaction: the first failure aborts
     * the rest. Without it every statement is its own transaction. */
    DB_BATCH_ATOMIC = 1,
};

/* Sends every call in one round trip (pipeline mode) and awaits all the
 * results. Returns 0 when all succeeded, else the first failure's code (as
 * db_exec); each call's result is set and freed by the caller (see
 * db_calls_clear). */
int db_exec_batch(db_conn *conn, db_call *calls, size_t n, int flags);

/* Like db_exec / db_exec_batch (autocommit), for short reads that
 * tolerate replica lag: sent to one of this thread's read replicas in turn
 * (db_pool_set_replicas), skipping replicas that are down; if the replica
 * cannot be reached, or none is set, the primary answers. Never for
 * read-your-writes reads. They run on the pool's shared connection,
 * pipelined with other tasks' reads; one that is interrupted retires that
 * connection, whose janitor cancels it on the server when it reaches the
 * head of the pipeline. */
int db_exec_read(const db_stmt *stmt, const db_param *params, PGresult **res);
int db_exec_batch_read(db_call *calls, size_t n, int flags);

/* PQclear of every call's result. */
void db_calls_clear(db_call *calls, size_t n);

/* Statements run by this thread so far, and how many failed (any error). */
typedef struct db_counters {
    uint64_t statements, failures, timeouts, cancellations;
} db_counters;
void db_counters_get(db_counters *out);

/* The SQLSTATE of an error result ("23505"), or "" for NULL or success. */
const char *db_sqlstate(const PGresult *r);

/* ---- reading binary results (asserting the column's type) ---- */

/* int2 / int4 / int8 column as int64; 0 for NULL. */
int64_t db_get_int(const PGresult *r, int row, int col);
/* text / varchar / name column: bytes (not NUL-terminated: use len) */
const char *db_get_text(const PGresult *r, int row, int col, int *len);
bool db_get_bool(const PGresult *r, int row, int col);
/* timestamptz / timestamp column as microseconds since 1970-01-01 00:00 UTC
 * (timestamp: its wall-clock value read as UTC); 0 for NULL. PostgreSQL's
 * infinity and -infinity come back as INT64_MAX and INT64_MIN. */
int64_t db_get_timestamp(const PGresult *r, int row, int col);
bool db_is_null(const PGresult *r, int row, int col);

#endif
