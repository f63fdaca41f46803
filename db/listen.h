/* LISTEN from a task: a connection held for notifications.
 *
 *     static const db_stmt LISTEN_EVENTS = DB_STMT("events_listen", "LISTEN h2pg_events", 0);
 *     db_listener *l;
 *     int rc = db_listen_open(pool, &LISTEN_EVENTS, &l);   // borrows a connection, sends LISTEN
 *     while (rc == 0 && (rc = db_listen_wait(l, &n)) == 0)  // awaits the next NOTIFY
 *         ...read what changed...
 *     db_listen_close(l);
 *
 * The connection is borrowed from the pool for as long as the listener
 * lives, and is closed (not reused) when it goes: it is still LISTENing.
 * Behind a transaction-pooling PgBouncer LISTEN does not work (the session
 * under it changes); open the listener on a pool of its own that reaches
 * the server directly.
 *
 * The statement is the caller's fixed text (a channel name cannot be a
 * parameter); no input ever goes into it. */
#ifndef H2PG_DB_LISTEN_H
#define H2PG_DB_LISTEN_H

#include <stdint.h>

#include "db/db.h"
#include "db/pool.h"

typedef struct db_listener db_listener;

/* Borrows a connection from pool and runs listen on it (awaits, under the
 * caller's deadline). 0, or the errors of db_pool_acquire and db_exec;
 * -ENOMEM. */
int db_listen_open(db_pool *pool, const db_stmt *listen, db_listener **out);

/* Awaits notifications: returns 0 once at least one arrived since the last
 * call (all of them consumed; *count, if not NULL, says how many),
 * -ECONNRESET when the connection is lost (close the listener and open
 * another), or -ETIMEDOUT / -ECANCELED from the caller's scope. */
int db_listen_wait(db_listener *l, uint64_t *count);

/* Closes the connection and frees the listener (never awaits; NULL is a
 * no-op). Call it from the task that opened it. */
void db_listen_close(db_listener *l);

#endif
