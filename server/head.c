/* The head of every HTTP/1 answer, written without glibc's printf engine.
 *
 * h2o 2.2.5 starts each HTTP/1 response with one sprintf (lib/http1.c,
 * flatten_headers) of one of two fixed formats -- status line, Date,
 * Connection and, when the length is known, Content-Length. Debian builds
 * libh2o-evloop with _FORTIFY_SOURCE, so the call is __sprintf_chk, and
 * glibc's vfprintf spends about 1,800 instructions on it: a quarter of all
 * user-space instructions of a GET /json, more than h2pg's router, header
 * guard and request setup together (callgrind; README.md, "Benchmarks").
 * Newer h2o builds that line without printf.
 *
 * build/h2pg defines __sprintf_chk itself, the way mimalloc's shared
 * library defines malloc: the executable comes first in the dynamic
 * linker's global scope, so libh2o's call lands here. Those two formats,
 * recognised by their whole text, are written by hand with the same bytes
 * glibc would write (tests/server/test_head.c compares the two); any other
 * format, from any library, goes on to glibc's __vsprintf_chk unchanged.
 * Like glibc, an answer longer than the caller's buffer ends the process
 * (__chk_fail), before a byte is written. */
#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/fmt.h"
#include "server/server_int.h"

/* glibc's fortify entry points (bits/stdio2.h declares them only when
 * _FORTIFY_SOURCE is on; their ABI is fixed: GLIBC_2.3.4). */
int __sprintf_chk(char *s, int flag, size_t slen, const char *fmt, ...) __attribute__((visibility("default")));
int __vsprintf_chk(char *s, int flag, size_t slen, const char *fmt, va_list ap);
void __chk_fail(void) __attribute__((noreturn));

static const char head_with_length[] = "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\nContent-Length: %zu\r\n";
static const char head_plain[] = "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\n";

/* Which of the two formats fmt is: 2 (with Content-Length), 1, or 0. */
static int head_format(const char *fmt)
{
    /* the common prefix first, so that other formats are turned away after
     * a byte or two */
    if (fmt[0] != 'H' || strncmp(fmt, head_plain, sizeof(head_plain) - 1) != 0)
        return 0;
    const char *rest = fmt + sizeof(head_plain) - 1;
    if (*rest == '\0')
        return 1;
    return strcmp(rest, head_with_length + sizeof(head_plain) - 1) == 0 ? 2 : 0;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put(p, lit, sizeof(lit) - 1)

int server__head_write(char *s, size_t slen, bool with_length, int status, const char *reason, const char *date,
                       const char *connection, size_t content_length)
{
    _Static_assert(SIZE_MAX <= UINT64_MAX, "a Content-Length fits base_fmt_u64");
    char sd[BASE_FMT_I64_MAX], ld[BASE_FMT_U64_MAX];
    size_t sn = base_fmt_i64(sd, status); /* as %d: a '-', then the magnitude */
    size_t ln = with_length ? base_fmt_u64(ld, content_length) : 0;
    size_t rn = strlen(reason), dn = strlen(date), cn = strlen(connection);
    size_t total = (sizeof("HTTP/1.1 ") - 1) + sn + 1 + rn + (sizeof("\r\nDate: ") - 1) + dn +
                   (sizeof("\r\nConnection: ") - 1) + cn + 2;
    if (with_length)
        total += (sizeof("Content-Length: ") - 1) + ln + 2;
    if (total >= slen)
        __chk_fail(); /* what glibc does when the answer and its NUL do not fit */
    char *p = s;
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put(p, sd, sn);
    *p++ = ' ';
    p = put(p, reason, rn);
    p = PUT_LIT(p, "\r\nDate: ");
    p = put(p, date, dn);
    p = PUT_LIT(p, "\r\nConnection: ");
    p = put(p, connection, cn);
    p = PUT_LIT(p, "\r\n");
    if (with_length) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put(p, ld, ln);
        p = PUT_LIT(p, "\r\n");
    }
    *p = '\0';
    return total > INT_MAX ? -1 : (int)total;
}

int __sprintf_chk(char *s, int flag, size_t slen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int which = head_format(fmt), n;
    if (which == 0) {
        n = __vsprintf_chk(s, flag, slen, fmt, ap);
    } else {
        int status = va_arg(ap, int);
        const char *reason = va_arg(ap, const char *), *date = va_arg(ap, const char *);
        const char *connection = va_arg(ap, const char *);
        size_t length = which == 2 ? va_arg(ap, size_t) : 0;
        if (reason == NULL || date == NULL || connection == NULL) {
            /* glibc writes "(null)"; not a case h2o has, so leave it to glibc */
            va_end(ap);
            va_start(ap, fmt);
            n = __vsprintf_chk(s, flag, slen, fmt, ap);
        } else {
            n = server__head_write(s, slen, which == 2, status, reason, date, connection, length);
        }
    }
    va_end(ap);
    return n;
}

bool server__head_in_use(void)
{
    return dlsym(RTLD_DEFAULT, "__sprintf_chk") == (void *)__sprintf_chk;
}
