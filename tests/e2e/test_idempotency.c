/* What the service keeps of Idempotency-Keys, and for how long (API.md,
 * "Accounts and transfers"; routes/idempotency.h): only a 201 is kept,
 * for IDEMPOTENCY_RETENTION_S; an older key counts as new, whether or not
 * the background pruner has deleted it yet; the pruner deletes old rows a
 * batch at a time and stops cleanly with the server. The replay itself
 * (same bytes, money moved once, 409 for another body, concurrent
 * duplicates) is tests/e2e/test_rest.c and, under load, test_transfers.c.
 *
 * Each tcase has its own database and server, started with the retention
 * (and the debug log, whose pruning-pass lines the tests wait for) that it
 * needs. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define PASS_LINE "idempotency keys: pruning pass done"
#define PRUNED_LINE "idempotency keys: pruned "
#define FLOOD 1000
#define BULK_EXPIRED 2500 /* rows: more than two batches of the pruner's 1000 */

static char *db;
static test_server server;

/* A short retention: the pruner passes every 2.5 s (retention / 4). */
static void short_setup(void)
{
    const char *env[] = {"IDEMPOTENCY_RETENTION_S=10", "LOG_LEVEL=debug", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

/* The default retention (24 h): the pruner passes once at start, then
 * every 60 s. */
static void default_setup(void)
{
    const char *env[] = {"LOG_LEVEL=debug", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

/* A retention of 4 s: a pass every second. */
static void busy_setup(void)
{
    const char *env[] = {"IDEMPOTENCY_RETENTION_S=4", "LOG_LEVEL=debug", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

static void teardown(void) { test_server_stop_and_drop_db(&server, &db); }

/* ---- helpers ---- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    ck_assert_int_ge(vasprintf(&s, f, ap), 0);
    va_end(ap);
    return s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long sql_int(const char *f, ...) __attribute__((format(printf, 1, 2)));
static long long sql_int(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *sql = NULL;
    ck_assert_int_ge(vasprintf(&sql, f, ap), 0);
    va_end(ap);
    PGconn *c = test_pg_connect(db);
    long long v = test_pg_int(c, sql);
    PQfinish(c);
    free(sql);
    return v;
}

static void sql_exec(const char *f, ...) __attribute__((format(printf, 1, 2)));
static void sql_exec(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *sql = NULL;
    ck_assert_int_ge(vasprintf(&sql, f, ap), 0);
    va_end(ap);
    PGconn *c = test_pg_connect(db);
    test_pg_exec(c, sql);
    PQfinish(c);
    free(sql);
}

/* Keys are made of [a-z0-9-] only, so they can stand in SQL text. */
static long long rows_for_key(const char *key)
{
    return sql_int("SELECT count(*) FROM idempotency_keys WHERE key = '%s'", key);
}

static int64_t post_created(const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", server.base_url, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_response r;
    test_http(&r, "POST", url, body, strlen(body), headers);
    ck_assert_msg(r.status == 201, "POST %s %s: %ld %s", path, body, r.status, r.body);
    json_t *j = test_response_json(&r);
    int64_t id = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    test_response_free(&r);
    return id;
}

static int64_t new_user(const char *tag)
{
    static unsigned seq;
    char *body = fmt("{\"name\":\"%s\",\"email\":\"%s-%ld-%u@idempotency.test\"}", tag, tag, (long)getpid(), seq++);
    int64_t id = post_created("/users", body);
    free(body);
    return id;
}

static int64_t new_account(int64_t user, long long balance)
{
    char *body = fmt("{\"user_id\":%lld,\"balance_cents\":%lld}", (long long)user, balance);
    int64_t id = post_created("/accounts", body);
    free(body);
    return id;
}

static long long balance_of(int64_t account)
{
    return sql_int("SELECT balance_cents FROM accounts WHERE id = %lld", (long long)account);
}

/* POST /transfers with the key (NULL: none). */
static void transfer(test_response *r, int64_t from, int64_t to, long long amount, const char *key)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/transfers", server.base_url);
    char *body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":%lld}", (long long)from,
                     (long long)to, amount);
    char *key_line = key ? fmt("Idempotency-Key: %s", key) : NULL;
    const char *headers[] = {"Content-Type: application/json", key_line, NULL};
    test_http(r, "POST", url, body, strlen(body), headers);
    free(key_line);
    free(body);
}

static int64_t transfer_id(const test_response *r)
{
    json_t *j = test_response_json(r);
    int64_t id = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    ck_assert_int_gt(id, 0);
    return id;
}

static int count_in_log(const char *needle)
{
    char *log = test_server_log(&server);
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(log);
    return n;
}

/* The rows the log says were pruned, summed over its lines. */
static long long pruned_in_log(void)
{
    char *log = test_server_log(&server);
    long long sum = 0;
    for (const char *p = log; (p = strstr(p, PRUNED_LINE)) != NULL; p++)
        sum += atoll(p + strlen(PRUNED_LINE));
    free(log);
    return sum;
}

/* Waits (up to timeout_ms) until the log holds at least n lines with needle. */
static bool wait_log_count(const char *needle, int n, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (count_in_log(needle) >= n)
            return true;
        sleep_ms(50);
    }
    return false;
}

/* ======================= a short retention ======================= */

START_TEST(keys_older_than_the_retention_are_pruned_in_batches_and_a_reused_key_is_new)
{
    int64_t u = new_user("pruned");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    char *old_key = fmt("old-%ld", (long)getpid()), *fresh_key = fmt("fresh-%ld", (long)getpid());

    test_response first;
    transfer(&first, a, b, 100, old_key);
    int64_t first_id = transfer_id(&first);
    ck_assert_int_eq(rows_for_key(old_key), 1);
    /* an hour old, as if it had been kept that long; and many more like it */
    sql_exec("UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE key = '%s'", old_key);
    sql_exec("INSERT INTO idempotency_keys (key, request_hash, status, response_body, created_at) "
             "SELECT 'bulk-%ld-' || g, 'x', 201, '{}', now() - interval '2 hours' - g * interval '1 ms' "
             "FROM generate_series(1, %d) g",
             (long)getpid(), BULK_EXPIRED);
    test_response fresh;
    transfer(&fresh, a, b, 1, fresh_key);
    ck_assert_int_eq(fresh.status, 201);
    test_response_free(&fresh);

    /* gone at the pruner's next pass (2.5 s apart) */
    double t0 = now_s();
    long long left = -1;
    while (now_s() - t0 < 30) {
        left = sql_int("SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '10 seconds'");
        if (left == 0)
            break;
        sleep_ms(100);
    }
    double took = now_s() - t0;
    ck_assert_msg(left == 0, "%lld rows older than the retention are left after %.1f s", left, took);
    ck_assert_int_eq(rows_for_key(old_key), 0);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'bulk-%ld-%%'", (long)getpid()), 0);
    /* a key within the retention stays */
    ck_assert_int_eq(rows_for_key(fresh_key), 1);
    ck_assert_int_ge(pruned_in_log(), BULK_EXPIRED + 1);

    /* the old key is new again: the same request moves money again */
    test_response again;
    transfer(&again, a, b, 100, old_key);
    ck_assert_msg(again.status == 201, "a pruned key reused: %ld %s", again.status, again.body);
    ck_assert_int_ne(transfer_id(&again), first_id);
    ck_assert_int_eq(rows_for_key(old_key), 1);
    ck_assert_int_eq(balance_of(a), 1000 - 100 - 1 - 100);
    ck_assert_int_eq(balance_of(b), 201);
    fprintf(stderr, "pruning: %d expired rows gone %.1f s after they were made old (retention 10 s, a pass every "
                    "2.5 s)\n",
            BULK_EXPIRED + 1, took);
    test_response_free(&again);
    test_response_free(&first);
    free(fresh_key);
    free(old_key);
}
END_TEST

/* ======================= the default retention ======================= */

/* Expired but still there (the pruner's next pass is a minute away): the
 * claim itself treats the row as free, even for another request. */
START_TEST(a_key_past_the_retention_that_is_not_pruned_yet_counts_as_new)
{
    ck_assert_msg(wait_log_count(PASS_LINE, 1, 20000), "no pruning pass at start within 20 s");
    int64_t u = new_user("expired");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    char *key = fmt("expired-%ld", (long)getpid());
    test_response first;
    transfer(&first, a, b, 100, key);
    int64_t first_id = transfer_id(&first);
    sql_exec("UPDATE idempotency_keys SET created_at = now() - interval '1 day 10 minutes' WHERE key = '%s'", key);

    /* another body under the old key: not 409, a transfer of its own */
    test_response other, replay;
    transfer(&other, a, b, 7, key);
    ck_assert_msg(other.status == 201, "an expired key with another body: %ld %s", other.status, other.body);
    int64_t other_id = transfer_id(&other);
    ck_assert_int_ne(other_id, first_id);
    ck_assert_int_eq(rows_for_key(key), 1);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM idempotency_keys WHERE key = '%s' AND "
                             "created_at > now() - interval '1 minute' AND status = 201",
                             key),
                     1);
    /* and that is now the answer the key replays */
    transfer(&replay, a, b, 7, key);
    ck_assert_int_eq(replay.status, 201);
    ck_assert_int_eq(transfer_id(&replay), other_id);
    ck_assert_int_eq(balance_of(a), 1000 - 100 - 7);
    /* the pruner took no part in it */
    ck_assert_int_eq(count_in_log(PRUNED_LINE), 0);
    test_response_free(&replay);
    test_response_free(&other);
    test_response_free(&first);
    free(key);
}
END_TEST

/* Requests that change nothing leave nothing: 1,000 keyed transfers that
 * are refused (unknown account, insufficient funds) on one connection. */
START_TEST(a_flood_of_keyed_requests_that_change_nothing_leaves_no_row)
{
    int64_t u = new_user("flood");
    int64_t a = new_account(u, 10), b = new_account(u, 0);
    long long rows_before = sql_int("SELECT count(*) FROM idempotency_keys");
    ck_assert_msg(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK, "curl_global_init");
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    char url[256];
    snprintf(url, sizeof(url), "%s/transfers", server.base_url);
    test_reply rep = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rep);
    int statuses[600] = {0};
    double t0 = now_s();
    for (int i = 0; i < FLOOD; i++) {
        char body[160], key[96];
        if (i % 2 == 0)
            snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":1}",
                     (long long)a, (long long)INT64_MAX - i);
        else
            snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":%d}",
                     (long long)a, (long long)b, 11 + i);
        snprintf(key, sizeof(key), "Idempotency-Key: flood-%ld-%d", (long)getpid(), i);
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        h = curl_slist_append(h, key);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        rep.len = 0;
        CURLcode rc = curl_easy_perform(c);
        curl_slist_free_all(h);
        ck_assert_msg(rc == CURLE_OK, "request %d: %s", i, curl_easy_strerror(rc));
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        ck_assert_msg(status == (i % 2 == 0 ? 404 : 422), "request %d (%s): %ld %.300s", i, body, status,
                      rep.body ? rep.body : "");
        if (status >= 0 && status < 600)
            statuses[status]++;
    }
    double took = now_s() - t0;
    free(rep.body);
    curl_easy_cleanup(c);
    long long flood_rows = sql_int("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'flood-%ld-%%'", (long)getpid());
    long long rows_after = sql_int("SELECT count(*) FROM idempotency_keys");
    ck_assert_msg(flood_rows == 0, "%lld rows kept for %d requests that changed nothing", flood_rows, FLOOD);
    ck_assert_int_eq(rows_after, rows_before);
    ck_assert_int_eq(balance_of(a), 10);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM transfers"), 0);
    fprintf(stderr, "flood: %d keyed requests (%d x 404, %d x 422) in %.1f s; idempotency_keys rows left: %lld\n", FLOOD,
            statuses[404], statuses[422], took, flood_rows);
}
END_TEST

/* ======================= shutdown ======================= */

START_TEST(the_pruner_stops_cleanly_with_the_server)
{
    /* a pass a second: it is in the middle of its work or of its pause */
    ck_assert_msg(wait_log_count(PASS_LINE, 3, 20000), "not three pruning passes within 20 s");
    /* by one task: two workers, but a pass a second, not two */
    int before = count_in_log(PASS_LINE);
    sleep_ms(3000);
    int passes = count_in_log(PASS_LINE) - before;
    ck_assert_msg(passes >= 1 && passes <= 4, "%d pruning passes in 3 s at one a second", passes);
    double t0 = now_s();
    int status = test_server_stop(&server);
    double took = now_s() - t0;
    ck_assert_msg(status == 0, "the server exited with %d", status);
    ck_assert_msg(took < 10, "the server took %.1f s to stop", took);
    ck_assert_int_eq(count_in_log("pruning failed"), 0);
}
END_TEST

static Suite *idempotency_suite(void)
{
    Suite *s = suite_create("idempotency");

    TCase *tc = tcase_create("short retention");
    tcase_add_checked_fixture(tc, short_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, keys_older_than_the_retention_are_pruned_in_batches_and_a_reused_key_is_new);
    suite_add_tcase(s, tc);

    tc = tcase_create("default retention");
    tcase_add_checked_fixture(tc, default_setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_key_past_the_retention_that_is_not_pruned_yet_counts_as_new);
    tcase_add_test(tc, a_flood_of_keyed_requests_that_change_nothing_leaves_no_row);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_add_checked_fixture(tc, busy_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, the_pruner_stops_cleanly_with_the_server);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(idempotency_suite());
}
