#include <arpa/inet.h>
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "db/conn_int.h"
#include "db/oid.h"

void db_calls_clear(db_call *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear(calls[i].result);
        calls[i].result = NULL;
    }
}

static _Thread_local db_counters counters;

void db_counters_get(db_counters *out) { *out = counters; }

/* ---- failure records (task locals) ---- */

static int failure_key = -1;
static pthread_once_t failure_once = PTHREAD_ONCE_INIT;

static void failure_key_init(void) { failure_key = aio_task_local_key(); }

void db_failure_open(db_failure *f)
{
    f->sqlstate[0] = f->message[0] = '\0';
    f->outer = NULL;
    if (aio_task_current() == NULL)
        return; /* outside a task no call can await, so none can fail into it */
    pthread_once(&failure_once, failure_key_init);
    f->outer = aio_task_local(failure_key);
    aio_task_set_local(failure_key, f);
}

void db_failure_close(db_failure *f)
{
    if (aio_task_current() == NULL)
        return; /* outside a task nothing was recorded (and no call could await) */
    assert(aio_task_local(failure_key) == f && "failure records close in reverse order");
    aio_task_set_local(failure_key, f->outer);
}

const db_failure *db_failure_current(void)
{
    pthread_once(&failure_once, failure_key_init);
    return aio_task_local(failure_key);
}

bool db_failed_with(const char *sqlstate)
{
    const db_failure *f = db_failure_current();
    return f != NULL && strcmp(f->sqlstate, sqlstate) == 0;
}

/* Keeps the server's reason for the first failed call in the current record. */
static void record(int rc, const db_call *calls, size_t n)
{
    if (rc != -EREMOTEIO)
        return;
    db_failure *f = (db_failure *)db_failure_current();
    for (size_t i = 0; i < n; i++) {
        if (calls[i].rc != -EREMOTEIO || calls[i].result == NULL)
            continue;
        const char *primary = PQresultErrorField(calls[i].result, PG_DIAG_MESSAGE_PRIMARY);
        if (f != NULL) {
            snprintf(f->sqlstate, sizeof(f->sqlstate), "%s", db_sqlstate(calls[i].result));
            snprintf(f->message, sizeof(f->message), "%s", primary ? primary : PQresultErrorMessage(calls[i].result));
        }
        return;
    }
}

static int count(int rc, const db_call *calls, size_t n)
{
    record(rc, calls, n);
    counters.statements += n;
    if (rc < 0) {
        counters.failures++;
        if (rc == -ETIMEDOUT)
            counters.timeouts++;
        else if (rc == -ECANCELED)
            counters.cancellations++;
    }
    return rc;
}

static int exec_batch(db_pool *pool, db_conn *conn, db_call *calls, size_t n, int flags);

int db_exec_batch(db_conn *conn, db_call *calls, size_t n, int flags)
{
    return count(exec_batch(db_pool_current(), conn, calls, n, flags), calls, n);
}

static _Thread_local db_pool **replicas;
static _Thread_local size_t nreplicas, next_replica;

void db_pool_set_replicas(db_pool **pools, size_t n)
{
    replicas = pools;
    nreplicas = n;
}

/* Whether a read failed because its server is going away or cannot be
 * had (then another server may answer it). A server shutting down answers
 * the statement in flight with 57P0x before it closes. */
static bool unreachable(int rc, const db_call *calls, size_t n)
{
    if (rc == -ECONNREFUSED || rc == -ECONNRESET || rc == -EHOSTUNREACH || rc == -EBUSY)
        return true;
    for (size_t i = 0; rc == -EREMOTEIO && i < n; i++) {
        const char *st = db_sqlstate(calls[i].result);
        if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P0", 4) == 0)
            return true;
    }
    return false;
}

#define SHARED_MAX_BATCH 4
/* runs again of a read hit by someone else's cancel, or skipped because
 * someone else's statement in its segment failed */
#define SHARED_RETRIES 8

/* On the pool's shared connection, pipelined with other tasks' reads: no
 * connection is borrowed per statement, and the server reads many
 * statements per wakeup: the statements every task queued in one loop turn
 * go out together, ended by one Sync (conn.c). A statement that fails (or
 * is cancelled) makes the server skip the rest of that segment; the reads
 * skipped for someone else's failure run again, invisibly. A call whose
 * requester gives up is left in the pipeline (its result dropped when it
 * comes; the watchdog cancels it on the server once it is the one running:
 * pool.c); a read hit by a cancel meant for someone else's statement runs
 * again, invisibly. */
static int exec_shared(db_pool *pool, db_call *calls, size_t n, int flags)
{
    /* a large batch that is not atomic gets a connection of its own, where
     * each statement is its own transaction with a Sync of its own (on the
     * shared one a failure would take the rest of the batch with it) */
    if (n > SHARED_MAX_BATCH && !(flags & DB_BATCH_ATOMIC))
        return exec_batch(pool, NULL, calls, n, flags);
    for (int attempt = 0;; attempt++) {
        db_conn *c;
        int rc = db__pool_shared(pool, &c);
        if (rc == -EAGAIN) /* a pool of one, or someone is opening it: do not wait for that */
            return exec_batch(pool, NULL, calls, n, flags);
        if (rc < 0)
            return rc;
        if (db__pool_unnamed(pool) && db__conn_after_sync(c)) {
            /* behind a transaction-pooling PgBouncer nothing may follow a
             * Sync before its answer: on that answer PgBouncer hands the
             * server session to another client, with whatever of ours it
             * has forwarded meanwhile, and that client gets our results.
             * The reads that wait leave together as the next segment. */
            if ((rc = db__pool_shared_wait_idle(pool)) < 0)
                return rc;
            attempt--;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            calls[i].result = NULL;
            calls[i].rc = -ECANCELED;
        }
        db_op *op = db__conn_send(c, calls, n, flags);
        if (op == NULL)
            return -ENOMEM;
        bool abandoned, collateral;
        rc = db__op_wait_ex(op, calls, n, &abandoned, &collateral);
        if (rc == -EREMOTEIO && collateral && attempt < SHARED_RETRIES) {
            counters.reruns++;
            db_calls_clear(calls, n);
            continue;
        }
        return rc;
    }
}

int db_read_batch(db_call *calls, size_t n, int flags)
{
    db_pool *pool = db_pool_current();
    assert(pool != NULL && "no database pool on this thread");
    return count(exec_shared(pool, calls, n, flags), calls, n);
}

int db_read(const db_stmt *stmt, db_params params, PGresult **res)
{
    db_call call = {.stmt = stmt, .params = params};
    int rc = db_read_batch(&call, 1, 0);
    *res = call.result;
    return rc;
}

int db_exec_batch_read(db_call *calls, size_t n, int flags)
{
    for (size_t k = 0; k < nreplicas; k++) {
        db_pool *p = replicas[next_replica++ % nreplicas];
        if (!db_pool_usable(p))
            continue;
        int rc = count(exec_shared(p, calls, n, flags), calls, n);
        if (!unreachable(rc, calls, n))
            return rc;
        db_calls_clear(calls, n); /* that replica is gone: try the next, then the primary */
    }
    db_pool *primary = db_pool_current();
    assert(primary != NULL && "no database pool on this thread");
    return count(exec_shared(primary, calls, n, flags), calls, n);
}

int db_exec_read(const db_stmt *stmt, db_params params, PGresult **res)
{
    db_call call = {.stmt = stmt, .params = params};
    int rc = db_exec_batch_read(&call, 1, 0);
    *res = call.result;
    return rc;
}

/* Sends the calls as one op on c and awaits them; *abandoned as db__op_wait. */
static int run_op(db_conn *c, db_call *calls, size_t n, int flags, bool *abandoned)
{
    db_op *op = db__conn_send(c, calls, n, flags);
    if (op == NULL) {
        *abandoned = false;
        return -ENOMEM;
    }
    return db__op_wait(op, calls, n, abandoned);
}

/* Behind a transaction-pooling PgBouncer, a Sync that ends a transaction
 * lets PgBouncer give the server session to another client as soon as its
 * answer comes, with whatever of ours it has forwarded by then: so the
 * independent statements of a batch outside a transaction (a Sync after
 * each) go one round trip at a time. The first failure's code, as a batch. */
static int run_one_by_one(db_conn *c, db_call *calls, size_t n, bool *abandoned)
{
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            db__pool_send_held(c->pool);
        int rc = run_op(c, &calls[i], 1, 0, abandoned);
        if (*abandoned)
            return rc;
        if (rc < 0 && first == 0)
            first = rc;
        if (rc == -ENOMEM)
            break;
    }
    return first;
}

static int exec_batch(db_pool *pool, db_conn *conn, db_call *calls, size_t n, int flags)
{
    for (size_t i = 0; i < n; i++) {
        calls[i].result = NULL;
        calls[i].rc = -ECANCELED;
    }
    if (n == 0)
        return 0;
    db_conn *c = conn;
    int rc;
    if (c == NULL) {
        assert(pool != NULL && "no database pool on this thread");
        if ((rc = db_pool_acquire(pool, &c)) < 0)
            return rc;
    }
    bool abandoned;
    if (n > 1 && !(flags & DB_BATCH_ATOMIC) && db__pool_unnamed(c->pool) && !db__conn_in_transaction(c))
        rc = run_one_by_one(c, calls, n, &abandoned);
    else
        rc = run_op(c, calls, n, flags, &abandoned);
    if (abandoned) {
        /* the statement may still run on the server: the janitor cancels it,
         * drains the connection and decides whether it can be reused */
        if (c->state == DB_CONN_BORROWED)
            db__pool_abandoned(c);
        return rc;
    }
    if (conn == NULL)
        db_pool_release(c);
    return rc;
}

int db_exec(db_conn *conn, const db_stmt *stmt, db_params params, PGresult **res)
{
    db_call call = {.stmt = stmt, .params = params};
    int rc = db_exec_batch(conn, &call, 1, 0);
    *res = call.result;
    return rc;
}

const char *db_sqlstate(const PGresult *r)
{
    if (r == NULL)
        return "";
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s ? s : "";
}

static bool column_fits(char want, Oid t)
{
    switch (want) {
    case 'i': return t == DB_OID_INT2 || t == DB_OID_INT4 || t == DB_OID_INT8;
    case 't': return t == DB_OID_TEXT || t == DB_OID_VARCHAR || t == DB_OID_NAME || t == DB_OID_BPCHAR;
    case 'b': return t == DB_OID_BOOL;
    case 'd': return t == DB_OID_TIMESTAMPTZ || t == DB_OID_TIMESTAMP;
    case '?': return true;
    default: assert(!"unknown column letter in a DB_QUERY"); return false;
    }
}

bool db_result_fits(const db_stmt *stmt, const PGresult *r)
{
    const char *cols = stmt->cols != NULL ? stmt->cols : "";
    int n = PQnfields(r);
    if ((size_t)n != strlen(cols))
        return false;
    for (int i = 0; i < n; i++)
        if (!column_fits(cols[i], PQftype(r, i)) || PQfformat(r, i) != 1)
            return false;
    return true;
}

bool db_is_null(const PGresult *r, int row, int col) { return PQgetisnull(r, row, col); }

int64_t db_get_timestamp(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    assert(PQfformat(r, col) == 1);
    assert((PQftype(r, col) == DB_OID_TIMESTAMPTZ || PQftype(r, col) == DB_OID_TIMESTAMP) &&
           "db_get_timestamp on a column that is not timestamptz/timestamp");
    uint64_t x;
    memcpy(&x, PQgetvalue(r, row, col), 8);
    int64_t pg = (int64_t)be64toh(x); /* microseconds since 2000-01-01 */
    if (pg == INT64_MAX || pg == INT64_MIN)
        return pg;
    return pg + INT64_C(946684800000000); /* 2000-01-01 in Unix microseconds */
}

int64_t db_get_int(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    assert(PQfformat(r, col) == 1);
    switch (PQftype(r, col)) {
    case DB_OID_INT2: {
        uint16_t x;
        memcpy(&x, v, 2);
        return (int16_t)ntohs(x);
    }
    case DB_OID_INT4: {
        uint32_t x;
        memcpy(&x, v, 4);
        return (int32_t)ntohl(x);
    }
    case DB_OID_INT8: {
        uint64_t x;
        memcpy(&x, v, 8);
        return (int64_t)be64toh(x);
    }
    default:
        assert(!"db_get_int on a column that is not int2/int4/int8");
        return 0;
    }
}

const char *db_get_text(const PGresult *r, int row, int col, int *len)
{
    Oid t = PQftype(r, col);
    (void)t;
    assert(t == DB_OID_TEXT || t == DB_OID_VARCHAR || t == DB_OID_NAME || t == DB_OID_BPCHAR);
    *len = PQgetlength(r, row, col);
    return PQgetvalue(r, row, col);
}

bool db_get_bool(const PGresult *r, int row, int col)
{
    assert(PQftype(r, col) == DB_OID_BOOL);
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] != 0;
}

/* ---- gather ---- */

static int gather_one(void *arg)
{
    db_call *call = arg;
    int rc = db_read_batch(call, 1, 0);
    if (rc == 0 && call->required && PQntuples(call->result) == 0)
        return -ENOENT; /* the group cancels the others, on the server too */
    return rc;
}

/* Each call is a task of its own on the shared connection: queued in the
 * same loop turn, they leave in one write with other requests' reads. */
int db_gather(db_call *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        calls[i].result = NULL;
        calls[i].rc = -ECANCELED;
    }
    aio_group group;
    aio_group_init(&group);
    for (size_t i = 0; i < n; i++)
        aio_group_spawn(&group, gather_one, &calls[i]);
    return aio_group_join(&group);
}
