/* Test support: a PostgreSQL server of the test's own, which the test can
 * stop (cleanly or as a crash), start and restart at will, for database
 * outage tests. The shared server of scripts/with-postgres.sh cannot be
 * stopped under the other tests' feet.
 *
 * initdb makes a cluster in a fresh temp directory (as the postgres system
 * user when the test runs as root, via runuser; as the current user
 * otherwise), listening on 127.0.0.1 only, on one port fixed for the
 * cluster's life, so a DATABASE_URL given to the service stays valid across
 * restarts. pg_ctl starts, stops and restarts it.
 *
 * Tuned for tests, not durability, but without losing what a crash of
 * PostgreSQL alone (not of the machine) must keep: fsync is off, while
 * synchronous_commit stays on, because a commit acknowledged from WAL
 * buffers that an immediate shutdown then throws away would look exactly
 * like the service lying about a commit.
 *
 * A watchdog process cleans up (immediate stop, directory removed) when the
 * process that called test_pgctl_create dies without test_pgctl_destroy,
 * e.g. when a forked Check test fails: no server outlives its test.
 * H2PG_TEST_KEEP_LOGS=1 keeps the directory (data and logs) for a look.
 *
 * Everything blocks; every failure is a ck_abort_msg with the tool's
 * output. Not thread-safe: call from the test's main thread. */
#ifndef H2PG_TESTS_SUPPORT_PGCTL_H
#define H2PG_TESTS_SUPPORT_PGCTL_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_pgctl {
    char dir[256];    /* the temp directory: data/, the socket, logs */
    char bindir[256]; /* where initdb, pg_ctl and postgres are */
    char user[64];    /* the server's (and the superuser's) name */
    int port;
    bool running;     /* as far as this handle knows */
    pid_t watchdog;
} test_pgctl;

/* initdb into a new temp directory, pick a free port, start the server and
 * wait until it accepts connections. PG_BINDIR overrides where the tools
 * are found (default /usr/lib/postgresql/15/bin, then PATH). */
void test_pgctl_create(test_pgctl *pg);

/* pg_ctl start, waiting until it accepts connections (after crash recovery
 * if the last stop was one). */
void test_pgctl_start(test_pgctl *pg);

/* pg_ctl stop -m mode ("smart", "fast" or "immediate", the last being a
 * crash: no checkpoint, recovery at the next start), waiting for the exit. */
void test_pgctl_stop(test_pgctl *pg, const char *mode);

/* pg_ctl restart -m mode, waiting until it accepts connections again. */
void test_pgctl_restart(test_pgctl *pg, const char *mode);

/* Stops the server if it runs, removes the directory, ends the watchdog. */
void test_pgctl_destroy(test_pgctl *pg);

/* A key=value conninfo for dbname on this server (malloc'd). */
char *test_pgctl_conninfo(const test_pgctl *pg, const char *dbname);

/* Creates a fresh, uniquely named UTF8 database and returns its conninfo
 * (malloc'd). The server must run. */
char *test_pgctl_create_db(test_pgctl *pg);

/* The server's log so far (malloc'd, NUL-terminated), for messages. */
char *test_pgctl_log(const test_pgctl *pg);

#endif
