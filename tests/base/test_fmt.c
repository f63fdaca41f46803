/* Formatting without printf (base/fmt.h): integers, signed and unsigned,
 * against snprintf over the whole range and its edges, HTML escaping against
 * a byte-by-byte reference over every byte value and random strings. */
#include <check.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/fmt.h"
#include "support/suite.h"

/* got holds what a writer wrote (len bytes, said it) into memory filled with
 * '#': the same as printf's want, and nothing past it. */
static void expect_written(const char *want, const char *got, size_t len)
{
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_msg(memcmp(got, want, len) == 0, "%s written as %.*s", want, (int)len, got);
    ck_assert_int_eq(got[len], '#');
}

static void expect_i64(int64_t v)
{
    char want[32], got[BASE_FMT_I64_MAX + 8];
    memset(got, '#', sizeof(got));
    snprintf(want, sizeof(want), "%" PRId64, v);
    expect_written(want, got, base_fmt_i64(got, v));
}

static void expect_u64(uint64_t v)
{
    char want[32], got[BASE_FMT_U64_MAX + 8];
    memset(got, '#', sizeof(got));
    snprintf(want, sizeof(want), "%" PRIu64, v);
    expect_written(want, got, base_fmt_u64(got, v));
}

START_TEST(integers_read_as_printf_writes_them)
{
    static const int64_t edges[] = {0,         1,          -1,        9,         10,        -10,
                                    99,        100,        999999999, 1000000000, INT32_MAX, INT32_MIN,
                                    INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        expect_i64(edges[i]);
    /* every power of ten and its neighbours, both signs */
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10)
        for (int64_t d = -1; d <= 1; d++) {
            expect_i64(p + d);
            expect_i64(-(p + d));
        }
    srand(7);
    for (int i = 0; i < 100000; i++) {
        int64_t v = (int64_t)(((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand());
        expect_i64(i % 2 ? v : -v);
        expect_i64(v >> (i % 63));
        expect_u64((uint64_t)v << (i % 2));
    }
    /* unsigned: beyond INT64_MAX up to UINT64_MAX (a Content-Length) */
    static const uint64_t uedges[] = {0, 9, 10, 99, 100, (uint64_t)INT64_MAX + 1, 10000000000000000000u,
                                      9999999999999999999u, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof(uedges) / sizeof(uedges[0]); i++)
        expect_u64(uedges[i]);
    for (uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) {
        expect_u64(p - 1);
        expect_u64(p);
        expect_u64(p + 1);
    }
}
END_TEST

static size_t reference_escape(char *out, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep = s[i] == '&' ? "&amp;" : s[i] == '<' ? "&lt;" : s[i] == '>' ? "&gt;" : s[i] == '"' ? "&quot;"
                          : s[i] == '\'' ? "&#39;" : NULL;
        if (rep == NULL) {
            out[n++] = s[i];
        } else {
            memcpy(out + n, rep, strlen(rep));
            n += strlen(rep);
        }
    }
    return n;
}

static void expect_escape(const char *s, size_t len)
{
    char *want = malloc(BASE_HTML_ESCAPE_MAX(len) + 1), *got = malloc(BASE_HTML_ESCAPE_MAX(len) + 1);
    ck_assert(want != NULL && got != NULL);
    size_t wn = reference_escape(want, s, len);
    ck_assert_uint_le(wn, BASE_HTML_ESCAPE_MAX(len));
    got[BASE_HTML_ESCAPE_MAX(len)] = '#';
    size_t gn = base_html_escape(got, s, len);
    ck_assert_uint_eq(gn, wn);
    ck_assert(memcmp(got, want, wn) == 0);
    ck_assert_int_eq(got[BASE_HTML_ESCAPE_MAX(len)], '#');
    free(want);
    free(got);
}

START_TEST(html_text_escapes_the_five_specials_and_keeps_every_other_byte)
{
    char out[128];
    const char *s = "<script>alert(\"x\" & 'y')</script>";
    size_t n = base_html_escape(out, s, strlen(s));
    ck_assert_str_eq((out[n] = 0, out), "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;");
    ck_assert_uint_eq(base_html_escape(out, "", 0), 0);
    n = base_html_escape(out, "フレームワーク", strlen("フレームワーク"));
    ck_assert_str_eq((out[n] = 0, out), "フレームワーク"); /* UTF-8 as it is */
    /* every byte value alone, and all of them in a row */
    char all[256];
    for (int b = 0; b < 256; b++) {
        all[b] = (char)b;
        expect_escape(&all[b], 1);
    }
    expect_escape(all, sizeof(all));
    /* long plain runs (skipped 8 bytes at a time) with one special at every
     * position and every length around a word boundary */
    char plain[64];
    for (size_t len = 0; len <= sizeof(plain); len++)
        for (size_t at = 0; at <= len; at++)
            for (const char *sp = "&<>\"'"; *sp; sp++) {
                memset(plain, 'x', sizeof(plain));
                if (at < len)
                    plain[at] = *sp;
                expect_escape(plain, len);
            }
    /* random strings dense in specials, including all specials (the worst case) */
    static const char pool[] = "&<>\"'ab\x00\xff";
    srand(11);
    char buf[200];
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand() % (int)sizeof(buf));
        for (size_t k = 0; k < len; k++)
            buf[k] = i % 5 == 0 ? '"' : pool[rand() % (int)(sizeof(pool) - 1)];
        expect_escape(buf, len);
    }
}
END_TEST

/* out is s as a JSON string: a JSON parser reads s back, byte for byte. */
static void expect_json_string(const char *s, size_t len)
{
    char out[BASE_JSON_STRING_MAX(256)];
    ck_assert_uint_le(len, 256);
    size_t n = base_json_string(out, s, len);
    ck_assert_uint_le(n, BASE_JSON_STRING_MAX(len));
    json_error_t err;
    json_t *v = json_loadb(out, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    ck_assert_msg(v != NULL, "not JSON: %.*s (%s)", (int)n, out, err.text);
    ck_assert(json_is_string(v));
    ck_assert_uint_eq(json_string_length(v), len);
    ck_assert_mem_eq(json_string_value(v), s, len);
    json_decref(v);
}

START_TEST(json_strings_escape_quotes_backslashes_and_controls_and_read_back)
{
    char out[128];
    size_t n = base_json_string(out, "Hello, World!", 13);
    ck_assert_str_eq((out[n] = 0, out), "\"Hello, World!\"");
    n = base_json_string(out, "a\"b\\c\nd\te\x01\x1f\b\f\r", 14);
    ck_assert_str_eq((out[n] = 0, out), "\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\\b\\f\\r\"");
    n = base_json_string(out, "", 0);
    ck_assert_str_eq((out[n] = 0, out), "\"\"");
    n = base_json_string(out, "フレーム/</", strlen("フレーム/</"));
    ck_assert_str_eq((out[n] = 0, out), "\"フレーム/</\""); /* UTF-8 and '/' as they are */
    /* every control character alone; random strings of specials and UTF-8 */
    for (int b = 0; b < 0x20; b++) {
        char c = (char)b;
        expect_json_string(&c, 1);
    }
    static const char *const pool[] = {"\"", "\\", "\n", "\x01", "\x1f", "a", "Z", "é", "€", "😀", "/", "\x7f"};
    srand(7);
    char buf[256];
    for (int i = 0; i < 20000; i++) {
        size_t len = 0, want = (size_t)(rand() % 60);
        for (size_t k = 0; k < want; k++) {
            const char *p = pool[rand() % (int)(sizeof(pool) / sizeof(pool[0]))];
            memcpy(buf + len, p, strlen(p));
            len += strlen(p);
        }
        expect_json_string(buf, len);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base_fmt");
    TCase *tc = tcase_create("fmt");
    tcase_add_test(tc, integers_read_as_printf_writes_them);
    tcase_add_test(tc, html_text_escapes_the_five_specials_and_keeps_every_other_byte);
    tcase_add_test(tc, json_strings_escape_quotes_backslashes_and_controls_and_read_back);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
