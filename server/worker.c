/* One worker thread: its event loop, h2o context, listener, the
 * application's per-worker state, a metrics sampler, and its graceful
 * shutdown. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/memory.h"
#include "server/server_int.h"

#define STOP_DRAIN_AFTER_CANCEL AIO_SEC(3)
#define KEEPALIVE_CLOSE_WAIT AIO_SEC(2)
#define ACCEPT_BACKOFF_MS 100 /* a listener out of descriptors rests this long */

/* Publishes the worker's gauges once a second (and the application's),
 * and gives the memory this thread freed back (base/memory.h). */
static int metrics_sampler(void *arg)
{
    server_worker *w = arg;
    while (!w->stopping) {
        server_metrics_sample(w->metrics, (int64_t)w->inflight);
        if (w->app->worker_sample != NULL)
            w->app->worker_sample(w->app_state);
        base_memory_return();
        if (aio_sleep(AIO_SEC(1)) < 0)
            break;
    }
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err);

static void on_accept_resume(h2o_timeout_entry_t *e)
{
    server_worker *w = aio_container_of(e, server_worker, accept_resume);
    if (w->listener != NULL)
        h2o_socket_read_start(w->listener, on_accept);
}

/* A shortage of descriptors lasts as long as the attack or the leak that
 * causes it: one warning every ACCEPT_WARN_EVERY, with how many times the
 * listener paused meanwhile, rather than one per pause. */
#define ACCEPT_WARN_EVERY AIO_SEC(10)

static void warn_accept_paused(server_worker *w, int err)
{
    w->accept_pauses++;
    int64_t now = aio_now();
    if (w->accept_warned_at != 0 && now - w->accept_warned_at < ACCEPT_WARN_EVERY)
        return;
    log_warn("worker %d: cannot accept (%s): pausing the listener for %d ms (%u pauses since the last warning)",
             w->id, strerror(err), ACCEPT_BACKOFF_MS, w->accept_pauses);
    w->accept_warned_at = now;
    w->accept_pauses = 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    server_worker *w = listener->data;
    if (err != NULL)
        return;
    /* level-triggered: take a batch, the kernel tells again if more wait */
    for (int i = 0; i < 64; i++) {
        errno = 0;
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: the pending connection stays queued
                 * and the listener stays readable, so retrying now would
                 * spin; pause it until descriptors may have been freed */
                if (!h2o_timeout_is_linked(&w->accept_resume)) {
                    warn_accept_paused(w, errno);
                    h2o_socket_read_stop(listener);
                    h2o_timeout_link(w->ctx.loop, &w->accept_backoff, &w->accept_resume);
                }
            }
            break;
        }
        server__watch_hangup(w, sock);
        server__guard_track(w, sock);
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
    return !h2o_conns_left(w) && h2o_linklist_is_empty(&w->next_turn._entries);
}

/* Requests in flight get the grace period, then are cancelled. */
static void drain_requests(server_worker *w)
{
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
}

static int shutdown_task(void *arg)
{
    server_worker *w = arg;
    h2o_timeout_unlink(&w->accept_resume);
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener); /* new connections now go to nobody: the port is closed */
        w->listener = NULL;
    }
    /* responses from now on say Connection: close */
    h2o_context_request_shutdown(&w->ctx);
    if (w->app_started && w->app->worker_stopping != NULL)
        w->app->worker_stopping(w->app_state);
    drain_requests(w);
    /* idle keep-alive connections: let h2o's own idle timeout close them now */
    w->ctx.http1.req_timeout.timeout = 0;
    w->ctx.http2.idle_timeout.timeout = 0;
    int64_t until = aio_now() + KEEPALIVE_CLOSE_WAIT;
    while (h2o_conns_left(w) && aio_now() < until)
        aio_sleep(AIO_MSEC(10));
    if (w->app_started && w->app->worker_stop != NULL)
        w->app->worker_stop(w->app_state);
    w->app_started = false;
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

/* A worker that cannot start stops the process: the main thread waits for
 * a signal, so give it one. */
static void fail_start(server_worker *w)
{
    w->exit_status = 1;
    kill(getpid(), SIGTERM);
}

/* The application's per-worker state, made in a task (it may await),
 * then the listener; on failure the process stops. */
static int start_task(void *arg)
{
    server_worker *w = arg;
    if (w->app->worker_start != NULL) {
        if (w->app->worker_start(w->cfg, w->id, &w->app_state) < 0) {
            fail_start(w);
            return 0;
        }
        w->app_started = true;
    }
    if (server__hangup_init(w) < 0)
        log_warn("worker %d: cannot watch for client hang-ups: %s", w->id, strerror(errno));
    aio_task *sampler = aio_task_spawn(metrics_sampler, w);
    if (sampler != NULL)
        aio_task_detach(sampler);
    w->listener = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);
    return 0;
}

static void setup(server_worker *w)
{
    h2o_context_init(&w->ctx, aio_loop_evloop(w->loop), w->globalconf);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = w->globalconf->hosts;
    w->accept_ctx.ssl_ctx = w->tls_ctx;
    aio_list_init(&w->requests);
    aio_event_init(&w->idle);
    aio_event_set(&w->idle);
    server__log_init(w);
    server__sends_init(w);
    h2o_timeout_init(w->ctx.loop, &w->accept_backoff, ACCEPT_BACKOFF_MS);
    server__guard_init(w);
    w->accept_resume.cb = on_accept_resume;
    server_metrics_set_current(w->metrics);
    w->stop_sock = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->stop_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->stop_sock->data = w;
    h2o_socket_read_start(w->stop_sock, on_stop);
}

static void teardown(server_worker *w)
{
    h2o_socket_read_stop(w->stop_sock);
    h2o_socket_close(w->stop_sock);
    if (w->hup_sock != NULL) {
        h2o_socket_read_stop(w->hup_sock);
        h2o_socket_close(w->hup_sock);
    }
    server__guard_dispose(w);
    if (h2o_context_disposable(w)) {
        h2o_timeout_dispose(w->ctx.loop, &w->next_turn);
        h2o_timeout_dispose(w->ctx.loop, &w->accept_backoff);
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
    server__req_cache_drain();
    free(w->log_buf);
    w->log_buf = NULL;
    free(w->hup_slots);
    w->hup_slots = NULL;
}

/* Names the thread "worker N" (top -H, perf, /proc) and pins it to its CPU,
 * if it has one (WORKER_CPU_AFFINITY). */
static void place_thread(const server_worker *w)
{
    char name[16];
    snprintf(name, sizeof(name), "worker %d", w->id);
    pthread_setname_np(pthread_self(), name);
    if (w->cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc != 0)
        log_warn("worker %d: cannot pin it to CPU %d (%s): it runs wherever the scheduler puts it", w->id, w->cpu,
                 strerror(rc));
}

void *server__worker_main(void *arg)
{
    server_worker *w = arg;
    server__worker = w;
    place_thread(w);
    w->rng = (uint64_t)aio_now() ^ ((uint64_t)(w->id + 1) * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)getpid();
    if ((w->loop = aio_loop_create(NULL)) == NULL) {
        log_error("worker %d: cannot create its event loop", w->id);
        fail_start(w);
        return NULL;
    }
    setup(w);
    aio_task *start = aio_task_spawn(start_task, w);
    if (start == NULL) {
        log_error("worker %d: cannot start", w->id);
        fail_start(w);
    } else {
        aio_task_detach(start);
    }
    aio_loop_run(w->loop);
    teardown(w);
    return NULL;
}
