/* GET /export/orders?after=ID: every order with a larger id, ascending, one
 * JSON object per line (NDJSON), streamed as PostgreSQL produces them.
 *
 * A cursor in a read-only REPEATABLE READ transaction (one consistent
 * snapshot) is fetched a batch at a time, and the next batch is fetched only
 * once the client has taken the previous one (server_stream_write awaits
 * that), so memory stays flat whatever the table size and a slow reader
 * slows the query down instead of filling a buffer. A client that goes away
 * cancels the task, and with it the statement on the server.
 *
 * Deadlines: the request deadline covers everything up to the first byte;
 * after that each FETCH gets REQUEST_TIMEOUT_MS, and each wait for the
 * client to take a batch gets STREAM_STALL_TIMEOUT_MS (server_stream_write),
 * so an export runs as long as the client keeps reading, pauses included.
 * The transaction sits idle while the client pauses: PostgreSQL's own
 * backstop (IDLE_IN_TRANSACTION_TIMEOUT_MS) stays above the stall limit by
 * default, and ends such a session first when configured below it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "routes/handler.h"
#include "server/config.h"
#include "server/parse.h"

#define BATCH 1000

static const db_stmt DECLARE =
    DB_STMT("export_declare",
            "DECLARE export_orders NO SCROLL CURSOR FOR SELECT id, user_id, item, quantity, price_cents, "
            "total_cents, created_at FROM orders WHERE id > $1 ORDER BY id",
            1);
static const db_stmt FETCH = DB_QUERY("export_fetch", "FETCH 1000 FROM export_orders", 0, "iitiiid");

/* Every export holds a database connection for as long as its reader
 * takes: at most EXPORT_MAX_CONCURRENT at once (a quarter of POOL_MAX by
 * default), split over the threads, so that readers who never read cannot
 * take the pool from every other request. One more gets 503 at once. */
static _Thread_local aio_sem slots;
static _Thread_local bool slots_ready;

static aio_sem *export_slots(server_req *r)
{
    if (!slots_ready) {
        const server_config *cfg = server_req_config(r);
        int total = cfg->export_max_concurrent > 0 ? cfg->export_max_concurrent : cfg->pool_max / 4;
        int mine = total / cfg->threads + (server_req_worker(r) < total % cfg->threads ? 1 : 0);
        aio_sem_init(&slots, mine > 0 ? (size_t)mine : 1);
        slots_ready = true;
    }
    return &slots;
}

struct export {
    server_req *r;
    int64_t after;
    char *line; /* the batch being formatted */
    size_t cap;
    bool started;
};

/* Formats a batch as NDJSON into e->line; returns its length or -ENOMEM. */
static ssize_t format_batch(struct export *e, const PGresult *res)
{
    size_t len = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *o = db_row_json(res, i);
        size_t need = json_dumpb(o, NULL, 0, JSON_COMPACT) + 1;
        if (len + need > e->cap) {
            size_t cap = (len + need) * 2;
            char *line = realloc(e->line, cap);
            if (line == NULL) {
                json_decref(o);
                return -ENOMEM;
            }
            e->line = line;
            e->cap = cap;
        }
        len += json_dumpb(o, e->line + len, e->cap - len, JSON_COMPACT);
        e->line[len++] = '\n';
        json_decref(o);
    }
    return (ssize_t)len;
}

/* The cursor and its first batch, under the request's own deadline. The
 * batches' results are freed one by one (a million rows must not pile up
 * in the request's arena). */
static int open_cursor(struct export *e, db_conn *tx, PGresult **first)
{
    db_call calls[] = {DB_CALL(&DECLARE, DB_INT8(e->after)), DB_CALL0(&FETCH)};
    aio_timeout scope;
    aio_timeout_open_at(&scope, server_req_deadline(e->r));
    int rc = db_exec_batch(tx, calls, 2, DB_BATCH_ATOMIC);
    aio_timeout_close(&scope);
    *first = calls[1].result;
    calls[1].result = NULL;
    db_calls_clear(calls, 2);
    return rc;
}

static int export_body(db_conn *tx, void *arg)
{
    struct export *e = arg;
    PGresult *batch;
    int rc = open_cursor(e, tx, &batch);
    if (rc < 0) {
        PQclear(batch);
        return rc;
    }
    server_stream_start(e->r, 200, "application/x-ndjson");
    e->started = true;
    for (int rows = BATCH; rc == 0 && rows == BATCH;) {
        rows = PQntuples(batch);
        ssize_t len = rows > 0 ? format_batch(e, batch) : 0;
        PQclear(batch);
        batch = NULL;
        rc = len < 0 ? (int)len : len > 0 ? server_stream_write(e->r, e->line, (size_t)len) : 0;
        if (rc == 0 && rows == BATCH) {
            aio_timeout scope;
            aio_timeout_open(&scope, server_req_timeout(e->r));
            rc = db_exec(tx, &FETCH, DB_NO_PARAMS, &batch);
            aio_timeout_close(&scope);
        }
    }
    PQclear(batch);
    return rc < 0 ? rc : server_stream_end(e->r);
}

static int export_orders(server_req *r)
{
    struct export e = {.r = r};
    size_t qlen, vlen;
    const char *q = server_req_query(r, &qlen);
    char v[32];
    int rc = server_parse_query_param(q, qlen, "after", v, sizeof(v), &vlen);
    if (rc != -ENOENT && (rc < 0 || server_parse_id(v, vlen, &e.after) < 0)) {
        json_t *errors = json_array();
        routes_error(errors, "after", "must be a positive 64-bit integer id");
        server_respond_problem(r, 400, "bad query string", errors);
        return SERVER_ANSWERED;
    }
    aio_sem *sem = export_slots(r);
    if (aio_sem_try_acquire(sem) < 0) {
        server_respond_problem(r, 503, "too many exports are running; try again shortly", NULL);
        return SERVER_ANSWERED;
    }
    rc = db_tx_run(&(db_tx_options){.isolation = DB_REPEATABLE_READ, .read_only = true, .max_retries = 0},
                   export_body, &e, NULL, NULL);
    aio_sem_release(sem);
    free(e.line);
    /* once streaming, a failure can only cut the body short (see server_stream_start) */
    return e.started ? 0 : rc;
}

/* every user's orders: administrators only */
ROUTES({.method = "GET", .pattern = "/export/orders", .handler = export_orders, .streaming = true, .admin = true});
