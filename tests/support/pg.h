/* Test support: throwaway databases on the PostgreSQL server of
 * $DATABASE_URL (scripts/with-postgres.sh starts one), for Check tests.
 * Everything blocks (tests are not loop threads) and every failure is a
 * ck_abort_msg carrying the server's message, so a test body reads straight. */
#ifndef H2PG_TESTS_SUPPORT_PG_H
#define H2PG_TESTS_SUPPORT_PG_H

#include <libpq-fe.h>

/* Creates a fresh, uniquely named database on the server of $DATABASE_URL
 * (ck_abort if DATABASE_URL is unset: "run the tests through
 * scripts/with-postgres.sh") and returns a malloc'd key=value conninfo for it:
 * DATABASE_URL's settings with dbname replaced. Free with test_pg_drop_db. */
char *test_pg_create_db(void);

/* Drops the database of conninfo (terminating leftover backends) and frees
 * conninfo. */
void test_pg_drop_db(char *conninfo);

/* Blocking connect or ck_abort; the caller PQfinish-es it. */
PGconn *test_pg_connect(const char *conninfo);

/* Runs constant SQL (any number of statements) that must succeed. */
void test_pg_exec(PGconn *c, const char *sql);

/* The first column of the only row of a constant query, as an integer
 * (ck_abort on an error, another row count, or NULL). */
long long test_pg_int(PGconn *c, const char *sql);

/* ---- the service's backends on c's database, as pg_stat_activity shows
 * them (application_name 'h2pg') ---- */

typedef struct test_pg_backends {
    int active;     /* state 'active' */
    int in_tx;      /* 'idle in transaction', or '... (aborted)' */
    int lock_waits; /* active and waiting for a lock */
} test_pg_backends;

/* One query, so one snapshot: a backend moves between the states all the
 * time. */
test_pg_backends test_pg_service_backends(PGconn *c);

/* Every backend of c's database but c's own, one per line (pid, application,
 * state, wait event, the start of the query), for failure messages;
 * malloc'd. */
char *test_pg_describe_backends(PGconn *c);

#endif
