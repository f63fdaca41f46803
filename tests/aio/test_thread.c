/* to_thread: blocking work on helper threads without blocking the loop. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "support/aio_check.h"

struct blocking {
    int ms;
    int value;
    pthread_t ran_on;
};

static int block_for(void *arg)
{
    struct blocking *b = arg;
    b->ran_on = pthread_self();
    struct timespec ts = {.tv_sec = b->ms / 1000, .tv_nsec = (long)(b->ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* really blocks this thread */
    return b->value;
}

static int ticker(void *arg)
{
    int *ticks = arg;
    for (;;) {
        if (aio_sleep(AIO_MSEC(2)) < 0)
            return 0;
        ++*ticks;
    }
}

AIO_TEST(to_thread_returns_the_result_and_the_loop_keeps_running)
{
    int ticks = 0;
    aio_task *tick = aio_task_spawn(ticker, &ticks);
    struct blocking b = {.ms = 60, .value = 17};
    ck_assert_int_eq(aio_to_thread(block_for, &b), 17);
    ck_assert(!pthread_equal(b.ran_on, pthread_self()));
    /* while the helper slept 60 ms, the loop thread served the ticker */
    ck_assert_int_ge(ticks, 5);
    aio_task_cancel(tick);
    aio_task_join(tick);
    return 0;
}

static int call_blocking(void *arg) { return aio_to_thread(block_for, arg); }

AIO_TEST(several_blocking_calls_run_in_parallel)
{
    struct blocking b[4];
    aio_call calls[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (struct blocking){.ms = 100, .value = i};
        calls[i] = (aio_call){.fn = call_blocking, .arg = &b[i]};
    }
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_gather(calls, 4, 0), 0);
    ck_assert_double_lt(ms_since_ns(t0), 350); /* four helpers: not 400 ms in a row */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(calls[i].result, i);
    return 0;
}

struct uninterruptible {
    struct blocking b;
    int rc, next_rc;
};

static int to_thread_then_await(void *arg)
{
    struct uninterruptible *u = arg;
    u->rc = aio_to_thread(block_for, &u->b);
    u->next_rc = aio_yield();
    return u->rc;
}

AIO_TEST(a_cancel_during_to_thread_shows_at_the_next_await)
{
    struct uninterruptible u = {.b = {.ms = 30, .value = 5}};
    aio_task *t = aio_task_spawn(to_thread_then_await, &u);
    aio_sleep(AIO_MSEC(5));
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), 5);
    ck_assert_int_eq(u.rc, 5);           /* the call completed: its result stands */
    ck_assert_int_eq(u.next_rc, -ECANCELED);
    return 0;
}

static int abandoned_results[2];
static int abandoned_count;

static void on_abandon(void *arg, int result)
{
    abandoned_results[abandoned_count++] = result;
    free(arg);
}

static int abandonable(void *arg)
{
    (void)arg;
    struct blocking *b = calloc(1, sizeof(*b));
    b->ms = 80;
    b->value = 33;
    int rc = aio_to_thread_abandonable(block_for, b, on_abandon);
    if (rc != -ECANCELED && rc != -ETIMEDOUT)
        free(b); /* not abandoned: still ours */
    return rc;
}

AIO_TEST(an_abandonable_call_is_interrupted_at_once_and_cleaned_up_later)
{
    abandoned_count = 0;
    aio_task *t = aio_task_spawn(abandonable, NULL);
    aio_sleep(AIO_MSEC(5));
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_double_lt(ms_since_ns(t0), 40); /* did not wait for the 80 ms call */
    ck_assert_int_eq(abandoned_count, 0);
    aio_sleep(AIO_MSEC(150));
    ck_assert_int_eq(abandoned_count, 1);
    ck_assert_int_eq(abandoned_results[0], 33);
    /* and by deadline too */
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(5), abandonable, NULL), -ETIMEDOUT);
    aio_sleep(AIO_MSEC(150));
    ck_assert_int_eq(abandoned_count, 2);
    return 0;
}

AIO_TEST(an_abandonable_call_that_finishes_in_time_returns_its_result)
{
    abandoned_count = 0;
    ck_assert_int_eq(aio_task_join(aio_task_spawn(abandonable, NULL)), 33);
    ck_assert_int_eq(abandoned_count, 0);
    return 0;
}

/* A server pins its event-loop threads (WORKER_CPU_AFFINITY); the helpers
 * that such a thread starts must still run on every CPU the process may
 * use, or all blocking work would queue on one CPU. */
static int helper_cpus(void *arg)
{
    return sched_getaffinity(0, sizeof(cpu_set_t), arg);
}

static int to_thread_from_a_pinned_loop(void *arg) { return aio_to_thread(helper_cpus, arg); }

static void *pinned_loop(void *arg)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (sched_getaffinity(0, sizeof(one), &one) == 0 && CPU_ISSET(c, &one)) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            break;
        }
    ck_assert_int_eq(pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
    ck_assert_int_eq(aio_run(to_thread_from_a_pinned_loop, arg, NULL), 0);
    return NULL;
}

START_TEST(helpers_started_by_a_pinned_loop_run_on_every_cpu_of_the_process)
{
    cpu_set_t process, helper;
    ck_assert_int_eq(sched_getaffinity(0, sizeof(process), &process), 0);
    CPU_ZERO(&helper);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, pinned_loop, &helper), 0);
    pthread_join(t, NULL);
    ck_assert_msg(CPU_EQUAL(&helper, &process), "a helper may run on %d CPU(s), the process on %d", CPU_COUNT(&helper),
                  CPU_COUNT(&process));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("aio_thread");
    TCase *tc = tcase_create("thread");
    tcase_add_test(tc, to_thread_returns_the_result_and_the_loop_keeps_running);
    tcase_add_test(tc, several_blocking_calls_run_in_parallel);
    tcase_add_test(tc, a_cancel_during_to_thread_shows_at_the_next_await);
    tcase_add_test(tc, an_abandonable_call_is_interrupted_at_once_and_cleaned_up_later);
    tcase_add_test(tc, an_abandonable_call_that_finishes_in_time_returns_its_result);
    tcase_add_test(tc, helpers_started_by_a_pinned_loop_run_on_every_cpu_of_the_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
