/* The access log: one line per request on stdout (JSON or text), buffered
 * per worker and written once per loop turn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "server/server_int.h"

static void on_log_flush(aio_deferred *d)
{
    server_worker *w = aio_container_of(d, server_worker, log_flush);
    size_t off = 0;
    while (off < w->log_len) {
        ssize_t n = write(STDOUT_FILENO, w->log_buf + off, w->log_len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    w->log_len = 0;
}


void server__log_init(server_worker *w) { aio_deferred_init(&w->log_flush, on_log_flush); }


void server__access_log(server_req *r)
{
    server_worker *w = r->worker;
    if (w->log_len + 2048 > w->log_cap) {
        size_t cap = w->log_cap ? w->log_cap * 2 : 65536;
        char *buf = realloc(w->log_buf, cap);
        if (buf == NULL)
            return;
        w->log_buf = buf;
        w->log_cap = cap;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    /* the method and path are the client's bytes: escaped, so a line
     * stays one valid JSON object whatever they hold */
    char path[512], method[64];
    base_log_json_escape(path, sizeof(path), r->path, (int)strlen(r->path));
    base_log_json_escape(method, sizeof(method), r->method, (int)strlen(r->method));
    double ms = (double)(aio_now() - r->start) / 1e6;
    const server_client *client = server__req_client(r);
    int n;
    if (w->cfg->log_json) {
        n = snprintf(w->log_buf + w->log_len, w->log_cap - w->log_len,
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"type\":\"access\",\"request_id\":\"%s\","
                     "\"client\":\"%s\",\"proto\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"route\":\"%s\","
                     "\"status\":%d,\"bytes\":%zu,%s\"duration_ms\":%.3f}\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, r->id, client->addr, client->proto, method, path, r->pattern,
                     r->status, r->bytes, r->cut ? "\"cut\":true," : "", ms);
    } else {
        n = snprintf(w->log_buf + w->log_len, w->log_cap - w->log_len, "%s %s %s %d %zu%s %.3fms %s\n",
                     client->addr, method, path, r->status, r->bytes, r->cut ? " cut" : "", ms, r->id);
    }
    if (n > 0 && (size_t)n < w->log_cap - w->log_len) {
        w->log_len += (size_t)n;
        aio_defer(&w->log_flush);
    }
}

