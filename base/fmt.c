#include "base/fmt.h"

#include <stdbool.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* "00" to "99": two digits per division */
static const char two_digits[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                    "8081828384858687888990919293949596979899";

size_t base_fmt_u64(char *out, uint64_t v)
{
    char tmp[BASE_FMT_U64_MAX];
    char *end = tmp + sizeof(tmp), *p = end;
    while (v >= 100) {
        const char *d = two_digits + 2 * (v % 100);
        v /= 100;
        *--p = d[1];
        *--p = d[0];
    }
    if (v >= 10) {
        *--p = two_digits[2 * v + 1];
        *--p = two_digits[2 * v];
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(end - p);
    memcpy(out, p, n);
    return n;
}

size_t base_fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return base_fmt_u64(out, (uint64_t)v);
    /* the magnitude as unsigned: -INT64_MIN does not fit in int64_t */
    out[0] = '-';
    return 1 + base_fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

/* Which bytes HTML text must escape: their replacement's index + 1. */
static const unsigned char html_special[256] = {['&'] = 1, ['<'] = 2, ['>'] = 3, ['"'] = 4, ['\''] = 5};
static const struct {
    const char *text;
    size_t len;
} html_entity[] = {{"&amp;", 5}, {"&lt;", 4}, {"&gt;", 4}, {"&quot;", 6}, {"&#39;", 5}};

/* Whether any byte of x is c (c repeated in every byte): the classic
 * "has a zero byte" test on x ^ c. */
static inline uint64_t has_byte(uint64_t x, uint64_t c)
{
    uint64_t y = x ^ c;
    return (y - 0x0101010101010101ULL) & ~y & 0x8080808080808080ULL;
}

#define BYTES(c) (0x0101010101010101ULL * (unsigned char)(c))

/* Whether any of the 8 bytes at s is one HTML text must escape. */
static inline bool any_special(const char *s)
{
    uint64_t x;
    memcpy(&x, s, 8);
    return has_byte(x, BYTES('&')) | has_byte(x, BYTES('<')) | has_byte(x, BYTES('>')) | has_byte(x, BYTES('"')) |
           has_byte(x, BYTES('\''));
}

/* Copies the bytes s[*run..i) not yet copied, then the entity of s[i]
 * (special kind k); returns the new length of out. */
static inline size_t put_entity(char *out, size_t n, const char *s, size_t *run, size_t i, unsigned k)
{
    memcpy(out + n, s + *run, i - *run);
    n += i - *run;
    memcpy(out + n, html_entity[k - 1].text, html_entity[k - 1].len);
    *run = i + 1;
    return n + html_entity[k - 1].len;
}

#if defined(__SSE2__)
/* One bit per byte of the 16 at s that HTML text must escape. */
static inline unsigned specials16(const char *s)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('&')), _mm_cmpeq_epi8(x, _mm_set1_epi8('<'))),
                             _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('>')), _mm_cmpeq_epi8(x, _mm_set1_epi8('"'))));
    m = _mm_or_si128(m, _mm_cmpeq_epi8(x, _mm_set1_epi8('\'')));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

size_t base_html_escape(char *out, const char *s, size_t len)
{
    size_t n = 0, run = 0; /* run: bytes since the last special one, copied at once */
    size_t i = 0;
#if defined(__SSE2__)
    /* most text has no special byte: 16 at a time, then only the ones found */
    for (; i + 16 <= len; i += 16)
        for (unsigned m = specials16(s + i); m != 0; m &= m - 1) {
            size_t at = i + (size_t)__builtin_ctz(m);
            n = put_entity(out, n, s, &run, at, html_special[(unsigned char)s[at]]);
        }
#endif
    for (; i < len; i++) {
        /* skip 8 at a time while none is special */
        while (i + 8 <= len && !any_special(s + i))
            i += 8;
        if (i >= len)
            break;
        unsigned k = html_special[(unsigned char)s[i]];
        if (k != 0)
            n = put_entity(out, n, s, &run, i, k);
    }
    memcpy(out + n, s + run, len - run);
    return n + len - run;
}

size_t base_json_string(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0, run = 0; /* run: where the bytes not yet copied start */
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        memcpy(out + n, s + run, i - run);
        n += i - run;
        run = i + 1;
        out[n++] = '\\';
        switch (c) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '\b': out[n++] = 'b'; break;
        case '\f': out[n++] = 'f'; break;
        case '\n': out[n++] = 'n'; break;
        case '\r': out[n++] = 'r'; break;
        case '\t': out[n++] = 't'; break;
        default:
            memcpy(out + n, "u00", 3);
            out[n + 3] = hex[c >> 4];
            out[n + 4] = hex[c & 15];
            n += 5;
        }
    }
    memcpy(out + n, s + run, len - run);
    n += len - run;
    out[n++] = '"';
    return n;
}
