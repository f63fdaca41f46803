/* Query-string lookup with percent-decoding, and strict decimal parsing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "support/aio_check.h"
#include "server/parse.h"

/* Looks up name in a heap copy of q without a terminator, so that a read past
 * the end is an out-of-bounds read a sanitizer build reports. */
static int get_n(const char *q, size_t qlen, const char *name, char *out, size_t outlen, size_t *len)
{
    char *copy = malloc(qlen ? qlen : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, q, qlen);
    int rc = server_parse_query_param(copy, qlen, name, out, outlen, len);
    free(copy);
    return rc;
}

static int get(const char *q, const char *name, char *out, size_t outlen, size_t *len)
{
    return get_n(q, strlen(q), name, out, outlen, len);
}

START_TEST(a_present_parameter_is_found_and_an_absent_one_is_enoent)
{
    char out[64];
    size_t len = 99;
    ck_assert_int_eq(get("limit=20&after=5", "limit", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "20");
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(get("limit=20&after=5", "after", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "5");
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(get("limit=20&after=5", "queries", out, sizeof(out), &len), -ENOENT);
    /* whole names only */
    ck_assert_int_eq(get("limits=20&xafter=5", "limit", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("limit=20", "limi", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("Limit=20", "limit", out, sizeof(out), &len), -ENOENT);
    /* a name that only appears in a value */
    ck_assert_int_eq(get("x=limit", "limit", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("x=a=b", "x", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "a=b");
    ck_assert_int_eq(get("after=5", "after", out, sizeof(out), NULL), 0);
}
END_TEST

START_TEST(the_empty_query_has_no_parameters)
{
    char out[8] = "junk";
    size_t len;
    ck_assert_int_eq(server_parse_query_param(NULL, 0, "limit", out, sizeof(out), &len), -ENOENT);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(server_parse_query_param("limit=1", 0, "limit", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("&", "limit", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("&&&", "", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("=", "", out, sizeof(out), &len), 0);
    ck_assert_uint_eq(len, 0);
}
END_TEST

START_TEST(the_first_occurrence_wins)
{
    char out[16];
    size_t len;
    ck_assert_int_eq(get("a=1&a=2", "a", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(get("a=&a=2", "a", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "");
    /* even when the first is bad: a later one does not rescue it */
    ck_assert_int_eq(get("a=%zz&a=2", "a", out, sizeof(out), &len), -EINVAL);
    /* an encoded name is the same name */
    ck_assert_int_eq(get("%61=1&a=2", "a", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
}
END_TEST

START_TEST(names_without_an_equals_sign_have_an_empty_value)
{
    char out[16] = "junk";
    size_t len = 99;
    ck_assert_int_eq(get("a&b=1", "a", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "");
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(get("a&b=1", "b", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(get("b=1&a", "a", out, sizeof(out), &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(get("a=", "a", out, sizeof(out), &len), 0);
    ck_assert_uint_eq(len, 0);
}
END_TEST

START_TEST(values_and_names_are_percent_decoded)
{
    char out[64];
    size_t len;
    ck_assert_int_eq(get("q=hello+world", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "hello world");
    ck_assert_int_eq(get("q=a%2Bb%20c%2bd", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "a+b c+d");
    ck_assert_int_eq(get("q=%41%42%43", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "ABC");
    ck_assert_int_eq(get("q=%26%3D", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "&=");
    ck_assert_int_eq(get("q=%c3%a9", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "\xc3\xa9");
    ck_assert_uint_eq(len, 2);
    /* decoding happens once: "%2541" is "%41", not "A" */
    ck_assert_int_eq(get("q=%2541", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "%41");

    ck_assert_int_eq(get("my+name=1&my%20name=2", "my name", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(get("a%26b=1", "a&b", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(get("a%3Db=1", "a=b", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
}
END_TEST

START_TEST(a_malformed_escape_or_a_nul_is_einval)
{
    char out[16] = "junk";
    size_t len;
    const char *bad[] = {"q=%", "q=%4", "q=%zz", "q=%4g", "q=%g4", "q=1%", "q=%%41", "q=%00", "q=a%00b", "q=% 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(get(bad[i], "q", out, sizeof(out), &len) == -EINVAL, "query \"%s\"", bad[i]);
        ck_assert_str_eq(out, "");
    }
    /* a raw NUL byte inside the buffer counts too */
    ck_assert_int_eq(get_n("q=a\0b", 5, "q", out, sizeof(out), &len), -EINVAL);
    /* a truncated escape at the very end must not read past the buffer */
    ck_assert_int_eq(get_n("q=%4", 4, "q", out, sizeof(out), &len), -EINVAL);
    ck_assert_int_eq(get_n("q=%", 3, "q", out, sizeof(out), &len), -EINVAL);
    /* a bad escape elsewhere does not spoil a good parameter */
    ck_assert_int_eq(get("x=%zz&q=1", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(get("%zz=1&q=2", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "2");
    /* a name that cannot be decoded matches nothing */
    ck_assert_int_eq(get("q%=1", "q", out, sizeof(out), &len), -ENOENT);
    ck_assert_int_eq(get("q%00=1", "q", out, sizeof(out), &len), -ENOENT);
}
END_TEST

START_TEST(a_value_too_long_for_the_buffer_is_e2big)
{
    char out[4] = "junk";
    size_t len = 99;
    ck_assert_int_eq(get("q=abc", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "abc");
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(get("q=abcd", "q", out, sizeof(out), &len), -E2BIG);
    ck_assert_str_eq(out, "");
    /* the decoded length counts, not the raw one */
    ck_assert_int_eq(get("q=%41%42%43", "q", out, sizeof(out), &len), 0);
    ck_assert_str_eq(out, "ABC");
    ck_assert_int_eq(get("q=+++%20", "q", out, sizeof(out), &len), -E2BIG);
    /* a malformed value is malformed whatever the buffer */
    ck_assert_int_eq(get("q=abcd%zz", "q", out, sizeof(out), &len), -EINVAL);
    /* a one-byte buffer holds only the empty value */
    char one[1];
    ck_assert_int_eq(get("q=", "q", one, sizeof(one), &len), 0);
    ck_assert_int_eq(one[0], '\0');
    ck_assert_int_eq(get("q=a", "q", one, sizeof(one), &len), -E2BIG);

    /* a 100 KB value into a small buffer */
    size_t big = 100 * 1024;
    char *q = malloc(big);
    ck_assert_ptr_nonnull(q);
    memcpy(q, "q=", 2);
    memset(q + 2, 'x', big - 2);
    char out64[64];
    ck_assert_int_eq(get_n(q, big, "q", out64, sizeof(out64), &len), -E2BIG);
    ck_assert_int_eq(get_n(q, big, "r", out64, sizeof(out64), &len), -ENOENT);
    free(q);
}
END_TEST

/* Random short queries over the bytes that matter: the answer is one of the
 * documented ones and a success fits the buffer. */
START_TEST(random_queries_give_documented_answers)
{
    static const char alphabet[] = "qa=&%+4Gz0\0";
    unsigned seed = 7;
    char q[24], out[6];
    for (int i = 0; i < 200000; i++) {
        size_t qlen = (size_t)rand_r(&seed) % sizeof(q);
        for (size_t k = 0; k < qlen; k++)
            q[k] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        size_t len = 99;
        int rc = get_n(q, qlen, "q", out, sizeof(out), &len);
        ck_assert(rc == 0 || rc == -ENOENT || rc == -EINVAL || rc == -E2BIG);
        if (rc == 0) {
            ck_assert_uint_lt(len, sizeof(out));
            ck_assert_uint_eq(strlen(out), len);
        } else {
            ck_assert_str_eq(out, "");
        }
    }
}
END_TEST

static int parse(const char *s, bool neg, int64_t *v) { return server_parse_int64(s, strlen(s), neg, v); }

START_TEST(int64_parsing_is_strict)
{
    int64_t v = 0;
    ck_assert_int_eq(parse("0", false, &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(parse("42", false, &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(parse("007", false, &v), 0);
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(parse("9223372036854775807", false, &v), 0);
    ck_assert_int_eq(v, INT64_MAX);
    ck_assert_int_eq(parse("00000000009223372036854775807", false, &v), 0);
    ck_assert_int_eq(v, INT64_MAX);

    v = 5;
    const char *bad[] = {"", " 1", "1 ", "+1", "0x10", "1e3", "1.0", "1,000", "-", "--1", "1-", "x", " ", "\t1", "١"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse(bad[i], true, &v) == -EINVAL, "\"%s\"", bad[i]);
        ck_assert_int_eq(v, 5);
    }
    /* length-delimited: a NUL or what follows len is not part of the number */
    ck_assert_int_eq(server_parse_int64("1\0", 2, false, &v), -EINVAL);
    ck_assert_int_eq(server_parse_int64("123", 2, false, &v), 0);
    ck_assert_int_eq(v, 12);
    ck_assert_int_eq(server_parse_int64(NULL, 0, false, &v), -EINVAL);
}
END_TEST

START_TEST(int64_overflow_is_erange)
{
    int64_t v = 5;
    ck_assert_int_eq(parse("9223372036854775808", false, &v), -ERANGE);
    ck_assert_int_eq(parse("9223372036854775810", false, &v), -ERANGE);
    ck_assert_int_eq(parse("18446744073709551616", false, &v), -ERANGE);
    ck_assert_int_eq(parse("99999999999999999999999999", false, &v), -ERANGE);
    ck_assert_int_eq(parse("-9223372036854775809", true, &v), -ERANGE);
    ck_assert_int_eq(v, 5);
    ck_assert_int_eq(parse("-9223372036854775808", true, &v), 0);
    ck_assert_int_eq(v, INT64_MIN);
    /* malformed wins over out of range */
    ck_assert_int_eq(parse("99999999999999999999x", false, &v), -EINVAL);
}
END_TEST

START_TEST(a_minus_sign_needs_allow_negative)
{
    int64_t v = 5;
    ck_assert_int_eq(parse("-1", false, &v), -EINVAL);
    ck_assert_int_eq(v, 5);
    ck_assert_int_eq(parse("-1", true, &v), 0);
    ck_assert_int_eq(v, -1);
    ck_assert_int_eq(parse("-0", true, &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(parse("-0", false, &v), -EINVAL);
    ck_assert_int_eq(parse("-9223372036854775807", true, &v), 0);
    ck_assert_int_eq(v, -INT64_MAX);
}
END_TEST

static int parse_id(const char *s, int64_t *v) { return server_parse_id(s, strlen(s), v); }

START_TEST(an_id_is_a_positive_int64)
{
    int64_t v = 5;
    ck_assert_int_eq(parse_id("1", &v), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(parse_id("9223372036854775807", &v), 0);
    ck_assert_int_eq(v, INT64_MAX);
    v = 5;
    ck_assert_int_eq(parse_id("0", &v), -EINVAL);
    ck_assert_int_eq(parse_id("000", &v), -EINVAL);
    ck_assert_int_eq(parse_id("-1", &v), -EINVAL);
    ck_assert_int_eq(parse_id("-0", &v), -EINVAL);
    ck_assert_int_eq(parse_id("", &v), -EINVAL);
    ck_assert_int_eq(parse_id("+1", &v), -EINVAL);
    ck_assert_int_eq(parse_id("1 ", &v), -EINVAL);
    ck_assert_int_eq(parse_id("0x10", &v), -EINVAL);
    ck_assert_int_eq(parse_id("1e3", &v), -EINVAL);
    ck_assert_int_eq(parse_id("me", &v), -EINVAL);
    ck_assert_int_eq(parse_id("%31", &v), -EINVAL);
    ck_assert_int_eq(parse_id("9223372036854775808", &v), -ERANGE);
    ck_assert_int_eq(v, 5);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_query");
    TCase *tc = tcase_create("query");
    tcase_add_test(tc, a_present_parameter_is_found_and_an_absent_one_is_enoent);
    tcase_add_test(tc, the_empty_query_has_no_parameters);
    tcase_add_test(tc, the_first_occurrence_wins);
    tcase_add_test(tc, names_without_an_equals_sign_have_an_empty_value);
    tcase_add_test(tc, values_and_names_are_percent_decoded);
    tcase_add_test(tc, a_malformed_escape_or_a_nul_is_einval);
    tcase_add_test(tc, a_value_too_long_for_the_buffer_is_e2big);
    tcase_add_test(tc, random_queries_give_documented_answers);
    suite_add_tcase(s, tc);
    TCase *tn = tcase_create("numbers");
    tcase_add_test(tn, int64_parsing_is_strict);
    tcase_add_test(tn, int64_overflow_is_erange);
    tcase_add_test(tn, a_minus_sign_needs_allow_negative);
    tcase_add_test(tn, an_id_is_a_positive_int64);
    suite_add_tcase(s, tn);
    return s;
}

int main(void) { return run_suite(suite()); }
