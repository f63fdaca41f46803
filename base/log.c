#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum base_log_level min_level = BASE_LOG_INFO;
static bool as_json = true;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void base_log_init(enum base_log_level level, bool json)
{
    min_level = level;
    as_json = json;
}

bool base_log_enabled(enum base_log_level level) { return level >= min_level; }

/* The length of the well-formed UTF-8 sequence at s[0..len) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static int utf8_sequence(const unsigned char *s, int len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    int n;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

int base_log_json_escape(char *out, int cap, const char *s, int len)
{
    /* Clients choose paths: bytes that are not UTF-8 become U+FFFD, since a
     * JSON text must be UTF-8, and output is cut only between whole escapes
     * or characters, so a line stays parseable however long the input. */
    int n = 0, written = 0;
    for (int i = 0; i < len;) {
        const unsigned char *p = (const unsigned char *)s + i;
        char esc[8];
        const char *unit = esc;
        int unit_len, used = 1;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            unit_len = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            unit_len = snprintf(esc, sizeof(esc), "\\u%04x", *p);
        } else if ((used = utf8_sequence(p, len - i)) > 0) {
            unit = (const char *)p;
            unit_len = used;
        } else {
            unit = "\\ufffd";
            unit_len = 6;
            used = 1;
        }
        if (written == n && n + unit_len < cap) {
            memcpy(out + n, unit, (size_t)unit_len);
            written += unit_len;
        }
        n += unit_len;
        i += used;
    }
    if (cap > 0)
        out[written] = '\0';
    return n;
}

void base_log(enum base_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int mlen = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (mlen < 0)
        return;
    if (mlen >= (int)sizeof(msg))
        mlen = sizeof(msg) - 1;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[80];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[4096];
    int n;
    if (as_json) {
        char esc[3072];
        base_log_json_escape(esc, sizeof(esc), msg, mlen);
        n = snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", when, level_names[level], esc);
    } else {
        n = snprintf(line, sizeof(line), "%s %-5s %s\n", when, level_names[level], msg);
    }
    if (n >= (int)sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* one write per line so lines of different threads never interleave */
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, line + off, (size_t)(n - off));
        if (w <= 0)
            break;
        off += w;
    }
}
