#include "base/fmt.h"

#include <string.h>

size_t base_fmt_i64(char *out, int64_t v)
{
    char tmp[BASE_FMT_I64_MAX];
    /* the magnitude as unsigned: -INT64_MIN does not fit in int64_t */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    memcpy(out + len, tmp + sizeof(tmp) - n, n);
    return len + n;
}

/* Which bytes HTML text must escape: their replacement's index + 1. */
static const unsigned char html_special[256] = {['&'] = 1, ['<'] = 2, ['>'] = 3, ['"'] = 4, ['\''] = 5};
static const struct {
    const char *text;
    size_t len;
} html_entity[] = {{"&amp;", 5}, {"&lt;", 4}, {"&gt;", 4}, {"&quot;", 6}, {"&#39;", 5}};

size_t base_html_escape(char *out, const char *s, size_t len)
{
    size_t n = 0, run = 0; /* run: bytes since the last special one, copied at once */
    for (size_t i = 0; i < len; i++) {
        unsigned k = html_special[(unsigned char)s[i]];
        if (k == 0)
            continue;
        memcpy(out + n, s + run, i - run);
        n += i - run;
        memcpy(out + n, html_entity[k - 1].text, html_entity[k - 1].len);
        n += html_entity[k - 1].len;
        run = i + 1;
    }
    memcpy(out + n, s + run, len - run);
    return n + len - run;
}
