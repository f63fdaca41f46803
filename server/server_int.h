/* Private to server/: a worker thread's state and a request's, shared by
 * the process code (server.c, worker.c) and the request path (request.c,
 * respond.c, stream.c, problem.c, hangup.c, access_log.c). */
#ifndef H2PG_SERVER_SERVER_INT_H
#define H2PG_SERVER_SERVER_INT_H

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <h2o.h>

#include "aio/aio.h"
#include "base/arena.h"

#include "server/config.h"
#include "server/metrics.h"
#include "server/proxy.h"
#include "server/http.h"
#include "server/server.h"
#include "server/router.h"

typedef struct server_worker {
    int id;
    int cpu;             /* the CPU it is pinned to, or -1 */
    pthread_t thread;
    const server_config *cfg;
    const server_router *router;
    const server_proxies *proxies;
    h2o_globalconf_t *globalconf;
    SSL_CTX *tls_ctx;    /* NULL: plain HTTP */
    aio_loop *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    int listen_fd;
    h2o_socket_t *listener;
    int stop_fd;
    h2o_socket_t *stop_sock;
    const server_app *app;
    void *app_state;     /* what app->worker_start made */
    bool app_started;    /* app->worker_start succeeded: worker_stop is due */
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
     * cannot hold the thread (respond.c, server__schedule_send) */
    unsigned turn_sends;
    aio_deferred turn_end; /* resets turn_sends */
    /* guard.c: the sweep over connections still sending a header section */
    h2o_timeout_t guard_tick;
    h2o_timeout_entry_t guard_entry;
    h2o_timeout_t next_turn;
    /* out of file descriptors, accepting pauses (worker.c, on_accept) */
    h2o_timeout_t accept_backoff;
    h2o_timeout_entry_t accept_resume;
    int64_t accept_warned_at; /* aio_now() of the last warning, 0 before */
    unsigned accept_pauses;   /* pauses since that warning */
} server_worker;

/* What the worker knows of each accepted connection, by fd. */
struct server_hup_slot {
    uint32_t gen;          /* bumped at each accept on this fd */
    aio_list reqs;         /* server_req in flight on the connection */
    h2o_socket_t *sock;    /* NULL once h2o closed it (guard.c) */
    int64_t partial_since; /* aio_now() when a header section began arriving, or 0 */
    h2o_socket_cb resume_read; /* h2o's read callback, while a refusal is written */
};

extern _Thread_local server_worker *server__worker;

#define MAX_PARAMS SERVER_ROUTER_MAX_PARAMS

struct server_req {
    h2o_req_t *h2o; /* NULL once h2o disposed the request (client gone, or answered) */
    server_worker *worker;
    const server_route_def *route;
    const char *pattern;
    const char *method, *path, *query; /* method: a constant for the usual ones */
    size_t query_len;
    size_t nparams;
    char *body;
    size_t body_len;
    base_arena arena;
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
    bool cut;         /* a streamed body ended before its end (logged so) */
    /* h2o must only be asked to write from inside its own loop phase (a
     * write it completes at once is finished by a callback h2o runs before
     * its next poll; from a task, that order breaks and h2o aborts). Tasks
     * therefore queue what to send and h2o's zero timeout sends it. */
    h2o_timeout_entry_t send_entry;
    int send_action;
    h2o_iovec_t send_body;
    struct stream *stream;
    void *local; /* the application's (server_req_set_local) */
    alignas(max_align_t) char arena_buf[1024]; /* the arena's first kilobyte */
    /* set when the request is created, so not cleared with the rest */
    struct {
        const char *name;
        char *value;
    } params[MAX_PARAMS]; /* the first nparams */
    char id[48];
    server_client client; /* addr "" until server__req_client writes out the peer's */
    struct sockaddr_storage peer;
    socklen_t peer_len;
};


/* ---- request lifetime ---- */


/* A streamed response: h2o asks for the next chunk with proceed. */
struct stream {
    h2o_generator_t gen;
    server_req *r;
    aio_event ready; /* h2o is ready for the next chunk */
    bool started;    /* h2o_start_response was called */
    bool stopped;    /* h2o gave up on the response */
    bool abort;      /* end the response as failed at the next proceed */
    bool ended;      /* server_stream_end scheduled the last chunk */
    bool dropped;    /* h2o stopped the generator: the response was cut */
    char *buf;       /* the chunk in flight (h2o does not copy; freed with the request) */
    size_t cap;
};


enum { SEND_NONE, SEND_INLINE, SEND_CHUNK, SEND_FINAL, SEND_ERROR };


/* request.c */
uint64_t server__next_random(server_worker *w);
bool server__valid_request_id(const char *s, size_t len);
const h2o_header_t *server__find_header_len(const h2o_req_t *req, const char *name, size_t len);
/* The request's first header of that (lowercase) name, or NULL; inline so
 * that a literal's length is counted when compiling. */
static inline const h2o_header_t *server__find_header(const h2o_req_t *req, const char *name)
{
    return server__find_header_len(req, name, strlen(name));
}
/* Drops a reference to r; the last one frees it. */
void server__req_unref(server_req *r);
/* The client (through TRUSTED_PROXIES), its address written out at the first call. */
const server_client *server__req_client(server_req *r);
/* Frees the finished requests this thread keeps for reuse (at worker exit). */
void server__req_cache_drain(void);
/* respond.c: hands r's pending answer (SEND_*) to h2o, now or from h2o's
 * timeouts (see there). */
void server__schedule_send(server_req *r, int action);
/* The send_entry callback: performs the queued send. */
void server__on_send_entry(h2o_timeout_entry_t *e);
/* access_log.c */
void server__access_log(server_req *r);
/* problem.c: answers straight from the h2o callback, before any server_req exists. */
void server__early_problem(h2o_req_t *req, int status, const char *detail, const char *allow);


/* The h2o handler callback (request.c), registered by server.c. */
int server__on_req(h2o_handler_t *self, h2o_req_t *req);
/* Rewrites h2o's own text/plain error responses as problem+json. */
void server__register_problem_filter(h2o_pathconf_t *pathconf);
/* Prepares the worker's access-log buffer (written once per loop turn). */
void server__log_init(server_worker *w);
/* Sets up the worker's budget of answers sent at once per loop turn
 * (after h2o_context_init); h2o_timeout_dispose(w->ctx.loop,
 * &w->next_turn) undoes it once nothing is linked there. */
void server__sends_init(server_worker *w);
/* guard.c: limits on what a connection may send before its request is
 * whole (MAX_HEADER_BYTES, HEADER_TIMEOUT_MS) and checks of an HTTP/1 head
 * (smuggling, Host, absolute-form); see there. */
void server__guard_init(server_worker *w);
void server__guard_dispose(server_worker *w);
/* Starts tracking an accepted connection (after server__watch_hangup). */
void server__guard_track(server_worker *w, h2o_socket_t *sock);
/* The path to route for req (an absolute-form target's path part). */
h2o_iovec_t server__guard_route_path(const h2o_req_t *req);
/* Checks the raw head of an HTTP/1 request: answers 400 or 431 (closing
 * the connection) and returns false when it must not run. */
bool server__guard_head(server_req *r, h2o_req_t *req);

/* head.c: h2o's HTTP/1 response head written by hand (see there). Writes
 * what sprintf of "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: %s\r\n"
 * (plus "Content-Length: %zu\r\n" when with_length) would into s, a
 * buffer of slen bytes, and returns its length; ends the process as
 * glibc's fortified sprintf does if it does not fit. */
int server__head_write(char *s, size_t slen, bool with_length, int status, const char *reason, const char *date,
                       const char *connection, size_t content_length);
/* Whether h2o's sprintf of a response head comes to head.c in this
 * process (the executable's definition is the one the loader chose). */
bool server__head_in_use(void);

/* Starts watching an accepted connection for a hang-up. */
void server__watch_hangup(server_worker *w, h2o_socket_t *sock);
/* Sets up the worker's hang-up watcher (0 or -errno). */
int server__hangup_init(server_worker *w);

/* tls.c: the TLS context of TLS_CERT_FILE/TLS_KEY_FILE, or NULL with a
 * message naming the file. */
SSL_CTX *server__tls_create(const server_config *cfg, char *err, size_t errlen);

/* worker.c: a worker thread's body (arg: its server_worker). */
void *server__worker_main(void *arg);

/* Cancels every request of the worker that still runs (shutdown). */
void server__cancel_requests(server_worker *w);

#endif
