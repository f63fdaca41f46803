/* Connection parameters: parsing DATABASE_URL with the service's defaults,
 * and resolving host names off the loop thread. No server is needed. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "db/conninfo.h"

/* ---- helpers ---- */

static db_conninfo *parse_ok(const char *conninfo, const db_session_settings *s)
{
    char err[256] = "";
    db_conninfo *ci = NULL;
    int rc = db_conninfo_parse(conninfo, s, &ci, err, sizeof(err));
    ck_assert_msg(rc == 0, "parse \"%s\": %d %s", conninfo, rc, err);
    ck_assert_ptr_nonnull(ci);
    return ci;
}

static void assert_value(const db_conninfo *ci, const char *kw, const char *want)
{
    const char *got = db_conninfo_get(ci, kw);
    if (want == NULL)
        ck_assert_msg(got == NULL, "%s: expected absent, got \"%s\"", kw, got);
    else
        ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: expected \"%s\", got \"%s\"", kw, want,
                      got ? got : "(absent)");
}

/* Splits a comma-separated list into at most max entries (copies kept in
 * buf); returns the count. Empty entries count. */
static int split(const char *list, char *buf, size_t cap, char **out, int max)
{
    snprintf(buf, cap, "%s", list);
    int n = 0;
    char *p = buf;
    for (;;) {
        ck_assert_int_lt(n, max);
        out[n++] = p;
        char *comma = strchr(p, ',');
        if (comma == NULL)
            return n;
        *comma = '\0';
        p = comma + 1;
    }
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool is_loopback(const char *s)
{
    return strncmp(s, "127.", 4) == 0 || strcmp(s, "::1") == 0;
}

/* ---- parsing ---- */

START_TEST(parse_adds_application_name_and_keepalives)
{
    db_conninfo *ci = parse_ok("host=/tmp dbname=app", NULL);
    assert_value(ci, "host", "/tmp");
    assert_value(ci, "dbname", "app");
    assert_value(ci, "application_name", "h2pg");
    assert_value(ci, "keepalives", "1");
    ck_assert_ptr_nonnull(db_conninfo_get(ci, "keepalives_idle"));
    ck_assert_ptr_nonnull(db_conninfo_get(ci, "keepalives_interval"));
    ck_assert_ptr_nonnull(db_conninfo_get(ci, "keepalives_count"));
    ck_assert_int_gt(atoi(db_conninfo_get(ci, "keepalives_idle")), 0);
    /* no settings: no options */
    assert_value(ci, "options", NULL);
    /* arrays as PQconnectStartParams takes them */
    ck_assert_ptr_null(ci->keywords[ci->n]);
    ck_assert_ptr_null(ci->values[ci->n]);
    for (size_t i = 0; i < ci->n; i++) {
        ck_assert_ptr_nonnull(ci->keywords[i]);
        ck_assert_ptr_nonnull(ci->values[i]);
    }
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_keeps_a_given_application_name_and_keepalives)
{
    db_conninfo *ci = parse_ok("host=/tmp application_name=reporting keepalives=0", NULL);
    assert_value(ci, "application_name", "reporting");
    assert_value(ci, "keepalives", "0");
    /* the user decided about keepalives: none of ours are added */
    assert_value(ci, "keepalives_idle", NULL);
    assert_value(ci, "keepalives_interval", NULL);
    assert_value(ci, "keepalives_count", NULL);
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_accepts_an_empty_string_for_libpq_defaults)
{
    db_conninfo *ci = parse_ok("", NULL);
    assert_value(ci, "host", NULL);
    assert_value(ci, "dbname", NULL);
    assert_value(ci, "application_name", "h2pg");
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_accepts_a_uri)
{
    db_conninfo *ci = parse_ok("postgresql://alice@db.example:6543/shop?application_name=batch&connect_timeout=3", NULL);
    assert_value(ci, "host", "db.example");
    assert_value(ci, "port", "6543");
    assert_value(ci, "user", "alice");
    assert_value(ci, "dbname", "shop");
    assert_value(ci, "connect_timeout", "3");
    assert_value(ci, "application_name", "batch");
    assert_value(ci, "keepalives", "1");
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_appends_session_settings_to_the_given_options)
{
    db_session_settings s = {.statement_timeout_ms = 1500, .idle_in_transaction_timeout_ms = 3000};
    db_conninfo *ci = parse_ok("host=/tmp options='-c search_path=shop'", &s);
    assert_value(ci, "options", "-c search_path=shop -c statement_timeout=1500 -c idle_in_transaction_session_timeout=3000");
    db_conninfo_free(ci);

    ci = parse_ok("host=/tmp", &s);
    assert_value(ci, "options", "-c statement_timeout=1500 -c idle_in_transaction_session_timeout=3000");
    db_conninfo_free(ci);

    db_session_settings only_idle = {.idle_in_transaction_timeout_ms = 700};
    ci = parse_ok("host=/tmp", &only_idle);
    assert_value(ci, "options", "-c idle_in_transaction_session_timeout=700");
    db_conninfo_free(ci);

    db_session_settings only_stmt = {.statement_timeout_ms = 25};
    ci = parse_ok("host=/tmp options=-cwork_mem=8MB", &only_stmt);
    assert_value(ci, "options", "-cwork_mem=8MB -c statement_timeout=25");
    db_conninfo_free(ci);

    db_session_settings pool = {.statement_timeout_ms = 25, .jit_off = true};
    ci = parse_ok("host=/tmp", &pool);
    assert_value(ci, "options", "-c statement_timeout=25 -c jit=off");
    db_conninfo_free(ci);
    db_session_settings only_jit = {.jit_off = true};
    ci = parse_ok("host=/tmp options=-cwork_mem=8MB", &only_jit);
    assert_value(ci, "options", "-cwork_mem=8MB -c jit=off");
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_leaves_options_alone_when_the_settings_are_off)
{
    db_session_settings off = {0, 0};
    db_conninfo *ci = parse_ok("host=/tmp options='-c search_path=shop'", &off);
    assert_value(ci, "options", "-c search_path=shop");
    db_conninfo_free(ci);
    ci = parse_ok("host=/tmp", &off);
    assert_value(ci, "options", NULL);
    db_conninfo_free(ci);
}
END_TEST

START_TEST(parse_rejects_malformed_conninfo_with_a_message)
{
    const char *bad[] = {
        "host=/tmp port",                     /* no = */
        "host=/tmp no_such_keyword=1",        /* unknown keyword */
        "host='/tmp",                         /* unterminated quote */
        "postgresql://h:5432/db?bogus=1",     /* unknown URI parameter */
        "postgresql://[::1:5432/db",          /* unterminated IPv6 literal */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        db_conninfo *ci = NULL;
        int rc = db_conninfo_parse(bad[i], NULL, &ci, err, sizeof(err));
        ck_assert_msg(rc == -EINVAL, "\"%s\": expected -EINVAL, got %d", bad[i], rc);
        ck_assert_ptr_null(ci);
        ck_assert_msg(strncmp(err, "DATABASE_URL: ", 14) == 0 && strlen(err) > 14, "\"%s\": message \"%s\"", bad[i], err);
    }
}
END_TEST

START_TEST(parse_rejects_options_that_grow_too_long)
{
    char conninfo[700];
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(conninfo, sizeof(conninfo), "host=/tmp options=-capplication_name=%s", big);
    db_session_settings s = {.statement_timeout_ms = 1000};
    char err[256] = "";
    db_conninfo *ci = NULL;
    ck_assert_int_eq(db_conninfo_parse(conninfo, &s, &ci, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(ci);
    ck_assert_msg(strstr(err, "options") != NULL, "message: %s", err);
}
END_TEST

/* ---- resolving ---- */

static int resolve(const char *conninfo, db_conninfo **out, char *err, size_t errlen)
{
    db_conninfo *base = parse_ok(conninfo, NULL);
    *out = NULL;
    int rc = db_conninfo_resolve(base, out, err, errlen);
    db_conninfo_free(base);
    return rc;
}

static db_conninfo *resolve_ok(const char *conninfo)
{
    char err[256] = "";
    db_conninfo *ci = NULL;
    int rc = resolve(conninfo, &ci, err, sizeof(err));
    ck_assert_msg(rc == 0, "resolve \"%s\": %d %s", conninfo, rc, err);
    ck_assert_ptr_nonnull(ci);
    return ci;
}

AIO_TEST(localhost_expands_to_one_host_entry_per_address)
{
    db_conninfo *ci = resolve_ok("host=localhost port=5432 dbname=app");
    char hb[1024], ab[1024], pb[1024];
    char *hosts[32], *addrs[32], *ports[32];
    ck_assert_ptr_nonnull(db_conninfo_get(ci, "hostaddr"));
    int nh = split(db_conninfo_get(ci, "host"), hb, sizeof(hb), hosts, 32);
    int na = split(db_conninfo_get(ci, "hostaddr"), ab, sizeof(ab), addrs, 32);
    int np = split(db_conninfo_get(ci, "port"), pb, sizeof(pb), ports, 32);
    ck_assert_int_ge(nh, 1);
    ck_assert_int_eq(na, nh);
    ck_assert_int_eq(np, nh);
    for (int i = 0; i < nh; i++) {
        ck_assert_str_eq(hosts[i], "localhost"); /* kept for TLS and messages */
        ck_assert_msg(is_ip_literal(addrs[i]) && is_loopback(addrs[i]), "address %d: \"%s\"", i, addrs[i]);
        ck_assert_str_eq(ports[i], "5432");
        for (int k = 0; k < i; k++)
            ck_assert_str_ne(addrs[k], addrs[i]);
    }
    /* everything else is carried over */
    assert_value(ci, "dbname", "app");
    assert_value(ci, "application_name", "h2pg");
    ck_assert_ptr_null(ci->keywords[ci->n]);
    db_conninfo_free(ci);
    return 0;
}

AIO_TEST(ports_are_replicated_to_match_the_expanded_hosts)
{
    db_conninfo *ci = resolve_ok("host=localhost,127.0.0.2 port=1111,2222");
    char hb[1024], ab[1024], pb[1024];
    char *hosts[32], *addrs[32], *ports[32];
    int nh = split(db_conninfo_get(ci, "host"), hb, sizeof(hb), hosts, 32);
    int na = split(db_conninfo_get(ci, "hostaddr"), ab, sizeof(ab), addrs, 32);
    int np = split(db_conninfo_get(ci, "port"), pb, sizeof(pb), ports, 32);
    ck_assert_int_ge(nh, 2);
    ck_assert_int_eq(na, nh);
    ck_assert_int_eq(np, nh);
    for (int i = 0; i < nh - 1; i++) {
        ck_assert_str_eq(hosts[i], "localhost");
        ck_assert(is_ip_literal(addrs[i]));
        ck_assert_str_eq(ports[i], "1111");
    }
    /* the literal needs no address of its own and keeps its port */
    ck_assert_str_eq(hosts[nh - 1], "127.0.0.2");
    ck_assert_str_eq(addrs[nh - 1], "");
    ck_assert_str_eq(ports[nh - 1], "2222");
    db_conninfo_free(ci);

    /* one port for every host stays one port per entry */
    ci = resolve_ok("host=localhost,localhost port=7777");
    nh = split(db_conninfo_get(ci, "host"), hb, sizeof(hb), hosts, 32);
    np = split(db_conninfo_get(ci, "port"), pb, sizeof(pb), ports, 32);
    ck_assert_int_ge(nh, 2);
    ck_assert_int_eq(np, nh);
    for (int i = 0; i < np; i++)
        ck_assert_str_eq(ports[i], "7777");
    db_conninfo_free(ci);
    return 0;
}

AIO_TEST(ip_literals_and_socket_paths_are_left_alone)
{
    db_conninfo *ci = resolve_ok("host=127.0.0.1,::1,/var/run/postgresql port=1,2,3 dbname=app");
    assert_value(ci, "host", "127.0.0.1,::1,/var/run/postgresql");
    assert_value(ci, "port", "1,2,3");
    assert_value(ci, "hostaddr", NULL);
    assert_value(ci, "dbname", "app");
    db_conninfo_free(ci);

    /* no host at all: libpq's default socket */
    ci = resolve_ok("dbname=app");
    assert_value(ci, "host", NULL);
    assert_value(ci, "hostaddr", NULL);
    db_conninfo_free(ci);

    /* an explicit hostaddr is the user's choice */
    ci = resolve_ok("host=nonexistent.invalid hostaddr=127.0.0.1 port=5432");
    assert_value(ci, "host", "nonexistent.invalid");
    assert_value(ci, "hostaddr", "127.0.0.1");
    db_conninfo_free(ci);
    return 0;
}

AIO_TEST(an_unresolvable_host_fails_with_ehostunreach_and_a_message)
{
    char err[256] = "";
    db_conninfo *ci = NULL;
    ck_assert_int_eq(resolve("host=nonexistent.invalid port=5432", &ci, err, sizeof(err)), -EHOSTUNREACH);
    ck_assert_ptr_null(ci);
    ck_assert_msg(strstr(err, "nonexistent.invalid") != NULL, "message: %s", err);
    return 0;
}

AIO_TEST(an_unresolvable_host_is_dropped_when_another_host_is_usable)
{
    db_conninfo *ci = resolve_ok("host=nonexistent.invalid,localhost port=1111,2222");
    char hb[1024], pb[1024];
    char *hosts[32], *ports[32];
    int nh = split(db_conninfo_get(ci, "host"), hb, sizeof(hb), hosts, 32);
    int np = split(db_conninfo_get(ci, "port"), pb, sizeof(pb), ports, 32);
    ck_assert_int_eq(np, nh);
    for (int i = 0; i < nh; i++) {
        ck_assert_str_eq(hosts[i], "localhost");
        ck_assert_str_eq(ports[i], "2222");
    }
    db_conninfo_free(ci);

    /* an IP literal or a socket path is as usable as a resolved name */
    ci = resolve_ok("host=nonexistent.invalid,127.0.0.1 port=1111,2222");
    assert_value(ci, "host", "127.0.0.1");
    assert_value(ci, "port", "2222");
    db_conninfo_free(ci);
    ci = resolve_ok("host=/var/run/postgresql,nonexistent.invalid");
    assert_value(ci, "host", "/var/run/postgresql");
    db_conninfo_free(ci);
    return 0;
}

AIO_TEST(more_hosts_than_supported_is_einval)
{
    char conninfo[1024] = "host=localhost";
    for (int i = 0; i < 40; i++)
        strcat(conninfo, ",localhost");
    char err[256] = "";
    db_conninfo *ci = NULL;
    ck_assert_int_eq(resolve(conninfo, &ci, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(ci);
    ck_assert_msg(strstr(err, "hosts") != NULL, "message: %s", err);
    return 0;
}

AIO_TEST(a_lookup_under_an_expired_deadline_returns_etimedout)
{
    db_conninfo *base = parse_ok("host=localhost", NULL);
    aio_timeout scope;
    aio_timeout_open(&scope, 0);
    char err[256] = "";
    db_conninfo *ci = NULL;
    ck_assert_int_eq(db_conninfo_resolve(base, &ci, err, sizeof(err)), -ETIMEDOUT);
    ck_assert_ptr_null(ci);
    aio_timeout_close(&scope);
    /* outside the scope it works */
    ck_assert_int_eq(db_conninfo_resolve(base, &ci, err, sizeof(err)), 0);
    db_conninfo_free(ci);
    db_conninfo_free(base);
    return 0;
}

struct resolve_job {
    db_conninfo *base;
    db_conninfo *out;
    int rc;
};

static int resolve_in_task(void *arg)
{
    struct resolve_job *j = arg;
    char err[256] = "";
    j->rc = db_conninfo_resolve(j->base, &j->out, err, sizeof(err));
    return j->rc;
}

AIO_TEST(a_cancelled_lookup_returns_ecanceled)
{
    struct resolve_job j = {.base = parse_ok("host=localhost", NULL), .rc = 1};
    aio_task *t = aio_task_spawn(resolve_in_task, &j);
    ck_assert_ptr_nonnull(t);
    aio_task_cancel(t); /* before it starts: its first await fails */
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_int_eq(j.rc, -ECANCELED);
    ck_assert_ptr_null(j.out);
    db_conninfo_free(j.base);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("db_conninfo");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, parse_adds_application_name_and_keepalives);
    tcase_add_test(tc, parse_keeps_a_given_application_name_and_keepalives);
    tcase_add_test(tc, parse_accepts_an_empty_string_for_libpq_defaults);
    tcase_add_test(tc, parse_accepts_a_uri);
    tcase_add_test(tc, parse_appends_session_settings_to_the_given_options);
    tcase_add_test(tc, parse_leaves_options_alone_when_the_settings_are_off);
    tcase_add_test(tc, parse_rejects_malformed_conninfo_with_a_message);
    tcase_add_test(tc, parse_rejects_options_that_grow_too_long);
    suite_add_tcase(s, tc);
    tc = tcase_create("resolve");
    tcase_add_test(tc, localhost_expands_to_one_host_entry_per_address);
    tcase_add_test(tc, ports_are_replicated_to_match_the_expanded_hosts);
    tcase_add_test(tc, ip_literals_and_socket_paths_are_left_alone);
    tcase_add_test(tc, an_unresolvable_host_fails_with_ehostunreach_and_a_message);
    tcase_add_test(tc, an_unresolvable_host_is_dropped_when_another_host_is_usable);
    tcase_add_test(tc, more_hosts_than_supported_is_einval);
    tcase_add_test(tc, a_lookup_under_an_expired_deadline_returns_etimedout);
    tcase_add_test(tc, a_cancelled_lookup_returns_ecanceled);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
