/* Private to the runtime: the task and loop structures and the one suspend
 * primitive every awaiting operation is built on.
 *
 * Protocol of an awaiting operation:
 *   1. rc = aio__enter(); if rc < 0, fail with rc (cancelled / timed out);
 *   2. if the operation can complete at once, do it and return;
 *   3. otherwise queue a waiter (with an abort function that unqueues it) and
 *      call aio__suspend(&w, until); the return value is the outcome.
 * The event side completes a waiter with aio__wake(&w, result) after
 * unqueueing it. Cancellation or an expired deadline calls w->abort and
 * wakes the task with -ECANCELED / -ETIMEDOUT; a waiter that was already
 * woken can no longer be aborted, so an operation is either done or not. */
#ifndef H2PG_AIO_TASK_INT_H
#define H2PG_AIO_TASK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "ctx.h"
#include "list.h"
#include "loop.h"
#include "task.h"
#include "timeout.h"

typedef struct aio__waiter aio__waiter;
struct aio__waiter {
    aio_task *task;
    /* Unqueues the waiter from whatever it waits on; NULL: the wait cannot be
     * interrupted (cancellation then shows at the next await). */
    void (*abort)(aio__waiter *w);
    aio_link link; /* free for the wait queue's use */
    void *data;    /* operation payload (e.g. a queue item) */
    int result;
};

/* Called when a watched task ends (joiners, groups, wait, as_completed). */
typedef struct aio__watch aio__watch;
struct aio__watch {
    aio_link link;
    void (*on_done)(aio__watch *w, aio_task *t);
};

typedef struct aio__timer aio__timer;
struct aio__timer {
    int64_t at;
    size_t heap_index; /* SIZE_MAX when not armed, AIO__TIMER_IN_RUN when on one of the loop's runs */
    aio_link run_link;
    void (*fire)(aio__timer *t);
};

#define AIO__TIMER_IN_RUN (SIZE_MAX - 1)

/* How many runs of timers the loop keeps (see aio__timer_arm). */
#define AIO__TIMER_RUNS 8

typedef struct aio__heap_slot {
    int64_t at; /* the timer's own, copied */
    aio__timer *timer;
} aio__heap_slot;

enum aio__task_state { AIO__READY, AIO__RUNNING, AIO__SUSPENDED, AIO__DONE };

struct aio_group;

struct aio_task {
    aio__ctx ctx;
    aio_loop *loop;
    aio_fn fn;
    void *arg;
    int result;
    uint8_t state;
    bool cancelled;
    bool detached;
    aio_link run_link;     /* on the loop's run queue */
    aio_link all_link;     /* on the loop's list of live tasks */
    aio__waiter *waiter;   /* the abortable wait in progress, if any */
    int64_t wait_until;    /* when the wait in progress ends by itself (AIO_NEVER) */
    aio__timer timer;      /* wakes the task at min(wait_until, deadline) */
    int64_t deadline;      /* effective deadline of the innermost scope */
    aio_timeout *scope;    /* innermost open deadline scope */
    aio_list watchers;     /* aio__watch: told when the task ends */
    aio_list groups;       /* aio_group: groups this task opened */
    struct aio_group *group; /* the group that owns this task, if any */
    aio_link group_link;
    void *locals[AIO_TASK_LOCALS]; /* task-local values (aio_task_local) */
    void *map;             /* the mapping holding guard page, stack and this struct */
    size_t map_size;
};

struct aio_loop {
    struct st_h2o_evloop_t *ev;
    aio__ctx main;
    aio_task *current;
    aio_list ready;
    aio__heap_slot *heap;
    aio_list runs[AIO__TIMER_RUNS]; /* runs of armed timers, each in the order of their times */
    int64_t run_last[AIO__TIMER_RUNS]; /* the time of each run's last timer (meaningless when empty) */
    int last_run;                      /* the run joined last */
    size_t heap_len, heap_cap;
    aio_task **pool;      /* ended tasks' mappings kept for reuse, the latest last (its stack the warmest) */
    size_t pool_len, pool_max;
    size_t stack_size, page_size;
    aio_list all;         /* tasks not yet ended */
    aio_list deferred;    /* aio_deferred to run at the end of this turn */
    size_t live;
    bool stop;
    int64_t turn_now;       /* aio_turn_now's reading; 0: none yet this turn */
    struct aio__port *port; /* completions from helper threads (thread.c) */
};

extern _Thread_local aio_loop *aio__loop;

/* The running task; asserts there is one. */
aio_task *aio__self(void);

/* Step 1 of every await: 0, or -ECANCELED / -ETIMEDOUT. */
int aio__enter(void);

/* Suspends the current task on w until aio__wake (or abort, or `until`
 * passes, which wakes it with result 0 after calling abort). Abortable
 * waits also end at the task's deadline. Returns w->result. */
int aio__suspend(aio__waiter *w, int64_t until);

/* Completes a waiter that its owner has already unqueued. */
void aio__wake(aio__waiter *w, int result);

/* Timers of the current loop. disarm is idempotent. */
void aio__timer_arm(aio_loop *loop, aio__timer *t, int64_t at);
void aio__timer_disarm(aio_loop *loop, aio__timer *t);

/* Makes a READY task run at the loop's next turn. */
void aio__schedule(aio_task *t);

/* Watching a task's end (the watch is unlinked before on_done is called). */
void aio__watch_add(aio_task *t, aio__watch *w);

/* Waits, without being interruptible, until t has ended. */
void aio__wait_done_uninterruptible(aio_task *t);

/* Releases an ended task's stack back to the pool. */
void aio__task_release(aio_task *t);

/* Marks the scopes that have expired at `now` and returns -ETIMEDOUT. */
int aio__timed_out(aio_task *t);

/* Group hooks (group.c). */
void aio__group_cancel_all(aio_task *owner);

#endif
