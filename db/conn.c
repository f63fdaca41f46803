#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/conn_int.h"
#include "db/conninfo.h"
#include "server/log.h"

/* ---- the set of statements prepared on a connection ---- */

#define TOMBSTONE ((const db_stmt *)(uintptr_t)1)

static size_t slot_of(const db_stmt *s)
{
    return (size_t)(((uintptr_t)s >> 3) * 0x9E3779B97F4A7C15ULL >> 40) & (DB_PREPARED_SLOTS - 1);
}

static bool is_prepared(const db_conn *c, const db_stmt *s)
{
    for (size_t i = slot_of(s), k = 0; k < DB_PREPARED_SLOTS; i = (i + 1) & (DB_PREPARED_SLOTS - 1), k++) {
        if (c->prepared[i] == s)
            return true;
        if (c->prepared[i] == NULL)
            return false;
    }
    return false;
}

static void set_prepared(db_conn *c, const db_stmt *s, bool on)
{
    size_t i = slot_of(s);
    for (size_t k = 0; k < DB_PREPARED_SLOTS; i = (i + 1) & (DB_PREPARED_SLOTS - 1), k++) {
        if (c->prepared[i] == s) {
            if (!on) {
                c->prepared[i] = TOMBSTONE;
                c->nprepared--;
            }
            return;
        }
        if (c->prepared[i] == NULL)
            break;
    }
    if (!on)
        return;
    assert(c->nprepared < DB_PREPARED_SLOTS / 2 && "more statements than DB_PREPARED_SLOTS allows");
    for (i = slot_of(s); c->prepared[i] != NULL && c->prepared[i] != TOMBSTONE; i = (i + 1) & (DB_PREPARED_SLOTS - 1))
        ;
    c->prepared[i] = s;
    c->nprepared++;
}

/* ---- failure ---- */

static void set_error(db_conn *c, const char *msg)
{
    snprintf(c->error, sizeof(c->error), "%s", msg && *msg ? msg : "connection lost");
    size_t n = strlen(c->error);
    while (n > 0 && (c->error[n - 1] == '\n' || c->error[n - 1] == ' '))
        c->error[--n] = '\0';
}

static void op_free(db_op *op)
{
    for (int i = 0; i < op->ncalls; i++)
        PQclear(op->results[i]);
    for (int i = 0; i < op->nprep; i++)
        PQclear(op->prep_errors[i]);
    free(op);
}

static bool op_prepare_failed(const db_op *op)
{
    for (int i = 0; i < op->nprep; i++)
        if (op->prep_errors[i] != NULL)
            return true;
    return false;
}

static void op_complete(db_conn *c, db_op *op)
{
    aio_link_unlink(&op->link);
    op->conn_retired = c->retired;
    if (op->abandoned)
        op_free(op);
    else
        aio_future_set(&op->done, op->rc);
    if (aio_list_is_empty(&c->ops))
        aio_event_set(&c->drained);
}

/* The connection is unusable: every op fails, the pool is told. */
static void conn_break(db_conn *c, const char *why)
{
    if (c->broken)
        return;
    c->broken = true;
    set_error(c, why);
    log_warn("database connection lost: %s", c->error);
    aio_deferred_cancel(&c->flush);
    aio_link *l;
    while ((l = aio_list_pop_front(&c->ops)) != NULL) {
        db_op *op = aio_container_of(l, db_op, link);
        aio_link_init(&op->link);
        if (op->rc == 0)
            op->rc = -ECONNRESET;
        if (op->abandoned)
            op_free(op);
        else
            aio_future_set(&op->done, op->rc);
    }
    aio_event_set(&c->drained);
    if (c->sock != NULL && h2o_socket_is_reading(c->sock))
        h2o_socket_read_stop(c->sock);
    db__pool_conn_broken(c);
}

/* ---- results ---- */

static void dispatch(db_conn *c, PGresult *r)
{
    if (aio_list_is_empty(&c->ops)) {
        /* nothing asked for it: a protocol surprise; the connection cannot be trusted */
        PQclear(r);
        conn_break(c, "unexpected result from the server");
        return;
    }
    db_op *op = aio_container_of(c->ops.next, db_op, link);
    ExecStatusType st = PQresultStatus(r);
    int tag = op->tags[op->pos];
    if (st == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        if (tag != DB_TAG_SYNC) {
            conn_break(c, "pipeline out of step");
            return;
        }
    } else if (tag == DB_TAG_BEGIN) {
        if (st != PGRES_COMMAND_OK) {
            set_error(c, PQresultErrorMessage(r));
            snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", db_sqlstate(r));
            if (op->rc == 0)
                op->rc = -EREMOTEIO;
        }
        PQclear(r);
    } else if (tag == DB_TAG_PREPARE) {
        /* the op starts with its Prepares, each followed by a Sync */
        int k = op->pos / 2;
        if (st != PGRES_COMMAND_OK) {
            /* forget only this one, so its next use prepares again; keep
             * the server's reason for the call that needed it */
            set_error(c, PQresultErrorMessage(r));
            snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", db_sqlstate(r));
            set_prepared(c, op->prepped[k], false);
            op->prep_errors[k] = r;
            r = NULL;
            if (op->rc == 0)
                op->rc = -EREMOTEIO;
        }
        PQclear(r);
    } else if (tag >= 0) {
        op->results[tag] = r;
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            op->call_rc[tag] = 0;
        } else if (st == PGRES_PIPELINE_ABORTED) {
            op->call_rc[tag] = -ECANCELED;
            if (op->rc == 0)
                op->rc = -EREMOTEIO;
        } else {
            /* "prepared statement does not exist" after a failed Prepare
             * says nothing new: keep the Prepare's reason */
            if (!(op_prepare_failed(op) && strcmp(db_sqlstate(r), "26000") == 0)) {
                set_error(c, PQresultErrorMessage(r));
                snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", db_sqlstate(r));
            }
            op->call_rc[tag] = -EREMOTEIO;
            if (op->rc == 0)
                op->rc = -EREMOTEIO;
        }
    } else {
        PQclear(r);
        conn_break(c, "pipeline out of step");
        return;
    }
    if (++op->pos == op->ntags)
        op_complete(c, op);
}

static void flush_now(db_conn *c);

/* Drains every result libpq can give without blocking. */
static void consume(db_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_break(c, PQerrorMessage(c->pg));
        return;
    }
    int nulls = 0;
    while (!c->broken && !aio_list_is_empty(&c->ops) && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            /* the end of one statement's results; two in a row: nothing more now */
            if (++nulls == 2)
                break;
            continue;
        }
        nulls = 0;
        dispatch(c, r);
    }
    if (!c->broken && PQstatus(c->pg) == CONNECTION_BAD)
        conn_break(c, PQerrorMessage(c->pg));
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    db_conn *c = sock->data;
    (void)err;
    consume(c);
    if (!c->broken && c->want_write)
        flush_now(c);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    db_conn *c = sock->data;
    (void)err;
    c->write_armed = false;
    if (!c->broken && c->want_write)
        flush_now(c);
}

static void flush_now(db_conn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_break(c, PQerrorMessage(c->pg));
        return;
    }
    c->want_write = r == 1;
    if (c->want_write && !c->write_armed) {
        c->write_armed = true;
        h2o_socket_notify_write(c->sock, on_writable);
    }
}

/* libpq 15's PQpipelineSync writes to the socket at once, so every
 * request on a shared connection would be its own packet and its own
 * wake-up of the server process. When a second op is queued in the same
 * loop turn the socket is corked, and the end-of-turn flush uncorks it:
 * everything queued in one turn leaves as one segment, and a lone
 * request pays no extra system call. */
static void set_cork(db_conn *c, int on)
{
    if (setsockopt(PQsocket(c->pg), IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0)
        c->corked = on;
}

static void on_flush(aio_deferred *d)
{
    db_conn *c = aio_container_of(d, db_conn, flush);
    if (!c->broken)
        flush_now(c);
    if (c->corked && !c->broken)
        set_cork(c, 0);
}

/* ---- sending ---- */

db_op *db__conn_send(db_conn *c, db_call *calls, size_t n, int flags)
{
    assert(n > 0);
    bool atomic = flags & DB_BATCH_ATOMIC;
    const db_stmt *begin = c->begin;
    c->begin = NULL;
    const db_stmt *prep[n + 1];
    int nprep = 0;
    bool unnamed = db__pool_unnamed(c->pool);
    for (size_t i = 0; !unnamed && i <= n; i++) {
        const db_stmt *s = i < n ? calls[i].stmt : begin;
        if (s == NULL || is_prepared(c, s))
            continue;
        bool dup = false;
        for (int k = 0; k < nprep; k++)
            dup |= prep[k] == s;
        if (!dup)
            prep[nprep++] = s;
    }
    if (aio_link_is_linked(&c->flush.link) && !c->corked)
        set_cork(c, 1); /* not the first op of this turn: hold it for the turn's flush */
    int ntags = 2 * nprep + (begin ? 1 : 0) + (int)n + (atomic ? 1 : (int)n);
    /* one allocation: the op with its tags, then the pointer arrays, then the ints */
    size_t head = (sizeof(db_op) + sizeof(int) * (size_t)ntags + 7) & ~(size_t)7;
    size_t size = head + sizeof(PGresult *) * (n + (size_t)nprep) + sizeof(db_stmt *) * (size_t)nprep + sizeof(int) * n;
    db_op *op = calloc(1, size);
    if (op == NULL)
        return NULL;
    op->results = (PGresult **)(void *)((char *)op + head);
    op->prep_errors = &op->results[n];
    op->prepped = (const db_stmt **)(void *)&op->prep_errors[nprep];
    op->call_rc = (int *)(void *)&op->prepped[nprep];
    op->ncalls = (int)n;
    op->ntags = ntags;
    aio_future_init(&op->done);
    aio_link_init(&op->link);

    if (c->broken) {
        op->rc = -ECONNRESET;
        aio_future_set(&op->done, op->rc);
        return op;
    }

    int t = 0;
    bool ok = true;
    for (int k = 0; k < nprep && ok; k++) {
        /* a Sync after each: a failing Prepare must not abort the next one */
        ok = PQsendPrepare(c->pg, prep[k]->name, prep[k]->sql, prep[k]->nparams, NULL);
        set_prepared(c, prep[k], true);
        op->prepped[op->nprep++] = prep[k];
        op->tags[t++] = DB_TAG_PREPARE;
        ok = ok && PQpipelineSync(c->pg);
        op->tags[t++] = DB_TAG_SYNC;
    }
    if (begin != NULL && ok) {
        /* no Sync after it: if BEGIN fails, the first statement is skipped */
        ok = unnamed ? PQsendQueryParams(c->pg, begin->sql, 0, NULL, NULL, NULL, NULL, 1)
                     : PQsendQueryPrepared(c->pg, begin->name, 0, NULL, NULL, NULL, 1);
        op->tags[t++] = DB_TAG_BEGIN;
    }
    for (size_t i = 0; i < n && ok; i++) {
        const db_stmt *s = calls[i].stmt;
        const char *values[s->nparams > 0 ? s->nparams : 1];
        int lengths[s->nparams > 0 ? s->nparams : 1], formats[s->nparams > 0 ? s->nparams : 1];
        for (int k = 0; k < s->nparams; k++) {
            values[k] = calls[i].params[k].value;
            lengths[k] = calls[i].params[k].len;
            formats[k] = calls[i].params[k].format;
        }
        ok = unnamed ? PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, values, lengths, formats, 1)
                     : PQsendQueryPrepared(c->pg, s->name, s->nparams, values, lengths, formats, 1);
        op->tags[t++] = (int)i;
        op->call_rc[i] = -ECANCELED;
        if (!atomic) {
            ok = ok && PQpipelineSync(c->pg);
            op->tags[t++] = DB_TAG_SYNC;
        }
    }
    if (ok && atomic) {
        ok = PQpipelineSync(c->pg);
        op->tags[t++] = DB_TAG_SYNC;
    }
    assert(!ok || t == ntags);
    aio_list_push_back(&c->ops, &op->link);
    aio_event_clear(&c->drained);
    if (!ok) {
        /* libpq refused to queue (out of memory or a dead socket) */
        conn_break(c, PQerrorMessage(c->pg));
        return op;
    }
    aio_defer(&c->flush);
    return op;
}

int db__op_wait(db_op *op, db_call *calls, size_t n, bool *abandoned)
{
    bool on_retired;
    return db__op_wait_ex(op, calls, n, abandoned, &on_retired);
}

int db__op_wait_ex(db_op *op, db_call *calls, size_t n, bool *abandoned, bool *on_retired)
{
    *abandoned = false;
    *on_retired = false;
    int rc = aio_future_wait(&op->done);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        if (!aio_future_done(&op->done)) {
            op->abandoned = true;
            *abandoned = true;
            return rc;
        }
        rc = op->done.result; /* completed meanwhile: keep the outcome */
    }
    for (size_t i = 0; i < n; i++) {
        calls[i].result = op->results[i];
        calls[i].rc = op->results[i] ? op->call_rc[i] : (op->rc ? op->rc : -ECANCELED);
        op->results[i] = NULL;
        /* a call whose statement failed to prepare gets the reason (the
         * first such call; later ones keep "does not exist") */
        for (int k = 0; k < op->nprep && calls[i].rc == -EREMOTEIO; k++) {
            if (op->prep_errors[k] != NULL && op->prepped[k] == calls[i].stmt) {
                PQclear(calls[i].result);
                calls[i].result = op->prep_errors[k];
                op->prep_errors[k] = NULL;
            }
        }
    }
    for (int k = 0; k < op->nprep; k++)
        PQclear(op->prep_errors[k]);
    *on_retired = op->conn_retired;
    free(op);
    return rc;
}

/* ---- connecting ---- */

static void on_notice(void *arg, const PGresult *r)
{
    (void)arg;
    log_debug("database notice: %s", PQresultErrorMessage(r));
}

static int watch_socket(db_conn *c)
{
    int fd = fcntl(PQsocket(c->pg), F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    c->sock = h2o_evloop_socket_create(aio_loop_evloop(aio_loop_current()), fd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    h2o_socket_read_start(c->sock, on_readable);
    return 0;
}

/* Drives PQconnectPoll, waiting on the socket between steps; libpq may
 * switch sockets between hosts, so the watcher follows PQsocket(). */
static int connect_poll(PGconn *pg)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    int fd = -1;
    aio_fd *w = NULL;
    int rc = 0;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            break;
        if (st == PGRES_POLLING_FAILED) {
            rc = -ECONNREFUSED;
            break;
        }
        if (PQsocket(pg) != fd) {
            aio_fd_close(w);
            fd = PQsocket(pg);
            if (fd < 0 || (w = aio_fd_open(fd)) == NULL) {
                rc = -ECONNREFUSED;
                break;
            }
        }
        rc = aio_fd_wait(w, st == PGRES_POLLING_READING ? AIO_READABLE : AIO_WRITABLE);
        if (rc < 0)
            break;
        rc = 0;
        st = PQconnectPoll(pg);
    }
    aio_fd_close(w);
    return rc;
}

int db__conn_open(db_pool *pool, db_conn **out, char *err, size_t errlen)
{
    db_conninfo *ci = NULL;
    int rc = db_conninfo_resolve(db__pool_conninfo(pool), &ci, err, errlen);
    if (rc < 0)
        return rc;
    PGconn *pg = PQconnectStartParams((const char *const *)ci->keywords, (const char *const *)ci->values, 0);
    db_conninfo_free(ci);
    if (pg == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        PQfinish(pg);
        return -ECONNREFUSED;
    }
    rc = connect_poll(pg);
    if (rc == 0 && (PQsetnonblocking(pg, 1) != 0 || PQenterPipelineMode(pg) != 1))
        rc = -ECONNREFUSED;
    if (rc < 0) {
        if (rc == -ECONNREFUSED)
            snprintf(err, errlen, "%s", PQerrorMessage(pg));
        else
            snprintf(err, errlen, "%s", rc == -ETIMEDOUT ? "connect timed out" : "connect interrupted");
        /* PQfinish only closes a socket and frees memory: it does not block */
        PQfinish(pg);
        return rc;
    }
    PQsetNoticeReceiver(pg, on_notice, NULL);

    db_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        PQfinish(pg);
        return -ENOMEM;
    }
    c->pg = pg;
    c->pool = pool;
    aio_link_init(&c->pool_link);
    aio_link_init(&c->all_link);
    aio_list_init(&c->ops);
    aio_deferred_init(&c->flush, on_flush);
    aio_event_init(&c->drained);
    aio_event_set(&c->drained);
    c->created_at = aio_now();
    if ((rc = watch_socket(c)) < 0) {
        PQfinish(pg);
        free(c);
        snprintf(err, errlen, "cannot watch the socket: %s", strerror(-rc));
        return rc;
    }
    *out = c;
    return 0;
}

void db__conn_close(db_conn *c)
{
    if (!c->broken) {
        c->broken = true; /* closing on purpose: fail what is left quietly */
        aio_link *l;
        while ((l = aio_list_pop_front(&c->ops)) != NULL) {
            db_op *op = aio_container_of(l, db_op, link);
            aio_link_init(&op->link);
            if (op->abandoned) {
                op_free(op);
            } else {
                op->rc = -ECONNRESET;
                aio_future_set(&op->done, op->rc);
            }
        }
    }
    aio_deferred_cancel(&c->flush);
    if (c->sock != NULL)
        h2o_socket_close(c->sock);
    PQfinish(c->pg);
    free(c);
}

PGTransactionStatusType db_conn_tx_status(const db_conn *c) { return PQtransactionStatus(c->pg); }

const char *db_conn_error(const db_conn *c) { return c->error; }

const char *db_conn_last_sqlstate(const db_conn *c) { return c->sqlstate; }
