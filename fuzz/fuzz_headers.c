/* Request headers the service reads itself: Request-Timeout
 * (server_parse_request_timeout, what request_deadline in server/request.c
 * uses), Idempotency-Key (routes_input_idempotency_key) and Content-Type
 * (routes_input_is_json).
 *
 * Input: one byte choosing the configured REQUEST_TIMEOUT_MS, then the
 * header value. Every input is tried as each of the three. Checks:
 * - Request-Timeout is accepted exactly when it is one or more digits
 *   worth 1..INT64_MAX by strtoll, and then gives min(value, configured);
 *   on refusal the output is untouched;
 * - Idempotency-Key is accepted exactly when it has 1..255 bytes, all
 *   isgraph() in the C locale; a value with a NUL byte is judged, as the
 *   handler does, by its C string;
 * - Content-Type is application/json exactly when a reference says so. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>

#include "fuzz/fuzz.h"
#include "routes/input.h"
#include "server/parse.h"

static const int64_t configured[4] = {1, 5000, 3600000, INT64_MAX};

static int ref_timeout(const char *s, size_t len, int64_t max, int64_t *ms)
{
    if (len == 0 || strspn(s, "0123456789") < len)
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || v < 1)
        return -EINVAL;
    *ms = v < max ? v : max;
    return 0;
}

static bool ref_key(const char *s, size_t len)
{
    if (len < 1 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isgraph((unsigned char)s[i]))
            return false;
    return true;
}

static bool ref_json(const char *ct)
{
    while (*ct == ' ')
        ct++;
    for (const char *w = "application/json"; *w; w++, ct++)
        if (tolower((unsigned char)*ct) != *w)
            return false;
    ct += strspn(ct, " ");
    return *ct == '\0' || *ct == ';';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int64_t max = configured[data[0] & 3];
    size_t len = size - 1;
    char *exact = fuzz_dup(data + 1, len), *c = fuzz_strndup(data + 1, len);

    int64_t ms = -1, want = -2;
    int rc = server_parse_request_timeout(exact, len, max, &ms);
    int ref = memchr(c, '\0', len) ? -EINVAL : ref_timeout(c, len, max, &want);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    FUZZ_CHECK(rc == ref);
    FUZZ_CHECK(rc == 0 ? ms == want && ms >= 1 && ms <= max : ms == -1);

    FUZZ_CHECK(routes_input_idempotency_key(exact, len) == (ref_key(c, len) && memchr(c, '\0', len) == NULL));
    FUZZ_CHECK(routes_input_idempotency_key(c, strlen(c)) == ref_key(c, strlen(c)));

    FUZZ_CHECK(routes_input_is_json(c) == ref_json(c));

    free(c);
    free(exact);
    return 0;
}
