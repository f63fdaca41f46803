/* Per-thread pool of non-blocking PostgreSQL connections.
 *
 * Each worker thread owns one pool (a slice of POOL_MIN / POOL_MAX), used
 * only from that thread's tasks. Connections are opened without blocking
 * (PQconnectStartParams / PQconnectPoll on the loop; host names resolved on
 * a helper thread), kept in pipeline mode, and watched by the loop at all
 * times, so a connection the server closes leaves the pool at once.
 *
 * Acquire waits FIFO for an idle connection, opening a new one while the
 * pool is below its maximum. After a failed connect the pool backs off
 * (exponentially, up to 5 s) and, while it has no live connection, fails
 * acquires at once with -ECONNREFUSED instead of letting them queue: a
 * database outage gives fast 503s, and the pool reconnects by itself.
 *
 * A connection goes back clean: when a statement is interrupted (deadline,
 * cancel) the connection passes to a janitor task that cancels the query on
 * the server (PQcancel on a helper thread), drains what is in flight, rolls
 * back an open transaction, and only then returns it, or closes it if that
 * takes too long. */
#ifndef H2PG_DB_POOL_H
#define H2PG_DB_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "db/db.h"

typedef struct db_pool db_pool;

typedef struct db_pool_config {
    const char *conninfo;     /* libpq URI or key=value string; "" for libpq's defaults */
    int min, max;             /* this pool's connections (max >= 1) */
    int64_t acquire_timeout;  /* ns to wait for a connection before -EBUSY */
    int64_t connect_timeout;  /* ns for one connection attempt */
    int64_t idle_timeout;     /* ns an idle connection above min is kept */
    int statement_timeout_ms; /* server-side backstops set at connect (0: off) */
    int idle_in_transaction_timeout_ms;
    /* Behind a transaction-pooling PgBouncer: consecutive transactions may
     * run on different server sessions, so no named prepared statements
     * (each statement is parsed unnamed) and no startup options (the
     * backstops above must then be set on the role or database). */
    bool transaction_pooler;
    /* A read replica's pool: not this thread's primary pool. */
    bool replica;
} db_pool_config;

/* Creates the calling thread's pool (one per thread; cfg and its conninfo
 * string are copied) and starts its maintenance task, which
 * opens min connections in the background. -EINVAL (with err) for a
 * malformed conninfo, -ENOMEM. */
int db_pool_create(const db_pool_config *cfg, db_pool **out, char *err, size_t errlen);

/* Read-replica pools for a DATABASE_READ_URL list (one conninfo, or
 * several URIs separated by whitespace; at most DB_MAX_REPLICAS), each
 * like primary but opening nothing until used and giving up connecting
 * after a second. *out (malloc'd, with *n pools) belongs to the caller,
 * also on failure (destroy the *n pools, then free it). 0, -EINVAL (with
 * err) or -ENOMEM. */
#define DB_MAX_REPLICAS 16
int db_pool_create_replicas(const char *list, const db_pool_config *primary, db_pool ***out, size_t *n, char *err,
                            size_t errlen);

/* Closes every connection and frees the pool. Called from a task at
 * shutdown, after request tasks ended; never awaits. */
void db_pool_destroy(db_pool *p);

/* The calling thread's pool, or NULL. */
db_pool *db_pool_current(void);

/* Whether acquiring may succeed now: false while the pool has no live
 * connection and is backing off after failed connects. */
bool db_pool_usable(const db_pool *p);

/* This thread's read-replica pools, for db_exec_read (borrowed; NULL, 0 to
 * clear). */
void db_pool_set_replicas(db_pool **pools, size_t n);

/* Borrows a connection exclusively. Returns 0, -EBUSY (acquire timeout),
 * -ECONNREFUSED, -ETIMEDOUT / -ECANCELED (the caller's deadline or cancel). */
int db_pool_acquire(db_pool *p, db_conn **out);

/* Returns a borrowed connection; one with work in flight or an open
 * transaction is cleaned first (never awaits). */
void db_pool_release(db_conn *c);

/* Transaction status of a borrowed connection (PQtransactionStatus). */
PGTransactionStatusType db_conn_tx_status(const db_conn *c);

/* The last error the server or libpq reported on c (for logs only). */
const char *db_conn_error(const db_conn *c);

typedef struct db_pool_stats {
    size_t open, idle, in_use, connecting, waiting, cleaning;
    uint64_t acquired, acquire_timeouts, connect_failures, cancels_sent, closed_dirty;
    /* transaction_pooler: sends held back until the Sync before them was answered */
    uint64_t sends_held;
} db_pool_stats;

void db_pool_stats_get(const db_pool *p, db_pool_stats *st);

/* The last connect error, or "" (for /readyz details and logs). */
const char *db_pool_last_error(const db_pool *p);

#endif
