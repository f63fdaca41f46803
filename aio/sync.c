#include <errno.h>

#include "sync.h"
#include "task_int.h"

/* A waiter queued on a list; unqueued by abort or by the waker. */
static void unqueue(aio__waiter *w) { aio_link_unlink(&w->link); }

static int queue_and_suspend(aio_list *waiters, void (*abort)(aio__waiter *))
{
    aio__waiter w = {.abort = abort};
    aio_link_init(&w.link);
    aio_list_push_back(waiters, &w.link);
    return aio__suspend(&w, AIO_NEVER);
}

static aio__waiter *pop_waiter(aio_list *waiters)
{
    aio_link *l = aio_list_pop_front(waiters);
    return l ? aio_container_of(l, aio__waiter, link) : NULL;
}

/* ---- Lock ---- */

void aio_lock_init(aio_lock *l)
{
    l->locked = false;
    aio_list_init(&l->waiters);
}

int aio_lock_try_acquire(aio_lock *l)
{
    if (l->locked)
        return -EBUSY;
    l->locked = true;
    return 0;
}

int aio_lock_acquire(aio_lock *l)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    if (!l->locked) {
        l->locked = true;
        return 0;
    }
    return queue_and_suspend(&l->waiters, unqueue);
}

void aio_lock_release(aio_lock *l)
{
    aio__waiter *w = pop_waiter(&l->waiters);
    if (w != NULL)
        aio__wake(w, 0); /* ownership passes; the lock stays locked */
    else
        l->locked = false;
}

bool aio_lock_locked(const aio_lock *l) { return l->locked; }

/* ---- Semaphore ---- */

void aio_sem_init(aio_sem *s, size_t value)
{
    s->value = value;
    s->nwaiters = 0;
    aio_list_init(&s->waiters);
}

static void sem_unqueue(aio__waiter *w)
{
    aio_sem *s = w->data;
    aio_link_unlink(&w->link);
    s->nwaiters--;
}

int aio_sem_try_acquire(aio_sem *s)
{
    if (s->value == 0)
        return -EAGAIN;
    s->value--;
    return 0;
}

int aio_sem_acquire(aio_sem *s)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    if (s->value > 0) {
        s->value--;
        return 0;
    }
    aio__waiter w = {.abort = sem_unqueue, .data = s};
    aio_link_init(&w.link);
    aio_list_push_back(&s->waiters, &w.link);
    s->nwaiters++;
    return aio__suspend(&w, AIO_NEVER);
}

void aio_sem_release(aio_sem *s)
{
    aio__waiter *w = pop_waiter(&s->waiters);
    if (w != NULL) {
        s->nwaiters--;
        aio__wake(w, 0);
    } else {
        s->value++;
    }
}

size_t aio_sem_value(const aio_sem *s) { return s->value; }
size_t aio_sem_waiting(const aio_sem *s) { return s->nwaiters; }

/* ---- Event ---- */

void aio_event_init(aio_event *e)
{
    e->set = false;
    aio_list_init(&e->waiters);
}

void aio_event_set(aio_event *e)
{
    e->set = true;
    aio__waiter *w;
    while ((w = pop_waiter(&e->waiters)) != NULL)
        aio__wake(w, 0);
}

void aio_event_clear(aio_event *e) { e->set = false; }

bool aio_event_is_set(const aio_event *e) { return e->set; }

int aio_event_wait(aio_event *e)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    if (e->set)
        return 0;
    return queue_and_suspend(&e->waiters, unqueue);
}

/* ---- Future ---- */

void aio_future_init(aio_future *f)
{
    f->waiter = NULL;
    f->result = 0;
    f->done = false;
}

void aio_future_set(aio_future *f, int result)
{
    if (f->done)
        return;
    f->done = true;
    f->result = result;
    if (f->waiter != NULL) {
        aio__waiter *w = f->waiter;
        f->waiter = NULL;
        aio__wake(w, result);
    }
}

bool aio_future_done(const aio_future *f) { return f->done; }

static void future_abort(aio__waiter *w)
{
    aio_future *f = w->data;
    f->waiter = NULL;
}

int aio_future_wait(aio_future *f)
{
    if (f->done)
        return f->result;
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    aio__waiter w = {.abort = future_abort, .data = f};
    f->waiter = &w;
    return aio__suspend(&w, AIO_NEVER);
}
