/* A FIFO queue of pointers between tasks of one loop (asyncio.Queue).
 *
 * maxsize 0 means unbounded. put waits while the queue is full, get while it
 * is empty; waiters are served in arrival order and an item is handed
 * directly to the longest-waiting getter. A put or get that is cancelled or
 * times out has not moved its item: a cancelled getter never takes one, a
 * cancelled putter's item is not in the queue. */
#ifndef H2PG_AIO_QUEUE_H
#define H2PG_AIO_QUEUE_H

#include <stddef.h>

/* Opaque: ring buffer plus the two wait lists. */
typedef struct aio_queue aio_queue;

/* NULL on ENOMEM. */
aio_queue *aio_queue_create(size_t maxsize);
/* The queue must have no waiters; items still in it are not freed. */
void aio_queue_destroy(aio_queue *q);

/* 0 once the item is in the queue (or in a getter's hands), -ENOMEM, or
 * -ECANCELED / -ETIMEDOUT. */
int aio_queue_put(aio_queue *q, void *item);
/* 0 with *item set, or -ECANCELED / -ETIMEDOUT. */
int aio_queue_get(aio_queue *q, void **item);

/* Never suspend: -EAGAIN when full / empty. */
int aio_queue_try_put(aio_queue *q, void *item);
int aio_queue_try_get(aio_queue *q, void **item);

size_t aio_queue_size(const aio_queue *q);

#endif
