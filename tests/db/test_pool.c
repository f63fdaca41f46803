/* The per-thread connection pool and statement execution against a real
 * PostgreSQL: run through scripts/with-postgres.sh, which sets DATABASE_URL.
 * Every test works on a fresh database of its own and creates its pool on
 * its loop thread (inside the AIO_TEST body).
 *
 * The blocking helpers of support/pg.h run on the loop thread too; they are
 * only used for work the server finishes by itself (never for something
 * that waits on the pool's tasks), so they cannot stall the test. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "db/db.h"
#include "db/pool.h"
#include "support/db.h"
#include "support/pg.h"

/* ---- helpers ---- */

/* Runs a statement that must succeed; returns its result. */
static PGresult *exec_ok(db_conn *c, const db_stmt *s, db_params params)
{
    PGresult *r = NULL;
    int rc = db_exec(c, s, params, &r);
    ck_assert_msg(rc == 0, "%s: %d %s %s", s->name, rc, db_sqlstate(r), r ? PQresultErrorMessage(r) : "");
    ck_assert_ptr_nonnull(r);
    return r;
}

/* A statement returning one integer. */
static int64_t exec_int(db_conn *c, const db_stmt *s, db_params params)
{
    PGresult *r = exec_ok(c, s, params);
    ck_assert_int_eq(PQntuples(r), 1);
    int64_t v = db_get_int(r, 0, 0);
    PQclear(r);
    return v;
}

static const char ACTIVE_POOL_QUERIES[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND application_name = 'h2pg' AND state = 'active'";
static const char POOL_BACKENDS[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND application_name = 'h2pg'";

static const db_stmt BACKEND_PID = DB_QUERY("t_backend_pid", "SELECT pg_backend_pid()", 0, "i");
static const db_stmt SELECT_ONE = DB_QUERY("t_select_one", "SELECT 1", 0, "i");

/* ---- statements and results ---- */

static const db_stmt TYPED_VALUES = DB_QUERY("t_typed",
                                             "SELECT 32767::int2, (-2147483648)::int4, 9223372036854775807::int8, "
                                             "(-5)::int2, 'héllo'::text, true, false, "
                                             "NULL::int4, NULL::text, NULL::bool, ''::text, 'x'::varchar(3)",
                                             0, "iiiitbbitbtt");

AIO_TEST(binary_results_read_back_through_the_accessors)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    PGresult *r = exec_ok(NULL, &TYPED_VALUES, DB_NO_PARAMS);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(PQnfields(r), 12);
    ck_assert_int_eq(db_get_int(r, 0, 0), 32767);
    ck_assert_int_eq(db_get_int(r, 0, 1), INT32_MIN);
    ck_assert_int_eq(db_get_int(r, 0, 2), INT64_MAX);
    ck_assert_int_eq(db_get_int(r, 0, 3), -5);
    int len = -1;
    const char *s = db_get_text(r, 0, 4, &len);
    ck_assert_int_eq(len, 6);
    ck_assert_mem_eq(s, "h\xc3\xa9llo", 6);
    ck_assert(db_get_bool(r, 0, 5));
    ck_assert(!db_get_bool(r, 0, 6));
    for (int col = 0; col < 7; col++)
        ck_assert(!db_is_null(r, 0, col));
    ck_assert(db_is_null(r, 0, 7));
    ck_assert_int_eq(db_get_int(r, 0, 7), 0);
    ck_assert(db_is_null(r, 0, 8));
    ck_assert(db_is_null(r, 0, 9));
    ck_assert(!db_get_bool(r, 0, 9));
    ck_assert(!db_is_null(r, 0, 10)); /* the empty string is not NULL */
    db_get_text(r, 0, 10, &len);
    ck_assert_int_eq(len, 0);
    s = db_get_text(r, 0, 11, &len);
    ck_assert_int_eq(len, 1);
    ck_assert_mem_eq(s, "x", 1);
    ck_assert_str_eq(db_sqlstate(r), "");
    PQclear(r);
    ck_assert_str_eq(db_sqlstate(NULL), "");
    db_pool_destroy(p);
    ck_assert_ptr_null(db_pool_current());
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt ECHO = DB_QUERY(
    "t_echo", "SELECT $1::text, $2::int4, $3::int8, $4::text IS NULL, $5::bool, octet_length($1::text)", 5, "tiibbi");
static const db_stmt STORE = DB_QUERY("t_store", "INSERT INTO notes (body) VALUES ($1) RETURNING id, body", 1, "it");
static const db_stmt FETCH = DB_QUERY("t_fetch", "SELECT body FROM notes WHERE id = $1", 1, "t");

AIO_TEST(parameters_round_trip_byte_exact)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE notes (id serial PRIMARY KEY, body text); CREATE TABLE x (id int)");
    db_pool *p = test_db_pool_open(ci, 0, 2);
    const char *texts[] = {
        "plain",
        "it's \"quoted\"",
        "back\\slash \\\\ and \\x41",
        "'; DROP TABLE x; --",
        "4-byte UTF-8: \xf0\x9f\x98\x80 \xf0\x90\x8d\x88",
        "$1 $2 %s %n",
        "",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        PGresult *r = exec_ok(NULL, &ECHO,
                              DB_PARAMS(DB_TEXT(texts[i]), DB_INT4(-123456 - (int)i), DB_INT8(INT64_MIN + (int64_t)i),
                                        DB_NULL, DB_BOOL(i % 2 == 0)));
        int len;
        const char *got = db_get_text(r, 0, 0, &len);
        ck_assert_int_eq(len, (int)strlen(texts[i]));
        ck_assert_mem_eq(got, texts[i], strlen(texts[i]));
        ck_assert_int_eq(db_get_int(r, 0, 1), -123456 - (int)i);
        ck_assert_int_eq(db_get_int(r, 0, 2), INT64_MIN + (int64_t)i);
        ck_assert(db_get_bool(r, 0, 3));
        ck_assert(db_get_bool(r, 0, 4) == (i % 2 == 0));
        ck_assert_int_eq(db_get_int(r, 0, 5), (int64_t)strlen(texts[i]));
        PQclear(r);

        /* through a table and back */
        r = exec_ok(NULL, &STORE, DB_PARAMS(DB_TEXT(texts[i])));
        int64_t id = db_get_int(r, 0, 0);
        PQclear(r);
        r = exec_ok(NULL, &FETCH, DB_PARAMS(DB_INT4(id)));
        ck_assert_int_eq(PQntuples(r), 1);
        got = db_get_text(r, 0, 0, &len);
        ck_assert_int_eq(len, (int)strlen(texts[i]));
        ck_assert_mem_eq(got, texts[i], strlen(texts[i]));
        PQclear(r);
    }
    /* the injection attempt stayed data */
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM pg_tables WHERE tablename = 'x'"), 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM notes WHERE body = '''; DROP TABLE x; --'"), 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt INSERT_KEY = DB_STMT("t_insert_key", "INSERT INTO keys (k) VALUES ($1)", 1);
static const db_stmt UNKNOWN_TABLE = DB_QUERY("t_unknown_table", "SELECT * FROM no_such_table", 0, "i");
static const db_stmt DIVIDE = DB_QUERY("t_divide", "SELECT 1 / $1::int4", 1, "i");

AIO_TEST(a_statement_error_returns_eremoteio_with_its_sqlstate_and_the_connection_stays_usable)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE keys (k int PRIMARY KEY)");
    db_pool *p = test_db_pool_open(ci, 0, 1); /* one connection: every statement shares it */
    int64_t pid = exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS);

    PQclear(exec_ok(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1))));
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1)), &r), -EREMOTEIO);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(db_sqlstate(r), "23505");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);

    /* an error at execution time */
    r = NULL;
    ck_assert_int_eq(db_exec(NULL, &DIVIDE, DB_PARAMS(DB_INT4(0)), &r), -EREMOTEIO);
    ck_assert_str_eq(db_sqlstate(r), "22012");
    PQclear(r);
    r = exec_ok(NULL, &DIVIDE, DB_PARAMS(DB_INT4(2)));
    ck_assert_int_eq(db_get_int(r, 0, 0), 0);
    PQclear(r);

    /* an error when the statement is prepared */
    r = NULL;
    ck_assert_int_eq(db_exec(NULL, &UNKNOWN_TABLE, DB_NO_PARAMS, &r), -EREMOTEIO);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(db_sqlstate(r), "42P01");
    PQclear(r);

    /* the same connection goes on working, outside any transaction */
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    ck_assert_int_eq(exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS), pid);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_IDLE);
    db_pool_release(c);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 1);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.open, 1);
    ck_assert_int_eq(st.closed_dirty, 0);

    /* once the table exists, the statement that failed to prepare works */
    test_pg_exec(admin, "CREATE TABLE no_such_table (v int); INSERT INTO no_such_table VALUES (7)");
    ck_assert_int_eq(exec_int(NULL, &UNKNOWN_TABLE, DB_NO_PARAMS), 7);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

/* Declared shapes that the server's results do not have: a column of
 * another type, a column too many, rows from a statement declared as a
 * command. */
static const db_stmt MISFIT_TYPE = DB_QUERY("t_misfit_type", "SELECT 1, 'x'::text", 0, "ti");
static const db_stmt MISFIT_COUNT = DB_QUERY("t_misfit_count", "SELECT 1, 2", 0, "i");
static const db_stmt MISFIT_ROWS = DB_STMT("t_misfit_rows", "SELECT 1", 0);
static const db_stmt ANY_TYPE = DB_QUERY("t_any_type", "SELECT 1::int4, '2'::text, pg_sleep(0)", 0, "?t?");
/* someone else prepares a statement under our statement's name in our
 * session, as other clients do behind a transaction-pooling PgBouncer */
static const db_stmt PREPARE_BEHIND = DB_STMT("t_prepare_behind", "PREPARE t_taken AS SELECT 2, 3", 0);
static const db_stmt TAKEN = DB_QUERY("t_taken", "SELECT 1", 0, "i");

/* A result is checked against its statement before anyone reads it: one
 * that does not fit means the connection answers other statements than
 * it was sent (it happens behind a pooler that shares server sessions), so
 * the call fails with -EPROTO, nothing reads the columns, and the
 * connection is closed; the pool goes on with a new one. */
AIO_TEST(a_result_that_does_not_fit_its_statement_fails_eproto_and_the_connection_is_replaced)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1); /* one connection: every statement shares it */
    const db_stmt *misfits[] = {&MISFIT_TYPE, &MISFIT_COUNT, &MISFIT_ROWS};
    for (size_t i = 0; i < sizeof(misfits) / sizeof(misfits[0]); i++) {
        int64_t pid = exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS);
        PGresult *r = (PGresult *)1;
        ck_assert_int_eq(db_exec(NULL, misfits[i], DB_NO_PARAMS, &r), -EPROTO);
        ck_assert_ptr_null(r);
        /* the next statement runs on a new session */
        ck_assert_int_ne(exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS), pid);
        ck_assert_int_eq(test_db_pool_stats(p).open, 1);
    }
    /* a session where our statement's name was prepared by someone else
     * is shared: the same */
    int64_t pid = exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS);
    PQclear(exec_ok(NULL, &PREPARE_BEHIND, DB_NO_PARAMS));
    PGresult *taken = (PGresult *)1;
    ck_assert_int_eq(db_exec(NULL, &TAKEN, DB_NO_PARAMS, &taken), -EPROTO);
    ck_assert_ptr_null(taken);
    ck_assert_int_ne(exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS), pid);
    ck_assert_int_eq(exec_int(NULL, &TAKEN, DB_NO_PARAMS), 1); /* prepared afresh in the new session */

    /* a fitting result, "?" taking any type */
    PGresult *r = exec_ok(NULL, &ANY_TYPE, DB_NO_PARAMS);
    int len;
    const char *text = db_get_text(r, 0, 1, &len);
    ck_assert_int_eq(len, 1);
    ck_assert_int_eq(text[0], '2');
    PQclear(r);
    db_pool_destroy(p);

    /* the same on a shared pipelined connection (db_read), where other
     * tasks' reads may be in flight: each fails, and reads go on after */
    p = test_db_pool_open(ci, 0, 4);
    r = NULL;
    ck_assert_int_eq(db_read(&SELECT_ONE, DB_NO_PARAMS, &r), 0);
    PQclear(r);
    r = (PGresult *)1;
    ck_assert_int_eq(db_read(&MISFIT_TYPE, DB_NO_PARAMS, &r), -EPROTO);
    ck_assert_ptr_null(r);
    r = NULL;
    ck_assert_int_eq(db_read(&SELECT_ONE, DB_NO_PARAMS, &r), 0);
    ck_assert_int_eq(db_get_int(r, 0, 0), 1);
    PQclear(r);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt PREPARED_COUNT =
    DB_QUERY("t_prepared_count", "SELECT count(*)::int8, coalesce(sum(generic_plans + custom_plans), 0)::int8 "
                                "FROM pg_prepared_statements WHERE name = $1",
             1, "ii");
static const db_stmt SQUARE = DB_QUERY("t_square", "SELECT $1::int4 * $1::int4", 1, "i");

AIO_TEST(a_statement_is_prepared_once_per_connection)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    for (int i = 0; i < 25; i++) {
        ck_assert_int_eq(exec_int(c, &SQUARE, DB_PARAMS(DB_INT4(i))), i * i);
    }
    /* and through the pool, which hands out the same connection */
    db_pool_release(c);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(exec_int(NULL, &SQUARE, DB_PARAMS(DB_INT4(i))), i * i);
    }
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    PGresult *r = exec_ok(c, &PREPARED_COUNT, DB_PARAMS(DB_TEXT(SQUARE.name)));
    ck_assert_int_eq(db_get_int(r, 0, 0), 1);  /* one server-side statement ... */
    ck_assert_int_eq(db_get_int(r, 0, 1), 30); /* ... that ran every time */
    PQclear(r);
    db_pool_release(c);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(application_name_is_h2pg_unless_the_conninfo_sets_one)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    ck_assert_int_eq(test_pg_int(admin, POOL_BACKENDS), 1);
    db_pool_destroy(p);
    AIO_WAIT_UNTIL(test_pg_int(admin, POOL_BACKENDS) == 0, 5000);

    size_t n = strlen(ci) + 64;
    char *named = malloc(n);
    snprintf(named, n, "%s application_name='reports'", ci);
    p = test_db_pool_open(named, 0, 1);
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND application_name = 'reports'"),
                     1);
    ck_assert_int_eq(test_pg_int(admin, POOL_BACKENDS), 0);
    db_pool_destroy(p);
    free(named);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt JIT_OFF = DB_QUERY("t_jit_off", "SELECT (current_setting('jit') = 'off')::int4", 0, "i");

/* JIT compiling costs PostgreSQL 15 about 350 ms per statement whose
 * generic plan is estimated costly: the pool's sessions turn it off. */
AIO_TEST(pool_sessions_run_with_jit_off)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    ck_assert_int_eq(exec_int(NULL, &JIT_OFF, DB_NO_PARAMS), 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_malformed_conninfo_fails_pool_creation_with_einval)
{
    db_pool_config cfg = test_db_pool_config("host=/tmp port", 0, 1);
    char err[256] = "";
    db_pool *p = NULL;
    ck_assert_int_eq(db_pool_create(&cfg, &p, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_ptr_null(db_pool_current());
    ck_assert_int_gt(strlen(err), 0);
    return 0;
}

/* ---- batches ---- */

static const db_stmt DOUBLE = DB_QUERY("t_double", "SELECT $1::int4 * 2", 1, "i");

AIO_TEST(a_batch_of_fifty_independent_statements_all_return)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    enum { N = 50 };
    db_call calls[N];
    db_param params[N];
    for (int i = 0; i < N; i++) {
        params[i] = DB_INT4(i);
        calls[i] = i % 5 == 4 ? (db_call){.stmt = &SELECT_ONE, .params = DB_NO_PARAMS}
                              : (db_call){.stmt = &DOUBLE, .params = {.v = &params[i], .n = 1}};
    }
    ck_assert_int_eq(db_exec_batch(NULL, calls, N, 0), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(calls[i].rc, 0);
        ck_assert_ptr_nonnull(calls[i].result);
        ck_assert_int_eq(db_get_int(calls[i].result, 0, 0), i % 5 == 4 ? 1 : 2 * i);
    }
    db_calls_clear(calls, N);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_null(calls[i].result);
    /* an empty batch is a no-op */
    ck_assert_int_eq(db_exec_batch(NULL, calls, 0, 0), 0);
    ck_assert_int_eq(test_db_pool_stats(p).open, 1);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_failing_statement_in_a_batch_does_not_affect_the_others)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE keys (k int PRIMARY KEY)");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    enum { N = 9 };
    int keys[N] = {1, 2, 3, 4, 1, 6, 7, 8, 9}; /* the fifth repeats the first */
    db_call calls[N];
    db_param params[N];
    for (int i = 0; i < N; i++) {
        params[i] = DB_INT4(keys[i]);
        calls[i] = (db_call){.stmt = &INSERT_KEY, .params = {.v = &params[i], .n = 1}};
    }
    ck_assert_int_eq(db_exec_batch(NULL, calls, N, 0), -EREMOTEIO);
    for (int i = 0; i < N; i++) {
        ck_assert_ptr_nonnull(calls[i].result);
        if (i == 4) {
            ck_assert_int_eq(calls[i].rc, -EREMOTEIO);
            ck_assert_str_eq(db_sqlstate(calls[i].result), "23505");
        } else {
            ck_assert_msg(calls[i].rc == 0, "call %d: %d %s", i, calls[i].rc, db_sqlstate(calls[i].result));
        }
    }
    db_calls_clear(calls, N);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 8);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt NEW_GOOD_A = DB_QUERY("t_new_good_a", "SELECT 10", 0, "i");
static const db_stmt NEW_BAD = DB_QUERY("t_new_bad", "SELECT * FROM missing_table", 0, "i");
static const db_stmt NEW_GOOD_B = DB_QUERY("t_new_good_b", "SELECT 20", 0, "i");

AIO_TEST(a_statement_that_fails_to_prepare_in_a_batch_does_not_fail_the_others_now_or_later)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    db_call calls[] = {{.stmt = &NEW_GOOD_A}, {.stmt = &NEW_BAD}, {.stmt = &NEW_GOOD_B}};
    ck_assert_int_eq(db_exec_batch(NULL, calls, 3, 0), -EREMOTEIO);
    ck_assert_msg(calls[0].rc == 0, "first: %d %s", calls[0].rc, db_sqlstate(calls[0].result));
    ck_assert_int_eq(db_get_int(calls[0].result, 0, 0), 10);
    ck_assert_int_eq(calls[1].rc, -EREMOTEIO);
    ck_assert_str_eq(db_sqlstate(calls[1].result), "42P01");
    ck_assert_msg(calls[2].rc == 0, "third: %d %s", calls[2].rc, db_sqlstate(calls[2].result));
    ck_assert_int_eq(db_get_int(calls[2].result, 0, 0), 20);
    db_calls_clear(calls, 3);
    /* the statements that were prepared stay usable on that connection */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(exec_int(NULL, &NEW_GOOD_A, DB_NO_PARAMS), 10);
        ck_assert_int_eq(exec_int(NULL, &NEW_GOOD_B, DB_NO_PARAMS), 20);
    }
    ck_assert_int_eq(test_db_pool_stats(p).open, 1);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(an_atomic_batch_stops_at_the_first_failure_and_rolls_back_its_writes)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE keys (k int PRIMARY KEY)");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    enum { N = 6 };
    int keys[N] = {1, 2, 3, 2, 5, 6}; /* the fourth repeats the second */
    db_call calls[N];
    db_param params[N];
    for (int i = 0; i < N; i++) {
        params[i] = DB_INT4(keys[i]);
        calls[i] = (db_call){.stmt = &INSERT_KEY, .params = {.v = &params[i], .n = 1}};
    }
    ck_assert_int_eq(db_exec_batch(NULL, calls, N, DB_BATCH_ATOMIC), -EREMOTEIO);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(calls[i].rc, 0);
    ck_assert_int_eq(calls[3].rc, -EREMOTEIO);
    ck_assert_str_eq(db_sqlstate(calls[3].result), "23505");
    for (int i = 4; i < N; i++)
        ck_assert_int_eq(calls[i].rc, -ECANCELED);
    db_calls_clear(calls, N);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), 0);

    /* the same batch without the duplicate commits every write */
    keys[3] = 4;
    for (int i = 0; i < N; i++)
        params[i] = DB_INT4(keys[i]);
    ck_assert_int_eq(db_exec_batch(NULL, calls, N, DB_BATCH_ATOMIC), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(calls[i].rc, 0);
    db_calls_clear(calls, N);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM keys"), N);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_IDLE);
    db_pool_release(c);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

/* ---- pool limits and waiting ---- */

struct holder {
    db_pool *pool;
    int id;
    int *order;    /* ids in the order connections were granted */
    int *norder;
    aio_event release; /* set: give the connection back */
    bool got;
    int rc;
    int64_t got_at;
};

static int hold_connection(void *arg)
{
    struct holder *h = arg;
    db_conn *c;
    h->rc = db_pool_acquire(h->pool, &c);
    if (h->rc < 0)
        return h->rc;
    h->got = true;
    h->got_at = aio_now();
    h->order[(*h->norder)++] = h->id;
    int rc = aio_event_wait(&h->release);
    db_pool_release(c);
    return rc;
}

AIO_TEST(waiters_are_served_in_arrival_order_as_connections_are_released)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 2);
    enum { N = 5 };
    struct holder h[N];
    int order[N], norder = 0;
    aio_task *t[N];
    for (int i = 0; i < N; i++) {
        h[i] = (struct holder){.pool = p, .id = i, .order = order, .norder = &norder};
        aio_event_init(&h[i].release);
    }
    /* two take the connections */
    for (int i = 0; i < 2; i++)
        t[i] = aio_task_spawn(hold_connection, &h[i]);
    AIO_WAIT_UNTIL(h[0].got && h[1].got, 10000);
    /* three queue, in this order */
    for (int i = 2; i < N; i++) {
        t[i] = aio_task_spawn(hold_connection, &h[i]);
        AIO_WAIT_UNTIL(test_db_pool_stats(p).waiting == (size_t)(i - 1), 5000);
    }
    ck_assert_int_eq(aio_sleep(AIO_MSEC(50)), 0);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.open, 2); /* never more than max */
    ck_assert_int_eq(st.in_use, 2);
    ck_assert_int_eq(st.waiting, 3);
    ck_assert_int_eq(norder, 2);

    /* each release goes to the longest waiter, at once */
    int releaser[] = {1, 0, 2, 3, 4};
    for (int k = 0; k < N; k++) {
        int64_t t0 = aio_now();
        aio_event_set(&h[releaser[k]].release);
        if (k + 2 < N) {
            AIO_WAIT_UNTIL(h[k + 2].got, 5000);
            ck_assert_double_lt((double)(h[k + 2].got_at - t0) / 1e6, 1000);
            ck_assert_int_le(test_db_pool_stats(p).open, 2);
        }
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(aio_task_join(t[i]), 0);
        ck_assert_int_eq(h[i].rc, 0);
        ck_assert_int_eq(order[i], i);
    }
    st = test_db_pool_stats(p);
    ck_assert_int_eq(st.open, 2);
    ck_assert_int_eq(st.idle, 2);
    ck_assert_int_eq(st.waiting, 0);
    ck_assert_int_eq(st.acquired, N);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(acquire_times_out_with_ebusy_when_the_pool_is_full)
{
    char *ci = test_pg_create_db();
    db_pool_config cfg = test_db_pool_config(ci, 0, 1);
    cfg.acquire_timeout = AIO_MSEC(300);
    db_pool *p = test_db_pool_open_with(&cfg);
    int order[2], norder = 0;
    struct holder h = {.pool = p, .id = 0, .order = order, .norder = &norder};
    aio_event_init(&h.release);
    aio_task *t = aio_task_spawn(hold_connection, &h);
    AIO_WAIT_UNTIL(h.got, 10000);

    db_conn *c = NULL;
    int64_t t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), -EBUSY);
    double ms = ms_since_ns(t0);
    ck_assert_double_ge(ms, 290);
    ck_assert_double_lt(ms, 3000);
    ck_assert_ptr_null(c);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &SELECT_ONE, DB_NO_PARAMS, &r), -EBUSY);
    ck_assert_ptr_null(r);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.acquire_timeouts, 2);
    ck_assert_int_eq(st.waiting, 0);

    /* the connection released later goes back to the idle list, not to a
     * waiter that gave up */
    aio_event_set(&h.release);
    ck_assert_int_eq(aio_task_join(t), 0);
    st = test_db_pool_stats(p);
    ck_assert_int_eq(st.idle, 1);
    ck_assert_int_eq(st.in_use, 0);
    ck_assert_int_eq(st.open, 1);
    t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    ck_assert_double_lt(ms_since_ns(t0), 100);
    db_pool_release(c);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_caller_deadline_shorter_than_the_acquire_timeout_gives_etimedout)
{
    char *ci = test_pg_create_db();
    db_pool_config cfg = test_db_pool_config(ci, 0, 1);
    cfg.acquire_timeout = AIO_SEC(10);
    db_pool *p = test_db_pool_open_with(&cfg);
    int order[2], norder = 0;
    struct holder h = {.pool = p, .id = 0, .order = order, .norder = &norder};
    aio_event_init(&h.release);
    aio_task *t = aio_task_spawn(hold_connection, &h);
    AIO_WAIT_UNTIL(h.got, 10000);

    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    db_conn *c = NULL;
    int64_t t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), -ETIMEDOUT);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(aio_timeout_close(&scope), -ETIMEDOUT);
    ck_assert_double_ge(ms, 190);
    ck_assert_double_lt(ms, 3000);
    ck_assert_int_eq(test_db_pool_stats(p).acquire_timeouts, 0);
    ck_assert_int_eq(test_db_pool_stats(p).waiting, 0);

    /* cancelled while waiting: -ECANCELED, and nothing is left queued */
    struct holder w = {.pool = p, .id = 1, .order = order, .norder = &norder};
    aio_event_init(&w.release);
    aio_task *waiter = aio_task_spawn(hold_connection, &w);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).waiting == 1, 5000);
    aio_task_cancel(waiter);
    ck_assert_int_eq(aio_task_join(waiter), -ECANCELED);
    ck_assert_int_eq(w.rc, -ECANCELED);
    ck_assert_int_eq(test_db_pool_stats(p).waiting, 0);

    aio_event_set(&h.release);
    ck_assert_int_eq(aio_task_join(t), 0);
    ck_assert_int_eq(test_db_pool_stats(p).idle, 1);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

/* ---- an unreachable database ---- */

AIO_TEST(an_unreachable_database_fails_acquire_fast_with_econnrefused)
{
    /* port 1 on the loopback: nothing listens there */
    db_pool_config cfg = test_db_pool_config("host=127.0.0.1 port=1 dbname=none user=none", 0, 2);
    cfg.acquire_timeout = AIO_SEC(20);
    db_pool *p = test_db_pool_open_with(&cfg);
    ck_assert_str_eq(db_pool_last_error(p), "");
    db_conn *c = NULL;
    int64_t t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), -ECONNREFUSED);
    ck_assert_double_lt(ms_since_ns(t0), 5000);
    ck_assert_ptr_null(c);
    const char *why = db_pool_last_error(p);
    ck_assert_msg(strstr(why, "refused") != NULL, "last error: \"%s\"", why);
    ck_assert_int_eq(test_db_pool_stats(p).connect_failures, 1);

    /* during the backoff: at once, without another attempt */
    t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), -ECONNREFUSED);
    ck_assert_double_lt(ms_since_ns(t0), 50);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &SELECT_ONE, DB_NO_PARAMS, &r), -ECONNREFUSED);
    ck_assert_ptr_null(r);

    /* after the backoff the pool tries again, and fails fast again */
    ck_assert_int_eq(aio_sleep(AIO_MSEC(300)), 0);
    t0 = aio_now();
    ck_assert_int_eq(db_pool_acquire(p, &c), -ECONNREFUSED);
    ck_assert_double_lt(ms_since_ns(t0), 5000);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_ge(st.connect_failures, 2);
    ck_assert_int_eq(st.open, 0);
    ck_assert_int_eq(st.waiting, 0);
    ck_assert_int_eq(st.acquire_timeouts, 0);
    db_pool_destroy(p);
    return 0;
}

/* ---- losing connections ---- */

static const char TERMINATE_POOL[] = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND application_name = 'h2pg'";

static int hold_briefly(void *arg)
{
    db_pool *p = arg;
    db_conn *c;
    int rc = db_pool_acquire(p, &c);
    if (rc < 0)
        return rc;
    rc = aio_sleep(AIO_MSEC(100));
    db_pool_release(c);
    return rc;
}

/* Runs SELECT 1 until it succeeds (the first tries may meet a connection
 * whose loss the pool has not seen yet). Returns the number of failures. */
static int select_one_with_retries(void)
{
    for (int failures = 0; failures < 20; failures++) {
        PGresult *r = NULL;
        int rc = db_exec(NULL, &SELECT_ONE, DB_NO_PARAMS, &r);
        PQclear(r);
        if (rc == 0)
            return failures;
        ck_assert_int_eq(aio_sleep(AIO_MSEC(100)), 0);
    }
    ck_abort_msg("the pool did not recover");
    return -1;
}

AIO_TEST(idle_connections_killed_by_the_server_leave_the_pool_and_it_reconnects)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    /* open two connections */
    aio_task *a = aio_task_spawn(hold_briefly, p), *b = aio_task_spawn(hold_briefly, p);
    ck_assert_int_eq(aio_task_join(a), 0);
    ck_assert_int_eq(aio_task_join(b), 0);
    ck_assert_int_eq(test_db_pool_stats(p).idle, 2);
    ck_assert_int_eq(test_pg_int(admin, POOL_BACKENDS), 2);

    ck_assert_int_eq(test_pg_int(admin, TERMINATE_POOL), 2);
    /* the pool watches idle sockets: both leave without being used */
    AIO_WAIT_UNTIL(test_db_pool_stats(p).open == 0, 5000);
    ck_assert_int_eq(test_db_pool_stats(p).idle, 0);

    ck_assert_int_eq(select_one_with_retries(), 0);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.open, 1);
    ck_assert_int_eq(test_pg_int(admin, POOL_BACKENDS), 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_pool_with_a_minimum_reopens_killed_connections_by_itself)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 2, 3);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).idle == 2 && test_pg_int(admin, POOL_BACKENDS) == 2, 10000);
    /* the killed backends, remembered on the admin session: a killed one
     * may stay in pg_stat_activity a moment after pg_terminate_backend */
    test_pg_exec(admin, "CREATE TEMP TABLE killed AS SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = 'h2pg'");
    ck_assert_int_eq(test_pg_int(admin, TERMINATE_POOL), 2);
    /* two new backends, and the pool holding two: it noticed both deaths */
    AIO_WAIT_UNTIL(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND application_name = 'h2pg' AND pid NOT IN (SELECT pid FROM killed)") == 2 &&
                       test_db_pool_stats(p).idle == 2 && test_db_pool_stats(p).open == 2,
                   10000);
    ck_assert_int_eq(test_db_pool_stats(p).open, 2);
    ck_assert_int_eq(select_one_with_retries(), 0);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt SLEEP_10 = DB_QUERY("t_sleep_10", "SELECT pg_sleep(10)", 0, "?");

struct statement_run {
    const db_stmt *stmt;
    db_params params;
    int rc;
    const char *sqlstate;
    bool done;
};

static int run_statement(void *arg)
{
    struct statement_run *s = arg;
    PGresult *r = NULL;
    s->rc = db_exec(NULL, s->stmt, s->params, &r);
    static char state[6];
    snprintf(state, sizeof(state), "%s", db_sqlstate(r));
    s->sqlstate = state;
    PQclear(r);
    s->done = true;
    return s->rc;
}

AIO_TEST(a_connection_killed_during_a_statement_fails_it_and_the_pool_recovers)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 1);
    struct statement_run s = {.stmt = &SLEEP_10};
    aio_task *t = aio_task_spawn(run_statement, &s);
    AIO_WAIT_UNTIL(test_pg_int(admin, ACTIVE_POOL_QUERIES) == 1, 10000);
    int64_t t0 = aio_now();
    ck_assert_int_eq(test_pg_int(admin, TERMINATE_POOL), 1);
    int rc = aio_task_join(t);
    ck_assert_double_lt(ms_since_ns(t0), 5000);
    /* lost, or rejected with the server's "terminating connection" */
    ck_assert_msg(rc == -ECONNRESET || (rc == -EREMOTEIO && strcmp(s.sqlstate, "57P01") == 0), "rc %d sqlstate %s", rc,
                  s.sqlstate);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).open == 0, 5000);
    ck_assert_int_eq(select_one_with_retries(), 0);
    ck_assert_int_eq(test_db_pool_stats(p).open, 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

/* ---- interrupting statements: cancel on the server, clean connection ---- */

static const db_stmt LOCK_ROW = DB_QUERY("t_lock_row", "SELECT v FROM counter WHERE id = 1 FOR UPDATE", 0, "i");
static const db_stmt INSERT_NOTE = DB_STMT("t_insert_note", "INSERT INTO notes (body) VALUES ($1)", 1);
static const db_stmt BEGIN = DB_STMT("t_begin", "BEGIN", 0);

struct blocked_db {
    char *ci;
    PGconn *admin;  /* observes */
    PGconn *locker; /* holds the row lock the statement waits for */
    db_pool *pool;
    int64_t pid;    /* the pool's only backend */
};

/* A database with a locked row and a one-connection pool whose backend is known. */
static void blocked_db_open(struct blocked_db *b)
{
    b->ci = test_pg_create_db();
    b->admin = test_pg_connect(b->ci);
    test_pg_exec(b->admin, "CREATE TABLE counter (id int PRIMARY KEY, v int); INSERT INTO counter VALUES (1, 0);"
                           "CREATE TABLE notes (id serial PRIMARY KEY, body text)");
    b->locker = test_pg_connect(b->ci);
    test_pg_exec(b->locker, "BEGIN; SELECT * FROM counter WHERE id = 1 FOR UPDATE");
    b->pool = test_db_pool_open(b->ci, 0, 1);
    b->pid = exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS);
}

/* After an interrupted statement: the server stops running it, the
 * janitor sent a cancel and gave the very same connection back, clean.
 * (It re-sends the cancel every 20 ms until the work is done, so on a
 * loaded machine, where the first may land late, there can be a few.) */
static void assert_cancelled_and_reused(struct blocked_db *b)
{
    int64_t t0 = aio_now();
    AIO_WAIT_UNTIL(test_pg_int(b->admin, ACTIVE_POOL_QUERIES) == 0, 5000);
    ck_assert_double_lt(ms_since_ns(t0), 3000);
    AIO_WAIT_UNTIL(test_db_pool_stats(b->pool).cleaning == 0 && test_db_pool_stats(b->pool).idle == 1, 5000);
    db_pool_stats st = test_db_pool_stats(b->pool);
    ck_assert_int_ge(st.cancels_sent, 1);
    ck_assert_int_le(st.cancels_sent, 150); /* within the 3 s above */
    ck_assert_int_eq(st.closed_dirty, 0);
    ck_assert_int_le(st.open, 1);
    ck_assert_int_eq(exec_int(NULL, &BACKEND_PID, DB_NO_PARAMS), b->pid);
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(b->pool, &c), 0);
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_IDLE);
    db_pool_release(c);
    ck_assert_int_eq(test_db_pool_stats(b->pool).open, 1);
    /* the lock holder never saw any of it */
    ck_assert_int_eq(test_pg_int(b->locker, "SELECT v FROM counter WHERE id = 1"), 0);
}

static void blocked_db_close(struct blocked_db *b)
{
    test_pg_exec(b->locker, "ROLLBACK");
    PQfinish(b->locker);
    db_pool_destroy(b->pool);
    PQfinish(b->admin);
    test_pg_drop_db(b->ci);
}

AIO_TEST(a_deadline_cancels_the_statement_on_the_server_and_the_connection_is_reused)
{
    struct blocked_db b;
    blocked_db_open(&b);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    PGresult *r = NULL;
    int64_t t0 = aio_now();
    int rc = db_exec(NULL, &LOCK_ROW, DB_NO_PARAMS, &r);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(aio_timeout_close(&scope), -ETIMEDOUT);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_ptr_null(r);
    ck_assert_double_ge(ms, 190);
    ck_assert_double_lt(ms, 1500);
    assert_cancelled_and_reused(&b);
    blocked_db_close(&b);
    return 0;
}

AIO_TEST(a_deadline_cancels_a_sleeping_statement_too)
{
    struct blocked_db b;
    blocked_db_open(&b);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    PGresult *r = NULL;
    int64_t t0 = aio_now();
    ck_assert_int_eq(db_exec(NULL, &SLEEP_10, DB_NO_PARAMS, &r), -ETIMEDOUT);
    ck_assert_double_lt(ms_since_ns(t0), 1500);
    aio_timeout_close(&scope);
    assert_cancelled_and_reused(&b);
    blocked_db_close(&b);
    return 0;
}

AIO_TEST(a_cancelled_task_cancels_its_statement_on_the_server)
{
    struct blocked_db b;
    blocked_db_open(&b);
    struct statement_run s = {.stmt = &LOCK_ROW};
    aio_task *t = aio_task_spawn(run_statement, &s);
    AIO_WAIT_UNTIL(test_pg_int(b.admin, ACTIVE_POOL_QUERIES) == 1, 10000);
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(s.rc, -ECANCELED);
    assert_cancelled_and_reused(&b);
    blocked_db_close(&b);
    return 0;
}

static int fail_after_200ms(void *arg)
{
    (void)arg;
    int rc = aio_sleep(AIO_MSEC(200));
    return rc < 0 ? rc : -EIO;
}

AIO_TEST(a_failing_sibling_in_a_group_cancels_the_statement_on_the_server)
{
    struct blocked_db b;
    blocked_db_open(&b);
    struct statement_run s = {.stmt = &LOCK_ROW};
    aio_group g;
    aio_group_init(&g);
    ck_assert_ptr_nonnull(aio_group_spawn(&g, run_statement, &s));
    ck_assert_ptr_nonnull(aio_group_spawn(&g, fail_after_200ms, NULL));
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_group_join(&g), -EIO);
    ck_assert_double_lt(ms_since_ns(t0), 1500);
    ck_assert(s.done);
    ck_assert_int_eq(s.rc, -ECANCELED);
    assert_cancelled_and_reused(&b);
    blocked_db_close(&b);
    return 0;
}

AIO_TEST(an_interrupted_statement_in_an_open_transaction_comes_back_rolled_back)
{
    struct blocked_db b;
    blocked_db_open(&b);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(b.pool, &c), 0);
    PQclear(exec_ok(c, &BEGIN, DB_NO_PARAMS));
    PQclear(exec_ok(c, &INSERT_NOTE, DB_PARAMS(DB_TEXT("written inside"))));
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_INTRANS);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(c, &LOCK_ROW, DB_NO_PARAMS, &r), -ETIMEDOUT);
    aio_timeout_close(&scope);
    db_pool_release(c); /* the janitor has it already: a no-op */
    assert_cancelled_and_reused(&b);
    ck_assert_int_eq(test_pg_int(b.admin, "SELECT count(*) FROM notes"), 0);
    ck_assert_int_eq(test_pg_int(b.admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND application_name = 'h2pg' AND state <> 'idle'"),
                     0);
    blocked_db_close(&b);
    return 0;
}

AIO_TEST(a_connection_released_inside_a_transaction_comes_back_rolled_back)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE notes (id serial PRIMARY KEY, body text)");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    db_conn *c;
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    PQclear(exec_ok(c, &BEGIN, DB_NO_PARAMS));
    PQclear(exec_ok(c, &INSERT_NOTE, DB_PARAMS(DB_TEXT("abandoned"))));
    db_pool_release(c); /* forgot to commit */
    AIO_WAIT_UNTIL(test_db_pool_stats(p).cleaning == 0 && test_db_pool_stats(p).idle == 1, 5000);
    ck_assert_int_eq(test_db_pool_stats(p).cancels_sent, 0); /* nothing was running */
    ck_assert_int_eq(test_db_pool_stats(p).closed_dirty, 0);
    ck_assert_int_eq(db_pool_acquire(p, &c), 0);
    ck_assert_int_eq(db_conn_tx_status(c), PQTRANS_IDLE);
    db_pool_release(c);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM notes"), 0);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt STUBBORN = DB_QUERY("t_stubborn", "SELECT stubborn()", 0, "i");

AIO_TEST(the_janitor_keeps_cancelling_and_closes_a_connection_that_does_not_drain_in_time)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    /* a statement that swallows cancel requests for 12 seconds: all its
     * work runs inside the handler, so a cancel cannot land outside it */
    test_pg_exec(admin, "CREATE FUNCTION stubborn() RETURNS int LANGUAGE plpgsql AS $$"
                        "DECLARE t0 timestamptz := clock_timestamp(); "
                        "BEGIN "
                        "  LOOP "
                        "    BEGIN "
                        "      WHILE clock_timestamp() < t0 + interval '12 s' LOOP PERFORM pg_sleep(0.05); END LOOP; "
                        "      RETURN 1; "
                        "    EXCEPTION WHEN query_canceled THEN NULL; "
                        "    END; "
                        "  END LOOP; "
                        "END $$");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(200));
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &STUBBORN, DB_NO_PARAMS, &r), -ETIMEDOUT);
    aio_timeout_close(&scope);
    /* The janitor keeps cancelling (a cancel that lands while the handler
     * runs gets through): either one of them ends the statement and the
     * connection comes back clean, or after its 5 s it gives up and closes
     * the connection. Never is it handed out still busy. */
    int64_t t0 = aio_now();
    while (test_db_pool_stats(p).cleaning > 0 && ms_since_ns(t0) < 15000)
        ck_assert_int_eq(aio_sleep(AIO_MSEC(10)), 0);
    double ms = ms_since_ns(t0);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_msg(st.cleaning == 0, "still cleaning after %.0f ms", ms);
    ck_assert_double_lt(ms, 11000); /* before the statement could end by itself */
    ck_assert_uint_gt(st.cancels_sent, 1); /* cancels were sent again */
    if (st.closed_dirty == 1) {
        ck_assert_double_gt(ms, 4000); /* it was given its time to drain */
        ck_assert_int_eq(st.open, 0);
    } else {
        ck_assert_int_eq(st.closed_dirty, 0);
        ck_assert_int_eq(st.idle, 1);
    }
    /* drained: the backend no longer runs it */
    if (st.closed_dirty == 0)
        ck_assert_int_eq(test_pg_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%stubborn()%' "
                                            "AND state = 'active' AND pid <> pg_backend_pid()"),
                         0);
    /* and the pool serves the next statement */
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

/* ---- idle timeout ---- */

AIO_TEST(idle_connections_above_min_are_closed_after_the_idle_timeout)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool_config cfg = test_db_pool_config(ci, 1, 3);
    cfg.idle_timeout = AIO_MSEC(300);
    db_pool *p = test_db_pool_open_with(&cfg);
    aio_task *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = aio_task_spawn(hold_briefly, p);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(aio_task_join(t[i]), 0);
    ck_assert_int_eq(test_db_pool_stats(p).open, 3);
    int64_t t0 = aio_now();
    AIO_WAIT_UNTIL(test_db_pool_stats(p).open == 1, 10000);
    ck_assert_double_ge(ms_since_ns(t0), 200);
    AIO_WAIT_UNTIL(test_pg_int(admin, POOL_BACKENDS) == 1, 5000);
    /* min stays */
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1500)), 0);
    db_pool_stats st = test_db_pool_stats(p);
    ck_assert_int_eq(st.open, 1);
    ck_assert_int_eq(st.idle, 1);
    ck_assert_int_eq(st.closed_dirty, 0);
    ck_assert_int_eq(exec_int(NULL, &SELECT_ONE, DB_NO_PARAMS), 1);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(the_pool_opens_min_connections_in_the_background)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 2, 4);
    AIO_WAIT_UNTIL(test_db_pool_stats(p).idle == 2, 10000);
    ck_assert_int_eq(test_db_pool_stats(p).open, 2);
    ck_assert_int_eq(test_pg_int(admin, POOL_BACKENDS), 2);
    db_pool_destroy(p);
    AIO_WAIT_UNTIL(test_pg_int(admin, POOL_BACKENDS) == 0, 5000);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("db_pool");
    TCase *tc = tcase_create("statements");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, binary_results_read_back_through_the_accessors);
    tcase_add_test(tc, parameters_round_trip_byte_exact);
    tcase_add_test(tc, a_statement_error_returns_eremoteio_with_its_sqlstate_and_the_connection_stays_usable);
    tcase_add_test(tc, a_result_that_does_not_fit_its_statement_fails_eproto_and_the_connection_is_replaced);
    tcase_add_test(tc, a_statement_is_prepared_once_per_connection);
    tcase_add_test(tc, application_name_is_h2pg_unless_the_conninfo_sets_one);
    tcase_add_test(tc, pool_sessions_run_with_jit_off);
    tcase_add_test(tc, a_malformed_conninfo_fails_pool_creation_with_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("batches");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_batch_of_fifty_independent_statements_all_return);
    tcase_add_test(tc, a_failing_statement_in_a_batch_does_not_affect_the_others);
    tcase_add_test(tc, a_statement_that_fails_to_prepare_in_a_batch_does_not_fail_the_others_now_or_later);
    tcase_add_test(tc, an_atomic_batch_stops_at_the_first_failure_and_rolls_back_its_writes);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, waiters_are_served_in_arrival_order_as_connections_are_released);
    tcase_add_test(tc, acquire_times_out_with_ebusy_when_the_pool_is_full);
    tcase_add_test(tc, a_caller_deadline_shorter_than_the_acquire_timeout_gives_etimedout);
    tcase_add_test(tc, an_unreachable_database_fails_acquire_fast_with_econnrefused);
    tcase_add_test(tc, the_pool_opens_min_connections_in_the_background);
    tcase_add_test(tc, idle_connections_above_min_are_closed_after_the_idle_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idle_connections_killed_by_the_server_leave_the_pool_and_it_reconnects);
    tcase_add_test(tc, a_pool_with_a_minimum_reopens_killed_connections_by_itself);
    tcase_add_test(tc, a_connection_killed_during_a_statement_fails_it_and_the_pool_recovers);
    suite_add_tcase(s, tc);

    tc = tcase_create("interrupts");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_deadline_cancels_the_statement_on_the_server_and_the_connection_is_reused);
    tcase_add_test(tc, a_deadline_cancels_a_sleeping_statement_too);
    tcase_add_test(tc, a_cancelled_task_cancels_its_statement_on_the_server);
    tcase_add_test(tc, a_failing_sibling_in_a_group_cancels_the_statement_on_the_server);
    tcase_add_test(tc, an_interrupted_statement_in_an_open_transaction_comes_back_rolled_back);
    tcase_add_test(tc, a_connection_released_inside_a_transaction_comes_back_rolled_back);
    tcase_add_test(tc, the_janitor_keeps_cancelling_and_closes_a_connection_that_does_not_drain_in_time);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
