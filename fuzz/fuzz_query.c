/* Query strings: server_parse_query_param, the strict number parsers and the
 * paging parameters the list endpoints read (routes_input_page).
 *
 * Input: one byte choosing the parameter name (low 3 bits) and the output
 * buffer's size (the rest, 1..32), then the raw query string. Checks:
 * - server_parse_query_param agrees with a reference decoder (first pair whose
 *   decoded name is the name wins; '+' is a space; a bad escape or a
 *   decoded NUL in the value is -EINVAL), whatever the buffer's size: only
 *   -E2BIG depends on it, exactly when the value does not fit;
 * - the output is NUL-terminated inside the buffer (an exact-size heap
 *   block), "" on every error, and its length is what *len says;
 * - a found value, percent-encoded again behind another pair, reads back
 *   the same;
 * - server_parse_int64 / server_parse_id agree with strtoll on the found
 *   value and on the raw bytes;
 * - routes_input_page returns true exactly when it reported no error, only
 *   ever about limit and after, and then gives limit 1..100, after >= 0,
 *   the defaults when absent. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>

#include <jansson.h>

#include "fuzz/fuzz.h"
#include "routes/input.h"
#include "server/parse.h"

static const char *const names[8] = {"limit", "after", "queries", "id", "a b", "", "x=y", "\xc3\xa9"};

static int hex(unsigned char c)
{
    if (isdigit(c))
        return c - '0';
    c = (unsigned char)tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes s[0..n) into out (room for n bytes); -1 for a bad escape. */
static long ref_decode(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[k++] = ' ';
        } else if (s[i] != '%') {
            out[k++] = s[i];
        } else {
            if (i + 2 >= n || hex((unsigned char)s[i + 1]) < 0 || hex((unsigned char)s[i + 2]) < 0)
                return -1;
            out[k++] = (char)(hex((unsigned char)s[i + 1]) * 16 + hex((unsigned char)s[i + 2]));
            i += 2;
        }
    }
    return (long)k;
}

/* The reference lookup: 0 with the value in out (room for q_len + 1), or
 * -ENOENT / -EINVAL. */
static int ref_get(const char *q, size_t q_len, const char *name, char *out, size_t *len)
{
    char *buf = fuzz_dup(q, q_len);
    int rc = -ENOENT;
    size_t start = 0;
    while (start < q_len && rc == -ENOENT) {
        size_t end = start;
        while (end < q_len && q[end] != '&')
            end++;
        const char *eq = memchr(q + start, '=', end - start);
        size_t name_end = eq ? (size_t)(eq - q) : end;
        long nl = ref_decode(q + start, name_end - start, buf);
        if (end > start && nl >= 0 && (size_t)nl == strlen(name) && memcmp(buf, name, (size_t)nl) == 0) {
            size_t vstart = eq ? name_end + 1 : end;
            long vl = ref_decode(q + vstart, end - vstart, out);
            if (vl < 0 || memchr(out, '\0', (size_t)vl) != NULL) {
                rc = -EINVAL;
            } else {
                out[vl] = '\0';
                *len = (size_t)vl;
                rc = 0;
            }
        }
        start = end + 1;
    }
    free(buf);
    return rc;
}

/* strtoll's verdict on a strictly decimal text: -EINVAL for anything else. */
static int ref_int64(const char *s, size_t len, bool allow_negative, int64_t *v)
{
    size_t i = len > 0 && s[0] == '-' && allow_negative ? 1 : 0;
    if (i == len)
        return -EINVAL;
    for (size_t k = i; k < len; k++)
        if (!isdigit((unsigned char)s[k]))
            return -EINVAL;
    char *c = fuzz_strndup(s, len), *end;
    errno = 0;
    long long x = strtoll(c, &end, 10);
    int rc = errno == ERANGE ? -ERANGE : 0;
    FUZZ_CHECK(*end == '\0');
    free(c);
    if (rc == 0)
        *v = x;
    return rc;
}

static void check_numbers(const char *s, size_t len)
{
    for (int neg = 0; neg < 2; neg++) {
        int64_t got = 42, want = 0;
        int rc = server_parse_int64(s, len, neg, &got), ref = ref_int64(s, len, neg, &want);
        FUZZ_CHECK(rc == ref);
        FUZZ_CHECK(rc == 0 ? got == want : got == 42);
    }
    int64_t id = 42, want = 0;
    int rc = server_parse_id(s, len, &id), ref = ref_int64(s, len, false, &want);
    if (ref == 0 && want == 0)
        ref = -EINVAL;
    FUZZ_CHECK(rc == ref);
    FUZZ_CHECK(rc == 0 ? id == want && id > 0 : id == 42);
}

static void check_page(const char *q, size_t q_len)
{
    json_t *errors = json_array();
    int64_t limit = -7, after = -7;
    bool ok = routes_input_page(q, q_len, &limit, &after, errors);
    FUZZ_CHECK(ok == (json_array_size(errors) == 0));
    bool limit_bad = false, after_bad = false;
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e) {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL && json_string_value(json_object_get(e, "message")) != NULL);
        FUZZ_CHECK(strcmp(field, "limit") == 0 || strcmp(field, "after") == 0);
        limit_bad = limit_bad || strcmp(field, "limit") == 0;
        after_bad = after_bad || strcmp(field, "after") == 0;
    }
    /* what each parameter must have given */
    char *v = malloc(q_len + 1);
    size_t vlen = 0;
    int64_t n = 0;
    int rc = ref_get(q, q_len, "limit", v, &vlen);
    bool want_bad = rc == -EINVAL || (rc == 0 && (vlen >= 64 || ref_int64(v, vlen, true, &n) < 0 || n < 1 || n > 100));
    FUZZ_CHECK(limit_bad == want_bad);
    if (!limit_bad)
        FUZZ_CHECK(rc == -ENOENT ? limit == 20 : limit == n);
    rc = ref_get(q, q_len, "after", v, &vlen);
    want_bad = rc == -EINVAL || (rc == 0 && (vlen >= 64 || ref_int64(v, vlen, false, &n) < 0 || n < 1));
    FUZZ_CHECK(after_bad == want_bad);
    if (!after_bad)
        FUZZ_CHECK(rc == -ENOENT ? after == 0 : after == n);
    free(v);
    json_decref(errors);
}

/* name=value again, every byte but [A-Za-z0-9] escaped, behind another pair. */
static void check_round_trip(const char *name, const char *value, size_t len)
{
    size_t nl = strlen(name), cap = 8 + 3 * (nl + len);
    char *q = malloc(cap), *p = q;
    p += sprintf(p, "zz=1&");
    for (size_t i = 0; i < nl + 1 + len; i++) {
        unsigned char c = (unsigned char)(i < nl ? name[i] : i == nl ? '=' : value[i - nl - 1]);
        p += i != nl && !isalnum(c) ? sprintf(p, "%%%02X", c) : sprintf(p, "%c", c);
    }
    char *out = malloc(len + 1);
    size_t got;
    FUZZ_CHECK(server_parse_query_param(q, (size_t)(p - q), name, out, len + 1, &got) == 0);
    FUZZ_CHECK(got == len && memcmp(out, value, len) == 0 && out[len] == '\0');
    free(out);
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *name = names[data[0] & 7];
    size_t outlen = (size_t)(data[0] >> 3) + 1;
    size_t q_len = size - 1;
    char *q = fuzz_dup(data + 1, q_len);

    /* a buffer that always fits (decoding never grows a value) */
    char *big = malloc(q_len + 1), *want = malloc(q_len + 1);
    size_t big_len = 12345, want_len = 0;
    int rc_big = server_parse_query_param(q, q_len, name, big, q_len + 1, &big_len);
    int ref = ref_get(q, q_len, name, want, &want_len);
    FUZZ_CHECK(rc_big == ref);
    if (ref == 0)
        FUZZ_CHECK(big_len == want_len && memcmp(big, want, want_len + 1) == 0);
    else
        FUZZ_CHECK(big[0] == '\0' && big_len == 12345);

    /* the chosen size: only -E2BIG differs */
    char *out = malloc(outlen);
    size_t len = 12345;
    int rc = server_parse_query_param(q, q_len, name, out, outlen, &len);
    FUZZ_CHECK(memchr(out, '\0', outlen) != NULL);
    if (ref == 0 && want_len >= outlen) {
        FUZZ_CHECK(rc == -E2BIG && out[0] == '\0' && len == 12345);
    } else {
        FUZZ_CHECK(rc == ref);
        if (rc == 0)
            FUZZ_CHECK(len == want_len && memcmp(out, want, len + 1) == 0);
        else
            FUZZ_CHECK(out[0] == '\0' && len == 12345);
    }
    /* len may be NULL */
    FUZZ_CHECK(server_parse_query_param(q, q_len, name, out, outlen, NULL) == rc);

    if (ref == 0) {
        check_round_trip(name, want, want_len);
        check_numbers(want, want_len);
    }
    check_numbers(q, q_len);
    check_page(q, q_len);

    free(out);
    free(want);
    free(big);
    free(q);
    return 0;
}
