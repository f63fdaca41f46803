/* Private to server/: a worker thread's state, shared by the process code
 * (server.c) and the request path (http.c). */
#ifndef H2PG_SERVER_SERVER_INT_H
#define H2PG_SERVER_SERVER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <h2o.h>

#include "db/pool.h"
#include "server/aio/aio.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/proxy.h"
#include "server/http.h"
#include "server/router.h"

typedef struct server_worker {
    int id;
    pthread_t thread;
    const server_config *cfg;
    const server_router *router;
    const server_proxies *proxies;
    aio_loop *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    int listen_fd;
    h2o_socket_t *listener;
    int stop_fd;
    h2o_socket_t *stop_sock;
    db_pool *pool;
    db_pool **replicas; /* DATABASE_READ_URL: one pool per replica */
    size_t nreplicas;
    bool stopping;
    size_t inflight;     /* requests with a task still running */
    aio_list requests;   /* server_req with a running task */
    aio_event idle;      /* set whenever inflight is 0 */
    uint64_t rng;        /* request ids */
    /* access log lines, written once per loop turn */
    char *log_buf;
    size_t log_len, log_cap;
    aio_deferred log_flush;
    int exit_status;
    server_metrics *metrics;
    /* client hang-ups: accepted sockets are watched for EPOLLRDHUP in an
     * epoll set of their own, because h2o does not read an HTTP/1 socket
     * while its request is being processed */
    int hup_ep;
    h2o_socket_t *hup_sock;
    struct server_hup_slot *hup_slots; /* by fd */
    size_t nhup_slots;
    /* answers sent at once from h2o's callbacks in this loop turn; past a
     * budget they wait for next_turn, so that one connection's pipeline
     * cannot hold the thread (http.c, schedule_send) */
    unsigned turn_sends;
    aio_deferred turn_end; /* resets turn_sends */
    h2o_timeout_t next_turn;
} server_worker;

struct server_hup_slot {
    uint32_t gen;   /* bumped at each accept on this fd */
    aio_list reqs;  /* server_req in flight on the connection */
};

extern _Thread_local server_worker *server__worker;

/* The h2o handler callback (http.c), registered by server.c. */
int server__on_req(h2o_handler_t *self, h2o_req_t *req);
/* Rewrites h2o's own text/plain error responses as problem+json. */
void server__register_problem_filter(h2o_pathconf_t *pathconf);
/* Prepares the worker's access-log buffer (written once per loop turn). */
void server__log_init(server_worker *w);
/* Sets up the worker's budget of answers sent at once per loop turn
 * (after h2o_context_init); h2o_timeout_dispose(w->ctx.loop,
 * &w->next_turn) undoes it once nothing is linked there. */
void server__sends_init(server_worker *w);
/* Starts watching an accepted connection for a hang-up. */
void server__watch_hangup(server_worker *w, h2o_socket_t *sock);
/* Sets up the worker's hang-up watcher (0 or -errno). */
int server__hangup_init(server_worker *w);

/* Cancels every request of the worker that still runs (shutdown). */
void server__cancel_requests(server_worker *w);

#endif
