/* TRUSTED_PROXIES and forwarded-header resolution. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "support/aio_check.h"
#include "server/proxy.h"

static server_proxies *parse(const char *list)
{
    server_proxies *p;
    char err[256];
    ck_assert_int_eq(server_proxies_parse(list, &p, err, sizeof(err)), 0);
    return p;
}

START_TEST(cidr_ranges_match_v4_v6_and_mapped_addresses)
{
    server_proxies *p = parse(" 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32, ::1");
    ck_assert(server_proxies_trusts(p, "10.1.2.3"));
    ck_assert(server_proxies_trusts(p, "192.168.1.7"));
    ck_assert(!server_proxies_trusts(p, "192.168.1.8"));
    ck_assert(!server_proxies_trusts(p, "11.0.0.1"));
    ck_assert(server_proxies_trusts(p, "2001:db8:1::5"));
    ck_assert(!server_proxies_trusts(p, "2001:db9::5"));
    ck_assert(server_proxies_trusts(p, "::1"));
    ck_assert(server_proxies_trusts(p, "::ffff:10.9.9.9")); /* IPv4-mapped */
    ck_assert(!server_proxies_trusts(p, "not-an-ip"));
    ck_assert(!server_proxies_trusts(p, ""));
    server_proxies_free(p);
    p = parse("172.16.0.0/12");
    ck_assert(server_proxies_trusts(p, "172.31.255.255"));
    ck_assert(!server_proxies_trusts(p, "172.32.0.0"));
    server_proxies_free(p);
    /* an IPv4-mapped range takes an IPv6 prefix (found by fuzz/fuzz_forwarded.c) */
    p = parse("::ffff:10.0.0.0/104, ::ffff:192.0.2.1/128");
    ck_assert(server_proxies_trusts(p, "10.200.0.1"));
    ck_assert(server_proxies_trusts(p, "::ffff:10.1.1.1"));
    ck_assert(!server_proxies_trusts(p, "11.0.0.1"));
    ck_assert(server_proxies_trusts(p, "192.0.2.1"));
    ck_assert(!server_proxies_trusts(p, "192.0.2.2"));
    server_proxies_free(p);
}
END_TEST

START_TEST(bad_entries_are_rejected_naming_the_variable)
{
    const char *bad[] = {"10.0.0.0/33", "1.2.3", "::1/129", "10.0.0.0/", "10.0.0.0/8x", "example.com", "1.2.3.4/-1",
                         "::ffff:10.0.0.0/95", "::ffff:10.0.0.0/129"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        server_proxies *p = NULL;
        char err[256] = "";
        ck_assert_int_eq(server_proxies_parse(bad[i], &p, err, sizeof(err)), -EINVAL);
        ck_assert_msg(strstr(err, "TRUSTED_PROXIES") != NULL, "%s", err);
    }
    server_proxies *p = parse("");
    ck_assert(!server_proxies_trusts(p, "127.0.0.1")); /* empty list: nobody is trusted */
    server_proxies_free(p);
}
END_TEST

START_TEST(an_untrusted_peer_is_the_client_whatever_the_headers_say)
{
    server_proxies *p = parse("10.0.0.0/8");
    server_client c;
    server_proxies_resolve(p, "203.0.113.9", "http", "for=1.1.1.1;proto=https", "1.1.1.1", "https", &c);
    ck_assert_str_eq(c.addr, "203.0.113.9");
    ck_assert_str_eq(c.proto, "http");
    server_proxies_free(p);
}
END_TEST

START_TEST(x_forwarded_for_is_walked_from_the_right_skipping_trusted_hops)
{
    server_proxies *p = parse("10.0.0.0/8");
    server_client c;
    /* spoofed, real client, trusted inner proxy */
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "6.6.6.6, 198.51.100.4, 10.0.0.9", "https", &c);
    ck_assert_str_eq(c.addr, "198.51.100.4");
    ck_assert_str_eq(c.proto, "https");
    /* ports and brackets are dropped */
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "[2001:db8::1]:443", NULL, &c);
    ck_assert_str_eq(c.addr, "2001:db8::1");
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "198.51.100.4:5000", NULL, &c);
    ck_assert_str_eq(c.addr, "198.51.100.4");
    /* every hop trusted: the leftmost */
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "10.1.1.1, 10.2.2.2", NULL, &c);
    ck_assert_str_eq(c.addr, "10.1.1.1");
    /* the nearest proxy's X-Forwarded-Proto wins */
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "198.51.100.4", "http, https", &c);
    ck_assert_str_eq(c.proto, "https");
    /* however much space pads a hop, it is read whole (found by fuzz/fuzz_forwarded.c) */
    char padded[400];
    snprintf(padded, sizeof(padded), "198.51.100.4,%200s10.0.0.9 ", "");
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, padded, NULL, &c);
    ck_assert_str_eq(c.addr, "198.51.100.4");
    snprintf(padded, sizeof(padded), "%200s198.51.100.77", "");
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, padded, NULL, &c);
    ck_assert_str_eq(c.addr, "198.51.100.77");
    server_proxies_free(p);
}
END_TEST

START_TEST(forwarded_is_preferred_and_parsed_as_rfc_7239)
{
    server_proxies *p = parse("10.0.0.0/8");
    server_client c;
    server_proxies_resolve(p, "10.0.0.2", "http", "for=192.0.2.60;proto=https;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
                           "9.9.9.9", NULL, &c);
    ck_assert_str_eq(c.addr, "2001:db8:cafe::17");
    server_proxies_resolve(p, "10.0.0.2", "http", "for=192.0.2.60;proto=https, for=10.3.3.3", NULL, NULL, &c);
    ck_assert_str_eq(c.addr, "192.0.2.60");
    ck_assert_str_eq(c.proto, "https");
    server_proxies_resolve(p, "10.0.0.2", "http", "For=\"_hidden\", for=unknown", NULL, NULL, &c);
    ck_assert_str_eq(c.addr, "unknown");
    server_proxies_free(p);
}
END_TEST

START_TEST(malformed_headers_leave_the_peer_as_the_client)
{
    server_proxies *p = parse("10.0.0.0/8");
    server_client c;
    const char *bad_fwd[] = {"proto=https", "for=", ";;;", ",,,", "for=\"unterminated"};
    for (size_t i = 0; i < sizeof(bad_fwd) / sizeof(bad_fwd[0]); i++) {
        server_proxies_resolve(p, "10.0.0.2", "http", bad_fwd[i], NULL, NULL, &c);
        ck_assert(strlen(c.addr) < sizeof(c.addr));
    }
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "  , 1.2.3.4", NULL, &c);
    ck_assert_str_eq(c.addr, "10.0.0.2");
    char many[2000] = "";
    for (int i = 0; i < 100; i++)
        strcat(many, "10.1.1.1,");
    strcat(many, "1.2.3.4");
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, many, NULL, &c); /* over 64 hops: ignored */
    ck_assert_str_eq(c.addr, "10.0.0.2");
    server_proxies_resolve(p, "10.0.0.2", "http", NULL, "\"<script>\"", "javascript", &c);
    ck_assert_str_eq(c.addr, "script"); /* cleaned to a safe token */
    ck_assert_str_eq(c.proto, "http");
    server_proxies_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("server_proxy");
    TCase *tc = tcase_create("proxy");
    tcase_add_test(tc, cidr_ranges_match_v4_v6_and_mapped_addresses);
    tcase_add_test(tc, bad_entries_are_rejected_naming_the_variable);
    tcase_add_test(tc, an_untrusted_peer_is_the_client_whatever_the_headers_say);
    tcase_add_test(tc, x_forwarded_for_is_walked_from_the_right_skipping_trusted_hops);
    tcase_add_test(tc, forwarded_is_preferred_and_parsed_as_rfc_7239);
    tcase_add_test(tc, malformed_headers_leave_the_peer_as_the_client);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
