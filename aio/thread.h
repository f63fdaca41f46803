/* Running blocking functions on helper threads (asyncio.to_thread /
 * run_in_executor), e.g. libpq's blocking PQcancel or getaddrinfo.
 *
 * A small process-wide pool of helper threads runs the functions; the loop
 * thread learns of each completion through an eventfd it polls, so the
 * awaiting task is resumed without the loop ever blocking. */
#ifndef H2PG_AIO_THREAD_H
#define H2PG_AIO_THREAD_H

#include <stddef.h>

/* Runs on a helper thread: must not touch the loop or any task. */
typedef int (*aio_blocking_fn)(void *arg);

/* Runs fn(arg) on a helper thread and awaits its result. The wait cannot be
 * interrupted, so arg may live on the caller's stack: a cancel or deadline
 * that comes meanwhile shows at the next await. Returns fn's result, or
 * -ECANCELED / -ETIMEDOUT if the call could not start, or -ENOMEM. */
int aio_to_thread(aio_blocking_fn fn, void *arg);

/* Like aio_to_thread, but a cancel or deadline interrupts the wait at once.
 * Then -ECANCELED / -ETIMEDOUT is returned and arg belongs to abandon: when
 * fn ends (or at once, if it never started), abandon(arg, result) is called
 * on this loop's thread to dispose of it, so arg must not live on the
 * caller's stack. On any other return the caller still owns arg; fn itself
 * should therefore not return -ECANCELED or -ETIMEDOUT. */
int aio_to_thread_abandonable(aio_blocking_fn fn, void *arg, void (*abandon)(void *arg, int result));

/* Sets the number of helper threads (default 4). Call before first use. */
void aio_executor_configure(size_t threads);

/* Stops and joins the helper threads after the queued work (at exit). */
void aio_executor_shutdown(void);

#endif
