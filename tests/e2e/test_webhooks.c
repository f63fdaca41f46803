/* Webhooks (API.md, "Events, webhooks and the event stream"): the routes,
 * and delivery to a real receiver, tests/webhooks/receiver.mjs, which
 * checks every signature with the Standard Webhooks reference library
 * (npm standardwebhooks) and records what it got.
 *
 * Each test has its own database, server(s) and receiver. Events are made
 * with events_emit over libpq (the routes that write them live elsewhere).
 * Outcomes are polled for with generous limits, never waited for a fixed
 * time, so the tests hold on a slow, loaded machine. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "routes/webhook_dispatch.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define OUTCOME_WAIT_MS 30000

static char *db;
static test_server server;
static pid_t receiver_pid;
static int receiver_port;

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

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* events_emit(type, data), as the writers of the outbox do: its id. */
static long long emit(const char *type)
{
    PGconn *c = test_pg_connect(db);
    char *sql = fmt("SELECT events_emit('%s', '{\"id\": 1}'::jsonb)", type);
    long long id = test_pg_int(c, sql);
    free(sql);
    PQfinish(c);
    return id;
}

static long long sql_int(const char *sql)
{
    PGconn *c = test_pg_connect(db);
    long long v = test_pg_int(c, sql);
    PQfinish(c);
    return v;
}

/* n events of type, in one transaction. */
static void emit_many(const char *type, int n)
{
    char *sql =
        fmt("SELECT count(events_emit('%s', '{\"id\": 1}'::jsonb)) FROM generate_series(1, %d)", type, n);
    ck_assert_int_eq(sql_int(sql), n);
    free(sql);
}

/* The webhook's delivered deliveries, polled until there are n (twice
 * OUTCOME_WAIT_MS at most). */
static long long wait_delivered(long long webhook, long long n)
{
    char *sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld AND state = 'delivered'", webhook);
    int64_t give_up = mono_ms() + 2 * OUTCOME_WAIT_MS;
    long long delivered = 0;
    while (mono_ms() < give_up && (delivered = sql_int(sql)) < n)
        pause_ms(100);
    free(sql);
    return delivered;
}

static json_t *request_json(const char *method, const char *base, const char *path, const char *body,
                            long want_status)
{
    test_response r;
    char *url = fmt("%s%s", base, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_http(&r, method, url, body, body != NULL ? strlen(body) : 0, headers);
    ck_assert_msg(r.status == want_status, "%s %s: %ld, want %ld: %s", method, path, r.status, want_status, r.body);
    json_t *j = r.body_len > 0 ? test_response_json(&r) : NULL;
    test_response_free(&r);
    free(url);
    return j;
}

static json_t *api(const char *method, const char *path, const char *body, long want_status)
{
    return request_json(method, server.base_url, path, body, want_status);
}

/* ---- the receiver ---- */

static const char *receiver_dir(void) { return H2PG_SOURCE_DIR "/tests/webhooks"; }

static void receiver_install(void)
{
    char *cmd = fmt("cd '%s' && { [ -d node_modules/standardwebhooks ] || npm ci --no-audit --no-fund "
                    "--loglevel=error; }",
                    receiver_dir());
    ck_assert_msg(system(cmd) == 0, "npm ci in %s failed", receiver_dir());
    free(cmd);
}

static void receiver_start(void)
{
    receiver_install();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (chdir(receiver_dir()) != 0)
            _exit(127);
        execlp("node", "node", "receiver.mjs", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[128] = "";
    ck_assert_msg(fgets(line, sizeof(line), f) != NULL, "the receiver did not start");
    fclose(f);
    ck_assert_int_eq(sscanf(line, "listening %d", &receiver_port), 1);
    receiver_pid = pid;
}

static void receiver_stop(void)
{
    if (receiver_pid > 0) {
        kill(receiver_pid, SIGTERM);
        waitpid(receiver_pid, NULL, 0);
        receiver_pid = 0;
    }
}

static json_t *receiver(const char *method, const char *path, const char *body)
{
    char *base = fmt("http://127.0.0.1:%d", receiver_port);
    json_t *j = request_json(method, base, path, body, 200);
    free(base);
    return j;
}

/* Tells the receiver how to answer at path (with the webhook's secret). */
static void receiver_mode(const char *path, const char *secret, const char *mode)
{
    char *p = fmt("/_control%s", path);
    char *body = fmt("{\"secret\": \"%s\"%s%s}", secret, mode[0] ? ", " : "", mode);
    json_decref(receiver("POST", p, body));
    free(p);
    free(body);
}

static json_t *received(const char *path)
{
    char *p = fmt("/_received%s", path);
    json_t *j = receiver("GET", p, NULL);
    free(p);
    return j;
}

/* A webhook for types to the receiver's path; its id, and its secret into
 * secret (at least 128 bytes). */
static long long create_webhook_at(const char *host_url, const char *events, char *secret)
{
    char *body = fmt("{\"url\": \"%s\", \"events\": %s}", host_url, events);
    json_t *w = api("POST", "/webhooks", body, 201);
    free(body);
    long long id = json_integer_value(json_object_get(w, "id"));
    if (secret != NULL)
        snprintf(secret, 128, "%s", json_string_value(json_object_get(w, "secret")));
    json_decref(w);
    return id;
}

static long long create_webhook(const char *path, const char *events, char *secret)
{
    char *url = fmt("http://127.0.0.1:%d%s", receiver_port, path);
    long long id = create_webhook_at(url, events, secret);
    free(url);
    return id;
}

/* A webhook to the receiver's path for events, the receiver told its
 * secret (stored in secret, 128 bytes) and mode (receiver_mode); its id. */
static long long subscribe(const char *path, const char *events, const char *mode, char *secret)
{
    long long id = create_webhook(path, events, secret);
    receiver_mode(path, secret, mode);
    return id;
}

/* The webhook's deliveries, polled until the first one's state is want
 * (30 s at most); the page (new reference). */
static json_t *wait_delivery_state(long long webhook, const char *want)
{
    char *path = fmt("/webhooks/%lld/deliveries", webhook);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    json_t *page = NULL;
    const char *state = NULL;
    for (;;) {
        json_decref(page);
        page = api("GET", path, NULL, 200);
        json_t *first = json_array_get(json_object_get(page, "items"), 0);
        state = json_string_value(json_object_get(first, "state"));
        if ((state != NULL && strcmp(state, want) == 0) || mono_ms() > give_up)
            break;
        pause_ms(100);
    }
    char *text = json_dumps(page, 0);
    ck_assert_msg(state != NULL && strcmp(state, want) == 0, "delivery never became %s: %s", want, text);
    free(text);
    free(path);
    return page;
}

/* Polls the receiver until it has at least n deliveries at path. */
static json_t *wait_received(const char *path, size_t n)
{
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    json_t *got = NULL;
    for (;;) {
        json_decref(got);
        got = received(path);
        if (json_array_size(got) >= n || mono_ms() > give_up)
            break;
        pause_ms(100);
    }
    ck_assert_msg(json_array_size(got) >= n, "received %zu deliveries at %s, want %zu", json_array_size(got), path,
                  n);
    return got;
}

static void assert_all_verified(json_t *got)
{
    size_t i;
    json_t *rec;
    json_array_foreach(got, i, rec) {
        ck_assert_msg(json_is_true(json_object_get(rec, "verified")), "delivery %zu failed verification: %s", i,
                      json_string_value(json_object_get(rec, "error")));
    }
}

/* How many distinct webhook-ids the received deliveries carry. */
static size_t distinct_webhook_ids(json_t *got)
{
    json_t *ids = json_object();
    size_t i;
    json_t *rec;
    json_array_foreach(got, i, rec) {
        json_object_set_new(ids, json_string_value(json_object_get(rec, "id")), json_true());
    }
    size_t n = json_object_size(ids);
    json_decref(ids);
    return n;
}

static const char *const FAST_RETRIES[] = {"WEBHOOK_ALLOW_PRIVATE=true", "WEBHOOK_RETRY_BASE_MS=100",
                                           "WEBHOOK_RETRY_MAX_MS=400",   "WEBHOOK_TIMEOUT_MS=1500",
                                           "WEBHOOK_MAX_ATTEMPTS=3",     "WEBHOOK_POLL_MS=100",
                                           NULL};

static void setup(void)
{
    receiver_start();
    test_server_start_on_fresh_db(&server, &db, FAST_RETRIES);
}

static void teardown(void)
{
    test_server_stop_and_drop_db(&server, &db);
    receiver_stop();
}

/* ---- the routes ---- */

START_TEST(create_read_list_delete)
{
    test_response r;
    char *url = fmt("%s/webhooks", server.base_url);
    const char *body = "{\"url\": \"https://example.com/hook\", \"events\": [\"user.created\", \"order.created\"]}";
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_http(&r, "POST", url, body, strlen(body), headers);
    ck_assert_int_eq(r.status, 201);
    json_t *w = test_response_json(&r);
    long long id = json_integer_value(json_object_get(w, "id"));
    char *location = test_response_header(&r, "location");
    char *want_location = fmt("/webhooks/%lld", id);
    ck_assert_str_eq(location, want_location);
    const char *secret = json_string_value(json_object_get(w, "secret"));
    ck_assert_ptr_nonnull(secret);
    ck_assert_int_eq(strncmp(secret, "whsec_", 6), 0);
    ck_assert_uint_ge(strlen(secret + 6), 32); /* base64 of >= 24 bytes */
    ck_assert(json_is_false(json_object_get(w, "disabled")));
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(w, "events"), 1)), "order.created");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(w, "created_at")));
    test_response_free(&r);

    json_t *got = api("GET", want_location, NULL, 200);
    ck_assert_ptr_null(json_object_get(got, "secret"));
    ck_assert_str_eq(json_string_value(json_object_get(got, "url")), "https://example.com/hook");
    ck_assert_int_eq(json_array_size(json_object_get(got, "events")), 2);
    json_decref(got);

    json_t *page = api("GET", "/webhooks?limit=10", NULL, 200);
    json_t *items = json_object_get(page, "items");
    ck_assert_int_eq(json_array_size(items), 1);
    ck_assert_ptr_null(json_object_get(json_array_get(items, 0), "secret"));
    ck_assert(json_is_null(json_object_get(page, "next_after")));
    json_decref(page);

    json_decref(api("DELETE", want_location, NULL, 204));
    json_decref(api("GET", want_location, NULL, 404));
    json_decref(api("DELETE", want_location, NULL, 404));
    char *deliveries = fmt("%s/deliveries", want_location);
    json_decref(api("GET", deliveries, NULL, 404));
    free(deliveries);
    json_decref(w);
    free(location);
    free(want_location);
    free(url);
}
END_TEST

START_TEST(bad_input_is_refused)
{
    const char *bad[] = {
        "{\"url\": \"ftp://example.com/\", \"events\": [\"user.created\"]}",
        "{\"url\": \"/relative\", \"events\": [\"user.created\"]}",
        "{\"url\": \"http://\", \"events\": [\"user.created\"]}",
        "{\"url\": \"http://exa mple.com/\", \"events\": [\"user.created\"]}",
        "{\"url\": \"https://example.com/\", \"events\": []}",
        "{\"url\": \"https://example.com/\", \"events\": [\"user.deleted\"]}",
        "{\"url\": \"https://example.com/\", \"events\": [\"*\", \"user.created\"]}",
        "{\"url\": \"https://example.com/\", \"events\": [\"user.created\", \"user.created\"]}",
        "{\"url\": \"https://example.com/\"}",
        "{\"events\": [\"*\"]}",
        "{\"url\": 5, \"events\": [\"*\"]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *p = api("POST", "/webhooks", bad[i], 422);
        ck_assert_msg(json_array_size(json_object_get(p, "errors")) >= 1, "no errors[] for %s", bad[i]);
        json_decref(p);
    }
    char *long_url = malloc(2100);
    memcpy(long_url, "https://example.com/", 20);
    memset(long_url + 20, 'a', 2040);
    long_url[2060] = '\0';
    char *body = fmt("{\"url\": \"%s\", \"events\": [\"*\"]}", long_url);
    json_decref(api("POST", "/webhooks", body, 422));
    free(body);
    free(long_url);
    json_decref(api("POST", "/webhooks", "{\"url\": ", 400));
    json_decref(api("GET", "/webhooks/0", NULL, 404));
    json_decref(api("GET", "/webhooks/999", NULL, 404));
    json_decref(api("POST", "/webhooks/999/ping", NULL, 404));
    json_decref(api("POST", "/webhooks", "{\"url\": \"https://example.com/\", \"events\": [\"*\"]}", 201));
}
END_TEST

/* ---- delivery ---- */

START_TEST(an_event_is_delivered_signed)
{
    char secret[128];
    long long hook = subscribe("/ok", "[\"user.created\"]", "", secret);
    long long other = create_webhook("/orders", "[\"order.created\"]", NULL);
    long long ev = emit("user.created");
    json_t *page = wait_delivery_state(hook, "delivered");
    json_t *d = json_array_get(json_object_get(page, "items"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "event_id")), ev);
    ck_assert_str_eq(json_string_value(json_object_get(d, "type")), "user.created");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "attempts")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "last_status")), 204);
    ck_assert(json_is_null(json_object_get(d, "last_error")));
    ck_assert(json_is_null(json_object_get(d, "next_attempt_at")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(d, "delivered_at")));
    json_t *got = wait_received("/ok", 1);
    assert_all_verified(got);
    json_t *event = json_object_get(json_array_get(got, 0), "event");
    ck_assert_int_eq(json_integer_value(json_object_get(event, "id")), ev);
    ck_assert_str_eq(json_string_value(json_object_get(event, "type")), "user.created");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(event, "data"), "id")), 1);
    const char *created_at = json_string_value(json_object_get(event, "created_at"));
    ck_assert_msg(created_at != NULL && strlen(created_at) == 27 && created_at[26] == 'Z', "created_at %s",
                  created_at);
    /* the order webhook wanted none of it */
    char *path = fmt("/webhooks/%lld/deliveries", other);
    json_t *none = api("GET", path, NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(none, "items")), 0);
    json_decref(none);
    free(path);
    json_decref(got);
    json_decref(page);
    /* counted in /metrics (sampled each second) */
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    bool counted = false;
    while (!counted && mono_ms() < give_up) {
        test_response r;
        char *url = fmt("%s/metrics", server.base_url);
        test_http(&r, "GET", url, NULL, 0, NULL);
        counted = strstr(r.body, "h2pg_webhook_deliveries_total{outcome=\"delivered\"} 1\n") != NULL &&
                  strstr(r.body, "h2pg_webhook_attempts_total 1\n") != NULL &&
                  strstr(r.body, "h2pg_webhook_oldest_pending_seconds 0\n") != NULL;
        test_response_free(&r);
        free(url);
        if (!counted)
            pause_ms(200);
    }
    ck_assert_msg(counted, "the delivery is not in /metrics");
}
END_TEST

/* The ids of webhook's deliveries after `after`, at most limit, as
 * "1,2,3": from the table, or from GET /webhooks/{id}/deliveries. */
static char *ids_in_table(long long webhook, long long after, int limit)
{
    PGconn *c = test_pg_connect(db);
    char *sql = fmt("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM (SELECT id FROM "
                    "webhook_deliveries WHERE webhook_id = %lld AND id > %lld ORDER BY id LIMIT %d) s",
                    webhook, after, limit);
    PGresult *res = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    char *ids = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    PQfinish(c);
    return ids;
}

static char *ids_in_page(long long webhook, long long after, int limit, long long *next_after)
{
    char *path = after > 0 ? fmt("/webhooks/%lld/deliveries?after=%lld&limit=%d", webhook, after, limit)
                           : fmt("/webhooks/%lld/deliveries?limit=%d", webhook, limit);
    json_t *page = api("GET", path, NULL, 200);
    json_t *items = json_object_get(page, "items");
    size_t n = json_array_size(items);
    char *ids = calloc(1, 24 * n + 1);
    for (size_t i = 0; i < n; i++)
        sprintf(ids + strlen(ids), "%s%lld", i ? "," : "",
                (long long)json_integer_value(json_object_get(json_array_get(items, i), "id")));
    if (next_after != NULL)
        *next_after = json_is_integer(json_object_get(page, "next_after"))
                          ? (long long)json_integer_value(json_object_get(page, "next_after"))
                          : 0;
    json_decref(page);
    free(path);
    return ids;
}

/* Two webhooks of the same events have their deliveries' ids interleaved:
 * a page of one, after any id at all (its own, the other's, one between,
 * one past the end), is what "id > after ORDER BY id" gives, and following
 * next_after walks them all once. */
START_TEST(a_deliveries_page_starts_after_any_id)
{
    enum { EVENTS = 6 };
    long long a = create_webhook("/page-a", "[\"user.created\"]", NULL);
    long long b = create_webhook("/page-b", "[\"user.created\"]", NULL);
    for (int i = 0; i < EVENTS; i++)
        emit("user.created");
    char *count = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id IN (%lld, %lld)", a, b);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    while (sql_int(count) < 2 * EVENTS && mono_ms() < give_up)
        pause_ms(50);
    ck_assert_int_eq(sql_int(count), 2 * EVENTS);
    free(count);
    char *range = fmt("SELECT min(id) FROM webhook_deliveries WHERE webhook_id IN (%lld, %lld)", a, b);
    long long lo = sql_int(range);
    free(range);
    range = fmt("SELECT max(id) FROM webhook_deliveries WHERE webhook_id IN (%lld, %lld)", a, b);
    long long hi = sql_int(range);
    free(range);
    long long afters[2 * EVENTS + 8];
    size_t nafter = 0;
    afters[nafter++] = 0; /* no after= at all */
    for (long long x = lo > 1 ? lo - 1 : 1; x <= hi + 2 && nafter < sizeof(afters) / sizeof(afters[0]); x++)
        afters[nafter++] = x;
    ck_assert_int_eq(hi - lo + 1, 2 * EVENTS); /* the other tests' deliveries are not between */
    for (size_t k = 0; k < nafter; k++) {
        long long after = afters[k];
        for (int limit = 1; limit <= EVENTS + 1; limit += 3) {
            long long hooks[] = {a, b};
            for (size_t h = 0; h < 2; h++) {
                char *want = ids_in_table(hooks[h], after, limit);
                char *got = ids_in_page(hooks[h], after, limit, NULL);
                ck_assert_msg(strcmp(want, got) == 0, "webhook %lld after=%lld limit=%d: page %s, table %s",
                              hooks[h], after, limit, got, want);
                free(want);
                free(got);
            }
        }
    }
    long long after = 0;
    char *walked = calloc(1, 1);
    for (int pages = 0; pages <= EVENTS; pages++) {
        long long next = 0;
        char *ids = ids_in_page(a, after, 2, &next);
        char *joined = fmt("%s%s%s", walked, walked[0] && ids[0] ? "," : "", ids);
        free(walked);
        free(ids);
        walked = joined;
        if (next == 0)
            break;
        after = next;
    }
    char *all = ids_in_table(a, 0, 1000);
    ck_assert_msg(strcmp(walked, all) == 0, "next_after walked %s, want %s", walked, all);
    free(all);
    free(walked);
}
END_TEST

START_TEST(a_webhook_gets_only_events_after_it_exists)
{
    emit("user.created");
    char secret[128];
    long long hook = subscribe("/later", "[\"*\"]", "", secret);
    long long ev = emit("account.created");
    json_t *page = wait_delivery_state(hook, "delivered");
    json_t *items = json_object_get(page, "items");
    ck_assert_int_eq(json_array_size(items), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(items, 0), "event_id")), ev);
    json_decref(page);
}
END_TEST

START_TEST(a_500_is_retried_with_the_same_webhook_id)
{
    char secret[128];
    long long hook = subscribe("/flaky", "[\"*\"]", "\"fail\": 1", secret);
    emit("order.created");
    json_t *page = wait_delivery_state(hook, "delivered");
    json_t *d = json_array_get(json_object_get(page, "items"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "attempts")), 2);
    json_t *got = wait_received("/flaky", 2);
    assert_all_verified(got);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(got, 0), "answered")), 500);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(got, 0), "id")),
                     json_string_value(json_object_get(json_array_get(got, 1), "id")));
    json_decref(got);
    json_decref(page);
}
END_TEST

START_TEST(attempts_run_out_then_failed)
{
    char secret[128];
    long long hook = subscribe("/broken", "[\"*\"]", "\"status\": 503", secret);
    emit("transfer.created");
    json_t *page = wait_delivery_state(hook, "failed");
    json_t *d = json_array_get(json_object_get(page, "items"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "attempts")), 3); /* WEBHOOK_MAX_ATTEMPTS */
    ck_assert_int_eq(json_integer_value(json_object_get(d, "last_status")), 503);
    ck_assert(json_is_null(json_object_get(d, "next_attempt_at")));
    json_t *got = wait_received("/broken", 3);
    ck_assert_int_eq(json_array_size(got), 3);
    json_decref(got);
    json_decref(page);
}
END_TEST

START_TEST(a_410_disables_the_webhook)
{
    char secret[128];
    long long hook = subscribe("/gone", "[\"*\"]", "\"status\": 410", secret);
    emit("user.created");
    json_t *page = wait_delivery_state(hook, "failed");
    json_t *d = json_array_get(json_object_get(page, "items"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "attempts")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "last_status")), 410);
    char *path = fmt("/webhooks/%lld", hook);
    json_t *w = api("GET", path, NULL, 200);
    ck_assert(json_is_true(json_object_get(w, "disabled")));
    json_decref(w);
    free(path);
    json_decref(page);
}
END_TEST

START_TEST(a_receiver_that_is_down_is_retried)
{
    char secret[128];
    int port = test_free_port(); /* nothing listens there */
    char *url = fmt("http://127.0.0.1:%d/down", port);
    long long hook = create_webhook_at(url, "[\"*\"]", secret);
    emit("user.created");
    json_t *page = wait_delivery_state(hook, "failed");
    json_t *d = json_array_get(json_object_get(page, "items"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "attempts")), 3);
    ck_assert(json_is_null(json_object_get(d, "last_status")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(d, "last_error")));
    json_decref(page);
    free(url);
}
END_TEST

START_TEST(a_slow_receiver_times_out_and_is_retried)
{
    char secret[128];
    long long hook = subscribe("/slow", "[\"*\"]", "\"sleep_ms\": 4000", secret);
    emit("user.created");
    /* the first attempt times out (1.5 s); then the receiver is quick */
    char *path = fmt("/webhooks/%lld/deliveries", hook);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    bool retried = false;
    while (!retried && mono_ms() < give_up) {
        json_t *page = api("GET", path, NULL, 200);
        json_t *d = json_array_get(json_object_get(page, "items"), 0);
        const char *err = json_string_value(json_object_get(d, "last_error"));
        retried = err != NULL && strstr(err, "WEBHOOK_TIMEOUT_MS") != NULL;
        json_decref(page);
        if (!retried)
            pause_ms(50);
    }
    ck_assert_msg(retried, "no attempt timed out");
    receiver_mode("/slow", secret, "\"sleep_ms\": 0");
    json_decref(wait_delivery_state(hook, "delivered"));
    free(path);
}
END_TEST

START_TEST(delete_drops_pending_deliveries)
{
    char secret[128];
    long long hook = subscribe("/dropped", "[\"*\"]", "\"status\": 500", secret);
    emit("user.created");
    json_decref(wait_received("/dropped", 1));
    char *path = fmt("/webhooks/%lld", hook);
    json_decref(api("DELETE", path, NULL, 204));
    char *sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld", hook);
    ck_assert_int_eq(sql_int(sql), 0);
    free(sql);
    free(path);
}
END_TEST

struct pending_delete {
    char *url;
    long status;
};

static void *delete_in_thread(void *arg)
{
    struct pending_delete *d = arg;
    test_response r;
    test_http(&r, "DELETE", d->url, NULL, 0, NULL);
    d->status = r.status;
    test_response_free(&r);
    return NULL;
}

/* Deliveries hold no foreign key to their webhook (migrations/0016): the
 * DELETE removes them itself, including those a fan-out that held the
 * webhook's row lock made while the DELETE waited for it. Here the test
 * plays that fan-out: it locks the webhook as the fan-out does, makes a
 * delivery, lets the DELETE block on the lock, and only then commits. */
START_TEST(delete_drops_what_a_concurrent_fanout_made)
{
    char secret[128];
    long long hook = subscribe("/raced", "[\"*\"]", "\"status\": 500", secret);
    PGconn *fanout = test_pg_connect(db);
    char *sql = fmt("BEGIN; SELECT 1 FROM webhooks WHERE id = %lld FOR NO KEY UPDATE; "
                    "INSERT INTO webhook_deliveries (webhook_id, event_id, type, attempts, lease_until) "
                    "VALUES (%lld, 1000000, 'user.created', 1, now() + interval '1 minute')",
                    hook, hook);
    test_pg_exec(fanout, sql);
    free(sql);

    struct pending_delete d = {.url = fmt("%s/webhooks/%lld", server.base_url, hook)};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, delete_in_thread, &d), 0);
    /* the DELETE waits for the lock (or it did not wait: the test proves nothing) */
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    long long waiting = 0;
    while (mono_ms() < give_up &&
           (waiting = sql_int("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND query LIKE 'DELETE FROM webhooks%'")) == 0)
        pause_ms(20);
    ck_assert_msg(waiting == 1, "the DELETE never waited for the webhook's lock");
    test_pg_exec(fanout, "COMMIT");
    PQfinish(fanout);
    pthread_join(t, NULL);
    ck_assert_int_eq(d.status, 204);
    free(d.url);

    sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld", hook);
    ck_assert_int_eq(sql_int(sql), 0);
    free(sql);
}
END_TEST

/* ---- ping ---- */

START_TEST(ping_reports_the_receivers_status)
{
    char secret[128];
    long long hook = subscribe("/ping", "[\"*\"]", "\"status\": 202", secret);
    char *path = fmt("/webhooks/%lld/ping", hook);
    json_t *p = api("POST", path, NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 202);
    ck_assert(json_is_null(json_object_get(p, "error")));
    ck_assert(json_is_integer(json_object_get(p, "duration_ms")));
    json_decref(p);
    json_t *got = wait_received("/ping", 1);
    assert_all_verified(got);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(got, 0), "event"), "type")),
                     "ping");
    json_decref(got);

    /* a receiver slower than the request's deadline: 504, in about that time */
    receiver_mode("/ping", secret, "\"sleep_ms\": 5000");
    test_response r;
    char *url = fmt("%s%s", server.base_url, path);
    const char *headers[] = {"Request-Timeout: 300", NULL};
    int64_t t0 = mono_ms();
    test_http(&r, "POST", url, NULL, 0, headers);
    ck_assert_int_eq(r.status, 504);
    ck_assert_int_lt(mono_ms() - t0, 4000);
    test_response_free(&r);

    /* slower than WEBHOOK_TIMEOUT_MS (1.5 s) but within the deadline: 200 with the error */
    p = api("POST", path, NULL, 200);
    ck_assert(json_is_null(json_object_get(p, "status")));
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "error")), "WEBHOOK_TIMEOUT_MS"));
    json_decref(p);

    /* nothing listening */
    int port = test_free_port();
    char *down = fmt("http://127.0.0.1:%d/", port);
    long long dead = create_webhook_at(down, "[\"*\"]", NULL);
    char *dpath = fmt("/webhooks/%lld/ping", dead);
    p = api("POST", dpath, NULL, 200);
    ck_assert(json_is_null(json_object_get(p, "status")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(p, "error")));
    json_decref(p);
    free(dpath);
    free(down);
    free(url);
    free(path);
}
END_TEST

/* The client hangs up mid-ping: the request's task is cancelled, and
 * with it the call to the receiver, which sees its caller hang up long
 * before it would have answered. */
START_TEST(a_ping_whose_client_goes_away_is_cancelled)
{
    char secret[128];
    long long hook = subscribe("/hang", "[\"*\"]", "\"sleep_ms\": 20000", secret);
    char *req = fmt("POST /webhooks/%lld/ping HTTP/1.1\r\nHost: x\r\nRequest-Timeout: 30000\r\n"
                    "Content-Length: 0\r\n\r\n",
                    hook);
    int fd = test_raw_connect(server.port);
    test_raw_send(fd, req, strlen(req));
    json_decref(wait_received("/hang", 1));
    int64_t closed = mono_ms();
    close(fd);
    bool aborted = false;
    while (!aborted && mono_ms() - closed < 15000) {
        json_t *got = received("/hang");
        aborted = json_is_true(json_object_get(json_array_get(got, 0), "aborted"));
        json_decref(got);
        if (!aborted)
            pause_ms(50);
    }
    ck_assert_msg(aborted, "the receiver's caller did not hang up after the client did");
    json_decref(api("GET", "/webhooks", NULL, 200));
    free(req);
}
END_TEST

/* ---- SSRF ---- */

static void private_setup(void)
{
    receiver_start();
    const char *env[] = {"WEBHOOK_RETRY_BASE_MS=50", "WEBHOOK_RETRY_MAX_MS=100", "WEBHOOK_MAX_ATTEMPTS=2",
                         "WEBHOOK_POLL_MS=100", "WEBHOOK_TIMEOUT_MS=2000", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

START_TEST(private_addresses_are_never_reached)
{
    char secret[128];
    char *urls[] = {
        fmt("http://127.0.0.1:%d/ssrf", receiver_port),
        fmt("http://localhost:%d/ssrf", receiver_port),
        fmt("http://[::ffff:127.0.0.1]:%d/ssrf", receiver_port),
        fmt("http://10.0.0.1:%d/ssrf", receiver_port),
        fmt("http://169.254.169.254/latest/meta-data/"),
    };
    long long hooks[5];
    for (int i = 0; i < 5; i++)
        hooks[i] = create_webhook_at(urls[i], "[\"*\"]", secret);
    receiver_mode("/ssrf", secret, "");
    emit("user.created");
    for (int i = 0; i < 5; i++) {
        json_t *page = wait_delivery_state(hooks[i], "failed");
        json_t *d = json_array_get(json_object_get(page, "items"), 0);
        const char *err = json_string_value(json_object_get(d, "last_error"));
        ck_assert_msg(err != NULL && strstr(err, "not a public address") != NULL, "%s: %s", urls[i], err);
        json_decref(page);
        char *ping = fmt("/webhooks/%lld/ping", hooks[i]);
        json_t *p = api("POST", ping, NULL, 200);
        err = json_string_value(json_object_get(p, "error"));
        ck_assert_msg(err != NULL && strstr(err, "not a public address") != NULL, "ping %s: %s", urls[i], err);
        json_decref(p);
        free(ping);
    }
    json_t *got = received("/ssrf");
    ck_assert_int_eq(json_array_size(got), 0);
    json_decref(got);
    for (int i = 0; i < 5; i++)
        free(urls[i]);
}
END_TEST

/* ---- crashes and replicas ---- */

static const char *const KILL_ENV[] = {"WEBHOOK_ALLOW_PRIVATE=true", "WEBHOOK_RETRY_BASE_MS=100",
                                       "WEBHOOK_RETRY_MAX_MS=400",   "WEBHOOK_TIMEOUT_MS=2000",
                                       "WEBHOOK_POLL_MS=100",        NULL};

static void kill_setup(void)
{
    receiver_start();
    test_server_start_on_fresh_db(&server, &db, KILL_ENV);
}

/* SIGKILL while the receiver holds the delivery: the lease it left runs
 * out, the sweep finds the first attempt without an outcome, and the next
 * process delivers the event, as the same webhook-id. */
START_TEST(a_delivery_survives_a_killed_process)
{
    char secret[128];
    long long hook = subscribe("/crash", "[\"*\"]", "\"sleep_ms\": 60000", secret);
    emit("user.created");
    json_decref(wait_received("/crash", 1));
    kill(server.pid, SIGKILL);
    waitpid(server.pid, NULL, 0);
    server.pid = 0;
    receiver_mode("/crash", secret, "\"sleep_ms\": 0");
    test_server_start(&server, db, KILL_ENV);
    json_t *page = wait_delivery_state(hook, "delivered");
    json_t *got = wait_received("/crash", 2);
    assert_all_verified(got);
    const char *first = json_string_value(json_object_get(json_array_get(got, 0), "id"));
    size_t i;
    json_t *rec;
    json_array_foreach(got, i, rec) {
        ck_assert_str_eq(json_string_value(json_object_get(rec, "id")), first);
    }
    json_decref(got);
    json_decref(page);
}
END_TEST

/* Three processes on one database: every event reaches the receiver (at
 * least once), each as its own webhook-id. */
START_TEST(three_replicas_deliver_every_event)
{
    test_server more[2];
    for (int i = 0; i < 2; i++)
        test_server_start(&more[i], db, FAST_RETRIES);
    char secret[128];
    subscribe("/many", "[\"*\"]", "", secret);
    enum { EVENTS = 60 };
    for (int i = 0; i < EVENTS; i++)
        emit(i % 2 ? "order.created" : "user.created");
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    long long delivered = 0;
    while (mono_ms() < give_up &&
           (delivered = sql_int("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")) < EVENTS)
        pause_ms(100);
    ck_assert_int_eq(delivered, EVENTS);
    json_t *got = wait_received("/many", EVENTS);
    assert_all_verified(got);
    ck_assert_int_eq(distinct_webhook_ids(got), EVENTS);
    json_decref(got);
    for (int k = 0; k < 2; k++)
        test_server_stop(&more[k]);
}
END_TEST

/* WEBHOOK_POLL_MS at its maximum (a minute) and longer than the waits
 * below: only the sequencer's wake-up can make the dispatcher look. */
static void woken_setup(void)
{
    receiver_start();
    const char *env[] = {"WEBHOOK_ALLOW_PRIVATE=true", "WEBHOOK_POLL_MS=60000", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

/* An event is delivered as soon as it is numbered, not at the next poll;
 * twice, so that the second is not the start-up pass's luck. */
START_TEST(a_numbered_event_wakes_the_dispatcher)
{
    char secret[128];
    long long hook = subscribe("/woken", "[\"*\"]", "", secret);
    pause_ms(1000); /* past the dispatcher's first passes */
    int64_t t0 = mono_ms();
    emit("user.created");
    json_decref(wait_received("/woken", 1));
    emit("order.created");
    json_decref(wait_received("/woken", 2));
    ck_assert_int_lt(mono_ms() - t0, 30000); /* a poll would take 60 s */
    json_decref(wait_delivery_state(hook, "delivered"));
}
END_TEST

static void patient_setup(void)
{
    receiver_start();
    const char *env[] = {"WEBHOOK_ALLOW_PRIVATE=true", "WEBHOOK_TIMEOUT_MS=60000", "WEBHOOK_POLL_MS=100", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

static long long metric(const char *name);

/* A receiver that hangs holds up its own deliveries only: another
 * webhook's later event arrives while the first is still waiting. The
 * oldest-undelivered gauge counts the waiting one's event (a first attempt
 * in flight, neither due nor in the outbox). */
START_TEST(a_hanging_receiver_does_not_hold_up_other_webhooks)
{
    char slow_secret[128], fast_secret[128];
    long long slow = subscribe("/hanging", "[\"user.created\"]", "\"sleep_ms\": 60000", slow_secret);
    long long fast = subscribe("/quick", "[\"order.created\"]", "", fast_secret);
    emit("user.created");
    json_decref(wait_received("/hanging", 1));
    emit("order.created");
    json_decref(wait_delivery_state(fast, "delivered"));
    char *path = fmt("/webhooks/%lld/deliveries", slow);
    json_t *page = api("GET", path, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(page, "items"), 0), "state")),
                     "pending");
    json_decref(page);
    free(path);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    long long oldest;
    while ((oldest = metric("h2pg_webhook_oldest_pending_seconds")) < 2 && mono_ms() < give_up)
        pause_ms(200);
    ck_assert_msg(oldest >= 2, "an event undelivered for seconds, the oldest undelivered reads %lld s", oldest);
}
END_TEST

/* One worker, a receiver that takes 3 s, more events than it may attempt
 * at once: the worker leases more of them than that and keeps as many
 * requests in flight as it may, ROUTES_WEBHOOK_PER_ENDPOINT for one
 * webhook (the dispatcher raises the HTTP client's limit per host, 8 by
 * default, to that): no more, and no fewer (the others wait for a lane,
 * not for the next claim's round trip). The claims that waited longer
 * than 2.5 s are released, their attempt count undone, so that every
 * event arrives once, on its first counted attempt. */
static void crowd_setup(void)
{
    receiver_start();
    const char *env[] = {"WEBHOOK_ALLOW_PRIVATE=true", "THREADS=1", "WEBHOOK_TIMEOUT_MS=10000", "WEBHOOK_POLL_MS=100",
                         NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

START_TEST(a_worker_keeps_a_webhook_busy_and_releases_the_claims_that_wait)
{
    char secret[128];
    long long hook = subscribe("/crowd", "[\"user.created\"]", "\"sleep_ms\": 3000", secret);
    enum { EVENTS = 2 * ROUTES_WEBHOOK_PER_ENDPOINT + 8 };
    _Static_assert(EVENTS <= ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT, "all leased at once");
    /* in one transaction: one at a time, on a loaded machine, they would
     * trickle in slower than the lanes free, and no claim need wait */
    emit_many("user.created", EVENTS);
    ck_assert_int_eq(wait_delivered(hook, EVENTS), EVENTS);
    json_t *stats = receiver("GET", "/_stats/crowd", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(stats, "max_in_flight")), ROUTES_WEBHOOK_PER_ENDPOINT);
    json_decref(stats);
    json_t *got = received("/crowd");
    ck_assert_int_eq(json_array_size(got), EVENTS);
    assert_all_verified(got);
    json_decref(got);
    char *sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld AND attempts <> 1", hook);
    ck_assert_int_eq(sql_int(sql), 0);
    free(sql);
    /* some claims were released: all leased at once, some run, the rest wait 3 s */
    test_response r;
    char *url = fmt("%s/metrics", server.base_url);
    test_http(&r, "GET", url, NULL, 0, NULL);
    const char *line = strstr(r.body, "\nh2pg_webhook_claims_released_total ");
    ck_assert_msg(line != NULL, "no h2pg_webhook_claims_released_total in /metrics");
    ck_assert_int_gt(atoll(line + strlen("\nh2pg_webhook_claims_released_total ")), 0);
    test_response_free(&r);
    free(url);
}
END_TEST

/* A webhook's cursor in the outbox moves when there is an event of its
 * types to deliver, or when it falls ROUTES_WEBHOOK_FANOUT_BATCH ids
 * behind: other types' events alone do not lock and update its row in
 * every pass. Its own events arrive either way. */
START_TEST(a_webhooks_cursor_moves_for_its_events_or_a_batch_behind)
{
    char secret[128];
    long long hook = subscribe("/cursor", "[\"order.created\"]", "", secret);
    char *cursor = fmt("SELECT fanned_to FROM webhooks WHERE id = %lld", hook);
    long long start = sql_int(cursor);
    for (int i = 0; i < 5; i++)
        emit("user.created");
    pause_ms(1000); /* passes at least every WEBHOOK_POLL_MS, 100 ms */
    ck_assert_int_eq(sql_int(cursor), start);
    emit("order.created");
    json_decref(wait_received("/cursor", 1));
    long long order = sql_int("SELECT max(id) FROM events WHERE type = 'order.created'");
    long long moved = sql_int(cursor);
    ck_assert_int_ge(moved, order);
    /* a batch and more of other events: the cursor follows in batches */
    emit_many("user.created", ROUTES_WEBHOOK_FANOUT_BATCH + 20);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    long long now = moved;
    while ((now = sql_int(cursor)) < moved + ROUTES_WEBHOOK_FANOUT_BATCH && mono_ms() < give_up)
        pause_ms(100);
    ck_assert_int_ge(now, moved + ROUTES_WEBHOOK_FANOUT_BATCH);
    emit("order.created");
    json_t *got = wait_received("/cursor", 2);
    ck_assert_int_eq(json_array_size(got), 2);
    assert_all_verified(got);
    json_decref(got);
    free(cursor);
}
END_TEST

/* The value of an unlabelled metric in /metrics; -1 if it is missing. */
static long long metric(const char *name)
{
    test_response r;
    char *url = fmt("%s/metrics", server.base_url);
    test_http(&r, "GET", url, NULL, 0, NULL);
    char *key = fmt("\n%s ", name);
    const char *line = strstr(r.body, key);
    long long v = line != NULL ? atoll(line + strlen(key)) : -1;
    free(key);
    test_response_free(&r);
    free(url);
    return v;
}

/* A receiver far slower than its events (each request held a minute): the
 * fan-out makes a webhook's deliveries only as the worker leases them, so
 * the backlog waits in the outbox as events, not as thousands of pending
 * delivery rows (before migration 0014 every event had its row at once,
 * and the API paid for each). The worker holds ROUTES_WEBHOOK_CLAIMED_-
 * PER_ENDPOINT; every 2.5 s the claims still waiting for a lane are
 * released, and as many new ones may be made: the rows stay within that
 * bound, far below the events. The oldest-undelivered gauge counts the
 * events that wait in the outbox. */
START_TEST(a_slow_webhooks_backlog_waits_in_the_outbox)
{
    char secret[128];
    long long hook = subscribe("/backlog", "[\"user.created\"]", "\"sleep_ms\": 60000", secret);
    enum { EVENTS = 3000, WAITING = ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT - ROUTES_WEBHOOK_PER_ENDPOINT };
    int64_t start = mono_ms();
    emit_many("user.created", EVENTS);
    json_decref(wait_received("/backlog", ROUTES_WEBHOOK_PER_ENDPOINT));
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    long long oldest;
    while ((oldest = metric("h2pg_webhook_oldest_pending_seconds")) < 2 && mono_ms() < give_up)
        pause_ms(200);
    ck_assert_int_ge(oldest, 2);
    char *sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld", hook);
    long long rows = sql_int(sql);
    free(sql);
    long long bound = ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT + WAITING * ((mono_ms() - start) / 2500 + 1);
    ck_assert_msg(rows <= bound && rows < EVENTS, "%lld delivery rows for %d events (bound %lld)", rows, EVENTS,
                  bound);
}
END_TEST

/* More events than a worker may hold of one webhook, to a receiver that
 * takes 300 ms: what did not fit waits in the outbox and is fanned out as
 * lanes finish; every event arrives exactly once, on its first attempt. */
START_TEST(a_backlog_beyond_what_a_worker_holds_arrives_once)
{
    char secret[128];
    long long hook = subscribe("/beyond", "[\"user.created\"]", "\"sleep_ms\": 300", secret);
    enum { EVENTS = 2 * ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT + 44 };
    emit_many("user.created", EVENTS);
    ck_assert_int_eq(wait_delivered(hook, EVENTS), EVENTS);
    char *sql = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld AND attempts <> 1", hook);
    ck_assert_int_eq(sql_int(sql), 0);
    free(sql);
    sql = fmt("SELECT count(DISTINCT event_id) FROM webhook_deliveries WHERE webhook_id = %lld", hook);
    ck_assert_int_eq(sql_int(sql), EVENTS);
    free(sql);
    json_t *got = received("/beyond");
    ck_assert_int_eq(json_array_size(got), EVENTS);
    assert_all_verified(got);
    ck_assert_int_eq(distinct_webhook_ids(got), EVENTS);
    json_decref(got);
}
END_TEST

/* EVENTS_RETENTION_S of 10 s (the pruners pass every 2.5 s), retries far
 * off: a failed delivery stays pending through the test. */
static void retention_setup(void)
{
    receiver_start();
    const char *env[] = {"WEBHOOK_ALLOW_PRIVATE=true", "EVENTS_RETENTION_S=10", "WEBHOOK_POLL_MS=100",
                         "WEBHOOK_RETRY_BASE_MS=600000", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

/* The deliveries of events past the retention are deleted once settled,
 * with the events (before, they were kept for ever: 5,000 rows a second
 * under bench/webhooks.sh); a pending one stays for its retry, and a
 * fresh event's delivery stays. */
START_TEST(settled_deliveries_go_with_their_events_and_pending_ones_stay)
{
    char ok_secret[128], bad_secret[128];
    long long ok = subscribe("/kept-ok", "[\"user.created\"]", "", ok_secret);
    long long bad = subscribe("/kept-500", "[\"user.created\"]", "\"status\": 500", bad_secret);
    enum { EVENTS = 3 };
    for (int i = 0; i < EVENTS; i++)
        emit("user.created");
    ck_assert_int_eq(wait_delivered(ok, EVENTS), EVENTS);
    char *failed_once = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld AND state = 'pending' "
                            "AND attempts = 1 AND lease_until IS NULL",
                            bad);
    int64_t give_up = mono_ms() + OUTCOME_WAIT_MS;
    while (sql_int(failed_once) < EVENTS && mono_ms() < give_up)
        pause_ms(100);
    ck_assert_int_eq(sql_int(failed_once), EVENTS);
    char *kept_ok = fmt("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %lld", ok);
    give_up = mono_ms() + 2 * OUTCOME_WAIT_MS;
    while ((sql_int("SELECT count(*) FROM events") > 0 || sql_int(kept_ok) > 0) && mono_ms() < give_up)
        pause_ms(250);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events"), 0);
    ck_assert_int_eq(sql_int(kept_ok), 0);
    ck_assert_int_eq(sql_int(failed_once), EVENTS);
    emit("user.created");
    ck_assert_int_eq(wait_delivered(ok, 1), 1);
    ck_assert_int_eq(sql_int(kept_ok), 1);
    free(kept_ok);
    free(failed_once);
}
END_TEST

static Suite *webhooks_suite(void)
{
    Suite *s = suite_create("webhooks");
    TCase *tc = tcase_create("routes and delivery");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, create_read_list_delete);
    tcase_add_test(tc, bad_input_is_refused);
    tcase_add_test(tc, an_event_is_delivered_signed);
    tcase_add_test(tc, a_webhook_gets_only_events_after_it_exists);
    tcase_add_test(tc, a_500_is_retried_with_the_same_webhook_id);
    tcase_add_test(tc, attempts_run_out_then_failed);
    tcase_add_test(tc, a_410_disables_the_webhook);
    tcase_add_test(tc, a_receiver_that_is_down_is_retried);
    tcase_add_test(tc, a_slow_receiver_times_out_and_is_retried);
    tcase_add_test(tc, delete_drops_pending_deliveries);
    tcase_add_test(tc, delete_drops_what_a_concurrent_fanout_made);
    tcase_add_test(tc, a_deliveries_page_starts_after_any_id);
    tcase_add_test(tc, a_webhooks_cursor_moves_for_its_events_or_a_batch_behind);
    tcase_add_test(tc, ping_reports_the_receivers_status);
    tcase_add_test(tc, a_ping_whose_client_goes_away_is_cancelled);
    suite_add_tcase(s, tc);

    tc = tcase_create("crashes and replicas");
    tcase_add_checked_fixture(tc, kill_setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_delivery_survives_a_killed_process);
    tcase_add_test(tc, three_replicas_deliver_every_event);
    suite_add_tcase(s, tc);

    tc = tcase_create("woken");
    tcase_add_checked_fixture(tc, woken_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_numbered_event_wakes_the_dispatcher);
    suite_add_tcase(s, tc);

    tc = tcase_create("a hanging receiver");
    tcase_add_checked_fixture(tc, patient_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_hanging_receiver_does_not_hold_up_other_webhooks);
    suite_add_tcase(s, tc);

    tc = tcase_create("a crowd of deliveries");
    tcase_add_checked_fixture(tc, crowd_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_worker_keeps_a_webhook_busy_and_releases_the_claims_that_wait);
    tcase_add_test(tc, a_slow_webhooks_backlog_waits_in_the_outbox);
    tcase_add_test(tc, a_backlog_beyond_what_a_worker_holds_arrives_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("retention");
    tcase_add_checked_fixture(tc, retention_setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, settled_deliveries_go_with_their_events_and_pending_ones_stay);
    suite_add_tcase(s, tc);

    tc = tcase_create("ssrf");
    tcase_add_checked_fixture(tc, private_setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, private_addresses_are_never_reached);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(webhooks_suite()); }
