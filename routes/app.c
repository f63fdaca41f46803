/* The service put together: the routes, the middleware, what each worker
 * needs (its database pools, its GET /events hub and webhook dispatcher; on
 * worker 0 also the tasks that number committed events and prune expired
 * idempotency keys and events), the database's and the webhooks' metrics
 * and the migrations, handed to the server as a server_app. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "aio/aio.h"
#include "base/log.h"
#include "db/migrate.h"
#include "db/pool.h"
#include "routes/app.h"
#include "routes/auth.h"
#include "routes/events.h"
#include "routes/events_outbox.h"
#include "routes/handler.h"
#include "routes/idempotency.h"
#include "routes/retention.h"
#include "routes/webhook_dispatch.h"

#define MIGRATE_RETRY_FOR 30 /* seconds to wait for the database at start */

/* ---- each worker's pools ---- */

struct worker_db {
    db_pool *pool;
    db_pool **replicas; /* DATABASE_READ_URL: one pool per replica */
    size_t nreplicas;
    db_pool *listen; /* LISTEN connections: the GET /events hub, the sequencer */
    aio_task *pruner; /* worker 0: expired idempotency keys */
    aio_task *events_pruner; /* worker 0: events past their retention */
    aio_task *deliveries_pruner; /* worker 0: settled webhook deliveries of those events */
    aio_task *sequencer;     /* worker 0: numbers committed events (routes/events_outbox.h) */
    aio_task *webhooks; /* every worker: the webhook dispatcher */
    int worker;
};

static int slice(int total, int n, int i) { return total / n + (i < total % n ? 1 : 0); }

static void worker_stop(void *state)
{
    struct worker_db *d = state;
    routes_auth_worker_stop();
    routes_idempotency_pruner_stop(d->pruner); /* before its pool goes */
    routes_events_outbox_stop(d->events_pruner);
    routes_retention_stop(d->deliveries_pruner);
    routes_events_outbox_stop(d->sequencer);
    routes_events_stop();
    if (d->listen != NULL)
        db_pool_destroy(d->listen);
    routes_webhook_dispatcher_stop(d->webhooks);
    db_pool_set_replicas(NULL, 0);
    for (size_t i = 0; i < d->nreplicas; i++)
        db_pool_destroy(d->replicas[i]);
    free(d->replicas);
    if (d->pool != NULL)
        db_pool_destroy(d->pool);
    free(d);
}

/* Where GET /events and, on worker 0, the outbox's sequencer LISTEN: a
 * small pool of their own (a connection for each, held for good, beside
 * POOL_MAX: what requests can borrow does not shrink), on
 * DATABASE_LISTEN_URL or else DATABASE_URL; behind a transaction pooler
 * without DATABASE_LISTEN_URL they poll (LISTEN needs a session of its
 * own). */
static int events_setup(const server_config *cfg, const db_pool_config *pc, int worker, struct worker_db *d,
                        char *err, size_t errlen)
{
    bool direct = cfg->database_listen_url[0] != '\0';
    if (direct || cfg->database_pooler != SERVER_POOLER_TRANSACTION) {
        db_pool_config lc = *pc;
        lc.conninfo = direct ? cfg->database_listen_url : cfg->database_url;
        lc.min = 0;
        lc.max = worker == 0 ? 2 : 1;
        lc.transaction_pooler = false;
        lc.replica = true; /* not the thread's pool */
        int rc = db_pool_create(&lc, &d->listen, err, errlen);
        if (rc < 0)
            return rc;
    }
    routes_events_configure(d->listen, AIO_MSEC(cfg->events_poll_ms), AIO_MSEC(cfg->events_heartbeat_ms));
    if (worker == 0 &&
        (d->sequencer = routes_events_outbox_sequencer_start(d->listen, AIO_MSEC(cfg->events_poll_ms))) == NULL) {
        snprintf(err, errlen, "cannot start the events sequencer");
        return -ENOMEM;
    }
    return 0;
}

static void worker_stopping(void *state)
{
    (void)state;
    routes_events_stopping();
}

/* Worker 0's pruners: one is enough, the rows are the database's, not a
 * worker's. 0, or -ENOMEM with err set. */
static int pruners_start(struct worker_db *d, char *err, size_t size)
{
    const char *what = NULL;
    if ((d->pruner = routes_idempotency_pruner_start()) == NULL)
        what = "the idempotency-key pruner";
    else if ((d->events_pruner = routes_events_outbox_pruner_start()) == NULL)
        what = "the events pruner";
    else if ((d->deliveries_pruner = routes_webhook_pruner_start()) == NULL)
        what = "the webhook deliveries pruner";
    if (what == NULL)
        return 0;
    snprintf(err, size, "cannot start %s", what);
    return -ENOMEM;
}

static int worker_start(const server_config *cfg, int worker, void **state)
{
    struct worker_db *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    *state = d;
    d->worker = worker;
    int n = cfg->threads;
    db_pool_config pc = {
        .conninfo = cfg->database_url,
        .min = slice(cfg->pool_min, n, worker),
        .max = slice(cfg->pool_max, n, worker) > 0 ? slice(cfg->pool_max, n, worker) : 1,
        .acquire_timeout = AIO_MSEC(cfg->pool_acquire_timeout_ms),
        .connect_timeout = AIO_SEC(5),
        .idle_timeout = AIO_SEC(60),
        .statement_timeout_ms = cfg->statement_timeout_ms,
        .idle_in_transaction_timeout_ms = cfg->idle_in_transaction_timeout_ms,
        .transaction_pooler = cfg->database_pooler == SERVER_POOLER_TRANSACTION,
    };
    if (pc.min > pc.max)
        pc.min = pc.max;
    db_tx_set_default_retries(cfg->tx_max_retries);
    routes_idempotency_set_retention(cfg->idempotency_retention_s);
    routes_events_outbox_set_retention(cfg->events_retention_s);
    char err[512];
    routes_around_configure(cfg);
    int rc = routes_auth_worker_start(cfg, worker);
    if (rc < 0) {
        worker_stop(d);
        *state = NULL;
        return rc;
    }
    rc = db_pool_create(&pc, &d->pool, err, sizeof(err));
    if (rc == 0) {
        rc = db_pool_create_replicas(cfg->database_read_url, &pc, &d->replicas, &d->nreplicas, err, sizeof(err));
        db_pool_set_replicas(d->replicas, d->nreplicas);
    }
    if (rc == 0)
        rc = events_setup(cfg, &pc, worker, d, err, sizeof(err));
    if (rc == 0 && worker == 0)
        rc = pruners_start(d, err, sizeof(err));
    routes_webhook_configure(cfg);
    if (rc == 0 && (d->webhooks = routes_webhook_dispatcher_start(worker == 0)) == NULL) {
        snprintf(err, sizeof(err), "cannot start the webhook dispatcher");
        rc = -ENOMEM;
    }
    if (rc < 0) {
        log_error("worker %d: %s", worker, err);
        worker_stop(d);
        *state = NULL;
    }
    return rc;
}

/* ---- the database's metrics, sampled once a second ---- */

enum {
    M_IDLE, M_IN_USE, M_CONNECTING, M_CLEANING, M_OPEN, M_WAITING, M_ACQUIRED, M_ACQUIRE_TIMEOUTS, M_CONNECT_FAILURES,
    M_CANCELS, M_DISCARDED, M_QUERIES, M_QUERY_ERRORS, M_QUERY_TIMEOUTS, M_QUERY_CANCELLATIONS, M_READ_RERUNS,
    M_EVENT_SUBSCRIBERS, M_WH_ATTEMPTS, M_WH_DELIVERED, M_WH_RETRY, M_WH_FAILED, M_WH_RELEASED, M_WH_OLDEST, M_COUNT
};

#define POOL_CONNS "h2pg_db_pool_connections", "gauge", "Database connections by state (sampled each second)."
static const server_metric_def METRICS[M_COUNT] = {
    [M_IDLE] = {POOL_CONNS, "state=\"idle\""},
    [M_IN_USE] = {POOL_CONNS, "state=\"in_use\""},
    [M_CONNECTING] = {POOL_CONNS, "state=\"connecting\""},
    [M_CLEANING] = {POOL_CONNS, "state=\"cleaning\""},
    [M_OPEN] = {"h2pg_db_pool_open", "gauge", "Open database connections (sampled each second).", NULL},
    [M_WAITING] = {"h2pg_db_pool_waiting", "gauge", "Requests waiting for a pool connection (sampled each second).",
                   NULL},
    [M_ACQUIRED] = {"h2pg_db_pool_acquired_total", "counter", "Connections handed out by the pools.", NULL},
    [M_ACQUIRE_TIMEOUTS] = {"h2pg_db_pool_acquire_timeouts_total", "counter",
                            "Acquires that found no connection within POOL_ACQUIRE_TIMEOUT_MS.", NULL},
    [M_CONNECT_FAILURES] = {"h2pg_db_connect_failures_total", "counter",
                            "Failed attempts to open a database connection.", NULL},
    [M_CANCELS] = {"h2pg_db_cancels_sent_total", "counter",
                   "Cancel requests sent to the server for interrupted statements.", NULL},
    [M_DISCARDED] = {"h2pg_db_connections_discarded_total", "counter",
                     "Connections closed because they could not be cleaned in time.", NULL},
    [M_QUERIES] = {"h2pg_db_queries_total", "counter", "SQL statements sent.", NULL},
    [M_QUERY_ERRORS] = {"h2pg_db_query_errors_total", "counter", "Statement calls that failed, for any reason.", NULL},
    [M_QUERY_TIMEOUTS] = {"h2pg_db_query_timeouts_total", "counter", "Statement calls cut short by a deadline.",
                          NULL},
    [M_QUERY_CANCELLATIONS] = {"h2pg_db_query_cancellations_total", "counter",
                               "Statement calls cut short by cancellation (client gone, sibling failed, shutdown).",
                               NULL},
    [M_READ_RERUNS] = {"h2pg_db_read_reruns_total", "counter",
                       "Reads on a shared connection run again because a cancel meant for another request's "
                       "statement hit them.",
                       NULL},
    [M_EVENT_SUBSCRIBERS] = {"h2pg_events_subscribers", "gauge", "Open GET /events streams (sampled each second).",
                             NULL},
#define WH_OUTCOMES "h2pg_webhook_deliveries_total", "counter", "Webhook delivery attempts by outcome."
    [M_WH_ATTEMPTS] = {"h2pg_webhook_attempts_total", "counter", "Webhook delivery attempts sent.", NULL},
    [M_WH_DELIVERED] = {WH_OUTCOMES, "outcome=\"delivered\""},
    [M_WH_RETRY] = {WH_OUTCOMES, "outcome=\"retry\""},
    [M_WH_FAILED] = {WH_OUTCOMES, "outcome=\"failed\""},
    [M_WH_RELEASED] = {"h2pg_webhook_claims_released_total", "counter",
                       "Claimed webhook deliveries given back unattempted: they waited too long for a lane of their "
                       "webhook.", NULL},
    [M_WH_OLDEST] = {"h2pg_webhook_oldest_pending_seconds", "gauge",
                     "Age of the oldest undelivered webhook event in whole seconds (rounded down): a due retry "
                     "since it fell due, a first attempt in flight or an event not yet fanned out since it was "
                     "written; as worker 0 last saw it (sampled).", NULL},
};

static void worker_sample(void *state)
{
    struct worker_db *d = state;
    db_pool_stats st;
    db_pool_stats_get(d->pool, &st);
    const uint64_t pool[] = {
        [M_IDLE] = st.idle, [M_IN_USE] = st.in_use, [M_CONNECTING] = st.connecting, [M_CLEANING] = st.cleaning,
        [M_OPEN] = st.open, [M_WAITING] = st.waiting, [M_ACQUIRED] = st.acquired,
        [M_ACQUIRE_TIMEOUTS] = st.acquire_timeouts, [M_CONNECT_FAILURES] = st.connect_failures,
        [M_CANCELS] = st.cancels_sent, [M_DISCARDED] = st.closed_dirty,
    };
    for (size_t i = 0; i < sizeof(pool) / sizeof(pool[0]); i++)
        server_metric_set(i, pool[i]);
    db_counters c;
    db_counters_get(&c);
    server_metric_set(M_QUERIES, c.statements);
    server_metric_set(M_QUERY_ERRORS, c.failures);
    server_metric_set(M_QUERY_TIMEOUTS, c.timeouts);
    server_metric_set(M_QUERY_CANCELLATIONS, c.cancellations);
    server_metric_set(M_READ_RERUNS, c.reruns);
    server_metric_set(M_EVENT_SUBSCRIBERS, routes_events_subscribers());
    routes_webhook_counters wh;
    routes_webhook_counters_get(&wh);
    server_metric_set(M_WH_ATTEMPTS, wh.attempts);
    server_metric_set(M_WH_DELIVERED, wh.delivered);
    server_metric_set(M_WH_RETRY, wh.retried);
    server_metric_set(M_WH_FAILED, wh.failed);
    server_metric_set(M_WH_RELEASED, wh.released);
    server_metric_set(M_WH_OLDEST, d->worker == 0 ? wh.oldest_pending_s : 0); /* summed over workers */
}

/* ---- migrations ---- */

/* Applies pending migrations (blocking libpq: no event loop runs yet).
 * A database that is not up yet is retried for a while, as containers
 * often start together. */
static int migrate(const server_config *cfg)
{
    db_migration *loaded = NULL;
    const db_migration *m;
    size_t n;
    char err[1024];
    if (cfg->migrations_dir[0] != '\0') {
        if (db_migrate_load_dir(cfg->migrations_dir, &loaded, &n, err, sizeof(err)) < 0) {
            log_error("migrations: %s", err);
            return 1;
        }
        m = loaded;
    } else {
        m = db_migrate_embedded(&n);
    }
    db_migrate_report rep = {0};
    int rc;
    time_t give_up = time(NULL) + MIGRATE_RETRY_FOR;
    while ((rc = db_migrate_run(cfg->database_url, m, n, &rep, err, sizeof(err))) == -ECONNREFUSED &&
           time(NULL) < give_up) {
        log_warn("migrations: database not reachable yet, retrying: %s", err);
        sleep(1);
    }
    db_migrate_free(loaded, n);
    if (rc < 0) {
        log_error("migrations failed: %s", err);
        return 1;
    }
    log_info("migrations: %d applied, %d already applied", rep.applied, rep.already);
    return 0;
}

int routes_app(server_app *app)
{
    size_t n;
    const server_route_def *routes = routes_all(&n);
    if (routes == NULL)
        return -ENOMEM;
    server_metrics_define(METRICS, M_COUNT);
    *app = (server_app){
        .routes = routes,
        .nroutes = n,
        .around = routes_around,
        .worker_start = worker_start,
        .worker_stopping = worker_stopping,
        .worker_stop = worker_stop,
        .worker_sample = worker_sample,
        .migrate = migrate,
    };
    return 0;
}
