/* Queue(maxsize): FIFO, back-pressure, cancellable put and get. */
#include <errno.h>

#include "support/aio_check.h"

#define ITEM(n) ((void *)(intptr_t)(n))

struct getter {
    aio_queue *q;
    void *item;
    int rc;
};

static int get_one(void *arg)
{
    struct getter *g = arg;
    g->rc = aio_queue_get(g->q, &g->item);
    return g->rc;
}

struct putter {
    aio_queue *q;
    void *item;
    int rc;
};

static int put_one(void *arg)
{
    struct putter *p = arg;
    p->rc = aio_queue_put(p->q, p->item);
    return p->rc;
}

AIO_TEST(items_come_out_in_order)
{
    aio_queue *q = aio_queue_create(0);
    for (int i = 1; i <= 100; i++)
        ck_assert_int_eq(aio_queue_put(q, ITEM(i)), 0); /* unbounded: never waits */
    ck_assert_int_eq(aio_queue_size(q), 100);
    for (int i = 1; i <= 100; i++) {
        void *item;
        ck_assert_int_eq(aio_queue_get(q, &item), 0);
        ck_assert_ptr_eq(item, ITEM(i));
    }
    void *none;
    ck_assert_int_eq(aio_queue_try_get(q, &none), -EAGAIN);
    aio_queue_destroy(q);
    return 0;
}

AIO_TEST(getters_wait_and_are_served_in_arrival_order)
{
    aio_queue *q = aio_queue_create(4);
    struct getter g[3];
    aio_task *t[3];
    for (int i = 0; i < 3; i++) {
        g[i] = (struct getter){.q = q};
        t[i] = aio_task_spawn(get_one, &g[i]);
    }
    aio_yield();
    for (int i = 0; i < 3; i++)
        aio_queue_put(q, ITEM(10 + i));
    ck_assert_int_eq(aio_queue_size(q), 0); /* handed straight to the getters */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(aio_task_join(t[i]), 0);
        ck_assert_ptr_eq(g[i].item, ITEM(10 + i));
    }
    aio_queue_destroy(q);
    return 0;
}

AIO_TEST(put_waits_while_the_queue_is_full)
{
    aio_queue *q = aio_queue_create(2);
    ck_assert_int_eq(aio_queue_put(q, ITEM(1)), 0);
    ck_assert_int_eq(aio_queue_put(q, ITEM(2)), 0);
    ck_assert_int_eq(aio_queue_try_put(q, ITEM(9)), -EAGAIN);
    struct putter p = {.q = q, .item = ITEM(3), .rc = 1};
    aio_task *t = aio_task_spawn(put_one, &p);
    aio_sleep(AIO_MSEC(2));
    ck_assert_int_eq(p.rc, 1); /* still blocked */
    void *item;
    ck_assert_int_eq(aio_queue_get(q, &item), 0);
    ck_assert_ptr_eq(item, ITEM(1));
    ck_assert_int_eq(aio_task_join(t), 0);
    ck_assert_int_eq(aio_queue_size(q), 2);
    aio_queue_get(q, &item);
    ck_assert_ptr_eq(item, ITEM(2));
    aio_queue_get(q, &item);
    ck_assert_ptr_eq(item, ITEM(3));
    aio_queue_destroy(q);
    return 0;
}

AIO_TEST(a_cancelled_getter_never_takes_an_item)
{
    aio_queue *q = aio_queue_create(0);
    struct getter a = {.q = q}, b = {.q = q};
    aio_task *ta = aio_task_spawn(get_one, &a);
    aio_task *tb = aio_task_spawn(get_one, &b);
    aio_yield();
    aio_task_cancel(ta);
    aio_queue_put(q, ITEM(5));
    ck_assert_int_eq(aio_task_join(ta), -ECANCELED);
    ck_assert_ptr_null(a.item);
    ck_assert_int_eq(aio_task_join(tb), 0);
    ck_assert_ptr_eq(b.item, ITEM(5));
    aio_queue_destroy(q);
    return 0;
}

AIO_TEST(a_timed_out_getter_never_takes_an_item)
{
    aio_queue *q = aio_queue_create(1);
    struct getter g = {.q = q};
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(3), get_one, &g), -ETIMEDOUT);
    aio_queue_put(q, ITEM(8));
    ck_assert_int_eq(aio_queue_size(q), 1);
    aio_queue_destroy(q);
    return 0;
}

AIO_TEST(a_cancelled_putter_leaves_no_item_behind)
{
    aio_queue *q = aio_queue_create(1);
    aio_queue_put(q, ITEM(1));
    struct putter a = {.q = q, .item = ITEM(2)}, b = {.q = q, .item = ITEM(3)};
    aio_task *ta = aio_task_spawn(put_one, &a);
    aio_task *tb = aio_task_spawn(put_one, &b);
    aio_yield();
    aio_task_cancel(ta);
    ck_assert_int_eq(aio_task_join(ta), -ECANCELED);
    void *item;
    aio_queue_get(q, &item);
    ck_assert_ptr_eq(item, ITEM(1));
    ck_assert_int_eq(aio_task_join(tb), 0);
    aio_queue_get(q, &item);
    ck_assert_ptr_eq(item, ITEM(3)); /* 2 never entered */
    ck_assert_int_eq(aio_queue_size(q), 0);
    aio_queue_destroy(q);
    return 0;
}

struct pc {
    aio_queue *q;
    int n;
    long sum;
};

static int producer(void *arg)
{
    struct pc *p = arg;
    for (int i = 1; i <= p->n; i++) {
        int rc = aio_queue_put(p->q, ITEM(i));
        if (rc < 0)
            return rc;
    }
    return aio_queue_put(p->q, NULL);
}

static int consumer(void *arg)
{
    struct pc *p = arg;
    for (;;) {
        void *item;
        int rc = aio_queue_get(p->q, &item);
        if (rc < 0)
            return rc;
        if (item == NULL)
            return 0;
        p->sum += (intptr_t)item;
    }
}

AIO_TEST(producer_and_consumer_through_a_small_queue)
{
    struct pc p = {.q = aio_queue_create(3), .n = 10000};
    aio_call calls[2] = {{.fn = producer, .arg = &p}, {.fn = consumer, .arg = &p}};
    ck_assert_int_eq(aio_gather(calls, 2, 0), 0);
    ck_assert_int_eq(p.sum, 10000L * 10001 / 2);
    aio_queue_destroy(p.q);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_queue");
    TCase *tc = tcase_create("queue");
    tcase_add_test(tc, items_come_out_in_order);
    tcase_add_test(tc, getters_wait_and_are_served_in_arrival_order);
    tcase_add_test(tc, put_waits_while_the_queue_is_full);
    tcase_add_test(tc, a_cancelled_getter_never_takes_an_item);
    tcase_add_test(tc, a_timed_out_getter_never_takes_an_item);
    tcase_add_test(tc, a_cancelled_putter_leaves_no_item_behind);
    tcase_add_test(tc, producer_and_consumer_through_a_small_queue);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
