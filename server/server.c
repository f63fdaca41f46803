/* The process: the route table, trusted proxies, TLS and h2o's
 * configuration, built once; the listening sockets, opened before any
 * thread starts; the worker threads; and the wait for a stop signal. */
#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "base/log.h"
#include "server/server_int.h"

/* What every worker shares, read-only once the workers run. */
static struct {
    h2o_globalconf_t globalconf;
    server_router *router;
    server_proxies *proxies;
    SSL_CTX *tls_ctx; /* NULL: plain HTTP */
    server_metrics **metric_blocks; /* one per worker, for /metrics */
    size_t nmetric_blocks;
} proc;

int server_check_config(const server_config *cfg, char *err, size_t errlen)
{
    server_proxies *p;
    int rc = server_proxies_parse(cfg->trusted_proxies, &p, err, errlen);
    if (rc < 0)
        return rc;
    server_proxies_free(p);
    if (cfg->tls_cert_file[0] != '\0') {
        SSL_CTX *ctx = server__tls_create(cfg, err, errlen);
        if (ctx == NULL)
            return -EINVAL;
        SSL_CTX_free(ctx);
    }
    return 0;
}

char *server_render_metrics(size_t *len) { return server_metrics_render(proc.metric_blocks, proc.nmetric_blocks, len); }

bool server_stopping(void) { return server__worker != NULL && server__worker->stopping; }

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

/* The router, proxies, TLS and h2o's configuration: 0, or the exit status. */
static int setup(const server_config *cfg, const server_app *app)
{
    if ((proc.router = server_router_create()) == NULL)
        return 1;
    for (size_t i = 0; i < app->nroutes; i++) {
        int rc = server_router_add(proc.router, app->routes[i].method, app->routes[i].pattern, &app->routes[i]);
        if (rc < 0) {
            log_error("route %s %s: %s", app->routes[i].method, app->routes[i].pattern, strerror(-rc));
            return 1;
        }
    }
    char err[512];
    if (server_proxies_parse(cfg->trusted_proxies, &proc.proxies, err, sizeof(err)) < 0 ||
        (cfg->tls_cert_file[0] != '\0' && (proc.tls_ctx = server__tls_create(cfg, err, sizeof(err))) == NULL)) {
        log_error("%s", err);
        return 2;
    }
    server_metrics_set_routes(app->routes, app->nroutes);
    h2o_globalconf_t *g = &proc.globalconf;
    h2o_config_init(g);
    /* h2o 2.2.5 writes its Server line with a sprintf of its own on every
     * HTTP/1 response (as much as the rest of the header section): none
     * here, and the problem filter adds "server: h2pg" as a plain header */
    g->server_name = h2o_iovec_init("", 0);
    log_debug("HTTP/1 response heads: %s", server__head_in_use() ? "written by head.c" : "glibc's sprintf");
    g->max_request_entity_size = cfg->max_body_bytes;
    g->http1.req_timeout = (uint64_t)cfg->keepalive_timeout_ms;
    g->http2.idle_timeout = (uint64_t)cfg->keepalive_timeout_ms;
    g->http1.upgrade_to_http2 = 0; /* no h2c (Upgrade or prior knowledge): HTTP/1.1 only, see tls.c */
    h2o_hostconf_t *host = h2o_config_register_host(g, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = server__on_req;
    server__register_problem_filter(path);
    server__register_problem_filter(&host->fallback_path);
    return 0;
}

static void teardown(void)
{
    h2o_config_dispose(&proc.globalconf);
    server_router_destroy(proc.router);
    server_proxies_free(proc.proxies);
    SSL_CTX_free(proc.tls_ctx);
    free(proc.metric_blocks);
    proc = (typeof(proc)){0};
}

/* WORKER_CPU_AFFINITY=auto: worker i gets the (i mod n)-th of the n CPUs
 * the process may run on, when THREADS is a multiple of n and n is at least
 * 2 (as TechEmpower's h2o entry pins its threads); otherwise, or off, -1.
 * A pinned event loop stays with its CPU's caches and is never migrated
 * between two requests: 3-5% less CPU per request on /json (README). */
static void assign_cpus(const server_config *cfg, server_worker *workers, int n)
{
    static int cpus[CPU_SETSIZE];
    int ncpus = 0;
    cpu_set_t allowed;
    if (cfg->worker_cpu_affinity == SERVER_CPU_AFFINITY_AUTO && sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed))
                cpus[ncpus++] = c;
    bool pin = ncpus >= 2 && n % ncpus == 0;
    for (int i = 0; i < n; i++)
        workers[i].cpu = pin ? cpus[i % ncpus] : -1;
}

/* Each worker's metrics block, listening socket and stop eventfd: 0 or 1. */
static int prepare_workers(const server_config *cfg, const server_app *app, server_worker *workers, int n)
{
    char err[512] = "";
    if ((proc.metric_blocks = calloc((size_t)n, sizeof(*proc.metric_blocks))) == NULL)
        return 1;
    for (int i = 0; i < n; i++) {
        server_worker *w = &workers[i];
        *w = (server_worker){.id = i, .cfg = cfg, .app = app, .router = proc.router, .proxies = proc.proxies,
                             .globalconf = &proc.globalconf, .tls_ctx = proc.tls_ctx, .listen_fd = -1, .stop_fd = -1};
        if ((w->metrics = server_metrics_create()) == NULL)
            return 1;
        proc.metric_blocks[i] = w->metrics;
        if ((w->listen_fd = open_listener(cfg, err, sizeof(err))) < 0 ||
            (w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
            log_error("%s", err[0] ? err : "cannot create an eventfd");
            return 1;
        }
    }
    proc.nmetric_blocks = (size_t)n;
    assign_cpus(cfg, workers, n);
    return 0;
}

/* Waits for SIGTERM/SIGINT (unless starting failed), then stops every
 * started worker and joins it; returns the exit status. */
static int run_until_stopped(const server_config *cfg, server_worker *workers, int started, int status,
                             sigset_t *stop_signals)
{
    if (status == 0) {
        log_info("h2pg %s listening on %s:%d (%s) with %d thread(s)%s", PROJECT_VERSION, cfg->host, cfg->port,
                 proc.tls_ctx ? "https" : "http", cfg->threads, workers[0].cpu >= 0 ? ", pinned one to a CPU" : "");
        if (cfg->idle_in_transaction_timeout_ms > 0 && cfg->idle_in_transaction_timeout_ms <= cfg->stream_stall_timeout_ms)
            log_warn("IDLE_IN_TRANSACTION_TIMEOUT_MS (%d) is not above STREAM_STALL_TIMEOUT_MS (%d): PostgreSQL will "
                     "end an export whose reader pauses for %d ms",
                     cfg->idle_in_transaction_timeout_ms, cfg->stream_stall_timeout_ms,
                     cfg->idle_in_transaction_timeout_ms);
        int sig;
        sigwait(stop_signals, &sig);
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
    return status;
}

int server_run(const server_config *cfg, const server_app *app)
{
    int status = setup(cfg, app);
    int n = cfg->threads, started = 0;
    server_worker *workers = status == 0 ? calloc((size_t)n, sizeof(*workers)) : NULL;
    if (status == 0 && (workers == NULL || prepare_workers(cfg, app, workers, n) != 0))
        status = 1;

    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* workers inherit the mask; this thread sigwaits */
    for (; status == 0 && started < n; started++) {
        if (pthread_create(&workers[started].thread, NULL, server__worker_main, &workers[started]) != 0) {
            log_error("cannot start worker thread %d", started);
            status = 1;
            break;
        }
    }
    if (started > 0)
        status = run_until_stopped(cfg, workers, started, status, &stop_signals);

    bool all_clean = true;
    for (int i = 0; workers != NULL && i < n; i++)
        all_clean &= workers[i].loop == NULL;
    if (all_clean) { /* else a worker still holds h2o state: leave it to the exit */
        for (int i = 0; workers != NULL && i < n; i++)
            server_metrics_destroy(workers[i].metrics);
        free(workers);
        teardown();
    }
    aio_executor_shutdown();
    return status;
}
