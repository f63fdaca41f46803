#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <h2o.h>

#include "fd.h"
#include "task_int.h"

struct aio_fd {
    h2o_socket_t *sock;
    aio__waiter *waiter;
    int want;
    /* h2o cannot withdraw a write notification, so one armed by an aborted
     * wait stays armed and serves the next wait. */
    bool write_armed;
};

aio_fd *aio_fd_open(int fd)
{
    assert(aio__loop != NULL);
    aio_fd *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        free(w);
        return NULL;
    }
    w->sock = h2o_evloop_socket_create(aio__loop->ev, dup_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->sock->data = w;
    return w;
}

void aio_fd_close(aio_fd *w)
{
    if (w == NULL)
        return;
    assert(w->waiter == NULL && "closing a watcher a task waits on");
    h2o_socket_close(w->sock);
    free(w);
}

static void finish(aio_fd *w, int ready)
{
    aio__waiter *waiter = w->waiter;
    w->waiter = NULL;
    if (h2o_socket_is_reading(w->sock))
        h2o_socket_read_stop(w->sock);
    aio__wake(waiter, ready);
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    aio_fd *w = sock->data;
    if (w->waiter != NULL && (w->want & AIO_READABLE))
        finish(w, err ? AIO_READABLE | AIO_WRITABLE : AIO_READABLE);
    else
        h2o_socket_read_stop(sock);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    aio_fd *w = sock->data;
    w->write_armed = false;
    if (w->waiter != NULL && (w->want & AIO_WRITABLE))
        finish(w, err ? AIO_READABLE | AIO_WRITABLE : AIO_WRITABLE);
}

static void abort_wait(aio__waiter *waiter)
{
    aio_fd *w = waiter->data;
    w->waiter = NULL;
    if (h2o_socket_is_reading(w->sock))
        h2o_socket_read_stop(w->sock);
}

int aio_fd_wait(aio_fd *w, int events)
{
    assert(w->waiter == NULL && "one waiter per watcher");
    assert(events & (AIO_READABLE | AIO_WRITABLE));
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    aio__waiter waiter = {.abort = abort_wait, .data = w};
    w->waiter = &waiter;
    w->want = events;
    if (events & AIO_READABLE)
        h2o_socket_read_start(w->sock, on_readable);
    if ((events & AIO_WRITABLE) && !w->write_armed) {
        w->write_armed = true;
        h2o_socket_notify_write(w->sock, on_writable);
    }
    return aio__suspend(&waiter, AIO_NEVER);
}
