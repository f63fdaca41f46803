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
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/tx.h"
#include "routes/common.h"
#include "routes/routes.h"
#include "server/aio/aio.h"
#include "server/query.h"

#define BATCH 1000

static const db_stmt DECLARE =
    DB_STMT("export_declare",
            "DECLARE export_orders NO SCROLL CURSOR FOR SELECT " ROUTES_ORDER_COLUMNS
            " FROM orders WHERE id > $1 ORDER BY id",
            1);
static const db_stmt FETCH = DB_STMT("export_fetch", "FETCH 1000 FROM export_orders", 0);

struct export {
    server_req *r;
    int64_t after;
    char *line;  /* the batch being formatted */
    size_t cap;
    bool started;
    PGresult *failed;
};

/* Formats a batch as NDJSON into e->line; returns its length or -ENOMEM. */
static ssize_t format_batch(struct export *e, const PGresult *res)
{
    size_t len = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *o = routes_order_json(res, i);
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

static int export_body(db_conn *tx, void *arg)
{
    struct export *e = arg;
    server_req *r = e->r;
    uint64_t b;
    db_param p[] = {db_int8(&b, e->after)};
    /* until the first batch: the request's own deadline */
    aio_timeout scope;
    aio_timeout_open_at(&scope, server_req_deadline(r));
    db_call calls[] = {{.stmt = &DECLARE, .params = p}, {.stmt = &FETCH}};
    int rc = db_exec_batch(tx, calls, 2, DB_BATCH_ATOMIC);
    aio_timeout_close(&scope);
    if (rc < 0) {
        e->failed = calls[0].rc == -EREMOTEIO ? calls[0].result : calls[1].result;
        PQclear(calls[0].rc == -EREMOTEIO ? calls[1].result : calls[0].result);
        return rc;
    }
    PQclear(calls[0].result);
    PGresult *batch = calls[1].result;
    server_stream_start(r, 200, "application/x-ndjson");
    e->started = true;
    for (;;) {
        int rows = PQntuples(batch);
        ssize_t len = rows > 0 ? format_batch(e, batch) : 0;
        PQclear(batch);
        batch = NULL;
        if (len < 0)
            return (int)len;
        if (len > 0)
            rc = server_stream_write(r, e->line, (size_t)len); /* under the stall limit */
        if (rc == 0 && rows == BATCH) {
            aio_timeout_open(&scope, server_req_timeout(r));
            rc = db_exec(tx, &FETCH, NULL, &batch);
            aio_timeout_close(&scope);
        }
        if (rc < 0) {
            if (rc == -EREMOTEIO)
                e->failed = batch;
            else
                PQclear(batch);
            return rc;
        }
        if (rows < BATCH)
            break;
    }
    return server_stream_end(r);
}

static int export_orders(server_req *r)
{
    struct export e = {.r = r};
    size_t qlen, vlen;
    const char *q = server_req_query(r, &qlen);
    char v[32];
    int rc = server_query_get(q, qlen, "after", v, sizeof(v), &vlen);
    if (rc != -ENOENT && (rc < 0 || server_parse_id(v, vlen, &e.after) < 0)) {
        json_t *errors = json_array();
        routes_error(errors, "after", "must be a positive 64-bit integer id");
        server_respond_problem(r, 400, "bad query string", errors);
        return 0;
    }
    rc = db_tx_run(&(db_tx_options){.isolation = DB_REPEATABLE_READ, .read_only = true, .max_retries = 0},
                   export_body, &e, NULL, NULL);
    if (rc < 0 && !e.started)
        server_respond_db_error(r, rc, e.failed, 0);
    /* once streaming, a failure can only cut the body short (see server_stream_start) */
    PQclear(e.failed);
    free(e.line);
    return 0;
}

static const server_route_def table[] = {
    {"GET", "/export/orders", export_orders, false, true},
};

const server_route_def *routes_export(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
