/* Rows as JSON by column name, the timestamp format they use, and failure
 * records (why a call failed, also in gathered and spawned children),
 * against a real PostgreSQL: run through scripts/with-postgres.sh, which
 * sets DATABASE_URL. Every test works on a fresh database of its own and
 * creates its pool on its loop thread (inside the AIO_TEST body). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "db/db.h"
#include "db/pool.h"
#include "support/aio_check.h"
#include "support/db.h"
#include "support/pg.h"

/* ---- helpers ---- */

static PGresult *exec_ok(const db_stmt *s, db_params params)
{
    PGresult *r = NULL;
    int rc = db_exec(NULL, s, params, &r);
    ck_assert_msg(rc == 0, "%s: %d %s %s", s->name, rc, db_sqlstate(r), r ? PQresultErrorMessage(r) : "");
    return r;
}

/* The JSON text of v (compact, keys in their order), for comparisons. */
static char *dump(const json_t *v)
{
    ck_assert_ptr_nonnull(v);
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    ck_assert_ptr_nonnull(s);
    return s;
}

#define ASSERT_JSON(v, want)                                                                                           \
    do {                                                                                                               \
        char *got_ = dump(v);                                                                                          \
        ck_assert_str_eq(got_, want);                                                                                  \
        free(got_);                                                                                                    \
    } while (0)

/* ---- db_format_timestamp (pure) ---- */

START_TEST(timestamps_are_utc_with_microseconds)
{
    char buf[32];
    ck_assert_uint_eq(db_format_timestamp(0, buf), 27);
    ck_assert_str_eq(buf, "1970-01-01T00:00:00.000000Z");
    db_format_timestamp(INT64_C(1795337190262000), buf); /* the same instant as date -d @1795337190.262 */
    ck_assert_str_eq(buf, "2026-11-22T08:46:30.262000Z");
    db_format_timestamp(INT64_C(951782400000001), buf); /* a leap day */
    ck_assert_str_eq(buf, "2000-02-29T00:00:00.000001Z");
    db_format_timestamp(-1, buf); /* before 1970 the fraction still counts forward */
    ck_assert_str_eq(buf, "1969-12-31T23:59:59.999999Z");
    ck_assert_uint_eq(db_format_timestamp(INT64_MAX, buf), 8);
    ck_assert_str_eq(buf, "infinity");
    ck_assert_uint_eq(db_format_timestamp(INT64_MIN, buf), 9);
    ck_assert_str_eq(buf, "-infinity");
}
END_TEST

START_TEST(the_returned_length_is_the_string_length)
{
    static const int64_t cases[] = {0, 1, -1, INT64_C(1795337190262000), INT64_C(-62135596800000000) /* 0001-01-01 */,
                                    INT64_C(253402300799999999) /* 9999-12-31T23:59:59.999999 */};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        memset(buf, '#', sizeof(buf));
        size_t n = db_format_timestamp(cases[i], buf);
        ck_assert_uint_eq(n, strlen(buf));
        ck_assert_uint_eq(n, 27);
        ck_assert_int_eq(buf[26], 'Z');
    }
    char buf[32];
    db_format_timestamp(INT64_C(-62135596800000000), buf);
    ck_assert_str_eq(buf, "0001-01-01T00:00:00.000000Z");
    db_format_timestamp(INT64_C(253402300799999999), buf);
    ck_assert_str_eq(buf, "9999-12-31T23:59:59.999999Z");
}
END_TEST

/* ---- rows as JSON ---- */

static const db_stmt TYPED_ROW = DB_QUERY("t_typed_row",
                                          "SELECT 32767::int2 AS small, (-2147483648)::int4 AS medium, "
                                          "9223372036854775807::int8 AS big, (-5)::int2 AS negative, "
                                          "'h\xc3\xa9llo \"quoted\"'::text AS greeting, ''::text AS empty, "
                                          "'xyz'::varchar(3) AS code, true AS yes, false AS no, "
                                          "NULL::int4 AS no_int, NULL::text AS no_text, NULL::bool AS no_bool, "
                                          "NULL::timestamptz AS no_time, "
                                          "'2026-11-22 09:46:30.262+01'::timestamptz AS at, "
                                          "'1969-12-31 23:59:59.999999+00'::timestamptz AS before_1970, "
                                          "'infinity'::timestamptz AS never_after, "
                                          "'-infinity'::timestamptz AS never_before, "
                                          "'2000-02-29 00:00:00.000001'::timestamp AS local_time",
                                          0, "iiiitttbbitbdddddd");

AIO_TEST(a_row_becomes_an_object_keyed_by_column_name_with_typed_values)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    PGresult *r = exec_ok(&TYPED_ROW, DB_NO_PARAMS);
    json_t *o = db_row_json(r, 0);
    ck_assert(json_is_object(o));
    ck_assert_uint_eq(json_object_size(o), (size_t)PQnfields(r));

    ck_assert(json_is_integer(json_object_get(o, "small")));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "small")), 32767);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "medium")), INT32_MIN);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "big")), INT64_MAX);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "negative")), -5);

    ck_assert(json_is_string(json_object_get(o, "greeting")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "greeting")), "h\xc3\xa9llo \"quoted\"");
    ck_assert(json_is_string(json_object_get(o, "empty"))); /* the empty string is not NULL */
    ck_assert_str_eq(json_string_value(json_object_get(o, "empty")), "");
    ck_assert_str_eq(json_string_value(json_object_get(o, "code")), "xyz");

    ck_assert(json_is_true(json_object_get(o, "yes")));
    ck_assert(json_is_false(json_object_get(o, "no")));

    /* NULL of any type is null, not a missing key */
    static const char *const nulls[] = {"no_int", "no_text", "no_bool", "no_time"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        ck_assert_msg(json_is_null(json_object_get(o, nulls[i])), "%s is not null", nulls[i]);

    /* timestamptz in UTC whatever the offset it was written with */
    ck_assert_str_eq(json_string_value(json_object_get(o, "at")), "2026-11-22T08:46:30.262000Z");
    ck_assert_str_eq(json_string_value(json_object_get(o, "before_1970")), "1969-12-31T23:59:59.999999Z");
    ck_assert_str_eq(json_string_value(json_object_get(o, "never_after")), "infinity");
    ck_assert_str_eq(json_string_value(json_object_get(o, "never_before")), "-infinity");
    /* timestamp: its wall-clock value read as UTC */
    ck_assert_str_eq(json_string_value(json_object_get(o, "local_time")), "2000-02-29T00:00:00.000001Z");

    /* the keys in the SQL's column order */
    const char *key;
    json_t *value;
    int col = 0;
    json_object_foreach(o, key, value)
    {
        ck_assert_int_lt(col, PQnfields(r));
        ck_assert_str_eq(key, PQfname(r, col));
        col++;
    }
    ck_assert_int_eq(col, PQnfields(r));
    json_decref(o);
    PQclear(r);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt ALIASES = DB_QUERY("t_aliases",
                                        "SELECT u.id, u.name AS \"displayName\", u.id * 10 AS score, 1, "
                                        "u.name = 'ann' AS \"is ann?\" FROM people u WHERE u.id = $1",
                                        1, "itiib");

AIO_TEST(column_names_and_aliases_are_the_keys)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    test_pg_exec(admin, "CREATE TABLE people (id int8 PRIMARY KEY, name varchar(50));"
                        "INSERT INTO people VALUES (1, 'ann'), (2, NULL)");
    db_pool *p = test_db_pool_open(ci, 0, 1);
    PGresult *r = exec_ok(&ALIASES, DB_PARAMS(DB_INT8(1)));
    json_t *o = db_row_json(r, 0);
    ASSERT_JSON(o, "{\"id\":1,\"displayName\":\"ann\",\"score\":10,\"?column?\":1,\"is ann?\":true}");
    json_decref(o);
    PQclear(r);
    r = exec_ok(&ALIASES, DB_PARAMS(DB_INT8(2)));
    o = db_row_json(r, 0);
    ASSERT_JSON(o, "{\"id\":2,\"displayName\":null,\"score\":20,\"?column?\":1,\"is ann?\":null}");
    json_decref(o);
    PQclear(r);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static const db_stmt SERIES = DB_QUERY("t_series",
                                       "SELECT i AS id, 'n' || i AS name, i % 2 = 0 AS even, "
                                       "'2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second' AS at "
                                       "FROM generate_series(1, $1::int4) AS i ORDER BY i",
                                       1, "itbd");

AIO_TEST(rows_become_an_array_of_objects_in_result_order)
{
    char *ci = test_pg_create_db();
    db_pool *p = test_db_pool_open(ci, 0, 1);
    PGresult *r = exec_ok(&SERIES, DB_PARAMS(DB_INT4(3)));
    json_t *a = db_rows_json(r);
    ck_assert(json_is_array(a));
    ASSERT_JSON(a, "[{\"id\":1,\"name\":\"n1\",\"even\":false,\"at\":\"2026-01-01T00:00:01.000000Z\"},"
                   "{\"id\":2,\"name\":\"n2\",\"even\":true,\"at\":\"2026-01-01T00:00:02.000000Z\"},"
                   "{\"id\":3,\"name\":\"n3\",\"even\":false,\"at\":\"2026-01-01T00:00:03.000000Z\"}]");
    /* each element is what db_row_json gives for its row */
    for (int i = 0; i < 3; i++) {
        json_t *row = db_row_json(r, i);
        ck_assert(json_equal(row, json_array_get(a, (size_t)i)));
        json_decref(row);
    }
    json_decref(a);
    PQclear(r);

    /* no rows: an empty array */
    r = exec_ok(&SERIES, DB_PARAMS(DB_INT4(0)));
    ck_assert_int_eq(PQntuples(r), 0);
    a = db_rows_json(r);
    ASSERT_JSON(a, "[]");
    json_decref(a);
    PQclear(r);

    /* many rows */
    r = exec_ok(&SERIES, DB_PARAMS(DB_INT4(1000)));
    a = db_rows_json(r);
    ck_assert_uint_eq(json_array_size(a), 1000);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(a, 999), "id")), 1000);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 999), "at")), "2026-01-01T00:16:40.000000Z");
    json_decref(a);
    PQclear(r);
    db_pool_destroy(p);
    test_pg_drop_db(ci);
    return 0;
}

/* ---- failure records ---- */

static const db_stmt INSERT_KEY = DB_STMT("t_insert_key", "INSERT INTO keys (k) VALUES ($1)", 1);
static const db_stmt SELECT_ONE = DB_QUERY("t_select_one", "SELECT 1", 0, "i");
static const db_stmt DIVIDE = DB_QUERY("t_divide", "SELECT 1 / $1::int4", 1, "i");
static const db_stmt FIND_KEY = DB_QUERY("t_find_key", "SELECT k FROM keys WHERE k = $1", 1, "i");
static const db_stmt SLEEP_5 = DB_QUERY("t_sleep_5", "SELECT pg_sleep(5)", 0, "?");

static const char ACTIVE_POOL_QUERIES[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND application_name = 'h2pg' AND state = 'active'";
static const char ACTIVE_POOL_SLEEPS[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND application_name = 'h2pg' AND state = 'active' AND query LIKE '%pg_sleep%'";

/* A database with keys (k int PRIMARY KEY) holding 1, and a pool. */
struct keys_db {
    char *ci;
    PGconn *admin;
    db_pool *pool;
};

static void keys_db_open(struct keys_db *k, int max)
{
    k->ci = test_pg_create_db();
    k->admin = test_pg_connect(k->ci);
    test_pg_exec(k->admin, "CREATE TABLE keys (k int PRIMARY KEY); INSERT INTO keys VALUES (1)");
    k->pool = test_db_pool_open(k->ci, 0, max);
}

static void keys_db_close(struct keys_db *k)
{
    db_pool_destroy(k->pool);
    PQfinish(k->admin);
    test_pg_drop_db(k->ci);
}

AIO_TEST(a_unique_violation_in_a_gathered_call_reaches_the_parents_record)
{
    struct keys_db k;
    keys_db_open(&k, 2);
    db_failure f;
    memset(&f, 0x5a, sizeof(f)); /* opening zeroes it */
    db_failure_open(&f);
    ck_assert_ptr_eq(db_failure_current(), &f);
    ck_assert_str_eq(f.sqlstate, "");
    ck_assert_str_eq(f.message, "");
    ck_assert(!db_failed_with("23505"));

    db_call calls[] = {DB_CALL(&FIND_KEY, DB_INT4(1)), DB_CALL(&INSERT_KEY, DB_INT4(1))};
    int rc = db_gather(calls, 2);
    ck_assert_int_eq(rc, -EREMOTEIO);
    ck_assert_int_eq(calls[1].rc, -EREMOTEIO);
    ck_assert_str_eq(db_sqlstate(calls[1].result), "23505");
    db_calls_clear(calls, 2);

    /* the child ran in a task of its own; the parent's record has it */
    ck_assert_str_eq(f.sqlstate, "23505");
    ck_assert_msg(strstr(f.message, "duplicate key") != NULL, "message: %s", f.message);
    ck_assert_ptr_null(strchr(f.message, '\n')); /* the primary message only */
    ck_assert(db_failed_with("23505"));
    ck_assert(!db_failed_with("23503"));
    ck_assert(!db_failed_with(""));
    db_failure_close(&f);
    ck_assert_ptr_null(db_failure_current());
    ck_assert(!db_failed_with("23505"));
    ck_assert_int_eq(test_pg_int(k.admin, "SELECT count(*) FROM keys"), 1);
    keys_db_close(&k);
    return 0;
}

static int insert_duplicate(void *arg)
{
    (void)arg;
    PGresult *r = NULL;
    int rc = db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1)), &r);
    PQclear(r);
    return rc;
}

AIO_TEST(failures_of_spawned_and_grouped_children_reach_the_record_open_when_they_were_spawned)
{
    struct keys_db k;
    keys_db_open(&k, 2);
    /* spawned before the record opened: it reports into nothing */
    aio_task *early = aio_task_spawn(insert_duplicate, NULL);
    db_failure f;
    db_failure_open(&f);
    ck_assert_int_eq(aio_task_join(early), -EREMOTEIO);
    ck_assert_str_eq(f.sqlstate, "");

    /* spawned after: into the parent's record */
    ck_assert_int_eq(aio_task_join(aio_task_spawn(insert_duplicate, NULL)), -EREMOTEIO);
    ck_assert_str_eq(f.sqlstate, "23505");
    db_failure_close(&f);

    /* a group's child too */
    db_failure_open(&f);
    aio_group g;
    aio_group_init(&g);
    ck_assert_ptr_nonnull(aio_group_spawn(&g, insert_duplicate, NULL));
    ck_assert_int_eq(aio_group_join(&g), -EREMOTEIO);
    ck_assert(db_failed_with("23505"));
    db_failure_close(&f);
    keys_db_close(&k);
    return 0;
}

AIO_TEST(the_record_keeps_the_last_server_failure_and_records_nest)
{
    struct keys_db k;
    keys_db_open(&k, 1);
    db_failure outer, inner;
    db_failure_open(&outer);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1)), &r), -EREMOTEIO);
    PQclear(r);
    ck_assert(db_failed_with("23505"));

    /* a later failure replaces it */
    r = NULL;
    ck_assert_int_eq(db_exec(NULL, &DIVIDE, DB_PARAMS(DB_INT4(0)), &r), -EREMOTEIO);
    PQclear(r);
    ck_assert_str_eq(outer.sqlstate, "22012");
    ck_assert(db_failed_with("22012"));
    ck_assert(!db_failed_with("23505"));
    /* a success does not clear it: it is the last failure, not the last call */
    PQclear(exec_ok(&SELECT_ONE, DB_NO_PARAMS));
    ck_assert(db_failed_with("22012"));

    /* an inner record takes the failures while it is open */
    db_failure_open(&inner);
    ck_assert_ptr_eq(db_failure_current(), &inner);
    ck_assert_ptr_eq(inner.outer, &outer);
    ck_assert(!db_failed_with("22012"));
    r = NULL;
    ck_assert_int_eq(db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1)), &r), -EREMOTEIO);
    PQclear(r);
    ck_assert_str_eq(inner.sqlstate, "23505");
    ck_assert_str_eq(outer.sqlstate, "22012");
    db_failure_close(&inner);
    ck_assert_ptr_eq(db_failure_current(), &outer);
    ck_assert(db_failed_with("22012"));

    /* errors that are not the server's are not recorded: a deadline */
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(100));
    r = NULL;
    ck_assert_int_eq(db_exec(NULL, &SLEEP_5, DB_NO_PARAMS, &r), -ETIMEDOUT);
    aio_timeout_close(&scope);
    PQclear(r);
    ck_assert_str_eq(outer.sqlstate, "22012");
    db_failure_close(&outer);
    ck_assert_ptr_null(db_failure_current());
    AIO_WAIT_UNTIL(test_db_pool_stats(k.pool).cleaning == 0, 5000);
    keys_db_close(&k);
    return 0;
}

AIO_TEST(without_a_record_calls_still_work_and_nothing_is_current)
{
    struct keys_db k;
    keys_db_open(&k, 2);
    ck_assert_ptr_null(db_failure_current());
    ck_assert(!db_failed_with("23505"));
    ck_assert(!db_failed_with(""));
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(1)), &r), -EREMOTEIO);
    ck_assert_str_eq(db_sqlstate(r), "23505"); /* the result still says why */
    PQclear(r);
    ck_assert_ptr_null(db_failure_current());
    ck_assert(!db_failed_with("23505"));
    /* and in a gather */
    db_call calls[] = {DB_CALL(&INSERT_KEY, DB_INT4(1)), DB_CALL0(&SELECT_ONE)};
    ck_assert_int_eq(db_gather(calls, 2), -EREMOTEIO);
    db_calls_clear(calls, 2);
    ck_assert_ptr_null(db_failure_current());
    r = exec_ok(&FIND_KEY, DB_PARAMS(DB_INT4(1)));
    ck_assert_int_eq(PQntuples(r), 1);
    PQclear(r);
    keys_db_close(&k);
    return 0;
}

/* ---- gather ---- */

AIO_TEST(a_gather_runs_every_call_and_sets_every_result)
{
    struct keys_db k;
    keys_db_open(&k, 2);
    db_call calls[3] = {DB_CALL(&FIND_KEY, DB_INT4(1)), DB_CALL(&FIND_KEY, DB_INT4(2)), DB_CALL0(&SELECT_ONE)};
    calls[0].required = true;
    ck_assert_int_eq(db_gather(calls, 3), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(calls[i].rc, 0);
        ck_assert_ptr_nonnull(calls[i].result);
    }
    ck_assert_int_eq(PQntuples(calls[0].result), 1);
    ck_assert_int_eq(PQntuples(calls[1].result), 0); /* not required: no row is fine */
    ck_assert_int_eq(db_get_int(calls[2].result, 0, 0), 1);
    db_calls_clear(calls, 3);
    ck_assert_int_eq(db_gather(calls, 0), 0);
    keys_db_close(&k);
    return 0;
}

AIO_TEST(a_required_call_without_a_row_fails_the_gather_and_cancels_the_rest_on_the_server)
{
    struct keys_db k;
    keys_db_open(&k, 2);
    /* the lookup first: the calls of a gather share one connection, so the
     * server runs them in order, and the sleep runs (or is about to) when
     * the lookup's empty answer comes back */
    db_call calls[2] = {DB_CALL(&FIND_KEY, DB_INT4(42)), DB_CALL0(&SLEEP_5)};
    calls[0].required = true;
    db_failure f;
    db_failure_open(&f);
    int64_t t0 = aio_now();
    int rc = db_gather(calls, 2);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(rc, -ENOENT);
    ck_assert_msg(ms < 2000, "the gather took %.0f ms: the sleeping call was not cancelled", ms);
    ck_assert_int_eq(calls[0].rc, 0);
    ck_assert_int_eq(PQntuples(calls[0].result), 0);
    ck_assert_int_ne(calls[1].rc, 0); /* it did not complete */
    ck_assert_ptr_null(calls[1].result);
    ck_assert_str_eq(f.sqlstate, ""); /* not a server error: nothing recorded */
    db_failure_close(&f);
    db_calls_clear(calls, 2);
    /* a read queued now on the same pipeline is answered after the sleep
     * ends: soon, so the sleep was cancelled on the server (left alone it
     * would hold the read back 5 s) */
    t0 = aio_now();
    PGresult *r = NULL;
    ck_assert_int_eq(db_read(&SELECT_ONE, DB_NO_PARAMS, &r), 0);
    PQclear(r);
    ms = ms_since_ns(t0);
    ck_assert_msg(ms < 3000, "a read behind the abandoned sleep waited %.0f ms", ms);
    /* the sleep is gone from the server at once; the read's backend shows
     * idle a moment after its result came (it still runs the segment's Sync) */
    ck_assert_int_eq(test_pg_int(k.admin, ACTIVE_POOL_SLEEPS), 0);
    AIO_WAIT_UNTIL(test_pg_int(k.admin, ACTIVE_POOL_QUERIES) == 0, 1000);
    AIO_WAIT_UNTIL(test_db_pool_stats(k.pool).cleaning == 0, 5000);
    fprintf(stderr, "gather: -ENOENT after %.1f ms; cancels sent %llu\n", ms,
            (unsigned long long)test_db_pool_stats(k.pool).cancels_sent);
    ck_assert_uint_ge(test_db_pool_stats(k.pool).cancels_sent, 1);
    ck_assert_uint_eq(test_db_pool_stats(k.pool).closed_dirty, 0);
    PQclear(exec_ok(&SELECT_ONE, DB_NO_PARAMS));
    keys_db_close(&k);
    return 0;
}

static const db_stmt SLEEP_SHORT = DB_QUERY("t_sleep_short", "SELECT pg_sleep($1::int4 / 1000.0)", 1, "?");

static int sleep_read(void *arg)
{
    PGresult *r = NULL;
    int rc = db_read(&SLEEP_SHORT, DB_PARAMS(DB_INT4(300)), &r);
    PQclear(r);
    return rc;
}

/* Behind a transaction-pooling PgBouncer a Sync that ends a transaction
 * lets it hand the server session to another client on its answer, with
 * whatever of ours it has forwarded by then; so with transaction_pooler
 * nothing is sent after such a Sync before its answer: a read queued while
 * the shared connection's segment is in flight waits for it, and the
 * statements of an independent batch go one at a time. Without the option
 * both are pipelined (here against PostgreSQL itself, where either is
 * right: what is counted is what was held back). */
AIO_TEST(with_a_transaction_pooler_nothing_is_sent_behind_an_unanswered_sync)
{
    char *ci = test_pg_create_db();
    for (int pooler = 0; pooler < 2; pooler++) {
        db_pool_config cfg = test_db_pool_config(ci, 0, 4);
        cfg.transaction_pooler = pooler;
        db_pool *p = test_db_pool_open_with(&cfg);
        PGresult *r = NULL;
        ck_assert_int_eq(db_read(&SELECT_ONE, DB_NO_PARAMS, &r), 0); /* the shared connection is open */
        PQclear(r);
        aio_task *sleeper = aio_task_spawn(sleep_read, NULL);
        ck_assert_ptr_nonnull(sleeper);
        ck_assert_int_eq(aio_sleep(AIO_MSEC(50)), 0); /* its segment has left */
        r = NULL;
        ck_assert_int_eq(db_read(&SELECT_ONE, DB_NO_PARAMS, &r), 0);
        ck_assert_int_eq(db_get_int(r, 0, 0), 1);
        PQclear(r);
        ck_assert_int_eq(aio_task_join(sleeper), 0);
        uint64_t shared_held = test_db_pool_stats(p).sends_held;

        db_call calls[3] = {DB_CALL0(&SELECT_ONE), DB_CALL(&DIVIDE, DB_INT4(0)), DB_CALL0(&SELECT_ONE)};
        ck_assert_int_eq(db_exec_batch(NULL, calls, 3, 0), -EREMOTEIO);
        ck_assert_int_eq(calls[0].rc, 0);
        ck_assert_int_eq(calls[1].rc, -EREMOTEIO);
        ck_assert_str_eq(db_sqlstate(calls[1].result), "22012");
        ck_assert_int_eq(calls[2].rc, 0); /* independent: it ran */
        db_calls_clear(calls, 3);
        uint64_t batch_held = test_db_pool_stats(p).sends_held - shared_held;
        fprintf(stderr, "transaction_pooler=%d: %llu reads held behind a segment, %llu batch statements held\n", pooler,
                (unsigned long long)shared_held, (unsigned long long)batch_held);
        if (pooler) {
            ck_assert_uint_ge(shared_held, 1); /* the sleeper may have waited for the Sync before it too */
            ck_assert_uint_eq(batch_held, 2);
        } else {
            ck_assert_uint_eq(shared_held + batch_held, 0);
        }
        db_pool_destroy(p);
    }
    test_pg_drop_db(ci);
    return 0;
}

struct shared_read {
    const db_stmt *stmt;
    int32_t arg;
    int rc;
    char sqlstate[6];
    int rows;
};

static int shared_read(void *arg)
{
    struct shared_read *s = arg;
    PGresult *r = NULL;
    s->rc = db_read(s->stmt, DB_PARAMS(DB_INT4(s->arg)), &r);
    snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", db_sqlstate(r));
    s->rows = s->rc == 0 ? PQntuples(r) : -1;
    PQclear(r);
    return 0;
}

/* The reads queued on the shared connection in one loop turn go out as one
 * pipeline segment: one that fails makes the server skip the rest, and the
 * skipped ones run again, so that their callers never see someone else's
 * error; the one that failed gets its own. */
AIO_TEST(reads_skipped_for_a_neighbours_failure_run_again_and_never_see_it)
{
    struct keys_db k;
    keys_db_open(&k, 4);
    PGresult *r = NULL;
    /* every statement prepared: a Prepare would start a segment of its own */
    ck_assert_int_eq(db_read(&FIND_KEY, DB_PARAMS(DB_INT4(1)), &r), 0);
    PQclear(r);
    ck_assert_int_eq(db_read(&DIVIDE, DB_PARAMS(DB_INT4(1)), &r), 0);
    PQclear(r);
    db_counters before, after;
    db_counters_get(&before);
    enum { N = 9 };
    struct shared_read reads[N];
    aio_task *tasks[N];
    for (int i = 0; i < N; i++) {
        /* the failing read first, then neighbours queued behind it */
        reads[i] = (struct shared_read){.stmt = i == 0 ? &DIVIDE : &FIND_KEY, .arg = i == 0 ? 0 : 1};
        tasks[i] = aio_task_spawn(shared_read, &reads[i]);
        ck_assert_ptr_nonnull(tasks[i]);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(aio_task_join(tasks[i]), 0);
    db_counters_get(&after);
    ck_assert_int_eq(reads[0].rc, -EREMOTEIO);
    ck_assert_str_eq(reads[0].sqlstate, "22012");
    for (int i = 1; i < N; i++) {
        ck_assert_msg(reads[i].rc == 0, "neighbour %d failed with %d (%s)", i, reads[i].rc, reads[i].sqlstate);
        ck_assert_int_eq(reads[i].rows, 1);
    }
    /* they were in its segment, skipped and run again */
    ck_assert_uint_ge(after.reruns - before.reruns, N - 1);
    ck_assert_uint_eq(test_db_pool_stats(k.pool).closed_dirty, 0);
    keys_db_close(&k);
    return 0;
}

/* The shared connection stays open for good: out of a pool of one it would
 * leave nothing for a statement that must borrow. Such a pool shares none. */
AIO_TEST(a_pool_of_one_shares_no_connection_so_a_read_leaves_it_for_a_write)
{
    struct keys_db k;
    keys_db_open(&k, 1);
    PGresult *r = NULL;
    ck_assert_int_eq(db_read(&FIND_KEY, DB_PARAMS(DB_INT4(1)), &r), 0);
    ck_assert_int_eq(PQntuples(r), 1);
    PQclear(r);
    db_call gathered[] = {DB_CALL(&FIND_KEY, DB_INT4(1)), DB_CALL0(&SELECT_ONE)};
    ck_assert_int_eq(db_gather(gathered, 2), 0);
    db_calls_clear(gathered, 2);
    /* a borrow now finds the one connection idle, at once */
    int64_t t0 = aio_now();
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_SEC(3));
    int rc = db_exec(NULL, &INSERT_KEY, DB_PARAMS(DB_INT4(2)), &r);
    aio_timeout_close(&scope);
    PQclear(r);
    ck_assert_msg(rc == 0, "the write after a read failed with %d after %.0f ms", rc, ms_since_ns(t0));
    ck_assert_uint_eq(test_db_pool_stats(k.pool).open, 1);
    keys_db_close(&k);
    return 0;
}

int main(void)
{
    Suite *s = suite_create("db_row");
    TCase *tc = tcase_create("timestamps");
    tcase_add_test(tc, timestamps_are_utc_with_microseconds);
    tcase_add_test(tc, the_returned_length_is_the_string_length);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_row_becomes_an_object_keyed_by_column_name_with_typed_values);
    tcase_add_test(tc, column_names_and_aliases_are_the_keys);
    tcase_add_test(tc, rows_become_an_array_of_objects_in_result_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_unique_violation_in_a_gathered_call_reaches_the_parents_record);
    tcase_add_test(tc, failures_of_spawned_and_grouped_children_reach_the_record_open_when_they_were_spawned);
    tcase_add_test(tc, the_record_keeps_the_last_server_failure_and_records_nest);
    tcase_add_test(tc, without_a_record_calls_still_work_and_nothing_is_current);
    suite_add_tcase(s, tc);

    tc = tcase_create("gather");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_gather_runs_every_call_and_sets_every_result);
    tcase_add_test(tc, a_required_call_without_a_row_fails_the_gather_and_cancels_the_rest_on_the_server);
    tcase_add_test(tc, a_pool_of_one_shares_no_connection_so_a_read_leaves_it_for_a_write);
    tcase_add_test(tc, reads_skipped_for_a_neighbours_failure_run_again_and_never_see_it);
    tcase_add_test(tc, with_a_transaction_pooler_nothing_is_sent_behind_an_unanswered_sync);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
