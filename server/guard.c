/* The front door's limits on what a client sends before its request is
 * whole, and the checks of an HTTP/1 head that h2o 2.2.5 does not make.
 *
 * h2o reads a request's head into the connection's input buffer until it
 * is complete or reaches its own cap (417,792 bytes), for as long as the
 * keep-alive timeout (75 s): a client that starts a head and never ends it
 * pins that memory. A sweep every GUARD_TICK_MS looks at the connections
 * that have bytes in their buffer and no request running: a head that has
 * passed MAX_HEADER_BYTES is answered 431 and the connection closed; one
 * that has taken longer than HEADER_TIMEOUT_MS since its first byte, 408.
 * (A complete head is found in the buffer too while its body arrives: that
 * is left to the body's own limits.)
 *
 * h2o keeps the raw head at the front of the buffer while the request is
 * handled, and forgets some of what it holds (repeated Content-Length,
 * Transfer-Encoding beside Content-Length, repeated Host), so those are
 * read from the raw head: RFC 9112 §6.3 and §3.2 say reject and close. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "base/log.h"
#include "server/server_int.h"

#define GUARD_TICK_MS 100

/* ---- tracking the connections ---- */

/* h2o closed the socket (and its fd, which no accept has reused yet: this
 * runs on the worker's thread, right after). */
static void on_closed(void *data)
{
    server_worker *w = server__worker;
    size_t fd = (size_t)(uintptr_t)data;
    if (w != NULL && fd < w->nhup_slots) {
        w->hup_slots[fd].sock = NULL;
        w->hup_slots[fd].partial_since = 0;
    }
}

void server__guard_track(server_worker *w, h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock);
    if (fd < 0 || (size_t)fd >= w->nhup_slots)
        return;
    w->hup_slots[fd].sock = sock;
    w->hup_slots[fd].partial_since = 0;
    w->hup_slots[fd].resume_read = NULL;
    /* h2o uses on_close only for client sockets of its own pools */
    sock->on_close.cb = on_closed;
    sock->on_close.data = (void *)(uintptr_t)fd;
}

/* ---- refusing a connection's request ---- */

static void on_refused(h2o_socket_t *sock, const char *err)
{
    server_worker *w = server__worker;
    int fd = h2o_socket_get_fd(sock);
    (void)err;
    shutdown(fd, SHUT_RDWR);
    /* h2o reads the end of the stream now, and closes the connection */
    if (w != NULL && fd >= 0 && (size_t)fd < w->nhup_slots && w->hup_slots[fd].resume_read != NULL)
        h2o_socket_read_start(sock, w->hup_slots[fd].resume_read);
}

/* Answers status with a problem on a connection h2o is reading a head
 * from (no request of ours, no write of h2o's), then ends it. h2o's
 * reading pauses meanwhile, so nothing more accumulates; its buffer is
 * left as it is (its parser resumes from where it was). */
static void refuse(struct server_hup_slot *slot, int status, const char *detail)
{
    /* one text per status, per thread, outliving any write in flight */
    static _Thread_local char msg[2][512];
    h2o_socket_t *sock = slot->sock;
    size_t len;
    char *body = server_problem_json(status, detail, NULL, &len);
    char *out = msg[status == 431];
    int n = snprintf(out, sizeof(msg[0]),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\nContent-Length: %zu\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, server_status_reason(status), body ? len : 0, body ? body : "");
    free(body);
    h2o_iovec_t buf = h2o_iovec_init(out, n > 0 && (size_t)n < sizeof(msg[0]) ? (size_t)n : 0);
    slot->resume_read = sock->_cb.read;
    h2o_socket_read_stop(sock);
    slot->partial_since = 0;
    h2o_socket_write(sock, &buf, 1, on_refused);
}

/* ---- the sweep ---- */

static bool head_complete(const h2o_socket_t *sock, size_t limit)
{
    size_t n = sock->input->size < limit + 4 ? sock->input->size : limit + 4;
    return memmem(sock->input->bytes, n, "\r\n\r\n", 4) != NULL || memmem(sock->input->bytes, n, "\n\n", 2) != NULL;
}

static void sweep_one(server_worker *w, struct server_hup_slot *slot, int64_t now)
{
    h2o_socket_t *sock = slot->sock;
    if (!aio_list_is_empty(&slot->reqs) || sock->input->size == 0 || sock->_cb.write != NULL ||
        sock->_cb.read == NULL) { /* a request runs, nothing waits, or h2o is writing or not reading */
        slot->partial_since = 0;
        return;
    }
    size_t limit = w->cfg->max_header_bytes;
    if (head_complete(sock, limit)) { /* its body is arriving */
        slot->partial_since = 0;
        return;
    }
    if (sock->input->size > limit) {
        refuse(slot, 431, "the request's header section is larger than the server accepts");
    } else if (slot->partial_since == 0) {
        slot->partial_since = now;
    } else if (now - slot->partial_since > AIO_MSEC(w->cfg->header_timeout_ms)) {
        refuse(slot, 408, "the request's header section did not arrive in time");
    }
}

static void on_tick(h2o_timeout_entry_t *e)
{
    server_worker *w = aio_container_of(e, server_worker, guard_entry);
    int64_t now = aio_now();
    for (size_t i = 0; i < w->nhup_slots; i++)
        if (w->hup_slots[i].sock != NULL)
            sweep_one(w, &w->hup_slots[i], now);
    h2o_timeout_link(w->ctx.loop, &w->guard_tick, &w->guard_entry);
}

/* The bytes a Host value may hold: letters, digits and
 * -._~%!$&'()*+,;=:[] (a bit per byte, built once). */
static bool host_byte[256]; /* a byte-per-entry table: one load per byte checked */

static void host_bytes_init(void)
{
    for (int c = 0; c < 256; c++)
        host_byte[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       (c != 0 && strchr("-._~%!$&'()*+,;=:[]", c) != NULL);
}

void server__guard_init(server_worker *w)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, host_bytes_init);
    h2o_timeout_init(w->ctx.loop, &w->guard_tick, GUARD_TICK_MS);
    w->guard_entry.cb = on_tick;
    h2o_timeout_link(w->ctx.loop, &w->guard_tick, &w->guard_entry);
}

void server__guard_dispose(server_worker *w)
{
    h2o_timeout_unlink(&w->guard_entry);
    h2o_timeout_dispose(w->ctx.loop, &w->guard_tick);
    for (size_t i = 0; i < w->nhup_slots; i++)
        if (w->hup_slots[i].sock != NULL)
            w->hup_slots[i].sock->on_close.cb = NULL;
}

/* ---- the raw head of an HTTP/1 request ---- */

/* An absolute-form target ("http://host/path"): its path part. */
h2o_iovec_t server__guard_route_path(const h2o_req_t *req)
{
    h2o_iovec_t p = req->path;
    size_t skip = 0;
    if (p.len >= 7 && strncasecmp(p.base, "http://", 7) == 0)
        skip = 7;
    else if (p.len >= 8 && strncasecmp(p.base, "https://", 8) == 0)
        skip = 8;
    if (skip == 0)
        return p;
    const char *slash = memchr(p.base + skip, '/', p.len - skip);
    return slash ? h2o_iovec_init(slash, (size_t)(p.base + p.len - slash)) : h2o_iovec_init("/", 1);
}

static bool valid_host(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    const unsigned char *u = (const unsigned char *)s;
    bool ok = true;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) /* four bytes a step: host names are a dozen or two */
        ok &= host_byte[u[i]] & host_byte[u[i + 1]] & host_byte[u[i + 2]] & host_byte[u[i + 3]];
    for (; i < len; i++)
        ok &= host_byte[u[i]];
    return ok;
}

struct head_facts {
    size_t len;                 /* of the header section, request line included */
    int content_lengths, hosts; /* how many of each */
    bool differing_lengths, transfer_encoding, bad_host;
};

/* Whether the n bytes at s are the lowercase letters and dashes of name,
 * in either case. */
static bool name_is(const char *s, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + ('a' - 'A')) : s[i];
        if (c != name[i])
            return false;
    }
    return true;
}

/* One header line (name: value, without the line end). Only three names
 * matter, so a line whose first letter starts none of them is passed over
 * at once. */
static void note_line(struct head_facts *f, const char *line, size_t len, const char **first_cl, size_t *first_cl_len)
{
    char c0 = (char)(line[0] | 0x20); /* lower case for a letter */
    if (c0 != 'c' && c0 != 't' && c0 != 'h')
        return;
    size_t nlen;
    if (len > 14 && line[14] == ':' && name_is(line, "content-length", 14))
        nlen = 14;
    else if (len > 17 && line[17] == ':' && name_is(line, "transfer-encoding", 17))
        nlen = 17;
    else if (len > 4 && line[4] == ':' && name_is(line, "host", 4))
        nlen = 4;
    else
        return;
    const char *v = line + nlen + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (nlen == 14) {
        if (f->content_lengths++ > 0 && (vlen != *first_cl_len || memcmp(v, *first_cl, vlen) != 0))
            f->differing_lengths = true;
        *first_cl = v, *first_cl_len = vlen;
    } else if (nlen == 17) {
        f->transfer_encoding = true;
    } else {
        f->hosts++;
        f->bad_host |= !valid_host(v, vlen);
    }
}

/* Reads the head at the front of buf; false if there is none. */
static bool read_head(const char *buf, size_t size, struct head_facts *f)
{
    *f = (struct head_facts){0};
    const char *first_cl = NULL, *p = memchr(buf, '\n', size), *end = buf + size;
    size_t first_cl_len = 0;
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1, *nl = memchr(line, '\n', (size_t)(end - line));
        if (nl == NULL)
            return false;
        size_t len = (size_t)(nl - line) - (nl > line && nl[-1] == '\r');
        if (len == 0) {
            f->len = (size_t)(nl + 1 - buf);
            return true;
        }
        note_line(f, line, len, &first_cl, &first_cl_len);
        p = nl;
    }
    return false;
}

static bool reject(server_req *r, h2o_req_t *req, int status, const char *detail)
{
    req->http1_is_persistent = 0; /* whatever follows on the connection is not to be trusted */
    server_respond_problem(r, status, detail, NULL);
    return false;
}

bool server__guard_head(server_req *r, h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    struct head_facts f;
    if (req->version >= 0x200 || sock == NULL || !read_head(sock->input->bytes, sock->input->size, &f))
        return true;
    if (f.len > r->worker->cfg->max_header_bytes)
        return reject(r, req, 431, "the request's header section is larger than the server accepts");
    if (f.transfer_encoding && f.content_lengths > 0)
        return reject(r, req, 400, "Content-Length and Transfer-Encoding together are ambiguous");
    if (f.differing_lengths)
        return reject(r, req, 400, "Content-Length values differ");
    if (req->version >= 0x101 && (f.hosts != 1 || f.bad_host))
        return reject(r, req, 400, f.hosts == 0 ? "an HTTP/1.1 request needs a Host header"
                                   : f.hosts > 1 ? "more than one Host header"
                                                 : "the Host header is not a valid host");
    return true;
}
