#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <stddef.h>

#include "group.h"
#include "task_int.h"

aio_task *aio__task_alloc(aio_loop *loop);                                /* loop.c */
void aio__task_stack(aio_loop *loop, aio_task *t, void **lo, size_t *size); /* loop.c */
void aio__group_child_done(aio_task *t);                                  /* group.c */

aio_task *aio__self(void)
{
    aio_task *t = aio__loop ? aio__loop->current : NULL;
    assert(t != NULL && "awaiting outside a task");
    return t;
}

aio_task *aio_task_current(void) { return aio__loop ? aio__loop->current : NULL; }

int aio__timed_out(aio_task *t)
{
    int64_t now = aio_now();
    for (aio_timeout *s = t->scope; s != NULL && s->deadline <= now; s = s->outer)
        s->expired = true;
    return -ETIMEDOUT;
}

int aio__enter(void)
{
    aio_task *t = aio__self();
    if (t->cancelled)
        return -ECANCELED;
    if (t->deadline != AIO_NEVER && aio_now() >= t->deadline)
        return aio__timed_out(t);
    return 0;
}

int aio_checkpoint(void) { return aio__enter(); }

void aio__schedule(aio_task *t)
{
    t->state = AIO__READY;
    aio_list_push_back(&t->loop->ready, &t->run_link);
}

void aio__wake(aio__waiter *w, int result)
{
    aio_task *t = w->task;
    assert(t->state == AIO__SUSPENDED);
    w->result = result;
    t->waiter = NULL;
    aio__timer_disarm(t->loop, &t->timer);
    aio__schedule(t);
}

/* Ends an abortable wait early. */
static void interrupt(aio_task *t, int result)
{
    aio__waiter *w = t->waiter;
    w->abort(w);
    aio__wake(w, result);
}

/* The wait ran out: its own end (result preset in w->result) or the task's
 * deadline, whichever came first. */
static void on_timer(aio__timer *tm)
{
    aio_task *t = aio_container_of(tm, aio_task, timer);
    if (t->waiter == NULL)
        return;
    if (t->deadline != AIO_NEVER && t->deadline <= tm->at && t->deadline <= t->wait_until)
        interrupt(t, aio__timed_out(t));
    else
        interrupt(t, t->waiter->result);
}

int aio__suspend(aio__waiter *w, int64_t until)
{
    aio_task *t = aio__self();
    aio_loop *loop = t->loop;
    w->task = t;
    if (w->abort != NULL) {
        t->waiter = w;
        t->wait_until = until;
        int64_t at = until < t->deadline ? until : t->deadline;
        if (at != AIO_NEVER)
            aio__timer_arm(loop, &t->timer, at);
    } else {
        assert(until == AIO_NEVER);
    }
    t->state = AIO__SUSPENDED;
    aio__ctx_switch(&t->ctx, &loop->main, false);
    return w->result;
}

int aio_yield(void)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    aio_task *t = aio__self();
    aio__schedule(t);
    aio__ctx_switch(&t->ctx, &t->loop->main, false);
    return 0;
}

static void task_finish(aio_task *t)
{
    assert(t->scope == NULL && "a task returned with a deadline scope still open");
    assert(aio_list_is_empty(&t->groups) && "a task returned with a group not joined");
    aio_loop *loop = t->loop;
    t->state = AIO__DONE;
    aio_link_unlink(&t->all_link);
    loop->live--;
    aio_link *l;
    while ((l = aio_list_pop_front(&t->watchers)) != NULL) {
        aio__watch *w = aio_container_of(l, aio__watch, link);
        w->on_done(w, t);
    }
    if (t->group != NULL)
        aio__group_child_done(t);
}

static void task_entry(void)
{
    aio_loop *loop = aio__loop;
    aio_task *t = loop->current;
    aio__ctx_entered(&loop->main);
    t->result = t->fn(t->arg);
    task_finish(t);
    aio__ctx_switch(&t->ctx, &loop->main, true);
    assert(!"an ended task was resumed");
}

aio_task *aio_task_spawn(aio_fn fn, void *arg)
{
    aio_loop *loop = aio__loop;
    assert(loop != NULL && "no loop on this thread");
    aio_task *t = aio__task_alloc(loop);
    if (t == NULL)
        return NULL;
    void *lo;
    size_t size;
    aio__task_stack(loop, t, &lo, &size);
    aio__ctx_make(&t->ctx, lo, size, task_entry);
    t->loop = loop;
    t->fn = fn;
    t->arg = arg;
    t->result = 0;
    t->cancelled = false;
    t->detached = false;
    t->waiter = NULL;
    t->wait_until = AIO_NEVER;
    t->timer.heap_index = SIZE_MAX;
    aio_link_init(&t->timer.run_link);
    t->timer.fire = on_timer;
    t->deadline = AIO_NEVER;
    t->scope = NULL;
    t->group = NULL;
    aio_task *parent = loop->current;
    for (int i = 0; i < AIO_TASK_LOCALS; i++)
        t->locals[i] = parent != NULL ? parent->locals[i] : NULL;
    aio_link_init(&t->run_link);
    aio_link_init(&t->group_link);
    aio_list_init(&t->watchers);
    aio_list_init(&t->groups);
    aio_list_push_back(&loop->all, &t->all_link);
    loop->live++;
    aio__schedule(t);
    return t;
}

void aio_task_cancel(aio_task *t)
{
    if (t->state == AIO__DONE)
        return;
    bool first = !t->cancelled;
    t->cancelled = true;
    if (t->waiter != NULL)
        interrupt(t, -ECANCELED);
    if (first)
        aio__group_cancel_all(t);
}

bool aio_task_done(const aio_task *t) { return t->state == AIO__DONE; }

int aio_task_result(const aio_task *t)
{
    assert(t->state == AIO__DONE);
    return t->result;
}

void aio__watch_add(aio_task *t, aio__watch *w)
{
    assert(t->state != AIO__DONE);
    aio_list_push_back(&t->watchers, &w->link);
}

struct done_wait {
    aio__watch watch;
    aio__waiter waiter;
};

static void done_wait_on_done(aio__watch *w, aio_task *t)
{
    (void)t;
    struct done_wait *d = aio_container_of(w, struct done_wait, watch);
    aio__wake(&d->waiter, 0);
}

static void done_wait_abort(aio__waiter *w)
{
    struct done_wait *d = aio_container_of(w, struct done_wait, waiter);
    aio_link_unlink(&d->watch.link);
}

/* Awaits t's end; abortable or not. */
static int wait_done(aio_task *t, bool abortable)
{
    struct done_wait d = {.watch = {.on_done = done_wait_on_done},
                          .waiter = {.abort = abortable ? done_wait_abort : NULL}};
    aio_link_init(&d.watch.link);
    aio__watch_add(t, &d.watch);
    return aio__suspend(&d.waiter, AIO_NEVER);
}

void aio__wait_done_uninterruptible(aio_task *t)
{
    if (t->state != AIO__DONE)
        wait_done(t, false);
}

int aio_task_join(aio_task *t)
{
    assert(t->group == NULL && "group tasks are joined by their group");
    assert(!t->detached);
    assert(t != aio_task_current());
    if (t->state != AIO__DONE) {
        int rc = aio__enter();
        if (rc == 0)
            rc = wait_done(t, true);
        if (rc < 0) {
            /* the joiner was interrupted: the child must not outlive the handle */
            aio_task_cancel(t);
            aio__wait_done_uninterruptible(t);
            aio__task_release(t);
            return rc;
        }
    }
    int result = t->result;
    aio__task_release(t);
    return result;
}

int aio_task_local_key(void)
{
    static atomic_int next;
    int key = atomic_fetch_add(&next, 1);
    assert(key < AIO_TASK_LOCALS && "no task-local slot left: raise AIO_TASK_LOCALS");
    return key;
}

void *aio_task_local(int key)
{
    assert(key >= 0 && key < AIO_TASK_LOCALS);
    aio_task *t = aio__loop != NULL ? aio__loop->current : NULL;
    return t != NULL ? t->locals[key] : NULL;
}

void aio_task_set_local(int key, void *value)
{
    assert(key >= 0 && key < AIO_TASK_LOCALS);
    aio_task *t = aio__loop != NULL ? aio__loop->current : NULL;
    if (t != NULL)
        t->locals[key] = value;
}

void aio_task_detach(aio_task *t)
{
    assert(t->group == NULL && "group tasks belong to their group");
    for (int i = 0; i < AIO_TASK_LOCALS; i++)
        t->locals[i] = NULL;
    if (t->state == AIO__DONE)
        aio__task_release(t);
    else
        t->detached = true;
}

/* ---- time: sleep and deadline scopes ---- */

static void sleep_abort(aio__waiter *w) { (void)w; }

int aio_sleep_until(int64_t when)
{
    int rc = aio__enter();
    if (rc < 0)
        return rc;
    aio__waiter w = {.abort = sleep_abort, .result = 0};
    return aio__suspend(&w, when);
}

int aio_sleep(int64_t duration)
{
    if (duration <= 0)
        return aio_yield();
    return aio_sleep_until(aio_now() + duration);
}

void aio_timeout_open_at(aio_timeout *s, int64_t deadline)
{
    aio_task *t = aio__self();
    s->task = t;
    s->outer = t->scope;
    s->outer_deadline = t->deadline;
    s->deadline = deadline < t->deadline ? deadline : t->deadline;
    s->expired = false;
    t->scope = s;
    t->deadline = s->deadline;
}

void aio_timeout_open(aio_timeout *s, int64_t duration)
{
    int64_t now = aio_now();
    int64_t deadline = duration >= AIO_NEVER - now ? AIO_NEVER : now + duration;
    aio_timeout_open_at(s, deadline);
}

int aio_timeout_close(aio_timeout *s)
{
    aio_task *t = s->task;
    assert(t == aio_task_current() && t->scope == s && "scopes close in reverse order, in their task");
    t->scope = s->outer;
    t->deadline = s->outer_deadline;
    return s->expired ? -ETIMEDOUT : 0;
}

int64_t aio_deadline(void) { return aio__self()->deadline; }

int64_t aio_remaining(void)
{
    int64_t d = aio__self()->deadline;
    if (d == AIO_NEVER)
        return AIO_NEVER;
    int64_t left = d - aio_now();
    return left > 0 ? left : 0;
}

int aio_wait_for(int64_t duration, aio_fn fn, void *arg)
{
    aio_timeout s;
    aio_timeout_open(&s, duration);
    int rc = fn(arg);
    int expired = aio_timeout_close(&s);
    return expired < 0 ? expired : rc;
}
