/* server/head.c: h2o's HTTP/1 response head written by hand must be what
 * glibc's sprintf writes, byte for byte, for every value; any other format
 * must reach glibc; a head too long for the buffer must end the process
 * as fortified sprintf does; and in a process linked with it, the loader
 * must have chosen it. */
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "server/server_int.h"

/* The fortified entry point h2o calls (and head.c defines). */
int __sprintf_chk(char *s, int flag, size_t slen, const char *fmt, ...);

static const char with_length[] = "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\nContent-Length: %zu\r\n";
static const char plain[] = "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\n";

/* Both formats through __sprintf_chk against glibc's snprintf (which
 * head.c does not replace) of the same arguments. */
static void check_head(int status, const char *reason, const char *date, const char *conn, size_t length)
{
    char got[1024], want[1024];
    memset(got, 'x', sizeof(got));
    int n = __sprintf_chk(got, 1, sizeof(got), with_length, status, reason, date, conn, length);
    int m = snprintf(want, sizeof(want), with_length, status, reason, date, conn, length);
    ck_assert_int_eq(n, m);
    ck_assert_msg(memcmp(got, want, (size_t)m + 1) == 0, "status %d length %zu: \"%s\" for \"%s\"", status, length,
                  got, want);
    n = __sprintf_chk(got, 1, sizeof(got), plain, status, reason, date, conn);
    m = snprintf(want, sizeof(want), plain, status, reason, date, conn);
    ck_assert_int_eq(n, m);
    ck_assert_msg(memcmp(got, want, (size_t)m + 1) == 0, "status %d: \"%s\" for \"%s\"", status, got, want);
}

START_TEST(heads_are_what_glibc_writes_byte_for_byte)
{
    static const int statuses[] = {0, 1, 9, 10, 99, 100, 101, 200, 204, 304, 404, 499, 500, 999, 1000,
                                   -1, -999, 12345, INT_MAX, INT_MIN};
    static const char *const reasons[] = {"OK", "", "Not Found", "Request Header Fields Too Large"};
    static const char *const conns[] = {"keep-alive", "close", "upgrade", ""};
    static const size_t lengths[] = {0, 1, 9, 10, 99, 100, 65535, 4294967295u, 4294967296u, 9999999999999999999u,
                                     10000000000000000000u, SIZE_MAX - 1, SIZE_MAX};
    const char *date = "Sat, 05 Dec 2026 05:02:56 GMT";
    for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++)
        for (size_t r = 0; r < sizeof(reasons) / sizeof(reasons[0]); r++)
            for (size_t c = 0; c < sizeof(conns) / sizeof(conns[0]); c++)
                for (size_t l = 0; l < sizeof(lengths) / sizeof(lengths[0]); l++)
                    check_head(statuses[s], reasons[r], date, conns[c], lengths[l]);
    char reason[300];
    memset(reason, 'R', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    check_head(200, reason, "", "keep-alive", 42);
    /* and every power of ten and its neighbours, every status h2o sends */
    for (size_t p = 1; p != 0 && p <= SIZE_MAX / 10; p *= 10) {
        check_head(200, "OK", date, "close", p - 1);
        check_head(200, "OK", date, "close", p);
        check_head(200, "OK", date, "close", p + 1);
    }
    for (int st = 100; st <= 999; st++)
        check_head(st, server_status_reason(st), date, "keep-alive", (size_t)st * 7919u);
}
END_TEST

START_TEST(a_head_that_fits_exactly_is_written_whole)
{
    char want[256], got[256];
    int m = snprintf(want, sizeof(want), with_length, 200, "OK", "Sat, 05 Dec 2026 05:02:56 GMT", "close", (size_t)27);
    memset(got, 'x', sizeof(got));
    int n = __sprintf_chk(got, 1, (size_t)m + 1, with_length, 200, "OK", "Sat, 05 Dec 2026 05:02:56 GMT", "close",
                          (size_t)27);
    ck_assert_int_eq(n, m);
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(got[m + 1], 'x'); /* not a byte past the NUL */
}
END_TEST

/* One byte short (the NUL does not fit): glibc's fortified sprintf aborts
 * before writing; so must head.c. */
START_TEST(a_head_one_byte_too_long_for_the_buffer_aborts)
{
    char buf[256];
    int m = snprintf(buf, sizeof(buf), with_length, 200, "OK", "Sat, 05 Dec 2026 05:02:56 GMT", "close", (size_t)27);
    __sprintf_chk(buf, 1, (size_t)m, with_length, 200, "OK", "Sat, 05 Dec 2026 05:02:56 GMT", "close", (size_t)27);
}
END_TEST

START_TEST(other_formats_go_to_glibc)
{
    char got[256], want[256];
    /* unrelated, near misses of the head format (a longer one, a shorter
     * one, one with another header after Connection), and %n-free oddities */
    int n = __sprintf_chk(got, 1, sizeof(got), "%05d|%s|%x|%.3f", 42, "str", 255u, 2.5);
    int m = snprintf(want, sizeof(want), "%05d|%s|%x|%.3f", 42, "str", 255u, 2.5);
    ck_assert_int_eq(n, m);
    ck_assert_str_eq(got, want);
    n = __sprintf_chk(got, 1, sizeof(got), "HTTP/1.1 %d %s\r\n", 404, "Not Found");
    ck_assert_int_eq(n, 24);
    ck_assert_str_eq(got, "HTTP/1.1 404 Not Found\r\n");
    n = __sprintf_chk(got, 1, sizeof(got), "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\nX-Try: %d\r\n", 200, "OK", "D",
                      "close", -7);
    ck_assert_str_eq(got, "HTTP/1.1 200 OK\r\nDate: D\r\nConnection: close\r\nX-Try: -7\r\n");
    ck_assert_int_eq(n, (int)strlen(got));
    n = __sprintf_chk(got, 1, sizeof(got), "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\nContent-Length: %zu\r\nX: 1\r\n",
                      200, "OK", "D", "close", (size_t)5);
    ck_assert_str_eq(got, "HTTP/1.1 200 OK\r\nDate: D\r\nConnection: close\r\nContent-Length: 5\r\nX: 1\r\n");
    ck_assert_int_eq(n, (int)strlen(got));
    n = __sprintf_chk(got, 1, sizeof(got), "Server: %s\r\n", "h2pg");
    ck_assert_str_eq(got, "Server: h2pg\r\n");
    ck_assert_int_eq(n, 14);
    /* a NULL string: glibc's "(null)", not a crash (volatile: the compiler
     * would warn of a literal NULL for %s) */
    const char *volatile none = NULL;
    n = __sprintf_chk(got, 1, sizeof(got), plain, 200, none, "D", "close");
    m = snprintf(want, sizeof(want), plain, 200, none, "D", "close");
    ck_assert_int_eq(n, m);
    ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(the_loader_chose_this_definition)
{
    ck_assert_msg(server__head_in_use(), "__sprintf_chk in this process is not server/head.c's");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_head");
    TCase *tc = tcase_create("head");
    tcase_add_test(tc, heads_are_what_glibc_writes_byte_for_byte);
    tcase_add_test(tc, a_head_that_fits_exactly_is_written_whole);
    tcase_add_test_raise_signal(tc, a_head_one_byte_too_long_for_the_buffer_aborts, SIGABRT);
    tcase_add_test(tc, other_formats_go_to_glibc);
    tcase_add_test(tc, the_loader_chose_this_definition);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
