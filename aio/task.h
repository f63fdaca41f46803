/* Tasks: stackful coroutines on the calling thread's loop (asyncio's
 * create_task / Task.cancel / await task).
 *
 * A task runs fn(arg) on its own stack. Inside it, any awaiting call of this
 * runtime (sleep, join, lock, queue, fd, query, ...) suspends the task until
 * its event, so handlers read as straight-line code.
 *
 * Errors are negative errno values. Two are special at every await:
 *   -ECANCELED  the task was cancelled: returned by the await in progress and
 *               by every later await, until the task returns. So cleanup code
 *               never blocks; work that must still await is handed to another
 *               task.
 *   -ETIMEDOUT  a deadline scope of the task has expired (see time.h):
 *               returned by every await until that scope is closed.
 * Cancellation wins over a timeout. An await that has already completed its
 * operation (a lock granted, an item received) returns success even when a
 * cancel arrives before the task runs again; the next await reports it.
 *
 * Everything here must be called on a loop thread (see loop.h). */
#ifndef H2PG_AIO_TASK_H
#define H2PG_AIO_TASK_H

#include <stdbool.h>

/* What a task runs: returns 0 or a positive result, or a negative errno. */
typedef int (*aio_fn)(void *arg);

/* Opaque: a running or finished coroutine, with its stack. */
typedef struct aio_task aio_task;

/* Creates a task that runs fn(arg) on the current thread's loop; it starts
 * at the loop's next turn (never inside this call). The caller owns the
 * returned handle and must either join it or detach it. Callable from a task
 * or from loop callbacks. Returns NULL when no stack can be mapped. */
aio_task *aio_task_spawn(aio_fn fn, void *arg);

/* Awaits the task's end and releases it; returns what fn returned. If the
 * caller is cancelled or times out while waiting, the task is cancelled and
 * awaited (it ends promptly: its awaits now fail) and the caller's -ECANCELED
 * or -ETIMEDOUT is returned. The handle is invalid afterwards, either way. */
int aio_task_join(aio_task *t);

/* Gives up the handle: the task releases itself when it ends. The loop still
 * tracks it (aio_loop_cancel_all reaches it). */
void aio_task_detach(aio_task *t);

/* Requests cancellation (idempotent, never awaits). An await in progress is
 * interrupted with -ECANCELED unless its operation already completed; every
 * task in a group the task opened is cancelled too. No effect on an ended
 * task. */
void aio_task_cancel(aio_task *t);

/* Whether the task has ended; its result then is aio_task_result(). */
bool aio_task_done(const aio_task *t);
int aio_task_result(const aio_task *t);

/* The task running now, or NULL in loop callbacks. */
aio_task *aio_task_current(void);

/* 0, or -ECANCELED / -ETIMEDOUT when the current task's next await would
 * fail with it; never suspends. For long computations between awaits. */
int aio_checkpoint(void);

/* Task-local values (asyncio's contextvars): every task has
 * AIO_TASK_LOCALS pointer slots. A task spawned from a task starts with
 * its parent's values, so children of a structured scope (a group, a
 * gather) can report into structures their parent owns; a task spawned
 * from a loop callback starts with none, and detaching a task clears its
 * values (a detached task may outlive whatever they point to: detach right
 * after spawning). Values are not owned. */
#define AIO_TASK_LOCALS 4

/* A slot for one module's value, process-wide (thread-safe; call once per
 * module, e.g. at its first use). Asserts when every slot is taken. */
int aio_task_local_key(void);

/* The current task's value in slot key (NULL outside a task or if unset),
 * and setting it (ignored outside a task). */
void *aio_task_local(int key);
void aio_task_set_local(int key, void *value);

/* Lets every other ready task run once, then continues (asyncio.sleep(0)).
 * Returns 0, -ECANCELED or -ETIMEDOUT. */
int aio_yield(void);

#endif
