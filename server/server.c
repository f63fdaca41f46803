#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "db/tx.h"
#include "server/log.h"
#include "server/server.h"
#include "server/server_int.h"

#define STOP_DRAIN_AFTER_CANCEL AIO_SEC(3)
#define KEEPALIVE_CLOSE_WAIT AIO_SEC(2)

static h2o_globalconf_t globalconf;
static server_proxies *proxies;
static SSL_CTX *tls_ctx; /* NULL: plain HTTP */

/* TLS_CERT_FILE + TLS_KEY_FILE: HTTPS, with HTTP/2 or HTTP/1.1 chosen by
 * ALPN. Read once at startup, before any worker runs (blocking file reads
 * are fine there). Returns NULL with a message naming the file on error. */
static SSL_CTX *tls_create(const server_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    const char *what = NULL, *file = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1)
        what = "cannot load the certificate chain", file = cfg->tls_cert_file;
    else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1)
        what = "cannot load the private key", file = cfg->tls_key_file;
    else if (SSL_CTX_check_private_key(ctx) != 1)
        what = "the private key does not match the certificate", file = cfg->tls_key_file;
    if (what != NULL) {
        char reason[160];
        ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
        ERR_clear_error();
        snprintf(err, errlen, "TLS_CERT_FILE/TLS_KEY_FILE: %s (%s): %s", what, file, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
}

int server_check_config(const server_config *cfg, char *err, size_t errlen)
{
    server_proxies *p;
    int rc = server_proxies_parse(cfg->trusted_proxies, &p, err, errlen);
    if (rc < 0)
        return rc;
    server_proxies_free(p);
    if (cfg->tls_cert_file[0] != '\0') {
        SSL_CTX *ctx = tls_create(cfg, err, errlen);
        if (ctx == NULL)
            return -EINVAL;
        SSL_CTX_free(ctx);
    }
    return 0;
}

static server_metrics **metric_blocks; /* one per worker, for /metrics */
static size_t nmetric_blocks;

char *server_render_metrics(size_t *len) { return server_metrics_render(metric_blocks, nmetric_blocks, len); }

/* Publishes the worker's pool and database counters once a second. */
static int metrics_sampler(void *arg)
{
    server_worker *w = arg;
    while (!w->stopping) {
        server_metrics_sample(w->metrics, (int64_t)w->inflight);
        if (aio_sleep(AIO_SEC(1)) < 0)
            break;
    }
    return 0;
}

bool server_stopping(void) { return server__worker != NULL && server__worker->stopping; }

/* ---- listening sockets, opened before any thread starts ---- */

static int open_listener(const server_config *cfg, char *err, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int e = getaddrinfo(cfg->host, port, &hints, &res);
    if (e != 0) {
        snprintf(err, errlen, "HOST (--host) \"%s\": %s", cfg->host, gai_strerror(e));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int on = 1, off = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->host, cfg->port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- one worker thread ---- */

static void on_accept(h2o_socket_t *listener, const char *err)
{
    server_worker *w = listener->data;
    if (err != NULL)
        return;
    /* level-triggered: take a batch, the kernel tells again if more wait */
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        server__watch_hangup(w, sock);
        h2o_accept(&w->accept_ctx, sock);
    }
}

static bool h2o_conns_left(server_worker *w)
{
    return !h2o_linklist_is_empty(&w->ctx.http1._conns) || !h2o_linklist_is_empty(&w->ctx.http2._conns);
}

/* h2o_context_dispose asserts that no timeout entry is pending. Shutdown
 * leaves one of h2o's own behind: the HTTP/2 graceful-shutdown tick it
 * links when asked to shut down, which has nothing left to do once every
 * connection is closed. */
static bool h2o_context_disposable(server_worker *w)
{
    h2o_timeout_unlink(&w->ctx.http2._graceful_shutdown_timeout);
    h2o_timeout_t *timeouts[] = {&w->ctx.zero_timeout,     &w->ctx.one_sec_timeout,     &w->ctx.hundred_ms_timeout,
                                 &w->ctx.handshake_timeout, &w->ctx.http1.req_timeout, &w->ctx.http2.idle_timeout,
                                 &w->ctx.http2.graceful_shutdown_timeout, &w->ctx.proxy.io_timeout};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
        if (!h2o_linklist_is_empty(&timeouts[i]->_entries))
            return false;
    return !h2o_conns_left(w);
}

static int shutdown_task(void *arg)
{
    server_worker *w = arg;
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener); /* new connections now go to nobody: the port is closed */
        w->listener = NULL;
    }
    /* responses from now on say Connection: close */
    h2o_context_request_shutdown(&w->ctx);

    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(w->cfg->shutdown_grace_ms));
    int rc = aio_event_wait(&w->idle);
    aio_timeout_close(&scope);
    if (rc < 0 && w->inflight > 0) {
        log_warn("worker %d: %zu request(s) still running after the grace period: cancelling them", w->id, w->inflight);
        server__cancel_requests(w);
        aio_timeout_open(&scope, STOP_DRAIN_AFTER_CANCEL);
        aio_event_wait(&w->idle);
        aio_timeout_close(&scope);
    }
    /* idle keep-alive connections: let h2o's own idle timeout close them now */
    w->ctx.http1.req_timeout.timeout = 0;
    w->ctx.http2.idle_timeout.timeout = 0;
    int64_t until = aio_now() + KEEPALIVE_CLOSE_WAIT;
    while (h2o_conns_left(w) && aio_now() < until)
        aio_sleep(AIO_MSEC(10));
    db_pool_set_replicas(NULL, 0);
    for (size_t i = 0; i < w->nreplicas; i++)
        db_pool_destroy(w->replicas[i]);
    w->nreplicas = 0;
    if (w->pool != NULL) {
        db_pool_destroy(w->pool);
        w->pool = NULL;
    }
    aio_loop_stop(w->loop);
    return 0;
}

static void on_stop(h2o_socket_t *sock, const char *err)
{
    server_worker *w = sock->data;
    (void)err;
    uint64_t n;
    if (read(w->stop_fd, &n, sizeof(n)) < 0)
        return;
    if (w->stopping)
        return;
    w->stopping = true;
    aio_task *t = aio_task_spawn(shutdown_task, w);
    if (t != NULL)
        aio_task_detach(t);
    else
        aio_loop_stop(w->loop);
}

/* DATABASE_READ_URL holds one conninfo, or several URIs separated by
 * whitespace. Replicas get their own pools on every worker. */
static int start_replicas(server_worker *w, const db_pool_config *primary)
{
    const char *list = w->cfg->database_read_url;
    if (list == NULL || *list == '\0')
        return 0;
    char *copy = strdup(list);
    char *urls[16];
    size_t n = 0;
    if (copy == NULL)
        return -1;
    if (strstr(copy, "://") != NULL) {
        char *save = NULL;
        for (char *tok = strtok_r(copy, " \t\n", &save); tok && n < 16; tok = strtok_r(NULL, " \t\n", &save))
            urls[n++] = tok;
    } else {
        urls[n++] = copy;
    }
    w->replicas = calloc(n, sizeof(*w->replicas));
    int rc = w->replicas ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        db_pool_config rc_cfg = *primary;
        rc_cfg.conninfo = urls[i];
        rc_cfg.min = 0;
        rc_cfg.replica = true;
        rc_cfg.connect_timeout = AIO_SEC(1); /* a hung replica should leave the rotation soon */
        char err[512];
        if (db_pool_create(&rc_cfg, &w->replicas[i], err, sizeof(err)) < 0) {
            log_error("worker %d: DATABASE_READ_URL entry %zu: %s", w->id, i + 1, err);
            rc = -1;
        } else {
            w->nreplicas++;
        }
    }
    free(copy);
    db_pool_set_replicas(w->replicas, w->nreplicas);
    return rc;
}

static int slice(int total, int n, int i) { return total / n + (i < total % n ? 1 : 0); }

static void *worker_main(void *arg)
{
    server_worker *w = arg;
    server__worker = w;
    w->rng = (uint64_t)aio_now() ^ ((uint64_t)(w->id + 1) * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)getpid();
    if ((w->loop = aio_loop_create(NULL)) == NULL) {
        log_error("worker %d: cannot create its event loop", w->id);
        w->exit_status = 1;
        kill(getpid(), SIGTERM);
        return NULL;
    }
    h2o_context_init(&w->ctx, aio_loop_evloop(w->loop), &globalconf);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = globalconf.hosts;
    w->accept_ctx.ssl_ctx = tls_ctx;
    aio_list_init(&w->requests);
    aio_event_init(&w->idle);
    aio_event_set(&w->idle);
    server__log_init(w);
    server__sends_init(w);

    int n = w->cfg->threads;
    db_pool_config pc = {
        .conninfo = w->cfg->database_url,
        .min = slice(w->cfg->pool_min, n, w->id),
        .max = slice(w->cfg->pool_max, n, w->id),
        .acquire_timeout = AIO_MSEC(w->cfg->pool_acquire_timeout_ms),
        .connect_timeout = AIO_SEC(5),
        .idle_timeout = AIO_SEC(60),
        .statement_timeout_ms = w->cfg->statement_timeout_ms,
        .idle_in_transaction_timeout_ms = w->cfg->idle_in_transaction_timeout_ms,
        .transaction_pooler = w->cfg->database_pooler == SERVER_POOLER_TRANSACTION,
    };
    if (pc.max < 1)
        pc.max = 1;
    if (pc.min > pc.max)
        pc.min = pc.max;
    char err[512];
    if (db_pool_create(&pc, &w->pool, err, sizeof(err)) < 0) {
        log_error("worker %d: %s", w->id, err);
        w->exit_status = 1;
        kill(getpid(), SIGTERM); /* the main thread waits for a signal: give it one */
        return NULL;
    }

    if (server__hangup_init(w) < 0)
        log_warn("worker %d: cannot watch for client hang-ups: %s", w->id, strerror(errno));
    if (start_replicas(w, &pc) < 0) {
        w->exit_status = 1;
        kill(getpid(), SIGTERM);
        return NULL;
    }
    aio_task *sampler = aio_task_spawn(metrics_sampler, w);
    if (sampler != NULL)
        aio_task_detach(sampler);
    w->listener = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);
    w->stop_sock = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->stop_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->stop_sock->data = w;
    h2o_socket_read_start(w->stop_sock, on_stop);

    aio_loop_run(w->loop);

    h2o_socket_read_stop(w->stop_sock);
    h2o_socket_close(w->stop_sock);
    if (w->hup_sock != NULL) {
        h2o_socket_read_stop(w->hup_sock);
        h2o_socket_close(w->hup_sock);
    }
    if (h2o_context_disposable(w) && h2o_linklist_is_empty(&w->next_turn._entries)) {
        h2o_timeout_dispose(w->ctx.loop, &w->next_turn);
        h2o_context_dispose(&w->ctx);
        free(w->ctx.queue); /* the evloop build of h2o closes it but leaves it allocated */
        aio_loop_destroy(w->loop);
        w->loop = NULL;
        /* socket buffers h2o keeps for reuse in this thread's storage */
        while (h2o_socket_buffer_prototype.allocator.cnt > 0)
            free(h2o_mem_alloc_recycle(&h2o_socket_buffer_prototype.allocator, 0));
    } else {
        /* a client still holds a connection mid-response: the process exits
         * anyway, and h2o cannot dispose a context with live connections */
        log_warn("worker %d: exiting with client connections still open", w->id);
    }
    free(w->log_buf);
    w->log_buf = NULL;
    free(w->hup_slots);
    w->hup_slots = NULL;
    free(w->replicas);
    w->replicas = NULL;
    return NULL;
}

/* ---- the process ---- */

int server_run(const server_config *cfg, const server_route_def *routes, size_t nroutes)
{
    server_router *router = server_router_create();
    if (router == NULL)
        return 1;
    for (size_t i = 0; i < nroutes; i++) {
        int rc = server_router_add(router, routes[i].method, routes[i].pattern, &routes[i]);
        if (rc < 0) {
            log_error("route %s %s: %s", routes[i].method, routes[i].pattern, strerror(-rc));
            server_router_destroy(router);
            return 1;
        }
    }
    char perr[512];
    if (server_proxies_parse(cfg->trusted_proxies, &proxies, perr, sizeof(perr)) < 0) {
        log_error("%s", perr);
        server_router_destroy(router);
        return 2;
    }
    if (cfg->tls_cert_file[0] != '\0' && (tls_ctx = tls_create(cfg, perr, sizeof(perr))) == NULL) {
        log_error("%s", perr);
        server_router_destroy(router);
        server_proxies_free(proxies);
        proxies = NULL;
        return 2;
    }
    db_tx_set_default_retries(cfg->tx_max_retries);
    server_metrics_set_routes(routes, nroutes);

    h2o_config_init(&globalconf);
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT("h2pg"));
    globalconf.max_request_entity_size = cfg->max_body_bytes;
    globalconf.http1.req_timeout = (uint64_t)cfg->keepalive_timeout_ms;
    globalconf.http2.idle_timeout = (uint64_t)cfg->keepalive_timeout_ms;
    h2o_hostconf_t *host = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = server__on_req;
    server__register_problem_filter(path);
    server__register_problem_filter(&host->fallback_path);

    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* workers inherit the mask; this thread sigwaits */

    int n = cfg->threads;
    server_worker *workers = calloc((size_t)n, sizeof(*workers));
    int status = 0, started = 0;
    char err[512] = "";
    for (int i = 0; i < n && workers; i++) {
        server_worker *w = &workers[i];
        w->id = i;
        w->cfg = cfg;
        w->router = router;
        w->proxies = proxies;
        if ((w->metrics = server_metrics_create()) == NULL) {
            status = 1;
            break;
        }
        if ((w->listen_fd = open_listener(cfg, err, sizeof(err))) < 0 ||
            (w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
            log_error("%s", err[0] ? err : "cannot create an eventfd");
            status = 1;
            break;
        }
    }
    if (workers == NULL)
        status = 1;
    metric_blocks = calloc((size_t)n, sizeof(*metric_blocks));
    for (int i = 0; status == 0 && metric_blocks && i < n; i++)
        metric_blocks[i] = workers[i].metrics;
    nmetric_blocks = metric_blocks ? (size_t)n : 0;
    for (int i = 0; status == 0 && i < n; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            log_error("cannot start worker thread %d", i);
            status = 1;
            break;
        }
        started++;
    }
    if (status == 0)
        log_info("h2pg %s listening on %s:%d (%s) with %d thread(s)", PROJECT_VERSION, cfg->host, cfg->port,
                 tls_ctx ? "https, HTTP/2 and HTTP/1.1" : "http", n);
    if (status == 0 && cfg->idle_in_transaction_timeout_ms > 0 &&
        cfg->idle_in_transaction_timeout_ms <= cfg->stream_stall_timeout_ms)
        log_warn("IDLE_IN_TRANSACTION_TIMEOUT_MS (%d) is not above STREAM_STALL_TIMEOUT_MS (%d): PostgreSQL will end "
                 "an export whose reader pauses for %d ms",
                 cfg->idle_in_transaction_timeout_ms, cfg->stream_stall_timeout_ms, cfg->idle_in_transaction_timeout_ms);

    if (started > 0) {
        if (status == 0) {
            int sig;
            sigwait(&stop_signals, &sig);
            log_info("received %s: shutting down (grace %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     cfg->shutdown_grace_ms);
        }
        uint64_t one = 1;
        for (int i = 0; i < started; i++)
            if (write(workers[i].stop_fd, &one, sizeof(one)) < 0)
                log_error("cannot signal worker %d", i);
        for (int i = 0; i < started; i++) {
            pthread_join(workers[i].thread, NULL);
            if (workers[i].exit_status != 0)
                status = workers[i].exit_status;
        }
        log_info("stopped");
    }
    if (workers != NULL) {
        bool all_clean = true;
        for (int i = 0; i < n; i++)
            all_clean &= workers[i].loop == NULL;
        if (all_clean) {
            nmetric_blocks = 0;
            free(metric_blocks);
            metric_blocks = NULL;
            for (int i = 0; i < n; i++)
                server_metrics_destroy(workers[i].metrics);
            free(workers);
            h2o_config_dispose(&globalconf);
            server_router_destroy(router);
            server_proxies_free(proxies);
            proxies = NULL;
            SSL_CTX_free(tls_ctx);
            tls_ctx = NULL;
        }
    }
    aio_executor_shutdown();
    return status;
}
