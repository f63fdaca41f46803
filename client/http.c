#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "aio/aio.h"
#include "base/log.h"
#include "http.h"

/* A semaphore per scheme://host:port, alive while a request uses it. */
typedef struct host_slot {
    aio_link link;
    aio_sem sem;
    size_t users;
    char key[];
} host_slot;

/* The calling thread's client: the multi, the epoll set of its sockets and
 * timer, and the task that drives it. Freed when the driver has been
 * cancelled (the loop ends) and no fetch holds it any more. */
typedef struct client {
    CURLM *multi;
    int epfd, tfd;
    int64_t armed_ns;   /* the timerfd's expiry (CLOCK_MONOTONIC), 0: none pending */
    aio_deferred soon;  /* curl's "time out as soon as possible", at the end of this turn */
    aio_fd *watch;
    size_t users;
    bool closing;
    aio_list hosts;
    client_http_options opts;
} client;

/* One transfer, on the fetching task's stack. */
typedef struct transfer {
    aio_future done;
    client_http_response *resp;
    size_t max_body;
    bool in_multi, too_big;
    bool public_only, refused; /* refused: an address public_only turned down */
    char refused_addr[INET6_ADDRSTRLEN];
} transfer;

#define MAX_HEADERS (64 * 1024)

/* Each thread's clients: [1] for public_only requests, [0] for the rest.
 * Apart, so that a public_only request may reuse a connection: every one
 * in its client's cache was opened through the check, and none opened
 * without it (to a private address, say) can be reused by it. */
static _Thread_local client *current[2];
static _Thread_local client_http_options thread_opts;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static bool global_ok;

static void global_init(void)
{
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (global_ok && !client_http_async_dns())
        log_warn("libcurl resolves names on the calling thread: DNS will block the loop");
}

bool client_http_async_dns(void)
{
    return (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_ASYNCHDNS) != 0;
}

/* Connections the multi keeps open between requests. libcurl's default,
 * four times the transfers in progress, shrinks with them: after a burst
 * to a receiver, most of its connections were closed and opened again
 * for the next (about 140 new connections a second under
 * bench/webhooks.sh's fast run). Enough for every host's limit, four
 * hosts over. */
static long idle_kept(const client_http_options *o)
{
    long per_host = (long)(o->max_per_host ? o->max_per_host : 8);
    return 4 * per_host;
}

int client_http_configure(const client_http_options *opts)
{
    thread_opts = *opts;
    for (size_t i = 0; i < 2; i++) {
        client *c = current[i];
        if (c == NULL)
            continue;
        c->opts = *opts;
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)(opts->max_per_host ? opts->max_per_host : 8));
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, idle_kept(opts));
    }
    return 0;
}

/* ---- the multi on the loop: sockets and the timer in one epoll set ---- */

/* A socket curl watches is in the epoll set; curl keeps, per socket, the
 * pointer curl_multi_assign gave it (socketp) until it stops watching it
 * (CURL_POLL_REMOVE), so a non-NULL socketp says "added already": one
 * system call per change, not a MOD that fails before every ADD. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    client *c = userp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = s};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (socketp != NULL) {
        if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev); /* closed and opened again under the same number */
        return 0;
    }
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
        epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev);
    curl_multi_assign(c->multi, s, c);
    return 0;
}

/* curl's timer, for as little as a system call per transfer (on a virtual
 * machine, re-arming a timerfd was a tenth of the server's CPU while it
 * delivered webhooks): "as soon as possible" is a deferred call at the
 * end of this turn, and an armed expiry earlier than the one asked for is
 * left as it is, as is one curl no longer needs. Both only make curl look
 * early, and when the timerfd fires, on_expiry asks curl when it wants to
 * be called next: there is always a wake-up at or before curl's. */
static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    client *c = userp;
    if (timeout_ms < 0)
        return 0;
    if (timeout_ms == 0) {
        aio_defer(&c->soon);
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t at = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + (int64_t)timeout_ms * 1000000;
    if (c->armed_ns != 0 && c->armed_ns <= at)
        return 0;
    struct itimerspec its = {.it_value = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000}};
    if (timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        return -1;
    c->armed_ns = at;
    return 0;
}

static void collect_done(client *c);

/* curl's timeout came (or came early): it handles what expired, and is
 * asked for its next one, which an early wake-up may have skipped. */
static void on_expiry(client *c)
{
    int running;
    long next = -1;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(c);
    if (curl_multi_timeout(c->multi, &next) == CURLM_OK && next >= 0)
        on_timer(c->multi, next, c);
}

static void on_soon(aio_deferred *d) { on_expiry(aio_container_of(d, client, soon)); }

static int map_code(CURL *e, CURLcode code, const transfer *t)
{
    long os_errno = 0;
    switch (code) {
    case CURLE_OK: return 0;
    case CURLE_WRITE_ERROR: return t->too_big ? -EFBIG : -EIO;
    case CURLE_FILESIZE_EXCEEDED: return -EFBIG;
    case CURLE_COULDNT_RESOLVE_HOST: return -ENXIO;
    case CURLE_COULDNT_CONNECT:
        if (t->refused)
            return -EPERM;
        curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
        return os_errno > 0 ? -(int)os_errno : -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
    case CURLE_PEER_FAILED_VERIFICATION: return -EACCES;
    case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY: return -EPROTO;
    case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING: return -ECONNRESET;
    case CURLE_URL_MALFORMAT: case CURLE_UNSUPPORTED_PROTOCOL: return -EINVAL;
    case CURLE_OUT_OF_MEMORY: return -ENOMEM;
    default: return -EIO;
    }
}

/* Finished transfers leave the multi (their connection goes back to the
 * cache) and wake their tasks. */
static void collect_done(client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode code = msg->data.result;
        transfer *t;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
        int rc = map_code(e, code, t);
        curl_multi_remove_handle(c->multi, e);
        t->in_multi = false;
        aio_future_set(&t->done, rc);
    }
}

static void dispatch(client *c)
{
    struct epoll_event evs[32];
    int n, running;
    do {
        n = epoll_wait(c->epfd, evs, 32, 0);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == c->tfd) {
                uint64_t expirations;
                if (read(c->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                    log_warn("client: reading the timerfd: %s", strerror(errno));
                c->armed_ns = 0;
                on_expiry(c);
                continue;
            }
            int mask = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP))
                mask |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
            curl_multi_socket_action(c->multi, fd, mask, &running);
        }
        collect_done(c);
    } while (n == 32);
}

static void client_free(client *c)
{
    assert(c->users == 0);
    aio_deferred_cancel(&c->soon);
    curl_multi_cleanup(c->multi);
    aio_fd_close(c->watch);
    close(c->tfd);
    close(c->epfd);
    free(c);
}

/* The driver: runs until the loop cancels it at its end. */
static int drive(void *arg)
{
    client *c = arg;
    while (aio_fd_wait(c->watch, AIO_READABLE) > 0)
        dispatch(c);
    c->closing = true;
    for (size_t i = 0; i < 2; i++)
        if (current[i] == c)
            current[i] = NULL;
    if (c->users == 0)
        client_free(c);
    return 0;
}

static int client_setup(client *c)
{
    aio_deferred_init(&c->soon, on_soon);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (c->epfd < 0 || c->tfd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->tfd};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->tfd, &ev) != 0)
        return -errno;
    if ((c->watch = aio_fd_open(c->epfd)) == NULL)
        return -errno;
    if ((c->multi = curl_multi_init()) == NULL)
        return -ENOMEM;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)(c->opts.max_per_host ? c->opts.max_per_host : 8));
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, idle_kept(&c->opts));
    aio_task *driver = aio_task_spawn(drive, c);
    if (driver == NULL)
        return -ENOMEM;
    aio_task_detach(driver);
    return 0;
}

static client *client_get(bool public_only)
{
    pthread_once(&global_once, global_init);
    if (!global_ok)
        return NULL;
    if (current[public_only] != NULL)
        return current[public_only];
    client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->epfd = c->tfd = -1;
    c->opts = thread_opts;
    aio_list_init(&c->hosts);
    if (client_setup(c) != 0) {
        if (c->multi)
            curl_multi_cleanup(c->multi);
        aio_fd_close(c->watch);
        if (c->tfd >= 0)
            close(c->tfd);
        if (c->epfd >= 0)
            close(c->epfd);
        free(c);
        return NULL;
    }
    return current[public_only] = c;
}

/* ---- per-host limits ---- */

static int host_key(const char *url, char *key, size_t size)
{
    CURLU *u = curl_url();
    if (u == NULL)
        return -ENOMEM;
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -EINVAL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)) {
        int n = snprintf(key, size, "%s://%s:%s", scheme, host, port);
        rc = n > 0 && (size_t)n < size ? 0 : -EINVAL;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

static host_slot *host_get(client *c, const char *key)
{
    aio_list_foreach(l, &c->hosts) {
        host_slot *h = aio_container_of(l, host_slot, link);
        if (strcmp(h->key, key) == 0) {
            h->users++;
            return h;
        }
    }
    host_slot *h = calloc(1, sizeof(*h) + strlen(key) + 1);
    if (h == NULL)
        return NULL;
    strcpy(h->key, key);
    aio_sem_init(&h->sem, c->opts.max_per_host ? c->opts.max_per_host : 8);
    h->users = 1;
    aio_list_push_back(&c->hosts, &h->link);
    return h;
}

static void host_put(host_slot *h)
{
    if (--h->users == 0) {
        aio_link_unlink(&h->link);
        free(h);
    }
}

/* ---- one transfer ---- */

static bool append(char **buf, size_t *len, const char *data, size_t n, size_t max)
{
    if (n > max || *len > max - n)
        return false;
    char *grown = realloc(*buf, *len + n + 1);
    if (grown == NULL)
        return false;
    memcpy(grown + *len, data, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
    return true;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    if (!append(&t->resp->body, &t->resp->body_len, data, n, t->max_body)) {
        t->too_big = true;
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    client_http_response *r = t->resp;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        r->headers_len = 0; /* a new response (after 100 Continue): keep the final one's */
    if (!append(&r->headers, &r->headers_len, data, n, MAX_HEADERS)) {
        t->too_big = true;
        return 0;
    }
    return n;
}

static void easy_method(CURL *e, const client_http_request *req)
{
    const char *method = req->method ? req->method : req->body ? "POST" : "GET";
    if (req->body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0 || req->body != NULL)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
}

static bool v4_public(uint32_t a)
{
    return !((a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 || (a >> 22) == (100u << 2 | 1) /* 100.64/10 */
             || (a >> 16) == (169u << 8 | 254) || (a >> 20) == (172u << 4 | 1) /* 172.16/12 */
             || (a >> 16) == (192u << 8 | 168) || (a >> 8) == (192u << 16 | 0 << 8 | 0) /* 192.0.0/24 */
             || (a >> 28) >= 14 /* multicast, reserved, broadcast */);
}

bool client_http_address_public(const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        return v4_public(ntohl(in->sin_addr.s_addr));
    }
    if (addr->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;
    const uint8_t *b = a->s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
        uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_public(v4);
    }
    if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_MULTICAST(a))
        return false;
    if ((b[0] & 0xfe) == 0xfc) /* fc00::/7, unique local */
        return false;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10, link-local */
        return false;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) /* fec0::/10, the old site-local */
        return false;
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) /* 64:ff9b::/96 NAT64 leads to IPv4 */
        return false;
    return true;
}

/* Called by libcurl for every address it is about to connect to, after
 * DNS: the one place where the check cannot be fooled by a name that
 * resolves differently later. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *address)
{
    transfer *t = arg;
    (void)purpose;
    if (t->public_only && !client_http_address_public(&address->addr)) {
        t->refused = true;
        const void *raw = address->family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&address->addr)->sin6_addr
                                                      : (const void *)&((struct sockaddr_in *)&address->addr)->sin_addr;
        if (inet_ntop(address->family, raw, t->refused_addr, sizeof(t->refused_addr)) == NULL)
            snprintf(t->refused_addr, sizeof(t->refused_addr), "?");
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static CURL *easy_create(client *c, const client_http_request *req, transfer *t, struct curl_slist **headers)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    /* no signals from resolver timeouts; and an abort while a name is being
     * resolved must not join the resolver thread (7.88 waits for it unless
     * QUICK_EXIT is set): the thread finishes and frees itself */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->resp->error);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_body);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Waiting for a connection that may multiplex pays off only over TLS,
     * where ALPN settles it at connect. A plain http:// connection counts
     * as "maybe" until its first response arrives, so with PIPEWAIT a
     * second request to a host whose first is slow would wait for it
     * instead of opening a connection of its own. */
    if (strncasecmp(req->url, "https:", 6) == 0)
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    int64_t connect = c->opts.connect_timeout ? c->opts.connect_timeout : AIO_SEC(10);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect / 1000000));
    if (req->ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    if (req->public_only) /* a proxy's address would pass no check */
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    easy_method(e, req);
    /* no "Expect: 100-continue" wait on large bodies */
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; list != NULL && i < req->nheaders; i++) {
        struct curl_slist *next = curl_slist_append(list, req->headers[i]);
        if (next == NULL) {
            curl_slist_free_all(list);
            list = NULL;
        }
        list = next;
    }
    if (list == NULL) {
        curl_easy_cleanup(e);
        return NULL;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    *headers = list;
    return e;
}

/* Runs the transfer while holding a slot of its host. */
static int transfer_run(client *c, const client_http_request *req, client_http_response *resp)
{
    transfer t = {.resp = resp,
                  .max_body = req->max_response ? req->max_response : CLIENT_HTTP_MAX_RESPONSE_DEFAULT,
                  .public_only = req->public_only};
    aio_future_init(&t.done);
    struct curl_slist *headers = NULL;
    CURL *e = easy_create(c, req, &t, &headers);
    if (e == NULL)
        return -ENOMEM;
    int rc = -ENOMEM;
    if (curl_multi_add_handle(c->multi, e) == CURLM_OK) {
        t.in_multi = true;
        rc = aio_future_wait(&t.done);
    }
    if (t.in_multi) /* cancelled or timed out: abort now, closing its connection */
        curl_multi_remove_handle(c->multi, e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp->status);
    if (rc == -EPERM)
        snprintf(resp->error, sizeof(resp->error),
                 "refused to connect to %s: not a public address (loopback, private, link-local or reserved)",
                 t.refused_addr);
    long version = 0;
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    resp->http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : 1;
    curl_easy_cleanup(e);
    curl_slist_free_all(headers);
    return rc;
}

int client_http_fetch(const client_http_request *req, client_http_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->body = calloc(1, 1);
    resp->headers = calloc(1, 1);
    if (resp->body == NULL || resp->headers == NULL)
        return -ENOMEM;
    int rc = aio_checkpoint();
    if (rc < 0)
        return rc;
    char key[512];
    if ((rc = host_key(req->url, key, sizeof(key))) < 0) {
        snprintf(resp->error, sizeof(resp->error), "not an http(s) URL: %s", req->url);
        return rc;
    }
    client *c = client_get(req->public_only);
    if (c == NULL)
        return -ENOMEM;
    host_slot *h = host_get(c, key);
    if (h == NULL)
        return -ENOMEM;
    c->users++;
    if ((rc = aio_sem_acquire(&h->sem)) == 0) {
        rc = transfer_run(c, req, resp);
        aio_sem_release(&h->sem);
    }
    host_put(h);
    if (--c->users == 0 && c->closing)
        client_free(c);
    return rc;
}

void client_http_response_dispose(client_http_response *resp)
{
    free(resp->body);
    free(resp->headers);
    resp->body = resp->headers = NULL;
}
