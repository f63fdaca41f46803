/* wait(FIRST_COMPLETED / FIRST_EXCEPTION / ALL_COMPLETED) and as_completed. */
#include <errno.h>

#include "support/aio_check.h"

struct job {
    int ms;
    int result;
    int rc; /* what the job's sleep returned */
};

static int job_run(void *arg)
{
    struct job *j = arg;
    j->rc = aio_sleep(AIO_MSEC(j->ms));
    return j->rc < 0 ? j->rc : j->result;
}

static void spawn_all(aio_task **t, struct job *j, int n)
{
    for (int i = 0; i < n; i++)
        t[i] = aio_task_spawn(job_run, &j[i]);
}

static void join_all(aio_task **t, int n)
{
    for (int i = 0; i < n; i++)
        aio_task_join(t[i]);
}

AIO_TEST(first_completed_returns_when_one_ends_and_leaves_the_rest_running)
{
    struct job j[3] = {{.ms = 200, .result = 1}, {.ms = 5, .result = 2}, {.ms = 300, .result = 3}};
    aio_task *t[3];
    spawn_all(t, j, 3);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_wait(t, 3, AIO_FIRST_COMPLETED, 0), 1);
    ck_assert_double_lt(ms_since_ns(t0), 150);
    ck_assert(aio_task_done(t[1]) && !aio_task_done(t[0]) && !aio_task_done(t[2]));
    ck_assert_int_eq(aio_task_result(t[1]), 2);
    /* left running: they still complete normally */
    ck_assert_int_eq(aio_task_join(t[0]), 1);
    ck_assert_int_eq(aio_task_join(t[2]), 3);
    ck_assert_int_eq(aio_task_join(t[1]), 2);
    return 0;
}

AIO_TEST(first_completed_can_cancel_the_pending_ones)
{
    struct job j[3] = {{.ms = 5000}, {.ms = 3, .result = 2}, {.ms = 5000}};
    aio_task *t[3];
    spawn_all(t, j, 3);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_wait(t, 3, AIO_FIRST_COMPLETED, AIO_CANCEL_PENDING), 3);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(aio_task_result(t[1]), 2);
    ck_assert_int_eq(aio_task_result(t[0]), -ECANCELED);
    ck_assert_int_eq(aio_task_result(t[2]), -ECANCELED);
    join_all(t, 3);
    return 0;
}

AIO_TEST(first_exception_returns_at_the_first_failure)
{
    struct job j[3] = {{.ms = 2, .result = 1}, {.ms = 8, .result = -EIO}, {.ms = 5000}};
    aio_task *t[3];
    spawn_all(t, j, 3);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_wait(t, 3, AIO_FIRST_EXCEPTION, 0), 2);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(aio_task_result(t[1]), -EIO);
    ck_assert(!aio_task_done(t[2]));
    aio_task_cancel(t[2]);
    join_all(t, 3);
    return 0;
}

AIO_TEST(first_exception_without_failures_waits_for_all)
{
    struct job j[2] = {{.ms = 2, .result = 1}, {.ms = 10, .result = 2}};
    aio_task *t[2];
    spawn_all(t, j, 2);
    ck_assert_int_eq(aio_wait(t, 2, AIO_FIRST_EXCEPTION, 0), 2);
    join_all(t, 2);
    return 0;
}

AIO_TEST(all_completed_waits_for_every_task)
{
    struct job j[3] = {{.ms = 2, .result = -EIO}, {.ms = 10, .result = 2}, {.ms = 5, .result = 3}};
    aio_task *t[3];
    spawn_all(t, j, 3);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_wait(t, 3, AIO_ALL_COMPLETED, 0), 3);
    ck_assert_double_ge(ms_since_ns(t0), 9);
    join_all(t, 3);
    return 0;
}

AIO_TEST(a_wait_interrupted_by_its_deadline_leaves_the_tasks_running)
{
    struct job j[2] = {{.ms = 60, .result = 1}, {.ms = 80, .result = 2}};
    aio_task *t[2];
    spawn_all(t, j, 2);
    aio_timeout s;
    aio_timeout_open(&s, AIO_MSEC(5));
    ck_assert_int_eq(aio_wait(t, 2, AIO_ALL_COMPLETED, 0), -ETIMEDOUT);
    ck_assert_int_eq(aio_timeout_close(&s), -ETIMEDOUT);
    ck_assert(!aio_task_done(t[0]));
    ck_assert_int_eq(aio_task_join(t[0]), 1);
    ck_assert_int_eq(aio_task_join(t[1]), 2);
    return 0;
}

AIO_TEST(as_completed_yields_tasks_in_the_order_they_end)
{
    struct job j[4] = {{.ms = 30, .result = 0}, {.ms = 1, .result = 1}, {.ms = 15, .result = 2}, {.ms = 8, .result = 3}};
    aio_task *t[4];
    spawn_all(t, j, 4);
    aio_as_completed it;
    ck_assert_int_eq(aio_as_completed_init(&it, t, 4), 0);
    int order[4], n = 0;
    aio_task *done;
    int rc;
    while ((rc = aio_as_completed_next(&it, &done)) == 1)
        order[n++] = aio_task_result(done);
    ck_assert_int_eq(rc, 0);
    aio_as_completed_dispose(&it, 0);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(order[0], 1);
    ck_assert_int_eq(order[1], 3);
    ck_assert_int_eq(order[2], 2);
    ck_assert_int_eq(order[3], 0);
    join_all(t, 4);
    return 0;
}

AIO_TEST(as_completed_can_stop_early_and_cancel_the_rest)
{
    struct job j[3] = {{.ms = 5000}, {.ms = 2, .result = 1}, {.ms = 5000}};
    aio_task *t[3];
    spawn_all(t, j, 3);
    aio_as_completed it;
    ck_assert_int_eq(aio_as_completed_init(&it, t, 3), 0);
    aio_task *first;
    ck_assert_int_eq(aio_as_completed_next(&it, &first), 1);
    ck_assert_ptr_eq(first, t[1]);
    aio_as_completed_dispose(&it, AIO_CANCEL_PENDING);
    ck_assert_int_eq(aio_task_result(t[0]), -ECANCELED);
    ck_assert_int_eq(aio_task_result(t[2]), -ECANCELED);
    join_all(t, 3);
    return 0;
}

AIO_TEST(as_completed_next_obeys_deadlines)
{
    struct job j[1] = {{.ms = 50, .result = 4}};
    aio_task *t[1];
    spawn_all(t, j, 1);
    aio_as_completed it;
    aio_as_completed_init(&it, t, 1);
    aio_task *done;
    aio_timeout s;
    aio_timeout_open(&s, AIO_MSEC(3));
    ck_assert_int_eq(aio_as_completed_next(&it, &done), -ETIMEDOUT);
    aio_timeout_close(&s);
    ck_assert_int_eq(aio_as_completed_next(&it, &done), 1);
    ck_assert_int_eq(aio_task_result(done), 4);
    aio_as_completed_dispose(&it, 0);
    join_all(t, 1);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_wait");
    TCase *tc = tcase_create("wait");
    tcase_add_test(tc, first_completed_returns_when_one_ends_and_leaves_the_rest_running);
    tcase_add_test(tc, first_completed_can_cancel_the_pending_ones);
    tcase_add_test(tc, first_exception_returns_at_the_first_failure);
    tcase_add_test(tc, first_exception_without_failures_waits_for_all);
    tcase_add_test(tc, all_completed_waits_for_every_task);
    tcase_add_test(tc, a_wait_interrupted_by_its_deadline_leaves_the_tasks_running);
    tcase_add_test(tc, as_completed_yields_tasks_in_the_order_they_end);
    tcase_add_test(tc, as_completed_can_stop_early_and_cancel_the_rest);
    tcase_add_test(tc, as_completed_next_obeys_deadlines);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
