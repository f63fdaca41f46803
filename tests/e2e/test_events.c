/* The transactional outbox (API.md, "Events, webhooks and the event
 * stream"; migrations/0006_events.sql, 0007_event_resources.sql;
 * routes/events_outbox.h): every committed creation writes exactly one
 * event, in its own transaction, whose data is the resource as its GET
 * returns it; a request that fails, or an Idempotency-Key replay, writes
 * none; event ids follow commit order (the sequencer numbers what
 * committed: migrations/0008), and a writer waits for no other; events
 * older than EVENTS_RETENTION_S are deleted by worker 0, a batch at a
 * time.
 *
 * The events table is read directly (GET /events is test_sse's), once the
 * server's sequencer has numbered every pending entry. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#define PASS_LINE "events: pruning pass done"
#define PRUNED_LINE "events: pruned "
#define OLD_EVENTS 2500 /* more than two of the pruner's batches of 1000 */

static char *db;
static test_server server;

static void setup(void) { test_server_start_on_fresh_db(&server, &db, NULL); }

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

static long long sql_int(const char *sql)
{
    PGconn *c = test_pg_connect(db);
    long long v = test_pg_int(c, sql);
    PQfinish(c);
    return v;
}

static void sql_exec(const char *sql)
{
    PGconn *c = test_pg_connect(db);
    test_pg_exec(c, sql);
    PQfinish(c);
}

/* method path [body]: the response, with the expected status asserted. */
static void call(test_response *r, const char *method, const char *path, const char *body, const char *key,
                 long status)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", server.base_url, path);
    char *key_line = key != NULL ? fmt("Idempotency-Key: %s", key) : NULL;
    const char *headers[] = {"Content-Type: application/json", key_line, NULL};
    test_http(r, method, url, body, body != NULL ? strlen(body) : 0, headers);
    free(key_line);
    ck_assert_msg(r->status == status, "%s %s %s: %ld (expected %ld) %s", method, path, body ? body : "", r->status,
                  status, r->body);
}

/* POST that must be 201: the created resource (new reference). */
static json_t *create(const char *path, const char *body, const char *key)
{
    test_response r;
    call(&r, "POST", path, body, key, 201);
    json_t *j = test_response_json(&r);
    test_response_free(&r);
    return j;
}

/* GET that must be 200: the body (new reference). */
static json_t *get(const char *path)
{
    test_response r;
    call(&r, "GET", path, NULL, NULL, 200);
    json_t *j = test_response_json(&r);
    test_response_free(&r);
    return j;
}

static long long id_of(const json_t *resource) { return (long long)json_integer_value(json_object_get(resource, "id")); }

/* Once the running server's sequencer has numbered every committed
 * event (it is woken by each commit; 30 s for a loaded machine). */
static void settled(void)
{
    long long pending = -1;
    for (int i = 0; i < 3000 && (pending = sql_int("SELECT count(*) FROM events_pending")) > 0; i++)
        sleep_ms(10);
    ck_assert_msg(pending == 0, "%lld events still pending after 30 s", pending);
}

/* Every event, by id: an array of {"id","type","data"} (new reference). */
static json_t *events(void)
{
    settled();
    PGconn *c = test_pg_connect(db);
    PGresult *res = PQexec(c, "SELECT id, type, data::text, "
                              "created_at > now() - interval '1 hour' FROM events ORDER BY id");
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    json_t *all = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *data = json_loads(PQgetvalue(res, i, 2), 0, NULL);
        ck_assert_ptr_nonnull(data);
        ck_assert_str_eq(PQgetvalue(res, i, 3), "t");
        json_array_append_new(all, json_pack("{s:I, s:s, s:o}", "id", (json_int_t)atoll(PQgetvalue(res, i, 0)),
                                             "type", PQgetvalue(res, i, 1), "data", data));
    }
    PQclear(res);
    PQfinish(c);
    return all;
}

static long long event_count(void)
{
    settled();
    return sql_int("SELECT count(*) FROM events");
}

/* The event at index i has the type, data equal to resource, and an id
 * above the one before it. */
static void assert_event(const json_t *all, size_t i, const char *type, const json_t *resource)
{
    ck_assert_uint_gt(json_array_size(all), i);
    const json_t *e = json_array_get(all, i);
    ck_assert_str_eq(json_string_value(json_object_get(e, "type")), type);
    const json_t *data = json_object_get(e, "data");
    char *want = json_dumps(resource, JSON_SORT_KEYS | JSON_COMPACT), *got = json_dumps(data, JSON_SORT_KEYS | JSON_COMPACT);
    ck_assert_msg(json_equal(data, resource), "event %zu (%s): data %s, the GET says %s", i, type, got, want);
    free(want);
    free(got);
    if (i > 0)
        ck_assert_int_gt(json_integer_value(json_object_get(e, "id")),
                         json_integer_value(json_object_get(json_array_get(all, i - 1), "id")));
}

/* ======================= the writers ======================= */

START_TEST(each_creation_writes_one_event_whose_data_is_what_its_get_returns)
{
    json_t *user = create("/users", "{\"name\":\"Ada\",\"email\":\"ada@events.test\"}", NULL);
    char *path = fmt("/users/%lld/orders", id_of(user));
    json_t *order = create(path, "{\"item\":\"pen\",\"quantity\":3,\"price_cents\":150}", NULL);
    free(path);
    char *body = fmt("{\"user_id\":%lld,\"balance_cents\":1000}", id_of(user));
    json_t *from = create("/accounts", body, NULL);
    free(body);
    body = fmt("{\"user_id\":%lld,\"balance_cents\":0}", id_of(user));
    json_t *to = create("/accounts", body, NULL);
    free(body);
    /* the accounts as their GET returned them at creation, before the
     * transfer changes their balances */
    path = fmt("/accounts/%lld", id_of(from));
    json_t *from_get = get(path);
    free(path);
    path = fmt("/accounts/%lld", id_of(to));
    json_t *to_get = get(path);
    free(path);
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":250}", id_of(from), id_of(to));
    json_t *transfer = create("/transfers", body, NULL);
    free(body);

    path = fmt("/users/%lld", id_of(user));
    json_t *user_get = get(path);
    free(path);
    path = fmt("/orders/%lld", id_of(order));
    json_t *order_get = get(path);
    free(path);
    path = fmt("/transfers/%lld", id_of(transfer));
    json_t *transfer_get = get(path);
    free(path);

    json_t *all = events();
    ck_assert_uint_eq(json_array_size(all), 5);
    assert_event(all, 0, "user.created", json_object_get(user_get, "user"));
    assert_event(all, 1, "order.created", order_get);
    assert_event(all, 2, "account.created", from_get);
    assert_event(all, 3, "account.created", to_get);
    assert_event(all, 4, "transfer.created", transfer_get);
    /* and what each POST answered */
    assert_event(all, 0, "user.created", user);
    assert_event(all, 1, "order.created", order);
    assert_event(all, 2, "account.created", from);
    assert_event(all, 4, "transfer.created", transfer);

    json_decref(all);
    json_decref(transfer_get);
    json_decref(order_get);
    json_decref(user_get);
    json_decref(transfer);
    json_decref(to_get);
    json_decref(from_get);
    json_decref(to);
    json_decref(from);
    json_decref(order);
    json_decref(user);
}
END_TEST

/* POST that must be 201: the new resource's id. */
static long long create_id(const char *path, const char *body)
{
    json_t *j = create(path, body, NULL);
    long long id = id_of(j);
    json_decref(j);
    return id;
}

/* Every event's owners (migrations/0011), as "type owner other" lines in
 * id order, 0 for none. */
static char *owners(void)
{
    settled();
    PGconn *c = test_pg_connect(db);
    PGresult *res = PQexec(c, "SELECT string_agg(type || ' ' || coalesce(owner_id, 0) || ' ' || "
                              "coalesce(other_owner_id, 0), E'\\n' ORDER BY id) FROM events");
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    char *s = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return s;
}

/* GET /events shows a user the events about itself, its orders and
 * accounts and the transfers that touch its accounts: each event names
 * those users, passed by the service's writers, worked out from the data
 * by events_emit(type, data) for any other writer. */
START_TEST(each_event_names_the_users_it_belongs_to)
{
    json_t *u = create("/users", "{\"name\":\"U\",\"email\":\"u@events.test\"}", NULL);
    json_t *v = create("/users", "{\"name\":\"V\",\"email\":\"v@events.test\"}", NULL);
    long long iu = id_of(u), iv = id_of(v);
    char *body = fmt("{\"user_id\":%lld,\"balance_cents\":1000}", iu);
    long long au = create_id("/accounts", body), au2 = create_id("/accounts", body);
    free(body);
    body = fmt("{\"user_id\":%lld,\"balance_cents\":0}", iv);
    long long av = create_id("/accounts", body);
    free(body);
    char *path = fmt("/users/%lld/orders", iv);
    json_decref(create(path, "{\"item\":\"pen\",\"quantity\":1,\"price_cents\":1}", NULL));
    free(path);
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":5}", au, av);
    json_decref(create("/transfers", body, NULL));
    free(body);
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":5}", au, au2);
    json_decref(create("/transfers", body, "owners-key")); /* through the Idempotency-Key statement */
    free(body);
    /* writers that pass no owners */
    char *sql = fmt("SELECT events_emit('transfer.created', jsonb_build_object('from_account_id', %lld, "
                    "'to_account_id', %lld)), events_emit('order.created', '{\"user_id\": %lld}'), "
                    "events_emit('user.created', '{\"id\": \"not a number\"}'), events_emit('other', '{\"id\": 1}')",
                    av, au, iv);
    sql_exec(sql);
    free(sql);

    char *got = owners();
    char *want = fmt("user.created %lld 0\nuser.created %lld 0\naccount.created %lld 0\naccount.created %lld 0\n"
                     "account.created %lld 0\norder.created %lld 0\ntransfer.created %lld %lld\n"
                     "transfer.created %lld 0\ntransfer.created %lld %lld\norder.created %lld 0\n"
                     "user.created 0 0\nother 0 0",
                     iu, iv, iu, iu, iv, iv, iu, iv, iu, iv, iu, iv);
    ck_assert_str_eq(got, want);
    free(want);
    free(got);
    json_decref(v);
    json_decref(u);
}
END_TEST

START_TEST(a_failed_request_writes_no_event_and_a_replay_none_again)
{
    json_t *user = create("/users", "{\"name\":\"Bo\",\"email\":\"bo@events.test\"}", NULL);
    char *body = fmt("{\"user_id\":%lld,\"balance_cents\":100}", id_of(user));
    json_t *a = create("/accounts", body, NULL);
    free(body);
    body = fmt("{\"user_id\":%lld,\"balance_cents\":0}", id_of(user));
    json_t *b = create("/accounts", body, NULL);
    free(body);
    long long before = event_count();
    ck_assert_int_eq(before, 3);

    test_response r;
    /* a duplicate email, compared case-insensitively */
    call(&r, "POST", "/users", "{\"name\":\"Bo again\",\"email\":\"BO@events.test\"}", NULL, 409);
    test_response_free(&r);
    /* an order for a user that does not exist */
    call(&r, "POST", "/users/987654321/orders", "{\"item\":\"pen\",\"quantity\":1,\"price_cents\":1}", NULL, 404);
    test_response_free(&r);
    /* an account for a user that does not exist */
    call(&r, "POST", "/accounts", "{\"user_id\":987654321,\"balance_cents\":1}", NULL, 404);
    test_response_free(&r);
    /* insufficient funds, with and without a key */
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":101}", id_of(a), id_of(b));
    call(&r, "POST", "/transfers", body, NULL, 422);
    test_response_free(&r);
    call(&r, "POST", "/transfers", body, "events-poor", 422);
    test_response_free(&r);
    free(body);
    /* the same account on both sides */
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":1}", id_of(a), id_of(a));
    call(&r, "POST", "/transfers", body, NULL, 422);
    test_response_free(&r);
    free(body);
    /* an account that does not exist */
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":987654321,\"amount_cents\":1}", id_of(a));
    call(&r, "POST", "/transfers", body, NULL, 404);
    test_response_free(&r);
    free(body);
    ck_assert_int_eq(event_count(), before);

    /* one keyed transfer sent twice: one transfer, one event */
    body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":40}", id_of(a), id_of(b));
    json_t *first = create("/transfers", body, "events-once");
    json_t *again = create("/transfers", body, "events-once");
    free(body);
    ck_assert_int_eq(id_of(again), id_of(first));
    ck_assert_int_eq(sql_int("SELECT count(*) FROM transfers"), 1);
    ck_assert_int_eq(event_count(), before + 1);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events WHERE type = 'transfer.created'"), 1);
    char *path = fmt("/transfers/%lld", id_of(first));
    json_t *got = get(path);
    free(path);
    json_t *all = events();
    assert_event(all, (size_t)before, "transfer.created", got);

    json_decref(all);
    json_decref(got);
    json_decref(again);
    json_decref(first);
    json_decref(b);
    json_decref(a);
    json_decref(user);
}
END_TEST

/* ======================= ids in commit order ======================= */

/* A writer that has emitted but not committed holds up nobody: a second
 * writer commits at once. Its event is numbered first; the first
 * writer's, numbered when it commits, gets the larger id. So ids follow
 * commit order, not the order the writers began in, and a reader that has
 * seen an id has seen every smaller one that will ever exist. */
START_TEST(a_writer_waits_for_no_other_and_ids_follow_commit_order)
{
    PGconn *a = test_pg_connect(db), *b = test_pg_connect(db);
    test_pg_exec(a, "BEGIN");
    test_pg_exec(a, "SELECT events_emit('user.created', '{\"writer\":\"a\"}')");
    ck_assert_int_eq(PQsendQuery(b, "SELECT events_emit('user.created', '{\"writer\":\"b\"}')"), 1);
    /* b must not wait for a (it did, with 0006's lock): 30 s on a slow machine */
    for (int i = 0; i < 3000; i++) {
        ck_assert_int_eq(PQconsumeInput(b), 1);
        if (!PQisBusy(b))
            break;
        sleep_ms(10);
    }
    ck_assert_msg(!PQisBusy(b), "the second writer waited for the first one's commit");
    PGresult *res = PQgetResult(b);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(b));
    PQclear(res);
    ck_assert_ptr_null(PQgetResult(b));
    /* b's event is numbered while a's is still uncommitted (invisible) */
    for (int i = 0; i < 3000 && sql_int("SELECT count(*) FROM events") < 1; i++)
        sleep_ms(10);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events"), 1);
    long long id_b = sql_int("SELECT id FROM events WHERE data->>'writer' = 'b'");
    test_pg_exec(a, "COMMIT");
    ck_assert_int_eq(event_count(), 2);
    long long id_a = sql_int("SELECT id FROM events WHERE data->>'writer' = 'a'");
    ck_assert_int_gt(id_a, id_b);
    PQfinish(b);
    PQfinish(a);
}
END_TEST

/* An entry that never commits is never numbered. */
START_TEST(a_rolled_back_writer_leaves_no_event)
{
    PGconn *a = test_pg_connect(db);
    test_pg_exec(a, "BEGIN");
    test_pg_exec(a, "SELECT events_emit('user.created', '{\"writer\":\"gone\"}')");
    test_pg_exec(a, "ROLLBACK");
    test_pg_exec(a, "SELECT events_emit('user.created', '{\"writer\":\"kept\"}')");
    ck_assert_int_eq(event_count(), 1);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events WHERE data->>'writer' = 'kept'"), 1);
    PQfinish(a);
}
END_TEST

/* ======================= retention ======================= */

static void insert_old_events(void)
{
    char *sql = fmt("INSERT INTO events (id, type, created_at, data) "
                    "SELECT nextval('events_id_seq'), 'user.created', now() - interval '2 hours' - g * interval '1 ms', "
                    "'{}' FROM generate_series(1, %d) g",
                    OLD_EVENTS);
    sql_exec(sql);
    free(sql);
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

static long long pruned_in_log(void)
{
    char *log = test_server_log(&server);
    long long sum = 0;
    for (const char *p = log; (p = strstr(p, PRUNED_LINE)) != NULL; p++)
        sum += atoll(p + strlen(PRUNED_LINE));
    free(log);
    return sum;
}

/* Polls (up to 30 s: a slow, loaded machine) until no event is older
 * than an hour; returns how many are left. */
static long long wait_old_events_gone(void)
{
    int64_t t0 = now_ms();
    long long left = -1;
    while (now_ms() - t0 < 30000) {
        left = sql_int("SELECT count(*) FROM events WHERE created_at < now() - interval '1 hour'");
        if (left == 0)
            break;
        sleep_ms(100);
    }
    return left;
}

/* Events that were old when the server started: its first pass, at start,
 * deletes them (a retention of an hour: the next pass is a minute away). */
static void at_start_setup(void)
{
    db = test_pg_create_db();
    char *url = fmt("DATABASE_URL=%s", db);
    const char *args[] = {"migrate", NULL}, *env[] = {url, NULL};
    char *out = NULL;
    int status = test_run_binary(args, env, &out);
    ck_assert_msg(status == 0, "h2pg migrate: %d %s", status, out);
    free(out);
    free(url);
    insert_old_events();
    sql_exec("SELECT events_emit('user.created', '{\"fresh\":true}')");
    const char *server_env[] = {"EVENTS_RETENTION_S=3600", "LOG_LEVEL=debug", NULL};
    test_server_start(&server, db, server_env);
}

START_TEST(events_older_than_the_retention_are_pruned_in_batches_at_start)
{
    settled();
    ck_assert_int_eq(wait_old_events_gone(), 0);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events WHERE data = '{\"fresh\":true}'"), 1);
    ck_assert_int_eq(event_count(), 1);
    ck_assert_msg(test_server_log_wait(&server, PASS_LINE, 30000), "no pruning pass logged");
    ck_assert_int_eq(pruned_in_log(), OLD_EVENTS);
    ck_assert_int_eq(count_in_log("pruning failed"), 0);
}
END_TEST

/* A retention of a minute: a pass every 15 s; events made old while the
 * server runs go at a later pass, a fresh one stays. */
static void periodic_setup(void)
{
    const char *env[] = {"EVENTS_RETENTION_S=60", "LOG_LEVEL=debug", NULL};
    test_server_start_on_fresh_db(&server, &db, env);
}

START_TEST(events_made_old_while_serving_are_pruned_at_a_later_pass_and_fresh_ones_stay)
{
    ck_assert_msg(test_server_log_wait(&server, PASS_LINE, 30000), "no pruning pass at start");
    json_t *user = create("/users", "{\"name\":\"Cy\",\"email\":\"cy@events.test\"}", NULL);
    settled();
    insert_old_events();
    ck_assert_int_eq(wait_old_events_gone(), 0);
    ck_assert_int_eq(event_count(), 1);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM events WHERE type = 'user.created' AND data ? 'email'"), 1);
    ck_assert_int_eq(pruned_in_log(), OLD_EVENTS);
    int status = test_server_stop(&server);
    ck_assert_msg(status == 0, "the server exited with %d", status);
    ck_assert_int_eq(count_in_log("pruning failed"), 0);
    json_decref(user);
}
END_TEST

static Suite *events_suite(void)
{
    Suite *s = suite_create("events");

    TCase *tc = tcase_create("writers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, each_creation_writes_one_event_whose_data_is_what_its_get_returns);
    tcase_add_test(tc, each_event_names_the_users_it_belongs_to);
    tcase_add_test(tc, a_failed_request_writes_no_event_and_a_replay_none_again);
    tcase_add_test(tc, a_writer_waits_for_no_other_and_ids_follow_commit_order);
    tcase_add_test(tc, a_rolled_back_writer_leaves_no_event);
    suite_add_tcase(s, tc);

    tc = tcase_create("retention at start");
    tcase_add_checked_fixture(tc, at_start_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, events_older_than_the_retention_are_pruned_in_batches_at_start);
    suite_add_tcase(s, tc);

    tc = tcase_create("retention while serving");
    tcase_add_checked_fixture(tc, periodic_setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, events_made_old_while_serving_are_pruned_at_a_later_pass_and_fresh_ones_stay);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(events_suite()); }
