/* Time, sleep and deadline scopes (asyncio.sleep, timeout, timeout_at,
 * wait_for).
 *
 * Times are int64_t nanoseconds of CLOCK_MONOTONIC; AIO_NEVER is "no
 * deadline". A deadline scope bounds every await of the current task while
 * it is open: once its deadline passes, the await in progress and every later
 * one return -ETIMEDOUT until the scope is closed. Scopes nest; an inner scope
 * can only shorten the deadline. Deadlines are absolute so nested calls share
 * one budget. */
#ifndef H2PG_AIO_TIMEOUT_H
#define H2PG_AIO_TIMEOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "task.h"

#define AIO_NEVER INT64_MAX
#define AIO_USEC(n) ((int64_t)(n)*1000)
#define AIO_MSEC(n) ((int64_t)(n)*1000000)
#define AIO_SEC(n) ((int64_t)(n)*1000000000)

/* Monotonic now, in nanoseconds. */
int64_t aio_now(void);

/* aio_now as first read in this turn of the loop (after its poll, then
 * again once its callbacks have run): for timestamps that need be no finer
 * than a turn, one clock read for many. Outside a loop, aio_now. Not for
 * deadlines: a task that spins in one turn would never see it move. */
int64_t aio_turn_now(void);

/* Suspends the current task until the time (or for the duration). Returns 0
 * when it has passed, -ECANCELED if cancelled first, -ETIMEDOUT if a deadline
 * scope expires first. */
int aio_sleep_until(int64_t when);
int aio_sleep(int64_t duration);

/* A deadline scope, in the caller's memory (usually on its stack). */
typedef struct aio_timeout {
    int64_t deadline;        /* this scope's effective deadline */
    int64_t outer_deadline;  /* restored at close */
    struct aio_timeout *outer;
    struct aio_task *task;
    bool expired;            /* an await of this scope reported -ETIMEDOUT */
} aio_timeout;

/* Opens a scope on the current task, relative (timeout) or absolute
 * (timeout_at). Never awaits. Scopes close in reverse order of opening. */
void aio_timeout_open(aio_timeout *scope, int64_t duration);
void aio_timeout_open_at(aio_timeout *scope, int64_t deadline);

/* Closes the scope; returns -ETIMEDOUT if its deadline passed and an await
 * inside it reported so, else 0. */
int aio_timeout_close(aio_timeout *scope);

/* The current task's effective deadline (AIO_NEVER if none), and what is left
 * of it (never negative; AIO_NEVER if none). */
int64_t aio_deadline(void);
int64_t aio_remaining(void);

/* asyncio.wait_for: runs fn(arg) in the current task under a scope of the
 * given duration; returns -ETIMEDOUT if the scope expired, else fn's result. */
int aio_wait_for(int64_t duration, aio_fn fn, void *arg);

#endif
