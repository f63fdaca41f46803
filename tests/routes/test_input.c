/* The JSON helpers of the REST handlers: depth checks, character counting,
 * e-mail rule, field validation into an errors list. */
#include <errno.h>
#include <string.h>

#include "support/aio_check.h"
#include "routes/input.h"

START_TEST(json_depth_counts_brackets_outside_strings)
{
    ck_assert_int_eq(routes_json_depth("{}", 2), 1);
    ck_assert_int_eq(routes_json_depth("{\"a\":[1,{\"b\":[]}]}", 17), 4);
    const char *s = "{\"a\":\"[[[[{{{\\\"]]]\"}";
    ck_assert_int_eq(routes_json_depth(s, strlen(s)), 1); /* brackets and escaped quotes inside a string */
    char deep[100001];
    memset(deep, '[', sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = '\0';
    ck_assert_int_eq(routes_json_depth(deep, strlen(deep)), 100000);
    ck_assert_int_eq(routes_json_depth("", 0), 0);
}
END_TEST

START_TEST(length_counts_unicode_characters_not_bytes)
{
    ck_assert_uint_eq(routes_utf8_chars("abc", 3), 3);
    ck_assert_uint_eq(routes_utf8_chars("\xc3\xa9", 2), 1);             /* é */
    ck_assert_uint_eq(routes_utf8_chars("\xe3\x83\x95", 3), 1);         /* フ */
    ck_assert_uint_eq(routes_utf8_chars("\xf0\x9f\x98\x80x", 5), 2);    /* 😀x */
}
END_TEST

START_TEST(email_needs_exactly_one_at_with_text_around_it)
{
    ck_assert(routes_valid_email("a@b", 3));
    ck_assert(!routes_valid_email("ab", 2));
    ck_assert(!routes_valid_email("@b", 2));
    ck_assert(!routes_valid_email("a@", 2));
    ck_assert(!routes_valid_email("a@b@c", 5));
    char long_email[400];
    memset(long_email, 'a', sizeof(long_email));
    long_email[10] = '@';
    ck_assert(routes_valid_email(long_email, 320));
    ck_assert(!routes_valid_email(long_email, 321));
}
END_TEST

/* API.md: no spaces or control characters, anywhere. */
START_TEST(email_has_no_spaces_or_control_characters)
{
    static const char *const bad[] = {
        "\n@\n", "a\n@b", "a@b\r", "a\t@b", "a\x01@b", "a\x1f@b", "a\x7f@b", /* C0 and DEL */
        " a@b", "a @b", "a@ b", "a@b ", "a b@c",                                   /* the space */
        "a\xc2\x80@b", "a\xc2\x85@b", "a@b\xc2\x9f",                             /* C1 controls (U+0085 too) */
        "a\xc2\xa0@b", "a@b\xe1\x9a\x80", "a\xe2\x80\x80@b", "a\xe2\x80\x8a@b", /* NBSP, U+1680, U+2000, U+200A */
        "a@b\xe2\x80\xa8", "a@b\xe2\x80\xa9", "a\xe2\x80\xaf@b", "a\xe2\x81\x9f@b",
        ("a@\xe3\x80\x80" "b"), /* split, or "\x80b" would be one escape */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(!routes_valid_email(bad[i], strlen(bad[i])), "accepted email #%zu", i);
        ck_assert_str_eq(routes_email_problem(bad[i], strlen(bad[i])), "must not contain spaces or control characters");
    }
    /* a NUL byte is a control character too */
    ck_assert(!routes_valid_email("a\0@b", 4));
    /* invalid UTF-8 is no email (bodies never hold it: they are refused before) */
    ck_assert(!routes_valid_email("a\xff@b", 4));
    ck_assert(!routes_valid_email("a\xc3@b", 4));
    /* what is not a space or a control is fine: letters of any script, a
     * zero-width joiner (a format character), symbols, any case */
    static const char *const good[] = {"U1@EXAMPLE.COM", ("\xc3\xa9l\xc3\xa8ve@\xc3\xa9" "cole.fr"),
                                       "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90", "a\xe2\x80\x8d@b",
                                       "o'brien+tag@x.test", "\"quoted\"@x"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(routes_valid_email(good[i], strlen(good[i])), "refused email #%zu", i);
    ck_assert_ptr_null(routes_email_problem("a@b", 3));
    ck_assert_str_eq(routes_email_problem("a@b@c", 5), "must contain exactly one @ with text on both sides");
}
END_TEST

START_TEST(a_user_with_a_bad_email_gets_one_error_saying_why)
{
    json_t *errors = json_array();
    routes_user_input in;
    json_t *body = json_pack("{s:s, s:s}", "name", "x", "email", "a b@c");
    ck_assert(!routes_input_user(body, true, &in, errors));
    ck_assert_uint_eq(json_array_size(errors), 1);
    json_t *e = json_array_get(errors, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "email");
    ck_assert_str_eq(json_string_value(json_object_get(e, "message")), "must not contain spaces or control characters");
    ck_assert_ptr_null(in.email);
    json_decref(body);
    body = json_pack("{s:s}", "email", "\x7f@x");
    ck_assert(!routes_input_user(body, false, &in, errors));
    ck_assert_uint_eq(json_array_size(errors), 2);
    json_decref(body);
    body = json_pack("{s:s}", "email", "Mixed.Case@Example.COM");
    ck_assert(routes_input_user(body, false, &in, errors));
    ck_assert_uint_eq(json_array_size(errors), 2);
    ck_assert_str_eq(in.email, "Mixed.Case@Example.COM"); /* kept as sent: only uniqueness ignores case */
    json_decref(body);
    json_decref(errors);
}
END_TEST

START_TEST(field_readers_collect_errors_by_field)
{
    json_t *body = json_pack("{s:s, s:i, s:f, s:s, s:n, s:I}", "name", "", "count", 5, "real", 1.5, "text", "x", "nothing",
                             "big", (json_int_t)1 << 40);
    json_t *errors = json_array();
    const char *s;
    size_t len;
    int64_t v;
    ck_assert(!routes_field_string(body, "name", true, 1, 200, errors, &s, &len)); /* empty */
    ck_assert(!routes_field_string(body, "count", true, 1, 200, errors, &s, &len)); /* wrong type */
    ck_assert(!routes_field_string(body, "missing", true, 1, 200, errors, &s, &len));
    ck_assert(!routes_field_string(body, "missing", false, 1, 200, errors, &s, &len)); /* optional: no error */
    ck_assert(!routes_field_string(body, "nothing", false, 1, 200, errors, &s, &len)); /* null = absent */
    ck_assert(routes_field_string(body, "text", true, 1, 200, errors, &s, &len));
    ck_assert_str_eq(s, "x");
    ck_assert(!routes_field_int(body, "real", true, 0, 10, errors, &v));
    ck_assert(!routes_field_int(body, "count", true, 6, 10, errors, &v));
    ck_assert(routes_field_int(body, "count", true, 5, 5, errors, &v));
    ck_assert_int_eq(v, 5);
    ck_assert(routes_field_int(body, "big", true, 1, INT64_MAX, errors, &v));
    ck_assert_uint_eq(json_array_size(errors), 5);
    const char *fields[] = {"name", "count", "missing", "real", "count"};
    for (size_t i = 0; i < 5; i++) {
        json_t *e = json_array_get(errors, i);
        ck_assert_str_eq(json_string_value(json_object_get(e, "field")), fields[i]);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(e, "message")));
    }
    json_decref(errors);
    json_decref(body);
}
END_TEST

START_TEST(a_body_with_a_nul_byte_is_malformed)
{
    /* jansson alone loads these: it skips a NUL after a number or a literal
     * (found by fuzz/fuzz_body.c) */
    static const char *bodies[] = {"{\"a\":1\0}", "{\"a\":true\0}", "[1\0]", "{\"a\":\"x\0\"}"};
    static const size_t lens[] = {8, 11, 4, 10};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        json_t *v = (json_t *)1;
        char detail[128];
        ck_assert_int_eq(routes_input_body("application/json", bodies[i], lens[i], &v, detail, sizeof(detail)), -EINVAL);
        ck_assert_ptr_null(v);
        ck_assert_msg(strstr(detail, "NUL") != NULL, "%s", detail);
    }
    json_t *v;
    char detail[128];
    ck_assert_int_eq(routes_input_body("application/json", "{\"a\":1}", 7, &v, detail, sizeof(detail)), 0);
    json_decref(v);
    ck_assert_int_eq(routes_input_body("text/plain", "{}", 2, &v, detail, sizeof(detail)), -ENOTSUP);
    ck_assert_int_eq(routes_input_body(NULL, NULL, 0, &v, detail, sizeof(detail)), -ENOTSUP);
    ck_assert_int_eq(routes_input_body("application/json", NULL, 0, &v, detail, sizeof(detail)), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("routes_input");
    TCase *tc = tcase_create("input");
    tcase_add_test(tc, json_depth_counts_brackets_outside_strings);
    tcase_add_test(tc, length_counts_unicode_characters_not_bytes);
    tcase_add_test(tc, email_needs_exactly_one_at_with_text_around_it);
    tcase_add_test(tc, email_has_no_spaces_or_control_characters);
    tcase_add_test(tc, a_user_with_a_bad_email_gets_one_error_saying_why);
    tcase_add_test(tc, field_readers_collect_errors_by_field);
    tcase_add_test(tc, a_body_with_a_nul_byte_is_malformed);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
