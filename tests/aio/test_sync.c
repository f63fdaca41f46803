/* Lock, Semaphore, Event: FIFO fairness and cancellable waits. */
#include <errno.h>

#include "support/aio_check.h"

static int order[16];
static int order_len;

struct locker {
    aio_lock *lock;
    int id;
    int hold_ms;
    int rc;
};

static int lock_and_hold(void *arg)
{
    struct locker *l = arg;
    l->rc = aio_lock_acquire(l->lock);
    if (l->rc < 0)
        return l->rc;
    order[order_len++] = l->id;
    aio_sleep(AIO_MSEC(l->hold_ms));
    aio_lock_release(l->lock);
    return 0;
}

AIO_TEST(lock_is_granted_in_fifo_order)
{
    aio_lock lock;
    aio_lock_init(&lock);
    order_len = 0;
    struct locker l[4];
    aio_task *t[4];
    for (int i = 0; i < 4; i++) {
        l[i] = (struct locker){.lock = &lock, .id = i, .hold_ms = 2};
        t[i] = aio_task_spawn(lock_and_hold, &l[i]);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(aio_task_join(t[i]), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(order[i], i);
    ck_assert(!aio_lock_locked(&lock));
    return 0;
}

AIO_TEST(a_newcomer_cannot_overtake_a_lock_waiter)
{
    aio_lock lock;
    aio_lock_init(&lock);
    ck_assert_int_eq(aio_lock_acquire(&lock), 0);
    struct locker w = {.lock = &lock, .id = 1};
    aio_task *t = aio_task_spawn(lock_and_hold, &w);
    aio_yield(); /* w is now waiting */
    aio_lock_release(&lock);
    /* handed to the waiter already, though it has not run yet */
    ck_assert_int_eq(aio_lock_try_acquire(&lock), -EBUSY);
    ck_assert_int_eq(aio_task_join(t), 0);
    ck_assert_int_eq(aio_lock_try_acquire(&lock), 0);
    aio_lock_release(&lock);
    return 0;
}

AIO_TEST(a_cancelled_lock_waiter_never_takes_the_lock)
{
    aio_lock lock;
    aio_lock_init(&lock);
    order_len = 0;
    ck_assert_int_eq(aio_lock_acquire(&lock), 0);
    struct locker a = {.lock = &lock, .id = 1}, b = {.lock = &lock, .id = 2};
    aio_task *ta = aio_task_spawn(lock_and_hold, &a);
    aio_task *tb = aio_task_spawn(lock_and_hold, &b);
    aio_yield();
    aio_task_cancel(ta);
    aio_lock_release(&lock);
    ck_assert_int_eq(aio_task_join(ta), -ECANCELED);
    ck_assert_int_eq(aio_task_join(tb), 0);
    ck_assert_int_eq(order_len, 1);
    ck_assert_int_eq(order[0], 2);
    ck_assert(!aio_lock_locked(&lock));
    return 0;
}

AIO_TEST(a_lock_wait_times_out_within_a_scope)
{
    aio_lock lock;
    aio_lock_init(&lock);
    aio_lock_acquire(&lock);
    struct locker w = {.lock = &lock};
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(5), lock_and_hold, &w), -ETIMEDOUT);
    ck_assert_int_eq(w.rc, -ETIMEDOUT);
    aio_lock_release(&lock);
    ck_assert(!aio_lock_locked(&lock)); /* the timed-out waiter did not get it */
    return 0;
}

struct sem_user {
    aio_sem *sem;
    int id;
    int hold_ms;
    int rc;
    int *active, *max_active;
};

static int use_sem(void *arg)
{
    struct sem_user *u = arg;
    u->rc = aio_sem_acquire(u->sem);
    if (u->rc < 0)
        return u->rc;
    order[order_len++] = u->id;
    if (++*u->active > *u->max_active)
        *u->max_active = *u->active;
    aio_sleep(AIO_MSEC(u->hold_ms));
    --*u->active;
    aio_sem_release(u->sem);
    return 0;
}

AIO_TEST(semaphore_bounds_concurrency_fifo)
{
    aio_sem sem;
    aio_sem_init(&sem, 2);
    order_len = 0;
    int active = 0, max_active = 0;
    struct sem_user u[6];
    aio_task *t[6];
    for (int i = 0; i < 6; i++) {
        u[i] = (struct sem_user){.sem = &sem, .id = i, .hold_ms = 3, .active = &active, .max_active = &max_active};
        t[i] = aio_task_spawn(use_sem, &u[i]);
    }
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(aio_task_join(t[i]), 0);
    ck_assert_int_eq(max_active, 2);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(order[i], i);
    ck_assert_int_eq(aio_sem_value(&sem), 2);
    return 0;
}

AIO_TEST(a_cancelled_semaphore_waiter_does_not_consume_a_slot)
{
    aio_sem sem;
    aio_sem_init(&sem, 1);
    order_len = 0;
    int active = 0, max_active = 0;
    ck_assert_int_eq(aio_sem_acquire(&sem), 0);
    struct sem_user a = {.sem = &sem, .id = 1, .active = &active, .max_active = &max_active};
    struct sem_user b = {.sem = &sem, .id = 2, .active = &active, .max_active = &max_active};
    aio_task *ta = aio_task_spawn(use_sem, &a);
    aio_task *tb = aio_task_spawn(use_sem, &b);
    aio_yield();
    ck_assert_int_eq(aio_sem_waiting(&sem), 2);
    aio_task_cancel(ta);
    ck_assert_int_eq(aio_sem_waiting(&sem), 1);
    aio_sem_release(&sem);
    ck_assert_int_eq(aio_task_join(ta), -ECANCELED);
    ck_assert_int_eq(aio_task_join(tb), 0);
    ck_assert_int_eq(order_len, 1);
    ck_assert_int_eq(order[0], 2);
    ck_assert_int_eq(aio_sem_value(&sem), 1); /* every slot is back */
    return 0;
}

AIO_TEST(a_timed_out_semaphore_waiter_does_not_consume_a_slot)
{
    aio_sem sem;
    aio_sem_init(&sem, 0);
    int active = 0, max_active = 0;
    struct sem_user u = {.sem = &sem, .active = &active, .max_active = &max_active};
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(5), use_sem, &u), -ETIMEDOUT);
    ck_assert_int_eq(aio_sem_waiting(&sem), 0);
    aio_sem_release(&sem);
    ck_assert_int_eq(aio_sem_value(&sem), 1);
    ck_assert_int_eq(aio_sem_try_acquire(&sem), 0);
    ck_assert_int_eq(aio_sem_try_acquire(&sem), -EAGAIN);
    return 0;
}

struct event_waiter {
    aio_event *e;
    int rc;
};

static int wait_event(void *arg)
{
    struct event_waiter *w = arg;
    w->rc = aio_event_wait(w->e);
    return w->rc;
}

AIO_TEST(event_set_wakes_every_waiter)
{
    aio_event e;
    aio_event_init(&e);
    struct event_waiter w[3];
    aio_task *t[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct event_waiter){.e = &e, .rc = 1};
        t[i] = aio_task_spawn(wait_event, &w[i]);
    }
    aio_sleep(AIO_MSEC(2));
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(w[i].rc, 1); /* all still waiting */
    aio_event_set(&e);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(aio_task_join(t[i]), 0);
    ck_assert(aio_event_is_set(&e));
    ck_assert_int_eq(aio_event_wait(&e), 0); /* set: no wait */
    aio_event_clear(&e);
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(3), wait_event, &w[0]), -ETIMEDOUT);
    return 0;
}

AIO_TEST(an_event_wait_is_cancellable)
{
    aio_event e;
    aio_event_init(&e);
    struct event_waiter w = {.e = &e, .rc = 1};
    aio_task *t = aio_task_spawn(wait_event, &w);
    aio_yield();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    aio_event_set(&e); /* nobody left on the list */
    return 0;
}


struct future_waiter {
    aio_future *f;
    int rc;
};

static int wait_future(void *arg)
{
    struct future_waiter *w = arg;
    w->rc = aio_future_wait(w->f);
    return w->rc;
}

static aio_future *timer_future;

static void set_from_callback(aio_deferred *d)
{
    (void)d;
    aio_future_set(timer_future, 77); /* from a loop callback, not a task */
}

AIO_TEST(a_future_set_by_a_loop_callback_wakes_its_waiter)
{
    aio_future f;
    aio_future_init(&f);
    struct future_waiter w = {.f = &f, .rc = 1};
    aio_task *t = aio_task_spawn(wait_future, &w);
    aio_yield();
    ck_assert_int_eq(w.rc, 1);
    timer_future = &f;
    aio_deferred d;
    aio_deferred_init(&d, set_from_callback);
    aio_defer(&d);
    aio_defer(&d); /* scheduled once */
    ck_assert_int_eq(aio_task_join(t), 77);
    ck_assert(aio_future_done(&f));
    ck_assert_int_eq(aio_future_wait(&f), 77); /* done: no wait */
    return 0;
}

AIO_TEST(an_interrupted_future_wait_leaves_the_future_to_be_reclaimed)
{
    aio_future f;
    aio_future_init(&f);
    struct future_waiter w = {.f = &f, .rc = 1};
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(3), wait_future, &w), -ETIMEDOUT);
    ck_assert(!aio_future_done(&f));
    aio_future_set(&f, 5); /* a late result is still recorded */
    aio_future_set(&f, 6); /* and only the first */
    ck_assert(aio_future_done(&f));
    ck_assert_int_eq(f.result, 5);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_sync");
    TCase *tc = tcase_create("sync");
    tcase_add_test(tc, lock_is_granted_in_fifo_order);
    tcase_add_test(tc, a_newcomer_cannot_overtake_a_lock_waiter);
    tcase_add_test(tc, a_cancelled_lock_waiter_never_takes_the_lock);
    tcase_add_test(tc, a_lock_wait_times_out_within_a_scope);
    tcase_add_test(tc, semaphore_bounds_concurrency_fifo);
    tcase_add_test(tc, a_cancelled_semaphore_waiter_does_not_consume_a_slot);
    tcase_add_test(tc, a_timed_out_semaphore_waiter_does_not_consume_a_slot);
    tcase_add_test(tc, event_set_wakes_every_waiter);
    tcase_add_test(tc, an_event_wait_is_cancellable);
    tcase_add_test(tc, a_future_set_by_a_loop_callback_wakes_its_waiter);
    tcase_add_test(tc, an_interrupted_future_wait_leaves_the_future_to_be_reclaimed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
