/* Retrying transactions (db_tx_run) against a real PostgreSQL: run through
 * scripts/with-postgres.sh, which sets DATABASE_URL. Every test works on a
 * fresh database and a pool created on its own loop thread. Conflicts are
 * staged between two tasks of the loop with a barrier, so that both hold
 * their first lock (or snapshot) before either goes on. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "db/db.h"
#include "db/pool.h"
#include "db/tx.h"
#include "support/db.h"
#include "support/pg.h"

/* ---- helpers ---- */

/* A fresh database with the tables every test uses. */
static char *create_db(PGconn **admin)
{
    char *ci = test_pg_create_db();
    *admin = test_pg_connect(ci);
    test_pg_exec(*admin, "CREATE TABLE keys (k int PRIMARY KEY);"
                         "CREATE TABLE counter (id int PRIMARY KEY, v int NOT NULL);"
                         "INSERT INTO counter VALUES (1, 0), (2, 0);"
                         "CREATE TABLE on_call (id int PRIMARY KEY, on_duty bool NOT NULL);"
                         "INSERT INTO on_call VALUES (1, true), (2, true)");
    return ci;
}

static void drop_db(char *ci, PGconn *admin, db_pool *p)
{
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
}

static const char POOL_NOT_IDLE[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND application_name = 'h2pg' AND state <> 'idle'";

/* The pool's connections are all back, idle, outside any transaction. */
static void assert_pool_clean(db_pool *p, PGconn *admin)
{
    AIO_WAIT_UNTIL(test_db_pool_stats(p).cleaning == 0 && test_db_pool_stats(p).in_use == 0, 10000);
    AIO_WAIT_UNTIL(test_pg_int(admin, POOL_NOT_IDLE) == 0, 5000);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_IDLE);
    db_pool_release(c);
}

/* Every task of a conflict waits here on its first attempt until all have
 * arrived. */
struct barrier {
    int n, arrived;
    aio_event all_in;
};

static void barrier_init(struct barrier *b, int n)
{
    b->n = n;
    b->arrived = 0;
    aio_event_init(&b->all_in);
}

static int barrier_wait(struct barrier *b)
{
    if (++b->arrived == b->n)
        aio_event_set(&b->all_in);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_SEC(20)); /* a broken test must not hang */
    int rc = aio_event_wait(&b->all_in);
    aio_timeout_close(&scope);
    return rc;
}

static const db_stmt INSERT_KEY = DB_STMT("t_insert_key", "INSERT INTO keys (k) VALUES ($1)", 1);
static const db_stmt BACKEND_PID = DB_QUERY("t_backend_pid", "SELECT pg_backend_pid()", 0, "i");

static int insert_key(db_conn *tx, int k)
{
    PGresult *r = NULL;
    int rc = db_exec(tx, &INSERT_KEY, DB_PARAMS(DB_INT4(k)), &r);
    PQclear(r);
    return rc;
}

/* ---- commit and rollback ---- */

/* true inside a transaction that began at least 15 ms ago (now() is the
 * transaction's start) */
static const db_stmt IN_TRANSACTION =
    DB_QUERY("t_in_tx", "SELECT clock_timestamp() - now() > interval '15 ms'", 0, "b");

static int insert_two_and_return_42(db_conn *tx, void *arg)
{
    (void)arg;
    int rc = insert_key(tx, 1);
    if (rc < 0)
        return rc;
    /* later statements see the transaction's start time: BEGIN took effect */
    if ((rc = aio_sleep(AIO_MSEC(20))) < 0)
        return rc;
    PGresult *r = NULL;
    if ((rc = db_exec(tx, &IN_TRANSACTION, DB_NO_PARAMS, &r)) < 0) {
        PQclear(r);
        return rc;
    }
    bool in_tx = db_get_bool(r, 0, 0);
    PQclear(r);
    if (!in_tx)
        return -EPROTO;
    if (db_conn_tx_status(tx) != PQTRANS_INTRANS)
        return -EPROTO;
    rc = insert_key(tx, 2);
    return rc < 0 ? rc : 42;
}

AIO_TEST(a_committed_body_writes_are_visible_and_its_value_is_returned)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int attempts = -1;
    char last[6] = "xxxxx";
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.isolation = DB_READ_COMMITTED, .max_retries = -1},
                               insert_two_and_return_42, NULL, &attempts, last),
                     42);
    ck_assert_int_eq(attempts, 1);
    ck_assert_str_eq(last, "");
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 2);
    assert_pool_clean(p, admin);
    /* attempts and last are optional */
    test_pg_exec(admin, "DELETE FROM keys");
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = -1}, insert_two_and_return_42, NULL, NULL, NULL), 42);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 2);
    drop_db(ci, admin, p);
    return 0;
}

/* key 1, then key *arg with the COMMIT; 7 once committed. The session
 * is outside any transaction afterwards: the COMMIT ran. */
static int insert_then_commit_with(db_conn *tx, void *arg)
{
    int rc = insert_key(tx, 1);
    if (rc < 0)
        return rc;
    PGresult *r = NULL;
    rc = db_tx_exec_commit(tx, &INSERT_KEY, DB_PARAMS(DB_INT4(*(int *)arg)), &r);
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    PQclear(r);
    if (rc < 0)
        return rc;
    if (st != PGRES_COMMAND_OK || db_conn_tx_status(tx) != PQTRANS_IDLE)
        return -EPROTO;
    return 7;
}

AIO_TEST(a_last_statement_sent_with_the_commit_commits_the_body)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int k = 2, attempts = -1;
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = 3}, insert_then_commit_with, &k, &attempts, NULL), 7);
    ck_assert_int_eq(attempts, 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 2);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

/* A last statement that fails: the COMMIT after it does not run, and
 * everything the body wrote is rolled back. */
AIO_TEST(a_failing_last_statement_leaves_the_commit_unrun_and_rolls_back)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int k = 1; /* a duplicate of the body's first key */
    char last[6] = "";
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = 3}, insert_then_commit_with, &k, NULL, last),
                     -EREMOTEIO);
    ck_assert_str_eq(last, "23505");
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static int insert_then_refuse(db_conn *tx, void *arg)
{
    int *runs = arg;
    ++*runs;
    int rc = insert_key(tx, 1);
    return rc < 0 ? rc : -EPERM;
}

AIO_TEST(a_body_error_rolls_back_and_is_returned)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int runs = 0, attempts = -1;
    char last[6] = "xxxxx";
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = 5}, insert_then_refuse, &runs, &attempts, last), -EPERM);
    ck_assert_int_eq(runs, 1); /* not retried */
    ck_assert_int_eq(attempts, 1);
    ck_assert_str_eq(last, "");
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static int insert_duplicate(db_conn *tx, void *arg)
{
    int *runs = arg;
    ++*runs;
    int rc = insert_key(tx, 1);
    if (rc < 0)
        return rc;
    return insert_key(tx, 1);
}

AIO_TEST(a_statement_error_in_the_body_rolls_back_with_eremoteio)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int runs = 0, attempts = -1;
    char last[6] = "";
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = 5}, insert_duplicate, &runs, &attempts, last), -EREMOTEIO);
    ck_assert_int_eq(runs, 1); /* a unique violation is not retried */
    ck_assert_int_eq(attempts, 1);
    ck_assert_str_eq(last, "23505");
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static int insert_ignoring_a_failure(db_conn *tx, void *arg)
{
    (void)arg;
    if (insert_key(tx, 1) < 0)
        return -EPROTO;
    (void)insert_key(tx, 1); /* fails, and the body does not care */
    return 0;
}

AIO_TEST(a_body_that_ignores_a_failed_statement_is_not_reported_as_committed)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int attempts = -1;
    char last[6] = "";
    int rc = db_tx_run(&(db_tx_options){.max_retries = 5}, insert_ignoring_a_failure, NULL, &attempts, last);
    /* the server could only roll back: the first insert is gone too */
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    ck_assert_int_eq(rc, -EREMOTEIO);
    ck_assert_str_eq(last, "23505");
    ck_assert_int_eq(attempts, 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static int send_nothing(db_conn *tx, void *arg)
{
    (void)tx;
    (void)arg;
    return 5;
}

AIO_TEST(a_body_that_sends_nothing_returns_its_value_and_leaves_no_transaction)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int attempts = -1;
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = -1}, send_nothing, NULL, &attempts, NULL), 5);
    ck_assert_int_eq(attempts, 1);
    /* no BEGIN is left pending on the connection for its next user, whose
     * autocommit write would otherwise be rolled back at release */
    ck_assert_int_eq(aio_sleep(AIO_MSEC(20)), 0);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &IN_TRANSACTION, DB_NO_PARAMS, &r), 0);
    ck_assert(!db_get_bool(r, 0, 0));
    PQclear(r);
    ck_assert_int_eq(insert_key(NULL, 7), 0);
    assert_pool_clean(p, admin);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 1);
    drop_db(ci, admin, p);
    return 0;
}

/* ---- isolation and read-only ---- */

static const db_stmt TX_SETTINGS = DB_QUERY(
    "t_tx_settings", "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')", 0,
    "tt");

struct settings {
    char isolation[32];
    char read_only[8];
};

static int read_settings(db_conn *tx, void *arg)
{
    struct settings *s = arg;
    PGresult *r = NULL;
    int rc = db_exec(tx, &TX_SETTINGS, DB_NO_PARAMS, &r);
    if (rc == 0) {
        int len;
        const char *v = db_get_text(r, 0, 0, &len);
        snprintf(s->isolation, sizeof(s->isolation), "%.*s", len, v);
        v = db_get_text(r, 0, 1, &len);
        snprintf(s->read_only, sizeof(s->read_only), "%.*s", len, v);
    }
    PQclear(r);
    return rc;
}

AIO_TEST(the_isolation_level_and_read_only_mode_are_applied)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    struct {
        db_isolation level;
        bool ro;
        const char *name;
    } cases[] = {
        {DB_READ_COMMITTED, false, "read committed"}, {DB_REPEATABLE_READ, false, "repeatable read"},
        {DB_SERIALIZABLE, false, "serializable"},     {DB_READ_COMMITTED, true, "read committed"},
        {DB_REPEATABLE_READ, true, "repeatable read"}, {DB_SERIALIZABLE, true, "serializable"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct settings s = {"", ""};
        db_tx_options o = {.isolation = cases[i].level, .read_only = cases[i].ro, .max_retries = -1};
        ck_assert_int_eq(db_tx_run(&o, read_settings, &s, NULL, NULL), 0);
        ck_assert_str_eq(s.isolation, cases[i].name);
        ck_assert_str_eq(s.read_only, cases[i].ro ? "on" : "off");
    }
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(db_tx_is_a_read_committed_read_write_transaction_that_reports_through_the_failure_record)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    struct settings s = {"", ""};
    ck_assert_int_eq(db_tx(read_settings, &s), 0);
    ck_assert_str_eq(s.isolation, "read committed");
    ck_assert_str_eq(s.read_only, "off");
    ck_assert_int_eq(db_tx(insert_two_and_return_42, NULL), 42);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 2);
    /* a failed statement rolls back, and db_tx has no *last: the failure
     * record says why */
    test_pg_exec(admin, "DELETE FROM keys");
    db_failure f;
    db_failure_open(&f);
    int runs = 0;
    ck_assert_int_eq(db_tx(insert_duplicate, &runs), -EREMOTEIO);
    ck_assert_int_eq(runs, 1);
    ck_assert(db_failed_with("23505"));
    db_failure_close(&f);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static int insert_one(db_conn *tx, void *arg)
{
    int *runs = arg;
    ++*runs;
    return insert_key(tx, 1);
}

AIO_TEST(a_read_only_transaction_rejects_writes_with_25006)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int runs = 0, attempts = -1;
    char last[6] = "";
    db_tx_options o = {.isolation = DB_READ_COMMITTED, .read_only = true, .max_retries = 3};
    ck_assert_int_eq(db_tx_run(&o, insert_one, &runs, &attempts, last), -EREMOTEIO);
    ck_assert_str_eq(last, "25006");
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(attempts, 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    /* the same write commits in a read-write transaction */
    o.read_only = false;
    runs = 0;
    ck_assert_int_eq(db_tx_run(&o, insert_one, &runs, &attempts, last), 0);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

/* ---- conflicts and retries ---- */

struct conflict {
    db_tx_body body_fn;
    struct barrier *barrier;
    int first, second; /* rows, in this task's order */
    int runs;
    db_tx_options opts;
    int rc, attempts;
    char last[6];
    bool write_with_commit; /* the write goes with the COMMIT (db_tx_exec_commit) */
};

static const db_stmt BUMP = DB_STMT("t_bump", "UPDATE counter SET v = v + 1 WHERE id = $1", 1);

static int bump(db_conn *tx, int id)
{
    PGresult *r = NULL;
    int rc = db_exec(tx, &BUMP, DB_PARAMS(DB_INT4(id)), &r);
    PQclear(r);
    return rc;
}

/* Increments two rows; on the first run both tasks hold their first row
 * before either asks for the other's. */
static int bump_two_rows(db_conn *tx, void *arg)
{
    struct conflict *c = arg;
    int rc = bump(tx, c->first);
    if (rc < 0)
        return rc;
    if (++c->runs == 1 && (rc = barrier_wait(c->barrier)) < 0)
        return rc;
    return bump(tx, c->second);
}

static int run_conflict(void *arg)
{
    struct conflict *c = arg;
    c->rc = db_tx_run(&c->opts, c->body_fn, c, &c->attempts, c->last);
    return 0;
}

/* Runs both conflicting transactions concurrently and awaits them. */
static void run_pair(struct conflict c[2])
{
    aio_task *t[2];
    for (int i = 0; i < 2; i++)
        ck_assert_ptr_nonnull(t[i] = aio_task_spawn(run_conflict, &c[i]));
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(aio_task_join(t[i]), 0);
}

static void deadlock_pair(struct conflict c[2], struct barrier *b, int max_retries)
{
    barrier_init(b, 2);
    for (int i = 0; i < 2; i++)
        c[i] = (struct conflict){.body_fn = bump_two_rows,
                                 .barrier = b,
                                 .first = i == 0 ? 1 : 2,
                                 .second = i == 0 ? 2 : 1,
                                 .opts = {.isolation = DB_READ_COMMITTED, .max_retries = max_retries},
                                 .rc = 1,
                                 .attempts = -1};
}

AIO_TEST(a_deadlock_victim_is_retried_and_both_transactions_commit)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    struct conflict c[2];
    deadlock_pair(c, &b, -1);
    run_pair(c);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(c[i].rc == 0, "task %d: rc %d last %s", i, c[i].rc, c[i].last);
    /* a victim was chosen and ran again (on a loaded machine its retry can
     * win the freed row lock before the survivor wakes and deadlock once
     * more: more retries, never fewer); every attempt ran the body */
    ck_assert_int_ge(c[0].attempts + c[1].attempts, 3);
    ck_assert_int_eq(c[0].runs + c[1].runs, c[0].attempts + c[1].attempts);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 1"), 2);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 2"), 2);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(a_deadlock_with_no_retries_left_returns_eremoteio_and_40P01)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    struct conflict c[2];
    deadlock_pair(c, &b, 0);
    run_pair(c);
    int loser = c[0].rc == 0 ? 1 : 0;
    ck_assert_int_eq(c[1 - loser].rc, 0);
    ck_assert_int_eq(c[loser].rc, -EREMOTEIO);
    ck_assert_str_eq(c[loser].last, "40P01");
    ck_assert_int_eq(c[0].attempts, 1);
    ck_assert_int_eq(c[1].attempts, 1);
    /* only the winner's increments are there */
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 1"), 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 2"), 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static const db_stmt READ_V = DB_QUERY("t_read_v", "SELECT v FROM counter WHERE id = 1", 0, "i");
static const db_stmt WRITE_V = DB_STMT("t_write_v", "UPDATE counter SET v = $1 WHERE id = 1", 1);

/* Reads the counter and writes it back plus one; on the first run both
 * tasks have read before either writes. */
static int read_modify_write(db_conn *tx, void *arg)
{
    struct conflict *c = arg;
    PGresult *r = NULL;
    int rc = db_exec(tx, &READ_V, DB_NO_PARAMS, &r);
    if (rc < 0) {
        PQclear(r);
        return rc;
    }
    int64_t v = db_get_int(r, 0, 0);
    PQclear(r);
    if (++c->runs == 1 && (rc = barrier_wait(c->barrier)) < 0)
        return rc;
    r = NULL;
    if (c->write_with_commit)
        rc = db_tx_exec_commit(tx, &WRITE_V, DB_PARAMS(DB_INT4(v + 1)), &r);
    else
        rc = db_exec(tx, &WRITE_V, DB_PARAMS(DB_INT4(v + 1)), &r);
    PQclear(r);
    return rc;
}

static void rmw_pair(struct conflict c[2], struct barrier *b, int max_retries)
{
    barrier_init(b, 2);
    for (int i = 0; i < 2; i++)
        c[i] = (struct conflict){.body_fn = read_modify_write,
                                 .barrier = b,
                                 .opts = {.isolation = DB_SERIALIZABLE, .max_retries = max_retries},
                                 .rc = 1,
                                 .attempts = -1};
}

AIO_TEST(a_serialization_failure_is_retried_and_no_increment_is_lost)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    struct conflict c[2];
    rmw_pair(c, &b, 3);
    run_pair(c);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(c[i].rc == 0, "task %d: rc %d last %s", i, c[i].rc, c[i].last);
    ck_assert_int_eq(c[0].attempts + c[1].attempts, 3);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 1"), 2);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

/* The same with the write sent together with the COMMIT: the failure
 * comes from that one round trip, and the body still runs again. */
AIO_TEST(a_serialization_failure_of_a_write_sent_with_the_commit_is_retried)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    struct conflict c[2];
    rmw_pair(c, &b, 3);
    c[0].write_with_commit = c[1].write_with_commit = true;
    run_pair(c);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(c[i].rc == 0, "task %d: rc %d last %s", i, c[i].rc, c[i].last);
    ck_assert_int_eq(c[0].attempts + c[1].attempts, 3);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 1"), 2);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(a_serialization_failure_with_no_retries_left_returns_eremoteio_and_40001)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    struct conflict c[2];
    rmw_pair(c, &b, 0);
    run_pair(c);
    int loser = c[0].rc == 0 ? 1 : 0;
    ck_assert_int_eq(c[1 - loser].rc, 0);
    ck_assert_int_eq(c[loser].rc, -EREMOTEIO);
    ck_assert_str_eq(c[loser].last, "40001");
    ck_assert_int_eq(c[0].attempts, 1);
    ck_assert_int_eq(c[1].attempts, 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT v FROM counter WHERE id = 1"), 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(the_process_default_applies_when_max_retries_is_minus_one)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    db_tx_set_default_retries(0); /* this test runs in a process of its own */
    struct barrier b;
    struct conflict c[2];
    rmw_pair(c, &b, -1);
    run_pair(c);
    int loser = c[0].rc == 0 ? 1 : 0;
    ck_assert_int_eq(c[1 - loser].rc, 0);
    ck_assert_int_eq(c[loser].rc, -EREMOTEIO);
    ck_assert_str_eq(c[loser].last, "40001");
    ck_assert_int_eq(c[loser].attempts, 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

static const db_stmt COUNT_ON_DUTY = DB_QUERY("t_count_on_duty", "SELECT count(*) FROM on_call WHERE on_duty", 0, "i");
static const db_stmt GO_OFF_DUTY = DB_STMT("t_go_off_duty", "UPDATE on_call SET on_duty = false WHERE id = $1", 1);

/* Write skew: each goes off duty if someone else is still on; no row is
 * written by both, so only serializable isolation catches it (maybe only
 * at COMMIT). */
static int go_off_duty_if_covered(db_conn *tx, void *arg)
{
    struct conflict *c = arg;
    PGresult *r = NULL;
    int rc = db_exec(tx, &COUNT_ON_DUTY, DB_NO_PARAMS, &r);
    if (rc < 0) {
        PQclear(r);
        return rc;
    }
    int64_t on = db_get_int(r, 0, 0);
    PQclear(r);
    if (++c->runs == 1 && (rc = barrier_wait(c->barrier)) < 0)
        return rc;
    if (on < 2)
        return 0;
    r = NULL;
    rc = db_exec(tx, &GO_OFF_DUTY, DB_PARAMS(DB_INT4(c->first)), &r);
    PQclear(r);
    return rc;
}

AIO_TEST(write_skew_under_serializable_is_retried_and_prevented)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    struct barrier b;
    barrier_init(&b, 2);
    struct conflict c[2];
    for (int i = 0; i < 2; i++)
        c[i] = (struct conflict){.body_fn = go_off_duty_if_covered,
                                 .barrier = &b,
                                 .first = i + 1,
                                 .opts = {.isolation = DB_SERIALIZABLE, .max_retries = 3},
                                 .rc = 1,
                                 .attempts = -1};
    run_pair(c);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(c[i].rc == 0, "task %d: rc %d last %s", i, c[i].rc, c[i].last);
    ck_assert_int_eq(c[0].attempts + c[1].attempts, 3);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM on_call WHERE on_duty"), 1);
    assert_pool_clean(p, admin);
    drop_db(ci, admin, p);
    return 0;
}

/* ---- deadlines and cancellation ---- */

static const db_stmt LOCK_ROW = DB_QUERY("t_lock_row", "SELECT v FROM counter WHERE id = 1 FOR UPDATE", 0, "i");

static int insert_then_wait_for_a_lock(db_conn *tx, void *arg)
{
    int *runs = arg;
    ++*runs;
    int rc = insert_key(tx, 1);
    if (rc < 0)
        return rc;
    PGresult *r = NULL;
    rc = db_exec(tx, &LOCK_ROW, DB_NO_PARAMS, &r);
    PQclear(r);
    return rc;
}

static int insert_then_sleep(db_conn *tx, void *arg)
{
    int *runs = arg;
    ++*runs;
    int rc = insert_key(tx, 1);
    if (rc < 0)
        return rc;
    return aio_sleep(AIO_SEC(10));
}

/* After an interrupted transaction: nothing it wrote is there, and the one
 * connection came back clean (the same backend, outside a transaction). */
static void assert_rolled_back_and_reused(db_pool *p, PGconn *admin, int64_t pid)
{
    assert_pool_clean(p, admin);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.closed_dirty, 0);
    ck_assert_int_eq(st.open, 1);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &BACKEND_PID, DB_NO_PARAMS, &r), 0);
    ck_assert_int_eq(db_get_int(r, 0, 0), pid);
    PQclear(r);
    int runs = 0;
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = -1}, insert_one, &runs, NULL, NULL), 0);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 1);
}

static int64_t pool_pid(void)
{
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &BACKEND_PID, DB_NO_PARAMS, &r), 0);
    int64_t pid = db_get_int(r, 0, 0);
    PQclear(r);
    return pid;
}

AIO_TEST(a_deadline_during_a_statement_of_the_body_rolls_back_and_cancels_it)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    PGconn *locker = test_pg_connect(ci);
    test_pg_exec(locker, "BEGIN; SELECT * FROM counter WHERE id = 1 FOR UPDATE");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int64_t pid = pool_pid();
    int runs = 0, attempts = -1;
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    int64_t t0 = aio_now();
    int rc = db_tx_run(&(db_tx_options){.max_retries = 5}, insert_then_wait_for_a_lock, &runs, &attempts, NULL);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(aio_timeout_close(&scope), -ETIMEDOUT);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_double_ge(ms, 190);
    ck_assert_double_lt(ms, 1500);
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(attempts, 1);
    AIO_WAIT_UNTIL(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name = 'h2pg' AND state = 'active'") == 0,
               3000);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).cancels_sent == 1, 3000);
    assert_rolled_back_and_reused(p, admin, pid);
    test_pg_exec(locker, "ROLLBACK");
    PQfinish(locker);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(a_deadline_between_statements_of_the_body_rolls_back)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int64_t pid = pool_pid();
    int runs = 0, attempts = -1;
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    int64_t t0 = aio_now();
    int rc = db_tx_run(&(db_tx_options){.max_retries = 5}, insert_then_sleep, &runs, &attempts, NULL);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(aio_timeout_close(&scope), -ETIMEDOUT);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_double_lt(ms, 1500);
    ck_assert_int_eq(runs, 1);
    assert_rolled_back_and_reused(p, admin, pid);
    ck_assert_int_eq(test_db_pool_stats(p).cancels_sent, 0); /* nothing was running on the server */
    drop_db(ci, admin, p);
    return 0;
}

struct tx_task {
    db_tx_body body;
    int runs;
    int rc;
};

static int run_tx_task(void *arg)
{
    struct tx_task *t = arg;
    t->rc = db_tx_run(&(db_tx_options){.max_retries = 5}, t->body, &t->runs, NULL, NULL);
    return t->rc;
}

AIO_TEST(a_cancelled_transaction_rolls_back_and_cancels_its_statement)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    PGconn *locker = test_pg_connect(ci);
    test_pg_exec(locker, "BEGIN; SELECT * FROM counter WHERE id = 1 FOR UPDATE");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int64_t pid = pool_pid();
    struct tx_task tt = {.body = insert_then_wait_for_a_lock, .rc = 1};
    aio_task *t = aio_task_spawn(run_tx_task, &tt);
    AIO_WAIT_UNTIL(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name = 'h2pg' AND wait_event_type = 'Lock'") == 1,
               10000);
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(tt.runs, 1);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).cancels_sent == 1, 3000);
    assert_rolled_back_and_reused(p, admin, pid);
    test_pg_exec(locker, "ROLLBACK");
    PQfinish(locker);
    drop_db(ci, admin, p);
    return 0;
}

AIO_TEST(a_cancel_during_the_body_between_statements_rolls_back)
{
    PGconn *admin;
    char *ci = create_db(&admin);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    int64_t pid = pool_pid();
    struct tx_task tt = {.body = insert_then_sleep, .rc = 1};
    aio_task *t = aio_task_spawn(run_tx_task, &tt);
    AIO_WAIT_UNTIL(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name = 'h2pg' AND state = 'idle in transaction'") == 1,
               10000);
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    assert_rolled_back_and_reused(p, admin, pid);
    drop_db(ci, admin, p);
    return 0;
}

/* ---- no connection ---- */

AIO_TEST(no_body_runs_when_no_connection_can_be_had)
{
    db_pool_config cfg = {
        .conninfo = "host=127.0.0.1 port=1 dbname=none user=none",
        .min = 0,
        .max = 1,
        .acquire_timeout = AIO_SEC(10),
        .connect_timeout = AIO_SEC(10),
        .idle_timeout = AIO_SEC(60),
    };
    char err[256];
    db_pool *p = NULL;
    ck_assert_int_eq(db_pool_create(&cfg, &p, err, sizeof(err)), 0);
    int runs = 0, attempts = -1;
    char last[6] = "xxxxx";
    ck_assert_int_eq(db_tx_run(&(db_tx_options){.max_retries = 5}, insert_one, &runs, &attempts, last), -ECONNREFUSED);
    ck_assert_int_eq(runs, 0);
    ck_assert_int_eq(attempts, 0);
    ck_assert_str_eq(last, "");
    db_pool_destroy(p);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("db_tx");
    TCase *tc = tcase_create("outcomes");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_committed_body_writes_are_visible_and_its_value_is_returned);
    tcase_add_test(tc, a_body_error_rolls_back_and_is_returned);
    tcase_add_test(tc, a_last_statement_sent_with_the_commit_commits_the_body);
    tcase_add_test(tc, a_failing_last_statement_leaves_the_commit_unrun_and_rolls_back);
    tcase_add_test(tc, a_statement_error_in_the_body_rolls_back_with_eremoteio);
    tcase_add_test(tc, a_body_that_ignores_a_failed_statement_is_not_reported_as_committed);
    tcase_add_test(tc, a_body_that_sends_nothing_returns_its_value_and_leaves_no_transaction);
    tcase_add_test(tc, the_isolation_level_and_read_only_mode_are_applied);
    tcase_add_test(tc, db_tx_is_a_read_committed_read_write_transaction_that_reports_through_the_failure_record);
    tcase_add_test(tc, a_read_only_transaction_rejects_writes_with_25006);
    tcase_add_test(tc, no_body_runs_when_no_connection_can_be_had);
    suite_add_tcase(s, tc);

    tc = tcase_create("retries");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_deadlock_victim_is_retried_and_both_transactions_commit);
    tcase_add_test(tc, a_deadlock_with_no_retries_left_returns_eremoteio_and_40P01);
    tcase_add_test(tc, a_serialization_failure_is_retried_and_no_increment_is_lost);
    tcase_add_test(tc, a_serialization_failure_of_a_write_sent_with_the_commit_is_retried);
    tcase_add_test(tc, a_serialization_failure_with_no_retries_left_returns_eremoteio_and_40001);
    tcase_add_test(tc, the_process_default_applies_when_max_retries_is_minus_one);
    tcase_add_test(tc, write_skew_under_serializable_is_retried_and_prevented);
    suite_add_tcase(s, tc);

    tc = tcase_create("interrupts");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_deadline_during_a_statement_of_the_body_rolls_back_and_cancels_it);
    tcase_add_test(tc, a_deadline_between_statements_of_the_body_rolls_back);
    tcase_add_test(tc, a_cancelled_transaction_rolls_back_and_cancels_its_statement);
    tcase_add_test(tc, a_cancel_during_the_body_between_statements_rolls_back);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
