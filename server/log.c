#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum server_log_level min_level = SERVER_LOG_INFO;
static bool as_json = true;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void server_log_init(enum server_log_level level, bool json)
{
    min_level = level;
    as_json = json;
}

bool server_log_enabled(enum server_log_level level) { return level >= min_level; }

int server_log_json_escape(char *out, int cap, const char *s, int len)
{
    int n = 0;
#define PUT(c)                                                                                                                     \
    do {                                                                                                                           \
        if (n + 1 < cap)                                                                                                           \
            out[n] = (c);                                                                                                          \
        n++;                                                                                                                       \
    } while (0)
    for (int i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            for (int k = 0; esc[k]; k++)
                PUT(esc[k]);
        } else {
            PUT((char)c);
        }
    }
#undef PUT
    if (cap > 0)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}

void server_log(enum server_log_level level, const char *fmt, ...)
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
        server_log_json_escape(esc, sizeof(esc), msg, mlen);
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
