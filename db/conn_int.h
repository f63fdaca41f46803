/* Private to db/: one connection's state machine and the pool's hooks.
 *
 * A connection is always in libpq pipeline mode. Work is queued as ops: an
 * op is one or more statements, each followed by a Sync (or one Sync for an
 * atomic batch), plus the Prepare messages they need, sent in front, each
 * in a block of its own, so that neither a failing statement nor another
 * failing Prepare can abort a Prepare. On the pool's shared connection the
 * statements queued in one loop turn, every task's, form one segment with
 * one Sync at the end of the turn (libpq 15 writes to the socket at every
 * Sync): a failing statement there makes the server skip the rest of the
 * segment, and the ops skipped that way (reads) run again. The loop watches the socket
 * permanently; its read callback consumes input and hands results to the
 * ops in send order. Sending is deferred to the end of the loop turn, so
 * everything queued in one turn goes out in one write. */
#ifndef H2PG_DB_CONN_INT_H
#define H2PG_DB_CONN_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <h2o.h>

#include "db/pool.h"
#include "aio/aio.h"

/* A 57014 this soon after a cancel meant for another op counts as that
 * cancel's (a read hit by it runs again). */
#define DB_COLLATERAL_WINDOW AIO_SEC(1)

/* Statements prepared per connection, at most (a power of two, with room). */
#define DB_PREPARED_SLOTS 512

enum db_conn_state {
    DB_CONN_IDLE,     /* on the pool's idle list */
    DB_CONN_BORROWED, /* a task holds it */
    DB_CONN_CLEANING, /* the janitor holds it */
    DB_CONN_SHARED,   /* the pool's shared connection: many tasks' statements, pipelined */
};

typedef struct db_op db_op;

struct db_conn {
    PGconn *pg;
    h2o_socket_t *sock; /* watches a duplicate of PQsocket() */
    db_pool *pool;
    enum db_conn_state state;
    aio_task *holder;      /* the task that borrowed it (a stale release is ignored) */
    aio_link pool_link;    /* idle list or the pool's list of all connections */
    aio_link all_link;
    aio_list ops;          /* in flight, in send order */
    aio_deferred flush;
    aio_event drained;     /* set whenever ops is empty */
    bool write_armed;      /* an h2o write notification is pending */
    bool corked;           /* TCP_CORK set until this turn's flush */
    bool segment_open;     /* shared: statements sent this turn await the turn's Sync */
    bool want_write;       /* PQflush left data unsent */
    bool broken;
    bool retired;          /* was shared, then retired: its abandoned head would not go */
    /* The shared connection's head-of-line watchdog (pool.c): a statement
     * whose requester is gone is cancelled on the server only once it is
     * at the head of the pipeline (the one the server runs) and has run
     * there for a moment; queued ones are simply dropped when they come. */
    int64_t head_since;        /* when the head op became the head */
    h2o_timeout_entry_t watchdog;
    h2o_loop_t *watchdog_loop;
    const db_op *cancel_target; /* the op the last cancel was meant for, while it is in the list */
    int64_t cancel_at;         /* when that cancel was sent (0: never) */
    aio_event *notify;     /* a listener's (listen.c): set when a NOTIFY arrives or the connection breaks */
    uint64_t notifies;     /* NOTIFYs parsed since the listener last looked */
    const db_stmt *begin;  /* BEGIN to send in front of the next statement */
    char sqlstate[6];      /* of the last failed statement */
    int64_t created_at, idle_since;
    const db_stmt *prepared[DB_PREPARED_SLOTS]; /* open-addressing set of statements prepared here */
    int nprepared;
    char error[256];
};

/* What each result of an op answers, in the order the server sends them. */
enum { DB_TAG_PREPARE = -1, DB_TAG_SYNC = -2, DB_TAG_BEGIN = -3 };

struct db_op {
    aio_link link;
    aio_future done;
    db_conn *conn;
    bool abandoned;  /* the waiter gave up: discard the results and free the op */
    bool collateral; /* a statement got 57014 from a cancel meant for another op,
                      * or was skipped because another op's statement failed */
    bool in_segment; /* sent on a shared connection into the turn's segment */
    bool marker;     /* no one's: stands for the Sync that ends a turn's segment */
    int rc;          /* first failure */
    int ntags, pos;  /* expected results and the next one */
    int ncalls;
    PGresult **results; /* ncalls slots */
    int *call_rc;
    const db_stmt **prepped; /* statements prepared by this op, to forget on failure */
    const db_stmt **stmts;   /* ncalls slots: each call's statement, to check its result against */
    PGresult **prep_errors;  /* nprep slots: why a Prepare failed, for the call that needed it */
    int nprep;
    int tags[];         /* >= 0: a call's result; DB_TAG_PREPARE; DB_TAG_SYNC */
};

/* Opens a connection (awaits; obeys the caller's deadline). */
int db__conn_open(db_pool *pool, db_conn **out, char *err, size_t errlen);

/* Closes the connection and frees it; fails whatever is in flight. */
void db__conn_close(db_conn *c);

/* Queues the calls as one op (never awaits); NULL on ENOMEM. A pending
 * c->begin goes first, in the same implicit block as the first call. */
db_op *db__conn_send(db_conn *c, db_call *calls, size_t n, int flags);

/* Awaits an op, moves its results into the calls and frees it. If the wait
 * is interrupted, the op is abandoned (freed when its results arrive),
 * *abandoned is set and -ECANCELED / -ETIMEDOUT is returned. */
int db__op_wait(db_op *op, db_call *calls, size_t n, bool *abandoned);
/* Same, also telling whether a 57014 in the results may be collateral: a
 * cancel meant for another request's statement on a shared connection,
 * which landed on this one (a read can simply run again). */
int db__op_wait_ex(db_op *op, db_call *calls, size_t n, bool *abandoned, bool *collateral);

/* Pool hooks (pool.c). */
struct db_conninfo;
const struct db_conninfo *db__pool_conninfo(const db_pool *p);
/* Statements are sent unnamed (transaction pooling): nothing is prepared. */
bool db__pool_unnamed(const db_pool *p);
void db__pool_conn_broken(db_conn *c);
void db__pool_abandoned(db_conn *c);
/* The pool's shared connection (opening one if needed; awaits). -EAGAIN
 * when the pool has a single connection, or another task was opening it
 * and failed (use an exclusive one). */
int db__pool_shared(db_pool *p, db_conn **out);
/* The shared connection c has nothing in flight any more (conn.c tells). */
void db__pool_shared_idle(db_conn *c);
/* Awaits the moment the pool's shared connection has nothing in flight, or
 * breaks or is retired (then ask db__pool_shared again); the caller's
 * deadline and cancellation apply. */
int db__pool_shared_wait_idle(db_pool *p);
/* Counts a send held back behind a Sync (db_pool_stats.sends_held). */
void db__pool_send_held(db_pool *p);
/* Whether statements sent to c now would follow a Sync whose answer has not
 * come yet: some are in flight and no segment is open to join. */
bool db__conn_after_sync(const db_conn *c);
/* Whether c is inside a transaction, or its next statement opens one. */
bool db__conn_in_transaction(const db_conn *c);
/* The head of c's pipeline may have changed, or an op of it was abandoned:
 * arms the watchdog of a shared connection whose head is abandoned. */
void db__pool_head_check(db_conn *c);

#endif
