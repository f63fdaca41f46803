/* Route matching: pattern shapes, parameters, precedence, 404 vs 405,
 * hostile paths, registration errors, and matching from many threads. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "server/router.h"

/* Handler stand-ins: the router only hands the pointer back. */
static const char H_ROOT[] = "root", H_HEALTHZ[] = "healthz", H_USERS_LIST[] = "users_list", H_USERS_CREATE[] = "users_create",
                  H_USER_GET[] = "user_get", H_USER_PATCH[] = "user_patch", H_USER_DELETE[] = "user_delete", H_ME[] = "me",
                  H_ORDERS_LIST[] = "orders_list", H_ORDERS_CREATE[] = "orders_create", H_ORDER_GET[] = "order_get",
                  H_ACCOUNTS_CREATE[] = "accounts_create", H_EXPORT[] = "export";

/* A table shaped like the service's. */
static server_router *service_router(void)
{
    server_router *r = server_router_create();
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(server_router_add(r, "GET", "/", H_ROOT), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/healthz", H_HEALTHZ), 0);
    ck_assert_int_eq(server_router_add(r, "POST", "/users", H_USERS_CREATE), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/users", H_USERS_LIST), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/users/{id}", H_USER_GET), 0);
    ck_assert_int_eq(server_router_add(r, "PATCH", "/users/{id}", H_USER_PATCH), 0);
    ck_assert_int_eq(server_router_add(r, "DELETE", "/users/{id}", H_USER_DELETE), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/users/me", H_ME), 0);
    ck_assert_int_eq(server_router_add(r, "POST", "/users/{id}/orders", H_ORDERS_CREATE), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/users/{id}/orders", H_ORDERS_LIST), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/orders/{id}", H_ORDER_GET), 0);
    ck_assert_int_eq(server_router_add(r, "POST", "/accounts", H_ACCOUNTS_CREATE), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/export/orders", H_EXPORT), 0);
    return r;
}

static int match(const server_router *r, const char *method, const char *path, server_route_match *m)
{
    return server_router_match(r, method, strlen(method), path, strlen(path), m);
}

/* Matches from a heap copy without a terminator, so that reading past the
 * end is an out-of-bounds read a sanitizer build reports. The copy is gone
 * on return: only the result code and lengths of *m may be looked at. */
static int match_exact(const server_router *r, const char *method, const char *path, size_t len, server_route_match *m)
{
    char *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, path, len);
    int rc = server_router_match(r, method, strlen(method), copy, len, m);
    free(copy);
    return rc;
}

#define ck_assert_value(m, i, s)                                                                                                   \
    do {                                                                                                                           \
        ck_assert_uint_eq((m).params[i].len, strlen(s));                                                                           \
        ck_assert_int_eq(memcmp((m).params[i].value, (s), strlen(s)), 0);                                                          \
    } while (0)

START_TEST(literal_patterns_match_exactly)
{
    server_router *r = service_router();
    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/healthz", &m), 0);
    ck_assert_ptr_eq(m.data, H_HEALTHZ);
    ck_assert_str_eq(m.pattern, "/healthz");
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_str_eq(m.allow, "");

    ck_assert_int_eq(match(r, "GET", "/export/orders", &m), 0);
    ck_assert_ptr_eq(m.data, H_EXPORT);
    ck_assert_int_eq(match(r, "GET", "/", &m), 0);
    ck_assert_ptr_eq(m.data, H_ROOT);
    ck_assert_str_eq(m.pattern, "/");
    ck_assert_int_eq(match(r, "POST", "/users", &m), 0);
    ck_assert_ptr_eq(m.data, H_USERS_CREATE);
    ck_assert_int_eq(match(r, "GET", "/users", &m), 0);
    ck_assert_ptr_eq(m.data, H_USERS_LIST);

    /* case-sensitive, whole segments only */
    ck_assert_int_eq(match(r, "GET", "/Healthz", &m), -ENOENT);
    ck_assert_int_eq(match(r, "GET", "/health", &m), -ENOENT);
    ck_assert_int_eq(match(r, "GET", "/healthzz", &m), -ENOENT);
    ck_assert_int_eq(match(r, "GET", "/export", &m), -ENOENT);
    ck_assert_int_eq(match(r, "GET", "/export/orders/1", &m), -ENOENT);
    server_router_destroy(r);
}
END_TEST

START_TEST(parameters_are_extracted_by_name)
{
    server_router *r = service_router();
    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/users/42", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    ck_assert_str_eq(m.pattern, "/users/{id}");
    ck_assert_uint_eq(m.nparams, 1);
    ck_assert_str_eq(m.params[0].name, "id");
    ck_assert_value(m, 0, "42");

    size_t len = 99;
    const char *v = server_route_param(&m, "id", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(memcmp(v, "42", 2), 0);
    ck_assert_ptr_null(server_route_param(&m, "user_id", &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(server_route_param(&m, "i", NULL));

    ck_assert_int_eq(match(r, "POST", "/users/7/orders", &m), 0);
    ck_assert_ptr_eq(m.data, H_ORDERS_CREATE);
    ck_assert_str_eq(m.pattern, "/users/{id}/orders");
    ck_assert_uint_eq(m.nparams, 1);
    ck_assert_value(m, 0, "7");
    ck_assert_int_eq(match(r, "GET", "/orders/9000000000000000000", &m), 0);
    ck_assert_ptr_eq(m.data, H_ORDER_GET);
    ck_assert_value(m, 0, "9000000000000000000");
    /* values are raw: decoding and validation are the handler's */
    ck_assert_int_eq(match(r, "GET", "/users/%31", &m), 0);
    ck_assert_value(m, 0, "%31");
    server_router_destroy(r);

    /* several parameters, including in the first and last positions */
    r = server_router_create();
    ck_assert_int_eq(server_router_add(r, "GET", "/{tenant}/items/{item_id}/parts/{part}", H_ROOT), 0);
    ck_assert_int_eq(match(r, "GET", "/acme/items/12/parts/bolt", &m), 0);
    ck_assert_uint_eq(m.nparams, 3);
    ck_assert_str_eq(m.params[0].name, "tenant");
    ck_assert_value(m, 0, "acme");
    ck_assert_str_eq(m.params[1].name, "item_id");
    ck_assert_value(m, 1, "12");
    ck_assert_str_eq(m.params[2].name, "part");
    ck_assert_value(m, 2, "bolt");
    v = server_route_param(&m, "part", &len);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(v, "bolt", 4), 0);
    ck_assert_int_eq(match(r, "GET", "/acme/things/12/parts/bolt", &m), -ENOENT);
    server_router_destroy(r);
}
END_TEST

START_TEST(a_literal_beats_a_parameter_whatever_the_registration_order)
{
    server_router *r = service_router(); /* "/users/me" registered after "/users/{id}" */
    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/users/me", &m), 0);
    ck_assert_ptr_eq(m.data, H_ME);
    ck_assert_str_eq(m.pattern, "/users/me");
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_int_eq(match(r, "GET", "/users/mee", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    ck_assert_int_eq(match(r, "GET", "/users/m", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    /* the path picks the pattern; the method does not fall through to the
     * parameter route */
    ck_assert_int_eq(match(r, "PATCH", "/users/me", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    ck_assert_str_eq(m.pattern, "/users/me");
    server_router_destroy(r);

    r = server_router_create();
    ck_assert_int_eq(server_router_add(r, "GET", "/users/me", H_ME), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/users/{id}", H_USER_GET), 0);
    ck_assert_int_eq(match(r, "GET", "/users/me", &m), 0);
    ck_assert_ptr_eq(m.data, H_ME);
    ck_assert_int_eq(match(r, "GET", "/users/5", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    server_router_destroy(r);

    /* the first position where the patterns differ decides */
    r = server_router_create();
    ck_assert_int_eq(server_router_add(r, "GET", "/x/{a}/c", H_USER_GET), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/x/b/{c}", H_ME), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/x/{a}/{c}", H_ROOT), 0);
    ck_assert_int_eq(match(r, "GET", "/x/b/c", &m), 0);
    ck_assert_ptr_eq(m.data, H_ME);
    ck_assert_int_eq(match(r, "GET", "/x/z/c", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    ck_assert_int_eq(match(r, "GET", "/x/z/z", &m), 0);
    ck_assert_ptr_eq(m.data, H_ROOT);
    ck_assert_value(m, 0, "z");
    ck_assert_value(m, 1, "z");
    server_router_destroy(r);
}
END_TEST

START_TEST(an_unknown_path_is_404)
{
    server_router *r = service_router();
    server_route_match m;
    const char *paths[] = {"/nope", "/users/1/x", "/users/1/orders/2", "/orders", "/accounts/1/2", "/healthz/x"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        ck_assert_int_eq(match(r, "GET", paths[i], &m), -ENOENT);
        ck_assert_ptr_null(m.data);
        ck_assert_ptr_null(m.pattern);
        ck_assert_uint_eq(m.nparams, 0);
        ck_assert_str_eq(m.allow, "");
        /* whatever the method */
        ck_assert_int_eq(match(r, "DELETE", paths[i], &m), -ENOENT);
    }
    server_router_destroy(r);

    /* an empty table knows no path, not even the root */
    r = server_router_create();
    ck_assert_int_eq(match(r, "GET", "/", &m), -ENOENT);
    server_router_destroy(r);
}
END_TEST

START_TEST(a_known_path_with_another_method_is_405_with_the_allow_list)
{
    server_router *r = service_router();
    server_route_match m;
    ck_assert_int_eq(match(r, "PUT", "/users/1", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "GET, HEAD, PATCH, DELETE");
    ck_assert_ptr_null(m.data);
    ck_assert_str_eq(m.pattern, "/users/{id}");
    ck_assert_value(m, 0, "1");

    ck_assert_int_eq(match(r, "DELETE", "/users", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "POST, GET, HEAD");
    ck_assert_int_eq(match(r, "PATCH", "/users/1/orders", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "POST, GET, HEAD");
    ck_assert_int_eq(match(r, "POST", "/healthz", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    ck_assert_int_eq(match(r, "GET", "/accounts", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "POST");
    /* methods are case-sensitive tokens */
    ck_assert_int_eq(match(r, "get", "/healthz", &m), -EOPNOTSUPP);
    ck_assert_int_eq(match(r, "GETX", "/healthz", &m), -EOPNOTSUPP);
    ck_assert_int_eq(match(r, "GE", "/healthz", &m), -EOPNOTSUPP);
    ck_assert_int_eq(server_router_match(r, "", 0, "/healthz", 8, &m), -EOPNOTSUPP);
    ck_assert_int_eq(server_router_match(r, "GET\0", 4, "/healthz", 8, &m), -EOPNOTSUPP);
    server_router_destroy(r);
}
END_TEST

START_TEST(head_matches_a_get_route)
{
    server_router *r = service_router();
    server_route_match m;
    ck_assert_int_eq(match(r, "HEAD", "/users/3", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    ck_assert_value(m, 0, "3");
    ck_assert_int_eq(match(r, "HEAD", "/users", &m), 0);
    ck_assert_ptr_eq(m.data, H_USERS_LIST);
    /* but not a route without GET */
    ck_assert_int_eq(match(r, "HEAD", "/accounts", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "POST");
    server_router_destroy(r);

    /* an explicit HEAD wins over the GET fallback and is listed once */
    r = server_router_create();
    ck_assert_int_eq(server_router_add(r, "HEAD", "/x", H_ME), 0);
    ck_assert_int_eq(server_router_add(r, "POST", "/x", H_USERS_CREATE), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/x", H_USER_GET), 0);
    ck_assert_int_eq(server_router_add(r, "HEAD", "/y", H_ME), 0);
    ck_assert_int_eq(match(r, "HEAD", "/x", &m), 0);
    ck_assert_ptr_eq(m.data, H_ME);
    ck_assert_int_eq(match(r, "GET", "/x", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_GET);
    ck_assert_int_eq(match(r, "PUT", "/x", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "POST, GET, HEAD");
    ck_assert_int_eq(match(r, "GET", "/y", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "HEAD");
    server_router_destroy(r);
}
END_TEST

START_TEST(trailing_and_doubled_slashes_are_404)
{
    server_router *r = service_router();
    server_route_match m;
    const char *paths[] = {"/users/", "//users", "/users//", "/users//orders", "//", "///", "/users/1/", "/users/1//orders",
                           "/healthz/", "", "users", "healthz", " /healthz", "*"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        ck_assert_msg(match_exact(r, "GET", paths[i], strlen(paths[i]), &m) == -ENOENT, "path \"%s\"", paths[i]);
        ck_assert_ptr_null(m.pattern);
    }
    ck_assert_int_eq(server_router_match(r, "GET", 3, NULL, 0, &m), -ENOENT);
    server_router_destroy(r);
}
END_TEST

START_TEST(hostile_paths_are_404_without_reading_out_of_bounds)
{
    server_router *r = service_router();
    server_route_match m;
    /* NUL bytes anywhere, including where a parameter would take them */
    ck_assert_int_eq(match_exact(r, "GET", "/healthz\0", 9, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/health\0z", 9, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/\0", 2, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "\0/healthz", 9, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/users/1\0", 9, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/users/\0", 8, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/users/\0/orders", 15, &m), -ENOENT);
    /* a prefix of a real path in a buffer with nothing after it */
    ck_assert_int_eq(match_exact(r, "GET", "/healthz", 7, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/healthz", 8, &m), 0);
    /* percent signs are bytes like any other */
    ck_assert_int_eq(match_exact(r, "GET", "/%68ealthz", 10, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/%", 2, &m), -ENOENT);
    ck_assert_int_eq(match_exact(r, "GET", "/users/%", 8, &m), 0);
    ck_assert_int_eq(match(r, "GET", "/users/%", &m), 0);
    ck_assert_value(m, 0, "%");
    ck_assert_int_eq(match_exact(r, "GET", "/users/%00/orders", 17, &m), 0);
    /* high bytes */
    ck_assert_int_eq(match_exact(r, "GET", "/\xff\xfe", 3, &m), -ENOENT);

    size_t big = 100 * 1024;
    char *path = malloc(big);
    ck_assert_ptr_nonnull(path);
    path[0] = '/';
    memset(path + 1, 'a', big - 1);
    ck_assert_int_eq(match_exact(r, "GET", path, big, &m), -ENOENT);
    memcpy(path, "/users/", 7); /* one huge parameter value */
    ck_assert_int_eq(match_exact(r, "GET", path, big, &m), 0);
    ck_assert_uint_eq(m.params[0].len, big - 7);
    memset(path, '/', big);
    ck_assert_int_eq(match_exact(r, "GET", path, big, &m), -ENOENT);

    /* 1,000 segments, including ones that would match a route's prefix */
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        memcpy(path + n, "/users", 6);
        n += 6;
    }
    ck_assert_int_eq(match_exact(r, "GET", path, n, &m), -ENOENT);
    n = 0;
    for (int i = 0; i < 1000; i++) {
        memcpy(path + n, "/a", 2);
        n += 2;
    }
    ck_assert_int_eq(match_exact(r, "GET", path, n, &m), -ENOENT);
    free(path);
    server_router_destroy(r);
}
END_TEST

START_TEST(malformed_patterns_are_rejected)
{
    server_router *r = server_router_create();
    const char *bad[] = {"",
                         "users",
                         "//",
                         "/users/",
                         "/users//orders",
                         "//users",
                         "/{}",
                         "/{ID}",
                         "/{id",
                         "/id}",
                         "/{id}}",
                         "/{{id}",
                         "/x{id}",
                         "/{id}x",
                         "/{i-d}",
                         "/{i d}",
                         "/{id1}",
                         "/a/{id}/{id}",
                         "/a b",
                         "/a?b",
                         "/a#b",
                         "/a\tb",
                         "/a\x7f",
                         "/\xc3\xa9",
                         "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
                         "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(server_router_add(r, "GET", bad[i], H_ROOT) == -EINVAL, "pattern \"%s\"", bad[i]);
    /* the limits themselves are fine */
    ck_assert_int_eq(server_router_add(r, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", H_ROOT), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", H_ME), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/openapi.json", H_HEALTHZ), 0);
    ck_assert_int_eq(server_router_add(r, "GET", "/{user_id}/x", H_HEALTHZ), 0);

    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", &m), 0);
    ck_assert_ptr_eq(m.data, H_ME);
    ck_assert_int_eq(match(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", &m), -ENOENT);
    ck_assert_int_eq(match(r, "GET", "/1/2/3/4/5/6/7/8", &m), 0);
    ck_assert_ptr_eq(m.data, H_ROOT);
    ck_assert_uint_eq(m.nparams, 8);
    size_t len;
    ck_assert_int_eq(*server_route_param(&m, "h", &len), '8');
    ck_assert_int_eq(match(r, "GET", "/openapi.json", &m), 0);
    ck_assert_ptr_eq(m.data, H_HEALTHZ);
    server_router_destroy(r);
}
END_TEST

START_TEST(duplicates_are_rejected_and_leave_the_first_in_place)
{
    server_router *r = service_router();
    ck_assert_int_eq(server_router_add(r, "GET", "/users", H_ROOT), -EEXIST);
    ck_assert_int_eq(server_router_add(r, "PATCH", "/users/{id}", H_ROOT), -EEXIST);
    ck_assert_int_eq(server_router_add(r, "GET", "/", H_ME), -EEXIST);
    /* the same paths under another parameter name would make the names
     * depend on the method */
    ck_assert_int_eq(server_router_add(r, "PUT", "/users/{user_id}", H_ROOT), -EEXIST);
    ck_assert_int_eq(server_router_add(r, "GET", "/users/{user_id}/orders", H_ROOT), -EEXIST);
    /* a new method on a known pattern is not a duplicate */
    ck_assert_int_eq(server_router_add(r, "PUT", "/users/{id}", H_ROOT), 0);

    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/users", &m), 0);
    ck_assert_ptr_eq(m.data, H_USERS_LIST);
    ck_assert_int_eq(match(r, "PATCH", "/users/1", &m), 0);
    ck_assert_ptr_eq(m.data, H_USER_PATCH);
    ck_assert_str_eq(m.params[0].name, "id");
    ck_assert_int_eq(match(r, "PUT", "/users/1", &m), 0);
    ck_assert_ptr_eq(m.data, H_ROOT);
    ck_assert_int_eq(match(r, "POST", "/users/1", &m), -EOPNOTSUPP);
    ck_assert_str_eq(m.allow, "GET, HEAD, PATCH, DELETE, PUT");
    server_router_destroy(r);
}
END_TEST

START_TEST(an_allow_list_that_would_not_fit_is_refused)
{
    server_router *r = server_router_create();
    char method[16];
    int rc = 0, added = 0;
    /* 15-letter methods: five fit in 96 bytes with their separators */
    for (char c = 'A'; c <= 'Z' && rc == 0; c++) {
        memset(method, c, 15);
        method[15] = '\0';
        rc = server_router_add(r, method, "/x", H_ROOT);
        added += rc == 0;
    }
    ck_assert_int_eq(rc, -E2BIG);
    ck_assert_int_eq(added, 5);
    server_route_match m;
    ck_assert_int_eq(match(r, "GET", "/x", &m), -EOPNOTSUPP);
    ck_assert_uint_lt(strlen(m.allow), sizeof(m.allow));
    ck_assert_int_eq(strncmp(m.allow, "AAAAAAAAAAAAAAA, BBBBBBBBBBBBBBB, ", 34), 0);
    memset(method, 'F', 15);
    ck_assert_int_eq(match(r, method, "/x", &m), -EOPNOTSUPP); /* the refused one is not registered */
    ck_assert_int_eq(server_router_add(r, "GET", "/y", H_ME), 0);
    ck_assert_int_eq(match(r, "GET", "/y", &m), 0);
    server_router_destroy(r);
    server_router_destroy(NULL);
}
END_TEST

/* Many patterns, with and without parameters, added while the router's
 * tables grow several times: each path finds its own route, a literal
 * pattern still beats a parameter one that also matches, and a path one
 * byte longer or shorter than a literal pattern finds nothing of it. */
START_TEST(every_pattern_is_found_among_hundreds)
{
    enum { N = 300 };
    static int data[N][2];
    server_router *r = server_router_create();
    ck_assert_ptr_nonnull(r);
    char pattern[64], path[64];
    for (int i = 0; i < N; i++) {
        snprintf(pattern, sizeof(pattern), "/r%d/items", i);
        ck_assert_int_eq(server_router_add(r, "GET", pattern, &data[i][0]), 0);
        snprintf(pattern, sizeof(pattern), "/r%d/{id}", i);
        ck_assert_int_eq(server_router_add(r, "GET", pattern, &data[i][1]), 0);
    }
    server_route_match m;
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/r%d/items", i);
        ck_assert_int_eq(match(r, "GET", path, &m), 0);
        ck_assert_ptr_eq(m.data, &data[i][0]);
        ck_assert_uint_eq(m.nparams, 0);
        snprintf(path, sizeof(path), "/r%d/item", i);
        ck_assert_int_eq(match(r, "GET", path, &m), 0);
        ck_assert_ptr_eq(m.data, &data[i][1]);
        ck_assert_str_eq(m.params[0].name, "id");
        snprintf(path, sizeof(path), "/r%d/itemsx", i);
        ck_assert_int_eq(match(r, "GET", path, &m), 0);
        ck_assert_ptr_eq(m.data, &data[i][1]);
        snprintf(path, sizeof(path), "/r%d/items/", i);
        ck_assert_int_eq(match(r, "GET", path, &m), -ENOENT);
        snprintf(path, sizeof(path), "/r%d/items", i);
        ck_assert_int_eq(match(r, "POST", path, &m), -EOPNOTSUPP);
        ck_assert_str_eq(m.allow, "GET, HEAD");
        ck_assert_int_eq(match(r, "HEAD", path, &m), 0);
        ck_assert_ptr_eq(m.data, &data[i][0]);
    }
    ck_assert_int_eq(match(r, "GET", "/r300/items", &m), -ENOENT);
    server_router_destroy(r);
}
END_TEST

/* Random short paths over an alphabet of the bytes that matter: whatever
 * comes back must be consistent, and a match's values must lie inside the
 * path. */
START_TEST(random_paths_give_consistent_answers)
{
    server_router *r = service_router();
    static const char alphabet[] = "//usersm0rd%\0e";
    unsigned seed = 42;
    char path[24];
    for (int i = 0; i < 200000; i++) {
        size_t len = (size_t)rand_r(&seed) % sizeof(path);
        for (size_t k = 0; k < len; k++)
            path[k] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        server_route_match m;
        int rc = match_exact(r, "GET", path, len, &m);
        ck_assert(rc == 0 || rc == -ENOENT || rc == -EOPNOTSUPP);
        ck_assert_int_eq(rc == 0, m.data != NULL);
        ck_assert_int_eq(rc == -ENOENT, m.pattern == NULL);
        ck_assert_int_eq(rc == -EOPNOTSUPP, m.allow[0] != '\0');
        size_t total = 0;
        for (size_t k = 0; k < m.nparams; k++) {
            ck_assert_uint_gt(m.params[k].len, 0);
            total += m.params[k].len;
        }
        ck_assert_uint_lt(total, len + (len == 0));
    }
    server_router_destroy(r);
}
END_TEST

struct expectation {
    const char *method;
    const char *path;
    int rc;
    const void *data;
    const char *param; /* value of "id", if any */
    const char *allow;
};

static const struct expectation expectations[] = {
    {"GET", "/healthz", 0, H_HEALTHZ, NULL, NULL},
    {"GET", "/users/123", 0, H_USER_GET, "123", NULL},
    {"HEAD", "/users/77", 0, H_USER_GET, "77", NULL},
    {"DELETE", "/users/5", 0, H_USER_DELETE, "5", NULL},
    {"GET", "/users/me", 0, H_ME, NULL, NULL},
    {"POST", "/users/9/orders", 0, H_ORDERS_CREATE, "9", NULL},
    {"GET", "/orders/31", 0, H_ORDER_GET, "31", NULL},
    {"GET", "/export/orders", 0, H_EXPORT, NULL, NULL},
    {"PUT", "/users/1", -EOPNOTSUPP, NULL, "1", "GET, HEAD, PATCH, DELETE"},
    {"DELETE", "/users", -EOPNOTSUPP, NULL, NULL, "POST, GET, HEAD"},
    {"GET", "/users/", -ENOENT, NULL, NULL, ""},
    {"GET", "/nope/x/y", -ENOENT, NULL, NULL, ""},
};
#define NEXPECT (sizeof(expectations) / sizeof(expectations[0]))

struct worker {
    const server_router *r;
    unsigned seed;
    long failures;
};

static void *match_many(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100000; i++) {
        const struct expectation *e = &expectations[rand_r(&w->seed) % NEXPECT];
        server_route_match m;
        int rc = match(w->r, e->method, e->path, &m);
        bool ok = rc == e->rc && m.data == e->data;
        if (ok && e->param != NULL) {
            size_t len;
            const char *v = server_route_param(&m, "id", &len);
            ok = v != NULL && len == strlen(e->param) && memcmp(v, e->param, len) == 0;
        }
        if (ok && e->allow != NULL)
            ok = strcmp(m.allow, e->allow) == 0;
        w->failures += !ok;
    }
    return NULL;
}

START_TEST(many_threads_match_against_one_router)
{
    server_router *r = service_router();
    pthread_t threads[4];
    struct worker workers[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (struct worker){.r = r, .seed = 1234u + (unsigned)i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, match_many, &workers[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        ck_assert_int_eq(workers[i].failures, 0);
    }
    server_router_destroy(r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_router");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, literal_patterns_match_exactly);
    tcase_add_test(tc, parameters_are_extracted_by_name);
    tcase_add_test(tc, a_literal_beats_a_parameter_whatever_the_registration_order);
    tcase_add_test(tc, an_unknown_path_is_404);
    tcase_add_test(tc, a_known_path_with_another_method_is_405_with_the_allow_list);
    tcase_add_test(tc, head_matches_a_get_route);
    tcase_add_test(tc, trailing_and_doubled_slashes_are_404);
    tcase_add_test(tc, hostile_paths_are_404_without_reading_out_of_bounds);
    tcase_add_test(tc, malformed_patterns_are_rejected);
    tcase_add_test(tc, duplicates_are_rejected_and_leave_the_first_in_place);
    tcase_add_test(tc, an_allow_list_that_would_not_fit_is_refused);
    tcase_add_test(tc, random_paths_give_consistent_answers);
    tcase_add_test(tc, every_pattern_is_found_among_hundreds);
    tcase_add_test(tc, many_threads_match_against_one_router);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
