/* The REST API end to end (docs: /work/shared/spec/API.md, "Users",
 * "Orders", "Accounts and transfers"): the real binary against a throwaway
 * database, over real sockets. Run through scripts/with-postgres.sh.
 *
 * Most tests share one server and database ("shared"): each creates the
 * users, accounts and orders it needs, with emails unique to its process,
 * and looks only at those. The pagination of GET /users needs to know every
 * user there is, so it gets a database of its own ("paging"). The transfer
 * invariant under many concurrent clients is tests/e2e/test_transfers.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define RESPONSE_TIMEOUT_MS 10000
#define PAGING_USERS 45

/* ---- the servers ---- */

static char *shared_db;
static test_server shared;

static void shared_setup(void) { test_server_start_on_fresh_db(&shared, &shared_db, NULL); }

static void shared_teardown(void) { test_server_stop_and_drop_db(&shared, &shared_db); }

static char *paging_db;
static test_server paging;

/* PAGING_USERS users and nobody else; the tests of this tcase only read. */
static void paging_setup(void)
{
    test_server_start_on_fresh_db(&paging, &paging_db, NULL);
    PGconn *c = test_pg_connect(paging_db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "INSERT INTO users (name, email) SELECT 'user ' || g, 'user' || g || '@paging.test' "
             "FROM generate_series(1, %d) g",
             PAGING_USERS);
    test_pg_exec(c, sql);
    PQfinish(c);
}

static void paging_teardown(void)
{
    test_server_stop_and_drop_db(&paging, &paging_db);
}

/* ---- requests ---- */

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* method path on s, with body (a JSON text sent as application/json) when
 * it is not NULL. */
static void call_on(test_response *r, const test_server *s, const char *method, const char *path, const char *body)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", s->base_url, path);
    test_http(r, method, url, body, body ? strlen(body) : 0, body ? json_headers : NULL);
}

static void call(test_response *r, const char *method, const char *path, const char *body)
{
    call_on(r, &shared, method, path, body);
}

/* The same, with explicit headers and a body of len bytes. */
static void call_raw(test_response *r, const char *method, const char *path, const char *body, size_t len,
                     const char *const *headers)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", shared.base_url, path);
    test_http(r, method, url, body, len, headers);
}

/* printf into a fresh string. */
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

/* The compact text of j (consumed). */
static char *dump(json_t *j)
{
    ck_assert_ptr_nonnull(j);
    char *s = json_dumps(j, JSON_COMPACT);
    ck_assert_ptr_nonnull(s);
    json_decref(j);
    return s;
}

/* An email no other test process uses. */
static char *unique_email(const char *tag)
{
    static unsigned seq;
    return fmt("%s-%ld-%u@example.test", tag, (long)getpid(), seq++);
}

static void assert_content_type(const test_response *r, const char *expected)
{
    char *ct = test_response_header(r, "Content-Type");
    ck_assert_msg(ct != NULL, "a %ld response without Content-Type", r->status);
    size_t n = strlen(expected);
    ck_assert_msg(strncasecmp(ct, expected, n) == 0 && (ct[n] == '\0' || ct[n] == ';'),
                  "Content-Type is \"%s\", expected %s", ct, expected);
    free(ct);
}

/* Asserts status and application/json; returns the body (new reference). */
static json_t *expect_json(const test_response *r, long status)
{
    ck_assert_msg(r->status == status, "expected status %ld, got %ld: %.800s", status, r->status, r->body);
    assert_content_type(r, "application/json");
    return test_response_json(r);
}

/* YYYY-MM-DDTHH:MM:SS[.fraction]Z */
static void assert_rfc3339_utc(const char *s)
{
    ck_assert_msg(s != NULL, "a timestamp that is not a string");
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    size_t n = strlen(shape), len = strlen(s);
    bool ok = len > n;
    for (size_t i = 0; ok && i < n; i++)
        ok = shape[i] == 'd' ? s[i] >= '0' && s[i] <= '9' : s[i] == shape[i];
    size_t i = n;
    if (ok && s[i] == '.') {
        i++;
        ok = s[i] >= '0' && s[i] <= '9';
        while (s[i] >= '0' && s[i] <= '9')
            i++;
    }
    ok = ok && s[i] == 'Z' && s[i + 1] == '\0';
    ck_assert_msg(ok, "\"%s\" is not an RFC 3339 UTC timestamp", s);
}

/* An object with exactly these members (NULL-terminated), each present. */
static void assert_members(const json_t *o, const char *const *names)
{
    ck_assert_msg(json_is_object(o), "not an object");
    size_t n = 0;
    for (const char *const *p = names; *p != NULL; p++, n++)
        ck_assert_msg(json_object_get(o, *p) != NULL, "no \"%s\" in %s", *p, json_dumps(o, JSON_COMPACT));
    ck_assert_msg(json_object_size(o) == n, "unexpected members in %s", json_dumps(o, JSON_COMPACT));
}

static int64_t int_member(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    ck_assert_msg(json_is_integer(v), "\"%s\" is not an integer in %s", name, json_dumps(o, JSON_COMPACT));
    return json_integer_value(v);
}

static const char *str_member(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    ck_assert_msg(json_is_string(v), "\"%s\" is not a string in %s", name, json_dumps(o, JSON_COMPACT));
    return json_string_value(v);
}

/* A string member equal, byte for byte, to expected[0..len). */
static void assert_str_member(const json_t *o, const char *name, const char *expected, size_t len)
{
    json_t *v = json_object_get(o, name);
    ck_assert_msg(json_is_string(v), "\"%s\" is not a string", name);
    ck_assert_msg(json_string_length(v) == len && memcmp(json_string_value(v), expected, len) == 0,
                  "\"%s\" is \"%s\", expected \"%.*s\"", name, json_string_value(v), (int)len, expected);
}

static void assert_user(const json_t *u, const char *name, const char *email)
{
    static const char *const members[] = {"id", "name", "email", "created_at", NULL};
    assert_members(u, members);
    ck_assert_int_ge(int_member(u, "id"), 1);
    assert_str_member(u, "name", name, strlen(name));
    assert_str_member(u, "email", email, strlen(email));
    assert_rfc3339_utc(str_member(u, "created_at"));
}

static void assert_location(const test_response *r, const char *prefix, int64_t id)
{
    char want[96];
    snprintf(want, sizeof(want), "%s%lld", prefix, (long long)id);
    char *loc = test_response_header(r, "Location");
    ck_assert_msg(loc != NULL && strcmp(loc, want) == 0, "Location is %s, expected %s", loc ? loc : "(none)", want);
    free(loc);
}

/* A 422 problem whose "errors" are {field, message} objects naming exactly
 * the fields of the NULL-terminated list (each at least once, no other). */
static void assert_invalid(const test_response *r, const char *const *fields, const char *what)
{
    ck_assert_msg(r->status == 422, "%s: expected 422, got %ld: %.500s", what, r->status, r->body);
    test_assert_problem(r, 422);
    json_t *j = test_response_json(r);
    json_t *errors = json_object_get(j, "errors");
    ck_assert_msg(json_is_array(errors) && json_array_size(errors) > 0, "%s: no \"errors\" list in %s", what, r->body);
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        const char *field = json_string_value(json_object_get(e, "field"));
        ck_assert_msg(json_is_object(e) && field != NULL && json_is_string(json_object_get(e, "message")),
                      "%s: an error that is not {field, message}: %s", what, r->body);
        bool listed = false;
        for (const char *const *f = fields; *f != NULL; f++)
            listed |= strcmp(*f, field) == 0;
        ck_assert_msg(listed, "%s: an error for \"%s\", which is valid: %s", what, field, r->body);
    }
    for (const char *const *f = fields; *f != NULL; f++) {
        bool named = false;
        json_array_foreach(errors, i, e) named |= strcmp(json_string_value(json_object_get(e, "field")), *f) == 0;
        ck_assert_msg(named, "%s: no error names \"%s\": %s", what, *f, r->body);
    }
    json_decref(j);
}

static void assert_same_bytes(const test_response *a, const test_response *b, const char *what)
{
    ck_assert_msg(a->status == b->status, "%s: status %ld, then %ld", what, a->status, b->status);
    ck_assert_msg(a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0,
                  "%s: the bodies differ:\n%s\n%s", what, a->body, b->body);
}

/* ---- the database, for what the API does not show ---- */

static long long sql_int(const char *f, ...) __attribute__((format(printf, 1, 2)));
static long long sql_int(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *sql = NULL;
    ck_assert_int_ge(vasprintf(&sql, f, ap), 0);
    va_end(ap);
    PGconn *c = test_pg_connect(shared_db);
    long long v = test_pg_int(c, sql);
    PQfinish(c);
    free(sql);
    return v;
}

static long long balance_of(int64_t account)
{
    return sql_int("SELECT balance_cents FROM accounts WHERE id = %lld", (long long)account);
}

static long long transfers_touching(int64_t account)
{
    return sql_int("SELECT count(*) FROM transfers WHERE from_account_id = %lld OR to_account_id = %lld",
                   (long long)account, (long long)account);
}

/* ---- making things through the API ---- */

static int64_t new_user(const char *tag)
{
    char *email = unique_email(tag);
    char *body = dump(json_pack("{s:s, s:s}", "name", tag, "email", email));
    test_response r;
    call(&r, "POST", "/users", body);
    json_t *u = expect_json(&r, 201);
    int64_t id = int_member(u, "id");
    json_decref(u);
    test_response_free(&r);
    free(body);
    free(email);
    return id;
}

static int64_t new_account(int64_t user, long long balance)
{
    char *body = fmt("{\"user_id\":%lld,\"balance_cents\":%lld}", (long long)user, balance);
    test_response r;
    call(&r, "POST", "/accounts", body);
    json_t *a = expect_json(&r, 201);
    int64_t id = int_member(a, "id");
    json_decref(a);
    test_response_free(&r);
    free(body);
    return id;
}

static int64_t new_order(int64_t user, const char *item, int quantity, long long price)
{
    char *body = dump(json_pack("{s:s, s:i, s:I}", "item", item, "quantity", quantity, "price_cents", (json_int_t)price));
    char *path = fmt("/users/%lld/orders", (long long)user);
    test_response r;
    call(&r, "POST", path, body);
    json_t *o = expect_json(&r, 201);
    int64_t id = int_member(o, "id");
    json_decref(o);
    test_response_free(&r);
    free(path);
    free(body);
    return id;
}

/* POST /transfers with an optional Idempotency-Key header line ("Idempotency-Key: k"). */
static void post_transfer(test_response *r, int64_t from, int64_t to, long long amount, const char *key_header)
{
    char *body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":%lld}", (long long)from,
                     (long long)to, amount);
    const char *headers[] = {"Content-Type: application/json", key_header, NULL};
    call_raw(r, "POST", "/transfers", body, strlen(body), headers);
    free(body);
}

static char *key_header(const char *tag)
{
    static unsigned seq;
    return fmt("Idempotency-Key: %s-%ld-%u", tag, (long)getpid(), seq++);
}

/* The rows idempotency_keys holds for the key of a key_header line. */
static long long rows_for_key(const char *key_line)
{
    const char *key = key_line + strlen("Idempotency-Key: ");
    PGconn *c = test_pg_connect(shared_db);
    const char *params[] = {key};
    PGresult *res = PQexecParams(c, "SELECT count(*) FROM idempotency_keys WHERE key = $1", 1, NULL, params, NULL,
                                 NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return n;
}

/* ======================= users ======================= */

START_TEST(create_user_is_201_with_the_user_and_a_location_that_reads_it_back)
{
    char *email = unique_email("create");
    char *body = dump(json_pack("{s:s, s:s}", "name", "Ada Lovelace", "email", email));
    test_response r;
    call(&r, "POST", "/users", body);
    json_t *u = expect_json(&r, 201);
    assert_user(u, "Ada Lovelace", email);
    int64_t id = int_member(u, "id");
    assert_location(&r, "/users/", id);

    char *loc = test_response_header(&r, "Location");
    test_response g;
    call(&g, "GET", loc, NULL);
    json_t *got = expect_json(&g, 200);
    ck_assert_msg(json_equal(json_object_get(got, "user"), u), "GET %s: %s, POST said %s", loc, g.body, r.body);
    json_decref(got);
    test_response_free(&g);
    free(loc);
    json_decref(u);
    test_response_free(&r);
    free(body);
    free(email);
}
END_TEST

START_TEST(create_user_with_a_taken_email_is_409_and_adds_nobody)
{
    char *email = unique_email("dup");
    char *body = dump(json_pack("{s:s, s:s}", "name", "first", "email", email));
    test_response r;
    call(&r, "POST", "/users", body);
    ck_assert_int_eq(r.status, 201);
    test_response_free(&r);
    char *again = dump(json_pack("{s:s, s:s}", "name", "second", "email", email));
    call(&r, "POST", "/users", again);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    char *sql = fmt("SELECT count(*) FROM users WHERE email = '%s'", email);
    ck_assert_int_eq(sql_int("%s", sql), 1);
    free(sql);
    free(again);
    free(body);
    free(email);
}
END_TEST

START_TEST(create_user_with_a_missing_field_or_a_field_of_the_wrong_type_is_422_naming_it)
{
    static const struct {
        const char *body;
        const char *fields[3];
    } cases[] = {
        {"{\"email\":\"a@b.test\"}", {"name"}},
        {"{\"name\":\"x\"}", {"email"}},
        {"{}", {"name", "email"}},
        {"{\"name\":5,\"email\":\"wt1@b.test\"}", {"name"}},
        {"{\"name\":\"x\",\"email\":true}", {"email"}},
        {"{\"name\":null,\"email\":\"wt2@b.test\"}", {"name"}},
        {"{\"name\":[\"x\"],\"email\":{\"a\":1}}", {"name", "email"}},
        {"{\"name\":\"x\",\"email\":12}", {"email"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        call(&r, "POST", "/users", cases[i].body);
        assert_invalid(&r, cases[i].fields, cases[i].body);
        test_response_free(&r);
    }
    ck_assert_int_eq(sql_int("SELECT count(*) FROM users WHERE email LIKE 'wt_@b.test' OR email = 'a@b.test'"), 0);
}
END_TEST

/* n copies of the UTF-8 text unit. */
static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * n + 1);
    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* POST /users with this name and a fresh email; returns the status. */
static long create_named(const char *name, test_response *out)
{
    char *email = unique_email("len");
    char *body = dump(json_pack("{s:s, s:s}", "name", name, "email", email));
    call(out, "POST", "/users", body);
    free(body);
    free(email);
    return out->status;
}

START_TEST(user_name_length_is_1_to_200_unicode_characters)
{
    static const char *const name_field[] = {"name", NULL};
    static const struct {
        const char *unit;
        size_t n;
        bool valid;
    } cases[] = {
        {"a", 200, true},
        {"a", 201, false},
        {"\xF0\x9F\x98\x80", 200, true},  /* U+1F600, 4 bytes: 800 bytes, 200 characters */
        {"\xF0\x9F\x98\x80", 201, false},
        {"\xC3\xA9", 200, true},          /* é, 2 bytes */
        {"\xE2\x82\xAC", 201, false},     /* €, 3 bytes */
        {"a", 1, true},
        {"", 1, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *name = repeat(cases[i].unit, cases[i].n);
        test_response r;
        create_named(name, &r);
        char what[96];
        snprintf(what, sizeof(what), "a name of %zu x \"%s\"", cases[i].unit[0] ? cases[i].n : 0, cases[i].unit);
        if (cases[i].valid) {
            json_t *u = expect_json(&r, 201);
            assert_str_member(u, "name", name, strlen(name));
            json_decref(u);
        } else {
            assert_invalid(&r, name_field, what);
        }
        test_response_free(&r);
        free(name);
    }
}
END_TEST

START_TEST(a_bad_email_is_422_naming_email)
{
    static const char *const email_field[] = {"email", NULL};
    char *long_local = repeat("b", 319);
    char *too_long = fmt("%s@c", long_local); /* 321 characters */
    char *bad[] = {"no-at-sign.test", "two@at@signs.test", "@nolocal.test", "nodomain@", "", too_long,
                   /* no spaces or control characters, anywhere (issue 18 #13) */
                   "\n@\n", "a\r\n@x.test", "tab\t@x.test", "del\x7f@x.test", "ctl\x01@x.test", " lead@x.test",
                   "trail@x.test ", "in side@x.test", "nb\xc2\xa0sp@x.test", "c1\xc2\x85@x.test",
                   "ls@x\xe2\x80\xa8.test", "ideographic\xe3\x80\x80@x.test"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *body = dump(json_pack("{s:s, s:s}", "name", "x", "email", bad[i]));
        test_response r;
        call(&r, "POST", "/users", body);
        assert_invalid(&r, email_field, bad[i]);
        test_response_free(&r);
        free(body);
    }
    ck_assert_int_eq(sql_int("SELECT count(*) FROM users WHERE email ~ '[[:space:][:cntrl:]]'"), 0);
    /* 320 characters is the longest allowed, also when they take more bytes */
    char *tag = fmt("%ld", (long)getpid());
    char *pad = repeat("\xC3\xA9", 320 - strlen(tag) - strlen("@x.test"));
    char *longest = fmt("%s%s@x.test", tag, pad);
    char *body = dump(json_pack("{s:s, s:s}", "name", "x", "email", longest));
    test_response r;
    call(&r, "POST", "/users", body);
    json_t *u = expect_json(&r, 201);
    assert_str_member(u, "email", longest, strlen(longest));
    json_decref(u);
    test_response_free(&r);
    free(body);
    free(longest);
    free(pad);
    free(tag);
    free(too_long);
    free(long_local);
}
END_TEST

START_TEST(every_bad_field_of_a_user_is_listed_in_one_422)
{
    static const char *const both[] = {"name", "email", NULL};
    test_response r;
    call(&r, "POST", "/users", "{\"name\":\"\",\"email\":\"nope\"}");
    assert_invalid(&r, both, "an empty name and an email without @");
    test_response_free(&r);
}
END_TEST

/* Bodies that cannot be read as one JSON object: 400 wherever a JSON body
 * is expected. */
static const struct {
    const char *what;
    const char *body;
    size_t len; /* 0: strlen */
} unreadable[] = {
    {"malformed JSON", "{\"name\": \"x\",", 0},
    {"a trailing comma", "{\"name\":\"x\",}", 0},
    {"invalid UTF-8", "{\"name\":\"\xff\xfe\",\"email\":\"u@x.test\"}", 0},
    {"an overlong UTF-8 encoding", "{\"name\":\"\xc0\xaf\",\"email\":\"u@x.test\"}", 0},
    {"a UTF-8 encoded surrogate", "{\"name\":\"\xed\xa0\x80\",\"email\":\"u@x.test\"}", 0},
    {"a lone surrogate escape", "{\"name\":\"\\ud800\",\"email\":\"u@x.test\"}", 0},
    {"a top-level array", "[{\"name\":\"x\",\"email\":\"u@x.test\"}]", 0},
    {"a top-level string", "\"x\"", 0},
    {"a top-level number", "42", 0},
    {"a top-level null", "null", 0},
    {"an empty body", "", 0},
    {"duplicate keys", "{\"name\":\"x\",\"name\":\"y\",\"email\":\"u@x.test\"}", 0},
    {"a NUL escape in a string", "{\"name\":\"a\\u0000b\",\"email\":\"u@x.test\"}", 0},
    {"a raw NUL byte", "{\"name\":\"a\0b\",\"email\":\"u@x.test\"}", 33},
    {"an integer beyond 64 bits", "{\"name\":\"x\",\"email\":\"u@x.test\",\"extra\":99999999999999999999}", 0},
    {"a negative integer beyond 64 bits", "{\"name\":\"x\",\"email\":\"u@x.test\",\"n\":[-99999999999999999999]}", 0},
    {"two JSON texts", "{\"name\":\"x\",\"email\":\"u@x.test\"}{}", 0},
};

static void assert_unreadable_bodies_are_400(const char *method, const char *path)
{
    for (size_t i = 0; i < sizeof(unreadable) / sizeof(unreadable[0]); i++) {
        size_t len = unreadable[i].len ? unreadable[i].len : strlen(unreadable[i].body);
        test_response r;
        call_raw(&r, method, path, unreadable[i].body, len, json_headers);
        ck_assert_msg(r.status == 400, "%s %s with %s: status %ld %s", method, path, unreadable[i].what, r.status,
                      r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
}

START_TEST(a_body_that_is_not_one_json_object_is_400_on_every_json_endpoint)
{
    int64_t user = new_user("unreadable");
    int64_t a = new_account(user, 100), b = new_account(user, 0);
    char *user_path = fmt("/users/%lld", (long long)user);
    char *orders_path = fmt("/users/%lld/orders", (long long)user);
    long long users_before = sql_int("SELECT count(*) FROM users");
    assert_unreadable_bodies_are_400("POST", "/users");
    assert_unreadable_bodies_are_400("PATCH", user_path);
    assert_unreadable_bodies_are_400("POST", orders_path);
    assert_unreadable_bodies_are_400("POST", "/accounts");
    assert_unreadable_bodies_are_400("POST", "/transfers");
    ck_assert_int_eq(sql_int("SELECT count(*) FROM users"), users_before);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM orders WHERE user_id = %lld", (long long)user), 0);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM accounts WHERE user_id = %lld", (long long)user), 2);
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(balance_of(b), 0);
    free(orders_path);
    free(user_path);
}
END_TEST

START_TEST(an_amount_beyond_64_bits_is_400_not_422)
{
    int64_t user = new_user("huge");
    int64_t a = new_account(user, 100), b = new_account(user, 0);
    char *orders_path = fmt("/users/%lld/orders", (long long)user);
    char *transfer = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":9223372036854775808}",
                         (long long)a, (long long)b);
    char *account = fmt("{\"user_id\":%lld,\"balance_cents\":18446744073709551616}", (long long)user);
    static const char order[] = "{\"item\":\"x\",\"quantity\":1,\"price_cents\":9223372036854775808}";
    const struct {
        const char *path, *body;
    } cases[] = {{"/transfers", transfer}, {"/accounts", account}, {orders_path, order}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        call(&r, "POST", cases[i].path, cases[i].body);
        ck_assert_msg(r.status == 400, "POST %s %s: status %ld %s", cases[i].path, cases[i].body, r.status, r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(transfers_touching(a), 0);
    free(account);
    free(transfer);
    free(orders_path);
}
END_TEST

START_TEST(a_body_that_is_not_application_json_is_415)
{
    static const char body[] = "{\"name\":\"x\",\"email\":\"ct@x.test\"}";
    static const char *const types[] = {"Content-Type: text/plain", "Content-Type:",
                                        "Content-Type: application/x-www-form-urlencoded",
                                        "Content-Type: application/jsonx", "Content-Type: text/json"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const char *headers[] = {types[i], NULL};
        test_response r;
        call_raw(&r, "POST", "/users", body, strlen(body), headers);
        ck_assert_msg(r.status == 415, "\"%s\": status %ld %s", types[i], r.status, r.body);
        test_assert_problem(&r, 415);
        test_response_free(&r);
    }
    ck_assert_int_eq(sql_int("SELECT count(*) FROM users WHERE email = 'ct@x.test'"), 0);
    /* parameters and case do not matter */
    char *email = unique_email("charset");
    char *ok = dump(json_pack("{s:s, s:s}", "name", "x", "email", email));
    const char *headers[] = {"Content-Type: Application/JSON; charset=utf-8", NULL};
    test_response r;
    call_raw(&r, "POST", "/users", ok, strlen(ok), headers);
    ck_assert_msg(r.status == 201, "application/json; charset=utf-8: status %ld %s", r.status, r.body);
    test_response_free(&r);
    free(ok);
    free(email);
}
END_TEST

START_TEST(text_is_stored_and_returned_byte_exact)
{
    static const char *const names[] = {
        "O'Brien \"the quote\" \\ backslash \\\\ two",
        "'; DROP TABLE users; --",
        "Robert'); DELETE FROM users WHERE ('1'='1",
        "line one\nline two\r\nline three\ttabbed",
        "4-byte \xF0\x9F\x98\x80 \xF0\x90\x8D\x88 and 2/3-byte \xC3\xA9 \xE2\x82\xAC \xE3\x83\x95",
        "$1 %s %n {} <script>alert(1)</script> &amp;",
        "\x7f control \x01 bytes \x1f",
    };
    PGconn *c = test_pg_connect(shared_db);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *email = unique_email("exact");
        /* the same awkward text in the email's local part, too, but for
         * its spaces and control characters, which an email may not hold */
        char *local = strdup(names[i]);
        size_t k = 0;
        for (const char *p = names[i]; *p != '\0'; p++)
            if ((unsigned char)*p > 0x20 && *p != 0x7f)
                local[k++] = *p;
        local[k] = '\0';
        char *awkward_email = fmt("%s%s", local, email);
        free(local);
        char *body = dump(json_pack("{s:s, s:s}", "name", names[i], "email", awkward_email));
        test_response r;
        call(&r, "POST", "/users", body);
        json_t *u = expect_json(&r, 201);
        assert_str_member(u, "name", names[i], strlen(names[i]));
        assert_str_member(u, "email", awkward_email, strlen(awkward_email));
        int64_t id = int_member(u, "id");

        /* read back through the API */
        char *path = fmt("/users/%lld", (long long)id);
        test_response g;
        call(&g, "GET", path, NULL);
        json_t *got = expect_json(&g, 200);
        json_t *gu = json_object_get(got, "user");
        assert_str_member(gu, "name", names[i], strlen(names[i]));
        assert_str_member(gu, "email", awkward_email, strlen(awkward_email));

        /* and in the table, as sent */
        char idtext[32];
        snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
        const char *params[] = {idtext};
        PGresult *res = PQexecParams(c, "SELECT name, email FROM users WHERE id = $1", 1, NULL, params, NULL, NULL, 0);
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        ck_assert_int_eq(PQntuples(res), 1);
        ck_assert_msg(strcmp(PQgetvalue(res, 0, 0), names[i]) == 0, "the table holds name \"%s\"", PQgetvalue(res, 0, 0));
        ck_assert_msg(strcmp(PQgetvalue(res, 0, 1), awkward_email) == 0, "the table holds email \"%s\"",
                      PQgetvalue(res, 0, 1));
        PQclear(res);

        /* orders' items too */
        int64_t order = new_order(id, names[i], 1, 1);
        char *opath = fmt("/orders/%lld", (long long)order);
        test_response o;
        call(&o, "GET", opath, NULL);
        json_t *oj = expect_json(&o, 200);
        assert_str_member(oj, "item", names[i], strlen(names[i]));
        json_decref(oj);
        test_response_free(&o);
        free(opath);

        json_decref(got);
        test_response_free(&g);
        free(path);
        json_decref(u);
        test_response_free(&r);
        free(body);
        free(awkward_email);
        free(email);
    }
    /* the table is still there, and so is everyone in it */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), 1);
    ck_assert_int_ge(test_pg_int(c, "SELECT count(*) FROM users"), (long long)(sizeof(names) / sizeof(names[0])));
    PQfinish(c);
}
END_TEST

/* ---- GET /users/{id} ---- */

START_TEST(get_user_returns_the_user_with_their_orders_and_accounts)
{
    int64_t id = new_user("reader");
    int64_t other = new_user("someone-else");
    int64_t o1 = new_order(id, "pen", 2, 150);
    new_order(other, "not mine", 1, 1);
    int64_t o2 = new_order(id, "ink", 1, 999);
    int64_t acc = new_account(id, 4200);
    new_account(other, 1);

    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    static const char *const top[] = {"user", "orders", "accounts", NULL};
    assert_members(j, top);
    json_t *u = json_object_get(j, "user");
    ck_assert_int_eq(int_member(u, "id"), id);
    json_t *orders = json_object_get(j, "orders"), *accounts = json_object_get(j, "accounts");
    ck_assert_msg(json_is_array(orders) && json_array_size(orders) == 2, "orders: %s", r.body);
    ck_assert_msg(json_is_array(accounts) && json_array_size(accounts) == 1, "accounts: %s", r.body);
    ck_assert_int_eq(int_member(json_array_get(orders, 0), "id"), o1);
    ck_assert_int_eq(int_member(json_array_get(orders, 1), "id"), o2);

    /* each is the object its own GET returns */
    char *opath = fmt("/orders/%lld", (long long)o1);
    test_response o;
    call(&o, "GET", opath, NULL);
    json_t *oj = expect_json(&o, 200);
    ck_assert_msg(json_equal(oj, json_array_get(orders, 0)), "%s vs %s", o.body, r.body);
    json_decref(oj);
    test_response_free(&o);
    free(opath);
    char *apath = fmt("/accounts/%lld", (long long)acc);
    test_response a;
    call(&a, "GET", apath, NULL);
    json_t *aj = expect_json(&a, 200);
    ck_assert_msg(json_equal(aj, json_array_get(accounts, 0)), "%s vs %s", a.body, r.body);
    json_decref(aj);
    test_response_free(&a);
    free(apath);

    json_decref(j);
    test_response_free(&r);
    free(path);
}
END_TEST

START_TEST(get_user_lists_only_the_first_100_orders_by_id)
{
    int64_t id = new_user("many-orders");
    char *sql = fmt("INSERT INTO orders (user_id, item, quantity, price_cents, total_cents) "
                    "SELECT %lld, 'bulk ' || g, 1, g, g FROM generate_series(1, 130) g",
                    (long long)id);
    PGconn *c = test_pg_connect(shared_db);
    test_pg_exec(c, sql);
    free(sql);
    char *first_sql = fmt("SELECT min(id) FROM orders WHERE user_id = %lld", (long long)id);
    long long first = test_pg_int(c, first_sql);
    free(first_sql);
    PQfinish(c);

    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    json_t *orders = json_object_get(j, "orders");
    ck_assert_msg(json_is_array(orders), "%.300s", r.body);
    ck_assert_int_eq(json_array_size(orders), 100);
    for (size_t i = 0; i < 100; i++)
        ck_assert_int_eq(int_member(json_array_get(orders, i), "id"), first + (long long)i);
    json_decref(j);
    test_response_free(&r);
    free(path);
}
END_TEST

START_TEST(get_user_with_an_unknown_or_malformed_id_is_404)
{
    static const char *const ids[] = {"0", "-1", "abc", "9223372036854775808", "1.5", "9223372036854775807",
                                      "1e3", "+1", "01x", "0x10"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char *path = fmt("/users/%s", ids[i]);
        test_response r;
        call(&r, "GET", path, NULL);
        ck_assert_msg(r.status == 404, "GET %s: status %ld %s", path, r.status, r.body);
        test_assert_problem(&r, 404);
        test_response_free(&r);
        free(path);
    }
}
END_TEST

/* ---- PATCH /users/{id} ---- */

/* PATCH path body: the user that comes back. */
static json_t *patch(int64_t id, const char *body)
{
    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "PATCH", path, body);
    json_t *u = expect_json(&r, 200);
    test_response_free(&r);
    free(path);
    return u;
}

static json_t *read_user(int64_t id)
{
    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    json_t *u = json_incref(json_object_get(j, "user"));
    json_decref(j);
    test_response_free(&r);
    free(path);
    return u;
}

START_TEST(patch_user_changes_only_the_fields_given)
{
    int64_t id = new_user("patch");
    json_t *before = read_user(id);
    char *email1 = unique_email("patched");
    char *email2 = unique_email("patched-again");

    json_t *u = patch(id, "{\"name\":\"New Name\"}");
    assert_user(u, "New Name", str_member(before, "email"));
    ck_assert_int_eq(int_member(u, "id"), id);
    ck_assert_str_eq(str_member(u, "created_at"), str_member(before, "created_at"));
    json_decref(u);

    char *body = dump(json_pack("{s:s}", "email", email1));
    u = patch(id, body);
    assert_user(u, "New Name", email1);
    json_decref(u);
    free(body);

    body = dump(json_pack("{s:s, s:s}", "name", "Both \xF0\x9F\x98\x80", "email", email2));
    u = patch(id, body);
    assert_user(u, "Both \xF0\x9F\x98\x80", email2);
    json_t *now = read_user(id);
    ck_assert_msg(json_equal(u, now), "PATCH answered %s, GET says %s", json_dumps(u, 0), json_dumps(now, 0));
    json_decref(now);
    json_decref(u);
    free(body);

    /* null means "leave it" */
    u = patch(id, "{\"name\":\"Only\",\"email\":null}");
    assert_user(u, "Only", email2);
    json_decref(u);

    json_decref(before);
    free(email2);
    free(email1);
}
END_TEST

START_TEST(patch_an_unknown_user_is_404)
{
    static const char *const paths[] = {"/users/9223372036854775807", "/users/0", "/users/abc"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        call(&r, "PATCH", paths[i], "{\"name\":\"ghost\"}");
        ck_assert_msg(r.status == 404, "PATCH %s: status %ld", paths[i], r.status);
        test_assert_problem(&r, 404);
        test_response_free(&r);
    }
}
END_TEST

START_TEST(patch_to_a_taken_email_is_409_and_changes_nothing)
{
    char *taken = unique_email("taken");
    char *body = dump(json_pack("{s:s, s:s}", "name", "holder", "email", taken));
    test_response r;
    call(&r, "POST", "/users", body);
    ck_assert_int_eq(r.status, 201);
    test_response_free(&r);
    free(body);

    int64_t id = new_user("wants-it");
    json_t *before = read_user(id);
    char *path = fmt("/users/%lld", (long long)id);
    body = dump(json_pack("{s:s, s:s}", "name", "changed", "email", taken));
    call(&r, "PATCH", path, body);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    json_t *after = read_user(id);
    ck_assert_msg(json_equal(before, after), "a refused PATCH changed the user: %s -> %s", json_dumps(before, 0),
                  json_dumps(after, 0));
    json_decref(after);
    json_decref(before);
    free(body);
    free(path);
    free(taken);
}
END_TEST

/* An address is one address whatever its case (issue 18 #13). */
START_TEST(emails_that_differ_only_in_case_are_one_email_409)
{
    char *email = fmt("case-%ld@Example.test", (long)getpid());
    char *upper = fmt("CASE-%ld@EXAMPLE.TEST", (long)getpid());
    char *lower = fmt("case-%ld@example.test", (long)getpid());
    char *body = dump(json_pack("{s:s, s:s}", "name", "first", "email", email));
    test_response r;
    call(&r, "POST", "/users", body);
    json_t *u = expect_json(&r, 201);
    int64_t first = int_member(u, "id");
    assert_str_member(u, "email", email, strlen(email)); /* stored as sent */
    json_decref(u);
    test_response_free(&r);
    const char *others[] = {upper, lower};
    for (size_t i = 0; i < 2; i++) {
        char *again = dump(json_pack("{s:s, s:s}", "name", "second", "email", others[i]));
        call(&r, "POST", "/users", again);
        test_assert_problem(&r, 409);
        test_response_free(&r);
        free(again);
    }
    char *sql = fmt("SELECT count(*) FROM users WHERE lower(email) = '%s'", lower);
    ck_assert_int_eq(sql_int("%s", sql), 1);
    /* PATCH another user to it: 409, nothing changes */
    int64_t other = new_user("case-other");
    json_t *before = read_user(other);
    char *path = fmt("/users/%lld", (long long)other);
    char *patch_body = dump(json_pack("{s:s}", "email", upper));
    call(&r, "PATCH", path, patch_body);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    json_t *after = read_user(other);
    ck_assert(json_equal(before, after));
    /* the holder itself may change the case of its own address */
    json_t *changed = patch(first, patch_body);
    assert_str_member(changed, "email", upper, strlen(upper));
    json_decref(changed);
    ck_assert_int_eq(sql_int("%s", sql), 1);
    json_decref(after);
    json_decref(before);
    free(patch_body);
    free(path);
    free(sql);
    free(body);
    free(lower);
    free(upper);
    free(email);
}
END_TEST

START_TEST(patch_with_neither_name_nor_email_is_422)
{
    int64_t id = new_user("patch-empty");
    json_t *before = read_user(id);
    char *path = fmt("/users/%lld", (long long)id);
    static const char *const bodies[] = {"{}", "{\"other\":1}", "{\"name\":null,\"email\":null}"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        test_response r;
        call(&r, "PATCH", path, bodies[i]);
        ck_assert_msg(r.status == 422, "PATCH %s: status %ld %s", bodies[i], r.status, r.body);
        test_assert_problem(&r, 422);
        json_t *j = test_response_json(&r);
        json_t *errors = json_object_get(j, "errors");
        ck_assert_msg(json_is_array(errors) && json_array_size(errors) > 0, "no errors list: %s", r.body);
        json_decref(j);
        test_response_free(&r);
    }
    json_t *after = read_user(id);
    ck_assert(json_equal(before, after));
    json_decref(after);
    json_decref(before);
    free(path);
}
END_TEST

START_TEST(patch_with_an_invalid_field_is_422_and_changes_nothing)
{
    int64_t id = new_user("patch-invalid");
    json_t *before = read_user(id);
    char *path = fmt("/users/%lld", (long long)id);
    char *long_name = repeat("n", 201);
    char *long_name_body = dump(json_pack("{s:s}", "name", long_name));
    char *fresh = unique_email("would-be");
    char *mixed = dump(json_pack("{s:s, s:s}", "name", "", "email", fresh));
    char *mixed2 = dump(json_pack("{s:s, s:s}", "name", "fine", "email", "two@@x.test"));
    static const char *const name_f[] = {"name", NULL}, *const email_f[] = {"email", NULL};
    const struct {
        const char *body;
        const char *const *fields;
    } cases[] = {
        {"{\"name\":\"\"}", name_f},   {long_name_body, name_f}, {"{\"email\":\"no-at\"}", email_f},
        {"{\"email\":5}", email_f},    {"{\"name\":false}", name_f}, {mixed, name_f},
        {mixed2, email_f},          {"{\"email\":\"with space@x.test\"}", email_f},
        {"{\"email\":\"\\n@\\n\"}", email_f},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        call(&r, "PATCH", path, cases[i].body);
        assert_invalid(&r, cases[i].fields, cases[i].body);
        test_response_free(&r);
    }
    json_t *after = read_user(id);
    ck_assert_msg(json_equal(before, after), "a refused PATCH changed the user: %s -> %s", json_dumps(before, 0),
                  json_dumps(after, 0));
    json_decref(after);
    json_decref(before);
    free(mixed2);
    free(mixed);
    free(fresh);
    free(long_name_body);
    free(long_name);
    free(path);
}
END_TEST

/* ---- DELETE /users/{id} ---- */

static long status_of(const char *method, const char *path)
{
    test_response r;
    call(&r, method, path, NULL);
    long st = r.status;
    if (st >= 400)
        test_assert_problem(&r, st);
    test_response_free(&r);
    return st;
}

START_TEST(delete_user_is_204_and_takes_their_orders_and_empty_accounts_along)
{
    int64_t id = new_user("leaving");
    int64_t o1 = new_order(id, "a", 1, 1), o2 = new_order(id, "b", 2, 2);
    int64_t acc = new_account(id, 0);
    int64_t keeper = new_user("staying");
    int64_t kept = new_order(keeper, "kept", 1, 1);

    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "DELETE", path, NULL);
    ck_assert_msg(r.status == 204, "DELETE %s: status %ld %s", path, r.status, r.body);
    ck_assert_int_eq(r.body_len, 0);
    test_response_free(&r);

    ck_assert_int_eq(status_of("GET", path), 404);
    char *p1 = fmt("/orders/%lld", (long long)o1), *p2 = fmt("/orders/%lld", (long long)o2);
    char *pa = fmt("/accounts/%lld", (long long)acc), *pk = fmt("/orders/%lld", (long long)kept);
    ck_assert_int_eq(status_of("GET", p1), 404);
    ck_assert_int_eq(status_of("GET", p2), 404);
    ck_assert_int_eq(status_of("GET", pa), 404);
    ck_assert_int_eq(status_of("GET", pk), 200);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM orders WHERE user_id = %lld", (long long)id), 0);
    /* and a second DELETE finds nobody */
    ck_assert_int_eq(status_of("DELETE", path), 404);
    free(pk);
    free(pa);
    free(p2);
    free(p1);
    free(path);
}
END_TEST

START_TEST(delete_a_user_holding_money_is_409_and_deletes_nothing)
{
    int64_t id = new_user("rich");
    int64_t order = new_order(id, "kept", 1, 5);
    int64_t empty = new_account(id, 0);
    int64_t full = new_account(id, 1);
    char *path = fmt("/users/%lld", (long long)id);
    json_t *before = read_user(id);
    ck_assert_int_eq(status_of("DELETE", path), 409);
    json_t *after = read_user(id);
    ck_assert(json_equal(before, after));
    char *po = fmt("/orders/%lld", (long long)order), *pe = fmt("/accounts/%lld", (long long)empty);
    char *pf = fmt("/accounts/%lld", (long long)full);
    ck_assert_int_eq(status_of("GET", po), 200);
    ck_assert_int_eq(status_of("GET", pe), 200);
    ck_assert_int_eq(status_of("GET", pf), 200);
    ck_assert_int_eq(balance_of(full), 1);
    free(pf);
    free(pe);
    free(po);
    json_decref(after);
    json_decref(before);
    free(path);
}
END_TEST

START_TEST(delete_a_user_whose_empty_accounts_have_transfers_on_record_is_409_and_deletes_nothing)
{
    int64_t payer = new_user("payer"), payee = new_user("payee");
    int64_t from = new_account(payer, 700), to = new_account(payee, 0);
    int64_t order = new_order(payer, "receipt", 1, 700);
    test_response r;
    post_transfer(&r, from, to, 700, NULL);
    ck_assert_msg(r.status == 201, "transfer: %ld %s", r.status, r.body);
    test_response_free(&r);
    ck_assert_int_eq(balance_of(from), 0);

    char *path = fmt("/users/%lld", (long long)payer);
    call(&r, "DELETE", path, NULL);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    ck_assert_int_eq(status_of("GET", path), 200);
    char *po = fmt("/orders/%lld", (long long)order), *pa = fmt("/accounts/%lld", (long long)from);
    ck_assert_int_eq(status_of("GET", po), 200);
    ck_assert_int_eq(status_of("GET", pa), 200);
    ck_assert_int_eq(transfers_touching(from), 1);
    free(pa);
    free(po);
    free(path);
}
END_TEST

START_TEST(delete_an_unknown_user_is_404)
{
    static const char *const paths[] = {"/users/9223372036854775807", "/users/0", "/users/-3", "/users/x"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        ck_assert_msg(status_of("DELETE", paths[i]) == 404, "DELETE %s", paths[i]);
}
END_TEST

/* ======================= orders ======================= */

static void assert_order(const json_t *o, int64_t user, const char *item, long long quantity, long long price)
{
    static const char *const members[] = {"id", "user_id", "item", "quantity", "price_cents", "total_cents",
                                          "created_at", NULL};
    assert_members(o, members);
    ck_assert_int_ge(int_member(o, "id"), 1);
    ck_assert_int_eq(int_member(o, "user_id"), user);
    assert_str_member(o, "item", item, strlen(item));
    ck_assert_int_eq(int_member(o, "quantity"), quantity);
    ck_assert_int_eq(int_member(o, "price_cents"), price);
    ck_assert_int_eq(int_member(o, "total_cents"), quantity * price);
    assert_rfc3339_utc(str_member(o, "created_at"));
}

START_TEST(create_order_is_201_with_the_total_and_a_location_that_reads_it_back)
{
    int64_t user = new_user("buyer");
    char *path = fmt("/users/%lld/orders", (long long)user);
    static const struct {
        const char *item;
        long long quantity, price;
    } cases[] = {{"widget", 3, 1999}, {"free sample", 1, 0}, {"bulk", 10000, 123456789},
                 {"the most expensive thing", 1, INT64_MAX}, {"\xF0\x9F\x8D\x95 pizza", 7, 5}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = dump(json_pack("{s:s, s:I, s:I}", "item", cases[i].item, "quantity", (json_int_t)cases[i].quantity,
                                    "price_cents", (json_int_t)cases[i].price));
        test_response r;
        call(&r, "POST", path, body);
        json_t *o = expect_json(&r, 201);
        assert_order(o, user, cases[i].item, cases[i].quantity, cases[i].price);
        int64_t id = int_member(o, "id");
        assert_location(&r, "/orders/", id);
        char *loc = test_response_header(&r, "Location");
        test_response g;
        call(&g, "GET", loc, NULL);
        json_t *got = expect_json(&g, 200);
        ck_assert_msg(json_equal(got, o), "GET %s: %s, POST said %s", loc, g.body, r.body);
        json_decref(got);
        test_response_free(&g);
        free(loc);
        json_decref(o);
        test_response_free(&r);
        free(body);
    }
    free(path);
}
END_TEST

START_TEST(create_order_with_an_invalid_field_is_422_naming_it)
{
    int64_t user = new_user("bad-orders");
    char *path = fmt("/users/%lld/orders", (long long)user);
    char *long_item = repeat("\xF0\x9F\x98\x80", 201);
    char *long_item_body = dump(json_pack("{s:s, s:i, s:i}", "item", long_item, "quantity", 1, "price_cents", 1));
    char *max_item = repeat("\xF0\x9F\x98\x80", 200);
    static const char *const q[] = {"quantity", NULL}, *const p[] = {"price_cents", NULL}, *const it[] = {"item", NULL};
    static const char *const all[] = {"item", "quantity", "price_cents", NULL};
    static const char *const qp[] = {"quantity", "price_cents", NULL};
    const struct {
        const char *body;
        const char *const *fields;
    } cases[] = {
        {"{\"item\":\"x\",\"quantity\":0,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":10001,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":-1,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":1.5,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":1.0,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":\"2\",\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":true,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":null,\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"price_cents\":1}", q},
        {"{\"item\":\"x\",\"quantity\":1,\"price_cents\":-1}", p},
        {"{\"item\":\"x\",\"quantity\":1,\"price_cents\":2.5}", p},
        {"{\"item\":\"x\",\"quantity\":1,\"price_cents\":\"100\"}", p},
        {"{\"item\":\"x\",\"quantity\":1}", p},
        {"{\"item\":\"\",\"quantity\":1,\"price_cents\":1}", it},
        {"{\"item\":7,\"quantity\":1,\"price_cents\":1}", it},
        {"{\"quantity\":1,\"price_cents\":1}", it},
        {long_item_body, it},
        {"{}", all},
        {"{\"item\":\"x\",\"quantity\":0,\"price_cents\":-1}", qp},
        /* quantity * price_cents beyond 64 bits */
        {"{\"item\":\"x\",\"quantity\":3,\"price_cents\":4611686018427387904}", p},
        {"{\"item\":\"x\",\"quantity\":10000,\"price_cents\":922337203685478}", p},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        call(&r, "POST", path, cases[i].body);
        assert_invalid(&r, cases[i].fields, cases[i].body);
        test_response_free(&r);
    }
    ck_assert_int_eq(sql_int("SELECT count(*) FROM orders WHERE user_id = %lld", (long long)user), 0);
    /* the boundaries themselves are fine */
    new_order(user, max_item, 10000, 922337203685477);
    new_order(user, "x", 1, 0);
    free(max_item);
    free(long_item_body);
    free(long_item);
    free(path);
}
END_TEST

START_TEST(create_order_for_an_unknown_user_is_404)
{
    static const char *const paths[] = {"/users/9223372036854775807/orders", "/users/0/orders", "/users/nope/orders"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        call(&r, "POST", paths[i], "{\"item\":\"x\",\"quantity\":1,\"price_cents\":1}");
        ck_assert_msg(r.status == 404, "POST %s: status %ld %s", paths[i], r.status, r.body);
        test_assert_problem(&r, 404);
        test_response_free(&r);
    }
}
END_TEST

/* GET path as a page: its items' ids into ids[*n..], returns next_after
 * (0 for null) and asserts the next_after rule for limit. */
static int64_t get_page(const test_server *s, const char *path, long limit, int64_t *ids, size_t *n, size_t max)
{
    test_response r;
    call_on(&r, s, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    static const char *const members[] = {"items", "next_after", NULL};
    assert_members(j, members);
    json_t *items = json_object_get(j, "items"), *next = json_object_get(j, "next_after");
    ck_assert_msg(json_is_array(items), "%s: items is not an array", path);
    ck_assert_msg(json_array_size(items) <= (size_t)limit, "%s: %zu items for limit %ld", path, json_array_size(items),
                  limit);
    size_t i;
    json_t *it;
    int64_t last = 0;
    json_array_foreach(items, i, it)
    {
        int64_t id = int_member(it, "id");
        ck_assert_msg(id > last, "%s: ids not ascending: %lld after %lld", path, (long long)id, (long long)last);
        last = id;
        ck_assert_msg(*n < max, "%s: more items than expected", path);
        ids[(*n)++] = id;
    }
    int64_t result = 0;
    if (json_array_size(items) == (size_t)limit) {
        ck_assert_msg(json_is_integer(next) && json_integer_value(next) == last,
                      "%s: a full page whose next_after is not its last id %lld: %s", path, (long long)last, r.body);
        result = last;
    } else {
        ck_assert_msg(json_is_null(next), "%s: a page of %zu < %ld items with next_after %s", path,
                      json_array_size(items), limit, r.body);
    }
    json_decref(j);
    test_response_free(&r);
    return result;
}

/* Follows next_after from the start; returns how many pages it took. */
static int walk_pages(const test_server *s, const char *base, long limit, bool give_limit, int64_t *ids, size_t *n,
                      size_t max)
{
    int pages = 0;
    int64_t after = 0;
    do {
        char path[256];
        const char *sep = strchr(base, '?') ? "&" : "?";
        if (give_limit && after)
            snprintf(path, sizeof(path), "%s%slimit=%ld&after=%lld", base, sep, limit, (long long)after);
        else if (give_limit)
            snprintf(path, sizeof(path), "%s%slimit=%ld", base, sep, limit);
        else if (after)
            snprintf(path, sizeof(path), "%s%safter=%lld", base, sep, (long long)after);
        else
            snprintf(path, sizeof(path), "%s", base);
        after = get_page(s, path, limit, ids, n, max);
        pages++;
        ck_assert_int_lt(pages, 10000); /* no endless walk */
    } while (after != 0);
    return pages;
}

static void assert_bad_page_params_are_400(const test_server *s, const char *base)
{
    static const char *const bad[] = {"limit=0",  "limit=101", "limit=x",  "limit=-1", "limit=1.5",
                                      "after=x",  "after=0",   "after=-1", "after=1e3",
                                      "limit=99999999999999999999", "after=9223372036854775808"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s?%s", base, bad[i]);
        test_response r;
        call_on(&r, s, "GET", path, NULL);
        ck_assert_msg(r.status == 400, "GET %s: status %ld %s", path, r.status, r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
}

START_TEST(list_orders_pages_through_the_users_orders_only)
{
    int64_t user = new_user("lister"), other = new_user("interleaved");
    int64_t want[23];
    for (int i = 0; i < 23; i++) {
        want[i] = new_order(user, "mine", 1, i);
        if (i % 5 == 0)
            new_order(other, "theirs", 1, i);
    }
    char *base = fmt("/users/%lld/orders", (long long)user);
    int64_t got[64];
    size_t n = 0;
    /* default limit 20: a full page, then 3 */
    ck_assert_int_eq(walk_pages(&shared, base, 20, false, got, &n, 64), 2);
    ck_assert_int_eq(n, 23);
    for (int i = 0; i < 23; i++)
        ck_assert_int_eq(got[i], want[i]);
    /* limit 4: 5 full pages and 3; limit 23: one full page, then an empty one */
    n = 0;
    ck_assert_int_eq(walk_pages(&shared, base, 4, true, got, &n, 64), 6);
    ck_assert_int_eq(n, 23);
    for (int i = 0; i < 23; i++)
        ck_assert_int_eq(got[i], want[i]);
    n = 0;
    ck_assert_int_eq(walk_pages(&shared, base, 23, true, got, &n, 64), 2);
    ck_assert_int_eq(n, 23);
    /* every item is an order of the user, as GET /orders/{id} has it */
    test_response r;
    char *first = fmt("%s?limit=1", base);
    call(&r, "GET", first, NULL);
    json_t *page = expect_json(&r, 200);
    char *opath = fmt("/orders/%lld", (long long)want[0]);
    test_response o;
    call(&o, "GET", opath, NULL);
    json_t *oj = expect_json(&o, 200);
    ck_assert_msg(json_equal(oj, json_array_get(json_object_get(page, "items"), 0)), "%s vs %s", o.body, r.body);
    json_decref(oj);
    test_response_free(&o);
    json_decref(page);
    test_response_free(&r);
    free(opath);
    free(first);
    assert_bad_page_params_are_400(&shared, base);
    free(base);
}
END_TEST

START_TEST(list_orders_of_an_unknown_user_is_404_and_of_a_user_without_orders_an_empty_page)
{
    static const char *const unknown[] = {"/users/9223372036854775807/orders", "/users/0/orders",
                                          "/users/x/orders"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        ck_assert_msg(status_of("GET", unknown[i]) == 404, "GET %s", unknown[i]);
    int64_t user = new_user("no-orders");
    char *path = fmt("/users/%lld/orders", (long long)user);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    ck_assert_msg(json_is_array(json_object_get(j, "items")) && json_array_size(json_object_get(j, "items")) == 0 &&
                      json_is_null(json_object_get(j, "next_after")),
                  "%s", r.body);
    json_decref(j);
    test_response_free(&r);
    free(path);
}
END_TEST

START_TEST(get_order_is_200_for_an_order_and_404_otherwise)
{
    int64_t user = new_user("order-reader");
    int64_t id = new_order(user, "thing", 4, 25);
    char *path = fmt("/orders/%lld", (long long)id);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *o = expect_json(&r, 200);
    assert_order(o, user, "thing", 4, 25);
    json_decref(o);
    test_response_free(&r);
    free(path);
    static const char *const missing[] = {"/orders/9223372036854775807", "/orders/0", "/orders/-1", "/orders/x",
                                          "/orders/9223372036854775808"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        ck_assert_msg(status_of("GET", missing[i]) == 404, "GET %s", missing[i]);
}
END_TEST

/* ======================= accounts ======================= */

START_TEST(create_account_is_201_with_the_balance_and_a_location_that_reads_it_back)
{
    int64_t user = new_user("saver");
    static const long long balances[] = {0, 12345, INT64_MAX};
    for (size_t i = 0; i < sizeof(balances) / sizeof(balances[0]); i++) {
        char *body = fmt("{\"user_id\":%lld,\"balance_cents\":%lld}", (long long)user, balances[i]);
        test_response r;
        call(&r, "POST", "/accounts", body);
        json_t *a = expect_json(&r, 201);
        static const char *const members[] = {"id", "user_id", "balance_cents", "created_at", NULL};
        assert_members(a, members);
        ck_assert_int_eq(int_member(a, "user_id"), user);
        ck_assert_int_eq(int_member(a, "balance_cents"), balances[i]);
        assert_rfc3339_utc(str_member(a, "created_at"));
        int64_t id = int_member(a, "id");
        ck_assert_int_ge(id, 1);
        assert_location(&r, "/accounts/", id);
        char *loc = test_response_header(&r, "Location");
        test_response g;
        call(&g, "GET", loc, NULL);
        json_t *got = expect_json(&g, 200);
        ck_assert_msg(json_equal(got, a), "GET %s: %s, POST said %s", loc, g.body, r.body);
        json_decref(got);
        test_response_free(&g);
        free(loc);
        json_decref(a);
        test_response_free(&r);
        free(body);
    }
}
END_TEST

START_TEST(create_account_for_an_unknown_user_is_404)
{
    test_response r;
    call(&r, "POST", "/accounts", "{\"user_id\":9223372036854775807,\"balance_cents\":10}");
    test_assert_problem(&r, 404);
    test_response_free(&r);
    ck_assert_int_eq(sql_int("SELECT count(*) FROM accounts WHERE user_id = 9223372036854775807"), 0);
}
END_TEST

START_TEST(create_account_with_an_invalid_field_is_422_naming_it)
{
    int64_t user = new_user("bad-accounts");
    long long before = sql_int("SELECT count(*) FROM accounts");
    static const char *const b[] = {"balance_cents", NULL}, *const u[] = {"user_id", NULL};
    static const char *const both[] = {"user_id", "balance_cents", NULL};
    char *neg = fmt("{\"user_id\":%lld,\"balance_cents\":-1}", (long long)user);
    char *frac = fmt("{\"user_id\":%lld,\"balance_cents\":10.5}", (long long)user);
    char *str = fmt("{\"user_id\":%lld,\"balance_cents\":\"10\"}", (long long)user);
    char *none = fmt("{\"user_id\":%lld}", (long long)user);
    char *uid_str = fmt("{\"user_id\":\"%lld\",\"balance_cents\":10}", (long long)user);
    const struct {
        const char *body;
        const char *const *fields;
    } cases[] = {{neg, b}, {frac, b}, {str, b}, {none, b}, {"{\"balance_cents\":10}", u}, {uid_str, u},
                 {"{\"user_id\":null,\"balance_cents\":10}", u}, {"{}", both}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        call(&r, "POST", "/accounts", cases[i].body);
        assert_invalid(&r, cases[i].fields, cases[i].body);
        test_response_free(&r);
    }
    ck_assert_int_eq(sql_int("SELECT count(*) FROM accounts"), before);
    free(uid_str);
    free(none);
    free(str);
    free(frac);
    free(neg);
}
END_TEST

/* ---- GET /users/{id}/accounts, and the bound of GET /users/{id} ---- */

START_TEST(get_user_lists_only_the_first_100_accounts_by_id)
{
    int64_t id = new_user("many-accounts");
    char *sql = fmt("INSERT INTO accounts (user_id, balance_cents) SELECT %lld, g FROM generate_series(1, 130) g",
                    (long long)id);
    PGconn *c = test_pg_connect(shared_db);
    test_pg_exec(c, sql);
    free(sql);
    char *first_sql = fmt("SELECT min(id) FROM accounts WHERE user_id = %lld", (long long)id);
    long long first = test_pg_int(c, first_sql);
    free(first_sql);
    PQfinish(c);

    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    json_t *accounts = json_object_get(j, "accounts");
    ck_assert_msg(json_is_array(accounts), "%.300s", r.body);
    ck_assert_int_eq(json_array_size(accounts), 100);
    for (size_t i = 0; i < 100; i++)
        ck_assert_int_eq(int_member(json_array_get(accounts, i), "id"), first + (long long)i);
    json_decref(j);
    test_response_free(&r);
    free(path);
}
END_TEST

START_TEST(list_accounts_pages_through_the_users_accounts_only)
{
    int64_t user = new_user("account-lister"), other = new_user("account-interleaved");
    int64_t want[23];
    for (int i = 0; i < 23; i++) {
        want[i] = new_account(user, i);
        if (i % 5 == 0)
            new_account(other, i);
    }
    char *base = fmt("/users/%lld/accounts", (long long)user);
    int64_t got[64];
    size_t n = 0;
    /* default limit 20: a full page, then 3 */
    ck_assert_int_eq(walk_pages(&shared, base, 20, false, got, &n, 64), 2);
    ck_assert_int_eq(n, 23);
    for (int i = 0; i < 23; i++)
        ck_assert_int_eq(got[i], want[i]);
    /* limit 4: 5 full pages and 3; limit 23: one full page, then an empty one */
    n = 0;
    ck_assert_int_eq(walk_pages(&shared, base, 4, true, got, &n, 64), 6);
    ck_assert_int_eq(n, 23);
    for (int i = 0; i < 23; i++)
        ck_assert_int_eq(got[i], want[i]);
    n = 0;
    ck_assert_int_eq(walk_pages(&shared, base, 23, true, got, &n, 64), 2);
    ck_assert_int_eq(n, 23);
    /* every item is an account of the user, as GET /accounts/{id} has it */
    test_response r;
    char *first = fmt("%s?limit=1", base);
    call(&r, "GET", first, NULL);
    json_t *page = expect_json(&r, 200);
    char *apath = fmt("/accounts/%lld", (long long)want[0]);
    test_response a;
    call(&a, "GET", apath, NULL);
    json_t *aj = expect_json(&a, 200);
    ck_assert_msg(json_equal(aj, json_array_get(json_object_get(page, "items"), 0)), "%s vs %s", a.body, r.body);
    json_decref(aj);
    test_response_free(&a);
    json_decref(page);
    test_response_free(&r);
    free(apath);
    free(first);
    assert_bad_page_params_are_400(&shared, base);
    free(base);
}
END_TEST

START_TEST(list_accounts_of_an_unknown_user_is_404_and_of_a_user_without_accounts_an_empty_page)
{
    static const char *const unknown[] = {"/users/9223372036854775807/accounts", "/users/0/accounts",
                                          "/users/x/accounts"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        ck_assert_msg(status_of("GET", unknown[i]) == 404, "GET %s", unknown[i]);
    int64_t user = new_user("no-accounts");
    char *path = fmt("/users/%lld/accounts", (long long)user);
    test_response r;
    call(&r, "GET", path, NULL);
    json_t *j = expect_json(&r, 200);
    ck_assert_msg(json_is_array(json_object_get(j, "items")) && json_array_size(json_object_get(j, "items")) == 0 &&
                      json_is_null(json_object_get(j, "next_after")),
                  "%s", r.body);
    json_decref(j);
    test_response_free(&r);
    free(path);
}
END_TEST

/* Issue 18 #14: a user with 200,000 accounts was a 17 MB answer. Now it is
 * the first 100, and the paged route gives every one of them, once. */
START_TEST(a_user_with_200000_accounts_is_a_small_answer_and_the_paged_route_has_them_all)
{
    enum { MANY = 200000 };
    int64_t id = new_user("hoarder");
    char *sql = fmt("INSERT INTO accounts (user_id, balance_cents) SELECT %lld, 0 FROM generate_series(1, %d)",
                    (long long)id, MANY);
    PGconn *c = test_pg_connect(shared_db);
    test_pg_exec(c, sql);
    free(sql);
    PQfinish(c);

    char *path = fmt("/users/%lld", (long long)id);
    test_response r;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    call(&r, "GET", path, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    json_t *j = expect_json(&r, 200);
    ck_assert_int_eq(json_array_size(json_object_get(j, "accounts")), 100);
    ck_assert_msg(r.body_len < 16384, "GET /users/{id} answered %zu bytes", r.body_len);
    size_t detail_bytes = r.body_len;
    double detail_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    json_decref(j);
    test_response_free(&r);

    int64_t *ids = malloc(sizeof(int64_t) * MANY);
    ck_assert_ptr_nonnull(ids);
    size_t n = 0;
    char *base = fmt("/users/%lld/accounts", (long long)id);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int pages = walk_pages(&shared, base, 100, true, ids, &n, MANY);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_int_eq(n, MANY);
    ck_assert_int_eq(pages, MANY / 100 + 1); /* the last full page, then an empty one */
    double walk_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr,
            "200,000 accounts: GET /users/{id} %zu bytes in %.1f ms; GET /users/{id}/accounts, 100 a page: %d pages "
            "in %.1f s\n",
            detail_bytes, detail_ms, pages, walk_s);
    free(base);
    free(ids);
    free(path);
}
END_TEST

START_TEST(get_an_unknown_account_is_404)
{
    static const char *const paths[] = {"/accounts/9223372036854775807", "/accounts/0", "/accounts/x",
                                        "/accounts/-2"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        ck_assert_msg(status_of("GET", paths[i]) == 404, "GET %s", paths[i]);
}
END_TEST

/* ======================= transfers ======================= */

static void assert_transfer(const json_t *t, int64_t from, int64_t to, long long amount)
{
    static const char *const members[] = {"id", "from_account_id", "to_account_id", "amount_cents", "created_at",
                                          NULL};
    assert_members(t, members);
    ck_assert_int_ge(int_member(t, "id"), 1);
    ck_assert_int_eq(int_member(t, "from_account_id"), from);
    ck_assert_int_eq(int_member(t, "to_account_id"), to);
    ck_assert_int_eq(int_member(t, "amount_cents"), amount);
    assert_rfc3339_utc(str_member(t, "created_at"));
}

START_TEST(transfer_is_201_moves_both_balances_and_reads_back)
{
    int64_t u1 = new_user("sender"), u2 = new_user("receiver");
    int64_t a = new_account(u1, 1000), b = new_account(u2, 50);
    test_response r;
    post_transfer(&r, a, b, 300, NULL);
    json_t *t = expect_json(&r, 201);
    assert_transfer(t, a, b, 300);
    int64_t id = int_member(t, "id");
    assert_location(&r, "/transfers/", id);
    ck_assert_int_eq(balance_of(a), 700);
    ck_assert_int_eq(balance_of(b), 350);

    char *loc = test_response_header(&r, "Location");
    test_response g;
    call(&g, "GET", loc, NULL);
    json_t *got = expect_json(&g, 200);
    ck_assert_msg(json_equal(got, t), "GET %s: %s, POST said %s", loc, g.body, r.body);
    json_decref(got);
    test_response_free(&g);
    free(loc);

    /* the whole balance, and back the other way */
    json_decref(t);
    test_response_free(&r);
    post_transfer(&r, a, b, 700, NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    test_response_free(&r);
    post_transfer(&r, b, a, 1, NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    test_response_free(&r);
    ck_assert_int_eq(balance_of(a), 1);
    ck_assert_int_eq(balance_of(b), 1049);
    /* the balances read through the API agree */
    char *pa = fmt("/accounts/%lld", (long long)a);
    call(&g, "GET", pa, NULL);
    json_t *aj = expect_json(&g, 200);
    ck_assert_int_eq(int_member(aj, "balance_cents"), 1);
    json_decref(aj);
    test_response_free(&g);
    free(pa);
    ck_assert_int_eq(transfers_touching(a), 3);
}
END_TEST

START_TEST(transfer_beyond_the_balance_is_422_and_moves_nothing)
{
    int64_t u = new_user("poor");
    int64_t a = new_account(u, 100), b = new_account(u, 5);
    static const char *const amount[] = {"amount_cents", NULL};
    test_response r;
    post_transfer(&r, a, b, 101, NULL);
    assert_invalid(&r, amount, "101 from a balance of 100");
    test_response_free(&r);
    post_transfer(&r, a, b, INT64_MAX, NULL);
    assert_invalid(&r, amount, "INT64_MAX from a balance of 100");
    test_response_free(&r);
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(balance_of(b), 5);
    ck_assert_int_eq(transfers_touching(a), 0);
}
END_TEST

START_TEST(transfer_to_the_same_account_is_422_and_moves_nothing)
{
    int64_t u = new_user("self");
    int64_t a = new_account(u, 100);
    test_response r;
    post_transfer(&r, a, a, 10, NULL);
    ck_assert_msg(r.status == 422, "%ld %s", r.status, r.body);
    test_assert_problem(&r, 422);
    json_t *j = test_response_json(&r);
    ck_assert_msg(json_array_size(json_object_get(j, "errors")) > 0, "no errors list: %s", r.body);
    json_decref(j);
    test_response_free(&r);
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(transfers_touching(a), 0);
}
END_TEST

START_TEST(transfer_with_a_missing_or_non_positive_amount_or_bad_ids_is_422)
{
    int64_t u = new_user("amounts");
    int64_t a = new_account(u, 100), b = new_account(u, 0);
    static const char *const amount[] = {"amount_cents", NULL}, *const from[] = {"from_account_id", NULL};
    static const char *const to[] = {"to_account_id", NULL};
    char *zero = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":0}", (long long)a, (long long)b);
    char *neg = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":-5}", (long long)a, (long long)b);
    char *frac = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":1.5}", (long long)a, (long long)b);
    char *str = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":\"5\"}", (long long)a, (long long)b);
    char *none = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld}", (long long)a, (long long)b);
    char *no_from = fmt("{\"to_account_id\":%lld,\"amount_cents\":5}", (long long)b);
    char *str_to = fmt("{\"from_account_id\":%lld,\"to_account_id\":\"%lld\",\"amount_cents\":5}", (long long)a,
                       (long long)b);
    const struct {
        const char *body;
        const char *const *fields;
    } cases[] = {{zero, amount}, {neg, amount}, {frac, amount}, {str, amount}, {none, amount}, {no_from, from},
                 {str_to, to}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *headers[] = {"Content-Type: application/json", NULL};
        test_response r;
        call_raw(&r, "POST", "/transfers", cases[i].body, strlen(cases[i].body), headers);
        assert_invalid(&r, cases[i].fields, cases[i].body);
        test_response_free(&r);
    }
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(balance_of(b), 0);
    ck_assert_int_eq(transfers_touching(a), 0);
    free(str_to);
    free(no_from);
    free(none);
    free(str);
    free(frac);
    free(neg);
    free(zero);
}
END_TEST

START_TEST(transfer_with_an_unknown_account_is_404_and_moves_nothing)
{
    int64_t u = new_user("unknown-accounts");
    int64_t a = new_account(u, 100), b = new_account(u, 7);
    const int64_t nowhere = INT64_MAX;
    const struct {
        int64_t from, to;
    } cases[] = {{a, nowhere}, {nowhere, a}, {nowhere, nowhere - 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_response r;
        post_transfer(&r, cases[i].from, cases[i].to, 10, NULL);
        ck_assert_msg(r.status == 404, "%lld -> %lld: status %ld %s", (long long)cases[i].from, (long long)cases[i].to,
                      r.status, r.body);
        test_assert_problem(&r, 404);
        test_response_free(&r);
    }
    ck_assert_int_eq(balance_of(a), 100);
    ck_assert_int_eq(balance_of(b), 7);
    ck_assert_int_eq(transfers_touching(a), 0);
}
END_TEST

START_TEST(transfer_that_would_overflow_the_receiving_balance_is_422_and_moves_nothing)
{
    int64_t u = new_user("overflow");
    int64_t full = new_account(u, INT64_MAX), other = new_account(u, 10);
    static const char *const amount[] = {"amount_cents", NULL};
    test_response r;
    post_transfer(&r, other, full, 1, NULL);
    assert_invalid(&r, amount, "1 into an account holding INT64_MAX");
    test_response_free(&r);
    ck_assert_int_eq(balance_of(full), INT64_MAX);
    ck_assert_int_eq(balance_of(other), 10);
    ck_assert_int_eq(transfers_touching(full), 0);
}
END_TEST

START_TEST(get_an_unknown_transfer_is_404)
{
    static const char *const paths[] = {"/transfers/9223372036854775807", "/transfers/0", "/transfers/x"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        ck_assert_msg(status_of("GET", paths[i]) == 404, "GET %s", paths[i]);
}
END_TEST

/* ---- Idempotency-Key ---- */

START_TEST(a_retried_transfer_with_the_same_key_replays_the_201_and_moves_money_once)
{
    int64_t u = new_user("idem");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    char *key = key_header("replay");
    test_response first, second, third;
    post_transfer(&first, a, b, 250, key);
    json_t *t = expect_json(&first, 201);
    assert_transfer(t, a, b, 250);
    post_transfer(&second, a, b, 250, key);
    ck_assert_int_eq(second.status, 201);
    assert_same_bytes(&first, &second, "the replayed 201");
    char *l1 = test_response_header(&first, "Location"), *l2 = test_response_header(&second, "Location");
    ck_assert_msg(l1 && l2 && strcmp(l1, l2) == 0, "Location %s, then %s", l1, l2);
    post_transfer(&third, a, b, 250, key);
    assert_same_bytes(&first, &third, "the second replay");
    ck_assert_int_eq(balance_of(a), 750);
    ck_assert_int_eq(balance_of(b), 250);
    ck_assert_int_eq(transfers_touching(a), 1);
    /* the 201 is what a retry needs: it is kept, once */
    ck_assert_int_eq(rows_for_key(key), 1);
    /* a different key is a different transfer */
    char *other = key_header("replay-other");
    test_response fourth;
    post_transfer(&fourth, a, b, 250, other);
    ck_assert_int_eq(fourth.status, 201);
    ck_assert_int_eq(balance_of(a), 500);
    ck_assert_int_eq(transfers_touching(a), 2);
    test_response_free(&fourth);
    free(other);
    free(l2);
    free(l1);
    json_decref(t);
    test_response_free(&third);
    test_response_free(&second);
    test_response_free(&first);
    free(key);
}
END_TEST

START_TEST(the_same_key_with_a_different_body_is_409_and_moves_nothing_more)
{
    int64_t u = new_user("idem-409");
    int64_t a = new_account(u, 1000), b = new_account(u, 0), c = new_account(u, 0);
    char *key = key_header("reuse");
    test_response r;
    post_transfer(&r, a, b, 100, key);
    ck_assert_int_eq(r.status, 201);
    test_response_free(&r);
    post_transfer(&r, a, b, 101, key);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    post_transfer(&r, a, c, 100, key);
    test_assert_problem(&r, 409);
    test_response_free(&r);
    ck_assert_int_eq(balance_of(a), 900);
    ck_assert_int_eq(balance_of(b), 100);
    ck_assert_int_eq(balance_of(c), 0);
    ck_assert_int_eq(transfers_touching(a), 1);
    free(key);
}
END_TEST

/* A 4xx changed nothing, so nothing is kept for it: the retry runs again,
 * and here, with the account funded meanwhile, it moves the money. */
START_TEST(a_keyed_422_is_not_kept_so_a_retry_after_funding_moves_the_money_once)
{
    int64_t u = new_user("idem-422");
    int64_t a = new_account(u, 10), b = new_account(u, 1000);
    char *key = key_header("poor");
    test_response first, again;
    post_transfer(&first, a, b, 500, key);
    static const char *const amount[] = {"amount_cents", NULL};
    assert_invalid(&first, amount, "500 from 10");
    ck_assert_int_eq(rows_for_key(key), 0);
    /* the same request, at once: refused the same way, still nothing kept */
    post_transfer(&again, a, b, 500, key);
    assert_same_bytes(&first, &again, "a 422 run again");
    test_response_free(&again);
    ck_assert_int_eq(rows_for_key(key), 0);
    /* fund it: now the same request succeeds, and that answer is kept */
    test_response r;
    post_transfer(&r, b, a, 1000, NULL);
    ck_assert_int_eq(r.status, 201);
    test_response_free(&r);
    ck_assert_int_eq(balance_of(a), 1010);
    post_transfer(&again, a, b, 500, key);
    json_t *t = expect_json(&again, 201);
    assert_transfer(t, a, b, 500);
    json_decref(t);
    ck_assert_int_eq(rows_for_key(key), 1);
    test_response replay;
    post_transfer(&replay, a, b, 500, key);
    assert_same_bytes(&again, &replay, "the replayed 201");
    test_response_free(&replay);
    ck_assert_int_eq(balance_of(a), 510);
    ck_assert_int_eq(balance_of(b), 500);
    ck_assert_int_eq(transfers_touching(a), 2);
    test_response_free(&again);
    test_response_free(&first);
    free(key);
}
END_TEST

START_TEST(a_keyed_404_leaves_no_row_and_a_retry_answers_it_again)
{
    int64_t u = new_user("idem-404");
    int64_t a = new_account(u, 10);
    char *key = key_header("nowhere");
    test_response first, again;
    post_transfer(&first, a, INT64_MAX, 5, key);
    test_assert_problem(&first, 404);
    ck_assert_int_eq(rows_for_key(key), 0);
    post_transfer(&again, a, INT64_MAX, 5, key);
    test_assert_problem(&again, 404);
    assert_same_bytes(&first, &again, "a 404 run again");
    ck_assert_int_eq(rows_for_key(key), 0);
    /* nothing kept, so the key is free for another request */
    int64_t b = new_account(u, 0);
    test_response other;
    post_transfer(&other, a, b, 5, key);
    ck_assert_msg(other.status == 201, "the key of a 404 reused for a transfer that can happen: %ld %s", other.status,
                  other.body);
    ck_assert_int_eq(rows_for_key(key), 1);
    ck_assert_int_eq(balance_of(a), 5);
    test_response_free(&other);
    test_response_free(&again);
    test_response_free(&first);
    free(key);
}
END_TEST

/* Two requests with one new key at once, for a transfer that cannot
 * happen: the second waits on the first's claim, which goes away with the
 * 404, then runs itself; both are 404 and no row is left. */
START_TEST(two_concurrent_requests_with_the_same_key_and_an_unknown_account_leave_no_row)
{
    int64_t u = new_user("idem-race-404");
    int64_t a = new_account(u, 100);
    for (int round = 0; round < 5; round++) {
        char *key = key_header("race-404");
        char *body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":10}", (long long)a,
                         (long long)INT64_MAX);
        char *req = fmt("POST /transfers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        key, strlen(body), body);
        int fd1 = test_raw_connect(shared.port), fd2 = test_raw_connect(shared.port);
        test_raw_send(fd1, req, strlen(req));
        test_raw_send(fd2, req, strlen(req));
        test_response r1, r2;
        test_raw_read_response(fd1, RESPONSE_TIMEOUT_MS, 0, &r1);
        test_raw_read_response(fd2, RESPONSE_TIMEOUT_MS, 0, &r2);
        close(fd1);
        close(fd2);
        ck_assert_msg(r1.status == 404 && r2.status == 404, "round %d: statuses %ld and %ld: %s / %s", round,
                      r1.status, r2.status, r1.body, r2.body);
        assert_same_bytes(&r1, &r2, "two concurrent 404s with one key");
        ck_assert_int_eq(rows_for_key(key), 0);
        test_response_free(&r2);
        test_response_free(&r1);
        free(req);
        free(body);
        free(key);
    }
    ck_assert_int_eq(balance_of(a), 100);
}
END_TEST

START_TEST(an_idempotency_key_that_is_not_1_to_255_visible_ascii_characters_is_400)
{
    int64_t u = new_user("idem-400");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    char *k256 = repeat("k", 256);
    char *too_long = fmt("Idempotency-Key: %s", k256);
    const char *bad[] = {"Idempotency-Key;", /* curl's way of sending an empty value */
                         too_long, "Idempotency-Key: with space", "Idempotency-Key: tab\there",
                         "Idempotency-Key: caf\xC3\xA9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        test_response r;
        post_transfer(&r, a, b, 1, bad[i]);
        ck_assert_msg(r.status == 400, "\"%.40s\": status %ld %s", bad[i], r.status, r.body);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
    ck_assert_int_eq(balance_of(a), 1000);
    ck_assert_int_eq(transfers_touching(a), 0);
    /* 255 characters, every visible one, are fine */
    char *k255 = malloc(256);
    ck_assert_ptr_nonnull(k255);
    snprintf(k255, 256, "%ld-", (long)getpid());
    size_t n = strlen(k255);
    for (int c = 0x21; n < 255; c = c == 0x7e ? 0x21 : c + 1)
        k255[n++] = (char)c;
    k255[255] = '\0';
    char *ok = fmt("Idempotency-Key: %s", k255);
    test_response r1, r2;
    post_transfer(&r1, a, b, 1, ok);
    ck_assert_msg(r1.status == 201, "a 255-character key: status %ld %s", r1.status, r1.body);
    post_transfer(&r2, a, b, 1, ok);
    assert_same_bytes(&r1, &r2, "a 255-character key replayed");
    ck_assert_int_eq(balance_of(a), 999);
    test_response_free(&r2);
    test_response_free(&r1);
    free(ok);
    free(k255);
    free(too_long);
    free(k256);
}
END_TEST

START_TEST(two_concurrent_requests_with_the_same_new_key_make_one_transfer_and_get_identical_201s)
{
    int64_t u = new_user("idem-race");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    for (int round = 0; round < 5; round++) {
        char *key = key_header("race");
        char *body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":10}", (long long)a,
                         (long long)b);
        char *req = fmt("POST /transfers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        key, strlen(body), body);
        /* both connections open first, then both requests on the wire at once */
        int fd1 = test_raw_connect(shared.port), fd2 = test_raw_connect(shared.port);
        test_raw_send(fd1, req, strlen(req));
        test_raw_send(fd2, req, strlen(req));
        test_response r1, r2;
        test_raw_read_response(fd1, RESPONSE_TIMEOUT_MS, 0, &r1);
        test_raw_read_response(fd2, RESPONSE_TIMEOUT_MS, 0, &r2);
        close(fd1);
        close(fd2);
        ck_assert_msg(r1.status == 201 && r2.status == 201, "round %d: statuses %ld and %ld: %s / %s", round, r1.status,
                      r2.status, r1.body, r2.body);
        assert_same_bytes(&r1, &r2, "two concurrent requests with one key");
        ck_assert_int_eq(rows_for_key(key), 1);
        test_response_free(&r2);
        test_response_free(&r1);
        free(req);
        free(body);
        free(key);
        ck_assert_int_eq(transfers_touching(a), round + 1);
        ck_assert_int_eq(balance_of(a), 1000 - 10 * (round + 1));
    }
    ck_assert_int_eq(balance_of(b), 50);
}
END_TEST

/* ---- connections ---- */

/* A request that runs in a task (every database route) must be answered as
 * soon as it is done also when it is not the first on its connection. */
START_TEST(database_requests_on_a_kept_alive_connection_are_answered_without_delay)
{
    int64_t u = new_user("keep-alive");
    int64_t a = new_account(u, 1000), b = new_account(u, 0);
    char *body = fmt("{\"from_account_id\":%lld,\"to_account_id\":%lld,\"amount_cents\":1}", (long long)a,
                     (long long)b);
    char *get = fmt("GET /users/%lld HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", (long long)u);
    char *post = fmt("POST /transfers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    enum { ROUNDS = 10 };
    int fd = test_raw_connect(shared.port);
    int64_t slowest = 0;
    struct timespec t0, t1;
    for (int i = 0; i < 2 * ROUNDS; i++) {
        const char *req = i % 2 ? post : get;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        test_raw_send(fd, req, strlen(req));
        test_response r;
        test_raw_read_response(fd, RESPONSE_TIMEOUT_MS, 0, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ck_assert_msg(r.status == (i % 2 ? 201 : 200), "request %d on the connection: %ld %s", i + 1, r.status, r.body);
        test_response_free(&r);
        int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > slowest)
            slowest = ms;
    }
    close(fd);
    /* each takes a few milliseconds; a request left waiting for the event
     * loop's next timer takes up to a second */
    ck_assert_msg(slowest < 500, "the slowest of %d requests on one connection took %lld ms", 2 * ROUNDS,
                  (long long)slowest);
    ck_assert_int_eq(balance_of(b), ROUNDS);
    free(post);
    free(get);
    free(body);
}
END_TEST

/* ======================= GET /users (a database of its own) ======================= */

START_TEST(list_users_default_page_is_20_with_next_after_its_last_id)
{
    int64_t ids[PAGING_USERS];
    size_t n = 0;
    int64_t next = get_page(&paging, "/users", 20, ids, &n, PAGING_USERS);
    ck_assert_int_eq(n, 20);
    ck_assert_int_eq(next, ids[19]);
    /* the page is the lowest 20 ids */
    PGconn *c = test_pg_connect(paging_db);
    ck_assert_int_eq(test_pg_int(c, "SELECT min(id) FROM users"), ids[0]);
    ck_assert_int_eq(test_pg_int(c, "SELECT id FROM users ORDER BY id OFFSET 19 LIMIT 1"), ids[19]);
    PQfinish(c);
    /* and items are whole users */
    test_response r;
    call_on(&r, &paging, "GET", "/users?limit=1", NULL);
    json_t *j = expect_json(&r, 200);
    json_t *u = json_array_get(json_object_get(j, "items"), 0);
    assert_user(u, "user 1", "user1@paging.test");
    json_decref(j);
    test_response_free(&r);
}
END_TEST

START_TEST(following_next_after_pages_through_every_user_exactly_once)
{
    PGconn *c = test_pg_connect(paging_db);
    PGresult *res = PQexec(c, "SELECT id FROM users ORDER BY id");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(res), PAGING_USERS);
    int64_t want[PAGING_USERS];
    for (int i = 0; i < PAGING_USERS; i++)
        want[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    PQfinish(c);
    static const struct {
        long limit;
        bool given;
        int pages;
    } cases[] = {{20, false, 3}, {7, true, 7}, {15, true, 4}, {45, true, 2}, {1, true, 46}, {100, true, 1}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int64_t got[PAGING_USERS];
        size_t n = 0;
        int pages = walk_pages(&paging, "/users", cases[k].limit, cases[k].given, got, &n, PAGING_USERS);
        ck_assert_msg(n == PAGING_USERS, "limit %ld: %zu users", cases[k].limit, n);
        for (int i = 0; i < PAGING_USERS; i++)
            ck_assert_msg(got[i] == want[i], "limit %ld: item %d is %lld, expected %lld", cases[k].limit, i,
                          (long long)got[i], (long long)want[i]);
        ck_assert_msg(pages == cases[k].pages, "limit %ld: %d pages, expected %d", cases[k].limit, pages,
                      cases[k].pages);
    }
    /* after an id past the end: an empty last page */
    int64_t none[1];
    size_t n = 0;
    char path[64];
    snprintf(path, sizeof(path), "/users?after=%lld", (long long)want[PAGING_USERS - 1]);
    ck_assert_int_eq(get_page(&paging, path, 20, none, &n, 1), 0);
    ck_assert_int_eq(n, 0);
}
END_TEST

START_TEST(list_users_with_a_bad_limit_or_after_is_400)
{
    assert_bad_page_params_are_400(&paging, "/users");
}
END_TEST

/* ---- the suite ---- */

static Suite *rest_suite(void)
{
    Suite *s = suite_create("rest");

    TCase *tc = tcase_create("shared");
    tcase_add_unchecked_fixture(tc, shared_setup, shared_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, create_user_is_201_with_the_user_and_a_location_that_reads_it_back);
    tcase_add_test(tc, create_user_with_a_taken_email_is_409_and_adds_nobody);
    tcase_add_test(tc, emails_that_differ_only_in_case_are_one_email_409);
    tcase_add_test(tc, create_user_with_a_missing_field_or_a_field_of_the_wrong_type_is_422_naming_it);
    tcase_add_test(tc, user_name_length_is_1_to_200_unicode_characters);
    tcase_add_test(tc, a_bad_email_is_422_naming_email);
    tcase_add_test(tc, every_bad_field_of_a_user_is_listed_in_one_422);
    tcase_add_test(tc, a_body_that_is_not_one_json_object_is_400_on_every_json_endpoint);
    tcase_add_test(tc, an_amount_beyond_64_bits_is_400_not_422);
    tcase_add_test(tc, a_body_that_is_not_application_json_is_415);
    tcase_add_test(tc, text_is_stored_and_returned_byte_exact);
    tcase_add_test(tc, get_user_returns_the_user_with_their_orders_and_accounts);
    tcase_add_test(tc, get_user_lists_only_the_first_100_orders_by_id);
    tcase_add_test(tc, get_user_with_an_unknown_or_malformed_id_is_404);
    tcase_add_test(tc, patch_user_changes_only_the_fields_given);
    tcase_add_test(tc, patch_an_unknown_user_is_404);
    tcase_add_test(tc, patch_to_a_taken_email_is_409_and_changes_nothing);
    tcase_add_test(tc, patch_with_neither_name_nor_email_is_422);
    tcase_add_test(tc, patch_with_an_invalid_field_is_422_and_changes_nothing);
    tcase_add_test(tc, delete_user_is_204_and_takes_their_orders_and_empty_accounts_along);
    tcase_add_test(tc, delete_a_user_holding_money_is_409_and_deletes_nothing);
    tcase_add_test(tc, delete_a_user_whose_empty_accounts_have_transfers_on_record_is_409_and_deletes_nothing);
    tcase_add_test(tc, delete_an_unknown_user_is_404);
    tcase_add_test(tc, create_order_is_201_with_the_total_and_a_location_that_reads_it_back);
    tcase_add_test(tc, create_order_with_an_invalid_field_is_422_naming_it);
    tcase_add_test(tc, create_order_for_an_unknown_user_is_404);
    tcase_add_test(tc, list_orders_pages_through_the_users_orders_only);
    tcase_add_test(tc, list_orders_of_an_unknown_user_is_404_and_of_a_user_without_orders_an_empty_page);
    tcase_add_test(tc, get_order_is_200_for_an_order_and_404_otherwise);
    tcase_add_test(tc, create_account_is_201_with_the_balance_and_a_location_that_reads_it_back);
    tcase_add_test(tc, create_account_for_an_unknown_user_is_404);
    tcase_add_test(tc, create_account_with_an_invalid_field_is_422_naming_it);
    tcase_add_test(tc, get_an_unknown_account_is_404);
    tcase_add_test(tc, get_user_lists_only_the_first_100_accounts_by_id);
    tcase_add_test(tc, list_accounts_pages_through_the_users_accounts_only);
    tcase_add_test(tc, list_accounts_of_an_unknown_user_is_404_and_of_a_user_without_accounts_an_empty_page);
    tcase_add_test(tc, a_user_with_200000_accounts_is_a_small_answer_and_the_paged_route_has_them_all);
    tcase_add_test(tc, transfer_is_201_moves_both_balances_and_reads_back);
    tcase_add_test(tc, transfer_beyond_the_balance_is_422_and_moves_nothing);
    tcase_add_test(tc, transfer_to_the_same_account_is_422_and_moves_nothing);
    tcase_add_test(tc, transfer_with_a_missing_or_non_positive_amount_or_bad_ids_is_422);
    tcase_add_test(tc, transfer_with_an_unknown_account_is_404_and_moves_nothing);
    tcase_add_test(tc, transfer_that_would_overflow_the_receiving_balance_is_422_and_moves_nothing);
    tcase_add_test(tc, get_an_unknown_transfer_is_404);
    tcase_add_test(tc, a_retried_transfer_with_the_same_key_replays_the_201_and_moves_money_once);
    tcase_add_test(tc, the_same_key_with_a_different_body_is_409_and_moves_nothing_more);
    tcase_add_test(tc, a_keyed_422_is_not_kept_so_a_retry_after_funding_moves_the_money_once);
    tcase_add_test(tc, a_keyed_404_leaves_no_row_and_a_retry_answers_it_again);
    tcase_add_test(tc, two_concurrent_requests_with_the_same_key_and_an_unknown_account_leave_no_row);
    tcase_add_test(tc, an_idempotency_key_that_is_not_1_to_255_visible_ascii_characters_is_400);
    tcase_add_test(tc, two_concurrent_requests_with_the_same_new_key_make_one_transfer_and_get_identical_201s);
    tcase_add_test(tc, database_requests_on_a_kept_alive_connection_are_answered_without_delay);
    suite_add_tcase(s, tc);

    TCase *pg = tcase_create("paging");
    tcase_add_unchecked_fixture(pg, paging_setup, paging_teardown);
    tcase_set_timeout(pg, 120);
    tcase_add_test(pg, list_users_default_page_is_20_with_next_after_its_last_id);
    tcase_add_test(pg, following_next_after_pages_through_every_user_exactly_once);
    tcase_add_test(pg, list_users_with_a_bad_limit_or_after_is_400);
    suite_add_tcase(s, pg);
    return s;
}

int main(void)
{
    return run_suite(rest_suite());
}
