/* Lock, Semaphore and Event for tasks of one loop (asyncio.Lock, Semaphore,
 * Event).
 *
 * All three are in the caller's memory, need no dispose, and must not be
 * used across threads. Waits are FIFO-fair: a release hands the lock or the
 * slot straight to the longest waiter, so a newcomer cannot overtake it.
 * Waits obey cancellation and deadline scopes (task.h); a waiter that is
 * cancelled or times out never takes the lock or the slot. */
#ifndef H2PG_AIO_SYNC_H
#define H2PG_AIO_SYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "list.h"

typedef struct aio_lock {
    bool locked;
    aio_list waiters;
} aio_lock;

void aio_lock_init(aio_lock *l);
/* 0 once held; -ECANCELED / -ETIMEDOUT without it. */
int aio_lock_acquire(aio_lock *l);
/* 0 if taken, -EBUSY if held or others wait. Never suspends. */
int aio_lock_try_acquire(aio_lock *l);
/* Passes the lock to the first waiter, or unlocks. Never awaits. */
void aio_lock_release(aio_lock *l);
bool aio_lock_locked(const aio_lock *l);

typedef struct aio_sem {
    size_t value;
    aio_list waiters;
    size_t nwaiters;
} aio_sem;

void aio_sem_init(aio_sem *s, size_t value);
/* 0 once a slot is taken; -ECANCELED / -ETIMEDOUT without one. */
int aio_sem_acquire(aio_sem *s);
/* 0 if a slot was free and nobody waits, else -EAGAIN. Never suspends. */
int aio_sem_try_acquire(aio_sem *s);
/* Gives a slot to the first waiter, or back to the semaphore. */
void aio_sem_release(aio_sem *s);
size_t aio_sem_value(const aio_sem *s);
size_t aio_sem_waiting(const aio_sem *s);

typedef struct aio_event {
    bool set;
    aio_list waiters;
} aio_event;

void aio_event_init(aio_event *e);
/* Sets the flag and wakes every waiter. */
void aio_event_set(aio_event *e);
void aio_event_clear(aio_event *e);
bool aio_event_is_set(const aio_event *e);
/* 0 once the flag is set (at once if it is); -ECANCELED / -ETIMEDOUT. */
int aio_event_wait(aio_event *e);

/* A one-shot result set by an event source (asyncio.Future), e.g. a
 * database reply dispatched by a socket callback, and awaited by one task.
 * In the caller's memory. */
typedef struct aio_future {
    struct aio__waiter *waiter;
    int result;
    bool done;
} aio_future;

void aio_future_init(aio_future *f);
/* Completes the future once (never awaits; callable from loop callbacks)
 * and wakes its waiter if any. */
void aio_future_set(aio_future *f, int result);
bool aio_future_done(const aio_future *f);
/* The result once set (at once if it is). -ECANCELED / -ETIMEDOUT if the
 * waiting task is interrupted first: the future stays pending, and a later
 * set() still records its result, so the caller can check aio_future_done()
 * to reclaim what was handed over meanwhile. One waiter at a time. */
int aio_future_wait(aio_future *f);

#endif
