/* The outbox's retention: events (migrations/0006_events.sql) are kept
 * for EVENTS_RETENTION_S (7 days by default), long enough for a reader of
 * GET /events or a webhook that was away to resume where it stopped, and
 * then deleted by a background task on worker 0. The writers are the
 * creating statements themselves (routes/users.c, orders.c, accounts.c;
 * transfers through routes/idempotency.h): each emits its event in the
 * transaction of its change, last. */
#ifndef H2PG_ROUTES_EVENTS_OUTBOX_H
#define H2PG_ROUTES_EVENTS_OUTBOX_H

#include <stdint.h>

#include "aio/task.h"

/* Rows the pruner deletes per statement. */
#define ROUTES_EVENTS_PRUNE_BATCH 1000

/* How long an event is kept (seconds, >= 1; 604800 until set). Set at
 * each worker's start, before it serves; the same value everywhere. */
void routes_events_outbox_set_retention(int64_t seconds);

/* One pruning pass: deletes events older than the retention, oldest id
 * first, at most ROUTES_EVENTS_PRUNE_BATCH rows per statement, until a
 * statement finds fewer. Awaits, on the calling thread's pool; *deleted
 * (may be NULL) counts the rows deleted, also when a later statement
 * failed. 0 or a negative errno (as db_exec). */
int routes_events_outbox_prune(int64_t *deleted);

/* The background task that prunes: a pass at once, then one every
 * routes_idempotency_prune_interval_ms(retention) (at most 60 s, at least
 * 1 s); failures are logged and retried at the next pass. Runs on the
 * calling thread's loop (one worker is enough). NULL when no task can be
 * made. Stopping cancels it and awaits its end (a statement in flight is
 * cancelled on the server); stop(NULL) does nothing. */
aio_task *routes_events_outbox_pruner_start(void);
void routes_events_outbox_pruner_stop(aio_task *pruner);

#endif
