/* A pool connection held for LISTEN (see listen.h). The connection's read
 * callback (conn.c) counts the notifications it parses and sets the
 * listener's event; the listener only waits for it. */
#include <errno.h>
#include <stdlib.h>

#include "db/conn_int.h"
#include "db/listen.h"

struct db_listener {
    db_conn *conn;
    aio_event notified;
};

int db_listen_open(db_pool *pool, const db_stmt *listen, db_listener **out)
{
    db_listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    aio_event_init(&l->notified);
    int rc = db_pool_acquire(pool, &l->conn);
    if (rc < 0) {
        free(l);
        return rc;
    }
    /* watch before LISTEN: a NOTIFY may come in the same read as its result */
    l->conn->notify = &l->notified;
    l->conn->notifies = 0;
    PGresult *res = NULL;
    rc = db_exec(l->conn, listen, DB_NO_PARAMS, &res);
    PQclear(res);
    if (rc < 0) {
        db_listen_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

int db_listen_wait(db_listener *l, uint64_t *count)
{
    for (;;) {
        if (l->conn->notifies > 0) {
            if (count != NULL)
                *count = l->conn->notifies;
            l->conn->notifies = 0;
            aio_event_clear(&l->notified);
            return 0;
        }
        if (l->conn->broken)
            return -ECONNRESET;
        aio_event_clear(&l->notified);
        int rc = aio_event_wait(&l->notified);
        if (rc < 0)
            return rc;
    }
}

void db_listen_close(db_listener *l)
{
    if (l == NULL)
        return;
    if (l->conn != NULL) {
        l->conn->notify = NULL;
        l->conn->notifies = 0;
        /* still LISTENing: it must not serve anyone else, so it goes as if
         * broken (db_pool_release closes broken connections) */
        if (l->conn->state == DB_CONN_BORROWED && aio_list_is_empty(&l->conn->ops))
            l->conn->broken = true;
        db_pool_release(l->conn); /* an interrupted LISTEN went to the janitor: it is not ours */
    }
    free(l);
}
