/* Awaiting a file descriptor (what asyncio's add_reader/add_writer do).
 *
 *     aio_fd *w = aio_fd_open(fd);
 *     int ev = aio_fd_wait(w, AIO_READABLE);   // suspends until readable
 *     aio_fd_close(w);
 *
 * The watcher registers a duplicate of fd with the loop, so the caller keeps
 * owning fd (and may close it at any time after aio_fd_close). The fd's
 * file description is switched to non-blocking mode. */
#ifndef H2PG_AIO_FD_H
#define H2PG_AIO_FD_H

enum { AIO_READABLE = 1, AIO_WRITABLE = 2 };

/* Opaque: an fd registered with the current thread's loop. */
typedef struct aio_fd aio_fd;

/* NULL with errno set on failure. Never awaits. */
aio_fd *aio_fd_open(int fd);

/* Closes the duplicate; no task may be waiting on it. */
void aio_fd_close(aio_fd *w);

/* Awaits readiness for any of events (AIO_READABLE | AIO_WRITABLE). Returns
 * the ready events (> 0; a hang-up or error counts as both), or -ECANCELED /
 * -ETIMEDOUT. One waiter per watcher at a time. */
int aio_fd_wait(aio_fd *w, int events);

#endif
