/* db/listen.h against a real PostgreSQL (scripts/with-postgres.sh sets
 * DATABASE_URL): a pool connection held for LISTEN wakes its task on
 * NOTIFY, reports a lost connection, and never goes back to the pool.
 * NOTIFYs are sent from a blocking libpq connection on the loop thread:
 * they finish by themselves, whatever the pool does. */
#include <errno.h>
#include <stdio.h>

#include "db/db.h"
#include "db/listen.h"
#include "db/pool.h"
#include "support/aio_check.h"
#include "support/db.h"
#include "support/pg.h"

static const db_stmt LISTEN_T = DB_STMT("t_listen", "LISTEN t_channel", 0);
static const db_stmt SELECT_ONE = DB_QUERY("t_select_one", "SELECT 1", 0, "i");
static const char LISTENERS[] = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND query = 'LISTEN t_channel'";

/* Waits for notifications under a deadline of ms. */
static int wait_ms(db_listener *l, int64_t ms, uint64_t *count)
{
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(ms));
    int rc = db_listen_wait(l, count);
    aio_timeout_close(&scope);
    return rc;
}

AIO_TEST(a_notify_wakes_the_listener_and_several_are_counted_once)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    db_listener *l = NULL;
    ck_assert_int_eq(db_listen_open(p, &LISTEN_T, &l), 0);
    uint64_t n = 0;
    /* nothing yet: the wait ends with the deadline (and can fail if a
     * spurious wake-up counted as a notification) */
    ck_assert_int_eq(wait_ms(l, 200, &n), -ETIMEDOUT);
    test_pg_exec(admin, "NOTIFY t_channel, 'a'");
    ck_assert_int_eq(wait_ms(l, 10000, &n), 0);
    ck_assert_int_eq(n, 1);
    /* three in one transaction that arrive together: one wake-up, three counted */
    test_pg_exec(admin, "BEGIN; NOTIFY t_channel, '1'; NOTIFY t_channel, '2'; NOTIFY t_channel, '3'; COMMIT");
    uint64_t total = 0;
    while (total < 3) {
        ck_assert_int_eq(wait_ms(l, 10000, &n), 0);
        total += n;
    }
    ck_assert_int_eq(total, 3);
    /* another channel is not ours */
    test_pg_exec(admin, "NOTIFY other_channel");
    ck_assert_int_eq(wait_ms(l, 200, &n), -ETIMEDOUT);
    /* the pool still serves statements beside it */
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &SELECT_ONE, DB_NO_PARAMS, &r), 0);
    PQclear(r);
    db_listen_close(l);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_closed_listener_does_not_go_back_to_the_pool)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    db_listener *l = NULL;
    ck_assert_int_eq(db_listen_open(p, &LISTEN_T, &l), 0);
    ck_assert_int_eq(test_pg_int(admin, LISTENERS), 1);
    ck_assert_int_eq(test_db_pool_stats(p).in_use, 1);
    db_listen_close(l);
    /* closed, not idle: a connection that still LISTENs must serve nobody */
    ck_assert_int_eq(test_db_pool_stats(p).idle, 0);
    AIO_WAIT_UNTIL(test_pg_int(admin, LISTENERS) == 0, 10000);
    PGresult *r = NULL;
    ck_assert_int_eq(db_exec(NULL, &SELECT_ONE, DB_NO_PARAMS, &r), 0);
    PQclear(r);
    ck_assert_int_eq(test_pg_int(admin, LISTENERS), 0);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

AIO_TEST(a_killed_listener_connection_is_reported_and_a_new_one_listens)
{
    char *ci = test_pg_create_db();
    PGconn *admin = test_pg_connect(ci);
    db_pool *p = test_db_pool_open(ci, 0, 2);
    db_listener *l = NULL;
    ck_assert_int_eq(db_listen_open(p, &LISTEN_T, &l), 0);
    ck_assert_int_eq(test_pg_int(admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND query = 'LISTEN t_channel'"),
                     1);
    ck_assert_int_eq(wait_ms(l, 10000, NULL), -ECONNRESET);
    ck_assert_int_eq(wait_ms(l, 10000, NULL), -ECONNRESET); /* and stays so */
    db_listen_close(l);
    ck_assert_int_eq(db_listen_open(p, &LISTEN_T, &l), 0);
    test_pg_exec(admin, "NOTIFY t_channel");
    uint64_t n = 0;
    ck_assert_int_eq(wait_ms(l, 10000, &n), 0);
    ck_assert_int_eq(n, 1);
    db_listen_close(l);
    db_pool_destroy(p);
    PQfinish(admin);
    test_pg_drop_db(ci);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("db_listen");
    TCase *tc = tcase_create("listen");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_notify_wakes_the_listener_and_several_are_counted_once);
    tcase_add_test(tc, a_closed_listener_does_not_go_back_to_the_pool);
    tcase_add_test(tc, a_killed_listener_connection_is_reported_and_a_new_one_listens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
