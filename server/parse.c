#include "server/parse.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the byte at s[*i] of s[0..n) and advances *i; -1 for a malformed
 * escape. */
static int decode_byte(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    if (c == '+') {
        (*i)++;
        return ' ';
    }
    if (c != '%') {
        (*i)++;
        return c;
    }
    if (n - *i < 3)
        return -1;
    int hi = hex_value((unsigned char)s[*i + 1]), lo = hex_value((unsigned char)s[*i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    *i += 3;
    return hi << 4 | lo;
}

/* Whether s[0..n), decoded, is exactly the C string name; decoding as we go
 * needs no buffer, so a name of any length can be compared. */
static bool decoded_equals(const char *s, size_t n, const char *name)
{
    size_t i = 0, k = 0;
    while (i < n) {
        int c = decode_byte(s, n, &i);
        if (c < 0 || name[k] == '\0' || (unsigned char)name[k] != c)
            return false;
        k++;
    }
    return name[k] == '\0';
}

static int decode_value(const char *s, size_t n, char *out, size_t outlen, size_t *len)
{
    size_t i = 0, k = 0;
    bool too_long = false;
    /* reads to the end even once out is full, so that a malformed escape
     * further on still makes the value invalid */
    while (i < n) {
        int c = decode_byte(s, n, &i);
        if (c <= 0)
            return -EINVAL;
        if (k + 1 < outlen)
            out[k++] = (char)c;
        else
            too_long = true;
    }
    if (too_long)
        return -E2BIG;
    out[k] = '\0';
    *len = k;
    return 0;
}

int server_parse_query_param(const char *query, size_t query_len, const char *name, char *out, size_t outlen, size_t *len)
{
    assert(query != NULL || query_len == 0);
    assert(name != NULL && out != NULL && outlen >= 1);
    out[0] = '\0';
    size_t pos = 0;
    while (pos < query_len) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', query_len - pos);
        size_t pair_len = amp != NULL ? (size_t)(amp - pair) : query_len - pos;
        pos += pair_len + 1;

        const char *eq = memchr(pair, '=', pair_len);
        size_t name_len = eq != NULL ? (size_t)(eq - pair) : pair_len;
        if (pair_len == 0 || !decoded_equals(pair, name_len, name))
            continue;
        const char *value = eq != NULL ? eq + 1 : pair + pair_len;
        size_t value_len = pair_len - (size_t)(value - pair);
        size_t n = 0;
        int rc = decode_value(value, value_len, out, outlen, &n);
        if (rc < 0) {
            out[0] = '\0';
            return rc;
        }
        if (len != NULL)
            *len = n;
        return 0;
    }
    return -ENOENT;
}

int server_parse_int64(const char *s, size_t len, bool allow_negative, int64_t *out)
{
    assert(s != NULL || len == 0);
    assert(out != NULL);
    size_t i = 0;
    bool negative = false;
    if (len > 0 && s[0] == '-') {
        if (!allow_negative)
            return -EINVAL;
        negative = true;
        i = 1;
    }
    if (i == len)
        return -EINVAL;
    /* the syntax first, so that "99999999999999999999x" is malformed rather
     * than out of range */
    for (size_t k = i; k < len; k++)
        if (s[k] < '0' || s[k] > '9')
            return -EINVAL;

    /* the magnitude in unsigned arithmetic, where INT64_MIN's fits */
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (negative)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

int server_parse_id(const char *s, size_t len, int64_t *out)
{
    assert(out != NULL);
    int64_t v;
    int rc = server_parse_int64(s, len, false, &v);
    if (rc < 0)
        return rc;
    if (v == 0)
        return -EINVAL;
    *out = v;
    return 0;
}

int server_parse_request_timeout(const char *s, size_t len, int64_t max_ms, int64_t *ms)
{
    assert(ms != NULL);
    int64_t v;
    if (server_parse_int64(s, len, false, &v) < 0 || v <= 0)
        return -EINVAL;
    *ms = v < max_ms ? v : max_ms;
    return 0;
}
