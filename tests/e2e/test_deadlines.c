/* Deadlines, cancellation and pool limits, end to end (issue 5; API.md,
 * "Errors" and "Per-request deadline"): the real binary against a fresh
 * database per test, over real sockets. Run through scripts/with-postgres.sh.
 *
 * Nothing in the product waits on purpose: the test makes the service's
 * queries really wait, by holding a table lock (LOCK TABLE ... IN ACCESS
 * EXCLUSIVE MODE) or a row lock (SELECT ... FOR UPDATE) in an open
 * transaction on a connection of its own, and then checks from a third
 * connection, in pg_stat_activity, what the service left running on the
 * server. A backend of the service is one with application_name 'h2pg' on
 * the test's database.
 *
 * Time bounds: the ones of the contract are asserted as stated ("no longer
 * active within 100 ms of the 504", "503 at once"), measured from the moment
 * the client has the response to the moment PostgreSQL recorded the state
 * change (pg_stat_activity.state_change), found by polling every 2 ms; the
 * figures go to stderr ("deadlines: ...") so that runs can be compared.
 * Everything else gets generous bounds: the machine may be loaded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define IO_TIMEOUT_MS 20000
#define QUIET_BOUND_MS 100.0  /* API.md: not active in pg_stat_activity within 100 ms */
#define HANGUP_SLACK_MS 100.0 /* on top, for a hang-up: the close must first be noticed */
#define PROMPT_MS 2000.0      /* "promptly", on a loaded machine: far below the deadlines used */
#define AT_ONCE_MS 100.0      /* an admission-control 503 */
#define WAIT_MS 15000         /* for things that must happen eventually */

/* ---- time ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One line per measured figure, for comparing runs. */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("deadlines: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- one test's world: a database, a server, two connections of its own ---- */

static struct world {
    char *db;
    test_server srv;
    PGconn *watch;  /* autocommit, reads pg_stat_activity */
    PGconn *holder; /* holds the locks the service's queries wait for */
} w;

static void world_start(const char *const *env)
{
    w.db = test_pg_create_db();
    test_server_start(&w.srv, w.db, env);
    w.watch = test_pg_connect(w.db);
    w.holder = test_pg_connect(w.db);
}

static void world_end(void)
{
    if (w.srv.pid > 0)
        test_server_stop(&w.srv);
    PQfinish(w.watch);
    PQfinish(w.holder);
    test_pg_drop_db(w.db);
    memset(&w, 0, sizeof(w));
}

/* Runs sql in a transaction left open on the holder connection. */
static void hold(const char *sql)
{
    test_pg_exec(w.holder, "BEGIN");
    test_pg_exec(w.holder, sql);
}

static void release(void) { test_pg_exec(w.holder, "ROLLBACK"); }

/* ---- the service's backends, as pg_stat_activity shows them ---- */

static test_pg_backends service_backends(void) { return test_pg_service_backends(w.watch); }

/* Every backend of the test's database but the watcher, for messages (malloc'd). */
static char *describe_backends(void) { return test_pg_describe_backends(w.watch); }

/* Polls until n of the service's backends wait for a lock: its queries
 * really are stuck on the server. */
static void wait_lock_waiters(int n)
{
    int64_t t0 = now_us();
    for (;;) {
        test_pg_backends b = service_backends();
        if (b.lock_waits >= n)
            return;
        if (ms_since_us(t0) > WAIT_MS)
            ck_abort_msg("%d of the service's queries wait for the test's lock after %d ms, expected %d:%s",
                         b.lock_waits, WAIT_MS, n, describe_backends());
        sleep_ms(2);
    }
}

/* Polls every 2 ms until none of the service's backends is active (nor, with
 * in_tx, idle in a transaction); returns the ms from since_us, or -1 if
 * that takes over limit_ms. */
static double ms_until_quiet(int64_t since_us, bool in_tx, double limit_ms)
{
    for (;;) {
        test_pg_backends b = service_backends();
        double ms = ms_since_us(since_us);
        if (b.active == 0 && (!in_tx || b.in_tx == 0))
            return ms;
        if (ms > limit_ms)
            return -1;
        sleep_ms(2);
    }
}

/* The wall-clock time (us since the epoch) of a now_us() reading, to set
 * beside PostgreSQL's own timestamps (the same host, the same clock). */
static int64_t wall_of(int64_t mono_us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall_now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    return wall_now - (now_us() - mono_us);
}

/* When the last of the service's backends changed state, as PostgreSQL
 * recorded it (pg_stat_activity.state_change, us since the epoch); -1 if
 * none is left. */
static int64_t last_state_change(void)
{
    PGresult *r = PQexec(w.watch, "SELECT (extract(epoch FROM max(state_change)) * 1000000)::bigint "
                                  "FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'h2pg'");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "pg_stat_activity: %s", PQresultErrorMessage(r));
    int64_t t = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return t;
}

/* How long after since_us the service had nothing running (nor, with
 * in_tx, a transaction open) on the server; aborts if that takes 5 s. The
 * polled figure goes to *polled_ms if not NULL.
 *
 * Polling finds out that it is so; when it became so is what PostgreSQL
 * recorded as the last state change of the service's backends, which does
 * not depend on how soon this process got to look (a loaded machine may
 * hold the test back for longer than the bound). Backends that are gone
 * left no record: then the polled figure counts. */
static double quiet_after(int64_t since_us, bool in_tx, const char *after, double *polled_ms)
{
    double polled = ms_until_quiet(since_us, in_tx, 5000);
    if (polled < 0)
        ck_abort_msg("5 s after %s, the service still has a query %s on the server:%s", after,
                     in_tx ? "active or a transaction open" : "active", describe_backends());
    int64_t last = last_state_change();
    double ms = polled;
    if (last >= 0) {
        ms = (double)(last - wall_of(since_us)) / 1000.0;
        if (ms < 0)
            ms = 0; /* it was over before the client had its answer */
    }
    if (polled_ms != NULL)
        *polled_ms = polled;
    return ms;
}

/* Asserts quiet_after() is within bound_ms, and reports it. */
static double assert_quiet_within(int64_t since_us, bool in_tx, double bound_ms, const char *after)
{
    const char *what = in_tx ? "active or in a transaction" : "active";
    double polled;
    double ms = quiet_after(since_us, in_tx, after, &polled);
    report("%s -> nothing %s on the server %.1f ms later (seen by polling after %.1f ms)", after, what, ms, polled);
    ck_assert_msg(ms <= bound_ms, "the service's query was still %s on the server %.1f ms after %s (bound %.0f ms)",
                  what, ms, after, bound_ms);
    return ms;
}

/* ---- HTTP ---- */

/* Opens a connection and sends one request: method path, the header lines
 * given (NULL-terminated, may be NULL), and a JSON body if body is not NULL.
 * Returns the socket; read the answer with read_reply. */
static int send_req(const char *method, const char *path, const char *const *headers, const char *body)
{
    int fd = test_raw_connect(w.srv.port);
    char *req = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&req, &len);
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    for (const char *const *h = headers; h != NULL && *h != NULL; h++)
        fprintf(f, "%s\r\n", *h);
    if (body != NULL)
        fprintf(f, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        fputs("\r\n", f);
    ck_assert_int_eq(fclose(f), 0);
    test_raw_send(fd, req, len);
    free(req);
    return fd;
}

static void read_reply(int fd, test_response *r) { test_raw_read_response(fd, IO_TIMEOUT_MS, 0, r); }

/* Whether a response (or a close) is waiting on fd right now. */
static bool answered_yet(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static void call(test_response *r, const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", w.srv.base_url, path);
    const char *json[] = {"Content-Type: application/json", NULL};
    test_http(r, method, url, body, body ? strlen(body) : 0, body ? json : NULL);
}

static void assert_retry_after(const test_response *r)
{
    char *ra = test_response_header(r, "Retry-After");
    ck_assert_msg(ra != NULL && atoi(ra) > 0, "a 503 without a Retry-After of seconds (%s): %.300s",
                  ra ? ra : "none", r->body);
    free(ra);
}

static int64_t id_of(const test_response *r, long status)
{
    ck_assert_msg(r->status == status, "expected %ld, got %ld: %.500s", status, r->status, r->body);
    json_t *j = test_response_json(r);
    json_t *id = json_object_get(j, "id");
    ck_assert_msg(json_is_integer(id), "no id in %.300s", r->body);
    int64_t v = json_integer_value(id);
    json_decref(j);
    return v;
}

static int64_t create_user(void)
{
    static unsigned seq;
    char body[160];
    snprintf(body, sizeof(body), "{\"name\":\"waiter\",\"email\":\"waiter-%ld-%u@deadlines.test\"}", (long)getpid(),
             seq++);
    test_response r;
    call(&r, "POST", "/users", body);
    int64_t id = id_of(&r, 201);
    test_response_free(&r);
    return id;
}

/* Starts the world, creates a user and writes its /users/{id} path. */
static void world_start_with_user(const char *const *env, char *path, size_t size)
{
    world_start(env);
    snprintf(path, size, "/users/%lld", (long long)create_user());
}

static int64_t create_account(int64_t user, long long balance)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"user_id\":%lld,\"balance_cents\":%lld}", (long long)user, balance);
    test_response r;
    call(&r, "POST", "/accounts", body);
    int64_t id = id_of(&r, 201);
    test_response_free(&r);
    return id;
}

static void expect_status(const char *method, const char *path, const char *body, long status)
{
    test_response r;
    call(&r, method, path, body);
    ck_assert_msg(r.status == status, "%s %s: %ld, expected %ld: %.500s", method, path, r.status, status, r.body);
    test_response_free(&r);
}

/* The value of an unlabelled metric in GET /metrics. */
static long long metric(const char *name)
{
    test_response r;
    call(&r, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    size_t n = strlen(name);
    long long v = -1;
    for (const char *line = r.body; line != NULL && *line != '\0';) {
        if (strncmp(line, name, n) == 0 && line[n] == ' ') {
            v = atoll(line + n + 1);
            break;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    test_response_free(&r);
    ck_assert_msg(v >= 0, "no %s in /metrics", name);
    return v;
}

/* Pool figures are sampled once a second: polls until name reaches at
 * least floor; returns the value seen last. */
static long long wait_metric_at_least(const char *name, long long floor)
{
    int64_t t0 = now_us();
    long long v;
    while ((v = metric(name)) < floor && ms_since_us(t0) < WAIT_MS)
        sleep_ms(50);
    return v;
}

/* ---- 1. the per-request deadline ---- */

/* Sends GET path with the header lines given while the table the request
 * reads is locked; expects 504 problem+json after about expect_ms, and
 * nothing of it left running on the server within 100 ms. */
static void expect_deadline_504(const char *path, const char *const *headers, double expect_ms, const char *what)
{
    int64_t sent = now_us();
    int fd = send_req("GET", path, headers, NULL);
    wait_lock_waiters(1);
    test_response r;
    read_reply(fd, &r);
    int64_t got = now_us();
    double took = (double)(got - sent) / 1000.0;
    close(fd);
    test_assert_problem(&r, 504);
    test_response_free(&r);
    report("%s: 504 after %.1f ms (deadline %.0f ms)", what, took, expect_ms);
    ck_assert_msg(took >= expect_ms - 20, "%s: 504 after %.1f ms, before the %.0f ms deadline", what, took, expect_ms);
    ck_assert_msg(took <= expect_ms + PROMPT_MS, "%s: 504 only after %.1f ms, for a %.0f ms deadline", what, took,
                  expect_ms);
    char after[160];
    snprintf(after, sizeof(after), "%s: the 504", what);
    assert_quiet_within(got, false, QUIET_BOUND_MS, after);
}

START_TEST(a_request_past_its_request_timeout_gets_504_and_its_query_is_cancelled_on_the_server)
{
    const char *env[] = {"THREADS=1", NULL};
    world_start(env);
    int64_t user = create_user();
    long long cancels_before = metric("h2pg_db_cancels_sent_total");
    char path[64];
    snprintf(path, sizeof(path), "/users/%lld", (long long)user);

    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    const char *h300[] = {"Request-Timeout: 300", NULL};
    expect_deadline_504(path, h300, 300, "Request-Timeout: 300");
    release();

    /* the pool is whole again: the connection came back clean, not closed */
    test_response r;
    call(&r, "GET", path, NULL);
    ck_assert_msg(r.status == 200, "GET %s after the lock went: %ld %.300s", path, r.status, r.body);
    test_response_free(&r);
    long long cancels = wait_metric_at_least("h2pg_db_cancels_sent_total", cancels_before + 1);
    ck_assert_msg(cancels > cancels_before, "h2pg_db_cancels_sent_total stayed %lld", cancels);
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

START_TEST(request_timeout_ms_bounds_a_request_without_the_header_and_a_longer_header_does_not_extend_it)
{
    const char *env[] = {"THREADS=1", "REQUEST_TIMEOUT_MS=300", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));

    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    expect_deadline_504(path, NULL, 300, "REQUEST_TIMEOUT_MS=300, no header");
    const char *longer[] = {"Request-Timeout: 5000", NULL};
    expect_deadline_504(path, longer, 300, "REQUEST_TIMEOUT_MS=300, Request-Timeout: 5000");
    release();

    expect_status("GET", path, NULL, 200);
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

START_TEST(the_deadline_also_bounds_the_wait_for_a_pool_connection)
{
    /* one connection, and an acquire timeout far beyond the deadline */
    const char *env[] = {"THREADS=1", "POOL_MIN=1", "POOL_MAX=1", "POOL_ACQUIRE_TIMEOUT_MS=20000", NULL};
    world_start(env);
    int64_t user = create_user();
    int64_t account = create_account(user, 100);
    char user_path[64], account_path[64];
    snprintf(user_path, sizeof(user_path), "/users/%lld", (long long)user);
    snprintf(account_path, sizeof(account_path), "/accounts/%lld", (long long)account);

    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    const char *h3000[] = {"Request-Timeout: 3000", NULL};
    int stuck = send_req("GET", user_path, h3000, NULL);
    wait_lock_waiters(1); /* the only connection is stuck */

    const char *h300[] = {"Request-Timeout: 300", NULL};
    int64_t sent = now_us();
    int fd = send_req("GET", account_path, h300, NULL);
    test_response r;
    read_reply(fd, &r);
    double took = ms_since_us(sent);
    close(fd);
    report("waiting for the only pool connection with Request-Timeout: 300: %ld after %.1f ms", r.status, took);
    ck_assert_msg(r.status == 504 || r.status == 503, "GET %s while the pool is taken: %ld, expected 504 (or 503)",
                  account_path, r.status);
    test_assert_problem(&r, r.status);
    test_response_free(&r);
    ck_assert_msg(took >= 280 && took <= 300 + PROMPT_MS, "the answer came after %.1f ms, for a 300 ms deadline", took);

    /* the stuck one times out too, and its query goes */
    read_reply(stuck, &r);
    int64_t got = now_us();
    close(stuck);
    test_assert_problem(&r, 504);
    test_response_free(&r);
    assert_quiet_within(got, false, QUIET_BOUND_MS, "the 504 of the request holding the only connection");
    release();
    expect_status("GET", account_path, NULL, 200);
    expect_status("GET", user_path, NULL, 200);
    world_end();
}
END_TEST

START_TEST(requests_waiting_for_a_pool_connection_get_it_first_come_first_served)
{
    const char *env[] = {"THREADS=1", "POOL_MIN=1", "POOL_MAX=1", "POOL_ACQUIRE_TIMEOUT_MS=30000", "REQUEST_TIMEOUT_MS=20000", NULL};
    world_start(env);
    int64_t user = create_user();
    int64_t account = create_account(user, 100);
    char account_path[64];
    snprintf(account_path, sizeof(account_path), "/accounts/%lld", (long long)account);

    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    /* the holder of the only connection, stuck until its deadline */
    const char *h4000[] = {"Request-Timeout: 4000", NULL};
    int holder = send_req("GET", "/users?limit=1", h4000, NULL);
    wait_lock_waiters(1);
    /* first in line: stuck on the lock too, once it has the connection */
    const char *h9000[] = {"Request-Timeout: 9000", NULL};
    int first = send_req("GET", "/users?limit=1", h9000, NULL);
    ck_assert_msg(wait_metric_at_least("h2pg_db_pool_waiting", 1) >= 1, "the first in line never showed as waiting");
    /* second in line: needs no lock, so it would be answered at once if it
     * could jump the line when the holder lets go */
    int second = send_req("GET", account_path, NULL, NULL);

    test_response r;
    read_reply(holder, &r);
    int64_t holder_done = now_us();
    test_assert_problem(&r, 504);
    test_response_free(&r);
    close(holder);

    /* Had the second jumped the line, it would have been answered right
     * after the holder let go. In line, it gets the connection only once the
     * first in line is done with it, at the first one's deadline (9 s, 5 s
     * after the holder's): the two answers may then come together. */
    read_reply(first, &r);
    int64_t first_done = now_us();
    double next = (double)(first_done - holder_done) / 1000.0;
    test_assert_problem(&r, 504);
    test_response_free(&r);
    close(first);
    read_reply(second, &r);
    double gap = ms_since_us(first_done);
    double second_after_holder = next + gap;
    ck_assert_msg(second_after_holder >= 4000, "the second in line was answered %.1f ms after the holder let go: "
                  "it jumped the line", second_after_holder);
    ck_assert_msg(r.status == 200, "the second in line: %ld %.300s", r.status, r.body);
    test_response_free(&r);
    close(second);
    report("FIFO: the first in line was answered %.1f ms after the holder's 504, the second %.1f ms after that", next,
           gap);
    release();
    world_end();
}
END_TEST

/* ---- 2. a transfer stuck on a row lock ---- */

static long long balance(int64_t account)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT balance_cents FROM accounts WHERE id = %lld", (long long)account);
    return test_pg_int(w.watch, sql);
}

/* POST /transfers from -> to while the test holds from's row lock: 504,
 * and within 100 ms nothing of it active or in a transaction. */
static void transfer_times_out(int64_t from, int64_t to, const char *key)
{
    char body[128], key_line[128];
    snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":700}",
             (long long)from, (long long)to);
    snprintf(key_line, sizeof(key_line), "Idempotency-Key: %s", key ? key : "");
    const char *headers[] = {"Request-Timeout: 300", key ? key_line : NULL, NULL};
    char lock[128];
    snprintf(lock, sizeof(lock), "SELECT balance_cents FROM accounts WHERE id = %lld FOR UPDATE", (long long)from);
    hold(lock);
    int64_t sent = now_us();
    int fd = send_req("POST", "/transfers", headers, body);
    wait_lock_waiters(1);
    test_response r;
    read_reply(fd, &r);
    int64_t got = now_us();
    close(fd);
    test_assert_problem(&r, 504);
    test_response_free(&r);
    report("a transfer stuck on a row lock%s: 504 after %.1f ms", key ? " (with an Idempotency-Key)" : "",
           (double)(got - sent) / 1000.0);
    assert_quiet_within(got, true, QUIET_BOUND_MS, key ? "the transfer's 504 (with a key)" : "the transfer's 504");
    release();
}

START_TEST(a_transfer_stuck_on_a_row_lock_gets_504_and_is_rolled_back_on_the_server)
{
    const char *env[] = {"THREADS=1", NULL};
    world_start(env);
    int64_t user = create_user();
    int64_t a = create_account(user, 10000), b = create_account(user, 5000);
    transfer_times_out(a, b, NULL);
    ck_assert_int_eq(balance(a), 10000);
    ck_assert_int_eq(balance(b), 5000);
    ck_assert_int_eq(test_pg_int(w.watch, "SELECT count(*) FROM transfers"), 0);
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

START_TEST(a_timed_out_transfer_does_not_store_its_idempotency_key_so_a_retry_succeeds)
{
    const char *env[] = {"THREADS=1", NULL};
    world_start(env);
    int64_t user = create_user();
    int64_t a = create_account(user, 10000), b = create_account(user, 5000);
    char key[64];
    snprintf(key, sizeof(key), "deadline-%ld", (long)getpid());
    transfer_times_out(a, b, key);
    ck_assert_int_eq(test_pg_int(w.watch, "SELECT count(*) FROM idempotency_keys"), 0);
    ck_assert_int_eq(test_pg_int(w.watch, "SELECT count(*) FROM transfers"), 0);

    /* the retry, now that nothing is in the way: done once, replayed after */
    char body[128], key_line[96];
    snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":700}", (long long)a,
             (long long)b);
    snprintf(key_line, sizeof(key_line), "Idempotency-Key: %s", key);
    const char *headers[] = {key_line, "Content-Type: application/json", NULL};
    char url[256];
    snprintf(url, sizeof(url), "%s/transfers", w.srv.base_url);
    test_response first, again;
    test_http(&first, "POST", url, body, strlen(body), headers);
    int64_t id = id_of(&first, 201);
    test_http(&again, "POST", url, body, strlen(body), headers);
    ck_assert_msg(again.status == 201 && again.body_len == first.body_len &&
                      memcmp(again.body, first.body, first.body_len) == 0,
                  "the replay is %ld %.300s, not the first 201 %.300s", again.status, again.body, first.body);
    test_response_free(&first);
    test_response_free(&again);
    ck_assert_int_eq(balance(a), 9300);
    ck_assert_int_eq(balance(b), 5700);
    ck_assert_int_eq(test_pg_int(w.watch, "SELECT count(*) FROM transfers"), 1);
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM transfers WHERE id = %lld", (long long)id);
    ck_assert_int_eq(test_pg_int(w.watch, sql), 1);
    world_end();
}
END_TEST

/* ---- 3. the first failure in a task group cancels its siblings ---- */

START_TEST(an_unknown_user_is_404_at_once_and_the_orders_read_stuck_beside_it_is_cancelled_on_the_server)
{
    const char *env[] = {"THREADS=1", "REQUEST_TIMEOUT_MS=10000", NULL};
    world_start(env);
    int64_t user = create_user();
    char path[64];
    snprintf(path, sizeof(path), "/users/%lld", (long long)user + 1000000);
    /* the connections open and the statements known: the reads go out at once */
    char known[64];
    snprintf(known, sizeof(known), "/users/%lld", (long long)user);
    expect_status("GET", known, NULL, 200);
    long long cancels_before = metric("h2pg_db_cancels_sent_total");

    hold("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    /* many rounds: the sibling is caught at different points (sent, parsed,
     * waiting), and a cancel can race with the start of the statement */
    enum { rounds = 50 };
    double took[rounds], quiet[rounds];
    for (int i = 0; i < rounds; i++) {
        int64_t sent = now_us();
        int fd = send_req("GET", path, NULL, NULL);
        test_response r;
        read_reply(fd, &r);
        int64_t got = now_us();
        took[i] = (double)(got - sent) / 1000.0;
        close(fd);
        test_assert_problem(&r, 404);
        test_response_free(&r);
        ck_assert_msg(took[i] <= PROMPT_MS, "round %d: the 404 took %.1f ms: it waited for the stuck orders read", i + 1,
                      took[i]);
        char after[64];
        snprintf(after, sizeof(after), "round %d: the 404", i + 1);
        quiet[i] = quiet_after(got, false, after, NULL);
        ck_assert_msg(quiet[i] <= QUIET_BOUND_MS, "round %d: the orders read was still active %.1f ms after the 404",
                      i + 1, quiet[i]);
    }
    qsort(took, rounds, sizeof(took[0]), cmp_double);
    qsort(quiet, rounds, sizeof(quiet[0]), cmp_double);
    report("%d rounds, 404 while orders is locked (deadline 10000 ms) after: median %.1f ms, max %.1f ms", rounds,
           took[rounds / 2], took[rounds - 1]);
    report("%d rounds, the 404 -> nothing active on the server: median %.1f ms, max %.1f ms", rounds,
           quiet[rounds / 2], quiet[rounds - 1]);
    release();
    /* the stuck reads were really on the server, and were cancelled there:
     * about one cancel each (the shared connection's watchdog repeats a
     * cancel every 20 ms while its target runs, and one such repeat can end
     * the next round's sibling before its own first cancel is due) */
    long long cancels = wait_metric_at_least("h2pg_db_cancels_sent_total", cancels_before + rounds - rounds / 10);
    report("cancels sent for %d rounds: %lld", rounds, cancels - cancels_before);
    ck_assert_msg(cancels - cancels_before >= rounds - rounds / 10, "%lld cancels sent for %d stuck sibling reads",
                  cancels - cancels_before, rounds);
    expect_status("GET", known, NULL, 200);
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

/* Readers beside the victims below: every answer must be 200. */
struct neighbour {
    pthread_t thread;
    char path[64];
    atomic_bool *stop;
    int ok, bad;
    long last_bad;
};

static void *neighbour_run(void *arg)
{
    struct neighbour *n = arg;
    while (!atomic_load(n->stop)) {
        test_response r;
        call(&r, "GET", n->path, NULL);
        if (r.status == 200) {
            n->ok++;
        } else {
            n->bad++;
            n->last_bad = r.status;
        }
        test_response_free(&r);
    }
    return NULL;
}

/* One shared connection (one thread) carries everyone's reads. Victims
 * read a user whose accounts are locked, with a 20 ms deadline: each one's
 * accounts read is stuck at the head of the pipeline, abandoned at 20 ms
 * and cancelled there by the watchdog, while the neighbours' order reads
 * queue behind it. A cancel that lands just after its target finished hits
 * the next statement, a neighbour's: that read must run again, invisibly.
 * So no neighbour ever sees anything but 200. */
START_TEST(reads_sharing_a_connection_never_see_another_requests_cancel)
{
    const char *env[] = {"THREADS=1", "REQUEST_TIMEOUT_MS=10000", NULL};
    world_start(env);
    int64_t victim = create_user(), neighbour_user = create_user();
    create_account(victim, 100);
    char body[128], victim_path[64];
    snprintf(body, sizeof(body), "{\"item\":\"n\",\"quantity\":1,\"price_cents\":5}");
    char orders[64];
    snprintf(orders, sizeof(orders), "/users/%lld/orders", (long long)neighbour_user);
    test_response r;
    call(&r, "POST", orders, body);
    int64_t order = id_of(&r, 201);
    test_response_free(&r);
    snprintf(victim_path, sizeof(victim_path), "/users/%lld", (long long)victim);
    expect_status("GET", victim_path, NULL, 200); /* the shared connection open, the statements known */
    long long cancels_before = metric("h2pg_db_cancels_sent_total");

    hold("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE");
    atomic_bool stop = false;
    enum { NEIGHBOURS = 4, VICTIMS = 60 };
    struct neighbour nb[NEIGHBOURS];
    for (int i = 0; i < NEIGHBOURS; i++) {
        nb[i] = (struct neighbour){.stop = &stop};
        snprintf(nb[i].path, sizeof(nb[i].path), "/orders/%lld", (long long)order);
        ck_assert_int_eq(pthread_create(&nb[i].thread, NULL, neighbour_run, &nb[i]), 0);
    }
    const char *headers[] = {"Request-Timeout: 20", NULL};
    int timed_out = 0;
    for (int i = 0; i < VICTIMS; i++) {
        int fd = send_req("GET", victim_path, headers, NULL);
        read_reply(fd, &r);
        close(fd);
        timed_out += r.status == 504;
        ck_assert_msg(r.status == 504, "a victim: %ld %.300s", r.status, r.body);
        test_response_free(&r);
    }
    atomic_store(&stop, true);
    int ok = 0, bad = 0;
    long last_bad = 0;
    for (int i = 0; i < NEIGHBOURS; i++) {
        pthread_join(nb[i].thread, NULL);
        ok += nb[i].ok, bad += nb[i].bad;
        last_bad = nb[i].bad ? nb[i].last_bad : last_bad;
    }
    release();
    long long cancels = wait_metric_at_least("h2pg_db_cancels_sent_total", cancels_before + 1);
    long long reruns = metric("h2pg_db_read_reruns_total");
    report("%d victims (504 after 20 ms, cancelled at the head) beside %d neighbour reads on one shared connection: "
           "%d neighbour errors, %lld cancels, %lld neighbour reads run again",
           timed_out, ok + bad, bad, cancels - cancels_before, reruns);
    ck_assert_msg(bad == 0, "%d neighbour reads failed (the last: %ld)", bad, last_bad);
    ck_assert_msg(ok > VICTIMS, "only %d neighbour reads ran beside %d victims", ok, VICTIMS);
    ck_assert_msg(cancels - cancels_before >= VICTIMS / 2, "%lld cancels for %d stuck victims",
                  cancels - cancels_before, VICTIMS);
    expect_status("GET", victim_path, NULL, 200);
    world_end();
}
END_TEST

/* ---- 4. a client that hangs up ---- */

/* The access-log line (JSON) of request id: its status, or -1. */
static long logged_status(const char *id)
{
    char quoted[96];
    snprintf(quoted, sizeof(quoted), "\"%s\"", id);
    if (!test_server_log_wait(&w.srv, quoted, WAIT_MS))
        return -1;
    char *log = test_server_log(&w.srv);
    long status = -1;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, quoted) == NULL)
            continue;
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type != NULL && strcmp(type, "access") == 0)
            status = (long)json_integer_value(json_object_get(j, "status"));
        json_decref(j);
    }
    free(log);
    return status;
}

START_TEST(a_client_that_hangs_up_has_its_query_cancelled_and_is_logged_as_499)
{
    const char *env[] = {"THREADS=1", "REQUEST_TIMEOUT_MS=30000", NULL};
    char path[64], id[64], id_line[96];
    world_start_with_user(env, path, sizeof(path));
    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof(id), "hangup-%ld-%d", (long)getpid(), i);
        snprintf(id_line, sizeof(id_line), "X-Request-Id: %s", id);
        const char *headers[] = {id_line, NULL};
        int64_t sent = now_us();
        int fd = send_req("GET", path, headers, NULL);
        wait_lock_waiters(1);
        while (ms_since_us(sent) < 200)
            sleep_ms(2);
        ck_assert_msg(!answered_yet(fd), "the request was answered before the client left");
        close(fd);
        int64_t closed = now_us();
        char after[64];
        snprintf(after, sizeof(after), "hang-up %d: the close", i + 1);
        assert_quiet_within(closed, false, QUIET_BOUND_MS + HANGUP_SLACK_MS, after);
        long status = logged_status(id);
        ck_assert_msg(status == 499, "the access log has status %ld for %s, expected 499", status, id);
    }
    /* and the service goes on */
    expect_status("GET", "/healthz", NULL, 200);
    release();
    expect_status("GET", path, NULL, 200);
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

/* A cancel can land late: the service sends one again every 20 ms while a
 * gone request's statement runs, and PostgreSQL forks a process to read
 * each, so one sent just before that statement ended may land on the next
 * statement of the shared connection. That is someone else's cancel: the
 * read it hits runs again and its client never sees it. Here the late
 * cancel is the test's own pg_cancel_backend, sent at the next request's
 * read right after the service's cancels for the gone one (the service
 * counts a 57014 as someone else's for a second after its last cancel).
 * What both cancels hit is a Prepare: parsing a statement waits for the
 * table's lock too, and the gone request's cancelled Prepare leaves the
 * statement unprepared, so the next request prepares it again; its
 * statement then fails with 26000 and the 57014 is the Prepare's. A failure
 * seen once in a full run (the hang-up test's second request answered
 * before its client left). */
START_TEST(a_late_cancel_meant_for_a_gone_request_is_not_seen_by_the_next_one)
{
    const char *env[] = {"THREADS=1", "REQUEST_TIMEOUT_MS=30000", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));
    long long reruns_before = metric("h2pg_db_read_reruns_total");
    enum { ROUNDS = 3 };
    for (int i = 0; i < ROUNDS; i++) {
        hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
        int gone = send_req("GET", path, NULL, NULL);
        wait_lock_waiters(1);
        close(gone);
        assert_quiet_within(now_us(), false, QUIET_BOUND_MS + HANGUP_SLACK_MS, "a hang-up before a late cancel");
        int fd = send_req("GET", path, NULL, NULL);
        wait_lock_waiters(1);
        ck_assert_int_eq(test_pg_int(w.watch, "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) "
                                              "FROM pg_stat_activity WHERE datname = current_database() "
                                              "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"),
                         1);
        release();
        test_response r;
        read_reply(fd, &r);
        ck_assert_msg(r.status == 200, "round %d: a late cancel for a gone request made the next one %ld: %s", i + 1,
                      r.status, r.body != NULL ? r.body : "");
        test_response_free(&r);
        close(fd);
    }
    long long reruns = wait_metric_at_least("h2pg_db_read_reruns_total", reruns_before + ROUNDS) - reruns_before;
    report("%d late cancels, each on the read after a hang-up's: %lld reads run again, every request 200", ROUNDS,
           reruns);
    ck_assert_int_ge(reruns, ROUNDS);
    world_end();
}
END_TEST

/* ---- 5. pool exhaustion and admission control ---- */

/* /healthz over and over on a thread of its own, timing each answer;
 * plain sockets, no Check calls (they belong to the test's thread). */
struct prober {
    pthread_t thread;
    int port;
    atomic_bool stop;
    int n, failures;
    double max_ms, sum_ms;
    double ms[4096];
    char failure[256];
};

static void *prober_run(void *arg)
{
    struct prober *p = arg;
    while (!atomic_load(&p->stop) && p->n < (int)(sizeof(p->ms) / sizeof(p->ms[0]))) {
        int64_t t0 = now_us();
        int status = test_healthz_status(p->port, 5000);
        double ms = ms_since_us(t0);
        if (status != 200) {
            p->failures++;
            snprintf(p->failure, sizeof(p->failure), "GET /healthz failed or was not 200 after %.1f ms", ms);
        }
        p->ms[p->n++] = ms;
        p->sum_ms += ms;
        if (ms > p->max_ms)
            p->max_ms = ms;
        sleep_ms(20);
    }
    return NULL;
}

static void prober_start(struct prober *p)
{
    memset(p, 0, sizeof(*p));
    p->port = w.srv.port;
    atomic_init(&p->stop, false);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, prober_run, p), 0);
}

/* Stops the prober; asserts every /healthz was a 200 within bound_ms. */
static void prober_finish(struct prober *p, double bound_ms, const char *during)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    ck_assert_msg(p->n >= 3, "only %d /healthz probes during %s", p->n, during);
    ck_assert_msg(p->failures == 0, "%d of %d /healthz probes failed during %s: %s", p->failures, p->n, during,
                  p->failure);
    qsort(p->ms, (size_t)p->n, sizeof(p->ms[0]), cmp_double);
    report("/healthz during %s: %d probes, median %.1f ms, max %.1f ms", during, p->n, p->ms[p->n / 2], p->max_ms);
    ck_assert_msg(p->max_ms <= bound_ms, "/healthz took up to %.1f ms during %s", p->max_ms, during);
}

#define FLOOD 10
#define ACQUIRE_MS 500.0

/* Fires FLOOD concurrent GET path (Request-Timeout: 8000) at a pool of two
 * connections with a 500 ms acquire timeout while users is locked. Expects
 * at least min_503 of them to wait their 500 ms and then get 503
 * problem+json with Retry-After, /healthz to answer all along, and the
 * others to hold connections, waiting on the lock, and finish with 200 once
 * it goes. Returns how many got 503. */
static int flood(const char *method, const char *path, const char *body, int min_503)
{
    struct prober p;
    int fds[FLOOD];
    int64_t sent[FLOOD];
    bool done[FLOOD] = {false};
    const char *headers[] = {"Request-Timeout: 8000", NULL};
    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    prober_start(&p);
    for (int i = 0; i < FLOOD; i++) {
        sent[i] = now_us();
        fds[i] = send_req(method, path, headers, body);
    }
    /* every 503 is due by 500 ms plus slack: collect until then */
    int n503 = 0;
    double first = 1e9, last = 0;
    int64_t t0 = now_us();
    while (ms_since_us(t0) < ACQUIRE_MS + PROMPT_MS) {
        struct pollfd pf[FLOOD];
        for (int i = 0; i < FLOOD; i++)
            pf[i] = (struct pollfd){.fd = done[i] ? -1 : fds[i], .events = POLLIN};
        if (poll(pf, FLOOD, 20) <= 0)
            continue;
        for (int i = 0; i < FLOOD; i++) {
            if (done[i] || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            double waited = ms_since_us(sent[i]);
            test_response r;
            read_reply(fds[i], &r);
            done[i] = true;
            if (r.status != 503)
                ck_abort_msg("%s %s while the pool is exhausted: %ld after %.1f ms: %.300s", method, path, r.status,
                             waited, r.body);
            n503++;
            test_assert_problem(&r, 503);
            assert_retry_after(&r);
            test_response_free(&r);
            ck_assert_msg(waited >= ACQUIRE_MS - 50, "a 503 after %.1f ms: it did not wait for a connection", waited);
            first = waited < first ? waited : first;
            last = waited > last ? waited : last;
        }
    }
    prober_finish(&p, 1000, "pool exhaustion");
    report("%s %s x%d on 2 connections: %d x 503 after %.1f..%.1f ms", method, path, FLOOD, n503, first, last);
    ck_assert_msg(n503 >= min_503, "%d requests got 503 after the acquire timeout, expected at least %d", n503, min_503);
    ck_assert_msg(last <= ACQUIRE_MS + PROMPT_MS, "a 503 only after %.1f ms, for a 500 ms acquire timeout", last);
    /* the others hold a connection each, waiting on the lock (a connection
     * given up by a request that got 503 may still be being cancelled) */
    int held = FLOOD - n503;
    int64_t t1 = now_us();
    test_pg_backends b;
    while ((b = service_backends()).lock_waits != held && ms_since_us(t1) < 2000)
        sleep_ms(5);
    ck_assert_msg(b.lock_waits == held, "%d requests unanswered, %d queries waiting for the lock:%s", held,
                  b.lock_waits, describe_backends());
    release();
    for (int i = 0; i < FLOOD; i++) {
        if (!done[i]) {
            test_response r;
            read_reply(fds[i], &r);
            ck_assert_msg(r.status == 200, "a request that held a connection: %ld after the lock went: %.300s",
                          r.status, r.body);
            test_response_free(&r);
        }
        close(fds[i]);
    }
    return n503;
}

START_TEST(more_requests_than_connections_wait_in_line_then_get_503_with_retry_after_while_healthz_answers)
{
    const char *env[] = {"THREADS=1", "POOL_MAX=2", "POOL_ACQUIRE_TIMEOUT_MS=500", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));
    /* one statement per request, each on a borrowed connection: exactly two
     * hold the two connections */
    int n503 = flood("PATCH", path, "{\"name\":\"flooded\"}", FLOOD - 2);
    ck_assert_int_eq(n503, FLOOD - 2);
    expect_status("GET", "/users?limit=1", NULL, 200);
    world_end();
}
END_TEST

/* Reads do not borrow a connection: they share one, pipelined. With every
 * other connection of the pool held by requests stuck on a row lock (and
 * more of them turned away with 503), a read of another user is answered
 * at once, and the stuck ones finish when the lock goes. */
START_TEST(reads_are_served_on_the_shared_connection_while_the_pool_is_exhausted)
{
    const char *env[] = {"THREADS=1", "POOL_MAX=3", "POOL_ACQUIRE_TIMEOUT_MS=500", NULL};
    world_start(env);
    int64_t locked = create_user(), other = create_user();
    char locked_path[64], other_path[64];
    snprintf(locked_path, sizeof(locked_path), "/users/%lld", (long long)locked);
    snprintf(other_path, sizeof(other_path), "/users/%lld", (long long)other);
    expect_status("GET", other_path, NULL, 200); /* opens the shared connection: one of the three */
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT 1 FROM users WHERE id = %lld FOR UPDATE", (long long)locked);
    hold(sql);
    const char *headers[] = {"Request-Timeout: 8000", NULL};
    int stuck[3];
    for (int i = 0; i < 3; i++)
        stuck[i] = send_req("PATCH", locked_path, headers, "{\"name\":\"stuck\"}");
    wait_lock_waiters(2); /* the two other connections, each on the row lock */
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = now_us();
        expect_status("GET", other_path, NULL, 200);
        double ms = ms_since_us(t0);
        worst = ms > worst ? ms : worst;
    }
    report("GET /users/{id} x5 with every borrowable connection held: worst %.1f ms", worst);
    ck_assert_msg(worst <= PROMPT_MS, "a read waited %.1f ms while the pool was exhausted", worst);
    /* the third update found no connection: 503 after the acquire timeout */
    int answered = 0;
    for (int i = 0; i < 3; i++) {
        if (!answered_yet(stuck[i]))
            continue;
        test_response r;
        read_reply(stuck[i], &r);
        test_assert_problem(&r, 503);
        test_response_free(&r);
        close(stuck[i]);
        stuck[i] = -1;
        answered++;
    }
    if (answered == 0) { /* it may still be waiting its 500 ms */
        sleep_ms((int)ACQUIRE_MS);
        for (int i = 0; i < 3 && answered == 0; i++) {
            if (stuck[i] < 0 || !answered_yet(stuck[i]))
                continue;
            test_response r;
            read_reply(stuck[i], &r);
            test_assert_problem(&r, 503);
            test_response_free(&r);
            close(stuck[i]);
            stuck[i] = -1;
            answered++;
        }
    }
    ck_assert_int_eq(answered, 1);
    release();
    for (int i = 0; i < 3; i++) {
        if (stuck[i] < 0)
            continue;
        test_response r;
        read_reply(stuck[i], &r);
        ck_assert_msg(r.status == 200, "a request that held a connection: %ld %.300s", r.status, r.body);
        test_response_free(&r);
        close(stuck[i]);
    }
    ck_assert_int_eq(metric("h2pg_db_connections_discarded_total"), 0);
    world_end();
}
END_TEST

START_TEST(past_max_inflight_a_request_gets_503_at_once_and_healthz_still_answers)
{
    const char *env[] = {"THREADS=1", "MAX_INFLIGHT=4", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));
    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    const char *headers[] = {"Request-Timeout: 10000", NULL};
    int inflight[4];
    /* updates: each holds a connection of its own, waiting on the lock (reads
     * would queue behind one another on the shared connection) */
    for (int i = 0; i < 4; i++)
        inflight[i] = send_req("PATCH", path, headers, "{\"name\":\"admitted\"}");
    wait_lock_waiters(4);

    long long rejected_before = metric("h2pg_http_requests_rejected_total");
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        /* connected beforehand: the time is the service's, not the handshake's */
        int fd = test_raw_connect(w.srv.port);
        char req[256];
        int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nRequest-Timeout: 10000\r\n\r\n", path);
        int64_t sent = now_us();
        test_raw_send(fd, req, (size_t)len);
        test_response r;
        read_reply(fd, &r);
        double took = ms_since_us(sent);
        close(fd);
        test_assert_problem(&r, 503);
        assert_retry_after(&r);
        test_response_free(&r);
        report("request %d past MAX_INFLIGHT=4: 503 after %.2f ms", 5 + i, took);
        worst = took > worst ? took : worst;
    }
    ck_assert_msg(worst <= AT_ONCE_MS, "a 503 past MAX_INFLIGHT took %.1f ms: it was not rejected at once", worst);
    /* /healthz runs without a task: admission control does not count it */
    int64_t t0 = now_us();
    expect_status("GET", "/healthz", NULL, 200);
    report("/healthz with MAX_INFLIGHT reached: %.1f ms", ms_since_us(t0));
    ck_assert_int_ge(metric("h2pg_http_requests_rejected_total"), rejected_before + 4);

    release();
    for (int i = 0; i < 4; i++) {
        test_response r;
        read_reply(inflight[i], &r);
        ck_assert_msg(r.status == 200, "an admitted request: %ld %.300s", r.status, r.body);
        test_response_free(&r);
        close(inflight[i]);
    }
    expect_status("GET", path, NULL, 200);
    world_end();
}
END_TEST

/* ---- 6. server-side backstops ---- */

START_TEST(statement_timeout_cancels_a_stuck_statement_on_the_server_and_the_client_gets_504)
{
    const char *env[] = {"THREADS=1", "STATEMENT_TIMEOUT_MS=500", "REQUEST_TIMEOUT_MS=10000", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));
    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    const char *headers[] = {"Request-Timeout: 5000", NULL};
    int64_t sent = now_us();
    int fd = send_req("GET", path, headers, NULL);
    wait_lock_waiters(1);
    test_response r;
    read_reply(fd, &r);
    int64_t got = now_us();
    double took = (double)(got - sent) / 1000.0;
    close(fd);
    report("STATEMENT_TIMEOUT_MS=500 with Request-Timeout: 5000: %ld after %.1f ms", r.status, took);
    test_assert_problem(&r, 504);
    test_response_free(&r);
    ck_assert_msg(took >= 450 && took <= 500 + PROMPT_MS,
                  "the 504 came after %.1f ms: not from a 500 ms statement_timeout", took);
    /* PostgreSQL ended it itself: nothing is left running */
    assert_quiet_within(got, false, QUIET_BOUND_MS, "the statement_timeout 504");
    release();
    expect_status("GET", path, NULL, 200);
    world_end();
}
END_TEST

START_TEST(idle_in_transaction_session_timeout_ends_a_session_left_idle_in_a_transaction)
{
    /* the only way through the API to leave a transaction idle: an export
     * whose reader stops reading (the cursor waits between batches) */
    const char *env[] = {"THREADS=1", "IDLE_IN_TRANSACTION_TIMEOUT_MS=500", "REQUEST_TIMEOUT_MS=30000", NULL};
    world_start(env);
    int64_t user = create_user();
    char sql[256];
    snprintf(sql, sizeof(sql),
             "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) "
             "SELECT %lld, 'stalled export item ' || g, 1, 100, 100 FROM generate_series(1, 100000) g",
             (long long)user);
    test_pg_exec(w.watch, sql);

    int fd = test_raw_connect_rcvbuf(w.srv.port, 64 * 1024);
    static const char req[] = "GET /export/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    test_raw_send(fd, req, sizeof(req) - 1);
    /* the reader never reads: wait for the session to sit idle in its transaction */
    int64_t t0 = now_us();
    char pid[32] = "";
    int64_t idle_since = 0;
    while (pid[0] == '\0') {
        PGresult *r = PQexec(w.watch, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                                      "application_name = 'h2pg' AND state = 'idle in transaction'");
        ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
        if (PQntuples(r) > 0) {
            snprintf(pid, sizeof(pid), "%s", PQgetvalue(r, 0, 0));
            idle_since = now_us();
        }
        PQclear(r);
        if (pid[0] == '\0' && ms_since_us(t0) > WAIT_MS)
            ck_abort_msg("the export never left a session idle in its transaction:%s", describe_backends());
        sleep_ms(2);
    }
    /* PostgreSQL ends that session itself after 500 ms of it; without the
     * backstop it would stay until the reader came back (30 s) */
    char q[160];
    snprintf(q, sizeof(q), "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid);
    double gone = -1;
    while (ms_since_us(idle_since) < 5000) {
        if (test_pg_int(w.watch, q) == 0) {
            gone = ms_since_us(idle_since);
            break;
        }
        sleep_ms(5);
    }
    report("IDLE_IN_TRANSACTION_TIMEOUT_MS=500: the idle session %s ended %.1f ms after it was seen idle", pid, gone);
    ck_assert_msg(gone >= 0, "the session %s was still there 5 s after it went idle in its transaction:%s", pid,
                  describe_backends());
    close(fd);
    /* the pool replaces the connection it lost */
    char path[64];
    snprintf(path, sizeof(path), "/users/%lld", (long long)user);
    expect_status("GET", path, NULL, 200);
    world_end();
}
END_TEST

/* ---- graceful stop ---- */

START_TEST(sigterm_cancels_a_request_stuck_past_the_grace_period_and_its_query_on_the_server)
{
    const char *env[] = {"THREADS=1", "SHUTDOWN_GRACE_MS=300", "REQUEST_TIMEOUT_MS=30000", NULL};
    char path[64];
    world_start_with_user(env, path, sizeof(path));
    hold("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    int fd = send_req("GET", path, NULL, NULL);
    wait_lock_waiters(1);
    int64_t t0 = now_us();
    int status = test_server_stop(&w.srv);
    int64_t exited = now_us();
    report("SIGTERM with a request stuck on a lock (grace 300 ms): exit %d after %.1f ms", status,
           (double)(exited - t0) / 1000.0);
    ck_assert_msg(status == 0, "h2pg exited with status %d", status);
    test_response r;
    read_reply(fd, &r);
    close(fd);
    test_assert_problem(&r, 503);
    test_response_free(&r);
    assert_quiet_within(exited, false, QUIET_BOUND_MS, "the server's exit");
    release();
    world_end();
}
END_TEST

/* ---- the suite ---- */

static Suite *deadlines_suite(void)
{
    Suite *s = suite_create("deadlines");

    TCase *deadline = tcase_create("deadline");
    tcase_set_timeout(deadline, 120);
    tcase_add_test(deadline, a_request_past_its_request_timeout_gets_504_and_its_query_is_cancelled_on_the_server);
    tcase_add_test(deadline,
                   request_timeout_ms_bounds_a_request_without_the_header_and_a_longer_header_does_not_extend_it);
    tcase_add_test(deadline, the_deadline_also_bounds_the_wait_for_a_pool_connection);
    tcase_add_test(deadline, requests_waiting_for_a_pool_connection_get_it_first_come_first_served);
    suite_add_tcase(s, deadline);

    TCase *transfer = tcase_create("transfer");
    tcase_set_timeout(transfer, 120);
    tcase_add_test(transfer, a_transfer_stuck_on_a_row_lock_gets_504_and_is_rolled_back_on_the_server);
    tcase_add_test(transfer, a_timed_out_transfer_does_not_store_its_idempotency_key_so_a_retry_succeeds);
    suite_add_tcase(s, transfer);

    TCase *cancel = tcase_create("cancel");
    tcase_set_timeout(cancel, 120);
    tcase_add_test(cancel, an_unknown_user_is_404_at_once_and_the_orders_read_stuck_beside_it_is_cancelled_on_the_server);
    tcase_add_test(cancel, a_client_that_hangs_up_has_its_query_cancelled_and_is_logged_as_499);
    tcase_add_test(cancel, a_late_cancel_meant_for_a_gone_request_is_not_seen_by_the_next_one);
    tcase_add_test(cancel, sigterm_cancels_a_request_stuck_past_the_grace_period_and_its_query_on_the_server);
    suite_add_tcase(s, cancel);

    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 120);
    tcase_add_test(limits, more_requests_than_connections_wait_in_line_then_get_503_with_retry_after_while_healthz_answers);
    tcase_add_test(limits, reads_are_served_on_the_shared_connection_while_the_pool_is_exhausted);
    tcase_add_test(limits, reads_sharing_a_connection_never_see_another_requests_cancel);
    tcase_add_test(limits, past_max_inflight_a_request_gets_503_at_once_and_healthz_still_answers);
    suite_add_tcase(s, limits);

    TCase *backstops = tcase_create("backstops");
    tcase_set_timeout(backstops, 120);
    tcase_add_test(backstops, statement_timeout_cancels_a_stuck_statement_on_the_server_and_the_client_gets_504);
    tcase_add_test(backstops, idle_in_transaction_session_timeout_ends_a_session_left_idle_in_a_transaction);
    suite_add_tcase(s, backstops);
    return s;
}

int main(void)
{
    return run_suite(deadlines_suite());
}
