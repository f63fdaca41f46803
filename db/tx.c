#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db/conn_int.h"
#include "db/tx.h"
#include "base/log.h"

static int default_retries = 10;

void db_tx_set_default_retries(int n) { default_retries = n; }

static const db_stmt BEGIN_RC = DB_STMT("h2pg_begin_rc", "BEGIN ISOLATION LEVEL READ COMMITTED", 0);
static const db_stmt BEGIN_RR = DB_STMT("h2pg_begin_rr", "BEGIN ISOLATION LEVEL REPEATABLE READ", 0);
static const db_stmt BEGIN_SER = DB_STMT("h2pg_begin_ser", "BEGIN ISOLATION LEVEL SERIALIZABLE", 0);
static const db_stmt BEGIN_RC_RO = DB_STMT("h2pg_begin_rc_ro", "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", 0);
static const db_stmt BEGIN_RR_RO = DB_STMT("h2pg_begin_rr_ro", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0);
static const db_stmt BEGIN_SER_RO = DB_STMT("h2pg_begin_ser_ro", "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", 0);
static const db_stmt COMMIT = DB_STMT("h2pg_commit", "COMMIT", 0);
static const db_stmt ROLLBACK = DB_STMT("h2pg_tx_rollback", "ROLLBACK", 0);

static const db_stmt *begin_stmt(const db_tx_options *o)
{
    switch (o->isolation) {
    case DB_REPEATABLE_READ:
        return o->read_only ? &BEGIN_RR_RO : &BEGIN_RR;
    case DB_SERIALIZABLE:
        return o->read_only ? &BEGIN_SER_RO : &BEGIN_SER;
    case DB_READ_COMMITTED:
        break;
    }
    return o->read_only ? &BEGIN_RC_RO : &BEGIN_RC;
}

static bool retryable(const char *sqlstate) { return strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0; }

static bool interrupted(int rc) { return rc == -ETIMEDOUT || rc == -ECANCELED; }

/* Ends one run of the body: COMMIT if it succeeded (a statement that
 * failed while the body went on makes it -EREMOTEIO: COMMIT would only
 * roll back). Returns the body's result once committed, else the failure. */
static int commit(db_conn *c, int result)
{
    if (result < 0 || c->broken)
        return result;
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR)
        return -EREMOTEIO;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return result; /* the body committed (db_tx_exec_commit) */
    PGresult *r = NULL;
    int rc = db_exec(c, &COMMIT, DB_NO_PARAMS, &r);
    PQclear(r);
    return rc == 0 ? result : rc;
}

/* After a failed run: ROLLBACK if a transaction is open. Returns rc, or
 * the interruption that cut the ROLLBACK short (then the janitor has the
 * connection), with *stop set when nothing more may run on c. */
static int roll_back(db_conn *c, int rc, bool *stop)
{
    *stop = false;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return rc;
    PGresult *r = NULL;
    int rb = db_exec(c, &ROLLBACK, DB_NO_PARAMS, &r);
    PQclear(r);
    if (rb < 0) {
        *stop = true;
        return interrupted(rb) ? rb : rc;
    }
    return rc;
}

/* A statement, BEGIN or COMMIT that failed because the connection went
 * away is not a statement error: the caller must not mistake it for one
 * (and for COMMIT the outcome is unknown). */
static int connection_loss(const db_conn *c, int rc)
{
    if (rc == -EREMOTEIO && (c->broken || strncmp(c->sqlstate, "08", 2) == 0 || strncmp(c->sqlstate, "57P0", 4) == 0))
        return -ECONNRESET;
    return rc;
}

int db_tx_run(const db_tx_options *o, db_tx_body body, void *arg, int *attempts, char last[6])
{
    int max_retries = o->max_retries >= 0 ? o->max_retries : default_retries;
    db_conn *c;
    int attempt = 0;
    if (last)
        last[0] = '\0';
    if (attempts)
        *attempts = 0;
    int rc = db_pool_acquire(db_pool_current(), &c);
    if (rc < 0)
        return rc;
    for (;;) {
        attempt++;
        c->sqlstate[0] = '\0';
        c->begin = begin_stmt(o);
        int result = body(c, arg);
        if (c->begin != NULL) { /* the body sent nothing: there is no transaction to end */
            c->begin = NULL;
            rc = result;
            break;
        }
        if ((rc = commit(c, result)) >= 0 || interrupted(rc) || c->broken)
            break; /* done; or the janitor has the connection, or it is gone */
        bool again = rc == -EREMOTEIO && retryable(c->sqlstate) && attempt <= max_retries, stop;
        if (last)
            memcpy(last, c->sqlstate, 6);
        rc = roll_back(c, rc, &stop);
        if (stop || !again)
            break;
        log_debug("transaction retry %d after SQLSTATE %s", attempt, c->sqlstate);
        /* a randomised pause, so that the transactions that collided do not collide again */
        int pause = aio_sleep(AIO_USEC(200 + rand() % (500 * attempt)));
        if (pause < 0) {
            rc = pause;
            break;
        }
    }
    rc = connection_loss(c, rc);
    if (attempts)
        *attempts = attempt;
    db_pool_release(c);
    return rc;
}

int db_tx_exec_commit(db_conn *tx, const db_stmt *stmt, db_params params, PGresult **res)
{
    db_call calls[] = {{.stmt = stmt, .params = params}, DB_CALL0(&COMMIT)};
    int rc = db_exec_batch(tx, calls, 2, DB_BATCH_ATOMIC);
    *res = calls[0].result;
    calls[0].result = NULL;
    db_calls_clear(calls, 2);
    return rc;
}

int db_tx(db_tx_body body, void *arg)
{
    return db_tx_run(&(db_tx_options){.isolation = DB_READ_COMMITTED, .max_retries = -1}, body, arg, NULL, NULL);
}
