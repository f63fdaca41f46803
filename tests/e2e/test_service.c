/* The service end to end: the real h2pg binary, started as a child process
 * against a throwaway database, spoken to over real sockets. Run through
 * scripts/with-postgres.sh, which sets DATABASE_URL; without it the database
 * tests fail (they do not skip).
 *
 * Tests that only read share one server and database (the "shared" tcase,
 * an unchecked fixture); tests that write or need other settings start
 * their own. Nothing here depends on timing beyond generous upper bounds. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
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

#ifndef H2PG_MIGRATIONS_DIR
#error "tests/CMakeLists.txt passes H2PG_MIGRATIONS_DIR"
#endif

#define WORLD_ROWS 10000
#define MAX_QUERIES 500
#define EXTRA_FORTUNE "Additional fortune added at request time."
#define RESPONSE_TIMEOUT_MS 10000
#define LOG_WAIT_MS 10000

/* ---- small helpers ---- */

static void request(test_response *r, const test_server *s, const char *method, const char *path, const char *body,
                    size_t len, const char *const *headers)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", s->base_url, path);
    test_http(r, method, url, body, len, headers);
}

static void get(test_response *r, const test_server *s, const char *path) { request(r, s, "GET", path, NULL, 0, NULL); }

static void assert_content_type(const test_response *r, const char *expected)
{
    char *ct = test_response_header(r, "Content-Type");
    ck_assert_msg(ct != NULL, "no Content-Type");
    ck_assert_msg(strcasecmp(ct, expected) == 0, "Content-Type is \"%s\", expected \"%s\"", ct, expected);
    free(ct);
}

static void assert_body(const test_response *r, const char *expected)
{
    ck_assert_msg(r->body_len == strlen(expected) && memcmp(r->body, expected, r->body_len) == 0,
                  "body is \"%.500s\", expected \"%s\"", r->body, expected);
}

/* Server, Date and a Content-Length that matches the body. */
static void assert_standard_headers(const test_response *r)
{
    char *server = test_response_header(r, "Server");
    ck_assert_msg(server != NULL && server[0] != '\0', "no Server header in:\n%s", r->headers);
    free(server);
    char *date = test_response_header(r, "Date");
    ck_assert_msg(date != NULL, "no Date header in:\n%s", r->headers);
    size_t dl = strlen(date);
    ck_assert_msg(dl > 4 && strcmp(date + dl - 4, " GMT") == 0, "Date \"%s\" is not an HTTP date", date);
    free(date);
    char *cl = test_response_header(r, "Content-Length");
    ck_assert_msg(cl != NULL, "no Content-Length header in:\n%s", r->headers);
    ck_assert_msg(strtoull(cl, NULL, 10) == r->body_len, "Content-Length %s for a body of %zu bytes", cl, r->body_len);
    free(cl);
}

/* The randomnumber of every world id (index 1..WORLD_ROWS), malloc'd. */
static int *load_world(const char *conninfo)
{
    PGconn *c = test_pg_connect(conninfo);
    PGresult *res = PQexec(c, "SELECT id, randomnumber FROM world ORDER BY id");
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "reading world: %s", PQresultErrorMessage(res));
    ck_assert_int_eq(PQntuples(res), WORLD_ROWS);
    int *world = calloc(WORLD_ROWS + 1, sizeof(int));
    ck_assert_ptr_nonnull(world);
    for (int i = 0; i < PQntuples(res); i++) {
        int id = atoi(PQgetvalue(res, i, 0));
        ck_assert_int_eq(id, i + 1);
        world[id] = atoi(PQgetvalue(res, i, 1));
    }
    PQclear(res);
    PQfinish(c);
    return world;
}

/* {"id":N,"randomNumber":M}, exactly those two integer members, in range;
 * returns the id and stores the number. */
static int check_world_row(const json_t *row, int *number)
{
    json_t *id = json_object_get(row, "id"), *num = json_object_get(row, "randomNumber");
    if (!json_is_object(row) || json_object_size(row) != 2 || !json_is_integer(id) || !json_is_integer(num))
        ck_abort_msg("not {\"id\":int,\"randomNumber\":int}: %s", json_dumps(row, JSON_COMPACT));
    ck_assert_int_ge(json_integer_value(id), 1);
    ck_assert_int_le(json_integer_value(id), WORLD_ROWS);
    ck_assert_int_ge(json_integer_value(num), 1);
    ck_assert_int_le(json_integer_value(num), WORLD_ROWS);
    *number = (int)json_integer_value(num);
    return (int)json_integer_value(id);
}

/* A 200 application/json array of n world rows; returns it (new reference). */
static json_t *world_rows(const test_response *r, size_t n)
{
    ck_assert_msg(r->status == 200, "status %ld: %.500s", r->status, r->body);
    assert_content_type(r, "application/json");
    json_t *a = test_response_json(r);
    ck_assert_msg(json_is_array(a), "not an array: %.200s", r->body);
    ck_assert_msg(json_array_size(a) == n, "%zu rows, expected %zu", json_array_size(a), n);
    return a;
}

/* ---- the shared server (read-only tests) ---- */

static char *shared_db;
static test_server shared;

static void shared_setup(void) { test_server_start_on_fresh_db(&shared, &shared_db, NULL); }

static void shared_teardown(void) { test_server_stop_and_drop_db(&shared, &shared_db); }

START_TEST(healthz_answers_status_ok)
{
    test_response r;
    get(&r, &shared, "/healthz");
    ck_assert_int_eq(r.status, 200);
    assert_content_type(&r, "application/json");
    json_t *j = test_response_json(&r);
    ck_assert_msg(json_is_object(j) && json_object_size(j) == 1, "%s", r.body);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    test_response_free(&r);
}
END_TEST

START_TEST(readyz_answers_status_ready_when_the_database_answers)
{
    test_response r;
    get(&r, &shared, "/readyz");
    ck_assert_msg(r.status == 200, "status %ld: %s", r.status, r.body);
    assert_content_type(&r, "application/json");
    json_t *j = test_response_json(&r);
    ck_assert_msg(json_is_object(j) && json_object_size(j) == 1, "%s", r.body);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ready");
    json_decref(j);
    test_response_free(&r);
}
END_TEST

START_TEST(json_is_exactly_the_hello_world_object)
{
    test_response r;
    get(&r, &shared, "/json");
    ck_assert_int_eq(r.status, 200);
    assert_content_type(&r, "application/json");
    assert_body(&r, "{\"message\":\"Hello, World!\"}");
    assert_standard_headers(&r);
    test_response_free(&r);
}
END_TEST

START_TEST(plaintext_is_exactly_hello_world_as_text_plain)
{
    test_response r;
    get(&r, &shared, "/plaintext");
    ck_assert_int_eq(r.status, 200);
    assert_content_type(&r, "text/plain");
    assert_body(&r, "Hello, World!");
    assert_standard_headers(&r);
    test_response_free(&r);
}
END_TEST

START_TEST(db_returns_one_random_row_as_the_table_holds_it)
{
    int *world = load_world(shared_db);
    int first_id = 0;
    bool different = false;
    for (int i = 0; i < 8; i++) {
        test_response r;
        get(&r, &shared, "/db");
        ck_assert_msg(r.status == 200, "status %ld: %s", r.status, r.body);
        assert_content_type(&r, "application/json");
        assert_standard_headers(&r);
        json_t *row = test_response_json(&r);
        int number;
        int id = check_world_row(row, &number);
        ck_assert_msg(world[id] == number, "/db says id %d has %d, the table holds %d", id, number, world[id]);
        if (i == 0)
            first_id = id;
        else if (id != first_id)
            different = true;
        json_decref(row);
        test_response_free(&r);
    }
    ck_assert_msg(different, "eight /db requests all returned id %d", first_id);
    free(world);
}
END_TEST

START_TEST(queries_returns_the_requested_number_of_rows_as_the_table_holds_them)
{
    int *world = load_world(shared_db);
    test_response r;
    get(&r, &shared, "/queries?queries=20");
    json_t *a = world_rows(&r, 20);
    size_t i;
    json_t *row;
    json_array_foreach(a, i, row)
    {
        int number;
        int id = check_world_row(row, &number);
        ck_assert_msg(world[id] == number, "row %zu: id %d has %d, the table holds %d", i, id, number, world[id]);
    }
    json_decref(a);
    test_response_free(&r);
    free(world);
}
END_TEST

static const char *const one_row_queries[] = {"", "?queries=abc", "?queries=0", "?queries=-5", "?queries=", "?other=7"};
static const char *const capped_queries[] = {"?queries=501", "?queries=100000"};

START_TEST(queries_count_is_one_when_missing_invalid_or_below_one)
{
    for (size_t k = 0; k < sizeof(one_row_queries) / sizeof(one_row_queries[0]); k++) {
        char path[64];
        snprintf(path, sizeof(path), "/queries%s", one_row_queries[k]);
        test_response r;
        get(&r, &shared, path);
        ck_assert_msg(r.status == 200, "%s: status %ld", path, r.status);
        json_t *a = test_response_json(&r);
        ck_assert_msg(json_is_array(a) && json_array_size(a) == 1, "%s: expected one row, got %.200s", path, r.body);
        int number;
        check_world_row(json_array_get(a, 0), &number);
        json_decref(a);
        test_response_free(&r);
    }
}
END_TEST

START_TEST(queries_count_is_capped_at_500)
{
    int *world = load_world(shared_db);
    for (size_t k = 0; k < sizeof(capped_queries) / sizeof(capped_queries[0]); k++) {
        char path[64];
        snprintf(path, sizeof(path), "/queries%s", capped_queries[k]);
        test_response r;
        get(&r, &shared, path);
        json_t *a = world_rows(&r, MAX_QUERIES);
        size_t i;
        json_t *row;
        json_array_foreach(a, i, row)
        {
            int number;
            int id = check_world_row(row, &number);
            ck_assert_msg(world[id] == number, "%s row %zu: id %d has %d, the table holds %d", path, i, id, number,
                          world[id]);
        }
        json_decref(a);
        test_response_free(&r);
    }
    free(world);
}
END_TEST

START_TEST(queries_rows_are_random)
{
    /* 60 draws from 10,000: all distinct but for a handful, unless the
     * service repeats itself */
    static bool seen[WORLD_ROWS + 1];
    int distinct = 0;
    for (int k = 0; k < 3; k++) {
        test_response r;
        get(&r, &shared, "/queries?queries=20");
        json_t *a = world_rows(&r, 20);
        size_t i;
        json_t *row;
        json_array_foreach(a, i, row)
        {
            int number;
            int id = check_world_row(row, &number);
            if (!seen[id]) {
                seen[id] = true;
                distinct++;
            }
        }
        json_decref(a);
        test_response_free(&r);
    }
    ck_assert_msg(distinct >= 40, "only %d distinct ids in 60 random rows", distinct);
}
END_TEST

/* ---- fortunes ---- */

struct fortune {
    long id;
    char *msg;
};

/* Undoes HTML escaping; ck_abort on a raw <, >, " or an unknown entity. */
static char *unescape_html(const char *s, size_t len)
{
    static const struct {
        const char *entity;
        char c;
    } entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#34;", '"'}, {"&#39;", '\''},
                    {"&#x27;", '\''}, {"&apos;", '\''}};
    char *out = malloc(len + 1);
    ck_assert_ptr_nonnull(out);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        ck_assert_msg(c != '<' && c != '>' && c != '"', "an unescaped %c in the fortune \"%.*s\"", c, (int)len, s);
        if (c != '&') {
            out[n++] = c;
            i++;
            continue;
        }
        size_t k = 0, count = sizeof(entities) / sizeof(entities[0]);
        while (k < count && strncmp(s + i, entities[k].entity, strlen(entities[k].entity)) != 0)
            k++;
        ck_assert_msg(k < count, "an unknown entity in the fortune \"%.*s\"", (int)len, s);
        out[n++] = entities[k].c;
        i += strlen(entities[k].entity);
    }
    out[n] = '\0';
    return out;
}

static const char fortunes_head[] =
    "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>";
static const char fortunes_tail[] = "</table></body></html>";

/* The rows of a /fortunes document in order; ck_abort unless the whole
 * body is the frame around nothing but <tr><td>ID</td><td>MSG</td></tr>. */
static size_t parse_fortunes(const test_response *r, struct fortune *out, size_t max)
{
    size_t hl = strlen(fortunes_head), tl = strlen(fortunes_tail);
    ck_assert_msg(r->body_len >= hl + tl && memcmp(r->body, fortunes_head, hl) == 0,
                  "the document does not start with the expected frame: %.300s", r->body);
    ck_assert_msg(memcmp(r->body + r->body_len - tl, fortunes_tail, tl) == 0,
                  "the document does not end with the expected frame: %s", r->body + (r->body_len > 300 ? r->body_len - 300 : 0));
    const char *p = r->body + hl, *end = r->body + r->body_len - tl;
    size_t n = 0;
    while (p < end) {
        ck_assert_msg(n < max, "more than %zu rows", max);
        ck_assert_msg(strncmp(p, "<tr><td>", 8) == 0, "expected <tr><td> at: %.100s", p);
        p += 8;
        char *after = NULL;
        out[n].id = strtol(p, &after, 10);
        ck_assert_msg(after != p && strncmp(after, "</td><td>", 9) == 0, "expected an id cell at: %.100s", p);
        p = after + 9;
        const char *close = strstr(p, "</td></tr>");
        ck_assert_msg(close != NULL && close < end, "an unterminated row at: %.100s", p);
        out[n].msg = unescape_html(p, (size_t)(close - p));
        p = close + 10;
        n++;
    }
    return n;
}

START_TEST(fortunes_is_every_fortune_plus_one_sorted_by_message_in_the_exact_frame)
{
    test_response r;
    get(&r, &shared, "/fortunes");
    ck_assert_msg(r.status == 200, "status %ld: %s", r.status, r.body);
    assert_content_type(&r, "text/html; charset=utf-8");
    assert_standard_headers(&r);
    struct fortune rows[64];
    size_t n = parse_fortunes(&r, rows, 64);
    ck_assert_int_eq(n, 13);

    /* the same rows as the table, plus the added one (id 0) */
    PGconn *c = test_pg_connect(shared_db);
    PGresult *res = PQexec(c, "SELECT id, message FROM fortune");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(res), 12);
    bool used[64] = {false};
    for (int i = 0; i <= PQntuples(res); i++) {
        long id = i < PQntuples(res) ? atol(PQgetvalue(res, i, 0)) : 0;
        const char *msg = i < PQntuples(res) ? PQgetvalue(res, i, 1) : EXTRA_FORTUNE;
        size_t k = 0;
        while (k < n && (used[k] || rows[k].id != id || strcmp(rows[k].msg, msg) != 0))
            k++;
        ck_assert_msg(k < n, "fortune %ld \"%s\" is missing from the page", id, msg);
        used[k] = true;
    }
    PQclear(res);
    PQfinish(c);

    for (size_t i = 1; i < n; i++)
        ck_assert_msg(strcmp(rows[i - 1].msg, rows[i].msg) <= 0, "not sorted by message: \"%s\" before \"%s\"",
                      rows[i - 1].msg, rows[i].msg);
    for (size_t i = 0; i < n; i++)
        free(rows[i].msg);
    test_response_free(&r);
}
END_TEST

START_TEST(fortunes_escapes_html_and_keeps_utf8_intact)
{
    test_response r;
    get(&r, &shared, "/fortunes");
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "<script>") == NULL, "the <script> fortune appears unescaped");
    ck_assert_msg(strstr(r.body, "&lt;script&gt;alert(&quot;This should not be displayed in a browser alert "
                                 "box.&quot;);&lt;/script&gt;") != NULL,
                  "the <script> fortune is not escaped as expected: %s", r.body);
    ck_assert_msg(strstr(r.body, "<td>\xe3\x83\x95\xe3\x83\xac\xe3\x83\xbc\xe3\x83\xa0\xe3\x83\xaf\xe3\x83\xbc\xe3\x82\xaf"
                                 "\xe3\x81\xae\xe3\x83\x99\xe3\x83\xb3\xe3\x83\x81\xe3\x83\x9e\xe3\x83\xbc\xe3\x82\xaf</td>") != NULL,
                  "the Japanese fortune is not there byte for byte: %s", r.body);
    ck_assert_msg(strstr(r.body, "<td>" EXTRA_FORTUNE "</td>") != NULL, "the added fortune is missing");
    test_response_free(&r);
}
END_TEST

/* ---- routing and errors ---- */

START_TEST(an_unknown_route_is_404_problem_json)
{
    static const char *const paths[] = {"/nope", "/json/extra", "/users/x/y/z"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        get(&r, &shared, paths[i]);
        test_assert_problem(&r, 404);
        test_response_free(&r);
    }
}
END_TEST

/* Whether the Allow value lists method as one of its comma-separated tokens. */
static bool allow_lists(const char *allow, const char *method)
{
    char *copy = strdup(allow), *save = NULL;
    ck_assert_ptr_nonnull(copy);
    bool found = false;
    for (char *t = strtok_r(copy, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save))
        found |= strcmp(t, method) == 0;
    free(copy);
    return found;
}

START_TEST(a_wrong_method_is_405_problem_json_with_an_allow_header_listing_get)
{
    static const struct {
        const char *method, *path;
    } cases[] = {{"POST", "/json"}, {"DELETE", "/db"}, {"PUT", "/fortunes"}, {"POST", "/healthz"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        request(&r, &shared, cases[i].method, cases[i].path, cases[i].method[0] == 'P' ? "{}" : NULL,
                cases[i].method[0] == 'P' ? 2 : 0, NULL);
        test_assert_problem(&r, 405);
        char *allow = test_response_header(&r, "Allow");
        ck_assert_msg(allow != NULL, "%s %s: 405 without Allow", cases[i].method, cases[i].path);
        ck_assert_msg(allow_lists(allow, "GET"), "%s %s: Allow \"%s\" does not list GET", cases[i].method, cases[i].path,
                      allow);
        ck_assert_msg(!allow_lists(allow, cases[i].method), "%s %s: Allow \"%s\" lists the refused method",
                      cases[i].method, cases[i].path, allow);
        free(allow);
        test_response_free(&r);
    }
}
END_TEST

START_TEST(head_json_is_200_without_a_body)
{
    static const char req[] = "HEAD /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    size_t len;
    char *out = test_raw_exchange(shared.port, req, sizeof(req) - 1, RESPONSE_TIMEOUT_MS, &len);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200", 12) == 0, "HEAD /json: %s", out);
    const char *end = strstr(out, "\r\n\r\n");
    ck_assert_msg(end != NULL, "no end of headers: %s", out);
    size_t body = len - (size_t)(end + 4 - out);
    ck_assert_msg(body == 0, "HEAD /json sent %zu body bytes: %s", body, end + 4);
    free(out);
}
END_TEST

/* The first lines of an answer are h2o's (server/head.c writes them for
 * it): status line, Date, Connection, Content-Length, in that order and
 * form, the length the body's. */
START_TEST(an_answer_starts_with_status_date_connection_and_length)
{
    static const char req[] = "GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    size_t len;
    char *out = test_raw_exchange(shared.port, req, sizeof(req) - 1, RESPONSE_TIMEOUT_MS, &len);
    static const char status[] = "HTTP/1.1 200 OK\r\nDate: ";
    ck_assert_msg(strncmp(out, status, sizeof(status) - 1) == 0, "GET /json: %s", out);
    const char *date = out + sizeof(status) - 1;
    char wday[4], mon[4], gmt[4];
    int day, year, hh, mm, ss, used = 0;
    ck_assert_msg(sscanf(date, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3s%n", wday, &day, mon, &year, &hh, &mm, &ss,
                         gmt, &used) == 8 &&
                      used == 29 && strcmp(gmt, "GMT") == 0,
                  "not an IMF-fixdate: %.40s", date);
    static const char conn[] = "\r\nConnection: close\r\nContent-Length: ";
    ck_assert_msg(strncmp(date + 29, conn, sizeof(conn) - 1) == 0, "after the date: %.60s", date + 29);
    char *endp;
    unsigned long long cl = strtoull(date + 29 + sizeof(conn) - 1, &endp, 10);
    ck_assert_msg(strncmp(endp, "\r\n", 2) == 0, "Content-Length line: %.40s", date + 29);
    const char *end = strstr(out, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_uint_eq(cl, len - (size_t)(end + 4 - out));
    ck_assert_msg(strstr(end + 4, "\"message\":\"Hello, World!\"") != NULL, "body: %s", end + 4);
    free(out);
}
END_TEST

/* A request line h2o cannot parse never reaches the handler or any filter:
 * h2o 2.2.5 writes its own fixed "400 Bad Request" (text/plain) straight to
 * the socket and closes. That is the one error that is not problem+json; it
 * answers bytes that are not HTTP at all. */
START_TEST(a_malformed_request_line_gets_400_and_the_connection_is_closed)
{
    static const char *const lines[] = {
        "this is not http\r\n\r\n",
        "GET /json HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
        "GET\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        int fd = test_raw_connect(shared.port);
        test_raw_send(fd, lines[i], strlen(lines[i]));
        size_t len;
        char *all = test_raw_read_all(fd, RESPONSE_TIMEOUT_MS, &len); /* returns once the server closes */
        close(fd);
        ck_assert_msg(len > 12 && strncmp(all, "HTTP/1.1 400 ", 13) == 0, "\"%s\": got %.*s", lines[i], (int)len, all);
        ck_assert_msg(strcasestr(all, "connection: close") != NULL, "\"%s\": not closed: %.*s", lines[i], (int)len, all);
        free(all);
    }
}
END_TEST

START_TEST(a_request_timeout_header_that_is_not_a_number_is_400_problem_json)
{
    static const char *const values[] = {"Request-Timeout: soon", "Request-Timeout: 12abc", "Request-Timeout: -5"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        const char *headers[] = {values[i], NULL};
        test_response r;
        request(&r, &shared, "GET", "/db", NULL, 0, headers);
        ck_assert_msg(r.status == 400, "%s: status %ld %s", values[i], r.status, r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
    /* and a number is fine */
    const char *ok[] = {"Request-Timeout: 3000", NULL};
    test_response r;
    request(&r, &shared, "GET", "/db", NULL, 0, ok);
    ck_assert_msg(r.status == 200, "Request-Timeout: 3000: status %ld %s", r.status, r.body);
    test_response_free(&r);
}
END_TEST

/* ---- connections ---- */

START_TEST(keep_alive_serves_several_requests_on_one_connection)
{
    static const struct {
        const char *path, *body;
    } steps[] = {{"/json", "{\"message\":\"Hello, World!\"}"}, {"/plaintext", "Hello, World!"}, {"/db", NULL},
                 {"/json", "{\"message\":\"Hello, World!\"}"}, {"/fortunes", NULL}};
    int fd = test_raw_connect(shared.port);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char req[256];
        int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", steps[i].path);
        test_raw_send(fd, req, (size_t)len);
        test_response r;
        test_raw_read_response(fd, RESPONSE_TIMEOUT_MS, 0, &r);
        ck_assert_msg(r.status == 200, "request %zu (%s) on the connection: status %ld", i + 1, steps[i].path, r.status);
        if (steps[i].body != NULL)
            assert_body(&r, steps[i].body);
        char *conn = test_response_header(&r, "Connection");
        ck_assert_msg(conn == NULL || strcasecmp(conn, "close") != 0, "the server closes after request %zu", i + 1);
        free(conn);
        test_response_free(&r);
    }
    close(fd);
}
END_TEST

START_TEST(pipelined_requests_are_answered_in_order)
{
    enum { N = 20 };
    char bytes[N * 128];
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(bytes + len, sizeof(bytes) - len,
                                "GET /db HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: pipe-%02d\r\n%s\r\n", i,
                                i == N - 1 ? "Connection: close\r\n" : "");
    /* one write: all twenty are on the wire before the first answer */
    int fd = test_raw_connect(shared.port);
    ck_assert_int_eq(write(fd, bytes, len), (ssize_t)len);
    size_t got;
    char *out = test_raw_read_all(fd, RESPONSE_TIMEOUT_MS, &got);
    close(fd);
    test_response rs[N + 1];
    size_t n = test_split_responses(out, got, rs, N + 1);
    ck_assert_msg(n == N, "%zu responses to %d pipelined requests", n, N);
    int *world = load_world(shared_db);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(rs[i].status == 200, "response %d: status %ld", i, rs[i].status);
        char *rid = test_response_header(&rs[i], "X-Request-Id");
        char want[16];
        snprintf(want, sizeof(want), "pipe-%02d", i);
        ck_assert_msg(rid != NULL && strcmp(rid, want) == 0, "response %d carries request id %s", i, rid ? rid : "(none)");
        free(rid);
        json_t *row = test_response_json(&rs[i]);
        int number;
        int id = check_world_row(row, &number);
        ck_assert_int_eq(world[id], number);
        json_decref(row);
        test_response_free(&rs[i]);
    }
    free(world);
    free(out);
}
END_TEST

/* ---- request ids ---- */

static void assert_has_request_id(const test_response *r, const char *what)
{
    char *rid = test_response_header(r, "X-Request-Id");
    ck_assert_msg(rid != NULL && rid[0] != '\0', "%s (status %ld) has no X-Request-Id:\n%s", what, r->status, r->headers);
    free(rid);
}

START_TEST(successful_responses_carry_a_request_id)
{
    static const char *const paths[] = {"/healthz", "/readyz", "/json", "/plaintext", "/db", "/queries?queries=2",
                                        "/fortunes"};
    char *first = NULL;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        get(&r, &shared, paths[i]);
        ck_assert_int_eq(r.status, 200);
        assert_has_request_id(&r, paths[i]);
        char *rid = test_response_header(&r, "X-Request-Id");
        if (first == NULL)
            first = rid;
        else {
            ck_assert_msg(strcmp(first, rid) != 0, "two requests got the same generated id %s", rid);
            free(rid);
        }
        test_response_free(&r);
    }
    free(first);
}
END_TEST

START_TEST(error_responses_carry_a_request_id)
{
    test_response r;
    get(&r, &shared, "/nope");
    ck_assert_int_eq(r.status, 404);
    assert_has_request_id(&r, "GET /nope");
    test_response_free(&r);

    request(&r, &shared, "DELETE", "/db", NULL, 0, NULL);
    ck_assert_int_eq(r.status, 405);
    assert_has_request_id(&r, "DELETE /db");
    test_response_free(&r);

    const char *bad_timeout[] = {"Request-Timeout: soon", NULL};
    request(&r, &shared, "GET", "/db", NULL, 0, bad_timeout);
    ck_assert_int_eq(r.status, 400);
    assert_has_request_id(&r, "GET /db with a bad Request-Timeout");
    test_response_free(&r);
}
END_TEST

START_TEST(a_given_request_id_is_echoed_back)
{
    static const char *const paths[] = {"/json", "/db", "/nope"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char id[64], header[96];
        snprintf(id, sizeof(id), "echo-%ld-%zu", (long)getpid(), i);
        snprintf(header, sizeof(header), "X-Request-Id: %s", id);
        const char *headers[] = {header, NULL};
        test_response r;
        request(&r, &shared, "GET", paths[i], NULL, 0, headers);
        char *rid = test_response_header(&r, "X-Request-Id");
        ck_assert_msg(rid != NULL && strcmp(rid, id) == 0, "%s (status %ld): sent X-Request-Id %s, got %s", paths[i],
                      r.status, id, rid ? rid : "(none)");
        free(rid);
        test_response_free(&r);
    }
}
END_TEST

/* ---- the access log ---- */

/* Sends method path with a unique request id, then finds the one access
 * line with that id in the shared server's log and checks it. */
static void assert_access_logged(const char *method, const char *path, const char *logged_path, long status)
{
    static unsigned seq;
    char id[64], header[96];
    snprintf(id, sizeof(id), "log-%ld-%u", (long)getpid(), seq++);
    snprintf(header, sizeof(header), "X-Request-Id: %s", id);
    const char *headers[] = {header, NULL};
    test_response r;
    request(&r, &shared, method, path, NULL, 0, headers);
    ck_assert_msg(r.status == status, "%s %s: status %ld, expected %ld", method, path, r.status, status);
    test_response_free(&r);

    char quoted[96];
    snprintf(quoted, sizeof(quoted), "\"%s\"", id);
    ck_assert_msg(test_server_log_wait(&shared, quoted, LOG_WAIT_MS), "%s %s (request id %s) is not in the log within %d ms",
                  method, path, id, LOG_WAIT_MS);
    char *log = test_server_log(&shared);
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, quoted) == NULL)
            continue;
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        ck_assert_msg(j != NULL && json_is_object(j), "a log line that is not a JSON object: %s", line);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type == NULL || strcmp(type, "access") != 0) {
            json_decref(j);
            continue;
        }
        lines++;
        const char *rid = json_string_value(json_object_get(j, "request_id"));
        const char *p = json_string_value(json_object_get(j, "path"));
        json_t *st = json_object_get(j, "status");
        ck_assert_msg(rid != NULL && strcmp(rid, id) == 0, "request_id is not %s: %s", id, line);
        ck_assert_msg(p != NULL && strcmp(p, logged_path) == 0, "path is not %s: %s", logged_path, line);
        ck_assert_msg(json_is_integer(st) && json_integer_value(st) == status, "status is not %ld: %s", status, line);
        json_decref(j);
    }
    ck_assert_msg(lines == 1, "%d access lines for request id %s, expected one", lines, id);
    free(log);
}

START_TEST(the_access_log_has_one_json_line_per_request)
{
    assert_access_logged("GET", "/json", "/json", 200);
    assert_access_logged("GET", "/plaintext", "/plaintext", 200);
    assert_access_logged("GET", "/db", "/db", 200);
    assert_access_logged("GET", "/queries?queries=2", "/queries", 200);
    assert_access_logged("GET", "/fortunes", "/fortunes", 200);
}
END_TEST

START_TEST(the_access_log_records_rejected_requests_too)
{
    assert_access_logged("GET", "/no-such-route", "/no-such-route", 404);
    assert_access_logged("DELETE", "/db", "/db", 405);
}
END_TEST

/* ---- a server of its own: database unreachable ---- */

START_TEST(healthz_needs_no_database_and_readyz_is_503_when_it_is_unreachable)
{
    /* nothing listens on a port that was just free */
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=nowhere user=nobody connect_timeout=2",
             test_free_port());
    const char *env[] = {"MIGRATE_ON_START=false", NULL};
    test_server s;
    test_server_start(&s, conninfo, env);

    test_response r;
    get(&r, &s, "/healthz");
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "{\"status\":\"ok\"}");
    test_response_free(&r);

    get(&r, &s, "/readyz");
    test_assert_problem(&r, 503);
    char *retry = test_response_header(&r, "Retry-After");
    ck_assert_msg(retry != NULL && atoi(retry) > 0, "503 without a Retry-After of seconds: %s", retry ? retry : "(none)");
    free(retry);
    test_response_free(&r);

    /* and still alive for liveness afterwards */
    get(&r, &s, "/healthz");
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);
    test_server_stop(&s);
}
END_TEST

/* ---- /updates: a database and server per test ---- */

static char *own_db;
static test_server own;

static void own_setup(void)
{
    test_server_start_on_fresh_db(&own, &own_db, NULL);
}

static void own_teardown(void)
{
    test_server_stop_and_drop_db(&own, &own_db);
}

/* Sends /updates?queries=n_asked, expects n rows, and checks them against
 * the table before and after: each returned id now holds its returned
 * number, entries for one id agree, and no other row changed. Returns how
 * many of the returned rows changed and, in *dups, how many entries repeat
 * an id. */
static int check_updates(const char *query, size_t n, int *dups)
{
    int *before = load_world(own_db);
    char path[64];
    snprintf(path, sizeof(path), "/updates%s", query);
    test_response r;
    get(&r, &own, path);
    json_t *a = world_rows(&r, n);
    int *after = load_world(own_db);
    int *returned = calloc(WORLD_ROWS + 1, sizeof(int));
    ck_assert_ptr_nonnull(returned);
    int changed = 0;
    *dups = 0;
    size_t i;
    json_t *row;
    json_array_foreach(a, i, row)
    {
        int number;
        int id = check_world_row(row, &number);
        if (returned[id] != 0) {
            (*dups)++;
            ck_assert_msg(returned[id] == number, "id %d returned twice with different numbers %d and %d", id,
                          returned[id], number);
        }
        returned[id] = number;
        ck_assert_msg(after[id] == number, "%s: id %d returned %d but the table holds %d", path, id, number, after[id]);
    }
    for (int id = 1; id <= WORLD_ROWS; id++) {
        if (returned[id] == 0)
            ck_assert_msg(after[id] == before[id], "id %d was not returned but changed from %d to %d", id, before[id],
                          after[id]);
        else if (after[id] != before[id])
            changed++;
    }
    json_decref(a);
    test_response_free(&r);
    free(before);
    free(after);
    free(returned);
    return changed;
}

START_TEST(updates_writes_back_the_numbers_it_returns)
{
    int dups;
    int changed = check_updates("?queries=20", 20, &dups);
    /* each keeps its old number with odds 1 in 10,000 */
    ck_assert_msg(changed >= 10, "only %d of 20 returned rows got a new number", changed);
}
END_TEST

START_TEST(updates_gives_a_row_drawn_twice_one_number)
{
    /* 500 draws from 10,000 repeat an id almost surely (1 - e^-12.5) */
    int dups = 0;
    for (int k = 0; k < 4 && dups == 0; k++)
        check_updates("?queries=500", MAX_QUERIES, &dups);
    ck_assert_msg(dups > 0, "no repeated id in four times 500 rows");
}
END_TEST

START_TEST(updates_count_is_bounded_like_queries)
{
    int dups;
    for (size_t k = 0; k < sizeof(one_row_queries) / sizeof(one_row_queries[0]); k++)
        check_updates(one_row_queries[k], 1, &dups);
    for (size_t k = 0; k < sizeof(capped_queries) / sizeof(capped_queries[0]); k++)
        check_updates(capped_queries[k], MAX_QUERIES, &dups);
}
END_TEST

/* ---- body limits: a server with MAX_BODY_BYTES=1024 ---- */

static void limits_setup(void)
{
    own_db = test_pg_create_db();
    const char *env[] = {"MAX_BODY_BYTES=1024", NULL};
    test_server_start(&own, own_db, env);
}

START_TEST(a_body_over_max_body_bytes_is_413_problem_json)
{
    char body[2048];
    memset(body, 'x', sizeof(body));
    static const char *const paths[] = {"/json", "/db", "/nope"};
    const char *headers[] = {"Content-Type: application/json", NULL};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        request(&r, &own, "POST", paths[i], body, sizeof(body), headers);
        ck_assert_msg(r.status == 413, "POST %s with 2048 bytes: status %ld %s", paths[i], r.status, r.body);
        test_assert_problem(&r, 413);
        test_response_free(&r);
    }
    /* the server is fine afterwards */
    test_response r;
    get(&r, &own, "/json");
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);
}
END_TEST

START_TEST(a_body_within_max_body_bytes_is_not_413)
{
    char body[512];
    memset(body, 'x', sizeof(body));
    test_response r;
    request(&r, &own, "POST", "/json", body, sizeof(body), NULL);
    test_assert_problem(&r, 405);
    test_response_free(&r);
}
END_TEST

START_TEST(an_announced_one_gib_body_is_refused_with_413_without_waiting_for_it)
{
    static const char req[] = "POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              "Content-Length: 1073741824\r\n\r\n{\"a\":";
    int fd = test_raw_connect(own.port);
    test_raw_send(fd, req, sizeof(req) - 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    test_response r;
    /* the body never comes: a server that waits for it never answers */
    test_raw_read_response(fd, RESPONSE_TIMEOUT_MS, 0, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    test_assert_problem(&r, 413);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ck_assert_msg(secs < 5.0, "the 413 took %.1f s", secs);
    test_response_free(&r);
}
END_TEST

/* ---- graceful stop ---- */

START_TEST(sigterm_stops_the_server_gracefully_with_status_0)
{
    char *db = test_pg_create_db();
    test_server s;
    test_server_start(&s, db, NULL);
    test_response r;
    get(&r, &s, "/db");
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);
    int status = test_server_stop(&s);
    char *log = test_server_log(&s);
    ck_assert_msg(status == 0, "exit status %d after SIGTERM; log:\n%s", status, log);
    ck_assert_msg(strstr(log, "SIGTERM") != NULL, "the log does not mention SIGTERM:\n%s", log);
    ck_assert_msg(strstr(log, "\"stopped\"") != NULL || strstr(log, " stopped") != NULL, "the log does not say it stopped:\n%s",
                  log);
    free(log);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(sigterm_stops_the_server_with_status_0_while_the_database_is_unreachable)
{
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=nowhere user=nobody connect_timeout=2",
             test_free_port());
    const char *env[] = {"MIGRATE_ON_START=false", NULL};
    test_server s;
    test_server_start(&s, conninfo, env);
    test_response r;
    get(&r, &s, "/readyz");
    test_assert_problem(&r, 503);
    test_response_free(&r);
    int status = test_server_stop(&s);
    char *log = test_server_log(&s);
    ck_assert_msg(status == 0, "exit status %d after SIGTERM; log:\n%s", status, log);
    free(log);
}
END_TEST

/* ---- where the event-loop threads run ---- */

/* The Cpus_allowed_list of pid's thread named name (its main thread if
 * name is NULL), malloc'd; NULL if there is no such thread. */
static char *thread_cpus(pid_t pid, const char *name)
{
    char dir[64], path[640], line[256], *found = NULL;
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    for (struct dirent *e; found == NULL && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(path, "r");
        bool match = f != NULL && fgets(line, sizeof(line), f) != NULL &&
                     (name != NULL ? strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == '\n'
                                   : atoi(e->d_name) == (int)pid);
        if (f != NULL)
            fclose(f);
        snprintf(path, sizeof(path), "%s/%s/status", dir, e->d_name);
        if (!match || (f = fopen(path, "r")) == NULL)
            continue;
        while (found == NULL && fgets(line, sizeof(line), f) != NULL)
            if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
                found = strdup(line + 18 + strspn(line + 18, " \t"));
                found[strcspn(found, "\n")] = '\0';
            }
        fclose(f);
    }
    closedir(d);
    return found;
}

/* A server that needs no database (healthz only), with env. */
static void start_dbless(test_server *s, const char *const *env)
{
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=nowhere user=nobody connect_timeout=2",
             test_free_port());
    test_server_start(s, conninfo, env);
}

/* Every worker of s (threads of them) runs where the server's main thread
 * may, or, if cpus is given, worker i on cpus[i % ncpus] alone. The main
 * thread starts the workers one after another and worker 0 may answer
 * /healthz before the last one has named and placed itself, so each gets
 * up to 10 s (a loaded sanitizer build needs milliseconds). */
static void assert_workers_on(const test_server *s, int threads, const int *cpus, int ncpus)
{
    char *all = thread_cpus(s->pid, NULL);
    ck_assert_ptr_nonnull(all);
    int64_t give_up = now_ms() + 10000;
    for (int i = 0; i < threads; i++) {
        char name[32], want[16];
        snprintf(name, sizeof(name), "worker %d", i);
        snprintf(want, sizeof(want), "%d", cpus != NULL ? cpus[i % ncpus] : 0);
        const char *expected = cpus != NULL ? want : all;
        char *got;
        while ((got = thread_cpus(s->pid, name)) == NULL || strcmp(got, expected) != 0) {
            if (now_ms() >= give_up)
                break;
            free(got);
            sleep_ms(10);
        }
        ck_assert_msg(got != NULL, "no thread named \"%s\" in process %d after 10 s", name, (int)s->pid);
        ck_assert_msg(strcmp(got, expected) == 0, "%s may run on CPUs %s, expected %s", name, got, expected);
        free(got);
    }
    free(all);
}

START_TEST(worker_threads_are_pinned_one_to_a_cpu_when_threads_is_a_multiple_of_the_cpus)
{
    cpu_set_t mine;
    ck_assert_int_eq(sched_getaffinity(0, sizeof(mine), &mine), 0);
    static int cpus[CPU_SETSIZE];
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &mine))
            cpus[n++] = c;
    int t = n <= 128 ? 2 * n : n; /* THREADS is at most 256 */
    char threads[32], more[32];
    snprintf(threads, sizeof(threads), "THREADS=%d", t);
    snprintf(more, sizeof(more), "THREADS=%d", n + 1);
    const char *pinned_env[] = {"MIGRATE_ON_START=false", threads, NULL};
    const char *off_env[] = {"MIGRATE_ON_START=false", threads, "WORKER_CPU_AFFINITY=off", NULL};
    const char *odd_env[] = {"MIGRATE_ON_START=false", more, NULL};
    test_server s;
    start_dbless(&s, pinned_env);
    /* on one CPU there is nothing to pin: the threads run where they may */
    assert_workers_on(&s, t, n >= 2 ? cpus : NULL, n);
    test_server_stop(&s);
    start_dbless(&s, off_env);
    assert_workers_on(&s, t, NULL, n);
    test_server_stop(&s);
    if (n >= 2 && n < 256) { /* n + 1 threads cannot share n CPUs evenly */
        start_dbless(&s, odd_env);
        assert_workers_on(&s, n + 1, NULL, n);
        test_server_stop(&s);
    }
}
END_TEST

/* ---- configuration ---- */

static void assert_config_error(const char *const *args, const char *const *env, const char *const *names)
{
    char *out = NULL;
    int status = test_run_binary(args, env, &out);
    ck_assert_msg(status == 2, "exit status %d, expected 2; output:\n%s", status, out);
    for (const char *const *n = names; *n != NULL; n++)
        ck_assert_msg(strstr(out, *n) != NULL, "the message does not name %s:\n%s", *n, out);
    free(out);
}

START_TEST(a_port_flag_out_of_range_exits_2_naming_port)
{
    const char *args[] = {"--port", "99999", NULL};
    const char *names[] = {"PORT", NULL};
    assert_config_error(args, NULL, names);
}
END_TEST

START_TEST(a_port_variable_that_is_not_a_number_exits_2_naming_port)
{
    const char *env[] = {"PORT=abc", NULL};
    const char *names[] = {"PORT", NULL};
    assert_config_error(NULL, env, names);
}
END_TEST

START_TEST(zero_threads_exits_2_naming_threads)
{
    const char *env[] = {"THREADS=0", NULL};
    const char *names[] = {"THREADS", NULL};
    assert_config_error(NULL, env, names);
}
END_TEST

START_TEST(pool_min_above_pool_max_exits_2_naming_both)
{
    const char *env[] = {"POOL_MIN=5", "POOL_MAX=2", NULL};
    const char *names[] = {"POOL_MIN", "POOL_MAX", NULL};
    assert_config_error(NULL, env, names);
}
END_TEST

START_TEST(help_exits_0_and_lists_the_settings)
{
    const char *args[] = {"--help", NULL};
    char *out = NULL;
    int status = test_run_binary(args, NULL, &out);
    ck_assert_msg(status == 0, "--help: exit status %d:\n%s", status, out);
    static const char *const expected[] = {"PORT", "--port", "DATABASE_URL", "--database-url", "MIGRATE_ON_START",
                                           "MAX_BODY_BYTES"};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        ck_assert_msg(strstr(out, expected[i]) != NULL, "--help does not list %s:\n%s", expected[i], out);
    free(out);
}
END_TEST

START_TEST(version_prints_the_name_and_version)
{
    const char *args[] = {"--version", NULL};
    char *out = NULL;
    int status = test_run_binary(args, NULL, &out);
    ck_assert_msg(status == 0, "--version: exit status %d:\n%s", status, out);
    ck_assert_str_eq(out, "h2pg " PROJECT_VERSION "\n");
    free(out);
}
END_TEST

/* ---- migrations through the binary ---- */

/* The NNNN_*.sql files of dir, sorted, as a malloc'd NULL-terminated list. */
static char **migration_files(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s: %s", dir, strerror(errno));
    char **names = calloc(256, sizeof(char *));
    ck_assert_ptr_nonnull(names);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && e->d_name[0] >= '0' && e->d_name[0] <= '9' && strcmp(e->d_name + len - 4, ".sql") == 0) {
            ck_assert_int_lt(n, 255);
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    return names;
}

static void free_names(char **names)
{
    for (char **p = names; *p != NULL; p++)
        free(*p);
    free(names);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    ck_assert_msg(in != NULL, "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    ck_assert_msg(out != NULL, "%s: %s", to, strerror(errno));
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ck_assert_int_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

/* A temp copy of the repository's migrations; free with remove_copy. */
static char *copy_migrations(void)
{
    const char *tmp = getenv("TMPDIR");
    char *dir = NULL;
    ck_assert_int_ge(asprintf(&dir, "%s/h2pg-service-migrations.XXXXXX", tmp && tmp[0] ? tmp : "/tmp"), 0);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char **names = migration_files(H2PG_MIGRATIONS_DIR);
    for (char **p = names; *p != NULL; p++) {
        char from[1024], to[1024];
        snprintf(from, sizeof(from), "%s/%s", H2PG_MIGRATIONS_DIR, *p);
        snprintf(to, sizeof(to), "%s/%s", dir, *p);
        copy_file(from, to);
    }
    free_names(names);
    return dir;
}

static void remove_copy(char *dir)
{
    char **names = migration_files(dir);
    for (char **p = names; *p != NULL; p++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, *p);
        unlink(path);
    }
    free_names(names);
    rmdir(dir);
    free(dir);
}

static size_t migration_count(void)
{
    char **names = migration_files(H2PG_MIGRATIONS_DIR);
    size_t n = 0;
    while (names[n] != NULL)
        n++;
    free_names(names);
    return n;
}

/* Runs `h2pg migrate` (extra: one more K=V or NULL); returns the status. */
static int run_migrate(const char *conninfo, const char *extra, char **out)
{
    char db_kv[2048];
    snprintf(db_kv, sizeof(db_kv), "DATABASE_URL=%s", conninfo);
    const char *args[] = {"migrate", NULL};
    const char *env[] = {db_kv, "LOG_LEVEL=info", extra, NULL};
    return test_run_binary(args, env, out);
}

START_TEST(migrate_applies_every_migration_to_a_fresh_database)
{
    char *db = test_pg_create_db();
    char *out = NULL;
    int status = run_migrate(db, NULL, &out);
    ck_assert_msg(status == 0, "h2pg migrate: exit status %d:\n%s", status, out);
    char applied[64];
    snprintf(applied, sizeof(applied), "%zu applied", migration_count());
    ck_assert_msg(strstr(out, applied) != NULL, "the output does not say \"%s\":\n%s", applied, out);
    free(out);
    PGconn *c = test_pg_connect(db);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world"), WORLD_ROWS);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM fortune"), 12);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)migration_count());
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_second_migrate_applies_nothing)
{
    char *db = test_pg_create_db();
    char *out = NULL;
    ck_assert_int_eq(run_migrate(db, NULL, &out), 0);
    free(out);
    PGconn *c = test_pg_connect(db);
    /* a marker that a re-run of the benchmark migration would reset */
    test_pg_exec(c, "UPDATE world SET randomnumber = 77 WHERE id = 1");
    int status = run_migrate(db, NULL, &out);
    ck_assert_msg(status == 0, "second h2pg migrate: exit status %d:\n%s", status, out);
    ck_assert_msg(strstr(out, " 0 applied") != NULL, "the second run does not say it applied 0:\n%s", out);
    free(out);
    ck_assert_int_eq(test_pg_int(c, "SELECT randomnumber FROM world WHERE id = 1"), 77);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)migration_count());
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

/* Migrates db from a temp copy, then edits the copy's first file; returns
 * the copy's dir and the edited file's name. */
static char *migrate_then_edit(const char *db, char **edited)
{
    char *dir = copy_migrations();
    char dir_kv[1100];
    snprintf(dir_kv, sizeof(dir_kv), "MIGRATIONS_DIR=%s", dir);
    char *out = NULL;
    int status = run_migrate(db, dir_kv, &out);
    ck_assert_msg(status == 0, "h2pg migrate from %s: exit status %d:\n%s", dir, status, out);
    free(out);
    char **names = migration_files(dir);
    ck_assert_ptr_nonnull(names[0]);
    *edited = strdup(names[0]);
    free_names(names);
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, *edited);
    FILE *f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("\n-- edited after it was applied\n", f);
    ck_assert_int_eq(fclose(f), 0);
    return dir;
}

START_TEST(migrate_refuses_an_applied_migration_that_was_edited_and_names_the_file)
{
    char *db = test_pg_create_db();
    char *edited = NULL;
    char *dir = migrate_then_edit(db, &edited);
    char dir_kv[1100];
    snprintf(dir_kv, sizeof(dir_kv), "MIGRATIONS_DIR=%s", dir);
    char *out = NULL;
    int status = run_migrate(db, dir_kv, &out);
    ck_assert_msg(status != 0, "h2pg migrate accepted an edited %s:\n%s", edited, out);
    ck_assert_msg(strstr(out, edited) != NULL, "the message does not name %s:\n%s", edited, out);
    free(out);
    remove_copy(dir);
    free(edited);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(serve_refuses_to_start_with_an_edited_migration)
{
    char *db = test_pg_create_db();
    char *edited = NULL;
    char *dir = migrate_then_edit(db, &edited);
    char db_kv[2048], dir_kv[1100], port_kv[32];
    snprintf(db_kv, sizeof(db_kv), "DATABASE_URL=%s", db);
    snprintf(dir_kv, sizeof(dir_kv), "MIGRATIONS_DIR=%s", dir);
    snprintf(port_kv, sizeof(port_kv), "PORT=%d", test_free_port());
    const char *args[] = {"serve", NULL};
    const char *env[] = {db_kv, dir_kv, port_kv, "HOST=127.0.0.1", "THREADS=1", NULL};
    char *out = NULL;
    int status = test_run_binary(args, env, &out);
    ck_assert_msg(status != 0 && status < 128, "h2pg serve with an edited %s: exit status %d:\n%s", edited, status, out);
    ck_assert_msg(strstr(out, edited) != NULL, "the message does not name %s:\n%s", edited, out);
    free(out);
    remove_copy(dir);
    free(edited);
    test_pg_drop_db(db);
}
END_TEST

/* ---- the suite ---- */

static Suite *service_suite(void)
{
    Suite *s = suite_create("service");

    TCase *shared_tc = tcase_create("shared");
    tcase_add_unchecked_fixture(shared_tc, shared_setup, shared_teardown);
    tcase_set_timeout(shared_tc, 120);
    tcase_add_test(shared_tc, healthz_answers_status_ok);
    tcase_add_test(shared_tc, readyz_answers_status_ready_when_the_database_answers);
    tcase_add_test(shared_tc, json_is_exactly_the_hello_world_object);
    tcase_add_test(shared_tc, plaintext_is_exactly_hello_world_as_text_plain);
    tcase_add_test(shared_tc, db_returns_one_random_row_as_the_table_holds_it);
    tcase_add_test(shared_tc, queries_returns_the_requested_number_of_rows_as_the_table_holds_them);
    tcase_add_test(shared_tc, queries_count_is_one_when_missing_invalid_or_below_one);
    tcase_add_test(shared_tc, queries_count_is_capped_at_500);
    tcase_add_test(shared_tc, queries_rows_are_random);
    tcase_add_test(shared_tc, fortunes_is_every_fortune_plus_one_sorted_by_message_in_the_exact_frame);
    tcase_add_test(shared_tc, fortunes_escapes_html_and_keeps_utf8_intact);
    tcase_add_test(shared_tc, an_unknown_route_is_404_problem_json);
    tcase_add_test(shared_tc, a_wrong_method_is_405_problem_json_with_an_allow_header_listing_get);
    tcase_add_test(shared_tc, head_json_is_200_without_a_body);
    tcase_add_test(shared_tc, an_answer_starts_with_status_date_connection_and_length);
    tcase_add_test(shared_tc, a_malformed_request_line_gets_400_and_the_connection_is_closed);
    tcase_add_test(shared_tc, a_request_timeout_header_that_is_not_a_number_is_400_problem_json);
    tcase_add_test(shared_tc, keep_alive_serves_several_requests_on_one_connection);
    tcase_add_test(shared_tc, pipelined_requests_are_answered_in_order);
    tcase_add_test(shared_tc, successful_responses_carry_a_request_id);
    tcase_add_test(shared_tc, error_responses_carry_a_request_id);
    tcase_add_test(shared_tc, a_given_request_id_is_echoed_back);
    tcase_add_test(shared_tc, the_access_log_has_one_json_line_per_request);
    tcase_add_test(shared_tc, the_access_log_records_rejected_requests_too);
    suite_add_tcase(s, shared_tc);

    TCase *nodb = tcase_create("unreachable_database");
    tcase_set_timeout(nodb, 120);
    tcase_add_test(nodb, healthz_needs_no_database_and_readyz_is_503_when_it_is_unreachable);
    suite_add_tcase(s, nodb);

    TCase *updates = tcase_create("updates");
    tcase_add_checked_fixture(updates, own_setup, own_teardown);
    tcase_set_timeout(updates, 180);
    tcase_add_test(updates, updates_writes_back_the_numbers_it_returns);
    tcase_add_test(updates, updates_gives_a_row_drawn_twice_one_number);
    tcase_add_test(updates, updates_count_is_bounded_like_queries);
    suite_add_tcase(s, updates);

    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, limits_setup, own_teardown);
    tcase_set_timeout(limits, 120);
    tcase_add_test(limits, a_body_over_max_body_bytes_is_413_problem_json);
    tcase_add_test(limits, a_body_within_max_body_bytes_is_not_413);
    tcase_add_test(limits, an_announced_one_gib_body_is_refused_with_413_without_waiting_for_it);
    suite_add_tcase(s, limits);

    TCase *stop = tcase_create("stop");
    tcase_set_timeout(stop, 120);
    tcase_add_test(stop, sigterm_stops_the_server_gracefully_with_status_0);
    tcase_add_test(stop, sigterm_stops_the_server_with_status_0_while_the_database_is_unreachable);
    tcase_add_test(stop, worker_threads_are_pinned_one_to_a_cpu_when_threads_is_a_multiple_of_the_cpus);
    suite_add_tcase(s, stop);

    TCase *config = tcase_create("config");
    tcase_set_timeout(config, 120);
    tcase_add_test(config, a_port_flag_out_of_range_exits_2_naming_port);
    tcase_add_test(config, a_port_variable_that_is_not_a_number_exits_2_naming_port);
    tcase_add_test(config, zero_threads_exits_2_naming_threads);
    tcase_add_test(config, pool_min_above_pool_max_exits_2_naming_both);
    tcase_add_test(config, help_exits_0_and_lists_the_settings);
    tcase_add_test(config, version_prints_the_name_and_version);
    suite_add_tcase(s, config);

    TCase *migrate = tcase_create("migrate");
    tcase_set_timeout(migrate, 180);
    tcase_add_test(migrate, migrate_applies_every_migration_to_a_fresh_database);
    tcase_add_test(migrate, a_second_migrate_applies_nothing);
    tcase_add_test(migrate, migrate_refuses_an_applied_migration_that_was_edited_and_names_the_file);
    tcase_add_test(migrate, serve_refuses_to_start_with_an_edited_migration);
    suite_add_tcase(s, migrate);
    return s;
}

int main(void)
{
    return run_suite(service_suite());
}
