/* Test support: the real h2pg binary (H2PG_BINARY, a compile definition)
 * as a child process, for Check integration tests.
 *
 * Children get a clean environment: exactly the settings given plus the
 * test's PATH, so nothing of the test's own environment (DATABASE_URL, PG*)
 * leaks in by accident. A server child dies with the process that started
 * it (PR_SET_PDEATHSIG), and stays in its process group, which Check kills
 * after every forked test: a failed assertion never leaves a server behind.
 *
 * Log files live in the temp directory; those created by a process are
 * removed when it exits normally (a test that fails ends with _exit, which
 * leaves them for a look). H2PG_TEST_KEEP_LOGS=1 keeps them all. */
#ifndef H2PG_TESTS_SUPPORT_SERVER_H
#define H2PG_TESTS_SUPPORT_SERVER_H

#include <sys/types.h>

typedef struct test_server {
    pid_t pid; /* 0 once stopped */
    int port;
    char base_url[64]; /* "http://127.0.0.1:PORT" ("https" with TLS_CERT_FILE), no trailing slash */
    char log_path[256];
} test_server;

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick). */
int test_free_port(void);

/* One plain-HTTP GET /healthz to 127.0.0.1:port, without aborting (for
 * threads, and for a server that may not listen yet): its status, or -1 if
 * it cannot be had (nothing listening, no full status line within
 * timeout_ms). */
int test_healthz_status(int port, int timeout_ms);

/* VmRSS of a process in KiB, or -1 if it cannot be read (the process is
 * gone). */
long test_rss_kib(pid_t pid);

/* Starts `H2PG_BINARY serve` with DATABASE_URL=db_conninfo, HOST=127.0.0.1,
 * PORT=<a free port>, THREADS=2, LOG_LEVEL=info, plus the NULL-terminated
 * "K=V" settings of env (may be NULL; they win over those defaults; a PORT
 * there is used as the port), stdout and stderr to s->log_path. Returns once
 * GET /healthz answers 200 (over TLS when env sets TLS_CERT_FILE); ck_abort with the log's tail if the process
 * exits first or that takes over 20 s. */
void test_server_start(test_server *s, const char *db_conninfo, const char *const *env);

/* What test_server_start_with may change besides the environment: limits
 * set in the child before it execs the server (test-only; nothing the
 * server reads). */
typedef struct test_server_options {
    long nofile; /* RLIMIT_NOFILE (soft and hard), when above 0 */
} test_server_options;

/* test_server_start, with opts (may be NULL). */
void test_server_start_with(test_server *s, const char *db_conninfo, const char *const *env,
                            const test_server_options *opts);

/* CPU time (user + system) a process has used so far, in milliseconds, from
 * /proc/PID/stat; -1 if it cannot be read. */
long test_cpu_ms(pid_t pid);

/* The number of file descriptors a process has open (/proc/PID/fd), or -1. */
int test_fd_count(pid_t pid);

/* A fresh database (test_pg_create_db, into *db) and a server on it
 * started as test_server_start does; and the end of both (stopping the
 * server if it still runs, dropping the database if there is one; *db is
 * NULL afterwards). For fixtures, e.g. a server shared by the tests of a
 * TCase: tcase_add_unchecked_fixture(tc, setup, teardown) around these. */
void test_server_start_on_fresh_db(test_server *s, char **db, const char *const *env);
void test_server_stop_and_drop_db(test_server *s, char **db);

/* Sends SIGTERM and waits for the exit (20 s, then SIGKILL and ck_abort).
 * Returns WEXITSTATUS, or 128 + the signal that ended it. The log stays
 * readable with test_server_log. */
int test_server_stop(test_server *s);

/* The whole log so far, malloc'd and NUL-terminated. */
char *test_server_log(const test_server *s);

/* Polls the log (every 20 ms, up to timeout_ms) until it contains needle;
 * returns whether it does. For lines a server writes asynchronously. */
int test_server_log_wait(const test_server *s, const char *needle, int timeout_ms);

/* Runs H2PG_BINARY with args (argv[1..], NULL-terminated, may be NULL) and
 * the NULL-terminated "K=V" env (may be NULL; PATH is added), stdout and
 * stderr captured together into *output (malloc'd, NUL-terminated; output
 * may be NULL). Returns the exit status (128 + signal if killed). A run
 * over 60 s is killed and ck_abort-ed, showing its output. */
int test_run_binary(const char *const *args, const char *const *env, char **output);

#endif
