#include <errno.h>
#include <stdlib.h>

#include "queue.h"
#include "task_int.h"

struct aio_queue {
    void **ring;
    size_t cap, head, len;
    size_t maxsize; /* 0: unbounded */
    aio_list getters, putters;
};

aio_queue *aio_queue_create(size_t maxsize)
{
    aio_queue *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->maxsize = maxsize;
    q->cap = maxsize ? maxsize : 16;
    if ((q->ring = malloc(q->cap * sizeof(void *))) == NULL) {
        free(q);
        return NULL;
    }
    aio_list_init(&q->getters);
    aio_list_init(&q->putters);
    return q;
}

void aio_queue_destroy(aio_queue *q)
{
    if (q == NULL)
        return;
    free(q->ring);
    free(q);
}

size_t aio_queue_size(const aio_queue *q) { return q->len; }

static bool full(const aio_queue *q) { return q->maxsize != 0 && q->len >= q->maxsize; }

static int push(aio_queue *q, void *item)
{
    if (q->len == q->cap) {
        size_t cap = q->cap * 2;
        void **ring = malloc(cap * sizeof(void *));
        if (ring == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < q->len; i++)
            ring[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = ring;
        q->cap = cap;
        q->head = 0;
    }
    q->ring[(q->head + q->len++) % q->cap] = item;
    return 0;
}

static void *shift(aio_queue *q)
{
    void *item = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return item;
}

static aio__waiter *pop_waiter(aio_list *list)
{
    aio_link *l = aio_list_pop_front(list);
    return l ? aio_container_of(l, aio__waiter, link) : NULL;
}

static void unqueue(aio__waiter *w) { aio_link_unlink(&w->link); }

int aio_queue_try_put(aio_queue *q, void *item)
{
    aio__waiter *g = pop_waiter(&q->getters);
    if (g != NULL) {
        g->data = item;
        aio__wake(g, 0);
        return 0;
    }
    if (full(q))
        return -EAGAIN;
    return push(q, item);
}

int aio_queue_put(aio_queue *q, void *item)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    rc = aio_queue_try_put(q, item);
    if (rc != -EAGAIN)
        return rc;
    aio__waiter w = {.abort = unqueue, .data = item};
    aio_link_init(&w.link);
    aio_list_push_back(&q->putters, &w.link);
    return aio__suspend(&w, AIO_NEVER);
}

int aio_queue_try_get(aio_queue *q, void **item)
{
    if (q->len == 0)
        return -EAGAIN;
    *item = shift(q);
    /* room again: the first waiting putter's item moves in behind */
    aio__waiter *p = pop_waiter(&q->putters);
    if (p != NULL) {
        push(q, p->data); /* cannot fail: a slot was just freed */
        aio__wake(p, 0);
    }
    return 0;
}

int aio_queue_get(aio_queue *q, void **item)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    if (aio_queue_try_get(q, item) == 0)
        return 0;
    aio__waiter w = {.abort = unqueue};
    aio_link_init(&w.link);
    aio_list_push_back(&q->getters, &w.link);
    rc = aio__suspend(&w, AIO_NEVER);
    if (rc == 0)
        *item = w.data;
    return rc;
}
