#include <arpa/inet.h>
#include <assert.h>
#include <endian.h>
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
#include "base/log.h"

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

/* A cancel that was meant for another op, sent shortly before: it may
 * have landed on this one, which the server ran right after. */
static bool hit_by_cancel(const db_conn *c, const db_op *op)
{
    if (op->rc != -EREMOTEIO || c->cancel_at == 0 || c->cancel_target == op ||
        aio_now() - c->cancel_at > DB_COLLATERAL_WINDOW)
        return false;
    /* the cancel may have hit a Prepare (parsing waits for a table's lock
     * too): then the statement's own error is 26000, the Prepare's 57014 */
    for (int i = 0; i < op->ncalls; i++)
        if (op->results[i] != NULL && strcmp(db_sqlstate(op->results[i]), "57014") == 0)
            return true;
    for (int k = 0; k < op->nprep; k++)
        if (op->prep_errors[k] != NULL && strcmp(db_sqlstate(op->prep_errors[k]), "57014") == 0)
            return true;
    return false;
}

/* An op of a shared segment whose first failed statement was skipped
 * because an earlier statement of the segment, someone else's, failed. */
static bool skipped_for_another(const db_op *op)
{
    if (!op->in_segment || op->rc != -EREMOTEIO || op_prepare_failed(op))
        return false;
    for (int i = 0; i < op->ncalls; i++)
        if (op->call_rc[i] != 0)
            return op->results[i] != NULL && PQresultStatus(op->results[i]) == PGRES_PIPELINE_ABORTED;
    return false;
}

static void op_complete(db_conn *c, db_op *op)
{
    aio_link_unlink(&op->link);
    op->collateral = hit_by_cancel(c, op) || skipped_for_another(op);
    /* the next op may be allocated where this one was: a cancel meant for
     * this one that lands late must not pass for that one's own */
    if (c->cancel_target == op)
        c->cancel_target = NULL;
    if (op->abandoned)
        op_free(op);
    else
        aio_future_set(&op->done, op->rc);
    c->head_since = aio_turn_now();
    if (aio_list_is_empty(&c->ops)) {
        aio_event_set(&c->drained);
        if (c->state == DB_CONN_SHARED)
            db__pool_shared_idle(c);
    } else if (c->state == DB_CONN_SHARED)
        db__pool_head_check(c);
}

/* The connection is unusable: every op fails, the pool is told. */
static void conn_break(db_conn *c, const char *why)
{
    if (c->broken)
        return;
    c->broken = true;
    c->segment_open = false;
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
    c->cancel_target = NULL; /* freed, or soon */
    aio_event_set(&c->drained);
    if (c->notify != NULL)
        aio_event_set(c->notify);
    if (c->sock != NULL && h2o_socket_is_reading(c->sock))
        h2o_socket_read_stop(c->sock);
    db__pool_conn_broken(c);
}

/* ---- results ---- */

/* The server rejected something: remember why on the connection. */
static void note_failure(db_conn *c, db_op *op, const PGresult *r)
{
    set_error(c, PQresultErrorMessage(r));
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", db_sqlstate(r));
    if (op->rc == 0)
        op->rc = -EREMOTEIO;
}

/* A Prepare's result: the op starts with its Prepares, each followed by a
 * Sync. A failed one is forgotten, so that its next use prepares again,
 * and its reason kept for the call that needed it. */
static void on_prepare(db_conn *c, db_op *op, PGresult *r)
{
    int k = op->pos / 2;
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return;
    }
    note_failure(c, op, r);
    set_prepared(c, op->prepped[k], false);
    op->prep_errors[k] = r;
}

static void on_call(db_conn *c, db_op *op, int call, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    op->results[call] = r;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        op->call_rc[call] = 0;
    } else if (st == PGRES_PIPELINE_ABORTED) {
        op->call_rc[call] = -ECANCELED;
        if (op->rc == 0)
            op->rc = -EREMOTEIO;
    } else {
        /* "prepared statement does not exist" after a failed Prepare says
         * nothing new: keep the Prepare's reason */
        if (!(op_prepare_failed(op) && strcmp(db_sqlstate(r), "26000") == 0))
            note_failure(c, op, r);
        else if (op->rc == 0)
            op->rc = -EREMOTEIO;
        op->call_rc[call] = -EREMOTEIO;
    }
}

/* What comes in on c cannot be trusted to answer what c sent (a pooler
 * that shares server sessions between clients can do that): the op fails
 * with -EPROTO and the connection is closed. */
static void untrusted(db_conn *c, db_op *op, PGresult *r, const char *why)
{
    PQclear(r);
    if (op->rc == 0)
        op->rc = -EPROTO;
    conn_break(c, why);
}

/* A statement's result has other columns than it declares: the results
 * coming in answer other statements than the ones sent. */
static void out_of_step(db_conn *c, db_op *op, const db_stmt *stmt, PGresult *r)
{
    char got[96];
    size_t len = 0;
    got[0] = '\0';
    for (int i = 0; i < PQnfields(r) && len + 12 < sizeof(got); i++)
        len += (size_t)snprintf(got + len, sizeof(got) - len, "%s%u", i ? "," : "", PQftype(r, i));
    log_error("database connection out of step: statement \"%s\" declares columns \"%s\" but got %d of type oids "
              "[%s]: the results coming in answer other statements (or the declaration is wrong)%s",
              stmt->name, stmt->cols != NULL ? stmt->cols : "", PQnfields(r), got,
              db__pool_unnamed(c->pool) ? ""
                                        : "; behind a transaction-pooling PgBouncer set DATABASE_POOLER=transaction");
    untrusted(c, op, r, "results out of step with the statements sent");
}

/* Hands a result to the op at the head, in the order the op expects them
 * (its tags); anything else means the pipeline is out of step and the
 * connection cannot be trusted. */
static void dispatch(db_conn *c, PGresult *r)
{
    if (aio_list_is_empty(&c->ops)) {
        PQclear(r);
        conn_break(c, "unexpected result from the server");
        return;
    }
    db_op *op = aio_container_of(c->ops.next, db_op, link);
    ExecStatusType st = PQresultStatus(r);
    int tag = op->tags[op->pos];
    bool in_step = st == PGRES_PIPELINE_SYNC ? tag == DB_TAG_SYNC : tag != DB_TAG_SYNC;
    if (!in_step) {
        PQclear(r);
        conn_break(c, "pipeline out of step");
        return;
    }
    if (tag == DB_TAG_PREPARE && strcmp(db_sqlstate(r), "42P05") == 0) {
        /* "already exists": prepared by someone else in this session */
        log_error("database connection shares its server session with other clients: statement \"%s\" was "
                  "prepared there by another (42P05); behind a transaction-pooling PgBouncer set "
                  "DATABASE_POOLER=transaction",
                  op->prepped[op->pos / 2]->name);
        untrusted(c, op, r, "the server session is shared with other clients");
        return;
    }
    if (tag >= 0 && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) && !db_result_fits(op->stmts[tag], r)) {
        out_of_step(c, op, op->stmts[tag], r);
        return;
    }
    if (tag == DB_TAG_BEGIN && st != PGRES_COMMAND_OK)
        note_failure(c, op, r);
    if (tag == DB_TAG_PREPARE)
        on_prepare(c, op, r);
    else if (tag >= 0)
        on_call(c, op, tag, r);
    else
        PQclear(r); /* a Sync, or BEGIN */
    if (++op->pos == op->ntags)
        op_complete(c, op);
}

static void flush_now(db_conn *c);

/* A listener's connection: NOTIFYs are parsed by libpq when it reads
 * results, or, with nothing in flight, when asked whether it is busy;
 * count them and wake the listener. */
static void take_notifies(db_conn *c)
{
    if (aio_list_is_empty(&c->ops))
        (void)PQisBusy(c->pg); /* parses what arrived while idle */
    PGnotify *n;
    uint64_t before = c->notifies;
    while ((n = PQnotifies(c->pg)) != NULL) {
        c->notifies++;
        PQfreemem(n);
    }
    if (c->notifies != before)
        aio_event_set(c->notify);
}

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
    if (!c->broken && c->notify != NULL)
        take_notifies(c);
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

/* libpq 15's PQpipelineSync writes to the socket at once. The shared
 * connection avoids it with one Sync per turn (close_segment); on another
 * connection, when a second op is queued in the same loop turn, the socket
 * is corked and the end-of-turn flush uncorks it: the turn's ops leave as
 * one TCP segment, and a lone op pays no extra system call. */
static void set_cork(db_conn *c, int on)
{
    if (setsockopt(PQsocket(c->pg), IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0)
        c->corked = on;
}

static db_op *op_alloc(size_t n);

/* Ends the open segment: a Sync, and in the op list a marker op that
 * takes its result (nobody waits for it). PQpipelineSync writes out
 * everything queued. */
static void close_segment(db_conn *c)
{
    c->segment_open = false;
    db_op *m = op_alloc(0);
    if (m == NULL) {
        conn_break(c, "out of memory");
        return;
    }
    m->marker = m->abandoned = true;
    m->tags[0] = DB_TAG_SYNC;
    m->ntags = 1;
    m->conn = c;
    aio_list_push_back(&c->ops, &m->link);
    if (!PQpipelineSync(c->pg))
        conn_break(c, PQerrorMessage(c->pg));
}

static void on_flush(aio_deferred *d)
{
    db_conn *c = aio_container_of(d, db_conn, flush);
    if (!c->broken && c->segment_open)
        close_segment(c);
    if (!c->broken)
        flush_now(c);
    if (c->corked && !c->broken)
        set_cork(c, 0);
}

/* ---- sending ---- */

/* One allocation: the op with room for its tags, then the pointer arrays,
 * then the ints; sized for the worst case (every statement and BEGIN to
 * prepare), which costs a few bytes per call and no second pass. */
static db_op *op_alloc(size_t n)
{
    size_t max_prep = n + 1;
    size_t max_tags = 2 * max_prep + 1 + 2 * n;
    size_t head = (sizeof(db_op) + sizeof(int) * max_tags + 7) & ~(size_t)7;
    size_t size = head + sizeof(PGresult *) * (n + max_prep) + sizeof(db_stmt *) * (max_prep + n) + sizeof(int) * n;
    db_op *op = calloc(1, size);
    if (op == NULL)
        return NULL;
    op->results = (PGresult **)(void *)((char *)op + head);
    op->prep_errors = &op->results[n];
    op->prepped = (const db_stmt **)(void *)&op->prep_errors[max_prep];
    op->stmts = &op->prepped[max_prep];
    op->call_rc = (int *)(void *)&op->stmts[n];
    op->ncalls = (int)n;
    op->conn = NULL;
    aio_future_init(&op->done);
    aio_link_init(&op->link);
    return op;
}

/* The statements of the op (and BEGIN) not yet prepared on c, each once,
 * into op->prepped. */
static void collect_prepares(const db_conn *c, db_op *op, const db_call *calls, size_t n, const db_stmt *begin)
{
    if (db__pool_unnamed(c->pool))
        return;
    for (size_t i = 0; i <= n; i++) {
        const db_stmt *s = i < n ? calls[i].stmt : begin;
        if (s == NULL || is_prepared(c, s))
            continue;
        bool dup = false;
        for (int k = 0; k < op->nprep && !dup; k++)
            dup = op->prepped[k] == s;
        if (!dup)
            op->prepped[op->nprep++] = s;
    }
}

/* Queues one statement with its parameters (binary integers, text). */
static bool send_statement(db_conn *c, const db_stmt *s, db_params params, bool unnamed)
{
    assert(params.n == s->nparams && "parameter count differs from the statement's");
    assert(s->nparams <= DB_MAX_PARAMS);
    const char *values[DB_MAX_PARAMS];
    int lengths[DB_MAX_PARAMS], formats[DB_MAX_PARAMS];
    char bin[DB_MAX_PARAMS][8];
    for (int k = 0; k < params.n; k++) {
        const db_param *p = &params.v[k];
        formats[k] = p->type == DB_PARAM_INT4 || p->type == DB_PARAM_INT8;
        switch (p->type) {
        case DB_PARAM_NULL: values[k] = NULL, lengths[k] = 0; break;
        case DB_PARAM_TEXT:
            /* libpq sends text up to its NUL, whatever the length says */
            assert(p->len < 0 || p->v.s[p->len] == '\0');
            values[k] = p->v.s, lengths[k] = p->len < 0 ? (int)strlen(p->v.s) : p->len;
            break;
        case DB_PARAM_BOOL: values[k] = p->v.i ? "t" : "f", lengths[k] = 1; break;
        case DB_PARAM_INT4: {
            uint32_t be = htonl((uint32_t)(int32_t)p->v.i);
            memcpy(bin[k], &be, 4);
            values[k] = bin[k], lengths[k] = 4;
            break;
        }
        case DB_PARAM_INT8: {
            uint64_t be = htobe64((uint64_t)p->v.i);
            memcpy(bin[k], &be, 8);
            values[k] = bin[k], lengths[k] = 8;
            break;
        }
        }
    }
    return unnamed ? PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, values, lengths, formats, 1)
                   : PQsendQueryPrepared(c->pg, s->name, s->nparams, values, lengths, formats, 1);
}

/* Prepares in front, each followed by a Sync so that a failing Prepare
 * cannot abort the next one; then BEGIN (no Sync: if it fails, the first
 * statement is skipped); then the statements, a Sync after each or one at
 * the end (atomic), or none (segment: the turn's Sync ends them; a Flush
 * asks the server for the results meanwhile). Fills op->tags; false when
 * libpq refused to queue. */
static bool send_op(db_conn *c, db_op *op, const db_call *calls, size_t n, const db_stmt *begin, bool atomic,
                    bool segment)
{
    bool unnamed = db__pool_unnamed(c->pool), ok = true;
    int t = 0;
    for (int k = 0; k < op->nprep && ok; k++) {
        ok = PQsendPrepare(c->pg, op->prepped[k]->name, op->prepped[k]->sql, op->prepped[k]->nparams, NULL);
        set_prepared(c, op->prepped[k], true);
        op->tags[t++] = DB_TAG_PREPARE;
        ok = ok && PQpipelineSync(c->pg);
        op->tags[t++] = DB_TAG_SYNC;
    }
    if (begin != NULL && ok) {
        ok = send_statement(c, begin, DB_NO_PARAMS, unnamed);
        op->tags[t++] = DB_TAG_BEGIN;
    }
    for (size_t i = 0; i < n && ok; i++) {
        ok = send_statement(c, calls[i].stmt, calls[i].params, unnamed);
        op->stmts[i] = calls[i].stmt;
        op->tags[t++] = (int)i;
        op->call_rc[i] = -ECANCELED;
        if (!atomic && !segment) {
            ok = ok && PQpipelineSync(c->pg);
            op->tags[t++] = DB_TAG_SYNC;
        }
    }
    if (ok && atomic && !segment) {
        ok = PQpipelineSync(c->pg);
        op->tags[t++] = DB_TAG_SYNC;
    }
    /* the server sends its results at once, not when the segment ends: a
     * statement behind it may run long */
    if (ok && segment)
        ok = PQsendFlushRequest(c->pg);
    assert(!ok || t == op->ntags);
    return ok;
}

bool db__conn_after_sync(const db_conn *c) { return !c->segment_open && !aio_list_is_empty(&c->ops); }

bool db__conn_in_transaction(const db_conn *c)
{
    PGTransactionStatusType st = PQtransactionStatus(c->pg);
    return c->begin != NULL || st == PQTRANS_INTRANS || st == PQTRANS_INERROR;
}

db_op *db__conn_send(db_conn *c, db_call *calls, size_t n, int flags)
{
    assert(n > 0);
    bool atomic = flags & DB_BATCH_ATOMIC;
    const db_stmt *begin = c->begin;
    c->begin = NULL;
    db_op *op = op_alloc(n);
    if (op == NULL)
        return NULL;
    if (c->broken) {
        op->rc = -ECONNRESET;
        aio_future_set(&op->done, op->rc);
        return op;
    }
    collect_prepares(c, op, calls, n, begin);
    bool segment = c->state == DB_CONN_SHARED && begin == NULL;
    /* Prepares go in blocks of their own, and so does anything not of the
     * segment: the open segment ends first */
    if (c->segment_open && (op->nprep > 0 || !segment))
        close_segment(c);
    if (c->broken) {
        op->rc = -ECONNRESET;
        aio_future_set(&op->done, op->rc);
        return op;
    }
    op->ntags = 2 * op->nprep + (begin ? 1 : 0) + (int)n + (segment ? 0 : atomic ? 1 : (int)n);
    op->in_segment = segment;
    if (!segment && aio_link_is_linked(&c->flush.link) && !c->corked)
        set_cork(c, 1); /* not the first op of this turn: hold it for the turn's flush */
    bool ok = send_op(c, op, calls, n, begin, atomic, segment);
    c->segment_open = segment && ok;
    if (aio_list_is_empty(&c->ops))
        c->head_since = aio_turn_now();
    op->conn = c;
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
    bool collateral;
    return db__op_wait_ex(op, calls, n, abandoned, &collateral);
}

int db__op_wait_ex(db_op *op, db_call *calls, size_t n, bool *abandoned, bool *collateral)
{
    *abandoned = false;
    *collateral = false;
    int rc = aio_future_wait(&op->done);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        if (!aio_future_done(&op->done)) {
            op->abandoned = true;
            *abandoned = true;
            if (op->conn != NULL && op->conn->state == DB_CONN_SHARED)
                db__pool_head_check(op->conn);
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
    *collateral = op->collateral;
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
        c->cancel_target = NULL;
    }
    aio_deferred_cancel(&c->flush);
    h2o_timeout_unlink(&c->watchdog);
    if (c->sock != NULL)
        h2o_socket_close(c->sock);
    PQfinish(c->pg);
    free(c);
}

PGTransactionStatusType db_conn_tx_status(const db_conn *c) { return PQtransactionStatus(c->pg); }

const char *db_conn_error(const db_conn *c) { return c->error; }

const char *db_conn_last_sqlstate(const db_conn *c) { return c->sqlstate; }
