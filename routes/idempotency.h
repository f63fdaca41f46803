/* Idempotency-Key: a retried request gets the first answer back instead
 * of doing its work twice.
 *
 * The work runs in a retrying READ COMMITTED transaction that first claims
 * the key: the first request with a key does the work and stores its
 * outcome with the key, in the same transaction, so the outcome exists if
 * and only if the work committed; a concurrent duplicate waits on the
 * claimed row until the first commits; a later request with the same key
 * and the same fingerprint gets the stored outcome, one with another
 * fingerprint 409. */
#ifndef H2PG_ROUTES_IDEMPOTENCY_H
#define H2PG_ROUTES_IDEMPOTENCY_H

#include "routes/handler.h"

/* What the work decided, answered once the transaction commits. */
typedef struct routes_outcome {
    int status;         /* 201, or a 4xx; 0 until decided */
    json_t *body;       /* the resource or the problem (owned) */
    char *stored;       /* a replayed outcome's body text (owned) */
} routes_outcome;

/* Decide the outcome (each returns 0): a problem, with `field` in its
 * errors list when not NULL; a created resource (object consumed). */
int routes_outcome_problem(routes_outcome *o, int status, const char *detail, const char *field);
int routes_outcome_created(routes_outcome *o, json_t *object);

/* The work: returns 0 with the outcome decided, or a negative errno
 * (rolled back; retried on serialization failure and deadlock). */
typedef int (*routes_tx_work)(server_req *r, db_conn *tx, void *arg, routes_outcome *out);

/* The Idempotency-Key header: 0 with *key (NULL when absent), or 400 and
 * SERVER_ANSWERED for a value that is not 1 to 255 visible ASCII
 * characters. */
int routes_idempotency_key(server_req *r, const char **key);

/* Runs work as described above (key NULL: no key, just the transaction)
 * and answers with its outcome; a 201 with Location: created_prefix + the
 * resource's "id". fingerprint is a canonical text of the request: what
 * must be equal for a retry to count as the same request. */
int routes_idempotent(server_req *r, const char *key, const char *fingerprint, const char *created_prefix,
                      routes_tx_work work, void *arg);

#endif
