/* Running SQL from a task: prepared statements, parameters, results.
 *
 *     static const db_stmt WORLD =
 *         DB_QUERY("world_by_id", "SELECT id, randomnumber FROM world WHERE id = $1", 1, "ii");
 *     PGresult *r;
 *     int rc = db_exec(NULL, &WORLD, DB_PARAMS(DB_INT4(id)), &r);   // awaits; any pool connection
 *
 * Every statement is a prepared statement with out-of-line parameters: no
 * SQL text is ever built from input. Statements are prepared once per
 * connection, lazily, in the same round trip as their first execution.
 * Results come back in binary format; read them with the accessors below.
 *
 * Errors (negative errno):
 *   -EREMOTEIO    the server rejected the statement: the PGresult is still
 *                 returned, see db_sqlstate(), and the failure is recorded
 *                 (db_failure below)
 *   -ETIMEDOUT    the task's deadline passed (the statement is cancelled on
 *                 the server; its connection is drained and reused or closed)
 *   -ECANCELED    the task was cancelled (same clean-up)
 *   -EBUSY        no pool connection within the pool's acquire timeout
 *   -ECONNREFUSED the database cannot be reached
 *   -ECONNRESET   the connection was lost while the statement ran
 *   -EPROTO       a result did not fit its statement (DB_QUERY): the
 *                 connection was out of step and is closed
 *   -ENOMEM
 */
#ifndef H2PG_DB_DB_H
#define H2PG_DB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

/* A statement, defined once (usually static) and shared by every thread. */
typedef struct db_stmt {
    const char *name; /* unique among statements; used as the prepared statement's name */
    const char *sql;
    int nparams;
    const char *cols; /* the result's columns (DB_QUERY); NULL: none */
} db_stmt;

/* A statement that returns no rows (INSERT / UPDATE / DELETE without
 * RETURNING, BEGIN, LISTEN, ...). */
#define DB_STMT(name_, sql_, nparams_) {.name = (name_), .sql = (sql_), .nparams = (nparams_), .cols = NULL}

/* A statement that returns rows, with one letter per result column: i for
 * int2 / int4 / int8, t for text / varchar / name / bpchar, b for bool, d
 * for timestamptz / timestamp, ? for any type (never read by an accessor).
 *
 *     DB_QUERY("world_by_id", "SELECT id, randomnumber FROM world WHERE id = $1", 1, "ii")
 *
 * Every result is checked against its statement before anyone reads it: a
 * result of another shape means the connection's results are out of step
 * with its statements (say, a transaction-pooling PgBouncer sharing server
 * sessions behind a service not told so), so the connection is closed and
 * the call fails with -EPROTO; the accessors below never see a column of a
 * type they do not read. */
#define DB_QUERY(name_, sql_, nparams_, cols_) {.name = (name_), .sql = (sql_), .nparams = (nparams_), .cols = (cols_)}

/* Whether r (a command's or a query's successful result) has the columns
 * stmt declares. Pure. */
bool db_result_fits(const db_stmt *stmt, const PGresult *r);

/* One parameter, by value: the handler keeps no scratch buffers. Integers
 * travel in binary; text is sent up to its length (and must be
 * NUL-terminated there: libpq sends text up to the NUL) and must stay valid
 * until the call that sends it returns. */
typedef enum db_param_type { DB_PARAM_NULL, DB_PARAM_TEXT, DB_PARAM_INT4, DB_PARAM_INT8, DB_PARAM_BOOL } db_param_type;

typedef struct db_param {
    db_param_type type;
    int len; /* text: bytes, -1 for strlen */
    union {
        const char *s;
        int64_t i;
    } v;
} db_param;

#define DB_NULL ((db_param){.type = DB_PARAM_NULL})
#define DB_INT4(x) ((db_param){.type = DB_PARAM_INT4, .v.i = (int32_t)(x)})
#define DB_INT8(x) ((db_param){.type = DB_PARAM_INT8, .v.i = (int64_t)(x)})
#define DB_BOOL(b) ((db_param){.type = DB_PARAM_BOOL, .v.i = (b) ? 1 : 0})
#define DB_TEXT(str) ((db_param){.type = DB_PARAM_TEXT, .len = -1, .v.s = (str)})
#define DB_TEXTN(str, n) ((db_param){.type = DB_PARAM_TEXT, .len = (int)(n), .v.s = (str)})
/* Text, or SQL NULL when str is NULL. */
#define DB_TEXT_OR_NULL(str, n) ((str) != NULL ? DB_TEXTN(str, n) : DB_NULL)

/* A parameter list that knows its length: every call asserts it equals
 * the statement's declared count. */
typedef struct db_params {
    const db_param *v;
    int n;
} db_params;

#define DB_PARAMS(...)                                                                                                 \
    ((db_params){.v = (const db_param[]){__VA_ARGS__},                                                                 \
                 .n = (int)(sizeof((db_param[]){__VA_ARGS__}) / sizeof(db_param))})
#define DB_NO_PARAMS ((db_params){.v = NULL, .n = 0})

/* Most parameters a statement may declare. */
#define DB_MAX_PARAMS 32

/* Opaque: a pooled, non-blocking connection (see pool.h). */
typedef struct db_conn db_conn;

/* Runs one statement and awaits its result, which the caller frees with
 * PQclear (also on -EREMOTEIO; NULL on other errors). conn NULL: borrows a
 * connection from the thread's pool for this statement (autocommit).
 * params.n must equal stmt->nparams (asserted). */
int db_exec(db_conn *conn, const db_stmt *stmt, db_params params, PGresult **res);

/* One statement of a batch or a gather. */
typedef struct db_call {
    const db_stmt *stmt;
    db_params params;
    bool required;    /* db_gather: no row fails the gather with -ENOENT */
    PGresult *result; /* set by the call: success or error result, or NULL */
    int rc;           /* 0, -EREMOTEIO, or -ECANCELED if skipped after an earlier error (atomic batches) */
} db_call;

#define DB_CALL(stmt_, ...) ((db_call){.stmt = (stmt_), .params = DB_PARAMS(__VA_ARGS__)})
#define DB_CALL0(stmt_) ((db_call){.stmt = (stmt_), .params = DB_NO_PARAMS})

enum {
    /* All statements in one implicit transaction: the first failure aborts
     * the rest. Without it every statement is its own transaction. */
    DB_BATCH_ATOMIC = 1,
};

/* Sends every call in one round trip (pipeline mode) and awaits all the
 * results (behind a transaction-pooling PgBouncer, a batch that is neither
 * atomic nor inside a transaction goes one statement per round trip).
 * Returns 0 when all succeeded, else the first failure's code (as
 * db_exec); each call's result is set and freed by the caller (see
 * db_calls_clear). */
int db_exec_batch(db_conn *conn, db_call *calls, size_t n, int flags);

/* Autocommit reads on the calling thread's shared connection, pipelined
 * with other tasks' reads (many requests' statements per backend wake-up;
 * no connection borrowed per request). Read-your-writes: the primary
 * answers. The reads every task queues in one loop turn form one pipeline
 * segment (one Sync, at the end of the turn): a failing statement makes
 * the server skip the rest of it; the reads skipped for someone else's
 * failure run again, invisibly, and in a batch the calls after a failing
 * one fail with it (-ECANCELED), whatever the flags. Interrupted
 * (deadline, cancel), a call stops waiting
 * at once; its statement is dropped when its result comes, or, once it is
 * the one the server runs, cancelled there by the connection's watchdog.
 * A read hit by a cancel meant for another request's statement runs again,
 * invisibly. Behind a transaction-pooling PgBouncer (DATABASE_POOLER=
 * transaction) a segment is sent only once the one before has been
 * answered: PgBouncer may hand the server session to another client on
 * that answer. Not for statements with effects, nor for anything inside a
 * transaction. Errors as db_exec. */
int db_read(const db_stmt *stmt, db_params params, PGresult **res);
int db_read_batch(db_call *calls, size_t n, int flags);

/* asyncio.gather over reads (db_read, each in a task of its own, under the
 * caller's deadline): they leave together, pipelined, in one round trip,
 * and the server runs them in order. A call marked required that returns
 * no row fails the gather with -ENOENT as soon as its result arrives; that,
 * or any other failure, cancels the calls still running, on the server
 * too. Put the required call first. Returns 0, -ENOENT or the first
 * failure (as db_exec). Every call's result is set if it completed; the
 * caller frees them (db_calls_clear). */
int db_gather(db_call *calls, size_t n);

/* Like db_exec / db_exec_batch (autocommit), for short reads that
 * tolerate replica lag: sent to one of this thread's read replicas in turn
 * (db_pool_set_replicas), skipping replicas that are down; if the replica
 * cannot be reached, or none is set, the primary answers. Never for
 * read-your-writes reads. They run on that pool's shared connection, as
 * db_read does. */
int db_exec_read(const db_stmt *stmt, db_params params, PGresult **res);
int db_exec_batch_read(db_call *calls, size_t n, int flags);

/* PQclear of every call's result. */
void db_calls_clear(db_call *calls, size_t n);

/* ---- why a call failed: errors by return value ----
 *
 * Every call above returns a negative errno. For -EREMOTEIO the server's
 * SQLSTATE and message are kept in a failure record: the innermost one the
 * current task opened, or that a task it was spawned from had open (task
 * locals), so a failure in a gathered or grouped child reaches its
 * parent's record. A handler returns the code; whoever opened the record
 * (the routes layer, around every handler) turns it into an answer. */
typedef struct db_failure {
    char sqlstate[6]; /* of the last statement that failed on the server ("" when only a Prepare failed) */
    char message[240]; /* the server's primary message: for logs, never for clients */
    struct db_failure *outer;
} db_failure;

/* Starts recording into f (caller's memory; zeroed here) for this task and
 * the tasks it spawns from now on; close it before f goes, in reverse
 * order of opening. Never awaits. */
void db_failure_open(db_failure *f);
void db_failure_close(db_failure *f);

/* The record in force for the current task, or NULL. */
const db_failure *db_failure_current(void);

/* Whether the last server error recorded for this task had that SQLSTATE. */
bool db_failed_with(const char *sqlstate);

/* Statements run by this thread so far, and how many failed (any error). */
typedef struct db_counters {
    uint64_t statements, failures, timeouts, cancellations;
    uint64_t reruns; /* shared-connection reads run again after someone else's cancel or failure hit them */
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

/* Unix microseconds as an RFC 3339 UTC timestamp with microseconds,
 * "2026-11-22T08:46:30.262000Z", into out (at least 32 bytes); returns the
 * length. INT64_MAX / INT64_MIN give "infinity" / "-infinity". Pure. */
size_t db_format_timestamp(int64_t us, char *out);

/* ---- rows as JSON, by column name ----
 *
 * A row becomes an object whose keys are the column names (so the SQL's
 * column list, or its aliases, say what the client sees): int2/int4/int8
 * as integers, text/varchar/name as strings, bool, timestamptz/timestamp
 * as db_format_timestamp strings, NULL as null; any other type is an
 * assert. New references; NULL on ENOMEM. */
json_t *db_row_json(const PGresult *r, int row);
/* Every row, as an array. */
json_t *db_rows_json(const PGresult *r);

#endif
