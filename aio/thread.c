#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <h2o.h>

#include "task_int.h"
#include "thread.h"

struct job {
    aio_blocking_fn fn;
    void *arg;
    void (*abandon)(void *arg, int result);
    int result;
    struct aio__port *port;
    aio__waiter *waiter; /* NULL once the wait was interrupted */
    struct job *next;
};

/* One per loop: where helper threads post finished jobs. */
struct aio__port {
    int efd;
    h2o_socket_t *sock;
    pthread_mutex_t mu;
    struct job *done, **done_tail;
    size_t outstanding; /* submitted, completion not yet handled (loop thread only) */
};

/* ---- the process-wide helper pool ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, **tail;
    pthread_t *threads;
    size_t nthreads, want;
    bool started, stopping;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .want = 4};

static void post_done(struct job *j)
{
    struct aio__port *port = j->port;
    pthread_mutex_lock(&port->mu);
    j->next = NULL;
    *port->done_tail = j;
    port->done_tail = &j->next;
    pthread_mutex_unlock(&port->mu);
    uint64_t one = 1;
    while (write(port->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* A helper runs on any CPU the process may use (those of its main thread),
 * not only on the one of the event-loop thread that happened to start the
 * pool and that the server may have pinned. */
static void place_helper(void)
{
    cpu_set_t cpus;
    if (sched_getaffinity(getpid(), sizeof(cpus), &cpus) == 0)
        sched_setaffinity(0, sizeof(cpus), &cpus);
    pthread_setname_np(pthread_self(), "aio helper");
}

static void *worker(void *unused)
{
    (void)unused;
    place_helper();
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.head == NULL && !pool.stopping)
            pthread_cond_wait(&pool.cv, &pool.mu);
        if (pool.head == NULL)
            break;
        struct job *j = pool.head;
        if ((pool.head = j->next) == NULL)
            pool.tail = &pool.head;
        pthread_mutex_unlock(&pool.mu);
        j->result = j->fn(j->arg);
        post_done(j);
        pthread_mutex_lock(&pool.mu);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* Called with pool.mu held. */
static int start_pool(void)
{
    pool.threads = calloc(pool.want, sizeof(pthread_t));
    if (pool.threads == NULL)
        return -ENOMEM;
    pool.tail = &pool.head;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* helpers never take signals */
    for (size_t i = 0; i < pool.want; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, NULL) != 0)
            break;
        pool.nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pool.nthreads == 0) {
        free(pool.threads);
        pool.threads = NULL;
        return -EAGAIN;
    }
    pool.started = true;
    return 0;
}

static int submit(struct job *j)
{
    pthread_mutex_lock(&pool.mu);
    int rc = 0;
    if (!pool.started)
        rc = start_pool();
    if (rc == 0) {
        j->next = NULL;
        *pool.tail = j;
        pool.tail = &j->next;
        pthread_cond_signal(&pool.cv);
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

void aio_executor_configure(size_t threads)
{
    pthread_mutex_lock(&pool.mu);
    if (!pool.started && threads > 0)
        pool.want = threads;
    pthread_mutex_unlock(&pool.mu);
}

void aio_executor_shutdown(void)
{
    pthread_mutex_lock(&pool.mu);
    if (!pool.started) {
        pthread_mutex_unlock(&pool.mu);
        return;
    }
    pool.stopping = true;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    for (size_t i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    pool.started = false;
    pool.stopping = false;
}

/* ---- the loop side ---- */

static void handle_done(struct aio__port *port)
{
    uint64_t n;
    while (read(port->efd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&port->mu);
    struct job *j = port->done;
    port->done = NULL;
    port->done_tail = &port->done;
    pthread_mutex_unlock(&port->mu);
    while (j != NULL) {
        struct job *next = j->next;
        port->outstanding--;
        if (j->waiter != NULL)
            aio__wake(j->waiter, j->result);
        else if (j->abandon != NULL)
            j->abandon(j->arg, j->result);
        free(j);
        j = next;
    }
}

static void on_port_readable(h2o_socket_t *sock, const char *err)
{
    (void)err;
    handle_done(sock->data);
}

static struct aio__port *get_port(aio_loop *loop)
{
    if (loop->port != NULL)
        return loop->port;
    struct aio__port *port = calloc(1, sizeof(*port));
    if (port == NULL)
        return NULL;
    if ((port->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        free(port);
        return NULL;
    }
    pthread_mutex_init(&port->mu, NULL);
    port->done_tail = &port->done;
    port->sock = h2o_evloop_socket_create(loop->ev, port->efd, H2O_SOCKET_FLAG_DONT_READ);
    port->sock->data = port;
    h2o_socket_read_start(port->sock, on_port_readable);
    loop->port = port;
    return port;
}

void aio__port_dispose(aio_loop *loop)
{
    struct aio__port *port = loop->port;
    if (port == NULL)
        return;
    /* abandoned jobs may still run: wait for them so nothing points here */
    while (port->outstanding > 0) {
        struct pollfd p = {.fd = port->efd, .events = POLLIN};
        poll(&p, 1, -1);
        handle_done(port);
    }
    h2o_socket_close(port->sock); /* closes efd */
    pthread_mutex_destroy(&port->mu);
    free(port);
    loop->port = NULL;
}

static void interrupt_job(aio__waiter *w)
{
    struct job *j = w->data;
    j->waiter = NULL;
}

static int run(aio_blocking_fn fn, void *arg, void (*abandon)(void *, int))
{
    int rc = aio__enter();
    if (rc < 0) {
        if (abandon != NULL)
            abandon(arg, rc); /* interrupted before it started: arg goes to abandon all the same */
        return rc;
    }
    struct aio__port *port = get_port(aio__loop);
    struct job *j = calloc(1, sizeof(*j));
    if (port == NULL || j == NULL) {
        free(j);
        return -ENOMEM;
    }
    aio__waiter w = {.abort = abandon ? interrupt_job : NULL, .data = j};
    j->fn = fn;
    j->arg = arg;
    j->abandon = abandon;
    j->port = port;
    j->waiter = &w;
    if ((rc = submit(j)) < 0) {
        free(j);
        return rc;
    }
    port->outstanding++;
    return aio__suspend(&w, AIO_NEVER);
}

int aio_to_thread(aio_blocking_fn fn, void *arg) { return run(fn, arg, NULL); }

int aio_to_thread_abandonable(aio_blocking_fn fn, void *arg, void (*abandon)(void *arg, int result))
{
    assert(abandon != NULL);
    return run(fn, arg, abandon);
}
