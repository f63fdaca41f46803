/* Structured concurrency: task groups (asyncio.TaskGroup) and gather.
 *
 *     aio_group g;
 *     aio_group_init(&g);
 *     aio_group_spawn(&g, read_user, &u);
 *     aio_group_spawn(&g, read_orders, &o);
 *     int rc = aio_group_join(&g);   // 0, or the first failure
 *
 * A group belongs to the task that initialised it and owns its children: the
 * first child that fails (returns a negative value other than -ECANCELED)
 * cancels the others; join waits for every child, whatever happens, and
 * releases them, so no child outlives its group. Cancelling the owner
 * cancels the children at once. A child always runs its function, even when
 * cancelled before it started: its first await then fails. */
#ifndef H2PG_AIO_GROUP_H
#define H2PG_AIO_GROUP_H

#include <stdbool.h>
#include <stddef.h>

#include "list.h"
#include "task.h"

/* In the caller's memory; fields are private. */
typedef struct aio_group {
    struct aio_task *owner;
    aio_list children;
    aio_link owner_link;
    struct aio__waiter *waiter;
    size_t running;
    size_t failed;
    int first_error;
    bool cancelled;
    bool cancel_on_failure;
} aio_group;

/* Opens a group owned by the current task. Never awaits. */
void aio_group_init(aio_group *g);

/* Starts fn(arg) as a child. Returns the child (owned by the group: do not
 * join or detach it), or NULL if no stack could be mapped, which counts as a
 * failure with -ENOMEM. */
aio_task *aio_group_spawn(aio_group *g, aio_fn fn, void *arg);

/* Cancels every child (idempotent, never awaits). */
void aio_group_cancel(aio_group *g);

/* Awaits every child, then releases them and closes the group. Returns the
 * first child failure if any child failed; otherwise 0, or -ECANCELED /
 * -ETIMEDOUT if the owner was cancelled or timed out while waiting (the
 * children are then cancelled and still awaited before this returns). */
int aio_group_join(aio_group *g);

/* After join: how many children failed. */
size_t aio_group_failed(const aio_group *g);

/* One call of a gather. */
typedef struct aio_call {
    aio_fn fn;
    void *arg;
    int result; /* set by aio_gather: what fn returned */
} aio_call;

enum { AIO_RETURN_EXCEPTIONS = 1 };

/* asyncio.gather: runs every call concurrently and awaits them all; each
 * call's result is stored in it. Without AIO_RETURN_EXCEPTIONS the first
 * failure cancels the rest and is returned; with it, failures are only
 * recorded per call and 0 is returned. -ECANCELED / -ETIMEDOUT if the caller
 * is interrupted (the calls are cancelled and awaited first). */
int aio_gather(aio_call *calls, size_t n, int flags);

#endif
