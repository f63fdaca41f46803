/* Client hang-ups: accepted sockets are watched for EPOLLRDHUP in an epoll
 * set of their own, because h2o does not read an HTTP/1 socket while its
 * request is being processed; a hang-up cancels the connection's running
 * requests (and so their queries). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "server/server_int.h"

/* ---- client hang-ups ---- */

static void on_hangups(h2o_socket_t *sock, const char *err)
{
    server_worker *w = sock->data;
    (void)err;
    struct epoll_event ev[64];
    int n = epoll_wait(w->hup_ep, ev, 64, 0);
    for (int i = 0; i < n; i++) {
        uint32_t fd = (uint32_t)ev[i].data.u64, gen = (uint32_t)(ev[i].data.u64 >> 32);
        if (fd >= w->nhup_slots || w->hup_slots[fd].gen != gen)
            continue;
        aio_list_foreach(l, &w->hup_slots[fd].reqs)
        {
            server_req *r = aio_container_of(l, server_req, hup_link);
            if (!r->finished && r->task != NULL) {
                r->client_gone = true;
                aio_task_cancel(r->task); /* the client left: stop the work and its queries */
            }
        }
    }
}

int server__hangup_init(server_worker *w)
{
    w->hup_ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->hup_ep < 0)
        return -errno;
    w->hup_sock = h2o_evloop_socket_create(aio_loop_evloop(w->loop), w->hup_ep, H2O_SOCKET_FLAG_DONT_READ);
    w->hup_sock->data = w;
    h2o_socket_read_start(w->hup_sock, on_hangups);
    return 0;
}

void server__watch_hangup(server_worker *w, h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock);
    if (w->hup_sock == NULL || fd < 0)
        return;
    if ((size_t)fd >= w->nhup_slots) {
        size_t n = w->nhup_slots ? w->nhup_slots : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct server_hup_slot *slots = malloc(n * sizeof(*slots));
        if (slots == NULL)
            return;
        for (size_t i = 0; i < n; i++) {
            bool old = i < w->nhup_slots;
            slots[i] = (struct server_hup_slot){.gen = old ? w->hup_slots[i].gen : 0,
                                                .sock = old ? w->hup_slots[i].sock : NULL,
                                                .partial_since = old ? w->hup_slots[i].partial_since : 0};
            aio_list_init(&slots[i].reqs);
            if (old) /* lists point at their anchors: move them */
                aio_list_splice(&slots[i].reqs, &w->hup_slots[i].reqs);
        }
        free(w->hup_slots);
        w->hup_slots = slots;
        w->nhup_slots = n;
    }
    struct server_hup_slot *slot = &w->hup_slots[fd];
    slot->gen++;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = (uint64_t)slot->gen << 32 | (uint32_t)fd};
    epoll_ctl(w->hup_ep, EPOLL_CTL_ADD, fd, &ev);
}


void server__cancel_requests(server_worker *w)
{
    aio_list_foreach(l, &w->requests) aio_task_cancel(aio_container_of(l, server_req, link)->task);
}

