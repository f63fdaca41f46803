/* scale_transfers: the transfer invariant of API.md, checked against a
 * service that may be several processes behind a proxy or a pooler, or
 * one whose database fails over under it.
 *
 *   scale_transfers [-c CLIENTS] [-n PER_CLIENT] [-a ACCOUNTS] [-i]
 *                   [-k] [-d MAX_SECONDS] [-t REQUEST_MS] [-w ACKED_FILE] [-s STATS_FILE]
 *                   BASE_URL CONNINFO
 *
 * Opens a user and ACCOUNTS accounts through BASE_URL (POST /users,
 * POST /accounts), then CLIENTS threads each send PER_CLIENT random
 * POST /transfers among those accounts, each thread on one kept-alive
 * connection. Every answer must be 201 (the transfer's id read from the
 * body, and Location saying the same) or 422 (insufficient funds). With -i
 * each request carries an Idempotency-Key and is sent twice: after a 201 the
 * second answer must repeat the first, status and body; a 422 is not kept
 * (it changed nothing), so its second sending runs again and is the same
 * 422 or, if money came in meanwhile, a 201 of its own, which then counts.
 *
 * Meanwhile a monitor reads the balances straight from PostgreSQL
 * (CONNINFO, not through the service) and checks the sum and the signs
 * again and again. Afterwards the books: the transfers table holds, for
 * these accounts, exactly the transfers answered 201 (same ids, same
 * accounts and amounts); each balance is its opening deposit plus what
 * came in minus what went out; none is negative; the sum is the deposits'.
 *
 * -k (keep going, for failover tests): the clients send until SIGUSR1
 * arrives or MAX_SECONDS (-d, default 120) have passed, and go on through
 * 503s (pausing 50 ms after each) and lost connections, counting every
 * status. A request is given REQUEST_MS (-t, default 30000) in all; one
 * that takes longer is counted as hung, and any hung request, transport
 * error or status other than 201, 422 and 503 fails the run. The monitor
 * reconnects when its server goes away (give CONNINFO every host and
 * target_session_attrs=read-write), and the audit, on a fresh connection,
 * requires every transfer answered 201 to be in the table as answered;
 * a row nobody was answered 201 for is allowed only for a request whose
 * outcome the client could not know (a 503 or a lost answer: the commit
 * may have happened) with the same accounts and amount, and the balances
 * must agree with the table. "scale_transfers: load running" on stderr
 * says when the clients have started.
 *
 * -w writes the ids answered 201, one a line; -s writes the counts as
 * key=value lines (statuses, hung, slowest_ms, the first and last 503 as
 * Unix times, acknowledged, found, extra), whether the run passed or not.
 *
 * Only these accounts are looked at, so the database may hold other data.
 * Exit status 0 and one summary line on stdout when everything holds;
 * otherwise 1 and the reasons on stderr (2 for bad usage). A standalone
 * program rather than a Check test: the shell scripts of tests/scale/ run
 * it against whatever topology they built. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
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
static bool keep_going;                              /* -k */
static double max_seconds = 120;                     /* -d, with -k */
static long request_timeout_ms = REQUEST_TIMEOUT_MS; /* -t */
static const char *acked_path, *stats_path;          /* -w, -s */
static atomic_bool stop_load;                        /* -k: SIGUSR1 or MAX_SECONDS */

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
 * line when given; CURLE_OK, or the failure (err filled): CURLE_OPERATION_TIMEDOUT
 * when the answer took longer than request_timeout_ms. */
static CURLcode post(CURL *c, const char *path, const char *body, const char *extra, struct reply *r, char *err,
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
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, request_timeout_ms);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "POST %s: %s", path, curl_easy_strerror(rc));
        return rc;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    return CURLE_OK;
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

enum { STATUS_LOST = 0, STATUS_HUNG = -1 }; /* no answer: a transport failure, or no answer in time */

struct outcome {
    int from, to; /* indexes into account_id */
    long long amount;
    long status;
    int64_t id;    /* the transfer's, for a 201 */
    bool in_table; /* the audit found it (a 201), or matched a row to it (an unknown outcome) */
};

/* Whether the request may have committed without the client knowing:
 * anything but a 201 (committed) or a 422 (refused). */
static bool outcome_unknown(const struct outcome *o) { return o->status != 201 && o->status != 422; }

struct client {
    pthread_t thread;
    int index;
    unsigned seed;
    struct outcome *out;
    int done, cap;
    char failure[768]; /* the first thing that went wrong, or "" */
    /* -k: what happened, counted */
    long n503, other, hung, lost;
    double slowest_ms, first_503, last_503; /* Unix times, 0 when none */
    char note[768]; /* the first other status or transport failure */
};

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static double unix_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pause_ms(long ms) { nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL); }

static void *client_run(void *arg)
{
    struct client *cl = arg;
    CURL *c = curl_easy_init();
    struct reply first = {0}, again = {0};
    if (c == NULL) {
        snprintf(cl->failure, sizeof(cl->failure), "curl_easy_init failed");
        return NULL;
    }
    for (int i = 0; cl->failure[0] == '\0' && (keep_going ? !atomic_load(&stop_load) : i < per_client); i++) {
        if (i == cl->cap) {
            /* -k: as many as the time allows */
            int cap = cl->cap * 2;
            struct outcome *o = realloc(cl->out, sizeof(*o) * (size_t)cap);
            if (o == NULL) {
                snprintf(cl->failure, sizeof(cl->failure), "out of memory");
                break;
            }
            memset(o + cl->cap, 0, sizeof(*o) * (size_t)(cap - cl->cap));
            cl->out = o;
            cl->cap = cap;
        }
        struct outcome *o = &cl->out[i];
        o->from = rand_r(&cl->seed) % naccounts;
        o->to = (o->from + 1 + rand_r(&cl->seed) % (naccounts - 1)) % naccounts;
        /* mostly amounts that can be paid, now and then more than any account holds */
        o->amount = rand_r(&cl->seed) % 6 == 0 ? 1 + rand_r(&cl->seed) % 200000 : 1 + rand_r(&cl->seed) % 5000;
        char body[192], key[128], err[512];
        snprintf(body, sizeof(body), "{\"from_account_id\":%" PRId64 ",\"to_account_id\":%" PRId64 ",\"amount_cents\":%lld}",
                 account_id[o->from], account_id[o->to], o->amount);
        snprintf(key, sizeof(key), "Idempotency-Key: scale-%d-%d-%d-%ld", (int)getpid(), cl->index, i, (long)time(NULL));
        const char *extra = idempotent ? key : NULL;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CURLcode rc = post(c, "/transfers", body, extra, &first, err, sizeof(err));
        double ms = seconds_since(&t0) * 1000;
        if (ms > cl->slowest_ms)
            cl->slowest_ms = ms;
        cl->done = i + 1;
        if (rc != CURLE_OK) {
            if (!keep_going) {
                snprintf(cl->failure, sizeof(cl->failure), "%s", err);
                cl->done = i; /* not an outcome */
                break;
            }
            /* the answer (if any) never came: the outcome is unknown */
            o->status = rc == CURLE_OPERATION_TIMEDOUT ? STATUS_HUNG : STATUS_LOST;
            if (rc == CURLE_OPERATION_TIMEDOUT)
                cl->hung++;
            else
                cl->lost++;
            if (cl->note[0] == '\0')
                snprintf(cl->note, sizeof(cl->note), "%s after %.0f ms", err, ms);
            pause_ms(50);
            continue;
        }
        o->status = first.status;
        if (idempotent) {
            if (post(c, "/transfers", body, extra, &again, cl->failure, sizeof(cl->failure)) != CURLE_OK)
                break;
            if (first.status == 422 && again.status == 201) {
                /* the refusal was not kept: the second sending ran, and made it */
                struct reply decided = again;
                again = first;
                first = decided;
                o->status = first.status;
            } else if (again.status != first.status || again.len != first.len ||
                       memcmp(again.body, first.body, first.len) != 0) {
                snprintf(cl->failure, sizeof(cl->failure), "%s, sent twice: %ld %.200s, then %ld %.200s", key,
                         first.status, first.body, again.status, again.body);
            }
        }
        if (o->status == 201) {
            o->id = created_id(&first, "/transfers");
            if (o->id == 0)
                snprintf(cl->failure, sizeof(cl->failure), "201 without a matching id and Location (%s): %.300s",
                         first.location, first.body);
        } else if (o->status == 422) {
            /* insufficient funds: nothing committed */
        } else if (keep_going && o->status == 503) {
            double now = unix_now();
            if (cl->n503++ == 0)
                cl->first_503 = now;
            cl->last_503 = now;
            pause_ms(50); /* as a client told Retry-After would, a little */
        } else if (keep_going) {
            cl->other++;
            if (cl->note[0] == '\0')
                snprintf(cl->note, sizeof(cl->note), "%s: HTTP %ld after %.0f ms: %.300s", body, o->status, ms,
                         first.body);
        } else {
            snprintf(cl->failure, sizeof(cl->failure), "%s: HTTP %ld: %.300s", body, o->status, first.body);
        }
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
    int samples, reconnects;
    char failure[512];
};

static void *monitor_run(void *arg)
{
    struct monitor *m = arg;
    PGconn *c = NULL;
    while (!atomic_load(&m->stop) && m->failure[0] == '\0') {
        if (c == NULL) {
            c = PQconnectdb(conninfo);
            if (PQstatus(c) != CONNECTION_OK) {
                if (!keep_going)
                    snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQerrorMessage(c));
                PQfinish(c);
                c = NULL;
                pause_ms(100); /* -k: the server is away; try again */
                continue;
            }
        }
        PGresult *r = query(c, "SELECT sum(balance_cents), min(balance_cents) FROM accounts WHERE id = ANY($1::bigint[])");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            if (keep_going && PQstatus(c) == CONNECTION_BAD) {
                /* its server went away: on to whichever is the primary now */
                m->reconnects++;
                PQfinish(c);
                c = NULL;
            } else {
                snprintf(m->failure, sizeof(m->failure), "monitor: %s", PQresultErrorMessage(r));
            }
        } else {
            long long sum = atoll(PQgetvalue(r, 0, 0)), min = atoll(PQgetvalue(r, 0, 1));
            if (sum != deposits || min < 0)
                snprintf(m->failure, sizeof(m->failure),
                         "sample %d while the clients ran: the balances sum to %lld (deposits %lld), the smallest is %lld",
                         m->samples, sum, deposits, min);
            m->samples++;
        }
        PQclear(r);
        pause_ms(25);
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

static struct outcome *find_acked(struct outcome **ok, size_t n, int64_t id)
{
    struct outcome key = {.id = id}, *k = &key;
    struct outcome **hit = bsearch(&k, ok, n, sizeof(*ok), by_id);
    return hit ? *hit : NULL;
}

/* -k: an unmatched request of unknown outcome that asked for this transfer */
static struct outcome *find_unknown(struct outcome **unknown, size_t n, int from, int to, long long amount)
{
    for (size_t i = 0; i < n; i++)
        if (!unknown[i]->in_table && unknown[i]->from == from && unknown[i]->to == to && unknown[i]->amount == amount)
            return unknown[i];
    return NULL;
}

static size_t found, extra; /* acknowledged transfers found in the table; rows of unknown-outcome requests */

/* The transfers table and the balances against what the clients saw: ok
 * (sorted by id) answered 201, unknown may or may not have committed. */
static void audit(PGconn *c, struct outcome **ok, size_t n, struct outcome **unknown, size_t nunknown)
{
    PGresult *r = query(c, "SELECT id, from_account_id, to_account_id, amount_cents FROM transfers "
                           "WHERE from_account_id = ANY($1::bigint[]) OR to_account_id = ANY($1::bigint[]) ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail("reading the transfers: %s", PQresultErrorMessage(r));
        PQclear(r);
        return;
    }
    if (!keep_going && (size_t)PQntuples(r) != n)
        fail("the transfers table holds %d transfers among these accounts; %zu requests were answered 201",
             PQntuples(r), n);
    long long in[MAX_ACCOUNTS] = {0}, out[MAX_ACCOUNTS] = {0};
    int reported = 0;
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
        struct outcome *o = find_acked(ok, n, id);
        if (o != NULL) {
            o->in_table = true;
            found++;
            if (o->from != from || o->to != to || o->amount != amount)
                fail("transfer %" PRId64 " in the table is not the one its 201 answered", id);
        } else if ((o = find_unknown(unknown, nunknown, from, to, amount)) != NULL) {
            o->in_table = true; /* committed, but its answer was a 503 or never came */
            extra++;
        } else if (reported++ < 5) {
            fail("transfer %" PRId64 " (%lld cents) is in the table, but no request for it was answered 201%s", id,
                 amount, keep_going ? " or left without a known outcome" : "");
        }
    }
    PQclear(r);
    if (found != n) {
        reported = 0;
        for (size_t i = 0; i < n && reported < 5; i++) {
            if (!ok[i]->in_table) {
                fail("transfer %" PRId64 " was answered 201 but is not in the table", ok[i]->id);
                reported++;
            }
        }
        fail("%zu of %zu transfers answered 201 are in the table", found, n);
    }

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

/* -k: the database may still be failing over when the load stops */
static PGconn *connect_for_audit(void)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        PGconn *pg = PQconnectdb(conninfo);
        if (PQstatus(pg) == CONNECTION_OK || !keep_going || seconds_since(&t0) > 30)
            return pg;
        PQfinish(pg);
        pause_ms(200);
    }
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: scale_transfers [-c CLIENTS] [-n PER_CLIENT] [-a ACCOUNTS] [-i] [-k] [-d MAX_SECONDS]\n"
                    "                       [-t REQUEST_MS] [-w ACKED_FILE] [-s STATS_FILE] BASE_URL CONNINFO\n");
    return 2;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "c:n:a:ikd:t:w:s:")) != -1) {
        switch (opt) {
        case 'c': nclients = atoi(optarg); break;
        case 'n': per_client = atoi(optarg); break;
        case 'a': naccounts = atoi(optarg); break;
        case 'i': idempotent = true; break;
        case 'k': keep_going = true; break;
        case 'd': max_seconds = atof(optarg); break;
        case 't': request_timeout_ms = atol(optarg); break;
        case 'w': acked_path = optarg; break;
        case 's': stats_path = optarg; break;
        default: return usage();
        }
    }
    if (argc - optind != 2 || nclients < 1 || per_client < 1 || naccounts < 2 || naccounts > MAX_ACCOUNTS ||
        max_seconds <= 0 || request_timeout_ms < 1 || (keep_going && idempotent))
        return usage();
    base_url = argv[optind];
    conninfo = argv[optind + 1];
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fail("curl_global_init failed");
        return 1;
    }
    /* -k: SIGUSR1 ends the load; the threads inherit the mask, main waits for it */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    atomic_init(&stop_load, false);

    /* the bank: one user, naccounts accounts with falling opening deposits */
    CURL *c = curl_easy_init();
    struct reply r = {0};
    char body[256], err[512];
    snprintf(body, sizeof(body), "{\"name\":\"scale bank\",\"email\":\"bank-%d-%ld@scale.test\"}", (int)getpid(),
             (long)time(NULL));
    if (c == NULL || post(c, "/users", body, NULL, &r, err, sizeof(err)) != CURLE_OK || r.status != 201) {
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
        r.status = 0;
        if (post(c, "/accounts", body, NULL, &r, err, sizeof(err)) != CURLE_OK || r.status != 201 ||
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

    PGconn *pg = NULL;
    if (!keep_going) { /* with -k, connected for the audit, after the failover */
        pg = PQconnectdb(conninfo);
        if (PQstatus(pg) != CONNECTION_OK) {
            fail("%s", PQerrorMessage(pg));
            return 1;
        }
    }

    /* the load, watched by the monitor */
    struct monitor mon = {.samples = 0};
    atomic_init(&mon.stop, false);
    if (pthread_create(&mon.thread, NULL, monitor_run, &mon) != 0) {
        fail("cannot start the monitor");
        return 1;
    }
    struct client *cl = calloc((size_t)nclients, sizeof(*cl));
    if (cl == NULL) {
        fail("out of memory");
        return 1;
    }
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int started = 0;
    for (int i = 0; i < nclients; i++) {
        cl[i].index = i;
        cl[i].seed = seed + (unsigned)i * 7919u;
        cl[i].cap = keep_going ? 256 : per_client;
        if ((cl[i].out = calloc((size_t)cl[i].cap, sizeof(*cl[i].out))) == NULL ||
            pthread_create(&cl[i].thread, NULL, client_run, &cl[i]) != 0) {
            fail("cannot start client %d", i);
            free(cl[i].out);
            cl[i].out = NULL;
            break;
        }
        started++;
    }
    if (keep_going) {
        fprintf(stderr, "scale_transfers: load running\n");
        fflush(stderr);
        double left;
        while ((left = max_seconds - seconds_since(&t0)) > 0) {
            struct timespec wait = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
            if (sigtimedwait(&usr1, NULL, &wait) == SIGUSR1)
                break;
        }
        atomic_store(&stop_load, true);
    }
    for (int i = 0; i < started; i++)
        pthread_join(cl[i].thread, NULL);
    double secs = seconds_since(&t0);
    atomic_store(&mon.stop, true);
    pthread_join(mon.thread, NULL);

    size_t requests = 0, created = 0, unknowns = 0;
    long n503 = 0, other = 0, hung = 0, lost = 0;
    double slowest_ms = 0, first_503 = 0, last_503 = 0;
    for (int i = 0; i < started; i++) {
        if (cl[i].failure[0] != '\0')
            fail("client %d (seed %u), after %d requests: %s", i, cl[i].seed, cl[i].done, cl[i].failure);
        requests += (size_t)cl[i].done;
        for (int k = 0; k < cl[i].done; k++) {
            created += cl[i].out[k].status == 201;
            unknowns += outcome_unknown(&cl[i].out[k]);
        }
        n503 += cl[i].n503;
        other += cl[i].other;
        hung += cl[i].hung;
        lost += cl[i].lost;
        if (cl[i].slowest_ms > slowest_ms)
            slowest_ms = cl[i].slowest_ms;
        if (cl[i].n503 > 0 && (first_503 == 0 || cl[i].first_503 < first_503))
            first_503 = cl[i].first_503;
        if (cl[i].last_503 > last_503)
            last_503 = cl[i].last_503;
        if (cl[i].note[0] != '\0' && (cl[i].other || cl[i].hung || cl[i].lost))
            fail("client %d: %ld other statuses, %ld hung, %ld lost; the first: %s", i, cl[i].other, cl[i].hung,
                 cl[i].lost, cl[i].note);
    }
    if (mon.failure[0] != '\0')
        fail("%s", mon.failure);
    if (created == 0 || created + unknowns == requests)
        fail("%zu of %zu transfers were answered 201: the load did not mix transfers and refusals", created, requests);

    struct outcome **ok = calloc(created ? created : 1, sizeof(*ok));
    struct outcome **unknown = calloc(unknowns ? unknowns : 1, sizeof(*unknown));
    size_t n = 0, nu = 0;
    for (int i = 0; i < started; i++) {
        for (int k = 0; k < cl[i].done; k++) {
            if (cl[i].out[k].status == 201)
                ok[n++] = &cl[i].out[k];
            else if (outcome_unknown(&cl[i].out[k]))
                unknown[nu++] = &cl[i].out[k];
        }
    }
    qsort(ok, n, sizeof(*ok), by_id);
    for (size_t i = 1; i < n; i++)
        if (ok[i]->id == ok[i - 1]->id)
            fail("transfer %" PRId64 " was answered 201 to two requests", ok[i]->id);
    if (acked_path != NULL) {
        FILE *f = fopen(acked_path, "w");
        for (size_t i = 0; f != NULL && i < n; i++)
            fprintf(f, "%" PRId64 "\n", ok[i]->id);
        if (f == NULL || fclose(f) != 0)
            fail("cannot write %s", acked_path);
    }
    if (pg == NULL)
        pg = connect_for_audit();
    if (PQstatus(pg) != CONNECTION_OK)
        fail("connecting for the audit: %s", PQerrorMessage(pg));
    else
        audit(pg, ok, n, unknown, nu);

    if (idempotent) {
        /* a stored outcome per key of ours that made a transfer, and none
         * for the refusals: they changed nothing */
        char pid[16];
        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        const char *p[] = {pid};
        PGresult *res = PQexecParams(pg, "SELECT count(*), count(*) FILTER (WHERE status = 201) FROM idempotency_keys "
                               "WHERE key LIKE 'scale-' || $1 || '-%'",
                           1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            fail("reading idempotency_keys: %s", PQresultErrorMessage(res));
        else if ((size_t)atoll(PQgetvalue(res, 0, 0)) != n || (size_t)atoll(PQgetvalue(res, 0, 1)) != n)
            fail("idempotency_keys holds %s keys (%s with 201) of this run; %zu were sent, %zu answered 201",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), requests, n);
        PQclear(res);
    }
    PQfinish(pg);

    size_t refused = 0;
    for (int i = 0; i < started; i++)
        for (int k = 0; k < cl[i].done; k++)
            refused += cl[i].out[k].status == 422;
    if (stats_path != NULL) {
        FILE *f = fopen(stats_path, "w");
        if (f != NULL)
            fprintf(f,
                    "requests=%zu\nstatus_201=%zu\nstatus_422=%zu\nstatus_503=%ld\nstatus_other=%ld\nhung=%ld\nlost=%ld\n"
                    "slowest_ms=%.0f\nfirst_503=%.3f\nlast_503=%.3f\nacknowledged=%zu\nfound=%zu\nextra=%zu\n"
                    "samples=%d\nmonitor_reconnects=%d\nseconds=%.1f\nfailures=%d\n",
                    requests, n, refused, n503, other, hung, lost, slowest_ms, first_503, last_503, n, found, extra,
                    mon.samples, mon.reconnects, secs, failures);
        if (f == NULL || fclose(f) != 0)
            fail("cannot write %s", stats_path);
    }

    if (failures == 0 && keep_going)
        printf("%zu transfer requests from %d clients in %.1f s: %zu answered 201, %zu 422, %ld 503, "
               "0 other, 0 hung (limit %ld ms; slowest %.0f ms); all %zu acknowledged transfers in the table "
               "(and %zu whose answer was a 503 or lost); %d samples of the balances; books balanced (sum %lld)\n",
               requests, started, secs, n, refused, n503, request_timeout_ms, slowest_ms, n, extra, mon.samples,
               deposits);
    else if (failures == 0)
        printf("%zu transfer requests%s from %d clients in %.1f s (%.0f/s): %zu answered 201, %zu 422; "
               "%d samples of the balances; books balanced (sum %lld)\n",
               requests, idempotent ? " (each sent twice with its Idempotency-Key)" : "", started, secs,
               (double)requests * (idempotent ? 2 : 1) / secs, n, requests - n, mon.samples, deposits);
    free(ok);
    free(unknown);
    for (int i = 0; i < started; i++)
        free(cl[i].out);
    free(cl);
    curl_global_cleanup();
    return failures == 0 ? 0 : 1;
}
