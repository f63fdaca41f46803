/* The per-thread event loop (asyncio's event loop and asyncio.run).
 *
 * One loop per thread, on top of h2o's evloop: each turn runs the tasks that
 * are ready, then waits in epoll for I/O until the nearest timer, then fires
 * the timers that are due. Stacks for tasks are mmap'd with a guard page and
 * kept in a per-loop pool for reuse. */
#ifndef H2PG_AIO_LOOP_H
#define H2PG_AIO_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "task.h"

/* h2o's loop type, without pulling all of h2o into every user. */
struct st_h2o_evloop_t;

/* Opaque: one thread's scheduler (run queue, timers, stack pool). */
typedef struct aio_loop aio_loop;

typedef struct aio_loop_options {
    size_t stack_size;     /* usable bytes per task stack; 0: the default (128 KiB, 512 KiB under ASan) */
    size_t stack_pool_max; /* stacks kept for reuse once their tasks end; 0: the default (256) */
} aio_loop_options;

/* Creates the calling thread's loop (NULL options: defaults) with a new h2o
 * evloop. A thread has at most one loop at a time. NULL on failure. */
aio_loop *aio_loop_create(const aio_loop_options *opts);

/* Cancels every task still alive, runs the loop until they have ended, and
 * frees the loop and its stacks. Not callable from a task. */
void aio_loop_destroy(aio_loop *loop);

/* The calling thread's loop, or NULL. */
aio_loop *aio_loop_current(void);

/* The h2o evloop under this loop, for sockets and h2o contexts. */
struct st_h2o_evloop_t *aio_loop_evloop(aio_loop *loop);

/* One turn: wait for I/O at most max_wait_ms (not at all if tasks are
 * ready), fire due timers, then run the ready tasks. Returns 0, or -1 if
 * polling failed. */
int aio_loop_run_once(aio_loop *loop, int32_t max_wait_ms);

/* Runs turns until aio_loop_stop() is called (from a task or callback). */
void aio_loop_run(aio_loop *loop);
void aio_loop_stop(aio_loop *loop);

/* A callback run once at the end of the current turn, after the ready
 * tasks ran and before the loop waits for I/O: lets work queued by many
 * tasks in one turn be handled in one go (e.g. one write for every
 * statement queued). In the caller's memory. */
typedef struct aio_deferred {
    aio_link link;
    void (*cb)(struct aio_deferred *d);
} aio_deferred;

/* Initialises d with its callback. */
void aio_deferred_init(aio_deferred *d, void (*cb)(aio_deferred *d));
/* Schedules d on the current thread's loop; no-op if already scheduled. */
void aio_defer(aio_deferred *d);
/* Unschedules d (idempotent). */
void aio_deferred_cancel(aio_deferred *d);

/* Cancels every task of the loop (shutdown). Never awaits. */
void aio_loop_cancel_all(aio_loop *loop);

/* Number of tasks not yet ended (joined or not). */
size_t aio_loop_task_count(const aio_loop *loop);

/* How many armed timers wait in the loop's time-ordered runs and how many
 * in its heap (diagnostics: deadlines of one length belong in a run). */
void aio_loop_timer_counts(const aio_loop *loop, size_t *in_runs, size_t *in_heap);

/* asyncio.run: creates a loop on this thread, runs main(arg) as a task until
 * it returns, cancels and drains whatever else is left, destroys the loop,
 * and returns main's result (-ENOMEM if nothing could start). */
int aio_run(aio_fn main, void *arg, const aio_loop_options *opts);

#endif
