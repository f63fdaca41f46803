/* Test support for the tests of db/ (link h2pg_db): a pool on the test's
 * loop thread with test-friendly timeouts, and its statistics. Header-only;
 * call from a task (an AIO_TEST body). */
#ifndef H2PG_TESTS_SUPPORT_DB_H
#define H2PG_TESTS_SUPPORT_DB_H

#include <check.h>

#include "aio/aio.h"
#include "db/pool.h"

/* min..max connections to conninfo: 10 s to acquire or to connect, idle
 * connections above min kept for 60 s. */
static inline db_pool_config test_db_pool_config(const char *conninfo, int min, int max)
{
    return (db_pool_config){
        .conninfo = conninfo,
        .min = min,
        .max = max,
        .acquire_timeout = AIO_SEC(10),
        .connect_timeout = AIO_SEC(10),
        .idle_timeout = AIO_SEC(60),
    };
}

/* Creates the thread's pool, or ck_abort with the reason. */
static inline db_pool *test_db_pool_open_with(const db_pool_config *cfg)
{
    char err[256] = "";
    db_pool *p = NULL;
    int rc = db_pool_create(cfg, &p, err, sizeof(err));
    ck_assert_msg(rc == 0, "db_pool_create: %d %s", rc, err);
    ck_assert_ptr_eq(db_pool_current(), p);
    return p;
}

static inline db_pool *test_db_pool_open(const char *conninfo, int min, int max)
{
    db_pool_config cfg = test_db_pool_config(conninfo, min, max);
    return test_db_pool_open_with(&cfg);
}

static inline db_pool_stats test_db_pool_stats(const db_pool *p)
{
    db_pool_stats st;
    db_pool_stats_get(p, &st);
    return st;
}

#endif
