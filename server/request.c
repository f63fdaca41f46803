/* The request's life: h2o hands it over (server__on_req), it is routed,
 * given an id, a deadline and a task, and ends once answered and let go by
 * both h2o and its handler. The accessors handlers read it with. */
#include <stdalign.h>
#include <stddef.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/fmt.h"
#include "base/log.h"
#include "server/server_int.h"
#include "server/parse.h"

_Thread_local server_worker *server__worker;

/* ---- request ids and headers ---- */

uint64_t server__next_random(server_worker *w)
{
    /* xorshift64*: request ids need to be unique, not secret */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* 16 lowercase hex digits and a NUL (per request: no printf), a byte at a time */
static void hex16(char *out, uint64_t v)
{
    static const char pairs[513] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                                   "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                                   "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                                   "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                                   "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                                   "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                                   "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                                   "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
#pragma GCC unroll 8
    for (int i = 7; i >= 0; i--, v >>= 8)
        memcpy(out + 2 * i, pairs + 2 * (v & 0xff), 2);
    out[16] = '\0';
}

bool server__valid_request_id(const char *s, size_t len)
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


const h2o_header_t *server__find_header_len(const h2o_req_t *req, const char *name, size_t len)
{
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


/* ---- lifetime ---- */

/* Finished requests kept for reuse by this thread: a server_req (1.5 KiB)
 * is past glibc's per-thread cache, so malloc and free of one went to the
 * shared bins on every request. Under AddressSanitizer nothing is kept, so
 * a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define REQ_CACHE_KEEP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REQ_CACHE_KEEP 0
#endif
#endif
#ifndef REQ_CACHE_KEEP
#define REQ_CACHE_KEEP 64
#endif

static _Thread_local server_req *req_cache[64];
static _Thread_local int req_cached;

/* A request with every field zero but the arena's first buffer. */
static server_req *req_alloc(void)
{
    server_req *r = req_cached > 0 ? req_cache[--req_cached] : malloc(sizeof(*r));
    if (r != NULL)
        memset(r, 0, offsetof(server_req, arena_buf));
    return r;
}

void server__req_cache_drain(void)
{
    while (req_cached > 0)
        free(req_cache[--req_cached]);
}

void server__req_unref(server_req *r)
{
    if (--r->refs > 0)
        return;
    h2o_timeout_unlink(&r->send_entry);
    free(r->stream ? r->stream->buf : NULL);
    base_arena_dispose(&r->arena);
    if (req_cached < REQ_CACHE_KEEP)
        req_cache[req_cached++] = r;
    else
        free(r);
}


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
    server__req_unref(r);
}

static void req_finish(server_req *r)
{
    server_worker *w = r->worker;
    if (r->stream != NULL && (!r->stream->ended || r->stream->dropped))
        r->cut = true;
    if (r->stream != NULL && !r->finished && r->h2o != NULL) {
        /* the handler left a stream open: end it as failed, so the client
         * sees a truncated body rather than a complete one; h2o takes it
         * only once the chunk in flight went out */
        r->finished = true;
        if (aio_event_is_set(&r->stream->ready))
            server__schedule_send(r, SEND_ERROR);
        else
            r->stream->abort = true;
    }
    if (!r->responded) {
        r->responded = true;
        r->status = 499; /* nginx's "client closed request", for the log */
    }
    if (base_log_enabled(BASE_LOG_INFO)) /* access lines are info events: LOG_LEVEL=warn turns them off */
        server__access_log(r);
    server_metrics_request(w->metrics, r->route, r->status, aio_now() - r->start);
    aio_link_unlink(&r->hup_link);
    if (r->task != NULL) {
        aio_link_unlink(&r->link);
        if (--w->inflight == 0)
            aio_event_set(&w->idle);
    }
    server__req_unref(r);
}

/* The application's middleware around the route's handler. */
static int run_handler(server_req *r)
{
    const server_app *app = r->worker->app;
    return app->around != NULL ? app->around(r, r->route->handler) : r->route->handler(r);
}

static int request_task(void *arg)
{
    server_req *r = arg;
    aio_timeout scope;
    aio_timeout_open_at(&scope, r->route->streaming ? AIO_NEVER : r->deadline);
    int rc = run_handler(r);
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
    const h2o_header_t *h = server__find_header(req, "request-timeout");
    if (h != NULL && server_parse_request_timeout(h->value.base, h->value.len, cfg->request_timeout_ms, &ms) < 0)
        return -EINVAL;
    *deadline = now + AIO_MSEC(ms);
    return 0;
}

/* The method as a constant when it is one of the usual ones (no copy). */
static const char *known_method(h2o_iovec_t m)
{
#define IS(s) (m.len == sizeof(s) - 1 && memcmp(m.base, s, sizeof(s) - 1) == 0 ? s : NULL)
    const char *k = NULL;
    switch (m.len > 0 ? m.base[0] : 0) {
    case 'G': k = IS("GET"); break;
    case 'P': k = m.len == 4 ? IS("POST") : m.len == 3 ? IS("PUT") : IS("PATCH"); break;
    case 'D': k = IS("DELETE"); break;
    case 'H': k = IS("HEAD"); break;
    case 'O': k = IS("OPTIONS"); break;
    }
#undef IS
    return k;
}

/* Copies what the handler reads into the request's arena (h2o's request
 * may go away first: a client that hangs up); false on ENOMEM. */
static bool copy_request(server_req *r, h2o_req_t *req, h2o_iovec_t path, size_t query_at,
                         const server_route_match *m, bool matched)
{
    size_t path_len = query_at != SIZE_MAX ? query_at : path.len;
    r->method = known_method(req->method);
    if (r->method == NULL)
        r->method = base_arena_strndup(&r->arena, req->method.base, req->method.len);
    r->path = base_arena_strndup(&r->arena, path.base, path_len);
    r->query_len = query_at != SIZE_MAX ? path.len - query_at - 1 : 0;
    r->query = query_at != SIZE_MAX ? base_arena_strndup(&r->arena, path.base + query_at + 1, r->query_len) : "";
    r->nparams = matched ? m->nparams : 0;
    for (size_t i = 0; i < r->nparams; i++) {
        r->params[i].name = m->params[i].name;
        r->params[i].value = base_arena_strndup(&r->arena, m->params[i].value, m->params[i].len);
        if (r->params[i].value == NULL)
            return false;
    }
    if (req->entity.base != NULL) {
        r->body = base_arena_strndup(&r->arena, req->entity.base, req->entity.len);
        r->body_len = req->entity.len;
        if (r->body == NULL)
            return false;
    }
    return r->method != NULL && r->path != NULL && r->query != NULL;
}

/* The connection's peer as text into out (64 bytes), "-" if unknown. IPv4,
 * nearly every request, without h2o's sprintf. */
static void format_peer(struct sockaddr_storage *ss, socklen_t sl, char *out)
{
    if (sl >= sizeof(struct sockaddr_in) && ss->ss_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
        size_t n = 0;
        for (int i = 0; i < 4; i++) {
            if (i > 0)
                out[n++] = '.';
            n += base_fmt_i64(out + n, a[i]);
        }
        out[n] = '\0';
        return;
    }
    if (sl == 0 || h2o_socket_getnumerichost((struct sockaddr *)ss, sl, out) == SIZE_MAX)
        strcpy(out, "-");
}

/* X-Request-Id (the client's or its proxy's, if well-formed, else a new
 * one) and the client's address and scheme through TRUSTED_PROXIES. */
static void identify(server_req *r, h2o_req_t *req)
{
    const h2o_header_t *rid = server__find_header(req, "x-request-id");
    if (rid != NULL && server__valid_request_id(rid->value.base, rid->value.len))
        snprintf(r->id, sizeof(r->id), "%.*s", (int)rid->value.len, rid->value.base);
    else
        hex16(r->id, server__next_random(r->worker));
    bool https = req->scheme == &H2O_URL_SCHEME_HTTPS;
    const char *scheme = https ? "https" : "http";
    r->peer_len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&r->peer);
    if (!server_proxies_any(r->worker->proxies)) {
        /* no proxy of ours: the peer is the client, its headers are not
         * looked at, and its address is written out when first asked for
         * (server__req_client) */
        r->client.addr[0] = '\0';
        memcpy(r->client.proto, scheme, https ? sizeof("https") : sizeof("http"));
        return;
    }
    char peer[64];
    format_peer(&r->peer, r->peer_len, peer);
    /* only the header the proxies are configured to set: a client's own
     * Forwarded, passed through by a proxy that sets X-Forwarded-For,
     * must not name the client */
    if (!server_proxies_trusts(r->worker->proxies, peer)) {
        server_proxies_resolve(NULL, peer, scheme, NULL, NULL, NULL, &r->client);
        return;
    }
    char fwd[1024], xff[1024], xfp[128];
    bool rfc7239 = r->worker->cfg->forwarded_header == SERVER_FORWARDED_RFC7239;
    server_proxies_resolve(r->worker->proxies, peer, scheme,
                           rfc7239 ? joined_header(req, "forwarded", fwd, sizeof(fwd)) : NULL,
                           rfc7239 ? NULL : joined_header(req, "x-forwarded-for", xff, sizeof(xff)),
                           rfc7239 ? NULL : joined_header(req, "x-forwarded-proto", xfp, sizeof(xfp)), &r->client);
}

const server_client *server__req_client(server_req *r)
{
    if (r->client.addr[0] == '\0') {
        _Static_assert(sizeof(r->client.addr) >= 64, "room for any numeric host");
        format_peer(&r->peer, r->peer_len, r->client.addr);
    }
    return &r->client;
}

static server_req *req_create(server_worker *w, h2o_req_t *req, h2o_iovec_t path, size_t query_at,
                              const server_route_match *m, int match_rc)
{
    server_req *r = req_alloc();
    if (r == NULL)
        return NULL;
    base_arena_init_with(&r->arena, r->arena_buf, sizeof(r->arena_buf));
    r->h2o = req;
    r->worker = w;
    r->route = match_rc == 0 ? m->data : NULL;
    r->pattern = match_rc == 0 ? m->pattern : "unmatched";
    r->start = aio_turn_now(); /* it arrived before this turn began */
    r->refs = 1;
    r->send_entry.cb = server__on_send_entry;
    aio_link_init(&r->link);
    aio_link_init(&r->hup_link);
    if (!copy_request(r, req, path, query_at, m, match_rc == 0)) {
        server__req_unref(r);
        return NULL;
    }
    identify(r, req);
    /* learn when h2o lets go of the request */
    server_req **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_h2o_req_gone);
    *slot = r;
    r->refs++;
    return r;
}

/* Runs the routed request: at once (immediate handlers), or in a task of
 * its own, watched for the client's hang-up; false if it ended here. */
static bool dispatch(server_req *r, h2o_req_t *req)
{
    server_worker *w = r->worker;
    if (r->route->immediate) {
        run_handler(r);
        if (!r->responded && r->h2o != NULL)
            server_respond_problem(r, 500, "the request failed", NULL);
        return false;
    }
    if ((r->task = aio_task_spawn(request_task, r)) == NULL) {
        server_respond_problem(r, 503, "out of memory", NULL);
        return false;
    }
    aio_task_detach(r->task);
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    if (fd >= 0 && (size_t)fd < w->nhup_slots)
        aio_list_push_back(&w->hup_slots[fd].reqs, &r->hup_link);
    w->inflight++;
    aio_event_clear(&w->idle);
    aio_list_push_back(&w->requests, &r->link);
    return true;
}

/* ---- CORS (CORS_ALLOW_ORIGINS) ---- */

/* Whether origin (len bytes) is in the comma list; "*" lets any in. */
static bool cors_allowed(const char *list, const char *origin, size_t len)
{
    const char *p = list;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        size_t a = 0, b = n;
        while (a < b && p[a] == ' ')
            a++;
        while (b > a && p[b - 1] == ' ')
            b--;
        if ((b - a == 1 && p[a] == '*') || (b - a == len && memcmp(p + a, origin, len) == 0))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

/* With CORS configured: Vary: Origin on every answer (it depends on the
 * origin), and for an allowed origin the headers a browser needs to let
 * the page read the answer. Returns whether the origin is allowed. No
 * credentials are allowed (a bearer token is a header the page sets, not
 * a cookie), so "*" is answered as "*". */
static bool cors_headers(server_req *r, h2o_req_t *req)
{
    const char *list = r->worker->cfg->cors_allow_origins;
    if (list[0] == '\0')
        return false;
    server_respond_header(r, "vary", "Origin");
    const h2o_header_t *o = server__find_header(req, "origin");
    if (o == NULL || o->value.len == 0 || o->value.len > 256 || !cors_allowed(list, o->value.base, o->value.len))
        return false;
    bool any = strcmp(list, "*") == 0;
    char origin[257];
    snprintf(origin, sizeof(origin), "%.*s", (int)o->value.len, o->value.base);
    server_respond_header(r, "access-control-allow-origin", any ? "*" : origin);
    server_respond_header(r, "access-control-expose-headers",
                          "Location, X-Request-Id, Retry-After, RateLimit, RateLimit-Policy, WWW-Authenticate");
    return true;
}

/* A preflight: OPTIONS with Access-Control-Request-Method. */
static bool is_preflight(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) &&
           server__find_header(req, "access-control-request-method") != NULL;
}

static void cors_preflight(server_req *r, const char *allow)
{
    server_respond_header(r, "access-control-allow-methods", allow);
    server_respond_header(r, "access-control-allow-headers",
                          "Authorization, Content-Type, Idempotency-Key, Request-Timeout, Last-Event-ID, X-Request-Id");
    server_respond_header(r, "access-control-max-age", "600");
    server_respond(r, 204, NULL, "", 0);
}

int server__on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    server_worker *w = server__worker;
    h2o_iovec_t path = server__guard_route_path(req);
    size_t query_at = req->query_at != SIZE_MAX ? req->query_at - (size_t)(path.base - req->path.base) : SIZE_MAX;
    size_t path_len = query_at != SIZE_MAX ? query_at : path.len;
    server_route_match m;
    int rc = server_router_match(w->router, req->method.base, req->method.len, path.base, path_len, &m);
    server_req *r = req_create(w, req, path, query_at, &m, rc);
    if (r == NULL) {
        server__early_problem(req, 503, "out of memory", NULL);
        return 0;
    }
    bool cors = cors_headers(r, req);
    if (!server__guard_head(r, req)) {
        /* answered: 400 or 431, the connection closing */
    } else if (cors && rc == -EOPNOTSUPP && is_preflight(req)) {
        cors_preflight(r, m.allow);
    } else if (rc == -ENOENT) {
        server_respond_problem(r, 404, "no such resource", NULL);
    } else if (rc == -EOPNOTSUPP) {
        server_respond_header(r, "allow", m.allow);
        server_respond_problem(r, 405, "method not allowed on this resource", NULL);
    } else if (request_deadline(req, w->cfg, r->start, &r->deadline) < 0) {
        server_respond_problem(r, 400, "Request-Timeout must be a positive number of milliseconds", NULL);
    } else if (!r->route->immediate && (w->stopping || w->inflight >= (size_t)w->cfg->max_inflight)) {
        server_metrics_rejected(w->metrics);
        server_respond_problem(r, 503, w->stopping ? "the server is shutting down" : "the server is at capacity", NULL);
    } else if (dispatch(r, req)) {
        return 0;
    }
    req_finish(r);
    return 0;
}

/* ---- reading ---- */

int64_t server_req_deadline(const server_req *r) { return r->deadline; }
const server_config *server_req_config(const server_req *r) { return r->worker->cfg; }
int server_req_worker(const server_req *r) { return r->worker->id; }
int64_t server_req_timeout(const server_req *r) { return AIO_MSEC(r->worker->cfg->request_timeout_ms); }
int64_t server_req_stall_timeout(const server_req *r) { return AIO_MSEC(r->worker->cfg->stream_stall_timeout_ms); }

const char *server_req_method(const server_req *r) { return r->method; }
const char *server_req_path(const server_req *r) { return r->path; }
const char *server_req_route(const server_req *r) { return r->pattern; }
base_arena *server_req_arena(server_req *r) { return &r->arena; }
bool server_req_alive(const server_req *r) { return r->h2o != NULL; }
const char *server_req_id(const server_req *r) { return r->id; }
const server_route_def *server_req_route_def(const server_req *r) { return r->route; }
const char *server_req_client_addr(server_req *r) { return server__req_client(r)->addr; }
void server_req_set_local(server_req *r, void *p) { r->local = p; }
void *server_req_local(const server_req *r) { return r->local; }
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
    const h2o_header_t *h = server__find_header(r->h2o, name);
    return h ? base_arena_strndup(&r->arena, h->value.base, h->value.len) : NULL;
}

