/* sleep, deadline scopes (timeout, timeout_at) and wait_for. */
#include <errno.h>

#include "support/aio_check.h"

AIO_TEST(sleep_lasts_at_least_its_duration)
{
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_sleep(AIO_MSEC(15)), 0);
    ck_assert_double_ge(ms_since_ns(t0), 15);
    t0 = aio_now();
    ck_assert_int_eq(aio_sleep_until(t0 + AIO_MSEC(5)), 0);
    ck_assert_double_ge(ms_since_ns(t0), 5);
    ck_assert_int_eq(aio_sleep_until(t0), 0); /* already past: returns at once */
    return 0;
}

static int sleep_long(void *arg)
{
    int *rc = arg;
    *rc = aio_sleep(AIO_SEC(10));
    return *rc;
}

AIO_TEST(sleep_is_cancellable)
{
    int rc = 1;
    aio_task *t = aio_task_spawn(sleep_long, &rc);
    aio_sleep(AIO_MSEC(2));
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(rc, -ECANCELED);
    return 0;
}

AIO_TEST(an_expired_scope_fails_every_await_until_it_closes)
{
    aio_timeout s;
    aio_timeout_open(&s, AIO_MSEC(10));
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_sleep(AIO_SEC(10)), -ETIMEDOUT);
    ck_assert_double_ge(ms_since_ns(t0), 9);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(aio_yield(), -ETIMEDOUT);
    ck_assert_int_eq(aio_checkpoint(), -ETIMEDOUT);
    ck_assert_int_eq(aio_remaining(), 0);
    ck_assert_int_eq(aio_timeout_close(&s), -ETIMEDOUT);
    /* outside the scope, awaits work again */
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), 0);
    ck_assert_int_eq(aio_deadline(), AIO_NEVER);
    return 0;
}

AIO_TEST(a_scope_that_does_not_expire_closes_with_zero)
{
    aio_timeout s;
    aio_timeout_open(&s, AIO_SEC(10));
    ck_assert_int_eq(aio_sleep(AIO_MSEC(2)), 0);
    ck_assert_int_gt(aio_remaining(), AIO_SEC(9));
    ck_assert_int_eq(aio_timeout_close(&s), 0);
    return 0;
}

AIO_TEST(nested_scopes_can_only_shorten_the_deadline)
{
    aio_timeout outer, inner;
    aio_timeout_open(&outer, AIO_MSEC(20));
    int64_t outer_deadline = aio_deadline();
    aio_timeout_open(&inner, AIO_SEC(60)); /* asks for more: gets the outer's */
    ck_assert_int_eq(aio_deadline(), outer_deadline);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_sleep(AIO_SEC(10)), -ETIMEDOUT);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    /* the outer deadline passed: both scopes report it */
    ck_assert_int_eq(aio_timeout_close(&inner), -ETIMEDOUT);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), -ETIMEDOUT);
    ck_assert_int_eq(aio_timeout_close(&outer), -ETIMEDOUT);
    return 0;
}

AIO_TEST(an_inner_scope_expiry_surfaces_only_to_the_inner_code)
{
    aio_timeout outer, inner;
    aio_timeout_open(&outer, AIO_SEC(10));
    aio_timeout_open(&inner, AIO_MSEC(5));
    ck_assert_int_lt(aio_deadline(), aio_now() + AIO_MSEC(6));
    ck_assert_int_eq(aio_sleep(AIO_SEC(1)), -ETIMEDOUT);
    ck_assert_int_eq(aio_timeout_close(&inner), -ETIMEDOUT);
    /* the outer scope is intact */
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), 0);
    ck_assert_int_gt(aio_remaining(), AIO_SEC(9));
    ck_assert_int_eq(aio_timeout_close(&outer), 0);
    return 0;
}

AIO_TEST(timeout_at_takes_an_absolute_deadline)
{
    aio_timeout s;
    int64_t at = aio_now() + AIO_MSEC(8);
    aio_timeout_open_at(&s, at);
    ck_assert_int_eq(aio_deadline(), at);
    ck_assert_int_eq(aio_sleep(AIO_SEC(5)), -ETIMEDOUT);
    ck_assert_int_ge(aio_now(), at);
    ck_assert_int_eq(aio_timeout_close(&s), -ETIMEDOUT);
    return 0;
}

struct sleeper_in_scope {
    int sleep_rc;
    int close_rc;
};

static int sleep_in_scope(void *arg)
{
    struct sleeper_in_scope *s = arg;
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_SEC(5));
    s->sleep_rc = aio_sleep(AIO_SEC(10));
    s->close_rc = aio_timeout_close(&scope);
    return s->sleep_rc;
}

AIO_TEST(cancellation_during_a_sleep_inside_a_deadline_wins)
{
    struct sleeper_in_scope s = {1, 1};
    aio_task *t = aio_task_spawn(sleep_in_scope, &s);
    aio_sleep(AIO_MSEC(3));
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_int_eq(s.sleep_rc, -ECANCELED);
    ck_assert_int_eq(s.close_rc, 0); /* the scope itself did not expire */
    return 0;
}

AIO_TEST(a_sleep_shorter_than_the_deadline_completes)
{
    aio_timeout s;
    aio_timeout_open(&s, AIO_MSEC(50));
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    ck_assert_int_eq(aio_timeout_close(&s), 0);
    return 0;
}

static int slow(void *arg)
{
    int rc = aio_sleep(AIO_MSEC(*(int *)arg));
    return rc < 0 ? rc : 7;
}

AIO_TEST(wait_for_returns_the_result_or_times_out)
{
    int fast_ms = 1, slow_ms = 5000;
    ck_assert_int_eq(aio_wait_for(AIO_SEC(5), slow, &fast_ms), 7);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_wait_for(AIO_MSEC(10), slow, &slow_ms), -ETIMEDOUT);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    /* and leaves no scope behind */
    ck_assert_int_eq(aio_deadline(), AIO_NEVER);
    return 0;
}

/* Timers armed in and out of the order of their times (the loop keeps a
 * few runs of ascending ones beside a heap), some re-armed or disarmed by
 * a cancel: each sleeper wakes in the order of its time, the cancelled
 * ones not at all. */
#define SLEEPERS 24
static int woke[SLEEPERS], nwoke;
static int64_t wake_base;

struct sleeper {
    int id;
    int64_t at;
};

static int sleep_then_note(void *arg)
{
    struct sleeper *s = arg;
    int rc = aio_sleep_until(s->at);
    if (rc == 0)
        woke[nwoke++] = s->id;
    return rc;
}

/* Cancels the four sleepers named, joins all n, and checks that the others
 * woke, each once, in the order of their slots, and the cancelled ones not. */
static void cancel_four_and_check_the_rest(aio_task **t, int n, const int *slot, const int cancelled[4])
{
    for (int k = 0; k < 4; k++)
        aio_task_cancel(t[cancelled[k]]);
    for (int i = 0; i < n; i++)
        aio_task_join(t[i]);
    ck_assert_int_eq(nwoke, n - 4);
    for (int k = 1; k < nwoke; k++)
        ck_assert_int_lt(slot[woke[k - 1]], slot[woke[k]]);
    for (int k = 0; k < nwoke; k++)
        ck_assert(woke[k] != cancelled[0] && woke[k] != cancelled[1] && woke[k] != cancelled[2] &&
                  woke[k] != cancelled[3]);
}

AIO_TEST(timers_fire_in_the_order_of_their_times_however_armed)
{
    /* slots in units of 4 ms: an ascending run, then earlier ones, then a
     * run again, with repeats of neither */
    static const int slot[SLEEPERS] = {10, 11, 13, 16, 20, 2, 5, 1, 21, 22, 3, 23,
                                       24, 4, 25, 6, 26, 7, 8, 27, 9, 12, 28, 14};
    struct sleeper sl[SLEEPERS];
    aio_task *t[SLEEPERS];
    nwoke = 0;
    wake_base = aio_now() + AIO_MSEC(20);
    for (int i = 0; i < SLEEPERS; i++) {
        sl[i] = (struct sleeper){.id = i, .at = wake_base + AIO_MSEC(4) * slot[i]};
        t[i] = aio_task_spawn(sleep_then_note, &sl[i]);
        ck_assert_ptr_nonnull(t[i]);
    }
    aio_sleep(AIO_MSEC(1)); /* every sleeper armed, in spawn order */
    static const int cancelled[4] = {0, 7, 12, 20};
    cancel_four_and_check_the_rest(t, SLEEPERS, slot, cancelled);
    return 0;
}

/* Sleepers armed each before all the others (more of them than the loop
 * has runs: the last ones go into the heap), among ascending ones, some
 * cancelled from the runs and some from the heap: they wake in the order of
 * their times, and no timer is left armed. */
AIO_TEST(timers_armed_in_descending_order_fill_the_runs_then_the_heap)
{
    enum { DESC = 14, ASC = 6, N = DESC + ASC };
    struct sleeper sl[N];
    aio_task *t[N];
    int slots[N];
    nwoke = 0;
    wake_base = aio_now() + AIO_MSEC(20);
    for (int i = 0; i < N; i++) { /* 14, 13, ..., 1, then 15 .. 20 */
        slots[i] = i < DESC ? DESC - i : i + 1;
        sl[i] = (struct sleeper){.id = i, .at = wake_base + AIO_MSEC(4) * slots[i]};
        t[i] = aio_task_spawn(sleep_then_note, &sl[i]);
        ck_assert_ptr_nonnull(t[i]);
    }
    aio_yield(); /* every sleeper armed, in spawn order; this task is not */
    size_t in_runs, in_heap;
    aio_loop_timer_counts(aio_loop_current(), &in_runs, &in_heap);
    ck_assert_uint_eq(in_runs + in_heap, N);
    ck_assert_uint_gt(in_heap, 0);
    ck_assert_uint_gt(in_runs, ASC); /* the ascending ones extend a run */
    /* 0 heads the run the ascending ones extend, 1 is a run of its own,
     * 13 is in the heap (the last descending one armed), 16 in the middle
     * of a run */
    static const int cancelled[4] = {0, 1, 13, 16};
    cancel_four_and_check_the_rest(t, N, slots, cancelled);
    aio_loop_timer_counts(aio_loop_current(), &in_runs, &in_heap);
    ck_assert_uint_eq(in_runs + in_heap, 0);
    return 0;
}

static int sleep_long_under_a_deadline(void *arg)
{
    (void)arg;
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_SEC(5));
    int rc = aio_sleep(AIO_SEC(30));
    aio_timeout_close(&scope);
    return rc;
}

/* A server's request deadlines are all of one length, armed one after
 * another, while sleepers of other lengths wait (a sampler's second, a
 * maintainer's minute): the deadlines must not go into the heap because a
 * far sleeper was armed before them. */
AIO_TEST(deadlines_of_one_length_stay_in_a_run_beside_far_sleepers)
{
    enum { DEADLINES = 64 };
    int far_rc = 1, near_rc = 1;
    aio_task *far = aio_task_spawn(sleep_long, &far_rc); /* 10 s */
    aio_task *near = aio_task_spawn(sleep_long_under_a_deadline, &near_rc);
    ck_assert_ptr_nonnull(far);
    ck_assert_ptr_nonnull(near);
    aio_yield();
    aio_task *t[DEADLINES];
    for (int i = 0; i < DEADLINES; i++) {
        t[i] = aio_task_spawn(sleep_long_under_a_deadline, NULL);
        ck_assert_ptr_nonnull(t[i]);
        aio_yield(); /* armed one after another, each a little later */
    }
    size_t in_runs, in_heap;
    aio_loop_timer_counts(aio_loop_current(), &in_runs, &in_heap);
    ck_assert_uint_eq(in_runs + in_heap, DEADLINES + 2);
    ck_assert_uint_eq(in_heap, 0);
    aio_task_cancel(far);
    aio_task_cancel(near);
    for (int i = 0; i < DEADLINES; i++)
        aio_task_cancel(t[i]);
    for (int i = 0; i < DEADLINES; i++)
        ck_assert_int_eq(aio_task_join(t[i]), -ECANCELED);
    aio_task_join(far);
    aio_task_join(near);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_timeout");
    TCase *tc = tcase_create("timeout");
    tcase_add_test(tc, sleep_lasts_at_least_its_duration);
    tcase_add_test(tc, sleep_is_cancellable);
    tcase_add_test(tc, an_expired_scope_fails_every_await_until_it_closes);
    tcase_add_test(tc, a_scope_that_does_not_expire_closes_with_zero);
    tcase_add_test(tc, nested_scopes_can_only_shorten_the_deadline);
    tcase_add_test(tc, an_inner_scope_expiry_surfaces_only_to_the_inner_code);
    tcase_add_test(tc, timeout_at_takes_an_absolute_deadline);
    tcase_add_test(tc, cancellation_during_a_sleep_inside_a_deadline_wins);
    tcase_add_test(tc, a_sleep_shorter_than_the_deadline_completes);
    tcase_add_test(tc, wait_for_returns_the_result_or_times_out);
    tcase_add_test(tc, timers_fire_in_the_order_of_their_times_however_armed);
    tcase_add_test(tc, timers_armed_in_descending_order_fill_the_runs_then_the_heap);
    tcase_add_test(tc, deadlines_of_one_length_stay_in_a_run_beside_far_sleepers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
