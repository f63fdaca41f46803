#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "task_int.h"
#include "wait.h"

static bool failed(const aio_task *t) { return t->result < 0 && t->result != -ECANCELED; }

static void cancel_and_await(aio_task *const *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        aio_task_cancel(tasks[i]);
    for (size_t i = 0; i < n; i++)
        aio__wait_done_uninterruptible(tasks[i]);
}

/* ---- aio_wait ---- */

struct wait_state;
struct wait_entry {
    aio__watch watch;
    struct wait_state *st;
};

struct wait_state {
    enum aio_wait_mode mode;
    size_t n, done, failed;
    struct wait_entry *entries;
    aio__waiter waiter;
    bool waiting;
};

static bool satisfied(const struct wait_state *st)
{
    switch (st->mode) {
    case AIO_FIRST_COMPLETED:
        return st->done > 0 || st->n == 0;
    case AIO_FIRST_EXCEPTION:
        return st->failed > 0 || st->done == st->n;
    case AIO_ALL_COMPLETED:
        break;
    }
    return st->done == st->n;
}

static void unwatch_all(struct wait_state *st)
{
    for (size_t i = 0; i < st->n; i++)
        aio_link_unlink(&st->entries[i].watch.link);
}

static void wait_on_done(aio__watch *w, aio_task *t)
{
    struct wait_state *st = aio_container_of(w, struct wait_entry, watch)->st;
    st->done++;
    if (failed(t))
        st->failed++;
    if (st->waiting && satisfied(st)) {
        st->waiting = false;
        unwatch_all(st);
        aio__wake(&st->waiter, 0);
    }
}

static void wait_abort(aio__waiter *w)
{
    struct wait_state *st = aio_container_of(w, struct wait_state, waiter);
    st->waiting = false;
    unwatch_all(st);
}

int aio_wait(aio_task *const *tasks, size_t n, enum aio_wait_mode mode, int flags)
{
    struct wait_state st = {.mode = mode, .n = n};
    for (size_t i = 0; i < n; i++) {
        if (aio_task_done(tasks[i])) {
            st.done++;
            st.failed += failed(tasks[i]);
        }
    }
    int rc = 0;
    if (!satisfied(&st)) {
        rc = aio__enter();
        if (rc == 0) {
            st.entries = calloc(n, sizeof(*st.entries));
            if (st.entries == NULL) {
                rc = -ENOMEM;
            } else {
                for (size_t i = 0; i < n; i++) {
                    st.entries[i].st = &st;
                    st.entries[i].watch.on_done = wait_on_done;
                    aio_link_init(&st.entries[i].watch.link);
                    if (!aio_task_done(tasks[i]))
                        aio__watch_add(tasks[i], &st.entries[i].watch);
                }
                st.waiter.abort = wait_abort;
                st.waiting = true;
                rc = aio__suspend(&st.waiter, AIO_NEVER);
                free(st.entries);
            }
        }
    }
    if (flags & AIO_CANCEL_PENDING)
        cancel_and_await(tasks, n);
    if (rc < 0)
        return rc;
    size_t done = 0;
    for (size_t i = 0; i < n; i++)
        done += aio_task_done(tasks[i]);
    return (int)done;
}

/* ---- as_completed ---- */

struct aio__ac_entry {
    aio__watch watch;
    aio_link ended_link;
    aio_task *task;
    aio_as_completed *it;
};

static void ac_on_done(aio__watch *w, aio_task *t)
{
    (void)t;
    struct aio__ac_entry *e = aio_container_of(w, struct aio__ac_entry, watch);
    aio_as_completed *it = e->it;
    aio_list_push_back(&it->ended, &e->ended_link);
    if (it->waiter != NULL) {
        aio__waiter *wt = it->waiter;
        it->waiter = NULL;
        aio__wake(wt, 0);
    }
}

static void ac_abort(aio__waiter *w)
{
    aio_as_completed *it = w->data;
    it->waiter = NULL;
}

int aio_as_completed_init(aio_as_completed *it, aio_task *const *tasks, size_t n)
{
    it->n = n;
    it->yielded = 0;
    it->waiter = NULL;
    aio_list_init(&it->ended);
    it->entries = calloc(n ? n : 1, sizeof(*it->entries));
    if (it->entries == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct aio__ac_entry *e = &it->entries[i];
        e->task = tasks[i];
        e->it = it;
        e->watch.on_done = ac_on_done;
        aio_link_init(&e->watch.link);
        aio_link_init(&e->ended_link);
        if (aio_task_done(tasks[i]))
            aio_list_push_back(&it->ended, &e->ended_link);
        else
            aio__watch_add(tasks[i], &e->watch);
    }
    return 0;
}

int aio_as_completed_next(aio_as_completed *it, aio_task **out)
{
    if (it->yielded == it->n)
        return 0;
    if (aio_list_is_empty(&it->ended)) {
        int rc = aio__enter();
        if (rc < 0)
            return rc;
        aio__waiter w = {.abort = ac_abort, .data = it};
        it->waiter = &w;
        rc = aio__suspend(&w, AIO_NEVER);
        if (rc < 0)
            return rc;
    }
    aio_link *l = aio_list_pop_front(&it->ended);
    assert(l != NULL);
    *out = aio_container_of(l, struct aio__ac_entry, ended_link)->task;
    it->yielded++;
    return 1;
}

void aio_as_completed_dispose(aio_as_completed *it, int flags)
{
    for (size_t i = 0; i < it->n; i++) {
        struct aio__ac_entry *e = &it->entries[i];
        aio_link_unlink(&e->watch.link);
        aio_link_unlink(&e->ended_link);
        if (flags & AIO_CANCEL_PENDING)
            aio_task_cancel(e->task);
    }
    if (flags & AIO_CANCEL_PENDING)
        for (size_t i = 0; i < it->n; i++)
            aio__wait_done_uninterruptible(it->entries[i].task);
    free(it->entries);
    it->entries = NULL;
}
