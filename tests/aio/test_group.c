/* TaskGroup and gather: structured concurrency. */
#include <errno.h>

#include "support/aio_check.h"

struct child {
    int64_t sleep_ms;
    int fail_with;   /* returned after the sleep when non-zero */
    int started;
    int finished;    /* the sleep completed */
    int cleaned_up;  /* ran its cleanup, whatever happened */
    int rc;
};

static int child_run(void *arg)
{
    struct child *c = arg;
    c->started = 1;
    int rc = aio_sleep(AIO_MSEC(c->sleep_ms));
    if (rc == 0) {
        c->finished = 1;
        rc = c->fail_with;
    }
    c->cleaned_up = 1;
    c->rc = rc;
    return rc;
}

AIO_TEST(group_join_waits_for_every_child)
{
    struct child c[3] = {{.sleep_ms = 5}, {.sleep_ms = 15}, {.sleep_ms = 1}};
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(aio_group_spawn(&g, child_run, &c[i]));
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_group_join(&g), 0);
    ck_assert_double_ge(ms_since_ns(t0), 14);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(c[i].finished, 1);
    ck_assert_int_eq(aio_group_failed(&g), 0);
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 1);
    return 0;
}

AIO_TEST(first_failure_cancels_the_siblings_and_their_cleanup_runs)
{
    struct child c[4] = {{.sleep_ms = 10000}, {.sleep_ms = 5, .fail_with = -EIO}, {.sleep_ms = 10000},
                         {.sleep_ms = 20, .fail_with = -EPIPE}};
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 4; i++)
        aio_group_spawn(&g, child_run, &c[i]);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_group_join(&g), -EIO);
    ck_assert_double_lt(ms_since_ns(t0), 1000); /* not the slow siblings' 10 s */
    ck_assert_int_eq(aio_group_failed(&g), 1);
    ck_assert_int_eq(c[0].rc, -ECANCELED);
    ck_assert_int_eq(c[2].rc, -ECANCELED);
    ck_assert_int_eq(c[3].rc, -ECANCELED);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(c[i].cleaned_up, 1);
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 1);
    return 0;
}

static int fail_at_once(void *arg)
{
    (void)arg;
    return -EINVAL;
}

AIO_TEST(every_failure_is_counted_and_the_first_is_reported)
{
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 3; i++)
        aio_group_spawn(&g, fail_at_once, NULL);
    ck_assert_int_eq(aio_group_join(&g), -EINVAL);
    ck_assert_int_eq(aio_group_failed(&g), 3);
    return 0;
}

struct parent_arg {
    struct child kids[3];
    int join_rc;
};

static int parent_with_group(void *arg)
{
    struct parent_arg *p = arg;
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 3; i++)
        aio_group_spawn(&g, child_run, &p->kids[i]);
    p->join_rc = aio_group_join(&g);
    return p->join_rc;
}

AIO_TEST(a_parent_cancelled_while_its_group_runs_cancels_the_children)
{
    struct parent_arg p = {.kids = {{.sleep_ms = 10000}, {.sleep_ms = 10000}, {.sleep_ms = 10000}}};
    aio_task *parent = aio_task_spawn(parent_with_group, &p);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    ck_assert_int_eq(p.kids[0].started, 1);
    aio_task_cancel(parent);
    ck_assert_int_eq(aio_task_join(parent), -ECANCELED);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(p.kids[i].rc, -ECANCELED);
        ck_assert_int_eq(p.kids[i].cleaned_up, 1);
    }
    /* no child outlived its group */
    ck_assert_int_eq(aio_loop_task_count(aio_loop_current()), 1);
    return 0;
}

struct busy_parent {
    struct child kids[2];
    int own_rc;
};

/* The parent is busy with its own await, not in join, when cancelled. */
static int parent_busy_elsewhere(void *arg)
{
    struct busy_parent *p = arg;
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 2; i++)
        aio_group_spawn(&g, child_run, &p->kids[i]);
    p->own_rc = aio_sleep(AIO_SEC(10));
    return aio_group_join(&g);
}

AIO_TEST(cancelling_the_parent_reaches_children_at_once)
{
    struct busy_parent p = {.kids = {{.sleep_ms = 10000}, {.sleep_ms = 10000}}};
    aio_task *parent = aio_task_spawn(parent_busy_elsewhere, &p);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    aio_task_cancel(parent);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), 0);
    /* children already ended, before the parent even reached join */
    ck_assert_int_eq(p.kids[0].rc, -ECANCELED);
    ck_assert_int_eq(p.kids[1].rc, -ECANCELED);
    ck_assert_int_eq(aio_task_join(parent), -ECANCELED);
    ck_assert_int_eq(p.own_rc, -ECANCELED);
    return 0;
}

static int grandchild_tree(void *arg)
{
    struct parent_arg *p = arg;
    return parent_with_group(p);
}

AIO_TEST(cancellation_reaches_grandchildren)
{
    struct parent_arg inner = {.kids = {{.sleep_ms = 10000}, {.sleep_ms = 10000}, {.sleep_ms = 10000}}};
    aio_task *top = aio_task_spawn(grandchild_tree, &inner);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    aio_task_cancel(top);
    ck_assert_int_eq(aio_task_join(top), -ECANCELED);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(inner.kids[i].rc, -ECANCELED);
    return 0;
}

AIO_TEST(a_deadline_on_the_owner_cancels_the_group)
{
    struct child c[2] = {{.sleep_ms = 10000}, {.sleep_ms = 10000}};
    aio_timeout to;
    aio_timeout_open(&to, AIO_MSEC(20));
    aio_group g;
    aio_group_init(&g);
    for (int i = 0; i < 2; i++)
        aio_group_spawn(&g, child_run, &c[i]);
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_group_join(&g), -ETIMEDOUT);
    ck_assert_int_eq(aio_timeout_close(&to), -ETIMEDOUT);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(c[0].rc, -ECANCELED);
    ck_assert_int_eq(c[1].rc, -ECANCELED);
    return 0;
}

AIO_TEST(spawning_into_a_cancelled_group_gives_a_cancelled_child)
{
    struct child c = {.sleep_ms = 10000};
    aio_group g;
    aio_group_init(&g);
    aio_group_cancel(&g);
    aio_group_spawn(&g, child_run, &c);
    ck_assert_int_eq(aio_group_join(&g), 0);
    ck_assert_int_eq(c.started, 1);
    ck_assert_int_eq(c.rc, -ECANCELED);
    return 0;
}

static int triple(void *arg)
{
    int *v = arg;
    int rc = aio_sleep(AIO_MSEC(*v));
    return rc < 0 ? rc : *v * 3;
}

AIO_TEST(gather_returns_every_result)
{
    int v[3] = {3, 1, 2};
    aio_call calls[3];
    for (int i = 0; i < 3; i++)
        calls[i] = (aio_call){.fn = triple, .arg = &v[i]};
    ck_assert_int_eq(aio_gather(calls, 3, 0), 0);
    ck_assert_int_eq(calls[0].result, 9);
    ck_assert_int_eq(calls[1].result, 3);
    ck_assert_int_eq(calls[2].result, 6);
    return 0;
}

AIO_TEST(gather_without_return_exceptions_cancels_the_rest_on_failure)
{
    struct child c[3] = {{.sleep_ms = 10000}, {.sleep_ms = 2, .fail_with = -ENOENT}, {.sleep_ms = 10000}};
    aio_call calls[3];
    for (int i = 0; i < 3; i++)
        calls[i] = (aio_call){.fn = child_run, .arg = &c[i]};
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_gather(calls, 3, 0), -ENOENT);
    ck_assert_double_lt(ms_since_ns(t0), 1000);
    ck_assert_int_eq(calls[0].result, -ECANCELED);
    ck_assert_int_eq(calls[1].result, -ENOENT);
    ck_assert_int_eq(calls[2].result, -ECANCELED);
    ck_assert_int_eq(c[0].cleaned_up + c[2].cleaned_up, 2);
    return 0;
}

AIO_TEST(gather_with_return_exceptions_reports_each_outcome_and_cancels_nothing)
{
    struct child c[3] = {{.sleep_ms = 20}, {.sleep_ms = 2, .fail_with = -ENOENT}, {.sleep_ms = 10, .fail_with = 5}};
    aio_call calls[3];
    for (int i = 0; i < 3; i++)
        calls[i] = (aio_call){.fn = child_run, .arg = &c[i]};
    ck_assert_int_eq(aio_gather(calls, 3, AIO_RETURN_EXCEPTIONS), 0);
    ck_assert_int_eq(calls[0].result, 0);
    ck_assert_int_eq(calls[1].result, -ENOENT);
    ck_assert_int_eq(calls[2].result, 5);
    ck_assert_int_eq(c[0].finished, 1);
    return 0;
}

static int gather_parent(void *arg)
{
    aio_call *calls = arg;
    return aio_gather(calls, 2, AIO_RETURN_EXCEPTIONS);
}

AIO_TEST(a_cancelled_gather_cancels_its_calls)
{
    struct child c[2] = {{.sleep_ms = 10000}, {.sleep_ms = 10000}};
    aio_call calls[2] = {{.fn = child_run, .arg = &c[0]}, {.fn = child_run, .arg = &c[1]}};
    aio_task *t = aio_task_spawn(gather_parent, calls);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(5)), 0);
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    ck_assert_int_eq(calls[0].result, -ECANCELED);
    ck_assert_int_eq(calls[1].result, -ECANCELED);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_group");
    TCase *tc = tcase_create("group");
    tcase_add_test(tc, group_join_waits_for_every_child);
    tcase_add_test(tc, first_failure_cancels_the_siblings_and_their_cleanup_runs);
    tcase_add_test(tc, every_failure_is_counted_and_the_first_is_reported);
    tcase_add_test(tc, a_parent_cancelled_while_its_group_runs_cancels_the_children);
    tcase_add_test(tc, cancelling_the_parent_reaches_children_at_once);
    tcase_add_test(tc, cancellation_reaches_grandchildren);
    tcase_add_test(tc, a_deadline_on_the_owner_cancels_the_group);
    tcase_add_test(tc, spawning_into_a_cancelled_group_gives_a_cancelled_child);
    tcase_add_test(tc, gather_returns_every_result);
    tcase_add_test(tc, gather_without_return_exceptions_cancels_the_rest_on_failure);
    tcase_add_test(tc, gather_with_return_exceptions_reports_each_outcome_and_cancels_nothing);
    tcase_add_test(tc, a_cancelled_gather_cancels_its_calls);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
