/* The transfer invariant of API.md under load: many concurrent clients
 * moving money at random among a few accounts, so that the service's row
 * locks contend on every request. Afterwards the books must balance to the
 * cent: the sum of balances is the sum of the opening deposits, no balance
 * is negative, the transfers table holds exactly the transfers that were
 * answered 201, and each account's balance is its opening deposit plus what
 * came in minus what went out. While the clients run, a monitor reads the
 * balances again and again and checks the sum and the signs every time.
 *
 * A second variant sends every request twice with the same Idempotency-Key:
 * after a 201 the second answer must be the first one again, byte for byte;
 * after a 422 (which is not kept: it changed nothing) the second runs
 * afresh and is the same 422 or, if money came in meanwhile, a 201 of its
 * own. The table must hold one transfer per key that got 201, and
 * idempotency_keys one row per such key and no other.
 *
 * Each test has a database and a server of its own. The clients are threads,
 * each with its own libcurl handle (one kept-alive connection); they record
 * what happened and the test's thread does all the asserting. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

#define ACCOUNTS 5
#define CLIENTS 16
#define TRANSFERS_PER_CLIENT 400 /* 6,400 in all */
#define CLIENT_TIMEOUT_MS 30000L

static const long long opening[ACCOUNTS] = {100000, 60000, 30000, 10000, 1000};

/* ---- one test's world: a database, a server, five accounts ---- */

static char *db;
static test_server server;
static int64_t account_ids[ACCOUNTS];

static void world_setup(void)
{
    db = test_pg_create_db();
    /* debug: the service logs each transaction retry, which the test counts */
    const char *env[] = {"LOG_LEVEL=debug", NULL};
    test_server_start(&server, db, env);
    char url[128];
    snprintf(url, sizeof(url), "%s/users", server.base_url);
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_response r;
    static const char user[] = "{\"name\":\"bank\",\"email\":\"bank@transfers.test\"}";
    test_http(&r, "POST", url, user, strlen(user), headers);
    ck_assert_msg(r.status == 201, "POST /users: %ld %s", r.status, r.body);
    json_t *u = test_response_json(&r);
    long long user_id = json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    test_response_free(&r);
    snprintf(url, sizeof(url), "%s/accounts", server.base_url);
    for (int i = 0; i < ACCOUNTS; i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"user_id\":%lld,\"balance_cents\":%lld}", user_id, opening[i]);
        test_http(&r, "POST", url, body, strlen(body), headers);
        ck_assert_msg(r.status == 201, "POST /accounts: %ld %s", r.status, r.body);
        json_t *a = test_response_json(&r);
        account_ids[i] = json_integer_value(json_object_get(a, "id"));
        json_decref(a);
        test_response_free(&r);
    }
}

static void world_teardown(void)
{
    test_server_stop_and_drop_db(&server, &db);
}

/* ---- the clients ---- */

struct outcome {
    int from, to; /* indexes into account_ids */
    long long amount;
    long status;         /* of the request: the first answer, or the retry's 201 after a 422 */
    int64_t transfer_id; /* for a 201 */
    bool retried_into_201; /* idempotent: 422, then 201 when sent again */
};

struct client {
    pthread_t thread;
    int index;
    unsigned seed;
    bool idempotent;
    struct outcome out[TRANSFERS_PER_CLIENT];
    int done;
    char failure[1024]; /* the first thing that went wrong, or "" */
};

/* One POST /transfers on the client's handle; false (and *err set) on a
 * transport failure. */
static bool send_transfer(CURL *c, const char *body, const char *key_line, test_reply *rep, char *err, size_t errlen)
{
    rep->len = 0;
    rep->status = 0;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (key_line != NULL)
        h = curl_slist_append(h, key_line);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "transport: %s", curl_easy_strerror(rc));
        return false;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rep->status);
    if (rep->body == NULL)
        test_reply_write("", 1, 0, rep);
    return true;
}

/* Checks a 201 body against what was asked; returns the transfer id or 0. */
static int64_t check_created(const test_reply *rep, const struct outcome *o, char *err, size_t errlen)
{
    json_t *j = json_loadb(rep->body, rep->len, 0, NULL);
    int64_t id = 0;
    if (j != NULL && json_is_integer(json_object_get(j, "id")) &&
        json_integer_value(json_object_get(j, "from_account_id")) == account_ids[o->from] &&
        json_integer_value(json_object_get(j, "to_account_id")) == account_ids[o->to] &&
        json_integer_value(json_object_get(j, "amount_cents")) == o->amount)
        id = json_integer_value(json_object_get(j, "id"));
    else
        snprintf(err, errlen, "a 201 that is not the transfer asked for (%lld -> %lld, %lld): %.300s",
                 (long long)account_ids[o->from], (long long)account_ids[o->to], o->amount, rep->body);
    json_decref(j);
    return id;
}

static void *client_run(void *arg)
{
    struct client *cl = arg;
    char url[128];
    snprintf(url, sizeof(url), "%s/transfers", server.base_url);
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(cl->failure, sizeof(cl->failure), "curl_easy_init failed");
        return NULL;
    }
    test_reply first = {0}, second = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, CLIENT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    for (int i = 0; i < TRANSFERS_PER_CLIENT && cl->failure[0] == '\0'; i++) {
        struct outcome *o = &cl->out[i];
        o->from = rand_r(&cl->seed) % ACCOUNTS;
        o->to = (o->from + 1 + rand_r(&cl->seed) % (ACCOUNTS - 1)) % ACCOUNTS;
        /* mostly amounts the accounts can pay, now and then ones they cannot */
        o->amount = rand_r(&cl->seed) % 5 == 0 ? 1 + rand_r(&cl->seed) % 250000 : 1 + rand_r(&cl->seed) % 8000;
        char body[160], key[96];
        snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":%lld}",
                 (long long)account_ids[o->from], (long long)account_ids[o->to], o->amount);
        snprintf(key, sizeof(key), "Idempotency-Key: load-%d-%d-%u", cl->index, i, (unsigned)getpid());
        const char *key_line = cl->idempotent ? key : NULL;
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &first);
        if (!send_transfer(c, body, key_line, &first, cl->failure, sizeof(cl->failure)))
            break;
        o->status = first.status;
        const test_reply *created = &first;
        if (cl->idempotent) {
            curl_easy_setopt(c, CURLOPT_WRITEDATA, &second);
            if (!send_transfer(c, body, key_line, &second, cl->failure, sizeof(cl->failure)))
                break;
            bool same = second.status == first.status && second.len == first.len &&
                        memcmp(second.body, first.body, first.len) == 0;
            if (first.status == 422 && second.status == 201) {
                o->status = 201;
                o->retried_into_201 = true;
                created = &second;
            } else if (!same) {
                snprintf(cl->failure, sizeof(cl->failure), "%s: answered %ld %.300s, then %ld %.300s", key, first.status,
                         first.body, second.status, second.body);
            }
        }
        if (o->status == 201)
            o->transfer_id = check_created(created, o, cl->failure, sizeof(cl->failure));
        else if (o->status != 422)
            snprintf(cl->failure, sizeof(cl->failure), "%s: status %ld: %.300s", body, o->status, first.body);
        cl->done = i + 1;
    }
    free(second.body);
    free(first.body);
    curl_easy_cleanup(c);
    return NULL;
}

/* ---- the monitor: the invariant holds at every moment, not just at the end ---- */

struct monitor {
    pthread_t thread;
    atomic_bool stop;
    long long total;
    int samples;
    char failure[512];
};

static void *monitor_run(void *arg)
{
    struct monitor *m = arg;
    PGconn *c = PQconnectdb(db);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    while (!atomic_load(&m->stop) && m->failure[0] == '\0') {
        PGresult *r = PQexec(c, "SELECT sum(balance_cents)::text, min(balance_cents)::text FROM accounts");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQresultErrorMessage(r));
        } else {
            long long sum = atoll(PQgetvalue(r, 0, 0)), min = atoll(PQgetvalue(r, 0, 1));
            if (sum != m->total || min < 0)
                snprintf(m->failure, sizeof(m->failure),
                         "mid-run sample %d: the balances sum to %lld (expected %lld), the smallest is %lld", m->samples,
                         sum, m->total, min);
            m->samples++;
        }
        PQclear(r);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    PQfinish(c);
    return NULL;
}

/* ---- the books ---- */

static int cmp_outcome_id(const void *a, const void *b)
{
    int64_t x = (*(const struct outcome *const *)a)->transfer_id, y = (*(const struct outcome *const *)b)->transfer_id;
    return x < y ? -1 : x > y;
}

static int account_index(int64_t id)
{
    for (int i = 0; i < ACCOUNTS; i++)
        if (account_ids[i] == id)
            return i;
    ck_abort_msg("account %lld is not one of the test's", (long long)id);
    return -1;
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

/* Runs the clients (and the monitor), then checks the books. */
static void run_and_audit(bool idempotent)
{
    long long total = 0;
    for (int i = 0; i < ACCOUNTS; i++)
        total += opening[i];
    ck_assert_msg(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK, "curl_global_init");

    struct monitor mon = {.total = total};
    atomic_init(&mon.stop, false);
    ck_assert_int_eq(pthread_create(&mon.thread, NULL, monitor_run, &mon), 0);
    struct client *clients = calloc(CLIENTS, sizeof(*clients));
    ck_assert_ptr_nonnull(clients);
    unsigned base_seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < CLIENTS; i++) {
        clients[i].index = i;
        clients[i].seed = base_seed + (unsigned)i * 7919u;
        clients[i].idempotent = idempotent;
        ck_assert_int_eq(pthread_create(&clients[i].thread, NULL, client_run, &clients[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i].thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&mon.stop, true);
    pthread_join(mon.thread, NULL);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    /* what the clients saw */
    size_t requests = 0, created = 0, retried_into_201 = 0;
    for (int i = 0; i < CLIENTS; i++) {
        ck_assert_msg(clients[i].failure[0] == '\0', "client %d (seed %u), request %d: %s", i, clients[i].seed,
                      clients[i].done + 1, clients[i].failure);
        ck_assert_int_eq(clients[i].done, TRANSFERS_PER_CLIENT);
        requests += (size_t)clients[i].done;
        for (int k = 0; k < clients[i].done; k++) {
            created += clients[i].out[k].status == 201;
            retried_into_201 += clients[i].out[k].retried_into_201;
        }
    }
    ck_assert_msg(mon.failure[0] == '\0', "%s", mon.failure);
    ck_assert_msg(created > requests / 10 && created < requests, "%zu of %zu transfers got 201: the load did not mix "
                  "successes and refusals", created, requests);

    struct outcome **ok = calloc(created, sizeof(*ok));
    ck_assert_ptr_nonnull(ok);
    size_t n = 0;
    for (int i = 0; i < CLIENTS; i++)
        for (int k = 0; k < clients[i].done; k++)
            if (clients[i].out[k].status == 201)
                ok[n++] = &clients[i].out[k];
    qsort(ok, n, sizeof(*ok), cmp_outcome_id);
    for (size_t i = 1; i < n; i++)
        ck_assert_msg(ok[i]->transfer_id != ok[i - 1]->transfer_id, "transfer id %lld was answered 201 twice",
                      (long long)ok[i]->transfer_id);

    /* the table holds exactly those */
    PGconn *c = test_pg_connect(db);
    PGresult *res = PQexec(c, "SELECT id, from_account_id, to_account_id, amount_cents FROM transfers ORDER BY id");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_msg((size_t)PQntuples(res) == n, "the transfers table holds %d rows; %zu requests got 201", PQntuples(res),
                  n);
    long long in[ACCOUNTS] = {0}, out[ACCOUNTS] = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t id = atoll(PQgetvalue(res, i, 0));
        int from = account_index(atoll(PQgetvalue(res, i, 1))), to = account_index(atoll(PQgetvalue(res, i, 2)));
        long long amount = atoll(PQgetvalue(res, i, 3));
        ck_assert_msg(id == ok[i]->transfer_id, "row %d of the table is transfer %lld; the %d-th 201 was %lld", i,
                      (long long)id, i, (long long)ok[i]->transfer_id);
        ck_assert_msg(from == ok[i]->from && to == ok[i]->to && amount == ok[i]->amount,
                      "transfer %lld in the table differs from its 201", (long long)id);
        out[from] += amount;
        in[to] += amount;
    }
    PQclear(res);

    /* and the balances are what those transfers make of the deposits */
    res = PQexec(c, "SELECT id, balance_cents FROM accounts ORDER BY id");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(res), ACCOUNTS);
    long long sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int a = account_index(atoll(PQgetvalue(res, i, 0)));
        long long balance = atoll(PQgetvalue(res, i, 1));
        ck_assert_msg(balance >= 0, "account %lld ends at %lld", (long long)account_ids[a], balance);
        ck_assert_msg(balance == opening[a] + in[a] - out[a],
                      "account %lld: opened with %lld, took in %lld, paid out %lld, but holds %lld",
                      (long long)account_ids[a], opening[a], in[a], out[a], balance);
        sum += balance;
    }
    PQclear(res);
    ck_assert_msg(sum == total, "the balances sum to %lld, the deposits to %lld", sum, total);

    long long kept = 0;
    if (idempotent) {
        /* a stored outcome per key that made a transfer, and none for the
         * refusals: they changed nothing */
        kept = test_pg_int(c, "SELECT count(*) FROM idempotency_keys");
        ck_assert_msg(kept == (long long)n, "idempotency_keys holds %lld rows for %zu keys that made a transfer (%zu "
                      "requests)", kept, n, requests);
        ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM idempotency_keys WHERE status = 201"), (long long)n);
    }
    PQfinish(c);

    fprintf(stderr,
            "%s: %zu requests%s from %d clients in %.1f s: %zu transfers (201%s), %zu refused (422); "
            "%d mid-run samples of the balances; %d transaction retries logged",
            idempotent ? "idempotent" : "plain", requests, idempotent ? " (each sent twice)" : "", CLIENTS, secs, n,
            idempotent && retried_into_201 ? ", some on the second try" : "", requests - n, mon.samples,
            count_in_log("transaction retry"));
    if (idempotent)
        fprintf(stderr, "; %zu refusals became 201 when sent again; idempotency_keys rows: %lld", retried_into_201,
                kept);
    fputc('\n', stderr);
    free(ok);
    free(clients);
}

START_TEST(concurrent_random_transfers_keep_the_books_balanced)
{
    run_and_audit(false);
}
END_TEST

START_TEST(concurrent_transfers_each_sent_twice_with_one_key_move_money_once_per_key)
{
    run_and_audit(true);
}
END_TEST

static Suite *transfers_suite(void)
{
    Suite *s = suite_create("transfers");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, world_setup, world_teardown);
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, concurrent_random_transfers_keep_the_books_balanced);
    tcase_add_test(tc, concurrent_transfers_each_sent_twice_with_one_key_move_money_once_per_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(transfers_suite());
}
