/* GET /export/orders end to end (API.md, "Streaming export"): NDJSON, one
 * order per line in id order, streamed as PostgreSQL produces the rows.
 *
 * "small": a few thousand orders, read whole, for the format and ?after.
 * "large": a million orders inserted with SQL, for what streaming promises:
 * memory that stays flat while the whole table goes out, a slow reader that
 * holds the query back instead of filling a buffer, and a client that hangs
 * up taking its transaction with it. The server's memory is its VmRSS in
 * /proc, sampled every 100 ms; its database work is what pg_stat_activity
 * shows for application_name 'h2pg'. The figures measured are printed to
 * stderr. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define SMALL_BULK 2497     /* plus 3 made through the API: 2,500, not a multiple of the 1000-row batch */
#define LARGE_ROWS 1000000
#define RSS_BOUND_KIB (32 * 1024)       /* the export's peak over the RSS right before it */
#define RSS_GROWTH_BOUND_KIB (16 * 1024) /* from a tenth of the way through to the end */
#define STR_(x) #x
#define XSTR(x) STR_(x)
#define STALL_MS 3000
#define LARGE_REQUEST_TIMEOUT "1500" /* ms: shorter than STALL_MS and the pauses */
#define STALL_LIMIT_MS 3000      /* STREAM_STALL_TIMEOUT_MS of the stall-limit test's server */
#define STALL_RSS_BOUND_KIB (16 * 1024)
#define RELEASE_BOUND_MS 1000
#define IO_TIMEOUT_MS 30000

/* ---- NDJSON, fed in pieces of any size ---- */

struct ndjson {
    char *partial; /* an unfinished line */
    size_t plen, pcap;
    long long lines;
    int64_t first_id, last_id;
    bool quick;       /* parse only every 1000th line in full */
    bool keep;        /* keep every parsed line in `kept` */
    json_t *kept;     /* array, when keep */
    char error[512];  /* the first problem, or "" */
    long long check_at; /* when lines reaches it, on_mark runs once */
    void (*on_mark)(struct ndjson *);
    long rss_at_mark;
    pid_t pid;
};

/* The id of a line the way the service writes it ({"id":N,...}), or -1. */
static int64_t quick_id(const char *line, size_t len)
{
    static const char prefix[] = "{\"id\":";
    size_t pl = sizeof(prefix) - 1;
    if (len < pl + 2 || memcmp(line, prefix, pl) != 0 || line[len - 1] != '}')
        return -1;
    int64_t id = 0;
    size_t i = pl;
    for (; i < len && line[i] >= '0' && line[i] <= '9' && id < INT64_MAX / 10; i++)
        id = id * 10 + (line[i] - '0');
    return i > pl && i < len && line[i] == ',' ? id : -1;
}

static void line_done(struct ndjson *n, const char *line, size_t len)
{
    if (n->error[0] != '\0')
        return;
    int64_t id = -1;
    if (n->quick && (n->lines + 1) % 1000 != 0) {
        /* most lines of a million-row export: the framing and the id only,
         * so that the reader keeps up with the server */
        id = quick_id(line, len);
        if (id < 0)
            snprintf(n->error, sizeof(n->error), "line %lld is not an order object: %.*s", n->lines + 1,
                     (int)(len > 300 ? 300 : len), line);
    } else {
        json_error_t e;
        json_t *o = json_loadb(line, len, 0, &e);
        json_t *jid = json_object_get(o, "id");
        if (!json_is_object(o) || !json_is_integer(jid) || json_object_size(o) != 7)
            snprintf(n->error, sizeof(n->error), "line %lld is not an order object: %.*s", n->lines + 1,
                     (int)(len > 300 ? 300 : len), line);
        else
            id = json_integer_value(jid);
        if (id >= 0 && n->keep)
            json_array_append(n->kept, o);
        json_decref(o);
    }
    if (id < 0)
        return;
    if (n->lines > 0 && id <= n->last_id) {
        snprintf(n->error, sizeof(n->error), "line %lld: id %lld after id %lld", n->lines + 1, (long long)id,
                 (long long)n->last_id);
        return;
    }
    if (n->lines == 0)
        n->first_id = id;
    n->last_id = id;
    n->lines++;
    if (n->on_mark != NULL && n->lines == n->check_at)
        n->on_mark(n);
}

static void ndjson_feed(struct ndjson *n, const char *p, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t take = nl ? (size_t)(nl - p) : len;
        if (nl != NULL && n->plen == 0) {
            line_done(n, p, take); /* the common case: a whole line in view */
        } else {
            if (n->plen + take > n->pcap) {
                size_t cap = n->pcap ? n->pcap : 4096;
                while (cap < n->plen + take)
                    cap *= 2;
                char *b = realloc(n->partial, cap);
                ck_assert_ptr_nonnull(b);
                n->partial = b;
                n->pcap = cap;
            }
            memcpy(n->partial + n->plen, p, take);
            n->plen += take;
            if (nl != NULL) {
                line_done(n, n->partial, n->plen);
                n->plen = 0;
            }
        }
        if (nl == NULL)
            break;
        p = nl + 1;
        len -= take + 1;
    }
}

/* The stream ended: no unfinished line may be left. */
static void ndjson_end(struct ndjson *n)
{
    if (n->error[0] == '\0' && n->plen > 0)
        snprintf(n->error, sizeof(n->error), "the export ends inside a line (no final newline): %.*s",
                 (int)(n->plen > 200 ? 200 : n->plen), n->partial);
}

static void ndjson_free(struct ndjson *n)
{
    free(n->partial);
    json_decref(n->kept);
}

/* ---- a raw HTTP/1.1 response: headers, then a chunked body, fed in pieces ---- */

enum { HEADERS, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, DONE };

struct raw_export {
    int state;
    char head[8192];
    size_t head_len;
    char line[256]; /* a chunk-size or trailer line */
    size_t line_len;
    size_t remaining; /* of the chunk's data */
    int crlf;         /* bytes of the CRLF after the data seen */
    long status;
    long long body_bytes;
    struct ndjson *out;
    char error[256];
};

static void raw_feed(struct raw_export *x, const char *p, size_t len)
{
    while (len > 0 && x->error[0] == '\0' && x->state != DONE) {
        switch (x->state) {
        case HEADERS: {
            ck_assert_msg(x->head_len < sizeof(x->head) - 1, "response headers too long");
            x->head[x->head_len++] = *p++;
            len--;
            x->head[x->head_len] = '\0';
            if (x->head_len >= 4 && memcmp(x->head + x->head_len - 4, "\r\n\r\n", 4) == 0) {
                if (sscanf(x->head, "HTTP/1.%*d %ld", &x->status) != 1)
                    snprintf(x->error, sizeof(x->error), "not an HTTP response: %.100s", x->head);
                else if (strcasestr(x->head, "\r\ntransfer-encoding: chunked\r\n") == NULL)
                    snprintf(x->error, sizeof(x->error), "the response is not chunked:\n%.200s", x->head);
                x->state = CHUNK_SIZE;
            }
            break;
        }
        case CHUNK_SIZE:
        case TRAILER: {
            char c = *p++;
            len--;
            if (x->line_len >= sizeof(x->line) - 1) {
                snprintf(x->error, sizeof(x->error), "a chunk line too long");
                break;
            }
            x->line[x->line_len++] = c;
            if (x->line_len < 2 || memcmp(x->line + x->line_len - 2, "\r\n", 2) != 0)
                break;
            x->line[x->line_len - 2] = '\0';
            size_t line_len = x->line_len - 2;
            x->line_len = 0;
            if (x->state == TRAILER) {
                if (line_len == 0)
                    x->state = DONE;
                break;
            }
            char *end = NULL;
            unsigned long size = strtoul(x->line, &end, 16);
            if (end == x->line) {
                snprintf(x->error, sizeof(x->error), "a bad chunk size line \"%.100s\"", x->line);
                break;
            }
            x->remaining = size;
            x->state = size == 0 ? TRAILER : CHUNK_DATA;
            break;
        }
        case CHUNK_DATA: {
            size_t take = len < x->remaining ? len : x->remaining;
            ndjson_feed(x->out, p, take);
            x->body_bytes += (long long)take;
            p += take;
            len -= take;
            x->remaining -= take;
            if (x->remaining == 0)
                x->state = CHUNK_CRLF;
            break;
        }
        case CHUNK_CRLF:
            if (*p != "\r\n"[x->crlf]) {
                snprintf(x->error, sizeof(x->error), "chunk data not followed by CRLF");
                break;
            }
            p++;
            len--;
            if (++x->crlf == 2) {
                x->crlf = 0;
                x->state = CHUNK_SIZE;
            }
            break;
        }
    }
    if (len > 0 && x->error[0] == '\0')
        snprintf(x->error, sizeof(x->error), "%zu bytes after the end of the response", len);
}

/* A connection whose receive buffer is small, so that a reader that stops
 * reading stops the sender soon. */
static int connect_small_window(int port) { return test_raw_connect_rcvbuf(port, 64 * 1024); }

/* Reads from fd into x until at least `bytes` more have come (-1: until the
 * response is done); false on EOF or when nothing arrives for
 * IO_TIMEOUT_MS (a stall, not a total: a million rows take minutes under
 * the sanitizer build on busy cores). A bounded read drains the socket as
 * fast as it can, 64 KiB at a time like a typical client, and parses
 * afterwards. */
static bool raw_read(int fd, struct raw_export *x, long long bytes)
{
    char *held = bytes > 0 ? malloc((size_t)bytes + 65536) : NULL;
    char chunk[65536];
    long long got = 0;
    bool ok = true;
    int64_t deadline = now_ms() + IO_TIMEOUT_MS;
    while ((bytes < 0 || got < bytes) && x->state != DONE && x->error[0] == '\0') {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            ok = false;
            break;
        }
        char *into = held != NULL ? held + got : chunk;
        ssize_t n = recv(fd, into, sizeof(chunk), 0);
        if (n <= 0) {
            ok = false;
            break;
        }
        got += n;
        deadline = now_ms() + IO_TIMEOUT_MS;
        if (held == NULL)
            raw_feed(x, chunk, (size_t)n);
    }
    if (held != NULL)
        raw_feed(x, held, (size_t)got);
    free(held);
    return ok;
}

/* ---- the server's memory and its backends ---- */

static long rss_kib(pid_t pid)
{
    long kib = test_rss_kib(pid);
    ck_assert_msg(kib > 0, "no VmRSS for process %ld", (long)pid);
    return kib;
}

struct sampler {
    pthread_t thread;
    pid_t pid;
    atomic_bool stop;
    long peak, last;
    int samples;
};

static void *sampler_run(void *arg)
{
    struct sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        long kib = rss_kib(s->pid);
        s->last = kib;
        if (kib > s->peak)
            s->peak = kib;
        s->samples++;
        sleep_ms(100);
    }
    return NULL;
}

/* How many of the server's backends serving an export are in each state
 * that means work: 'active' and 'idle in transaction' (also aborted). Only
 * the export's statements count (its last statement names the cursor): the
 * server's own background reads (outbox sweep, pruning) may be active at any
 * sample and are not what these tests watch. */
static void backend_states(PGconn *c, long long *active, long long *in_tx)
{
    PGresult *r = PQexec(c, "SELECT count(*) FILTER (WHERE state = 'active'), "
                            "count(*) FILTER (WHERE state LIKE 'idle in transaction%') "
                            "FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'h2pg' "
                            "AND query LIKE '%export_orders%'");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "pg_stat_activity: %s", PQresultErrorMessage(r));
    *active = atoll(PQgetvalue(r, 0, 0));
    *in_tx = atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
}

/* Every backend of this database but the test's own, for failure messages (malloc'd). */
static char *describe_backends(PGconn *c) { return test_pg_describe_backends(c); }

/* ---- small: the format ---- */

static char *small_db;
static test_server small;

static void post_order(int64_t user, const char *item)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/users/%lld/orders", small.base_url, (long long)user);
    json_t *j = json_pack("{s:s, s:i, s:i}", "item", item, "quantity", 3, "price_cents", 1234);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_response r;
    test_http(&r, "POST", url, body, strlen(body), headers);
    ck_assert_msg(r.status == 201, "POST %s: %ld %s", url, r.status, r.body);
    test_response_free(&r);
    free(body);
}

static void small_setup(void)
{
    test_server_start_on_fresh_db(&small, &small_db, NULL);
    char url[256];
    snprintf(url, sizeof(url), "%s/users", small.base_url);
    static const char user[] = "{\"name\":\"exporter\",\"email\":\"exporter@export.test\"}";
    const char *headers[] = {"Content-Type: application/json", NULL};
    test_response r;
    test_http(&r, "POST", url, user, strlen(user), headers);
    ck_assert_msg(r.status == 201, "POST /users: %ld %s", r.status, r.body);
    json_t *u = test_response_json(&r);
    int64_t uid = json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    test_response_free(&r);
    /* items that would break a line-per-order format if written raw */
    post_order(uid, "two\nlines and a \\ backslash");
    post_order(uid, "\"quoted\" \xF0\x9F\x93\xA6 \xE2\x80\xA8 separator");
    PGconn *c = test_pg_connect(small_db);
    test_pg_exec(c, "INSERT INTO users (name, email) VALUES ('second', 'second@export.test')");
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) "
             "SELECT CASE WHEN g %% 3 = 0 THEN (SELECT max(id) FROM users) ELSE %lld END, 'bulk ' || g, "
             "1 + g %% 7, g * 11, (1 + g %% 7) * g * 11 FROM generate_series(1, %d) g",
             (long long)uid, SMALL_BULK);
    test_pg_exec(c, sql);
    PQfinish(c);
    post_order(uid, "the last one");
}

static void small_teardown(void)
{
    test_server_stop_and_drop_db(&small, &small_db);
}

/* Every order id after `after`, ascending, from the table. */
static int64_t *table_ids(const char *conninfo, long long after, int *count)
{
    PGconn *c = test_pg_connect(conninfo);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT id FROM orders WHERE id > %lld ORDER BY id", after);
    PGresult *res = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    *count = PQntuples(res);
    int64_t *ids = calloc((size_t)*count + 1, sizeof(*ids));
    ck_assert_ptr_nonnull(ids);
    for (int i = 0; i < *count; i++)
        ids[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    PQfinish(c);
    return ids;
}

/* GET /export/orders<query> in full; checks the framing and returns the
 * lines parsed (n->kept). */
static void export_whole(const char *query, struct ndjson *n)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/export/orders%s", small.base_url, query);
    test_response r;
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_msg(r.status == 200, "GET %s: %ld %.300s", url, r.status, r.body);
    char *ct = test_response_header(&r, "Content-Type");
    ck_assert_msg(ct != NULL && strncasecmp(ct, "application/x-ndjson", 20) == 0 && (ct[20] == '\0' || ct[20] == ';'),
                  "Content-Type %s", ct ? ct : "(none)");
    free(ct);
    char *te = test_response_header(&r, "Transfer-Encoding");
    ck_assert_msg(te != NULL && strcasecmp(te, "chunked") == 0, "Transfer-Encoding %s:\n%s", te ? te : "(none)",
                  r.headers);
    free(te);
    char *cl = test_response_header(&r, "Content-Length");
    ck_assert_msg(cl == NULL, "a streamed export with Content-Length %s", cl);
    *n = (struct ndjson){.keep = true, .kept = json_array()};
    ndjson_feed(n, r.body, r.body_len);
    ndjson_end(n);
    ck_assert_msg(n->error[0] == '\0', "GET %s: %s", url, n->error);
    ck_assert_msg(r.body_len == 0 || memmem(r.body, r.body_len, "\n\n", 2) == NULL, "an empty line in the export");
    test_response_free(&r);
}

static void assert_export_is(const struct ndjson *n, const int64_t *ids, int count, const char *what)
{
    ck_assert_msg(n->lines == count, "%s: %lld lines for %d orders", what, n->lines, count);
    for (int i = 0; i < count; i++) {
        int64_t id = json_integer_value(json_object_get(json_array_get(n->kept, (size_t)i), "id"));
        ck_assert_msg(id == ids[i], "%s: line %d is order %lld, expected %lld", what, i + 1, (long long)id,
                      (long long)ids[i]);
    }
}

START_TEST(export_is_chunked_ndjson_with_every_order_once_in_id_order)
{
    int count;
    int64_t *ids = table_ids(small_db, 0, &count);
    ck_assert_int_eq(count, SMALL_BULK + 3);
    struct ndjson n;
    export_whole("", &n);
    assert_export_is(&n, ids, count, "the whole export");
    ndjson_free(&n);
    free(ids);
}
END_TEST

START_TEST(each_exported_line_is_the_order_as_get_orders_id_has_it)
{
    struct ndjson n;
    export_whole("", &n);
    size_t total = json_array_size(n.kept);
    ck_assert_int_eq(total, SMALL_BULK + 3);
    /* the first two and the last (made through the API, awkward items), and a spread between */
    size_t picks[32];
    size_t k = 0;
    picks[k++] = 0;
    picks[k++] = 1;
    picks[k++] = total - 1;
    for (size_t i = 999; i < total && k < 32; i += 97)
        picks[k++] = i;
    for (size_t i = 0; i < k; i++) {
        json_t *line = json_array_get(n.kept, picks[i]);
        char url[256];
        snprintf(url, sizeof(url), "%s/orders/%lld", small.base_url,
                 (long long)json_integer_value(json_object_get(line, "id")));
        test_response r;
        test_http(&r, "GET", url, NULL, 0, NULL);
        ck_assert_msg(r.status == 200, "GET %s: %ld", url, r.status);
        json_t *o = test_response_json(&r);
        char *got = json_dumps(line, JSON_COMPACT | JSON_SORT_KEYS);
        ck_assert_msg(json_equal(o, line), "line %zu: %s\nGET %s: %s", picks[i] + 1, got, url, r.body);
        free(got);
        json_decref(o);
        test_response_free(&r);
    }
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(n.kept, 0), "item")), "two\nlines and a \\ backslash");
    ndjson_free(&n);
}
END_TEST

START_TEST(after_starts_the_export_after_that_id)
{
    int count;
    int64_t *all = table_ids(small_db, 0, &count);
    /* somewhere in the middle; exactly one batch left; exactly two; none; before the first */
    const long long afters[] = {all[1234], all[count - 1001], all[count - 2001], all[count - 1], all[0] - 1, all[0],
                                all[count - 1] + 1000};
    for (size_t i = 0; i < sizeof(afters) / sizeof(afters[0]); i++) {
        if (afters[i] < 1)
            continue;
        int n_want;
        int64_t *want = table_ids(small_db, afters[i], &n_want);
        char query[64];
        snprintf(query, sizeof(query), "?after=%lld", afters[i]);
        struct ndjson n;
        export_whole(query, &n);
        assert_export_is(&n, want, n_want, query);
        ndjson_free(&n);
        free(want);
    }
    free(all);
}
END_TEST

START_TEST(a_bad_after_is_400_problem_json)
{
    static const char *const bad[] = {"x", "-1", "0", "1.5", "9223372036854775808", "12abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char url[256];
        snprintf(url, sizeof(url), "%s/export/orders?after=%s", small.base_url, bad[i]);
        test_response r;
        test_http(&r, "GET", url, NULL, 0, NULL);
        ck_assert_msg(r.status == 400, "after=%s: status %ld %.300s", bad[i], r.status, r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
}
END_TEST

/* ---- large: a million orders ---- */

static char *large_db;
static test_server large;
static int64_t large_max_id;

static void large_setup(void)
{
    large_db = test_pg_create_db();
    /* the schema first, then the rows, then the server: it starts on a full table */
    char db_kv[2048];
    snprintf(db_kv, sizeof(db_kv), "DATABASE_URL=%s", large_db);
    const char *args[] = {"migrate", NULL};
    const char *env[] = {db_kv, NULL};
    char *out = NULL;
    int status = test_run_binary(args, env, &out);
    ck_assert_msg(status == 0, "h2pg migrate: %d\n%s", status, out);
    free(out);
    PGconn *c = test_pg_connect(large_db);
    test_pg_exec(c, "INSERT INTO users (name, email) VALUES ('bulk', 'bulk@export.test')");
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) "
             "SELECT u.id, 'item number ' || g, 1 + g %% 100, g %% 100000, (1 + g %% 100)::bigint * (g %% 100000) "
             "FROM generate_series(1, %d) g, (SELECT id FROM users) u",
             LARGE_ROWS);
    test_pg_exec(c, sql);
    test_pg_exec(c, "VACUUM ANALYZE orders");
    large_max_id = test_pg_int(c, "SELECT max(id) FROM orders");
    PQfinish(c);
    /* A request deadline shorter than every pause below: a reader that
     * pauses (STALL_MS, PAUSE_MS) is bounded by the stall limit
     * (STREAM_STALL_TIMEOUT_MS, 60 s by default), not by the deadline. */
    const char *server_env[] = {"REQUEST_TIMEOUT_MS=" LARGE_REQUEST_TIMEOUT,
                                /* six readers at once, maybe all on one of the two threads */
                                "EXPORT_MAX_CONCURRENT=16", NULL};
    test_server_start(&large, large_db, server_env);
}

static void large_teardown(void)
{
    test_server_stop_and_drop_db(&large, &large_db);
}

static size_t on_export_body(char *p, size_t size, size_t nmemb, void *arg)
{
    ndjson_feed(arg, p, size * nmemb);
    return size * nmemb;
}

static void mark_rss(struct ndjson *n) { n->rss_at_mark = rss_kib(n->pid); }

START_TEST(a_million_row_export_streams_every_row_in_flat_memory)
{
    /* warm up: the first export allocates what every export reuses */
    char url[256];
    snprintf(url, sizeof(url), "%s/export/orders?after=%lld", large.base_url, (long long)(large_max_id - 5000));
    test_response w;
    test_http(&w, "GET", url, NULL, 0, NULL);
    ck_assert_int_eq(w.status, 200);
    test_response_free(&w);

    long before = rss_kib(large.pid);
    struct sampler s = {.pid = large.pid, .peak = before, .last = before};
    atomic_init(&s.stop, false);
    ck_assert_int_eq(pthread_create(&s.thread, NULL, sampler_run, &s), 0);

    struct ndjson n = {.quick = true, .check_at = LARGE_ROWS / 10, .on_mark = mark_rss, .pid = large.pid};
    snprintf(url, sizeof(url), "%s/export/orders", large.base_url);
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_export_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &n);
    int64_t t0 = now_ms();
    CURLcode rc = curl_easy_perform(c);
    int64_t t1 = now_ms();
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    atomic_store(&s.stop, true);
    pthread_join(s.thread, NULL);
    ndjson_end(&n);

    fprintf(stderr,
            "large export: %lld lines in %.1f s; server VmRSS before %ld KiB, at 10%% %ld KiB, peak %ld KiB "
            "(+%ld KiB), after %ld KiB; %d samples\n",
            n.lines, (double)(t1 - t0) / 1000.0, before, n.rss_at_mark, s.peak, s.peak - before, rss_kib(large.pid),
            s.samples);
    ck_assert_msg(rc == CURLE_OK, "the export failed: %s", curl_easy_strerror(rc));
    ck_assert_int_eq(status, 200);
    ck_assert_msg(n.error[0] == '\0', "%s", n.error);
    ck_assert_int_eq(n.lines, LARGE_ROWS);
    ck_assert_int_eq(n.last_id, large_max_id);
    ck_assert_int_eq(n.first_id, large_max_id - LARGE_ROWS + 1);
    ck_assert_msg(s.peak - before <= RSS_BOUND_KIB, "the server's RSS grew by %ld KiB during the export (bound %d KiB)",
                  s.peak - before, RSS_BOUND_KIB);
    ck_assert_msg(s.peak - n.rss_at_mark <= RSS_GROWTH_BOUND_KIB,
                  "the server's RSS kept growing with the rows: %ld KiB at 10%%, peak %ld KiB", n.rss_at_mark, s.peak);
    ndjson_free(&n);
}
END_TEST

/* Waits until no h2pg backend is active or in a transaction; returns the ms it took, or -1 after 5 s. */
static int64_t wait_released(PGconn *pg)
{
    int64_t t0 = now_ms();
    while (now_ms() - t0 < 5000) {
        long long active, in_tx;
        backend_states(pg, &active, &in_tx);
        if (active == 0 && in_tx == 0)
            return now_ms() - t0;
        sleep_ms(10);
    }
    return -1;
}

START_TEST(a_stalled_reader_holds_the_query_back_without_buffering_and_then_gets_everything)
{
    PGconn *pg = test_pg_connect(large_db);
    int fd = connect_small_window(large.port);
    static const char req[] = "GET /export/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    test_raw_send(fd, req, sizeof(req) - 1);
    struct ndjson n = {.quick = true};
    struct raw_export x = {.state = HEADERS, .out = &n};
    ck_assert_msg(raw_read(fd, &x, 8192), "no first 8 KB of the export");
    ck_assert_msg(x.error[0] == '\0', "%s", x.error);
    ck_assert_int_eq(x.status, 200);
    long long read_before = x.body_bytes;

    /* stop reading */
    long rss_start = rss_kib(large.pid), rss_max = rss_start, rss_min = rss_start;
    int active_late = 0;
    int queued_1s = -1, queued_end = -1;
    long long active = 0, in_tx = 0;
    for (int t = 100; t <= STALL_MS; t += 100) {
        sleep_ms(100);
        long kib = rss_kib(large.pid);
        rss_max = kib > rss_max ? kib : rss_max;
        rss_min = kib < rss_min ? kib : rss_min;
        backend_states(pg, &active, &in_tx);
        if (t >= 1000 && active > 0)
            active_late++;
        if (t == 1000)
            ck_assert_int_eq(ioctl(fd, FIONREAD, &queued_1s), 0);
    }
    ck_assert_int_eq(ioctl(fd, FIONREAD, &queued_end), 0);
    fprintf(stderr,
            "stalled reader: %lld body bytes read before the stall; during %d ms the server's VmRSS stayed in "
            "%ld..%ld KiB (start %ld); bytes waiting at the client %d after 1 s, %d at the end; at the end %lld "
            "active and %lld idle-in-transaction backends\n",
            read_before, STALL_MS, rss_min, rss_max, rss_start, queued_1s, queued_end, active, in_tx);
    ck_assert_msg(rss_max - rss_min <= STALL_RSS_BOUND_KIB, "the server's RSS moved by %ld KiB while the client stalled",
                  rss_max - rss_min);
    ck_assert_msg(queued_end == queued_1s, "the server kept sending into a stalled connection: %d then %d bytes waiting",
                  queued_1s, queued_end);
    ck_assert_msg(active == 0, "the export's query is still active at the end of the stall");
    ck_assert_msg(active_late == 0, "the server's backend was active in %d of the samples after the first second",
                  active_late);
    ck_assert_msg(in_tx == 1, "%lld backends idle in transaction during the stall; expected the export's one", in_tx);

    /* resume: the whole export, intact */
    ck_assert_msg(raw_read(fd, &x, -1), "the export did not finish after the stall (%lld lines; %s)", n.lines, x.error);
    close(fd);
    ck_assert_msg(x.error[0] == '\0', "%s", x.error);
    ck_assert_int_eq(x.state, DONE);
    ndjson_end(&n);
    ck_assert_msg(n.error[0] == '\0', "%s", n.error);
    ck_assert_int_eq(n.lines, LARGE_ROWS);
    ck_assert_int_eq(n.last_id, large_max_id);
    /* the last chunk leaves before the transaction ends: give the commit a moment */
    int64_t ms = wait_released(pg);
    ck_assert_msg(ms >= 0 && ms <= RELEASE_BOUND_MS, "the export's transaction was still open %lld ms after its end",
                  (long long)ms);
    ndjson_free(&n);
    PQfinish(pg);
}
END_TEST

START_TEST(a_client_that_hangs_up_mid_export_releases_its_transaction_within_a_second)
{
    PGconn *pg = test_pg_connect(large_db);
    /* once while the server waits on a full socket, once while it streams */
    static const struct {
        const char *how;
        long long read_bytes;
        int pause_ms;
    } cases[] = {{"stalled", 8192, 500}, {"streaming", 4 << 20, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fd = connect_small_window(large.port);
        static const char req[] = "GET /export/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        test_raw_send(fd, req, sizeof(req) - 1);
        struct ndjson n = {.quick = true};
        struct raw_export x = {.state = HEADERS, .out = &n};
        ck_assert_msg(raw_read(fd, &x, cases[i].read_bytes), "%s: no start of the export", cases[i].how);
        ck_assert_int_eq(x.status, 200);
        sleep_ms(cases[i].pause_ms);
        long long active, in_tx;
        backend_states(pg, &active, &in_tx);
        if (active + in_tx < 1)
            ck_abort_msg("%s: the export holds no transaction before the hang-up (%lld lines read):%s", cases[i].how,
                         n.lines, describe_backends(pg));
        close(fd); /* with unread data: a reset */
        int64_t ms = wait_released(pg);
        fprintf(stderr, "hang-up while %s: the server's backend left its transaction after %lld ms\n", cases[i].how,
                (long long)ms);
        ck_assert_msg(ms >= 0 && ms <= RELEASE_BOUND_MS, "%s: the transaction was still open %lld ms after the hang-up",
                      cases[i].how, (long long)ms);
        ndjson_free(&n);
    }
    PQfinish(pg);

    /* and the server goes on serving, from the database too */
    char url[256];
    snprintf(url, sizeof(url), "%s/orders/%lld", large.base_url, (long long)large_max_id);
    test_response r;
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_msg(r.status == 200, "GET %s: %ld %s", url, r.status, r.body);
    test_response_free(&r);
    snprintf(url, sizeof(url), "%s/export/orders?after=%lld", large.base_url, (long long)(large_max_id - 1500));
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_int_eq(r.status, 200);
    struct ndjson n = {0};
    ndjson_feed(&n, r.body, r.body_len);
    ndjson_end(&n);
    ck_assert_msg(n.error[0] == '\0', "%s", n.error);
    ck_assert_int_eq(n.lines, 1500);
    ndjson_free(&n);
    test_response_free(&r);
}
END_TEST

/* A reader that stops for longer than STREAM_STALL_TIMEOUT_MS is cut off:
 * the body ends without its last chunk, and the transaction is released,
 * not before the limit and soon after it. */
START_TEST(a_reader_stalled_past_the_stall_limit_is_cut_off_and_its_transaction_released)
{
    test_server s;
    const char *env[] = {"REQUEST_TIMEOUT_MS=1000", "STREAM_STALL_TIMEOUT_MS=" XSTR(STALL_LIMIT_MS), NULL};
    test_server_start(&s, large_db, env);
    PGconn *pg = test_pg_connect(large_db);
    int fd = connect_small_window(s.port);
    static const char req[] = "GET /export/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    test_raw_send(fd, req, sizeof(req) - 1);
    struct ndjson n = {.quick = true};
    struct raw_export x = {.state = HEADERS, .out = &n};
    ck_assert_msg(raw_read(fd, &x, 8192), "no first 8 KB of the export");
    ck_assert_int_eq(x.status, 200);
    int64_t t0 = now_ms();
    /* stop reading; watch the export's transaction */
    int64_t released = -1;
    long long active, in_tx;
    while (now_ms() - t0 < STALL_LIMIT_MS + 20000) {
        backend_states(pg, &active, &in_tx);
        if (active == 0 && in_tx == 0) {
            released = now_ms() - t0;
            break;
        }
        sleep_ms(20);
    }
    /* what the server had sent before it gave up is still readable; the end is not */
    bool ended = raw_read(fd, &x, -1) && x.state == DONE && x.error[0] == '\0';
    close(fd);
    test_server_stop(&s);
    fprintf(stderr,
            "stall limit %d ms: the export's transaction was released %lld ms after the reader stopped; the body "
            "had %lld lines, %s\n",
            STALL_LIMIT_MS, (long long)released, n.lines, x.state == DONE ? "complete" : "cut off");
    ck_assert_msg(released >= 0, "the stalled export's transaction was still open after %d ms",
                  STALL_LIMIT_MS + 20000);
    /* the server's wait began a moment before the reader's last read */
    ck_assert_msg(released >= STALL_LIMIT_MS - 500, "the export was cut after %lld ms, before the stall limit (%d ms)",
                  (long long)released, STALL_LIMIT_MS);
    ck_assert_msg(!ended, "the stalled export ended as if complete (%lld lines)", n.lines);
    ck_assert_msg(n.lines < LARGE_ROWS, "every row arrived although the reader stalled");
    ndjson_free(&n);
    PQfinish(pg);
}
END_TEST

/* Every pause of a reader ends with the server's socket going from full to
 * writable while the export's task may be between two chunks; many readers
 * pausing at once make many such moments. */
START_TEST(readers_that_pause_and_resume_get_the_whole_export_and_the_server_survives)
{
    enum { READERS = 6, ROUNDS = 2, PAUSE_MS = 2000, ROWS = 150000 };
    for (int round = 0; round < ROUNDS; round++) {
        int fds[READERS];
        struct ndjson n[READERS];
        struct raw_export x[READERS];
        char req[128];
        snprintf(req, sizeof(req), "GET /export/orders?after=%lld HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                 (long long)(large_max_id - ROWS));
        for (int i = 0; i < READERS; i++) {
            n[i] = (struct ndjson){.quick = true};
            x[i] = (struct raw_export){.state = HEADERS, .out = &n[i]};
            fds[i] = connect_small_window(large.port);
            test_raw_send(fds[i], req, strlen(req));
        }
        for (int i = 0; i < READERS; i++) {
            ck_assert_msg(raw_read(fds[i], &x[i], 8192), "round %d, reader %d: no start of the export", round, i);
            ck_assert_int_eq(x[i].status, 200);
        }
        sleep_ms(PAUSE_MS);
        for (int i = 0; i < READERS; i++) {
            bool ok = raw_read(fds[i], &x[i], -1);
            close(fds[i]);
            ck_assert_msg(ok && x[i].state == DONE && x[i].error[0] == '\0',
                          "round %d, reader %d: the export broke off after the pause (%lld lines; %s)", round, i,
                          n[i].lines, x[i].error);
            ndjson_end(&n[i]);
            ck_assert_msg(n[i].error[0] == '\0', "%s", n[i].error);
            ck_assert_int_eq(n[i].lines, ROWS);
            ck_assert_int_eq(n[i].last_id, large_max_id);
            ndjson_free(&n[i]);
        }
    }
    char url[256];
    snprintf(url, sizeof(url), "%s/healthz", large.base_url);
    test_response r;
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);
}
END_TEST

static Suite *export_suite(void)
{
    Suite *s = suite_create("export");

    TCase *tc = tcase_create("small");
    tcase_add_unchecked_fixture(tc, small_setup, small_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, export_is_chunked_ndjson_with_every_order_once_in_id_order);
    tcase_add_test(tc, each_exported_line_is_the_order_as_get_orders_id_has_it);
    tcase_add_test(tc, after_starts_the_export_after_that_id);
    tcase_add_test(tc, a_bad_after_is_400_problem_json);
    suite_add_tcase(s, tc);

    TCase *big = tcase_create("large");
    tcase_add_unchecked_fixture(big, large_setup, large_teardown);
    tcase_set_timeout(big, 600);
    tcase_add_test(big, a_million_row_export_streams_every_row_in_flat_memory);
    tcase_add_test(big, a_client_that_hangs_up_mid_export_releases_its_transaction_within_a_second);
    tcase_add_test(big, a_stalled_reader_holds_the_query_back_without_buffering_and_then_gets_everything);
    tcase_add_test(big, readers_that_pause_and_resume_get_the_whole_export_and_the_server_survives);
    tcase_add_test(big, a_reader_stalled_past_the_stall_limit_is_cut_off_and_its_transaction_released);
    suite_add_tcase(s, big);
    return s;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return run_suite(export_suite());
}
