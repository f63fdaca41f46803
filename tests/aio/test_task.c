/* Tasks and the loop: spawn, join, detach, cancel, stacks, asyncio.run,
 * task-local values. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/aio_check.h"

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
    ck_assert_double_lt(ms_since_ns(t0), 1000);
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

/* The default usable stack of a task (aio/loop.h). */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#define DEFAULT_STACK ((size_t)512 * 1024)
#else
#define DEFAULT_STACK ((size_t)128 * 1024)
#endif

struct stack_use {
    size_t bytes;       /* to use */
    uintptr_t top;      /* where the task's frames started */
    uintptr_t deepest;  /* the lowest byte written */
};

/* Uses at least `left` more bytes of stack. Every byte of every frame is
 * written, from the top down, and a frame is smaller than a page: running
 * out of stack faults on the guard page rather than writing past it. */
static __attribute__((noinline)) int use_stack(struct stack_use *u, size_t left)
{
    volatile char pad[1024];
    for (size_t i = sizeof(pad); i-- > 0;)
        pad[i] = (char)i;
    if ((uintptr_t)&pad[0] < u->deepest)
        u->deepest = (uintptr_t)&pad[0];
    if (left <= sizeof(pad))
        return pad[0];
    return use_stack(u, left - sizeof(pad)) + pad[sizeof(pad) - 1]; /* not a tail call: every frame stays */
}

static int use_stack_task(void *arg)
{
    struct stack_use *u = arg;
    volatile char top;
    u->top = u->deepest = (uintptr_t)&top;
    use_stack(u, u->bytes);
    return 0;
}

static int use_stack_main(void *arg) { return aio_task_join(aio_task_spawn(use_stack_task, arg)); }

AIO_TEST(half_the_default_stack_is_usable_with_the_default_options)
{
    struct stack_use u = {.bytes = DEFAULT_STACK / 2};
    ck_assert_int_eq(use_stack_main(&u), 0);
    ck_assert_uint_ge(u.top - u.deepest, DEFAULT_STACK / 2);
    return 0;
}

START_TEST(the_stack_size_is_configurable)
{
    /* twice what the default stack holds, on a stack configured four times
     * as large */
    struct stack_use u = {.bytes = 2 * DEFAULT_STACK};
    aio_loop_options o = {.stack_size = 4 * DEFAULT_STACK};
    ck_assert_int_eq(aio_run(use_stack_main, &u, &o), 0);
    ck_assert_msg(u.top - u.deepest >= 2 * DEFAULT_STACK, "used %zu bytes of stack, meant %zu",
                  (size_t)(u.top - u.deepest), 2 * DEFAULT_STACK);

    /* the same on the default stack runs into its guard page: so the
     * setting is what made the difference */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct stack_use v = {.bytes = 2 * DEFAULT_STACK};
        aio_run(use_stack_main, &v, NULL);
        _exit(0); /* not reached */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
#ifdef TEST_ASAN
    /* SIGSEGV, or ASan's own stack-overflow report and exit */
    ck_assert_msg(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0),
                  "the default stack held %zu bytes", 2 * DEFAULT_STACK);
#else
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
                  "the default stack held %zu bytes: status %#x", 2 * DEFAULT_STACK, status);
#endif
}
END_TEST

/* ---- task locals ---- */

/* Two slots for the whole process (there are AIO_TASK_LOCALS of them),
 * taken at first use. */
static int key_a = -1, key_b = -1;

static void take_keys(void)
{
    if (key_a < 0) {
        key_a = aio_task_local_key();
        key_b = aio_task_local_key();
    }
}

static int tag_a, tag_b, tag_c; /* values: their addresses */

struct seen {
    void *a, *b;
    void *a_after_set; /* after setting a of its own */
};

static int look(void *arg)
{
    struct seen *s = arg;
    s->a = aio_task_local(key_a);
    s->b = aio_task_local(key_b);
    return 0;
}

/* Sets a of its own, then looks again; spawns a grandchild that looks. */
static int look_then_set(void *arg)
{
    struct seen *s = arg;
    s->a = aio_task_local(key_a);
    s->b = aio_task_local(key_b);
    aio_task_set_local(key_a, &tag_c);
    s->a_after_set = aio_task_local(key_a);
    return aio_yield(); /* the parent runs meanwhile */
}

AIO_TEST(a_spawned_task_starts_with_its_parents_values)
{
    take_keys();
    ck_assert_ptr_null(aio_task_local(key_a)); /* unset */
    aio_task_set_local(key_a, &tag_a);
    aio_task_set_local(key_b, &tag_b);
    ck_assert_ptr_eq(aio_task_local(key_a), &tag_a);
    struct seen s = {0};
    ck_assert_int_eq(aio_task_join(aio_task_spawn(look, &s)), 0);
    ck_assert_ptr_eq(s.a, &tag_a);
    ck_assert_ptr_eq(s.b, &tag_b);

    /* the values at spawn time: a later change of the parent's does not
     * reach a child already spawned */
    struct seen early = {0};
    aio_task *t = aio_task_spawn(look, &early);
    aio_task_set_local(key_b, NULL);
    ck_assert_int_eq(aio_task_join(t), 0);
    ck_assert_ptr_eq(early.b, &tag_b);
    ck_assert_ptr_null(aio_task_local(key_b));
    return 0;
}

static int spawn_grandchild(void *arg)
{
    struct seen *s = arg;
    return aio_task_join(aio_task_spawn(look, s));
}

AIO_TEST(group_and_gather_children_and_grandchildren_inherit_too)
{
    take_keys();
    aio_task_set_local(key_a, &tag_a);
    struct seen s[3] = {{0}};
    aio_group g;
    aio_group_init(&g);
    ck_assert_ptr_nonnull(aio_group_spawn(&g, look, &s[0]));
    ck_assert_ptr_nonnull(aio_group_spawn(&g, spawn_grandchild, &s[1]));
    ck_assert_int_eq(aio_group_join(&g), 0);
    ck_assert_ptr_eq(s[0].a, &tag_a);
    ck_assert_ptr_eq(s[1].a, &tag_a);
    ck_assert_ptr_null(s[0].b);

    aio_call calls[] = {{.fn = look, .arg = &s[2]}};
    ck_assert_int_eq(aio_gather(calls, 1, 0), 0);
    ck_assert_ptr_eq(s[2].a, &tag_a);
    return 0;
}

AIO_TEST(a_childs_set_does_not_change_its_parents_or_its_siblings_values)
{
    take_keys();
    aio_task_set_local(key_a, &tag_a);
    struct seen setter = {0}, sibling = {0};
    aio_group g;
    aio_group_init(&g);
    aio_group_spawn(&g, look_then_set, &setter);
    aio_group_spawn(&g, look, &sibling); /* runs after the setter's set */
    ck_assert_int_eq(aio_group_join(&g), 0);
    ck_assert_ptr_eq(setter.a, &tag_a);
    ck_assert_ptr_eq(setter.a_after_set, &tag_c);
    ck_assert_ptr_eq(sibling.a, &tag_a);
    ck_assert_ptr_eq(aio_task_local(key_a), &tag_a);
    return 0;
}

struct detached_look {
    struct seen seen;
    bool done;
};

static int look_later(void *arg)
{
    struct detached_look *d = arg;
    look(&d->seen);
    d->done = true;
    return 0;
}

AIO_TEST(detaching_a_task_clears_its_values)
{
    take_keys();
    aio_task_set_local(key_a, &tag_a);
    aio_task_set_local(key_b, &tag_b);
    struct detached_look d = {.seen = {.a = &tag_c, .b = &tag_c}};
    aio_task_detach(aio_task_spawn(look_later, &d));
    while (!d.done)
        ck_assert_int_eq(aio_sleep(AIO_MSEC(1)), 0);
    ck_assert_ptr_null(d.seen.a);
    ck_assert_ptr_null(d.seen.b);
    ck_assert_ptr_eq(aio_task_local(key_a), &tag_a); /* the parent keeps its own */
    return 0;
}

START_TEST(outside_a_task_a_local_is_null_and_setting_it_is_ignored)
{
    take_keys();
    ck_assert_ptr_null(aio_task_current());
    aio_task_set_local(key_a, &tag_a);
    ck_assert_ptr_null(aio_task_local(key_a));
    ck_assert_ptr_null(aio_task_local(key_b));
}
END_TEST

struct from_callback {
    aio_deferred d;
    void *seen;        /* what the callback read */
    void *after_set;   /* what it read after setting */
    struct seen child; /* what a task it spawned saw */
    aio_task *spawned;
};

static void in_callback(aio_deferred *d)
{
    struct from_callback *f = (struct from_callback *)d;
    ck_assert_ptr_null(aio_task_current());
    f->seen = aio_task_local(key_a);
    aio_task_set_local(key_a, &tag_c);
    f->after_set = aio_task_local(key_a);
    f->spawned = aio_task_spawn(look, &f->child);
}

AIO_TEST(in_a_loop_callback_there_are_no_values_and_its_tasks_start_with_none)
{
    take_keys();
    aio_task_set_local(key_a, &tag_a);
    struct from_callback f = {.seen = &tag_b, .after_set = &tag_b, .child = {.a = &tag_b, .b = &tag_b}};
    aio_deferred_init(&f.d, in_callback);
    aio_defer(&f.d);
    while (f.spawned == NULL)
        ck_assert_int_eq(aio_yield(), 0);
    ck_assert_int_eq(aio_task_join(f.spawned), 0);
    ck_assert_ptr_null(f.seen);
    ck_assert_ptr_null(f.after_set); /* ignored */
    ck_assert_ptr_null(f.child.a);
    ck_assert_ptr_null(f.child.b);
    ck_assert_ptr_eq(aio_task_local(key_a), &tag_a); /* nor did it reach the running task */
    return 0;
}

AIO_TEST(keys_are_distinct_slots)
{
    take_keys();
    ck_assert_int_ne(key_a, key_b);
    ck_assert_int_ge(key_a, 0);
    ck_assert_int_lt(key_a, AIO_TASK_LOCALS);
    ck_assert_int_ge(key_b, 0);
    ck_assert_int_lt(key_b, AIO_TASK_LOCALS);
    aio_task_set_local(key_a, &tag_a);
    ck_assert_ptr_null(aio_task_local(key_b));
    aio_task_set_local(key_b, &tag_b);
    ck_assert_ptr_eq(aio_task_local(key_a), &tag_a);
    ck_assert_ptr_eq(aio_task_local(key_b), &tag_b);
    aio_task_set_local(key_a, NULL);
    ck_assert_ptr_null(aio_task_local(key_a));
    ck_assert_ptr_eq(aio_task_local(key_b), &tag_b);
    return 0;
}

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
    tcase_add_test(tc, half_the_default_stack_is_usable_with_the_default_options);
    tcase_add_test(tc, the_stack_size_is_configurable);
    suite_add_tcase(s, tc);

    tc = tcase_create("locals");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_spawned_task_starts_with_its_parents_values);
    tcase_add_test(tc, group_and_gather_children_and_grandchildren_inherit_too);
    tcase_add_test(tc, a_childs_set_does_not_change_its_parents_or_its_siblings_values);
    tcase_add_test(tc, detaching_a_task_clears_its_values);
    tcase_add_test(tc, outside_a_task_a_local_is_null_and_setting_it_is_ignored);
    tcase_add_test(tc, in_a_loop_callback_there_are_no_values_and_its_tasks_start_with_none);
    tcase_add_test(tc, keys_are_distinct_slots);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
