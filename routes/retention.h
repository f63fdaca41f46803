/* Retention: rows older than a configured age, deleted by a background
 * task a batch at a time (the idempotency keys, the events). One
 * definition of the pass and of the task; each table brings its statement
 * and its retention. */
#ifndef H2PG_ROUTES_RETENTION_H
#define H2PG_ROUTES_RETENTION_H

#include <stdint.h>

#include "aio/task.h"
#include "db/db.h"

typedef struct routes_retention {
    const char *what;     /* for the log: "events", "idempotency keys" */
    const db_stmt *prune; /* ($1 retention in seconds, $2 batch size) -> one row: the count deleted */
    int64_t batch;        /* rows per statement */
    int64_t (*retention_s)(void);
} routes_retention;

/* One pass: prune statements (each under a 30 s deadline of its own)
 * until one deletes fewer than a batch. Awaits, on the calling thread's
 * pool; *deleted (may be NULL) counts the rows deleted, also when a later
 * statement failed. 0 or a negative errno (as db_exec). */
int routes_retention_prune(const routes_retention *r, int64_t *deleted);

/* The background task: a pass at once, then one every
 * routes_retention_interval_ms(retention); failures are logged and
 * retried at the next pass. r must outlive the task. NULL when no task can
 * be made. Stopping cancels it and awaits its end (a statement in flight
 * is cancelled on the server); stop(NULL) does nothing. */
aio_task *routes_retention_start(const routes_retention *r);
void routes_retention_stop(aio_task *task);

/* The pause between passes: min(60 s, retention / 4), at least 1 s, in
 * milliseconds. Pure. */
int64_t routes_retention_interval_ms(int64_t retention_s);

#endif
