#include <assert.h>
#include <stdalign.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "db/db.h"
#include "server/log.h"
#include "server/query.h"
#include "server/server_int.h"

_Thread_local server_worker *server__worker;

#define MAX_PARAMS SERVER_ROUTER_MAX_PARAMS

struct server_req {
    h2o_req_t *h2o; /* NULL once h2o disposed the request (client gone, or answered) */
    server_worker *worker;
    const server_route_def *route;
    const char *pattern;
    char *method, *path, *query;
    size_t query_len;
    size_t nparams;
    struct {
        const char *name;
        char *value;
    } params[MAX_PARAMS];
    char *body;
    size_t body_len;
    server_arena arena;
    int64_t start, deadline;
    aio_task *task;
    aio_link link;     /* on the worker's list of running requests */
    aio_link hup_link; /* on its connection's hang-up slot */
    int refs;      /* the handler side, plus h2o's request while it lives */
    int status;
    size_t bytes;
    bool responded; /* the response has started */
    bool finished;  /* ... and was handed to h2o entirely */
    bool client_gone; /* the client hung up while the request ran */
    /* h2o must only be asked to write from inside its own loop phase (a
     * write it completes at once is finished by a callback h2o runs before
     * its next poll; from a task, that order breaks and h2o aborts). Tasks
     * therefore queue what to send and h2o's zero timeout sends it. */
    h2o_timeout_entry_t send_entry;
    int send_action;
    h2o_iovec_t send_body;
    struct stream *stream;
    char id[48];
    server_client client;
    alignas(max_align_t) char arena_buf[1024]; /* the arena's first kilobyte */
};

/* ---- small helpers ---- */

const char *server_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static uint64_t next_random(server_worker *w)
{
    /* xorshift64*: request ids need to be unique, not secret */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* 16 lowercase hex digits and a NUL (per request: no printf) */
static void hex16(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
    out[16] = '\0';
}

static bool valid_request_id(const char *s, size_t len)
{
    if (len == 0 || len > 40)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    }
    return true;
}

static const h2o_header_t *find_header(const h2o_req_t *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h->name->len == len && strncasecmp(h->name->base, name, len) == 0)
            return h;
    }
    return NULL;
}

/* Every value of a header, joined with ", " in order (as HTTP allows),
 * into buf; NULL if absent or too long to be trusted. */
static const char *joined_header(const h2o_req_t *req, const char *name, char *buf, size_t cap)
{
    size_t len = strlen(name), used = 0;
    bool any = false;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h->name->len != len || strncasecmp(h->name->base, name, len) != 0)
            continue;
        if (used + h->value.len + 3 > cap)
            return NULL;
        if (any) {
            memcpy(buf + used, ", ", 2);
            used += 2;
        }
        memcpy(buf + used, h->value.base, h->value.len);
        used += h->value.len;
        any = true;
    }
    if (!any)
        return NULL;
    buf[used] = '\0';
    return buf;
}

/* ---- problem+json ---- */

static char *problem_body(h2o_mem_pool_t *pool, int status, const char *detail, json_t *errors, size_t *len)
{
    char *s = server_problem_json(status, detail, errors, len);
    if (s == NULL)
        return NULL;
    char *out = h2o_mem_alloc_pool(pool, *len);
    memcpy(out, s, *len);
    free(s);
    return out;
}

/* h2o answers some errors itself (400 for a broken request line or chunked
 * body, 413 for a body over the limit, 417): as text/plain. This filter
 * gives them the problem+json form every other error has. */
struct problem_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
};

static void problem_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct problem_ostream *o = (void *)self;
    (void)bufs;
    (void)n;
    h2o_iovec_t body = o->body;
    o->body.len = 0;
    h2o_ostream_send_next(self, req, body.len ? &body : NULL, body.len ? 1 : 0, state);
}

static void on_setup_problem(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (req->res.status >= 400 && i >= 0 &&
        h2o_memis(req->res.headers.entries[i].value.base, 10, H2O_STRLIT("text/plain"))) {
        char detail[128];
        snprintf(detail, sizeof(detail), "%s",
                 req->res.status == 413 ? "the request body is larger than the configured limit" : "malformed request");
        size_t len;
        char *body = problem_body(&req->pool, req->res.status, detail, NULL, &len);
        if (body != NULL) {
            req->res.reason = server_status_reason(req->res.status);
            req->res.headers.entries[i].value = h2o_iovec_init(H2O_STRLIT("application/problem+json"));
            req->res.content_length = len;
            /* like every other answer, it carries a request id */
            const h2o_header_t *given = find_header(req, "x-request-id");
            h2o_iovec_t id;
            if (given != NULL && valid_request_id(given->value.base, given->value.len)) {
                id = h2o_strdup(&req->pool, given->value.base, given->value.len);
            } else {
                id.base = h2o_mem_alloc_pool(&req->pool, 17);
                id.len = (size_t)snprintf(id.base, 17, "%016llx", (unsigned long long)next_random(server__worker));
            }
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, id.base, id.len);
            struct problem_ostream *o = (void *)h2o_add_ostream(req, sizeof(*o), slot);
            o->super.do_send = problem_do_send;
            o->body = h2o_iovec_init(body, len);
            slot = &o->super.next;
        }
    }
    h2o_setup_next_ostream(req, slot);
}

void server__register_problem_filter(h2o_pathconf_t *pathconf)
{
    h2o_filter_t *f = h2o_create_filter(pathconf, sizeof(*f));
    f->on_setup_ostream = on_setup_problem;
}

/* Answers straight from the h2o callback, before any server_req exists. */
static void early_problem(h2o_req_t *req, int status, const char *detail, const char *allow)
{
    size_t len;
    char *body = problem_body(&req->pool, status, detail, NULL, &len);
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/problem+json"));
    if (allow != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    if (status == 503)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* ---- access log ---- */

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

/* ---- client hang-ups ---- */

static void on_hangups(h2o_socket_t *sock, const char *err)
{
    server_worker *w = sock->data;
    (void)err;
    struct epoll_event ev[64];
    int n = epoll_wait(w->hup_ep, ev, 64, 0);
    for (int i = 0; i < n; i++) {
        uint32_t fd = (uint32_t)ev[i].data.u64, gen = (uint32_t)(ev[i].data.u64 >> 32);
        if (fd >= w->nhup_slots || w->hup_slots[fd].gen != gen)
            continue;
        aio_list_foreach(l, &w->hup_slots[fd].reqs)
        {
            server_req *r = aio_container_of(l, server_req, hup_link);
            if (!r->finished && r->task != NULL) {
                r->client_gone = true;
                aio_task_cancel(r->task); /* the client left: stop the work and its queries */
            }
        }
    }
}

int server__hangup_init(server_worker *w)
{
    w->hup_ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->hup_ep < 0)
        return -errno;
    w->hup_sock = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->hup_ep, H2O_SOCKET_FLAG_DONT_READ);
    w->hup_sock->data = w;
    h2o_socket_read_start(w->hup_sock, on_hangups);
    return 0;
}

void server__watch_hangup(server_worker *w, h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock);
    if (w->hup_sock == NULL || fd < 0)
        return;
    if ((size_t)fd >= w->nhup_slots) {
        size_t n = w->nhup_slots ? w->nhup_slots : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct server_hup_slot *slots = malloc(n * sizeof(*slots));
        if (slots == NULL)
            return;
        for (size_t i = 0; i < n; i++) {
            slots[i].gen = i < w->nhup_slots ? w->hup_slots[i].gen : 0;
            aio_list_init(&slots[i].reqs);
            if (i < w->nhup_slots) /* lists point at their anchors: move them */
                aio_list_splice(&slots[i].reqs, &w->hup_slots[i].reqs);
        }
        free(w->hup_slots);
        w->hup_slots = slots;
        w->nhup_slots = n;
    }
    struct server_hup_slot *slot = &w->hup_slots[fd];
    slot->gen++;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = (uint64_t)slot->gen << 32 | (uint32_t)fd};
    epoll_ctl(w->hup_ep, EPOLL_CTL_ADD, fd, &ev);
}

void server__log_init(server_worker *w) { aio_deferred_init(&w->log_flush, on_log_flush); }

void server__cancel_requests(server_worker *w)
{
    aio_list_foreach(l, &w->requests) aio_task_cancel(aio_container_of(l, server_req, link)->task);
}

static void access_log(server_req *r)
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
    char path[512];
    server_log_json_escape(path, sizeof(path), r->path, (int)strlen(r->path));
    double ms = (double)(aio_now() - r->start) / 1e6;
    int n;
    if (w->cfg->log_json) {
        n = snprintf(w->log_buf + w->log_len, w->log_cap - w->log_len,
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"type\":\"access\",\"request_id\":\"%s\","
                     "\"client\":\"%s\",\"proto\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"route\":\"%s\","
                     "\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f}\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, r->id, r->client.addr, r->client.proto, r->method, path, r->pattern,
                     r->status, r->bytes, ms);
    } else {
        n = snprintf(w->log_buf + w->log_len, w->log_cap - w->log_len, "%s %s %s %d %zu %.3fms %s\n", r->client.addr,
                     r->method, path, r->status, r->bytes, ms, r->id);
    }
    if (n > 0 && (size_t)n < w->log_cap - w->log_len) {
        w->log_len += (size_t)n;
        aio_defer(&w->log_flush);
    }
}

/* ---- request lifetime ---- */


/* A streamed response: h2o asks for the next chunk with proceed. */
struct stream {
    h2o_generator_t gen;
    server_req *r;
    aio_event ready; /* h2o is ready for the next chunk */
    bool started;    /* h2o_start_response was called */
    bool stopped;    /* h2o gave up on the response */
    bool abort;      /* end the response as failed at the next proceed */
    char *buf;       /* the chunk in flight (h2o does not copy; freed with the request) */
    size_t cap;
};

static void stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct stream *s = (struct stream *)g;
    if (s->abort) {
        s->abort = false;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR); /* we are in h2o's callback: safe */
        return;
    }
    aio_event_set(&s->ready);
}

enum { SEND_NONE, SEND_INLINE, SEND_CHUNK, SEND_FINAL, SEND_ERROR };

static void perform_send(server_req *r)
{
    int action = r->send_action;
    r->send_action = SEND_NONE;
    h2o_req_t *req = r->h2o;
    if (req == NULL || action == SEND_NONE)
        return;
    if (action == SEND_INLINE) {
        static h2o_generator_t inline_gen = {NULL, NULL};
        h2o_start_response(req, &inline_gen);
        if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
            h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL); /* headers only, Content-Length kept */
        else
            h2o_send(req, &r->send_body, 1, H2O_SEND_STATE_FINAL);
        return;
    }
    struct stream *s = r->stream;
    if (!s->started) {
        s->started = true;
        h2o_start_response(req, &s->gen);
    }
    if (action == SEND_CHUNK)
        h2o_send(req, &r->send_body, 1, H2O_SEND_STATE_IN_PROGRESS);
    else
        h2o_send(req, NULL, 0, action == SEND_FINAL ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR);
}

static void req_unref(server_req *r)
{
    if (--r->refs > 0)
        return;
    h2o_timeout_unlink(&r->send_entry);
    free(r->stream ? r->stream->buf : NULL);
    server_arena_dispose(&r->arena);
    free(r);
}

static void on_send_entry(h2o_timeout_entry_t *e)
{
    server_req *r = aio_container_of(e, server_req, send_entry);
    perform_send(r);
    req_unref(r);
}

/* Answers sent at once from h2o's callbacks per loop turn. h2o takes a
 * pipelined request as soon as the previous answer is written, within the
 * same turn: answered at once without a limit, a connection with thousands
 * of requests queued would hold the thread until they are all through, and
 * every other connection of the worker would wait (seconds, measured). */
#define SENDS_PER_TURN 256

static void on_turn_end(aio_deferred *d) { aio_container_of(d, server_worker, turn_end)->turn_sends = 0; }

void server__sends_init(server_worker *w)
{
    aio_deferred_init(&w->turn_end, on_turn_end);
    h2o_timeout_init(w->ctx.loop, &w->next_turn, 1); /* the next millisecond: a later turn, after a poll */
}

/* Sends now when in h2o's own context (an immediate handler) and within
 * the turn's budget, else from h2o's timeouts: the zero timeout, in the
 * same loop turn, for a task; the next turn for an answer over budget. */
static void schedule_send(server_req *r, int action)
{
    server_worker *w = r->worker;
    bool in_h2o = aio_task_current() == NULL;
    r->send_action = action;
    if (in_h2o && w->turn_sends < SENDS_PER_TURN) {
        if (w->turn_sends++ == 0)
            aio_defer(&w->turn_end);
        perform_send(r);
        return;
    }
    if (!h2o_timeout_is_linked(&r->send_entry)) {
        r->refs++;
        h2o_timeout_link(w->ctx.loop, in_h2o ? &w->next_turn : &w->ctx.zero_timeout, &r->send_entry);
    }
}

static void stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    struct stream *s = (struct stream *)g;
    s->stopped = true;
    aio_event_set(&s->ready);
}

/* h2o disposes its request: the response went out, or the client is gone. */
static void on_h2o_req_gone(void *p)
{
    server_req *r = *(server_req **)p;
    r->h2o = NULL;
    if (r->stream != NULL) {
        r->stream->stopped = true;
        aio_event_set(&r->stream->ready);
    }
    if (!r->finished && r->task != NULL)
        aio_task_cancel(r->task); /* nobody is left to answer: stop its queries too */
    req_unref(r);
}

static void req_finish(server_req *r)
{
    server_worker *w = r->worker;
    if (r->stream != NULL && !r->finished && r->h2o != NULL) {
        /* the handler left a stream open: end it as failed, so the client
         * sees a truncated body rather than a complete one; h2o takes it
         * only once the chunk in flight went out */
        r->finished = true;
        if (aio_event_is_set(&r->stream->ready))
            schedule_send(r, SEND_ERROR);
        else
            r->stream->abort = true;
    }
    if (!r->responded) {
        r->responded = true;
        r->status = 499; /* nginx's "client closed request", for the log */
    }
    if (server_log_enabled(SERVER_LOG_INFO)) /* access lines are info events: LOG_LEVEL=warn turns them off */
        access_log(r);
    server_metrics_request(w->metrics, r->route, r->status, aio_now() - r->start);
    aio_link_unlink(&r->hup_link);
    if (r->task != NULL) {
        aio_link_unlink(&r->link);
        if (--w->inflight == 0)
            aio_event_set(&w->idle);
    }
    req_unref(r);
}

static int request_task(void *arg)
{
    server_req *r = arg;
    aio_timeout scope;
    aio_timeout_open_at(&scope, r->route->streaming ? AIO_NEVER : r->deadline);
    int rc = r->route->fn(r);
    bool expired = aio_timeout_close(&scope) < 0;
    if (!r->responded && r->h2o != NULL) {
        if (r->client_gone) {
            /* h2o waits for a response before it looks at the socket again:
             * give it one, and have it close the connection */
            r->h2o->http1_is_persistent = 0;
            server_respond_problem(r, 499, "the client closed the connection", NULL);
        } else if (expired || rc == -ETIMEDOUT)
            server_respond_problem(r, 504, "the request's deadline passed before it completed", NULL);
        else if (rc == -ECANCELED && r->worker->stopping)
            server_respond_problem(r, 503, "the server is shutting down", NULL);
        else
            server_respond_problem(r, 500, "the request failed", NULL);
    }
    req_finish(r);
    return 0;
}

/* Request-Timeout: <ms> may shorten the deadline, never lengthen it. */
static int request_deadline(h2o_req_t *req, const server_config *cfg, int64_t now, int64_t *deadline)
{
    int64_t ms = cfg->request_timeout_ms;
    const h2o_header_t *h = find_header(req, "request-timeout");
    if (h != NULL && server_parse_request_timeout(h->value.base, h->value.len, cfg->request_timeout_ms, &ms) < 0)
        return -EINVAL;
    *deadline = now + AIO_MSEC(ms);
    return 0;
}

int server__on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    server_worker *w = server__worker;
    const char *path = req->path.base;
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    server_route_match m;
    int rc = server_router_match(w->router, req->method.base, req->method.len, path, path_len, &m);
    const server_route_def *route = rc == 0 ? m.data : NULL;
    int64_t now = aio_now(), deadline = now;

    server_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        early_problem(req, 503, "out of memory", NULL);
        return 0;
    }
    server_arena_init_with(&r->arena, r->arena_buf, sizeof(r->arena_buf));
    r->h2o = req;
    r->worker = w;
    r->route = route;
    r->pattern = rc == 0 ? m.pattern : "unmatched";
    r->start = now;
    r->refs = 1;
    r->send_entry.cb = on_send_entry;
    aio_link_init(&r->link);
    aio_link_init(&r->hup_link);
    r->method = server_arena_strndup(&r->arena, req->method.base, req->method.len);
    r->path = server_arena_strndup(&r->arena, path, path_len);
    r->query_len = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
    r->query = server_arena_strndup(&r->arena, req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "",
                                    r->query_len);
    for (size_t i = 0; rc == 0 && i < m.nparams; i++) {
        r->params[i].name = m.params[i].name;
        r->params[i].value = server_arena_strndup(&r->arena, m.params[i].value, m.params[i].len);
    }
    r->nparams = rc == 0 ? m.nparams : 0;
    if (req->entity.base != NULL) {
        r->body = server_arena_strndup(&r->arena, req->entity.base, req->entity.len);
        r->body_len = req->entity.len;
    }
    const h2o_header_t *rid = find_header(req, "x-request-id");
    if (rid != NULL && valid_request_id(rid->value.base, rid->value.len))
        snprintf(r->id, sizeof(r->id), "%.*s", (int)rid->value.len, rid->value.base);
    else
        hex16(r->id, next_random(w));
    char peer[64];
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl == 0 || h2o_socket_getnumerichost((struct sockaddr *)&ss, sl, peer) == SIZE_MAX)
        snprintf(peer, sizeof(peer), "-");
    char fwd[1024], xff[1024], xfp[128];
    server_proxies_resolve(w->proxies, peer, req->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http",
                           joined_header(req, "forwarded", fwd, sizeof(fwd)),
                           joined_header(req, "x-forwarded-for", xff, sizeof(xff)),
                           joined_header(req, "x-forwarded-proto", xfp, sizeof(xfp)), &r->client);
    if (r->method == NULL || r->path == NULL || r->query == NULL || (req->entity.base && r->body == NULL)) {
        early_problem(req, 503, "out of memory", NULL);
        req_unref(r);
        return 0;
    }

    /* learn when h2o lets go of the request */
    server_req **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_h2o_req_gone);
    *slot = r;
    r->refs++;

    if (rc == -ENOENT) {
        server_respond_problem(r, 404, "no such resource", NULL);
    } else if (rc == -EOPNOTSUPP) {
        server_respond_header(r, "allow", m.allow);
        server_respond_problem(r, 405, "method not allowed on this resource", NULL);
    } else if (request_deadline(req, w->cfg, now, &deadline) < 0) {
        server_respond_problem(r, 400, "Request-Timeout must be a positive number of milliseconds", NULL);
    } else if (!route->immediate && (w->stopping || w->inflight >= (size_t)w->cfg->max_inflight)) {
        server_metrics_rejected(w->metrics);
        server_respond_problem(r, 503, w->stopping ? "the server is shutting down" : "the server is at capacity", NULL);
    } else {
        r->deadline = deadline;
        if (route->immediate) {
            route->fn(r);
            if (!r->responded && r->h2o != NULL)
                server_respond_problem(r, 500, "the request failed", NULL);
        } else if ((r->task = aio_task_spawn(request_task, r)) == NULL) {
            server_respond_problem(r, 503, "out of memory", NULL);
        } else {
            aio_task_detach(r->task);
            h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
            int fd = sock ? h2o_socket_get_fd(sock) : -1;
            if (fd >= 0 && (size_t)fd < w->nhup_slots)
                aio_list_push_back(&w->hup_slots[fd].reqs, &r->hup_link);
            w->inflight++;
            aio_event_clear(&w->idle);
            aio_list_push_back(&w->requests, &r->link);
            return 0;
        }
    }
    req_finish(r);
    return 0;
}

/* ---- reading ---- */

int64_t server_req_deadline(const server_req *r) { return r->deadline; }
int64_t server_req_timeout(const server_req *r) { return AIO_MSEC(r->worker->cfg->request_timeout_ms); }
int64_t server_req_stall_timeout(const server_req *r) { return AIO_MSEC(r->worker->cfg->stream_stall_timeout_ms); }

const char *server_req_method(const server_req *r) { return r->method; }
const char *server_req_path(const server_req *r) { return r->path; }
const char *server_req_route(const server_req *r) { return r->pattern; }
server_arena *server_req_arena(server_req *r) { return &r->arena; }
bool server_req_alive(const server_req *r) { return r->h2o != NULL; }
const char *server_req_id(const server_req *r) { return r->id; }
bool server_responded(const server_req *r) { return r->responded; }

const char *server_req_query(const server_req *r, size_t *len)
{
    if (len != NULL)
        *len = r->query_len;
    return r->query;
}

const char *server_req_param(const server_req *r, const char *name)
{
    for (size_t i = 0; i < r->nparams; i++)
        if (strcmp(r->params[i].name, name) == 0)
            return r->params[i].value;
    return NULL;
}

const char *server_req_body(const server_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}

const char *server_req_header(server_req *r, const char *name)
{
    if (r->h2o == NULL)
        return NULL;
    const h2o_header_t *h = find_header(r->h2o, name);
    return h ? server_arena_strndup(&r->arena, h->value.base, h->value.len) : NULL;
}

/* ---- answering ---- */

void server_respond_header(server_req *r, const char *name, const char *value)
{
    if (r->h2o == NULL)
        return;
    h2o_req_t *req = r->h2o;
    size_t nlen = strlen(name), vlen = strlen(value);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, vlen);
    const h2o_token_t *token = h2o_lookup_token(name, nlen);
    if (token != NULL) {
        h2o_add_header(&req->pool, &req->res.headers, token, NULL, v.base, v.len);
    } else {
        h2o_iovec_t n = h2o_strdup(&req->pool, name, nlen);
        h2o_strtolower(n.base, n.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 0, NULL, v.base, v.len);
    }
}

void server_respond(server_req *r, int status, const char *content_type, const char *body, size_t len)
{
    assert(!r->responded && "one response per request");
    r->responded = true;
    r->status = status;
    r->bytes = len;
    if (r->h2o == NULL)
        return;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->id, strlen(r->id));
    req->res.content_length = len;
    r->finished = true;
    r->send_body = h2o_strdup(&req->pool, body, len);
    schedule_send(r, SEND_INLINE);
}

void server_stream_start(server_req *r, int status, const char *content_type)
{
    assert(!r->responded && "one response per request");
    r->responded = true;
    r->status = status;
    struct stream *s = server_arena_alloc(&r->arena, sizeof(*s));
    if (s == NULL || r->h2o == NULL) {
        r->finished = true; /* nothing will be sent: writes fail */
        return;
    }
    memset(s, 0, sizeof(*s));
    s->gen.proceed = stream_proceed;
    s->gen.stop = stream_stop;
    s->r = r;
    aio_event_init(&s->ready);
    aio_event_set(&s->ready);
    r->stream = s;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->id, strlen(r->id));
    /* h2o_start_response comes with the first chunk (see perform_send) */
}

/* Awaits h2o's go-ahead for the next chunk, for at most the stall limit
 * (STREAM_STALL_TIMEOUT_MS): a client that pauses is normal, one that stops
 * reading for good must not hold the request (and its transaction)
 * forever. The limit is separate from the request deadline, which covers
 * the time up to the first byte only. */
static int stream_wait(server_req *r)
{
    struct stream *s = r->stream;
    if (s == NULL || r->finished)
        return -ECANCELED;
    aio_timeout stall;
    aio_timeout_open(&stall, server_req_stall_timeout(r));
    int rc = aio_event_wait(&s->ready);
    aio_timeout_close(&stall);
    if (rc < 0)
        return rc;
    if (s->stopped || r->h2o == NULL)
        return -ECANCELED;
    aio_event_clear(&s->ready);
    return 0;
}

int server_stream_write(server_req *r, const char *data, size_t len)
{
    int rc = stream_wait(r);
    if (rc < 0)
        return rc;
    struct stream *s = r->stream;
    if (len > s->cap) {
        char *buf = realloc(s->buf, len);
        if (buf == NULL)
            return -ENOMEM;
        s->buf = buf;
        s->cap = len;
    }
    memcpy(s->buf, data, len);
    r->send_body = h2o_iovec_init(s->buf, len);
    r->bytes += len;
    schedule_send(r, SEND_CHUNK);
    return 0;
}

int server_stream_end(server_req *r)
{
    int rc = stream_wait(r);
    if (rc < 0)
        return rc;
    r->finished = true;
    schedule_send(r, SEND_FINAL);
    return 0;
}

void server_respond_json(server_req *r, int status, const json_t *body)
{
    char stack[4096];
    size_t len = json_dumpb(body, stack, sizeof(stack), JSON_COMPACT);
    if (len == 0) {
        server_respond_problem(r, 500, "the response could not be encoded", NULL);
        return;
    }
    if (len <= sizeof(stack)) {
        server_respond(r, status, "application/json", stack, len);
        return;
    }
    char *big = malloc(len);
    if (big == NULL || json_dumpb(body, big, len, JSON_COMPACT) != len) {
        free(big);
        server_respond_problem(r, 500, "the response could not be encoded", NULL);
        return;
    }
    server_respond(r, status, "application/json", big, len);
    free(big);
}

char *server_problem_json(int status, const char *detail, json_t *errors, size_t *len)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", server_status_reason(status), "status",
                          status, "detail", detail ? detail : server_status_reason(status));
    if (p != NULL && errors != NULL)
        json_object_set(p, "errors", errors);
    json_decref(errors);
    char *s = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    *len = s ? strlen(s) : 0;
    return s;
}

void server_respond_problem(server_req *r, int status, const char *detail, json_t *errors)
{
    size_t len;
    char *s = server_problem_json(status, detail, errors, &len);
    if (status == 503)
        server_respond_header(r, "retry-after", "1");
    server_respond(r, status, "application/problem+json", s ? s : "{}", s ? len : 2);
    free(s);
}

void server_respond_db_error(server_req *r, int rc, const PGresult *res, int fk_status)
{
    switch (rc) {
    case -ETIMEDOUT:
        server_respond_problem(r, 504, "the request's deadline passed before it completed", NULL);
        return;
    case -EBUSY:
        server_respond_problem(r, 503, "no database connection became free in time", NULL);
        return;
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -EHOSTUNREACH:
        server_respond_problem(r, 503, "the database is unavailable", NULL);
        return;
    case -ECANCELED:
        if (r->worker->stopping)
            server_respond_problem(r, 503, "the server is shutting down", NULL);
        return; /* the client is gone: nobody to answer */
    case -EREMOTEIO: {
        const char *st = db_sqlstate(res);
        if (strcmp(st, "23505") == 0) {
            server_respond_problem(r, 409, "a resource with the same unique value already exists", NULL);
            return;
        }
        if (strcmp(st, "23503") == 0) {
            server_respond_problem(r, fk_status ? fk_status : 409,
                                   fk_status == 404 ? "a referenced resource does not exist"
                                                    : "the resource is still referenced",
                                   NULL);
            return;
        }
        if (strcmp(st, "23514") == 0 || strcmp(st, "22003") == 0 || strcmp(st, "22001") == 0) {
            server_respond_problem(r, 422, "the request violates a constraint", NULL);
            return;
        }
        if (strcmp(st, "57014") == 0) {
            server_respond_problem(r, 504, "the statement was cancelled on the server (statement_timeout)", NULL);
            return;
        }
        if (strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 || strcmp(st, "57P03") == 0) {
            server_respond_problem(r, 503, "the database is unavailable", NULL);
            return;
        }
        if (*st == '\0')
            log_error("request %s: database error (no error result: a Prepare failed; see the warning above)", r->id);
        else
            log_error("request %s: database error %s: %s", r->id, st, PQresultErrorMessage(res));
        break;
    }
    default:
        log_error("request %s: database call failed: %s", r->id, strerror(-rc));
        break;
    }
    server_respond_problem(r, 500, "the request failed", NULL);
}
