/* scale_transfers: the transfer invariant of API.md, checked against a
 * service that may be several processes behind a proxy or a pooler.
 *
 *   scale_transfers [-c CLIENTS] [-n PER_CLIENT] [-a ACCOUNTS] [-i] BASE_URL CONNINFO
 *
 * Opens a user and ACCOUNTS accounts through BASE_URL (POST /users,
 * POST /accounts), then CLIENTS threads each send PER_CLIENT random
 * POST /transfers among those accounts, each thread on one kept-alive
 * connection. Every answer must be 201 (the transfer's id read from the
 * body, and Location saying the same) or 422 (insufficient funds). With -i
 * each request carries an Idempotency-Key and is sent twice: the second
 * answer must repeat the first, status and body.
 *
 * Meanwhile a monitor reads the balances straight from PostgreSQL
 * (CONNINFO, not through the service) and checks the sum and the signs
 * again and again. Afterwards the books: the transfers table holds, for
 * these accounts, exactly the transfers answered 201 (same ids, same
 * accounts and amounts); each balance is its opening deposit plus what
 * came in minus what went out; none is negative; the sum is the deposits'.
 *
 * Only these accounts are looked at, so the database may hold other data.
 * Exit status 0 and one summary line on stdout when everything holds;
 * otherwise 1 and the reasons on stderr (2 for bad usage). A standalone
 * program rather than a Check test: the shell scripts of tests/scale/ run
 * it against whatever topology they built. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#define MAX_ACCOUNTS 64
#define REQUEST_TIMEOUT_MS 30000L

static const char *base_url;
static const char *conninfo;
static int naccounts = 5;
static int nclients = 16;
static int per_client = 200;
static bool idempotent;

static int64_t account_id[MAX_ACCOUNTS];
static long long opening[MAX_ACCOUNTS];
static long long deposits;

static int failures;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("scale_transfers: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

/* ---- HTTP ---- */

struct reply {
    long status;
    char *body;
    size_t len, cap;
    char location[128];
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t add = size * n;
    if (r->len + add + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 512;
        while (cap < r->len + add + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n;
    static const char name[] = "location:";
    if (len > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
        size_t i = sizeof(name) - 1, end = len;
        while (i < end && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (end > i && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' '))
            end--;
        snprintf(r->location, sizeof(r->location), "%.*s", (int)(end - i), p + i);
    }
    return len;
}

/* POSTs body (JSON) to base_url + path on handle c, with an extra header
 * line when given; false (err filled) on a transport failure. */
static bool post(CURL *c, const char *path, const char *body, const char *extra, struct reply *r, char *err,
                 size_t errlen)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    r->status = 0;
    r->len = 0;
    r->location[0] = '\0';
    if (r->body == NULL)
        on_body("", 1, 0, r);
    else
        r->body[0] = '\0';
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (extra != NULL)
        h = curl_slist_append(h, extra);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "POST %s: %s", path, curl_easy_strerror(rc));
        return false;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    return true;
}

/* The "id" of a 201 body whose Location is path/id, or 0. */
static int64_t created_id(const struct reply *r, const char *path)
{
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    int64_t id = j != NULL ? json_integer_value(json_object_get(j, "id")) : 0;
    json_decref(j);
    char want[128];
    snprintf(want, sizeof(want), "%s/%" PRId64, path, id);
    return id > 0 && strcmp(r->location, want) == 0 ? id : 0;
}

/* ---- the clients ---- */

struct outcome {
    int from, to; /* indexes into account_id */
    long long amount;
    long status;
    int64_t id; /* the transfer's, for a 201 */
};

struct client {
    pthread_t thread;
    int index;
    unsigned seed;
    struct outcome *out;
    int done;
    char failure[768]; /* the first thing that went wrong, or "" */
};

static void *client_run(void *arg)
{
    struct client *cl = arg;
    CURL *c = curl_easy_init();
    struct reply first = {0}, again = {0};
    if (c == NULL) {
        snprintf(cl->failure, sizeof(cl->failure), "curl_easy_init failed");
        return NULL;
    }
    for (int i = 0; i < per_client && cl->failure[0] == '\0'; i++) {
        struct outcome *o = &cl->out[i];
        o->from = rand_r(&cl->seed) % naccounts;
        o->to = (o->from + 1 + rand_r(&cl->seed) % (naccounts - 1)) % naccounts;
        /* mostly amounts that can be paid, now and then more than any account holds */
        o->amount = rand_r(&cl->seed) % 6 == 0 ? 1 + rand_r(&cl->seed) % 200000 : 1 + rand_r(&cl->seed) % 5000;
        char body[192], key[128];
        snprintf(body, sizeof(body), "{\"from_account_id\":%" PRId64 ",\"to_account_id\":%" PRId64 ",\"amount_cents\":%lld}",
                 account_id[o->from], account_id[o->to], o->amount);
        snprintf(key, sizeof(key), "Idempotency-Key: scale-%d-%d-%d-%ld", (int)getpid(), cl->index, i, (long)time(NULL));
        const char *extra = idempotent ? key : NULL;
        if (!post(c, "/transfers", body, extra, &first, cl->failure, sizeof(cl->failure)))
            break;
        o->status = first.status;
        if (idempotent) {
            if (!post(c, "/transfers", body, extra, &again, cl->failure, sizeof(cl->failure)))
                break;
            if (again.status != first.status || again.len != first.len || memcmp(again.body, first.body, first.len) != 0)
                snprintf(cl->failure, sizeof(cl->failure), "%s, sent twice: %ld %.200s, then %ld %.200s", key,
                         first.status, first.body, again.status, again.body);
        }
        if (o->status == 201) {
            o->id = created_id(&first, "/transfers");
            if (o->id == 0)
                snprintf(cl->failure, sizeof(cl->failure), "201 without a matching id and Location (%s): %.300s",
                         first.location, first.body);
        } else if (o->status != 422) {
            snprintf(cl->failure, sizeof(cl->failure), "%s: HTTP %ld: %.300s", body, o->status, first.body);
        }
        cl->done = i + 1;
    }
    free(first.body);
    free(again.body);
    curl_easy_cleanup(c);
    return NULL;
}

/* ---- PostgreSQL ---- */

/* "{id,id,...}" of the accounts, for = ANY($1::bigint[]) */
static char id_array[MAX_ACCOUNTS * 21 + 3];

static PGresult *query(PGconn *c, const char *sql)
{
    const char *params[] = {id_array};
    return PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
}

struct monitor {
    pthread_t thread;
    atomic_bool stop;
    int samples;
    char failure[512];
};

static void *monitor_run(void *arg)
{
    struct monitor *m = arg;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    while (!atomic_load(&m->stop) && m->failure[0] == '\0') {
        PGresult *r = query(c, "SELECT sum(balance_cents), min(balance_cents) FROM accounts WHERE id = ANY($1::bigint[])");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQresultErrorMessage(r));
        } else {
            long long sum = atoll(PQgetvalue(r, 0, 0)), min = atoll(PQgetvalue(r, 0, 1));
            if (sum != deposits || min < 0)
                snprintf(m->failure, sizeof(m->failure),
                         "sample %d while the clients ran: the balances sum to %lld (deposits %lld), the smallest is %lld",
                         m->samples, sum, deposits, min);
            m->samples++;
        }
        PQclear(r);
        nanosleep(&(struct timespec){0, 25 * 1000000L}, NULL);
    }
    PQfinish(c);
    return NULL;
}

static int account_index(int64_t id)
{
    for (int i = 0; i < naccounts; i++)
        if (account_id[i] == id)
            return i;
    return -1;
}

static int by_id(const void *a, const void *b)
{
    int64_t x = (*(const struct outcome *const *)a)->id, y = (*(const struct outcome *const *)b)->id;
    return (x > y) - (x < y);
}

/* The transfers table and the balances against what the clients saw. */
static void audit(PGconn *c, struct outcome **ok, size_t n)
{
    PGresult *r = query(c, "SELECT id, from_account_id, to_account_id, amount_cents FROM transfers "
                           "WHERE from_account_id = ANY($1::bigint[]) OR to_account_id = ANY($1::bigint[]) ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail("reading the transfers: %s", PQresultErrorMessage(r));
        PQclear(r);
        return;
    }
    if ((size_t)PQntuples(r) != n)
        fail("the transfers table holds %d transfers among these accounts; %zu requests were answered 201",
             PQntuples(r), n);
    long long in[MAX_ACCOUNTS] = {0}, out[MAX_ACCOUNTS] = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t id = atoll(PQgetvalue(r, i, 0));
        int from = account_index(atoll(PQgetvalue(r, i, 1))), to = account_index(atoll(PQgetvalue(r, i, 2)));
        long long amount = atoll(PQgetvalue(r, i, 3));
        if (from < 0 || to < 0) {
            fail("transfer %" PRId64 " moves money between one of these accounts and another one", id);
            continue;
        }
        out[from] += amount;
        in[to] += amount;
        if ((size_t)i < n && ok[i]->id != id)
            fail("row %d of the table is transfer %" PRId64 ", the %d-th id answered 201 is %" PRId64, i, id, i,
                 ok[i]->id);
        else if ((size_t)i < n && (ok[i]->from != from || ok[i]->to != to || ok[i]->amount != amount))
            fail("transfer %" PRId64 " in the table is not the one its 201 answered", id);
    }
    PQclear(r);

    r = query(c, "SELECT id, balance_cents FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != naccounts) {
        fail("reading the balances: %s (%d rows)", PQresultErrorMessage(r), PQntuples(r));
        PQclear(r);
        return;
    }
    long long sum = 0;
    for (int i = 0; i < naccounts; i++) {
        int a = account_index(atoll(PQgetvalue(r, i, 0)));
        long long balance = atoll(PQgetvalue(r, i, 1));
        sum += balance;
        if (balance < 0)
            fail("account %" PRId64 " ends at %lld", account_id[a], balance);
        if (balance != opening[a] + in[a] - out[a])
            fail("account %" PRId64 ": opened with %lld, took in %lld, paid out %lld, holds %lld", account_id[a],
                 opening[a], in[a], out[a], balance);
    }
    PQclear(r);
    if (sum != deposits)
        fail("the balances sum to %lld, the deposits to %lld", sum, deposits);
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: scale_transfers [-c CLIENTS] [-n PER_CLIENT] [-a ACCOUNTS] [-i] BASE_URL CONNINFO\n");
    return 2;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "c:n:a:i")) != -1) {
        switch (opt) {
        case 'c': nclients = atoi(optarg); break;
        case 'n': per_client = atoi(optarg); break;
        case 'a': naccounts = atoi(optarg); break;
        case 'i': idempotent = true; break;
        default: return usage();
        }
    }
    if (argc - optind != 2 || nclients < 1 || per_client < 1 || naccounts < 2 || naccounts > MAX_ACCOUNTS)
        return usage();
    base_url = argv[optind];
    conninfo = argv[optind + 1];
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fail("curl_global_init failed");
        return 1;
    }

    /* the bank: one user, naccounts accounts with falling opening deposits */
    CURL *c = curl_easy_init();
    struct reply r = {0};
    char body[256], err[512];
    snprintf(body, sizeof(body), "{\"name\":\"scale bank\",\"email\":\"bank-%d-%ld@scale.test\"}", (int)getpid(),
             (long)time(NULL));
    if (c == NULL || !post(c, "/users", body, NULL, &r, err, sizeof(err)) || r.status != 201) {
        fail("POST /users: %s", c == NULL ? "curl_easy_init failed" : r.status ? r.body : err);
        return 1;
    }
    int64_t user = created_id(&r, "/users");
    size_t pos = 0;
    id_array[pos++] = '{';
    for (int i = 0; i < naccounts; i++) {
        opening[i] = 100000 / (i + 1);
        deposits += opening[i];
        snprintf(body, sizeof(body), "{\"user_id\":%" PRId64 ",\"balance_cents\":%lld}", user, opening[i]);
        if (!post(c, "/accounts", body, NULL, &r, err, sizeof(err)) || r.status != 201 ||
            (account_id[i] = created_id(&r, "/accounts")) == 0) {
            fail("POST /accounts: %s", r.status ? r.body : err);
            return 1;
        }
        pos += (size_t)snprintf(id_array + pos, sizeof(id_array) - pos, "%s%" PRId64, i ? "," : "", account_id[i]);
    }
    id_array[pos++] = '}';
    id_array[pos] = '\0';
    free(r.body);
    curl_easy_cleanup(c);

    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fail("%s", PQerrorMessage(pg));
        return 1;
    }

    /* the load, watched by the monitor */
    struct monitor mon = {.samples = 0};
    atomic_init(&mon.stop, false);
    if (pthread_create(&mon.thread, NULL, monitor_run, &mon) != 0) {
        fail("cannot start the monitor");
        return 1;
    }
    struct client *cl = calloc((size_t)nclients, sizeof(*cl));
    struct outcome *outs = calloc((size_t)nclients * (size_t)per_client, sizeof(*outs));
    if (cl == NULL || outs == NULL) {
        fail("out of memory");
        return 1;
    }
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int started = 0;
    for (int i = 0; i < nclients; i++) {
        cl[i].index = i;
        cl[i].seed = seed + (unsigned)i * 7919u;
        cl[i].out = outs + (size_t)i * (size_t)per_client;
        if (pthread_create(&cl[i].thread, NULL, client_run, &cl[i]) != 0) {
            fail("cannot start client %d", i);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(cl[i].thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&mon.stop, true);
    pthread_join(mon.thread, NULL);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    size_t requests = 0, created = 0;
    for (int i = 0; i < started; i++) {
        if (cl[i].failure[0] != '\0')
            fail("client %d (seed %u), request %d: %s", i, cl[i].seed, cl[i].done + 1, cl[i].failure);
        requests += (size_t)cl[i].done;
        for (int k = 0; k < cl[i].done; k++)
            created += cl[i].out[k].status == 201;
    }
    if (mon.failure[0] != '\0')
        fail("%s", mon.failure);
    if (created == 0 || created == requests)
        fail("%zu of %zu transfers were answered 201: the load did not mix transfers and refusals", created, requests);

    struct outcome **ok = calloc(created ? created : 1, sizeof(*ok));
    size_t n = 0;
    for (int i = 0; i < started; i++)
        for (int k = 0; k < cl[i].done; k++)
            if (cl[i].out[k].status == 201)
                ok[n++] = &cl[i].out[k];
    qsort(ok, n, sizeof(*ok), by_id);
    for (size_t i = 1; i < n; i++)
        if (ok[i]->id == ok[i - 1]->id)
            fail("transfer %" PRId64 " was answered 201 to two requests", ok[i]->id);
    audit(pg, ok, n);

    if (idempotent) {
        /* one stored outcome per key of ours, its status the one answered */
        char pid[16];
        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        const char *p[] = {pid};
        PGresult *res = PQexecParams(pg, "SELECT count(*), count(*) FILTER (WHERE status = 201) FROM idempotency_keys "
                               "WHERE key LIKE 'scale-' || $1 || '-%'",
                           1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            fail("reading idempotency_keys: %s", PQresultErrorMessage(res));
        else if ((size_t)atoll(PQgetvalue(res, 0, 0)) != requests || (size_t)atoll(PQgetvalue(res, 0, 1)) != n)
            fail("idempotency_keys holds %s keys (%s with 201) of this run; %zu were sent, %zu answered 201",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), requests, n);
        PQclear(res);
    }
    PQfinish(pg);

    if (failures == 0)
        printf("%zu transfer requests%s from %d clients in %.1f s (%.0f/s): %zu answered 201, %zu 422; "
               "%d samples of the balances; books balanced (sum %lld)\n",
               requests, idempotent ? " (each sent twice with its Idempotency-Key)" : "", started, secs,
               (double)requests * (idempotent ? 2 : 1) / secs, n, requests - n, mon.samples, deposits);
    free(ok);
    free(outs);
    free(cl);
    curl_global_cleanup();
    return failures == 0 ? 0 : 1;
}
