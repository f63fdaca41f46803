/* Tasks and the loop: spawn, join, detach, cancel, stacks, asyncio.run. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio_check.h"

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

AIO_TEST(join_returns_the_task_result)
{
    aio_task *t = aio_task_spawn(return_arg, (void *)(intptr_t)42);
    ck_assert_ptr_nonnull(t);
    ck_assert(!aio_task_done(t)); /* never runs inside spawn */
    ck_assert_int_eq(aio_task_join(t), 42);
    t = aio_task_spawn(return_arg, (void *)(intptr_t)-EIO);
    ck_assert_int_eq(aio_task_join(t), -EIO);
    return 0;
}

AIO_TEST(join_of_an_ended_task_does_not_suspend)
{
    aio_task *t = aio_task_spawn(return_arg, (void *)(intptr_t)7);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), 0);
    ck_assert(aio_task_done(t));
    ck_assert_int_eq(aio_task_result(t), 7);
    aio_task_cancel(aio_task_current()); /* a join that needs no wait still returns the result */
    ck_assert_int_eq(aio_task_join(t), 7);
    return 0;
}

struct counter {
    int runs;
    int awaits_failed;
    int last_rc;
    int cleanup;
};

static int sleeper(void *arg)
{
    struct counter *c = arg;
    c->runs++;
    int rc = aio_sleep(AIO_SEC(30));
    c->last_rc = rc;
    /* every later await fails the same way, so cleanup cannot hang */
    if (aio_sleep(AIO_SEC(30)) == rc)
        c->awaits_failed++;
    if (aio_yield() == rc)
        c->awaits_failed++;
    aio_event e;
    aio_event_init(&e);
    if (aio_event_wait(&e) == rc)
        c->awaits_failed++;
    c->cleanup++;
    return rc;
}

AIO_TEST(cancel_interrupts_the_current_await_and_every_later_one)
{
    struct counter c = {0};
    aio_task *t = aio_task_spawn(sleeper, &c);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    ck_assert_int_eq(c.runs, 1);
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    aio_task_cancel(t); /* idempotent */
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_double_lt(ms_since(t0), 1000);
    ck_assert_int_eq(c.last_rc, -ECANCELED);
    ck_assert_int_eq(c.awaits_failed, 3);
    ck_assert_int_eq(c.cleanup, 1);
    return 0;
}

AIO_TEST(a_task_cancelled_before_it_starts_still_runs_and_fails_its_first_await)
{
    struct counter c = {0};
    aio_task *t = aio_task_spawn(sleeper, &c);
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_int_eq(c.runs, 1);
    ck_assert_int_eq(c.cleanup, 1);
    return 0;
}

static int cancel_self(void *arg)
{
    (void)arg;
    aio_task_cancel(aio_task_current());
    ck_assert_int_eq(aio_checkpoint(), -ECANCELED);
    return aio_yield();
}

AIO_TEST(a_task_can_cancel_itself)
{
    ck_assert_int_eq(aio_task_join(aio_task_spawn(cancel_self, NULL)), -ECANCELED);
    return 0;
}

static int joiner(void *arg)
{
    aio_task *child = arg;
    return aio_task_join(child);
}

AIO_TEST(a_joiner_that_is_cancelled_cancels_the_task_it_awaits)
{
    struct counter c = {0};
    aio_task *child = aio_task_spawn(sleeper, &c);
    aio_task *parent = aio_task_spawn(joiner, child);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    aio_task_cancel(parent);
    ck_assert_int_eq(aio_task_join(parent), -ECANCELED);
    /* the child was cancelled, its cleanup ran, and it is gone */
    ck_assert_int_eq(c.cleanup, 1);
    ck_assert_int_eq(c.last_rc, -ECANCELED);
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 1);
    return 0;
}

static int set_flag(void *arg)
{
    aio_sleep(AIO_MSEC(1));
    *(int *)arg = 1;
    return 0;
}

AIO_TEST(a_detached_task_runs_to_its_end_and_releases_itself)
{
    int flag = 0;
    aio_task_detach(aio_task_spawn(set_flag, &flag));
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 2);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(20)), 0);
    ck_assert_int_eq(flag, 1);
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 1);
    return 0;
}

static int order_log[8];
static int order_len;

static int log_then_yield(void *arg)
{
    int id = (int)(intptr_t)arg;
    order_log[order_len++] = id;
    aio_yield();
    order_log[order_len++] = id + 10;
    return 0;
}

AIO_TEST(ready_tasks_run_in_fifo_order_and_yield_lets_others_run)
{
    order_len = 0;
    aio_task *a = aio_task_spawn(log_then_yield, (void *)1);
    aio_task *b = aio_task_spawn(log_then_yield, (void *)2);
    aio_task_join(a);
    aio_task_join(b);
    ck_assert_int_eq(order_len, 4);
    ck_assert_int_eq(order_log[0], 1);
    ck_assert_int_eq(order_log[1], 2);
    ck_assert_int_eq(order_log[2], 11);
    ck_assert_int_eq(order_log[3], 12);
    return 0;
}

static int ten_thousand_done;

static int sleep_then_count(void *arg)
{
    int rc = aio_sleep(AIO_MSEC(10 + (intptr_t)arg % 20));
    if (rc == 0)
        ten_thousand_done++;
    return rc;
}

AIO_TEST(ten_thousand_concurrent_tasks_on_one_thread)
{
    enum { N = 10000 };
    aio_task **tasks = malloc(N * sizeof(*tasks));
    ten_thousand_done = 0;
    for (intptr_t i = 0; i < N; i++) {
        tasks[i] = aio_task_spawn(sleep_then_count, (void *)i);
        ck_assert_ptr_nonnull(tasks[i]);
    }
    /* all of them are alive at the same time */
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), N + 1);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(aio_task_join(tasks[i]), 0);
    ck_assert_int_eq(ten_thousand_done, N);
    free(tasks);
    return 0;
}

/* Deep enough to run off any stack; volatile so it is not optimised away. */
static int recurse(int depth)
{
    volatile char pad[4096];
    pad[0] = (char)depth;
    return depth > 1000000 ? pad[0] : recurse(depth + 1) + pad[0];
}

static int overflow(void *arg)
{
    (void)arg;
    return recurse(0);
}

static int overflow_main(void *arg)
{
    (void)arg;
    return aio_task_join(aio_task_spawn(overflow, NULL));
}

START_TEST(a_stack_overflow_hits_the_guard_page)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        aio_loop_options o = {.stack_size = 64 * 1024};
        aio_run(overflow_main, NULL, &o);
        _exit(0); /* not reached: the guard page stops it */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    /* SIGSEGV, or ASan's own stack-overflow report and exit */
    ck_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
}
END_TEST

static struct counter leftover;

static int main_result(void *arg)
{
    int *n = arg;
    aio_task_detach(aio_task_spawn(sleeper, &leftover));
    return *n * 2;
}

START_TEST(aio_run_returns_main_result_and_cancels_what_is_left)
{
    int n = 21;
    ck_assert_int_eq(aio_run(main_result, &n, NULL), 42);
    ck_assert_ptr_null(aio_loop_current());
    ck_assert_int_eq(leftover.last_rc, -ECANCELED); /* cancelled and run to its end */
    ck_assert_int_eq(leftover.cleanup, 1);
}
END_TEST

START_TEST(the_stack_size_is_configurable)
{
    aio_loop_options o = {.stack_size = 1 << 20};
    int n = 5;
    ck_assert_int_eq(aio_run(main_result, &n, &o), 10);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("aio_task");
    TCase *tc = tcase_create("task");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, join_returns_the_task_result);
    tcase_add_test(tc, join_of_an_ended_task_does_not_suspend);
    tcase_add_test(tc, cancel_interrupts_the_current_await_and_every_later_one);
    tcase_add_test(tc, a_task_cancelled_before_it_starts_still_runs_and_fails_its_first_await);
    tcase_add_test(tc, a_task_can_cancel_itself);
    tcase_add_test(tc, a_joiner_that_is_cancelled_cancels_the_task_it_awaits);
    tcase_add_test(tc, a_detached_task_runs_to_its_end_and_releases_itself);
    tcase_add_test(tc, ready_tasks_run_in_fifo_order_and_yield_lets_others_run);
    tcase_add_test(tc, ten_thousand_concurrent_tasks_on_one_thread);
    tcase_add_test(tc, a_stack_overflow_hits_the_guard_page);
    tcase_add_test(tc, aio_run_returns_main_result_and_cancels_what_is_left);
    tcase_add_test(tc, the_stack_size_is_configurable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
