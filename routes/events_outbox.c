/* The outbox's background work on worker 0: the sequencer, which numbers
 * committed events in commit order (migrations/0008), and the pruner. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "base/log.h"
#include "db/db.h"
#include "db/listen.h"
#include "routes/events_outbox.h"
#include "routes/idempotency.h"
#include "routes/retention.h"

/* One batch, oldest id first (ids follow commit order, so the oldest
 * events go first); the count of rows deleted. */
static const db_stmt PRUNE_EVENTS =
    DB_QUERY("events_prune",
             "WITH gone AS (DELETE FROM events WHERE id IN "
             "(SELECT id FROM events WHERE created_at < now() - make_interval(secs => $1::bigint) "
             "ORDER BY id LIMIT $2::bigint) RETURNING 1) SELECT count(*) FROM gone",
             2, "i");

#define DEFAULT_RETENTION_S 604800

/* Every worker sets the same value at start; relaxed is enough. */
static _Atomic int64_t retention_s = DEFAULT_RETENTION_S;

void routes_events_outbox_set_retention(int64_t seconds)
{
    atomic_store_explicit(&retention_s, seconds >= 1 ? seconds : 1, memory_order_relaxed);
}

int64_t routes_events_outbox_retention(void) { return atomic_load_explicit(&retention_s, memory_order_relaxed); }

static const routes_retention EVENTS_RETENTION = {.what = "events",
                                                  .prune = &PRUNE_EVENTS,
                                                  .batch = ROUTES_EVENTS_PRUNE_BATCH,
                                                  .retention_s = routes_events_outbox_retention};

int routes_events_outbox_prune(int64_t *deleted) { return routes_retention_prune(&EVENTS_RETENTION, deleted); }

aio_task *routes_events_outbox_pruner_start(void) { return routes_retention_start(&EVENTS_RETENTION); }

void routes_events_outbox_stop(aio_task *task)
{
    if (task == NULL)
        return;
    aio_task_cancel(task);
    aio_task_join(task);
}

/* ---- the sequencer ---- */

static const db_stmt LISTEN_OUTBOX = DB_STMT("outbox_listen", "LISTEN h2pg_outbox", 0);
static const db_stmt SEQUENCE = DB_QUERY("events_sequence", "SELECT events_sequence($1)", 1, "i");

#define SEQUENCE_DEADLINE AIO_SEC(30)
#define LISTEN_RETRY AIO_SEC(5)

static _Thread_local aio_event *waker;
static _Thread_local uint64_t numbered;

void routes_events_outbox_set_waker(aio_event *e) { waker = e; }

uint64_t routes_events_outbox_numbered(void) { return numbered; }

struct sequencer {
    db_pool *listen_pool; /* NULL: poll */
    int64_t poll;
};

int routes_events_outbox_sequence(int64_t *moved)
{
    int64_t total = 0, n;
    int rc;
    do {
        PGresult *res = NULL;
        aio_timeout scope;
        aio_timeout_open(&scope, SEQUENCE_DEADLINE);
        rc = db_exec(NULL, &SEQUENCE, DB_PARAMS(DB_INT4(ROUTES_EVENTS_SEQUENCE_BATCH)), &res);
        aio_timeout_close(&scope);
        n = rc == 0 ? db_get_int(res, 0, 0) : 0;
        PQclear(res);
        total += n;
    } while (rc == 0 && n == ROUTES_EVENTS_SEQUENCE_BATCH);
    numbered += (uint64_t)total;
    if (total > 0 && waker != NULL)
        aio_event_set(waker);
    if (moved != NULL)
        *moved = total;
    return rc;
}

/* Woken by every writer's NOTIFY (or, without LISTEN, every poll), it
 * numbers what is pending; with LISTEN, a sweep every ten polls catches
 * what a lost notification missed. */
static int sequencer_run(void *arg)
{
    struct sequencer *sq = arg;
    db_failure failure;
    db_failure_open(&failure);
    db_listener *listener = NULL;
    int64_t listen_after = 0;
    bool failing = false;
    for (;;) {
        if (listener == NULL && sq->listen_pool != NULL && aio_now() >= listen_after) {
            aio_timeout scope;
            aio_timeout_open(&scope, SEQUENCE_DEADLINE);
            int rc = db_listen_open(sq->listen_pool, &LISTEN_OUTBOX, &listener);
            bool expired = aio_timeout_close(&scope) < 0;
            if (rc == -ECANCELED && !expired)
                break;
            if (rc < 0) {
                listener = NULL;
                listen_after = aio_now() + LISTEN_RETRY;
                log_warn("events: the sequencer cannot LISTEN (%s); polling meanwhile", strerror(-rc));
            }
        }
        /* after LISTEN is in place, so that no commit in between is missed */
        int rc = routes_events_outbox_sequence(NULL);
        if (rc == -ECANCELED && aio_checkpoint() < 0)
            break;
        if (rc < 0 && !failing) {
            if (rc == -EREMOTEIO)
                log_warn("events: numbering pending events failed: SQLSTATE %s: %s", failure.sqlstate, failure.message);
            else
                log_warn("events: numbering pending events failed: %s", strerror(-rc));
        }
        failing = rc < 0;
        if (listener == NULL) {
            if (aio_sleep(sq->poll) < 0)
                break;
            continue;
        }
        aio_timeout scope;
        aio_timeout_open(&scope, sq->poll * 10);
        rc = db_listen_wait(listener, NULL);
        bool expired = aio_timeout_close(&scope) < 0;
        if (rc == -ECANCELED && !expired)
            break;
        if (rc == -ECONNRESET) {
            log_warn("events: the sequencer's LISTEN connection was lost; listening again");
            db_listen_close(listener);
            listener = NULL;
        }
    }
    db_listen_close(listener);
    db_failure_close(&failure);
    free(sq);
    return 0;
}

aio_task *routes_events_outbox_sequencer_start(db_pool *listen_pool, int64_t poll)
{
    struct sequencer *sq = malloc(sizeof(*sq));
    if (sq == NULL)
        return NULL;
    *sq = (struct sequencer){.listen_pool = listen_pool, .poll = poll};
    aio_task *t = aio_task_spawn(sequencer_run, sq);
    if (t == NULL)
        free(sq);
    return t;
}
