/* The coroutine runtime, "asyncio for C": include this to get all of it.
 *
 *   asyncio                      here
 *   -------                      ----
 *   asyncio.run(main())          aio_run(main, arg, NULL)             loop.h
 *   create_task / await task     aio_task_spawn / aio_task_join       task.h
 *   Task.cancel()                aio_task_cancel                      task.h
 *   gather(..., return_exc.)     aio_gather(calls, n, flags)          group.h
 *   TaskGroup                    aio_group_init/spawn/join            group.h
 *   wait(FIRST_COMPLETED ...)    aio_wait(tasks, n, mode, flags)      wait.h
 *   as_completed                 aio_as_completed_next                wait.h
 *   sleep                        aio_sleep / aio_sleep_until          timeout.h
 *   timeout / timeout_at         aio_timeout_open / _open_at / close  timeout.h
 *   wait_for                     aio_wait_for                         timeout.h
 *   Lock / Semaphore / Event     aio_lock / aio_sem / aio_event       sync.h
 *   Queue(maxsize)               aio_queue                            queue.h
 *   add_reader / add_writer      aio_fd_wait                          fd.h
 *   to_thread / run_in_executor  aio_to_thread                        thread.h
 */
#ifndef H2PG_AIO_H
#define H2PG_AIO_H

#include "fd.h"
#include "group.h"
#include "loop.h"
#include "queue.h"
#include "sync.h"
#include "task.h"
#include "thread.h"
#include "timeout.h"
#include "wait.h"

#endif
