#include <assert.h>
#include <errno.h>

#include "group.h"
#include "task_int.h"

void aio_group_init(aio_group *g)
{
    aio_task *owner = aio__self();
    g->owner = owner;
    aio_list_init(&g->children);
    aio_list_push_back(&owner->groups, &g->owner_link);
    g->waiter = NULL;
    g->running = 0;
    g->failed = 0;
    g->first_error = 0;
    g->cancelled = owner->cancelled;
    g->cancel_on_failure = true;
}

static void record_failure(aio_group *g, int error)
{
    if (g->failed++ == 0)
        g->first_error = error;
    if (g->cancel_on_failure)
        aio_group_cancel(g);
}

aio_task *aio_group_spawn(aio_group *g, aio_fn fn, void *arg)
{
    aio_task *t = aio_task_spawn(fn, arg);
    if (t == NULL) {
        record_failure(g, -ENOMEM);
        return NULL;
    }
    t->group = g;
    aio_list_push_back(&g->children, &t->group_link);
    g->running++;
    if (g->cancelled)
        aio_task_cancel(t);
    return t;
}

void aio_group_cancel(aio_group *g)
{
    g->cancelled = true;
    aio_list_foreach(l, &g->children) aio_task_cancel(aio_container_of(l, aio_task, group_link));
}

void aio__group_cancel_all(aio_task *owner)
{
    aio_list_foreach(l, &owner->groups) aio_group_cancel(aio_container_of(l, aio_group, owner_link));
}

void aio__group_child_done(aio_task *t)
{
    aio_group *g = t->group;
    g->running--;
    if (t->result < 0 && t->result != -ECANCELED)
        record_failure(g, t->result);
    if (g->running == 0 && g->waiter != NULL) {
        aio__waiter *w = g->waiter;
        g->waiter = NULL;
        aio__wake(w, 0);
    }
}

static void join_abort(aio__waiter *w)
{
    aio_group *g = w->data;
    g->waiter = NULL;
}

/* Returns the owner's interruption (0, -ECANCELED, -ETIMEDOUT). */
static int wait_children(aio_group *g)
{
    int rc = 0;
    if (g->running > 0) {
        rc = aio__enter();
        if (rc == 0) {
            aio__waiter w = {.abort = join_abort, .data = g};
            g->waiter = &w;
            rc = aio__suspend(&w, AIO_NEVER);
        }
        if (g->running > 0) {
            /* interrupted: cancelled children end promptly, since their awaits fail */
            aio_group_cancel(g);
            aio__waiter w = {.abort = NULL, .data = g};
            g->waiter = &w;
            aio__suspend(&w, AIO_NEVER);
        }
    }
    aio_link *l;
    while ((l = aio_list_pop_front(&g->children)) != NULL)
        aio__task_release(aio_container_of(l, aio_task, group_link));
    aio_link_unlink(&g->owner_link);
    return rc;
}

int aio_group_join(aio_group *g)
{
    assert(g->owner == aio_task_current());
    int rc = wait_children(g);
    return g->failed ? g->first_error : rc;
}

size_t aio_group_failed(const aio_group *g) { return g->failed; }

static int gather_run(void *arg)
{
    aio_call *c = arg;
    c->result = c->fn(c->arg);
    return c->result;
}

int aio_gather(aio_call *calls, size_t n, int flags)
{
    aio_group g;
    aio_group_init(&g);
    g.cancel_on_failure = !(flags & AIO_RETURN_EXCEPTIONS);
    for (size_t i = 0; i < n; i++) {
        calls[i].result = -ECANCELED;
        if (aio_group_spawn(&g, gather_run, &calls[i]) == NULL)
            calls[i].result = -ENOMEM;
    }
    int interrupted = wait_children(&g);
    if (!(flags & AIO_RETURN_EXCEPTIONS) && g.failed)
        return g.first_error;
    return interrupted;
}
