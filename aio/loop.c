#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>

#include "task_int.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define AIO_VALGRIND 1
#endif
#endif

_Thread_local aio_loop *aio__loop;

#ifdef AIO_ASAN
#define DEFAULT_STACK_SIZE (512 * 1024)
#else
#define DEFAULT_STACK_SIZE (128 * 1024)
#endif
#define DEFAULT_POOL_MAX 256

void aio__port_dispose(aio_loop *loop); /* thread.c */

int64_t aio_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t aio_turn_now(void)
{
    aio_loop *loop = aio__loop;
    if (loop == NULL)
        return aio_now();
    if (loop->turn_now == 0)
        loop->turn_now = aio_now();
    return loop->turn_now;
}

/* ---- timers: a few time-ordered runs and a binary min-heap (see
 * aio__timer_arm) ----
 * Each heap slot holds its timer's time beside the pointer, so that sifting
 * compares within the array and touches a timer (it lives in its task's
 * mapping, a page of its own) only to move it. */

static void heap_set(aio_loop *loop, size_t i, aio__heap_slot slot)
{
    loop->heap[i] = slot;
    slot.timer->heap_index = i;
}

static void heap_up(aio_loop *loop, size_t i)
{
    aio__heap_slot s = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent].at <= s.at)
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, s);
}

static void heap_down(aio_loop *loop, size_t i)
{
    aio__heap_slot s = loop->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= loop->heap_len)
            break;
        if (child + 1 < loop->heap_len && loop->heap[child + 1].at < loop->heap[child].at)
            child++;
        if (s.at <= loop->heap[child].at)
            break;
        heap_set(loop, i, loop->heap[child]);
        i = child;
    }
    heap_set(loop, i, s);
}

/* Most timers are deadlines of one length armed one after another, each
 * due at or after the last: those go on a run, a list in time order, where
 * arming and disarming touch only the neighbours. Sleepers of other
 * lengths (a sampler's second, a maintainer's minute) would break such a
 * run if they joined it -- every request deadline after a far one would be
 * due before the run's last -- so the loop keeps a few runs: a timer joins
 * the run it extends by less than RUN_GAP (the run joined last is tried
 * first), else starts an empty one; with none of either, it goes into the
 * heap. */
#define RUN_GAP 1000000000LL /* 1 s, in ns */

static bool extends(aio_loop *loop, int i, int64_t at)
{
    int64_t last = loop->run_last[i];
    return !aio_list_is_empty(&loop->runs[i]) && last <= at && at - last < RUN_GAP;
}

/* The run for a timer due at at (the one joined last, most often), or -1. */
static int run_for(aio_loop *loop, int64_t at)
{
    if (extends(loop, loop->last_run, at))
        return loop->last_run;
    int empty = -1;
    for (int i = 0; i < AIO__TIMER_RUNS; i++) {
        if (extends(loop, i, at))
            return i;
        if (empty < 0 && aio_list_is_empty(&loop->runs[i]))
            empty = i;
    }
    return empty;
}

void aio__timer_arm(aio_loop *loop, aio__timer *t, int64_t at)
{
    aio__timer_disarm(loop, t);
    t->at = at;
    int run = run_for(loop, at);
    if (run >= 0) {
        t->heap_index = AIO__TIMER_IN_RUN;
        aio_list_push_back(&loop->runs[run], &t->run_link);
        loop->run_last[run] = at;
        loop->last_run = run;
        return;
    }
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        aio__heap_slot *heap = realloc(loop->heap, cap * sizeof(*heap));
        if (heap == NULL)
            abort(); /* a few bytes per waiting task: no way to carry on without them */
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    heap_set(loop, loop->heap_len++, (aio__heap_slot){.at = at, .timer = t});
    heap_up(loop, t->heap_index);
}

void aio__timer_disarm(aio_loop *loop, aio__timer *t)
{
    size_t i = t->heap_index;
    if (i == SIZE_MAX)
        return;
    t->heap_index = SIZE_MAX;
    if (i == AIO__TIMER_IN_RUN) {
        /* the last of its run: the one before it is now */
        aio_link *next = t->run_link.next, *prev = t->run_link.prev;
        uintptr_t k = ((uintptr_t)next - (uintptr_t)loop->runs) / sizeof(loop->runs[0]);
        if (k < AIO__TIMER_RUNS && next == &loop->runs[k] && prev != next)
            loop->run_last[k] = aio_container_of(prev, aio__timer, run_link)->at;
        aio_link_unlink(&t->run_link);
        return;
    }
    aio__heap_slot last = loop->heap[--loop->heap_len];
    if (last.timer == t)
        return;
    heap_set(loop, i, last);
    heap_up(loop, i);
    heap_down(loop, last.timer->heap_index);
}

/* The armed timer due first, or NULL. */
static aio__timer *first_timer(aio_loop *loop)
{
    aio__timer *r = loop->heap_len > 0 ? loop->heap[0].timer : NULL;
    for (int i = 0; i < AIO__TIMER_RUNS; i++) {
        aio_list *run = &loop->runs[i];
        if (aio_list_is_empty(run))
            continue;
        aio__timer *head = aio_container_of(run->next, aio__timer, run_link);
        if (r == NULL || head->at < r->at)
            r = head;
    }
    return r;
}

static void fire_timers(aio_loop *loop)
{
    aio__timer *t = first_timer(loop);
    if (t == NULL)
        return;
    int64_t now = loop->turn_now = aio_now();
    for (; t != NULL && t->at <= now; t = first_timer(loop)) {
        aio__timer_disarm(loop, t);
        t->fire(t);
    }
}

/* ---- stacks: guard page | stack | struct aio_task, in one mapping ---- */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

aio_task *aio__task_alloc(aio_loop *loop)
{
    if (loop->pool_len > 0)
        return loop->pool[--loop->pool_len];
    size_t size = loop->page_size + round_up(loop->stack_size + sizeof(aio_task) + 64, loop->page_size);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (mprotect(map, loop->page_size, PROT_NONE) != 0) {
        munmap(map, size);
        return NULL;
    }
    uintptr_t top = (uintptr_t)map + size;
    aio_task *t = (aio_task *)((top - sizeof(aio_task)) & ~(uintptr_t)63);
    memset(t, 0, sizeof(*t));
    t->map = map;
    t->map_size = size;
#ifdef AIO_VALGRIND
    VALGRIND_STACK_REGISTER((char *)map + loop->page_size, (char *)t);
#endif
    return t;
}

static void unmap_task(aio_task *t)
{
    munmap(t->map, t->map_size);
}

void aio__task_release(aio_task *t)
{
    aio_loop *loop = t->loop;
    assert(t->state == AIO__DONE);
    if (loop->pool_len < loop->pool_max) {
        loop->pool[loop->pool_len++] = t;
    } else {
        unmap_task(t);
    }
}

/* Usable stack of a task: from above the guard page to below the struct. */
void aio__task_stack(aio_loop *loop, aio_task *t, void **lo, size_t *size)
{
    *lo = (char *)t->map + loop->page_size;
    *size = (size_t)(((uintptr_t)t & ~(uintptr_t)15) - (uintptr_t)*lo);
}

/* ---- the loop ---- */

aio_loop *aio_loop_create(const aio_loop_options *opts)
{
    assert(aio__loop == NULL && "one loop per thread");
    aio_loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    if ((loop->ev = h2o_evloop_create()) == NULL) {
        free(loop);
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    loop->page_size = page > 0 ? (size_t)page : 4096;
    size_t stack = opts && opts->stack_size ? opts->stack_size : DEFAULT_STACK_SIZE;
    loop->stack_size = round_up(stack < 16384 ? 16384 : stack, loop->page_size);
    loop->pool_max = opts && opts->stack_pool_max ? opts->stack_pool_max : DEFAULT_POOL_MAX;
    if ((loop->pool = malloc(loop->pool_max * sizeof(*loop->pool))) == NULL) {
        h2o_evloop_destroy(loop->ev);
        free(loop);
        return NULL;
    }
    aio_list_init(&loop->ready);
    for (int i = 0; i < AIO__TIMER_RUNS; i++)
        aio_list_init(&loop->runs[i]);
    aio_list_init(&loop->all);
    aio_list_init(&loop->deferred);
    aio__loop = loop;
    return loop;
}

aio_loop *aio_loop_current(void) { return aio__loop; }

struct st_h2o_evloop_t *aio_loop_evloop(aio_loop *loop) { return loop->ev; }

size_t aio_loop_task_count(const aio_loop *loop) { return loop->live; }

void aio_loop_timer_counts(const aio_loop *loop, size_t *in_runs, size_t *in_heap)
{
    size_t n = 0;
    for (int i = 0; i < AIO__TIMER_RUNS; i++)
        for (const aio_link *l = loop->runs[i].next; l != &loop->runs[i]; l = l->next)
            n++;
    *in_runs = n;
    *in_heap = loop->heap_len;
}

static void resume(aio_loop *loop, aio_task *t)
{
    loop->current = t;
    t->state = AIO__RUNNING;
    aio__ctx_switch(&loop->main, &t->ctx, false);
    loop->current = NULL;
    if (t->state == AIO__DONE && t->detached)
        aio__task_release(t);
}

/* Runs the ready tasks in rounds: each round runs those ready when it
 * starts. Tasks woken by other tasks (a child ending, a lock handed over)
 * run in the next round of the same turn, which saves an epoll_wait per
 * hand-off; the cap on rounds keeps a task that keeps yielding from
 * starving I/O. */
#define ROUNDS_PER_TURN 16

static void run_ready(aio_loop *loop)
{
    for (int round = 0; round < ROUNDS_PER_TURN && !aio_list_is_empty(&loop->ready); round++) {
        aio_list batch;
        aio_list_init(&batch);
        aio_list_splice(&batch, &loop->ready);
        aio_link *l;
        while ((l = aio_list_pop_front(&batch)) != NULL)
            resume(loop, aio_container_of(l, aio_task, run_link));
    }
}

void aio_deferred_init(aio_deferred *d, void (*cb)(aio_deferred *d))
{
    aio_link_init(&d->link);
    d->cb = cb;
}

void aio_defer(aio_deferred *d)
{
    if (!aio_link_is_linked(&d->link))
        aio_list_push_back(&aio__loop->deferred, &d->link);
}

void aio_deferred_cancel(aio_deferred *d) { aio_link_unlink(&d->link); }

/* Callbacks deferred by a deferred callback run at the next turn. */
static void run_deferred(aio_loop *loop)
{
    aio_list batch;
    aio_list_init(&batch);
    aio_list_splice(&batch, &loop->deferred);
    aio_link *l;
    while ((l = aio_list_pop_front(&batch)) != NULL) {
        aio_deferred *d = aio_container_of(l, aio_deferred, link);
        d->cb(d);
    }
}

int aio_loop_run_once(aio_loop *loop, int32_t max_wait_ms)
{
    assert(loop->current == NULL && "the loop is driven from outside any task");
    int32_t wait = max_wait_ms;
    aio__timer *next;
    /* a socket written to by a task (outside h2o's callbacks) has its
     * completion pending: h2o runs it only after the next poll, so poll
     * without sleeping */
    bool h2o_pending = loop->ev->_pending_as_client != NULL || loop->ev->_pending_as_server != NULL;
    if (!aio_list_is_empty(&loop->ready) || !aio_list_is_empty(&loop->deferred) || loop->stop || h2o_pending) {
        wait = 0;
    } else if ((next = first_timer(loop)) != NULL) {
        int64_t delta = next->at - aio_now();
        if (delta <= 0)
            wait = 0;
        else if ((delta + 999999) / 1000000 < wait)
            wait = (int32_t)((delta + 999999) / 1000000); /* round up: never wake early and spin */
    }
    /* aio_turn_now reads the clock anew after the poll (at its first use in
     * h2o's callbacks) and again for the timers and tasks */
    loop->turn_now = 0;
    int rc = h2o_evloop_run(loop->ev, wait);
    loop->turn_now = 0;
    if (rc != 0 && errno != EINTR)
        return -1;
    fire_timers(loop);
    /* last, so that a caller checking a condition after this turn sees the
     * effect of everything that became ready in it */
    run_ready(loop);
    run_deferred(loop);
    return 0;
}

void aio_loop_run(aio_loop *loop)
{
    loop->stop = false;
    while (!loop->stop)
        if (aio_loop_run_once(loop, INT32_MAX) != 0)
            break;
    loop->stop = false;
}

void aio_loop_stop(aio_loop *loop) { loop->stop = true; }

void aio_loop_cancel_all(aio_loop *loop)
{
    aio_list_foreach(l, &loop->all) aio_task_cancel(aio_container_of(l, aio_task, all_link));
}

void aio_loop_destroy(aio_loop *loop)
{
    assert(loop->current == NULL);
    while (loop->live > 0) {
        aio_loop_cancel_all(loop);
        if (aio_loop_run_once(loop, 10) != 0)
            break;
    }
    aio__port_dispose(loop);
    /* let h2o release the sockets closed during the last turn */
    h2o_evloop_run(loop->ev, 0);
    while (loop->pool_len > 0)
        unmap_task(loop->pool[--loop->pool_len]);
    free(loop->pool);
    h2o_evloop_destroy(loop->ev);
    free(loop->heap);
    free(loop);
    aio__loop = NULL;
}

int aio_run(aio_fn main, void *arg, const aio_loop_options *opts)
{
    aio_loop *loop = aio_loop_create(opts);
    if (loop == NULL)
        return -ENOMEM;
    aio_task *t = aio_task_spawn(main, arg);
    if (t == NULL) {
        aio_loop_destroy(loop);
        return -ENOMEM;
    }
    while (!aio_task_done(t))
        if (aio_loop_run_once(loop, INT32_MAX) != 0)
            abort();
    int result = aio_task_result(t);
    aio__task_release(t);
    aio_loop_destroy(loop);
    return result;
}
