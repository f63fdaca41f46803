/* Idempotency-Key: a retried request gets the first answer back instead
 * of doing its work twice.
 *
 * The work runs in a retrying READ COMMITTED transaction that first claims
 * the key: the first request with a key does the work and, when it created
 * something (201), stores its outcome with the key in the same transaction,
 * so the outcome exists if and only if the work committed; a concurrent
 * duplicate waits on the claimed row until the first commits; a later
 * request with the same key and the same fingerprint gets the stored
 * outcome, one with another fingerprint 409.
 *
 * Only what a retry needs is kept (Stripe's rules): an outcome that changed
 * nothing (a 4xx) is not stored, its claim is deleted in the same
 * transaction, so a retry (or a duplicate that waited on the claim) runs
 * the work again; and a stored outcome is kept for the retention
 * (IDEMPOTENCY_RETENTION_S, 24 h by default): a key whose outcome is older
 * counts as never used, and a background task deletes such rows. */
#ifndef H2PG_ROUTES_IDEMPOTENCY_H
#define H2PG_ROUTES_IDEMPOTENCY_H

#include "aio/task.h"
#include "routes/handler.h"

/* What the work decided, answered once the transaction commits. */
typedef struct routes_outcome {
    int status;         /* 201, or a 4xx; 0 until decided */
    json_t *body;       /* the resource or the problem (owned) */
    char *stored;       /* a replayed outcome's body text (owned) */
    /* the users its event belongs to (GET /events shows it to them), 0 for
     * none; the work sets them beside routes_outcome_created */
    int64_t owners[2];
} routes_outcome;

/* Decide the outcome (each returns 0): a problem, with `field` in its
 * errors list when not NULL; a created resource (object consumed). */
int routes_outcome_problem(routes_outcome *o, int status, const char *detail, const char *field);
int routes_outcome_created(routes_outcome *o, json_t *object);

/* The work: returns 0 with the outcome decided, or a negative errno
 * (rolled back; retried on serialization failure and deadlock). An outcome
 * other than 201 must have changed nothing: it is not stored, and a retry
 * runs the work again. */
typedef int (*routes_tx_work)(server_req *r, db_conn *tx, void *arg, routes_outcome *out);

/* The Idempotency-Key header: 0 with *key (NULL when absent), or 400 and
 * SERVER_ANSWERED for a value that is not 1 to 255 visible ASCII
 * characters. */
int routes_idempotency_key(server_req *r, const char **key);

/* Runs work as described above (key NULL: no key, just the transaction)
 * and answers with its outcome; a 201 with Location: created_prefix + the
 * resource's "id". fingerprint is a canonical text of the request: what
 * must be equal for a retry to count as the same request. A 201 also
 * emits an event of type event_type (when not NULL) with the resource as
 * its data and the outcome's owners, in the same transaction and as its last statement (after the
 * outcome is stored), since events_emit holds its lock until the commit;
 * a replay emits nothing. */
int routes_idempotent(server_req *r, const char *key, const char *fingerprint, const char *created_prefix,
                      const char *event_type, routes_tx_work work, void *arg);

/* ---- retention ---- */

/* Rows the pruner deletes per statement. */
#define ROUTES_IDEMPOTENCY_PRUNE_BATCH 1000

/* How long a stored outcome counts (seconds, >= 1; 86400 until set). Set
 * at each worker's start, before it serves; the same value everywhere. */
void routes_idempotency_set_retention(int64_t seconds);

/* One pruning pass: deletes stored outcomes older than the retention, at
 * most ROUTES_IDEMPOTENCY_PRUNE_BATCH rows per statement (rows a request
 * holds locked are skipped), until a statement finds fewer. Awaits, on the
 * calling thread's pool; *deleted (may be NULL) counts the rows deleted,
 * also when a later statement failed. 0 or a negative errno (as db_exec). */
int routes_idempotency_prune(int64_t *deleted);

/* The background task that prunes: a pass at once, then one every
 * min(60 s, retention / 4), but never more often than once a second; failures are
 * logged and retried at the next pass. Runs on the calling thread's loop
 * (one worker is enough: the rows are the database's, not the worker's).
 * NULL when no task can be made. Stopping cancels it and awaits its end
 * (a statement in flight is cancelled on the server); stop(NULL) does
 * nothing. */
aio_task *routes_idempotency_pruner_start(void);
void routes_idempotency_pruner_stop(aio_task *pruner);


#endif
