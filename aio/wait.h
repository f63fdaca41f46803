/* Waiting on several tasks at once: asyncio.wait (FIRST_COMPLETED,
 * FIRST_EXCEPTION, ALL_COMPLETED) and asyncio.as_completed.
 *
 * The tasks are handles from aio_task_spawn; they stay owned by the caller,
 * who joins them afterwards (joining an ended task does not suspend). Tasks
 * still running when the wait ends are left running, or cancelled and
 * awaited if the caller passes AIO_CANCEL_PENDING. A "failure" is a negative
 * result other than -ECANCELED. */
#ifndef H2PG_AIO_WAIT_H
#define H2PG_AIO_WAIT_H

#include <stddef.h>

#include "list.h"
#include "task.h"

enum aio_wait_mode { AIO_FIRST_COMPLETED, AIO_FIRST_EXCEPTION, AIO_ALL_COMPLETED };

enum { AIO_CANCEL_PENDING = 1 };

/* Awaits until the mode's condition holds. Returns how many of the tasks
 * have ended (see aio_task_done), -ENOMEM, or -ECANCELED / -ETIMEDOUT if the
 * caller was interrupted first. With AIO_CANCEL_PENDING, tasks not ended are
 * then cancelled and awaited, in both cases, before this returns. */
int aio_wait(aio_task *const *tasks, size_t n, enum aio_wait_mode mode, int flags);

/* Iterating tasks in the order they end. In the caller's memory. */
typedef struct aio_as_completed {
    struct aio__ac_entry *entries;
    size_t n, yielded;
    aio_list ended; /* entries ended but not yet yielded */
    struct aio__waiter *waiter;
} aio_as_completed;

/* 0 or -ENOMEM. Never awaits. */
int aio_as_completed_init(aio_as_completed *it, aio_task *const *tasks, size_t n);

/* Awaits the next task to end and stores it in *out. Returns 1, 0 once every
 * task has been yielded, or -ECANCELED / -ETIMEDOUT if interrupted. */
int aio_as_completed_next(aio_as_completed *it, aio_task **out);

/* Ends the iteration (always call it). Tasks not yet yielded are left
 * running, or with AIO_CANCEL_PENDING cancelled and awaited. */
void aio_as_completed_dispose(aio_as_completed *it, int flags);

#endif
