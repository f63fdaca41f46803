/* Process logging (base/log.h): the JSON string escaping every log line and
 * access-log field goes through, and level filtering. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "support/suite.h"

/* base_log_json_escape of a whole C string into a roomy buffer; checks the
 * returned length against what was written. */
static const char *escape(const char *s, int len)
{
    static char out[1024];
    int n = base_log_json_escape(out, (int)sizeof(out), s, len);
    ck_assert_int_eq(n, (int)strlen(out));
    return out;
}

#define ESC(s) escape((s), (int)(sizeof(s) - 1))

START_TEST(plain_text_and_utf8_pass_through)
{
    ck_assert_str_eq(ESC(""), "");
    ck_assert_str_eq(ESC("GET /users/42"), "GET /users/42");
    ck_assert_str_eq(ESC("caf\xc3\xa9 \xe3\x83\x95 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe3\x83\x95 \xf0\x9f\x98\x80");
    ck_assert_str_eq(ESC("it's / ok"), "it's / ok"); /* neither ' nor / needs escaping */
}
END_TEST

START_TEST(quotes_and_backslashes_are_escaped)
{
    ck_assert_str_eq(ESC("say \"hi\""), "say \\\"hi\\\"");
    ck_assert_str_eq(ESC("C:\\path\\"), "C:\\\\path\\\\");
    ck_assert_str_eq(ESC("\\\""), "\\\\\\\"");
}
END_TEST

START_TEST(control_bytes_become_unicode_escapes)
{
    ck_assert_str_eq(ESC("a\nb"), "a\\u000ab");
    ck_assert_str_eq(ESC("\t\r"), "\\u0009\\u000d");
    ck_assert_str_eq(ESC("\x01\x1f"), "\\u0001\\u001f");
    ck_assert_str_eq(ESC("\x7f"), "\\u007f"); /* DEL too */
    ck_assert_str_eq(ESC(" "), " ");          /* 0x20 is not a control byte */
    /* a NUL inside the given length is data, not the end */
    ck_assert_str_eq(escape("a\0b", 3), "a\\u0000b");
    /* every byte below 0x20 */
    for (int c = 1; c < 0x20; c++) {
        char in[2] = {(char)c, '\0'}, want[8];
        snprintf(want, sizeof(want), "\\u%04x", c);
        ck_assert_str_eq(escape(in, 1), want);
    }
}
END_TEST

START_TEST(bytes_that_are_not_well_formed_utf8_become_replacement_characters)
{
    /* a lone continuation byte, and a lead byte without its continuation */
    ck_assert_str_eq(ESC("a\x80z"), "a\\ufffdz");
    ck_assert_str_eq(ESC("a\xc3z"), "a\\ufffdz");
    /* a sequence cut short by the end of the input */
    ck_assert_str_eq(ESC("\xe3\x83"), "\\ufffd\\ufffd");
    /* overlong forms, a surrogate, beyond U+10FFFF, bytes never in UTF-8 */
    ck_assert_str_eq(ESC("\xc0\xaf"), "\\ufffd\\ufffd");
    ck_assert_str_eq(ESC("\xe0\x80\xaf"), "\\ufffd\\ufffd\\ufffd");
    ck_assert_str_eq(ESC("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");
    ck_assert_str_eq(ESC("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd");
    ck_assert_str_eq(ESC("\xfe\xff"), "\\ufffd\\ufffd");
    /* well-formed neighbours survive */
    ck_assert_str_eq(ESC("\xc3\xa9\xff\xc3\xa9"), "\xc3\xa9\\ufffd\xc3\xa9");
    /* the largest code point and the edges around surrogates are fine */
    ck_assert_str_eq(ESC("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");
    ck_assert_str_eq(ESC("\xed\x9f\xbf"), "\xed\x9f\xbf");
    ck_assert_str_eq(ESC("\xee\x80\x80"), "\xee\x80\x80");
}
END_TEST

START_TEST(the_return_value_is_the_length_needed_like_snprintf)
{
    const char *s = "ab\"cd\n\xc3\xa9\xff";
    int len = (int)strlen(s);
    char full[64];
    int need = base_log_json_escape(full, sizeof(full), s, len);
    ck_assert_str_eq(full, "ab\\\"cd\\u000a\xc3\xa9\\ufffd");
    ck_assert_int_eq(need, (int)strlen(full));
    /* with no room at all nothing is written, and the need is the same */
    char none[1] = {'x'};
    ck_assert_int_eq(base_log_json_escape(none, 0, s, len), need);
    ck_assert_int_eq(none[0], 'x');
    ck_assert_int_eq(base_log_json_escape(NULL, 0, s, len), need);
    /* a buffer of one byte holds the terminator only */
    ck_assert_int_eq(base_log_json_escape(none, 1, s, len), need);
    ck_assert_int_eq(none[0], '\0');
}
END_TEST

START_TEST(truncation_cuts_only_between_whole_escapes_and_characters)
{
    const char *s = "ab\"cd\n\xc3\xa9\xff!";
    int len = (int)strlen(s);
    char full[64];
    int need = base_log_json_escape(full, sizeof(full), s, len);
    /* the units the full output is made of, in order */
    static const char *const units[] = {"a", "b", "\\\"", "c", "d", "\\u000a", "\xc3\xa9", "\\ufffd", "!"};
    size_t nunits = sizeof(units) / sizeof(units[0]);
    for (int cap = 1; cap <= need + 1; cap++) {
        char out[64];
        memset(out, '#', sizeof(out));
        ck_assert_int_eq(base_log_json_escape(out, cap, s, len), need);
        size_t got = strlen(out);
        ck_assert_msg((int)got < cap, "cap %d: wrote %zu bytes and a terminator", cap, got);
        /* what was written is a prefix of whole units: the longest that fits */
        size_t whole = 0, k = 0;
        while (k < nunits && whole + strlen(units[k]) < (size_t)cap)
            whole += strlen(units[k++]);
        ck_assert_msg(got == whole, "cap %d: wrote %zu bytes (\"%s\"), the whole units that fit are %zu", cap, got, out,
                      whole);
        ck_assert_mem_eq(out, full, got);
        ck_assert_int_eq(out[got + 1], '#'); /* nothing past the terminator */
    }
    /* once a unit does not fit, nothing after it is written, even if it would */
    char out[4];
    ck_assert_int_eq(base_log_json_escape(out, sizeof(out), "ab\"c", 4), 5);
    ck_assert_str_eq(out, "ab");
}
END_TEST

START_TEST(levels_below_the_minimum_are_disabled)
{
    /* the default: info and up */
    ck_assert(!base_log_enabled(BASE_LOG_DEBUG));
    ck_assert(base_log_enabled(BASE_LOG_INFO));
    ck_assert(base_log_enabled(BASE_LOG_WARN));
    ck_assert(base_log_enabled(BASE_LOG_ERROR));
    base_log_init(BASE_LOG_WARN, true);
    ck_assert(!base_log_enabled(BASE_LOG_DEBUG));
    ck_assert(!base_log_enabled(BASE_LOG_INFO));
    ck_assert(base_log_enabled(BASE_LOG_WARN));
    ck_assert(base_log_enabled(BASE_LOG_ERROR));
    base_log_init(BASE_LOG_DEBUG, true);
    ck_assert(base_log_enabled(BASE_LOG_DEBUG));
    base_log_init(BASE_LOG_ERROR, false);
    ck_assert(!base_log_enabled(BASE_LOG_WARN));
    ck_assert(base_log_enabled(BASE_LOG_ERROR));
}
END_TEST

/* Runs fn with stderr going to a temporary file; returns what was written
 * (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/h2pg_test_log_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    fn();
    fflush(stderr);
    ck_assert_int_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    ck_assert_int_ge(size, 0);
    char *text = malloc((size_t)size + 1);
    ck_assert_int_eq(pread(fd, text, (size_t)size, 0), size);
    text[size] = '\0';
    close(fd);
    return text;
}

static int side_effects;

static void log_at_every_level(void)
{
    log_debug("debug %d", ++side_effects);
    log_info("info \"quoted\"");
    log_warn("warn %s", "x\ny");
    log_error("error %d", 3);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

START_TEST(a_filtered_level_writes_nothing_and_an_enabled_one_writes_one_json_line)
{
    base_log_init(BASE_LOG_WARN, true);
    side_effects = 0;
    char *out = capture_stderr(log_at_every_level);
    ck_assert_int_eq(side_effects, 0); /* log_debug does not even evaluate its arguments */
    ck_assert_msg(count_lines(out) == 2, "%s", out);
    ck_assert_ptr_null(strstr(out, "\"level\":\"debug\""));
    ck_assert_ptr_null(strstr(out, "\"level\":\"info\""));
    ck_assert_msg(strstr(out, "\"level\":\"warn\",\"msg\":\"warn x\\u000ay\"}\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"level\":\"error\",\"msg\":\"error 3\"}\n") != NULL, "%s", out);
    ck_assert_msg(strncmp(out, "{\"time\":\"", 9) == 0, "%s", out);
    free(out);

    base_log_init(BASE_LOG_DEBUG, true);
    out = capture_stderr(log_at_every_level);
    ck_assert_int_eq(side_effects, 1);
    ck_assert_msg(count_lines(out) == 4, "%s", out);
    ck_assert_msg(strstr(out, "\"msg\":\"debug 1\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"msg\":\"info \\\"quoted\\\"\"") != NULL, "%s", out);
    free(out);
}
END_TEST

START_TEST(the_text_format_is_for_humans)
{
    base_log_init(BASE_LOG_INFO, false);
    side_effects = 0;
    char *out = capture_stderr(log_at_every_level);
    ck_assert_int_eq(side_effects, 0);
    ck_assert_msg(strstr(out, " info  info \"quoted\"\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, " error error 3\n") != NULL, "%s", out);
    ck_assert_ptr_null(strstr(out, "{\"time\""));
    free(out);
}
END_TEST

static void log_a_long_message(void)
{
    char big[2000]; /* over the 1 KiB a message may have */
    memset(big, '\x01', sizeof(big) - 1); /* each byte escapes to six: over the room for the escaped message */
    big[sizeof(big) - 1] = '\0';
    log_info("%s", big);
}

START_TEST(a_long_message_still_gives_one_parseable_line)
{
    base_log_init(BASE_LOG_INFO, true);
    char *out = capture_stderr(log_a_long_message);
    ck_assert_int_eq(count_lines(out), 1);
    size_t len = strlen(out);
    ck_assert_msg(len >= 3 && strcmp(out + len - 3, "\"}\n") == 0, "ends with: %s", out + (len > 40 ? len - 40 : 0));
    /* cut, and only between whole escapes */
    const char *msg = strstr(out, "\"msg\":\"");
    ck_assert_ptr_nonnull(msg);
    msg += 7;
    size_t body = (size_t)(out + len - 3 - msg);
    ck_assert_uint_gt(body, 0);
    ck_assert_uint_lt(body, 1023 * 6);
    ck_assert_uint_eq(body % 6, 0);
    for (size_t i = 0; i < body; i += 6)
        ck_assert_msg(strncmp(msg + i, "\\u0001", 6) == 0, "at %zu: %.12s", i, msg + i);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base_log");
    TCase *tc = tcase_create("escape");
    tcase_add_test(tc, plain_text_and_utf8_pass_through);
    tcase_add_test(tc, quotes_and_backslashes_are_escaped);
    tcase_add_test(tc, control_bytes_become_unicode_escapes);
    tcase_add_test(tc, bytes_that_are_not_well_formed_utf8_become_replacement_characters);
    tcase_add_test(tc, the_return_value_is_the_length_needed_like_snprintf);
    tcase_add_test(tc, truncation_cuts_only_between_whole_escapes_and_characters);
    suite_add_tcase(s, tc);
    tc = tcase_create("levels");
    tcase_add_test(tc, levels_below_the_minimum_are_disabled);
    tcase_add_test(tc, a_filtered_level_writes_nothing_and_an_enabled_one_writes_one_json_line);
    tcase_add_test(tc, the_text_format_is_for_humans);
    tcase_add_test(tc, a_long_message_still_gives_one_parseable_line);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
