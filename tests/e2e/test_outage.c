/* Database outages under load (issue 5, "Database outage"; API.md, the
 * transfer invariant "under any load and any fault"): PostgreSQL crashes
 * (pg_ctl stop -m immediate) or restarts (pg_ctl restart -m fast) while
 * eight clients move money between a few accounts as fast as they can.
 *
 * During the outage requests get 503, every request ends within its
 * deadline plus slack (never a hang), /readyz turns 503 and /healthz stays
 * 200; once PostgreSQL is back the pool reconnects by itself (/readyz 200,
 * transfers 201 again) without a restart of the service. Afterwards the
 * books balance: the sum of the balances is the opening deposits, no balance
 * is negative, each balance is its deposit plus what the transfers table
 * moved in and out, and every transfer a client was told 201 about is in the
 * table exactly once (one answered 5xx may or may not be there). The
 * service never holds more than POOL_MAX connections (h2pg_db_pool_open,
 * sampled every second, and pg_stat_activity at the end).
 *
 * PostgreSQL is the test's own (tests/support/pgctl.c), not the shared one
 * of scripts/with-postgres.sh, on a port that stays the same across
 * restarts so the service's DATABASE_URL stays valid. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pgctl.h"
#include "support/server.h"
#include "support/suite.h"

#define ACCOUNTS 4
#define OPENING 1000000LL
#define CLIENTS 8
#define POOL_MAX 8
#define REQUEST_TIMEOUT_MS 2000
#define SLACK_MS 3000     /* on top of the deadline: a request slower than that hung */
#define OUTAGE_MS 2000    /* how long PostgreSQL stays down */
#define RECOVER_MS 20000  /* "within a few seconds", generously */
#define WATCH_EVERY_MS 25 /* /readyz and /healthz */

/* ---- the world: a PostgreSQL of our own, a database, a server, accounts ---- */

static test_pgctl pg;
static char *db;
static test_server srv;
static int64_t account_ids[ACCOUNTS];

static int64_t post_for_id(const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", srv.base_url, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_response r;
    test_http(&r, "POST", url, body, strlen(body), headers);
    ck_assert_msg(r.status == 201, "POST %s: %ld %.300s", path, r.status, r.body);
    json_t *j = test_response_json(&r);
    int64_t id = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    test_response_free(&r);
    return id;
}

static void world_start(void)
{
    test_pgctl_create(&pg);
    db = test_pgctl_create_db(&pg);
    char pool_max[32], timeout[48];
    snprintf(pool_max, sizeof(pool_max), "POOL_MAX=%d", POOL_MAX);
    snprintf(timeout, sizeof(timeout), "REQUEST_TIMEOUT_MS=%d", REQUEST_TIMEOUT_MS);
    const char *env[] = {pool_max, timeout, "THREADS=2", "MIGRATE_ON_START=true", NULL};
    test_server_start(&srv, db, env);
    int64_t user = post_for_id("/users", "{\"name\":\"bank\",\"email\":\"bank@outage.test\"}");
    for (int i = 0; i < ACCOUNTS; i++) {
        char body[96];
        snprintf(body, sizeof(body), "{\"user_id\":%lld,\"balance_cents\":%lld}", (long long)user, OPENING);
        account_ids[i] = post_for_id("/accounts", body);
    }
}

static void world_end(void)
{
    if (srv.pid > 0)
        test_server_stop(&srv);
    free(db);
    db = NULL;
    test_pgctl_destroy(&pg);
}

/* ---- the load ---- */

struct record {
    int64_t start, end; /* now_us() */
    long status;        /* 0: a transport failure */
    int from, to;       /* indexes into account_ids */
    long long amount;
    int64_t transfer_id; /* for a 201 */
};

struct client {
    pthread_t thread;
    int index;
    unsigned seed;
    struct record *rec;
    size_t n, cap;
    char failure[512]; /* the first thing that went wrong, or "" */
};

static atomic_bool load_stop;
static atomic_llong created;       /* 201s so far */
static atomic_llong created_after; /* 201s of requests sent after back_at */
static atomic_llong back_at;       /* now_us() when PostgreSQL was back; 0 before */

/* The id of a 201 that is the transfer asked for, else 0 (failure set). */
static int64_t created_id(const test_reply *rep, const struct record *o, char *failure, size_t cap)
{
    json_t *j = json_loadb(rep->body ? rep->body : "", rep->len, 0, NULL);
    int64_t id = 0;
    if (j != NULL && json_is_integer(json_object_get(j, "id")) &&
        json_integer_value(json_object_get(j, "from_account_id")) == account_ids[o->from] &&
        json_integer_value(json_object_get(j, "to_account_id")) == account_ids[o->to] &&
        json_integer_value(json_object_get(j, "amount_cents")) == o->amount)
        id = json_integer_value(json_object_get(j, "id"));
    else
        snprintf(failure, cap, "a 201 that is not the transfer asked for: %.300s", rep->body ? rep->body : "");
    json_decref(j);
    return id;
}

static void *client_run(void *arg)
{
    struct client *cl = arg;
    char url[128];
    snprintf(url, sizeof(url), "%s/transfers", srv.base_url);
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(cl->failure, sizeof(cl->failure), "curl_easy_init failed");
        return NULL;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    test_reply rep = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(REQUEST_TIMEOUT_MS + SLACK_MS));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rep);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    while (!atomic_load(&load_stop) && cl->failure[0] == '\0') {
        if (cl->n == cl->cap) {
            size_t cap = cl->cap ? cl->cap * 2 : 1024;
            struct record *r = realloc(cl->rec, cap * sizeof(*r));
            if (r == NULL) {
                snprintf(cl->failure, sizeof(cl->failure), "out of memory");
                break;
            }
            cl->rec = r;
            cl->cap = cap;
        }
        struct record *o = &cl->rec[cl->n];
        memset(o, 0, sizeof(*o));
        o->from = rand_r(&cl->seed) % ACCOUNTS;
        o->to = (o->from + 1 + rand_r(&cl->seed) % (ACCOUNTS - 1)) % ACCOUNTS;
        o->amount = 1 + rand_r(&cl->seed) % 100; /* never more than an account holds */
        char body[160];
        snprintf(body, sizeof(body), "{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":%lld}",
                 (long long)account_ids[o->from], (long long)account_ids[o->to], o->amount);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        rep.len = 0;
        o->start = now_us();
        CURLcode rc = curl_easy_perform(c);
        o->end = now_us();
        cl->n++;
        if (rc != CURLE_OK) {
            snprintf(cl->failure, sizeof(cl->failure), "request %zu: %s after %.0f ms", cl->n, curl_easy_strerror(rc),
                     (double)(o->end - o->start) / 1000.0);
            break;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &o->status);
        if (o->status == 201) {
            o->transfer_id = created_id(&rep, o, cl->failure, sizeof(cl->failure));
            atomic_fetch_add(&created, 1);
            long long back = atomic_load(&back_at);
            if (back != 0 && o->start >= back)
                atomic_fetch_add(&created_after, 1);
        } else {
            sleep_ms(10); /* a client that backs off a little, not a busy loop */
        }
    }
    free(rep.body);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* ---- the watcher: /readyz, /healthz and the pool's size, all along ---- */

struct sample {
    int64_t at;
    long status; /* 0: no answer */
    double ms;
};

struct watcher {
    pthread_t thread;
    atomic_bool stop;
    struct sample *readyz, *healthz;
    size_t nready, nhealth, cap;
    long long pool_open_max;
    int pool_samples;
    atomic_llong last_ready_200; /* now_us() of the latest 200 from /readyz */
};

static long get_status(CURL *c, const char *url, test_reply *rep, double *ms)
{
    rep->len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, rep);
    int64_t t0 = now_us();
    CURLcode rc = curl_easy_perform(c);
    *ms = ms_since_us(t0);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static long long metric_in(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, name, n) == 0 && line[n] == ' ')
            return atoll(line + n + 1);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return -1;
}

static void *watcher_run(void *arg)
{
    struct watcher *wa = arg;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    test_reply rep = {0};
    char ready_url[128], health_url[128], metrics_url[128];
    snprintf(ready_url, sizeof(ready_url), "%s/readyz", srv.base_url);
    snprintf(health_url, sizeof(health_url), "%s/healthz", srv.base_url);
    snprintf(metrics_url, sizeof(metrics_url), "%s/metrics", srv.base_url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    int64_t next_metrics = 0;
    while (!atomic_load(&wa->stop) && wa->nready < wa->cap && wa->nhealth < wa->cap) {
        struct sample *s = &wa->readyz[wa->nready++];
        s->at = now_us();
        s->status = get_status(c, ready_url, &rep, &s->ms);
        if (s->status == 200)
            atomic_store(&wa->last_ready_200, s->at);
        s = &wa->healthz[wa->nhealth++];
        s->at = now_us();
        s->status = get_status(c, health_url, &rep, &s->ms);
        if (now_us() >= next_metrics) {
            double ms;
            if (get_status(c, metrics_url, &rep, &ms) == 200) {
                long long open = metric_in(rep.body, "h2pg_db_pool_open");
                if (open > wa->pool_open_max)
                    wa->pool_open_max = open;
                wa->pool_samples++;
            }
            next_metrics = now_us() + 1000000;
        }
        sleep_ms(WATCH_EVERY_MS);
    }
    free(rep.body);
    curl_easy_cleanup(c);
    return NULL;
}

/* ---- the scenario ---- */

enum fault { CRASH_AND_START, RESTART_FAST };

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct row {
    int64_t id, from, to;
    long long amount;
};

static int cmp_row(const void *a, const void *b)
{
    int64_t x = ((const struct row *)a)->id, y = ((const struct row *)b)->id;
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

/* Polls until pred holds, up to ms; returns whether it did. */
static bool wait_until(bool (*pred)(void *), void *arg, int ms)
{
    int64_t t0 = now_us();
    while (!pred(arg)) {
        if (ms_since_us(t0) > ms)
            return false;
        sleep_ms(10);
    }
    return true;
}

static bool created_at_least(void *arg) { return atomic_load(&created) >= *(long long *)arg; }
static bool created_after_at_least(void *arg) { return atomic_load(&created_after) >= *(long long *)arg; }

static bool ready_since(void *arg)
{
    struct watcher *wa = arg;
    long long back = atomic_load(&back_at);
    return back != 0 && atomic_load(&wa->last_ready_200) > back;
}

static void run_outage(enum fault fault, const char *name)
{
    ck_assert_msg(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK, "curl_global_init");
    atomic_store(&load_stop, false);
    atomic_store(&created, 0);
    atomic_store(&created_after, 0);
    atomic_store(&back_at, 0);

    struct watcher wa = {.cap = 100000};
    wa.readyz = calloc(wa.cap, sizeof(*wa.readyz));
    wa.healthz = calloc(wa.cap, sizeof(*wa.healthz));
    ck_assert(wa.readyz != NULL && wa.healthz != NULL);
    atomic_init(&wa.stop, false);
    atomic_init(&wa.last_ready_200, 0);
    ck_assert_int_eq(pthread_create(&wa.thread, NULL, watcher_run, &wa), 0);

    struct client *clients = calloc(CLIENTS, sizeof(*clients));
    ck_assert_ptr_nonnull(clients);
    unsigned base_seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    int64_t load_start = now_us();
    for (int i = 0; i < CLIENTS; i++) {
        clients[i].index = i;
        clients[i].seed = base_seed + (unsigned)i * 7919u;
        ck_assert_int_eq(pthread_create(&clients[i].thread, NULL, client_run, &clients[i]), 0);
    }

    /* about a second of normal traffic */
    long long some = 20;
    ck_assert_msg(wait_until(created_at_least, &some, 15000), "the load got no 201s before the outage");
    while (ms_since_us(load_start) < 1000)
        sleep_ms(10);
    long long before_fault = atomic_load(&created);

    int64_t down_at = now_us();
    if (fault == CRASH_AND_START) {
        test_pgctl_stop(&pg, "immediate");
        while (ms_since_us(down_at) < OUTAGE_MS)
            sleep_ms(10);
        test_pgctl_start(&pg);
    } else {
        test_pgctl_restart(&pg, "fast");
    }
    int64_t back = now_us();
    atomic_store(&back_at, back);
    double outage_ms = (double)(back - down_at) / 1000.0;

    bool ready = wait_until(ready_since, &wa, RECOVER_MS);
    double ready_ms = ms_since_us(back);
    long long some_after = 20;
    bool flowing = ready && wait_until(created_after_at_least, &some_after, RECOVER_MS);
    double flowing_ms = ms_since_us(back);
    atomic_store(&load_stop, true);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i].thread, NULL);
    atomic_store(&wa.stop, true);
    pthread_join(wa.thread, NULL);
    if (!ready || !flowing) {
        char *log = test_server_log(&srv);
        size_t len = strlen(log);
        ck_abort_msg("%s: %s within %d ms of PostgreSQL's return; the service's log ends:\n%s", name,
                     !ready ? "/readyz was not 200 again" : "transfers did not get 201 again", RECOVER_MS,
                     len > 3000 ? log + len - 3000 : log);
    }

    /* ---- what the clients saw ---- */
    size_t total = 0, n201 = 0, n503 = 0, n504 = 0, n503_outage = 0, other = 0;
    double slowest = 0;
    char other_example[400] = "";
    for (int i = 0; i < CLIENTS; i++) {
        struct client *cl = &clients[i];
        ck_assert_msg(cl->failure[0] == '\0', "%s: client %d: %s", name, i, cl->failure);
        for (size_t k = 0; k < cl->n; k++) {
            struct record *o = &cl->rec[k];
            double ms = (double)(o->end - o->start) / 1000.0;
            slowest = ms > slowest ? ms : slowest;
            total++;
            if (o->status == 201) {
                n201++;
            } else if (o->status == 503) {
                n503++;
                n503_outage += o->end >= down_at;
            } else if (o->status == 504) {
                n504++;
            } else {
                if (other++ == 0)
                    snprintf(other_example, sizeof(other_example), "client %d request %zu: status %ld after %.0f ms", i,
                             k + 1, o->status, ms);
            }
        }
    }
    size_t healthz_bad = 0, ready_503_outage = 0, ready_other = 0;
    double healthz_max = 0;
    for (size_t i = 0; i < wa.nhealth; i++) {
        healthz_bad += wa.healthz[i].status != 200;
        healthz_max = wa.healthz[i].ms > healthz_max ? wa.healthz[i].ms : healthz_max;
    }
    for (size_t i = 0; i < wa.nready; i++) {
        if (wa.readyz[i].status == 503 && wa.readyz[i].at >= down_at && wa.readyz[i].at <= back)
            ready_503_outage++;
        ready_other += wa.readyz[i].status != 200 && wa.readyz[i].status != 503;
    }
    fprintf(stderr,
            "outage: %s: PostgreSQL down for %.0f ms; %zu requests: %zu x 201 (%lld before the fault), %zu x 503 "
            "(%zu ending after it went down), %zu x 504, %zu other; slowest %.0f ms; /readyz 503 %zu times while "
            "down, 200 again %.0f ms after its return, transfers flowing again after %.0f ms; /healthz %zu probes, "
            "max %.1f ms; h2pg_db_pool_open max %lld over %d samples\n",
            name, outage_ms, total, n201, before_fault, n503, n503_outage, n504, other, slowest, ready_503_outage,
            ready_ms, flowing_ms, wa.nhealth, healthz_max, wa.pool_open_max, wa.pool_samples);
    /* ---- the service: still the same process, and serving ---- */
    int wstatus;
    ck_assert_msg(waitpid(srv.pid, &wstatus, WNOHANG) == 0, "%s: the service exited", name);
    char url[128];
    snprintf(url, sizeof(url), "%s/healthz", srv.base_url);
    test_response r;
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);

    /* ---- the books, before what the clients were told: the invariant is
     * what no outage may break, and a failure below must not hide it ---- */
    PGconn *c = PQconnectdb(db);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *res = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'h2pg'");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    long long backends = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    ck_assert_msg(backends <= POOL_MAX, "%s: the service has %lld connections, POOL_MAX is %d", name, backends,
                  POOL_MAX);

    res = PQexec(c, "SELECT id, balance_cents FROM accounts ORDER BY id");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(res), ACCOUNTS);
    long long bal[ACCOUNTS], sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int k = account_index(atoll(PQgetvalue(res, i, 0)));
        bal[k] = atoll(PQgetvalue(res, i, 1));
        sum += bal[k];
        ck_assert_msg(bal[k] >= 0, "%s: account %lld has a negative balance %lld", name, (long long)account_ids[k],
                      bal[k]);
    }
    PQclear(res);
    ck_assert_msg(sum == ACCOUNTS * OPENING, "%s: the balances sum to %lld, the deposits to %lld", name, sum,
                  ACCOUNTS * OPENING);

    res = PQexec(c, "SELECT id, from_account_id, to_account_id, amount_cents FROM transfers ORDER BY id");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    size_t nrows = (size_t)PQntuples(res);
    struct row *rows = calloc(nrows + 1, sizeof(*rows));
    ck_assert_ptr_nonnull(rows);
    long long moved[ACCOUNTS] = {0};
    for (size_t i = 0; i < nrows; i++) {
        rows[i].id = atoll(PQgetvalue(res, (int)i, 0));
        rows[i].from = atoll(PQgetvalue(res, (int)i, 1));
        rows[i].to = atoll(PQgetvalue(res, (int)i, 2));
        rows[i].amount = atoll(PQgetvalue(res, (int)i, 3));
        moved[account_index(rows[i].from)] -= rows[i].amount;
        moved[account_index(rows[i].to)] += rows[i].amount;
    }
    PQclear(res);
    PQfinish(c);
    for (int i = 0; i < ACCOUNTS; i++)
        ck_assert_msg(bal[i] == OPENING + moved[i],
                      "%s: account %lld holds %lld, but its deposit and the transfers table say %lld", name,
                      (long long)account_ids[i], bal[i], OPENING + moved[i]);

    /* every 201 is in the table, exactly once, as it was asked for */
    int64_t *ids = calloc(n201 + 1, sizeof(*ids));
    ck_assert_ptr_nonnull(ids);
    size_t m = 0;
    for (int i = 0; i < CLIENTS; i++) {
        for (size_t k = 0; k < clients[i].n; k++) {
            struct record *o = &clients[i].rec[k];
            if (o->status != 201)
                continue;
            ids[m++] = o->transfer_id;
            struct row key = {.id = o->transfer_id};
            struct row *hit = bsearch(&key, rows, nrows, sizeof(*rows), cmp_row);
            ck_assert_msg(hit != NULL, "%s: transfer %lld was answered 201 but is not in the table", name,
                          (long long)o->transfer_id);
            ck_assert_msg(hit->from == account_ids[o->from] && hit->to == account_ids[o->to] && hit->amount == o->amount,
                          "%s: transfer %lld in the table is not the one answered 201", name, (long long)o->transfer_id);
        }
    }
    qsort(ids, m, sizeof(*ids), cmp_i64);
    for (size_t i = 1; i < m; i++)
        ck_assert_msg(ids[i] != ids[i - 1], "%s: two requests were answered 201 with transfer %lld", name,
                      (long long)ids[i]);
    fprintf(stderr, "outage: %s: %zu transfers in the table, %zu of them answered 201; %zu committed though "
                    "their client got no 201\n",
            name, nrows, m, nrows - m);

    /* ---- and what the clients were told on the way ---- */
    ck_assert_msg(other == 0, "%s: %zu answers other than 201, 503 and 504, e.g. %s", name, other, other_example);
    ck_assert_msg(slowest <= REQUEST_TIMEOUT_MS + SLACK_MS, "%s: a request took %.0f ms", name, slowest);
    ck_assert_msg(n503_outage > 0, "%s: no request got 503 during the outage", name);
    ck_assert_msg(healthz_bad == 0, "%s: /healthz was not 200 %zu times", name, healthz_bad);
    ck_assert_msg(ready_other == 0, "%s: /readyz answered %zu times with neither 200 nor 503", name, ready_other);
    ck_assert_msg(ready_503_outage > 0, "%s: /readyz never answered 503 while PostgreSQL was down", name);
    ck_assert_msg(wa.pool_samples >= 2, "%s: only %d samples of /metrics", name, wa.pool_samples);
    ck_assert_msg(wa.pool_open_max <= POOL_MAX, "%s: h2pg_db_pool_open reached %lld, POOL_MAX is %d", name,
                  wa.pool_open_max, POOL_MAX);

    for (int i = 0; i < CLIENTS; i++)
        free(clients[i].rec);
    free(clients);
    free(ids);
    free(rows);
    free(wa.readyz);
    free(wa.healthz);
}

START_TEST(a_crash_of_postgresql_under_load_gives_503s_then_recovers_and_loses_no_201_transfer)
{
    world_start();
    run_outage(CRASH_AND_START, "pg_ctl stop -m immediate, start after 2 s");
    world_end();
}
END_TEST

START_TEST(a_fast_restart_of_postgresql_under_load_recovers_and_loses_no_201_transfer)
{
    world_start();
    run_outage(RESTART_FAST, "pg_ctl restart -m fast");
    world_end();
}
END_TEST

static Suite *outage_suite(void)
{
    Suite *s = suite_create("outage");
    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 300);
    tcase_add_test(crash, a_crash_of_postgresql_under_load_gives_503s_then_recovers_and_loses_no_201_transfer);
    suite_add_tcase(s, crash);
    TCase *restart = tcase_create("restart");
    tcase_set_timeout(restart, 300);
    tcase_add_test(restart, a_fast_restart_of_postgresql_under_load_recovers_and_loses_no_201_transfer);
    suite_add_tcase(s, restart);
    return s;
}

int main(void)
{
    return run_suite(outage_suite());
}
