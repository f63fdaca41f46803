/* The TechEmpower Framework Benchmarks test types, as their requirements
 * define them: a JSON object built per request, random world rows read one
 * statement per row (all sent in one round trip), updates written back in
 * one statement with ids sorted (so concurrent updates lock rows in the same
 * order and cannot deadlock), and fortunes sorted and HTML-escaped. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aio/aio.h"
#include "base/fmt.h"
#include "routes/handler.h"
#include "server/parse.h"

#define WORLD_ROWS 10000
#define MAX_QUERIES 500

static _Thread_local uint64_t rng;

/* 1..WORLD_ROWS (xorshift64*, seeded per thread) */
static int32_t random_world_id(void)
{
    if (rng == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&rng ^ 0x9E3779B97F4A7C15ULL;
    }
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (int32_t)((rng * 0x2545F4914F6CDD1DULL >> 33) % WORLD_ROWS) + 1;
}

/* The test type's object, serialized per request: a struct with one
 * string field, written by a JSON string encoder (no DOM to build, fill
 * and free for one field). */
struct message {
    const char *text;
    size_t len;
};

static int json_route(server_req *r)
{
    static const char head[] = "{\"message\":";
    struct message m = {"Hello, World!", sizeof("Hello, World!") - 1};
    char body[sizeof(head) + BASE_JSON_STRING_MAX(sizeof("Hello, World!")) + 1];
    memcpy(body, head, sizeof(head) - 1);
    size_t n = sizeof(head) - 1;
    n += base_json_string(body + n, m.text, m.len);
    body[n++] = '}';
    server_respond(r, 200, "application/json", body, n);
    return 0;
}

static int plaintext(server_req *r)
{
    static const char body[] = "Hello, World!";
    server_respond_arena(r, 200, "text/plain", body, sizeof(body) - 1);
    return 0;
}

static const db_stmt WORLD = DB_QUERY("world_by_id", "SELECT id, randomnumber FROM world WHERE id = $1", 1, "ii");

/* {"id":ID,"randomNumber":N} into out (at most WORLD_JSON_MAX bytes) */
#define WORLD_JSON_MAX (sizeof("{\"id\":,\"randomNumber\":}") - 1 + 2 * BASE_FMT_I64_MAX)

static size_t world_json(char *out, int64_t id, int64_t number)
{
    static const char a[] = "{\"id\":", b[] = ",\"randomNumber\":";
    size_t n = 0;
    memcpy(out, a, sizeof(a) - 1);
    n += sizeof(a) - 1;
    n += base_fmt_i64(out + n, id);
    memcpy(out + n, b, sizeof(b) - 1);
    n += sizeof(b) - 1;
    n += base_fmt_i64(out + n, number);
    out[n++] = '}';
    return n;
}

static int db_route(server_req *r)
{
    PGresult *res;
    int rc = db_exec_read(&WORLD, DB_PARAMS(DB_INT4(random_world_id())), &res);
    if (rc < 0 || PQntuples(res) != 1) {
        PQclear(res);
        return rc < 0 ? rc : routes_problem(r, 500, "the world table is incomplete");
    }
    char body[WORLD_JSON_MAX];
    size_t n = world_json(body, db_get_int(res, 0, 0), db_get_int(res, 0, 1));
    PQclear(res);
    server_respond(r, 200, "application/json", body, n);
    return 0;
}

/* queries=N: missing or not an integer -> 1; clamped to 1..500, an integer
 * of any length included (beyond 64 bits: 500, or 1 when negative). */
static int query_count(server_req *r)
{
    size_t qlen, vlen;
    const char *q = server_req_query(r, &qlen);
    char *v = base_arena_alloc(server_req_arena(r), qlen + 1); /* a value is never longer than the query */
    int64_t n;
    if (v == NULL || server_parse_query_param(q, qlen, "queries", v, qlen + 1, &vlen) < 0)
        return 1;
    int rc = server_parse_int64(v, vlen, true, &n);
    if (rc == -ERANGE)
        return v[0] == '-' ? 1 : MAX_QUERIES;
    if (rc < 0)
        return 1;
    return n < 1 ? 1 : n > MAX_QUERIES ? MAX_QUERIES : (int)n;
}

struct world_rows {
    int n;
    int32_t id[MAX_QUERIES];
    int32_t number[MAX_QUERIES];
};

static void respond_rows(server_req *r, const struct world_rows *w)
{
    size_t cap = (size_t)w->n * (WORLD_JSON_MAX + 1) + 2;
    char *body = base_arena_alloc(server_req_arena(r), cap);
    if (body == NULL) {
        server_respond_problem(r, 500, "out of memory", NULL);
        return;
    }
    size_t len = 0;
    body[len++] = '[';
    for (int i = 0; i < w->n; i++) {
        if (i > 0)
            body[len++] = ',';
        len += world_json(body + len, w->id[i], w->number[i]);
    }
    body[len++] = ']';
    server_respond_arena(r, 200, "application/json", body, len);
}

/* Reads n random rows, one statement per row, in one round trip and one
 * implicit read-only transaction (a single Sync: the server flushes once,
 * not once per row). calls and params are the caller's, MAX_QUERIES each. */
static int read_rows(struct world_rows *w, db_call *calls, db_param *params)
{
    for (int i = 0; i < w->n; i++) {
        params[i] = DB_INT4(random_world_id());
        calls[i] = (db_call){.stmt = &WORLD, .params = {.v = &params[i], .n = 1}};
    }
    int rc = db_exec_batch_read(calls, (size_t)w->n, DB_BATCH_ATOMIC);
    for (int i = 0; rc == 0 && i < w->n; i++) {
        if (PQntuples(calls[i].result) != 1) {
            rc = -ENOENT;
            break;
        }
        w->id[i] = (int32_t)db_get_int(calls[i].result, 0, 0);
        w->number[i] = (int32_t)db_get_int(calls[i].result, 0, 1);
    }
    db_calls_clear(calls, (size_t)w->n);
    return rc;
}

static int queries(server_req *r)
{
    struct world_rows w = {.n = query_count(r)};
    db_call calls[MAX_QUERIES];
    db_param params[MAX_QUERIES];
    int rc = read_rows(&w, calls, params);
    if (rc == -ENOENT)
        return routes_problem(r, 500, "the world table is incomplete");
    if (rc == 0)
        respond_rows(r, &w);
    return rc;
}

/* unnest of two arrays side by side: no sub-SELECT, so a counter of
 * "statements with a SELECT" (TechEmpower's verifier) sees only the reads. */
static const db_stmt UPDATE_WORLD =
    DB_STMT("world_update",
            "UPDATE world SET randomnumber = v.r FROM unnest($1::int[], $2::int[]) AS v(id, r) WHERE world.id = v.id", 2);

static int cmp_int(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Picks w->n random rows (into w->id, request order) and, for each
 * distinct one, a new number: ids sorted, each once, so concurrent updates
 * lock rows in the same order. Returns how many distinct ids. */
static int choose_rows(struct world_rows *w, int32_t *ids, int32_t *numbers)
{
    for (int i = 0; i < w->n; i++)
        ids[i] = w->id[i] = random_world_id();
    qsort(ids, (size_t)w->n, sizeof(int32_t), cmp_int);
    int unique = 0;
    for (int i = 0; i < w->n; i++) {
        if (unique == 0 || ids[unique - 1] != ids[i]) {
            ids[unique] = ids[i];
            numbers[unique] = random_world_id();
            unique++;
        }
    }
    return unique;
}

/* "{1,2,3}" in the request's arena, or NULL. */
static const char *int_array(server_req *r, const int32_t *v, int n)
{
    char *s = base_arena_alloc(server_req_arena(r), (size_t)n * (BASE_FMT_I64_MAX + 1) + 3);
    if (s == NULL)
        return NULL;
    size_t len = 0;
    s[len++] = '{';
    for (int i = 0; i < n; i++) {
        if (i > 0)
            s[len++] = ',';
        len += base_fmt_i64(s + len, v[i]);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

/* The reads and the one UPDATE go out together, as one implicit
 * transaction: the pipeline runs them in order, so each row is read before
 * it is written, in one round trip. */
static int updates(server_req *r)
{
    struct world_rows w = {.n = query_count(r)};
    int32_t ids[MAX_QUERIES], numbers[MAX_QUERIES];
    int unique = choose_rows(&w, ids, numbers);
    const char *id_list = int_array(r, ids, unique), *num_list = int_array(r, numbers, unique);
    if (id_list == NULL || num_list == NULL)
        return -ENOMEM;
    db_param params[MAX_QUERIES];
    db_call calls[MAX_QUERIES + 1];
    for (int i = 0; i < w.n; i++) {
        params[i] = DB_INT4(w.id[i]);
        calls[i] = (db_call){.stmt = &WORLD, .params = {.v = &params[i], .n = 1}};
    }
    calls[w.n] = DB_CALL(&UPDATE_WORLD, DB_TEXT(id_list), DB_TEXT(num_list));
    int rc = routes_batch(r, NULL, calls, (size_t)w.n + 1, DB_BATCH_ATOMIC);
    for (int i = 0; rc == 0 && i < w.n; i++)
        if (PQntuples(calls[i].result) != 1)
            return routes_problem(r, 500, "the world table is incomplete");
    if (rc < 0)
        return rc;
    for (int i = 0; i < w.n; i++)
        w.number[i] = numbers[(int32_t *)bsearch(&w.id[i], ids, (size_t)unique, sizeof(int32_t), cmp_int) - ids];
    respond_rows(r, &w);
    return 0;
}

static const db_stmt FORTUNES = DB_QUERY("fortunes", "SELECT id, message FROM fortune", 0, "it");

struct fortune {
    int64_t id;
    const char *msg;
    int len;
};

static int cmp_fortune(const void *a, const void *b)
{
    const struct fortune *x = a, *y = b;
    int n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->msg, y->msg, (size_t)n); /* UTF-8 byte order is code point order */
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int fortunes(server_req *r)
{
    PGresult *res;
    int rc = db_exec_read(&FORTUNES, DB_NO_PARAMS, &res);
    if (rc < 0) {
        PQclear(res);
        return rc;
    }
    int rows = PQntuples(res);
    struct fortune *f = base_arena_alloc(server_req_arena(r), sizeof(*f) * (size_t)(rows + 1));
    if (f == NULL) {
        PQclear(res);
        server_respond_problem(r, 500, "out of memory", NULL);
        return 0;
    }
    for (int i = 0; i < rows; i++) {
        f[i].id = db_get_int(res, i, 0);
        f[i].msg = db_get_text(res, i, 1, &f[i].len);
    }
    static const char extra[] = "Additional fortune added at request time.";
    f[rows] = (struct fortune){0, extra, (int)sizeof(extra) - 1};
    /* a dozen rows: insertion sort (glibc's qsort is a merge sort that
     * allocates its buffer on every call) */
    for (int i = 1; i <= rows; i++) {
        struct fortune x = f[i];
        int j = i;
        for (; j > 0 && cmp_fortune(&f[j - 1], &x) > 0; j--)
            f[j] = f[j - 1];
        f[j] = x;
    }

    static const char head[] = "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
                               "<tr><th>id</th><th>message</th></tr>";
    static const char tail[] = "</table></body></html>";
    static const char row_head[] = "<tr><td>", cell[] = "</td><td>", row_tail[] = "</td></tr>";
    size_t cap = sizeof(head) + sizeof(tail);
    for (int i = 0; i <= rows; i++)
        cap += sizeof(row_head) + BASE_FMT_I64_MAX + sizeof(cell) + BASE_HTML_ESCAPE_MAX(f[i].len) + sizeof(row_tail);
    char *body = base_arena_alloc(server_req_arena(r), cap);
    if (body == NULL) {
        PQclear(res);
        server_respond_problem(r, 500, "out of memory", NULL);
        return 0;
    }
    size_t len = 0;
    memcpy(body, head, sizeof(head) - 1);
    len += sizeof(head) - 1;
    for (int i = 0; i <= rows; i++) {
        memcpy(body + len, row_head, sizeof(row_head) - 1);
        len += sizeof(row_head) - 1;
        len += base_fmt_i64(body + len, f[i].id);
        memcpy(body + len, cell, sizeof(cell) - 1);
        len += sizeof(cell) - 1;
        len += base_html_escape(body + len, f[i].msg, (size_t)f[i].len);
        memcpy(body + len, row_tail, sizeof(row_tail) - 1);
        len += sizeof(row_tail) - 1;
    }
    memcpy(body + len, tail, sizeof(tail) - 1);
    len += sizeof(tail) - 1;
    PQclear(res);
    server_respond_arena(r, 200, "text/html; charset=utf-8", body, len);
    return 0;
}

/* the benchmark test types: open, as their specification has them */
ROUTES({.method = "GET", .pattern = "/json", .handler = json_route, .immediate = true, .open = true},
       {.method = "GET", .pattern = "/plaintext", .handler = plaintext, .immediate = true, .open = true},
       {.method = "GET", .pattern = "/db", .handler = db_route, .open = true},
       {.method = "GET", .pattern = "/queries", .handler = queries, .open = true},
       {.method = "GET", .pattern = "/updates", .handler = updates, .open = true},
       {.method = "GET", .pattern = "/fortunes", .handler = fortunes, .open = true});
