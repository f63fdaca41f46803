/* The outbox's background work. Writers (the creating statements
 * themselves: routes/users.c, orders.c, accounts.c; transfers through
 * routes/idempotency.h) call events_emit last in the transaction of their
 * change, which leaves a pending entry (migrations/0008); the sequencer
 * numbers pending entries into events, ids in commit order, and wakes the
 * readers (GET /events, webhooks) with NOTIFY h2pg_events.
 *
 * Retention: events (migrations/0006_events.sql) are kept
 * for EVENTS_RETENTION_S (7 days by default), long enough for a reader of
 * GET /events or a webhook that was away to resume where it stopped, and
 * then deleted by a background task on worker 0. The writers are the
 * creating statements themselves (routes/users.c, orders.c, accounts.c;
 * transfers through routes/idempotency.h): each emits its event in the
 * transaction of its change, last. */
#ifndef H2PG_ROUTES_EVENTS_OUTBOX_H
#define H2PG_ROUTES_EVENTS_OUTBOX_H

#include <stdint.h>

#include "aio/sync.h"
#include "aio/task.h"
#include "db/pool.h"

/* Pending entries the sequencer numbers per statement. */
#define ROUTES_EVENTS_SEQUENCE_BATCH 1000

/* Numbers every pending entry, a batch per statement (awaits, on the
 * calling thread's pool); *moved (may be NULL) counts them. 0 or a
 * negative errno (as db_exec). */
int routes_events_outbox_sequence(int64_t *moved);

/* The sequencer: LISTENs for h2pg_outbox on a connection of listen_pool
 * (NULL: it polls every poll ns instead; with LISTEN it sweeps every ten
 * polls) and numbers what is pending each time. One per process is
 * enough (copies of the service take turns on an advisory lock). NULL
 * when no task can be made. */
aio_task *routes_events_outbox_sequencer_start(db_pool *listen_pool, int64_t poll);

/* An event of the calling thread's loop that the sequencer sets whenever
 * it has numbered new events (the webhook dispatcher of worker 0 waits on
 * it, so this copy delivers at once what it numbered); NULL to stop. */
void routes_events_outbox_set_waker(aio_event *waker);

/* Events this thread's sequencer has numbered so far (0 on the others). */
uint64_t routes_events_outbox_numbered(void);

/* Rows the pruner deletes per statement. */
#define ROUTES_EVENTS_PRUNE_BATCH 1000

/* How long an event is kept (seconds, >= 1; 604800 until set). Set at
 * each worker's start, before it serves; the same value everywhere. */
void routes_events_outbox_set_retention(int64_t seconds);

/* The retention in seconds, as set. */
int64_t routes_events_outbox_retention(void);

/* One pruning pass: deletes events older than the retention, oldest id
 * first, at most ROUTES_EVENTS_PRUNE_BATCH rows per statement, until a
 * statement finds fewer. Awaits, on the calling thread's pool; *deleted
 * (may be NULL) counts the rows deleted, also when a later statement
 * failed. 0 or a negative errno (as db_exec). */
int routes_events_outbox_prune(int64_t *deleted);

/* The background task that prunes: a pass at once, then one every
 * routes_retention_interval_ms(retention) (at most 60 s, at least
 * 1 s); failures are logged and retried at the next pass. Runs on the
 * calling thread's loop (one worker is enough). NULL when no task can be
 * made. */
aio_task *routes_events_outbox_pruner_start(void);

/* Stops the sequencer or the pruner: cancels it and awaits its end (a
 * statement in flight is cancelled on the server); NULL does nothing. */
void routes_events_outbox_stop(aio_task *task);

#endif
