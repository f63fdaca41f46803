/* The floor of Debian's h2o (2.2.5) for GET /json: the least a server on
 * this library can do per request -- one handler answering a constant body
 * with h2o_send_inline, none of h2pg's router, request ids, metrics, header
 * guard, clock reads or coroutines. Set up as h2pg sets up h2o (one evloop
 * and one SO_REUSEPORT listener per thread, an empty server_name with the
 * Server line added as a plain header, thread i pinned to the i-th CPU when
 * THREADS is a multiple of the CPUs, as h2pg's WORKER_CPU_AFFINITY=auto
 * does), so that bench/run.sh can put it beside h2pg and TechEmpower's
 * entry: what h2pg spends above it is h2pg's, what the entry spends above
 * or below it is the h2o version's.
 *
 *   h2o_floor PORT [THREADS]      answers /json, 404 elsewhere; SIGTERM ends it
 */
#include <h2o.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static h2o_globalconf_t globalconf;
static int port;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    static const char body[] = "{\"message\":\"Hello, World!\"}";
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/json")))
        return -1;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SERVER, NULL, H2O_STRLIT("floor"));
    req->res.content_length = sizeof(body) - 1;
    h2o_send_inline(req, body, sizeof(body) - 1);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(listener->data, sock);
    }
}

static int listen_on(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, SOMAXCONN) != 0) {
        perror("h2o_floor: listen");
        exit(1);
    }
    return fd;
}

static int nthreads;

static void pin(int i)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return;
    int n = CPU_COUNT(&allowed), k = i % (n > 0 ? n : 1);
    if (n < 2 || nthreads % n != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed) && k-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
            return;
        }
}

static void *run_thread(void *arg)
{
    int fd = (int)(intptr_t)arg >> 16;
    pin((int)(intptr_t)arg & 0xffff);
    h2o_context_t ctx;
    h2o_accept_ctx_t actx = {.ctx = &ctx, .hosts = globalconf.hosts};
    h2o_context_init(&ctx, h2o_evloop_create(), &globalconf);
    h2o_socket_t *listener = h2o_evloop_socket_create(ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    listener->data = &actx;
    h2o_socket_read_start(listener, on_accept);
    for (;;)
        h2o_evloop_run(ctx.loop, INT32_MAX);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (port = atoi(argv[1])) <= 0) {
        fprintf(stderr, "usage: h2o_floor PORT [THREADS]\n");
        return 2;
    }
    nthreads = argc > 2 ? atoi(argv[2]) : 2;
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "h2o_floor: THREADS is 1..256\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    h2o_config_init(&globalconf);
    globalconf.server_name = h2o_iovec_init("", 0);
    h2o_hostconf_t *host = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_create_handler(h2o_config_register_path(host, "/", 0), sizeof(h2o_handler_t))->on_req = on_req;
    pthread_t t;
    for (int i = 1; i < nthreads; i++)
        if (pthread_create(&t, NULL, run_thread, (void *)(intptr_t)(listen_on() << 16 | i)) != 0)
            return 1;
    run_thread((void *)(intptr_t)(listen_on() << 16));
    return 0;
}
