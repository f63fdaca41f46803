#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/conn_int.h"
#include "db/conninfo.h"
#include "base/log.h"

#define BACKOFF_FIRST AIO_MSEC(100)
#define BACKOFF_MAX AIO_SEC(5)
#define DRAIN_TIMEOUT AIO_SEC(5)
#define RECANCEL_EVERY AIO_MSEC(20)
#define MAINTAIN_EVERY AIO_SEC(1)
/* The shared connection's watchdog looks at its head this often: an
 * abandoned head gets its first cancel after it has run this long (a
 * statement that ends by itself in a few ms needs none, and every cancel
 * risks landing on the next statement), then one every RECANCEL_EVERY;
 * past DRAIN_TIMEOUT the connection is retired and closed. */
#define WATCHDOG_MS 5

struct db_pool {
    db_pool_config cfg;
    db_conninfo *ci;
    aio_list idle;    /* LIFO: the most recently used first, so idle ones can age out */
    aio_list all;     /* every open connection */
    aio_list dead;    /* broken while idle: closed at the end of the turn */
    aio_list waiters; /* FIFO */
    db_conn *shared;  /* the connection autocommit reads share, pipelined */
    h2o_timeout_t watchdog_tick; /* its head-of-line watchdog (WATCHDOG_MS) */
    bool shared_opening;
    aio_event shared_ready; /* set whenever no task is opening the shared connection */
    aio_event shared_idle;  /* set when the shared connection has nothing in flight, breaks or is retired */
    size_t nopen, nidle, nconnecting, ncleaning, nwaiting;
    int64_t backoff, backoff_until, backoff_since; /* since: when a failure last set them */
    char last_error[256];
    bool closing;
    int refs; /* the owner plus every live pool task */
    aio_deferred reap;
    aio_event wake;
    aio_task *maintainer;
    db_pool_stats stats;
};

struct waiter {
    aio_link link;
    aio_future f;
    db_conn *conn;
    aio_task *task;
};

static _Thread_local db_pool *current_pool;

db_pool *db_pool_current(void) { return current_pool; }

const db_conninfo *db__pool_conninfo(const db_pool *p) { return p->ci; }

bool db__pool_unnamed(const db_pool *p) { return p->cfg.transaction_pooler; }

static void unref(db_pool *p)
{
    if (--p->refs > 0)
        return;
    aio_deferred_cancel(&p->reap);
    h2o_timeout_dispose(aio_loop_evloop(aio_loop_current()), &p->watchdog_tick);
    db_conninfo_free(p->ci);
    free(p);
}

/* Closes a connection that is on no idle list. */
static void discard(db_pool *p, db_conn *c)
{
    aio_link_unlink(&c->all_link);
    p->nopen--;
    db__conn_close(c);
}

static void fail_waiters(db_pool *p, int rc)
{
    aio_link *l;
    while ((l = aio_list_pop_front(&p->waiters)) != NULL) {
        struct waiter *w = aio_container_of(l, struct waiter, link);
        aio_future_set(&w->f, rc);
    }
}

static void spawn_connector(db_pool *p);
static void on_watchdog(h2o_timeout_entry_t *e);

/* Opens connections for waiters the idle list cannot serve, within max. */
static void maybe_grow(db_pool *p, size_t wanted)
{
    if (p->closing || aio_now() < p->backoff_until)
        return;
    while (p->nconnecting < wanted && p->nopen + p->nconnecting < (size_t)p->cfg.max)
        spawn_connector(p);
}

/* A connection ready for work: to the first waiter, else to the idle list. */
static void checkin(db_pool *p, db_conn *c)
{
    if (c->broken || p->closing) {
        discard(p, c);
        return;
    }
    aio_link *l = aio_list_pop_front(&p->waiters);
    if (l != NULL) {
        struct waiter *w = aio_container_of(l, struct waiter, link);
        c->state = DB_CONN_BORROWED;
        c->holder = w->task;
        w->conn = c;
        p->stats.acquired++;
        aio_future_set(&w->f, 0);
        return;
    }
    c->state = DB_CONN_IDLE;
    c->holder = NULL;
    c->idle_since = aio_now();
    aio_list_push_front(&p->idle, &c->pool_link);
    p->nidle++;
}

/* ---- tasks owned by the pool ---- */

static int connector(void *arg)
{
    db_pool *p = arg;
    int64_t started = aio_now();
    char err[256] = "";
    db_conn *c = NULL;
    aio_timeout scope;
    aio_timeout_open(&scope, p->cfg.connect_timeout);
    int rc = db__conn_open(p, &c, err, sizeof(err));
    if (aio_timeout_close(&scope) < 0 && rc < 0)
        snprintf(err, sizeof(err), "connect timed out after %lld ms", (long long)(p->cfg.connect_timeout / 1000000));
    p->nconnecting--;
    if (rc == 0) {
        p->nopen++;
        aio_list_push_back(&p->all, &c->all_link);
        p->backoff = 0;
        p->last_error[0] = '\0';
        checkin(p, c);
    } else if (!p->closing && rc != -ECANCELED) {
        p->stats.connect_failures++;
        snprintf(p->last_error, sizeof(p->last_error), "%s", err);
        size_t n = strlen(p->last_error);
        while (n > 0 && p->last_error[n - 1] == '\n')
            p->last_error[--n] = '\0';
        /* attempts under way together fail together: one step of back-off for them all */
        if (p->backoff == 0 || started >= p->backoff_since) {
            p->backoff = p->backoff ? (p->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : p->backoff * 2) : BACKOFF_FIRST;
            p->backoff_until = p->backoff_since = aio_now();
            p->backoff_until += p->backoff;
        }
        log_warn("cannot connect to the database (retrying in %lld ms): %s", (long long)(p->backoff / 1000000),
                 p->last_error);
        /* with no live connection nobody would serve the waiters: fail them now */
        if (p->nopen == 0)
            fail_waiters(p, -ECONNREFUSED);
        aio_event_set(&p->wake);
    }
    unref(p);
    return 0;
}

static void spawn_connector(db_pool *p)
{
    aio_task *t = aio_task_spawn(connector, p);
    if (t == NULL)
        return;
    p->nconnecting++;
    p->refs++;
    aio_task_detach(t);
}

static const db_stmt ROLLBACK = DB_STMT("h2pg_rollback", "ROLLBACK", 0);

struct cancel_job {
    PGcancel *cancel;
    char err[256];
};

static int send_cancel(void *arg)
{
    struct cancel_job *j = arg;
    return PQcancel(j->cancel, j->err, sizeof(j->err)) ? 1 : 0;
}

static void cancel_job_free(void *arg, int result)
{
    (void)result;
    struct cancel_job *j = arg;
    PQfreeCancel(j->cancel);
    free(j);
}

struct janitor_arg {
    db_conn *conn;
    bool cancel_on_server;
    bool shared; /* a retired shared connection: others' statements are in it too */
};

static int run_cancel(struct cancel_job *j)
{
    int rc = aio_to_thread_abandonable(send_cancel, j, cancel_job_free);
    if (rc == 0)
        log_warn("could not cancel a query on the server: %s", j->err);
    if (rc >= 0)
        cancel_job_free(j, rc);
    return 0;
}

static struct cancel_job *cancel_job_new(db_pool *p, db_conn *c)
{
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->cancel = PQgetCancel(c->pg)) == NULL) {
        free(j);
        return NULL;
    }
    p->stats.cancels_sent++;
    return j;
}

/* Cancels whatever statement the server runs on c now (libpq 15's PQcancel
 * blocks, so on a helper thread). Awaits. */
static void cancel_on_server(db_pool *p, db_conn *c)
{
    struct cancel_job *j = cancel_job_new(p, c);
    if (j != NULL)
        run_cancel(j);
}

/* The same from a loop callback: a task of its own sends it. The job holds
 * libpq's standalone cancel object, not the connection, which may be
 * closed before the cancel leaves. */
static int cancel_task(void *arg) { return run_cancel(arg); }

static void cancel_in_background(db_pool *p, db_conn *c)
{
    struct cancel_job *j = cancel_job_new(p, c);
    aio_task *t = j != NULL ? aio_task_spawn(cancel_task, j) : NULL;
    if (t != NULL)
        aio_task_detach(t);
    else if (j != NULL)
        cancel_job_free(j, 0);
}

/* Brings a connection back to a clean, idle state, or closes it. */
static int janitor(void *arg)
{
    struct janitor_arg *ja = arg;
    db_conn *c = ja->conn;
    db_pool *p = c->pool;
    bool cancel = ja->cancel_on_server, shared = ja->shared;
    free(ja);
    int rc = 0;
    int64_t give_up = aio_now() + DRAIN_TIMEOUT;
    aio_timeout scope;
    /* PostgreSQL ignores a cancel that arrives between two statements (the
     * next one may not have started yet), so one is sent again every
     * RECANCEL_EVERY while the work is not done. */
    if (shared) {
        /* Other requests' statements share the pipeline: cancel only while an
         * abandoned statement is at its head, i.e. the one the server runs.
         * A cancel that lands just after it finished hits the next one; that
         * request sees 57014 marked collateral and runs again (db.c). */
        db_op *cancelled = NULL;
        int64_t last = 0;
        while (!c->broken && !aio_list_is_empty(&c->ops) && aio_now() < give_up) {
            db_op *head = aio_container_of(c->ops.next, db_op, link);
            if (head->abandoned && (head != cancelled || aio_now() - last >= RECANCEL_EVERY)) {
                cancelled = head;
                c->cancel_target = head;
                c->cancel_at = aio_now();
                last = aio_now();
                cancel_on_server(p, c);
                continue;
            }
            aio_timeout_open(&scope, AIO_MSEC(5));
            aio_event_wait(&c->drained);
            aio_timeout_close(&scope);
        }
    } else if (cancel) {
        while (!c->broken && !aio_list_is_empty(&c->ops) && aio_now() < give_up) {
            cancel_on_server(p, c);
            aio_timeout_open(&scope, RECANCEL_EVERY);
            aio_event_wait(&c->drained);
            aio_timeout_close(&scope);
        }
    }
    aio_timeout_open_at(&scope, give_up);
    rc = aio_event_wait(&c->drained);
    if (rc == 0 && !c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PGresult *r = NULL;
        rc = db_exec(c, &ROLLBACK, DB_NO_PARAMS, &r);
        PQclear(r);
    }
    aio_timeout_close(&scope);
    p->ncleaning--;
    if (rc < 0 || c->broken || PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        p->stats.closed_dirty++;
        discard(p, c);
        maybe_grow(p, p->nwaiting);
    } else {
        checkin(p, c);
    }
    unref(p);
    return 0;
}

static void start_janitor(db_conn *c, bool cancel_on_server, bool shared)
{
    db_pool *p = c->pool;
    c->state = DB_CONN_CLEANING;
    c->holder = NULL;
    struct janitor_arg *ja = malloc(sizeof(*ja));
    aio_task *t = ja ? aio_task_spawn(janitor, ja) : NULL;
    if (t == NULL) {
        free(ja);
        p->stats.closed_dirty++;
        discard(p, c);
        return;
    }
    ja->conn = c;
    ja->cancel_on_server = cancel_on_server;
    ja->shared = shared;
    p->ncleaning++;
    p->refs++;
    aio_task_detach(t);
}

/* Keeps min connections open and lets idle ones above min go. */
static int maintainer(void *arg)
{
    db_pool *p = arg;
    while (!p->closing) {
        maybe_grow(p, (size_t)p->cfg.min > p->nopen ? (size_t)p->cfg.min - p->nopen : 0);
        int64_t now = aio_now();
        aio_link *l = p->idle.prev; /* the oldest idle connection is at the tail */
        while (l != &p->idle && p->nopen > (size_t)p->cfg.min) {
            db_conn *c = aio_container_of(l, db_conn, pool_link);
            l = l->prev;
            if (now - c->idle_since < p->cfg.idle_timeout)
                break;
            aio_link_unlink(&c->pool_link);
            p->nidle--;
            discard(p, c);
        }
        aio_event_clear(&p->wake);
        int64_t next = MAINTAIN_EVERY;
        if (p->backoff_until > now && p->backoff_until - now < next)
            next = p->backoff_until - now;
        aio_timeout scope;
        aio_timeout_open(&scope, next);
        int rc = aio_event_wait(&p->wake);
        aio_timeout_close(&scope);
        if (rc == -ECANCELED)
            break;
    }
    unref(p);
    return 0;
}

static void on_reap(aio_deferred *d)
{
    db_pool *p = aio_container_of(d, db_pool, reap);
    aio_link *l;
    while ((l = aio_list_pop_front(&p->dead)) != NULL)
        discard(p, aio_container_of(l, db_conn, pool_link));
    aio_event_set(&p->wake); /* refill to min */
}

/* ---- hooks from conn.c ---- */

void db__pool_conn_broken(db_conn *c)
{
    db_pool *p = c->pool;
    if (c->state == DB_CONN_IDLE || c->state == DB_CONN_SHARED) {
        /* not inside a callback that still uses c: close it at the end of the turn */
        if (c->state == DB_CONN_IDLE) {
            aio_link_unlink(&c->pool_link);
            p->nidle--;
        }
        if (p->shared == c) {
            p->shared = NULL;
            aio_event_set(&p->shared_idle);
        }
        c->state = DB_CONN_CLEANING;
        aio_list_push_back(&p->dead, &c->pool_link);
        aio_defer(&p->reap);
    }
    /* borrowed ones are closed at release, cleaning ones by their janitor */
}

int db__pool_shared(db_pool *p, db_conn **out)
{
    /* the shared connection is kept open for good: out of a pool of one it
     * would leave nothing for transactions, so such a pool shares none */
    if (p->cfg.max < 2)
        return -EAGAIN;
    if (p->shared != NULL && !p->shared->broken) {
        *out = p->shared;
        return 0;
    }
    if (p->shared_opening) {
        /* another task is getting it: wait for that rather than borrow a
         * connection of our own (a gather's calls must share one) */
        int rc = aio_event_wait(&p->shared_ready);
        if (rc < 0)
            return rc;
        if (p->shared == NULL || p->shared->broken)
            return -EAGAIN;
        *out = p->shared;
        return 0;
    }
    p->shared_opening = true;
    aio_event_clear(&p->shared_ready);
    db_conn *c;
    int rc = db_pool_acquire(p, &c);
    if (rc == 0) {
        c->state = DB_CONN_SHARED;
        c->holder = NULL;
        c->retired = false;
        c->watchdog.cb = on_watchdog;
        c->watchdog_loop = aio_loop_evloop(aio_loop_current());
        p->shared = c; /* before the waiters wake: they take it, not a connection of their own */
        *out = c;
    }
    p->shared_opening = false;
    aio_event_set(&p->shared_ready);
    return rc < 0 ? rc : 0;
}

void db__pool_shared_idle(db_conn *c)
{
    if (c->pool->shared == c)
        aio_event_set(&c->pool->shared_idle);
}

void db__pool_send_held(db_pool *p) { p->stats.sends_held++; }

int db__pool_shared_wait_idle(db_pool *p)
{
    p->stats.sends_held++;
    aio_event_clear(&p->shared_idle);
    return aio_event_wait(&p->shared_idle);
}

/* Stops sharing c: the janitor cancels its abandoned statements as they
 * reach the head, drains it and returns it to the pool, or closes it. */
static void retire_shared(db_conn *c)
{
    db_pool *p = c->pool;
    if (c->state != DB_CONN_SHARED)
        return; /* retired already */
    h2o_timeout_unlink(&c->watchdog);
    if (p->shared == c) {
        p->shared = NULL;
        aio_event_set(&p->shared_idle);
    }
    c->retired = true;
    start_janitor(c, true, true);
}

/* The head-of-line watchdog of the shared connection: an abandoned head
 * that has run WATCHDOG_MS gets a cancel, then one every RECANCEL_EVERY
 * (PostgreSQL drops a cancel that arrives between two statements); a head
 * that would not go for DRAIN_TIMEOUT retires the connection. */
static void on_watchdog(h2o_timeout_entry_t *e)
{
    db_conn *c = aio_container_of(e, db_conn, watchdog);
    if (c->broken || c->state != DB_CONN_SHARED || aio_list_is_empty(&c->ops))
        return;
    db_op *head = aio_container_of(c->ops.next, db_op, link);
    if (!head->abandoned || head->marker)
        return;
    int64_t now = aio_now();
    if (now - c->head_since > DRAIN_TIMEOUT) {
        log_warn("a statement on the shared connection would not end: retiring the connection");
        retire_shared(c);
        return;
    }
    bool again = c->cancel_target == head && now - c->cancel_at >= RECANCEL_EVERY;
    /* h2o's clock is in whole, cached milliseconds: a tick may come up to
     * one early by ours */
    bool overdue = now - c->head_since >= AIO_MSEC(WATCHDOG_MS - 1);
    if ((c->cancel_target != head && overdue) || again) {
        c->cancel_target = head;
        c->cancel_at = now;
        cancel_in_background(c->pool, c);
    }
    h2o_timeout_link(c->watchdog_loop, &c->pool->watchdog_tick, &c->watchdog);
}

void db__pool_head_check(db_conn *c)
{
    if (c->state != DB_CONN_SHARED || c->broken || aio_list_is_empty(&c->ops) || h2o_timeout_is_linked(&c->watchdog))
        return;
    db_op *head = aio_container_of(c->ops.next, db_op, link);
    if (head->abandoned && !head->marker)
        h2o_timeout_link(c->watchdog_loop, &c->pool->watchdog_tick, &c->watchdog);
}

void db__pool_abandoned(db_conn *c)
{
    assert(c->state == DB_CONN_BORROWED);
    start_janitor(c, true, false);
}

/* ---- public ---- */

int db_pool_create(const db_pool_config *cfg, db_pool **out, char *err, size_t errlen)
{
    assert((cfg->replica || current_pool == NULL) && "one primary pool per thread");
    assert(cfg->max >= 1 && cfg->min <= cfg->max);
    db_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->cfg = *cfg;
    db_session_settings s = {.statement_timeout_ms = cfg->statement_timeout_ms,
                             .idle_in_transaction_timeout_ms = cfg->idle_in_transaction_timeout_ms,
                             .jit_off = true};
    int rc = db_conninfo_parse(cfg->conninfo, cfg->transaction_pooler ? NULL : &s, &p->ci, err, errlen);
    p->cfg.conninfo = NULL; /* parsed into p->ci: the caller's string is not kept */
    if (rc < 0) {
        free(p);
        return rc;
    }
    aio_list_init(&p->idle);
    aio_list_init(&p->all);
    aio_list_init(&p->dead);
    aio_list_init(&p->waiters);
    aio_deferred_init(&p->reap, on_reap);
    aio_event_init(&p->wake);
    aio_event_init(&p->shared_ready);
    aio_event_set(&p->shared_ready);
    aio_event_init(&p->shared_idle);
    h2o_timeout_init(aio_loop_evloop(aio_loop_current()), &p->watchdog_tick, WATCHDOG_MS);
    p->refs = 1;
    if ((p->maintainer = aio_task_spawn(maintainer, p)) == NULL) {
        db_conninfo_free(p->ci);
        free(p);
        return -ENOMEM;
    }
    p->refs++;
    aio_task_detach(p->maintainer);
    if (!cfg->replica)
        current_pool = p;
    *out = p;
    return 0;
}

bool db_pool_usable(const db_pool *p) { return !p->closing && !(p->nopen == 0 && aio_now() < p->backoff_until); }

void db_pool_destroy(db_pool *p)
{
    p->closing = true;
    if (p->shared != NULL) {
        db_conn *c = p->shared;
        p->shared = NULL;
        discard(p, c);
    }
    fail_waiters(p, -ECONNREFUSED);
    aio_link *l;
    while ((l = aio_list_pop_front(&p->idle)) != NULL) {
        p->nidle--;
        discard(p, aio_container_of(l, db_conn, pool_link));
    }
    on_reap(&p->reap);
    aio_event_set(&p->wake);
    if (current_pool == p)
        current_pool = NULL;
    unref(p);
}

int db_pool_acquire(db_pool *p, db_conn **out)
{
    int rc = aio_checkpoint();
    if (rc < 0)
        return rc;
    if (p->closing)
        return -ECONNREFUSED;
    if (!aio_list_is_empty(&p->idle) && aio_list_is_empty(&p->waiters)) {
        db_conn *c = aio_container_of(aio_list_pop_front(&p->idle), db_conn, pool_link);
        p->nidle--;
        c->state = DB_CONN_BORROWED;
        c->holder = aio_task_current();
        p->stats.acquired++;
        *out = c;
        return 0;
    }
    /* the database is known to be down: answer now rather than queue */
    if (p->nopen == 0 && aio_now() < p->backoff_until)
        return -ECONNREFUSED;

    struct waiter w = {.conn = NULL, .task = aio_task_current()};
    aio_future_init(&w.f);
    aio_list_push_back(&p->waiters, &w.link);
    p->nwaiting++;
    maybe_grow(p, p->nwaiting > p->nidle ? p->nwaiting - p->nidle : 0);

    aio_timeout scope;
    aio_timeout_open(&scope, p->cfg.acquire_timeout);
    rc = aio_future_wait(&w.f);
    int expired = aio_timeout_close(&scope);
    aio_link_unlink(&w.link);
    p->nwaiting--;
    if (rc == 0 && w.conn != NULL) {
        *out = w.conn;
        return 0;
    }
    if (w.conn != NULL)
        checkin(p, w.conn); /* handed over just as we gave up: pass it on */
    if (rc == -ETIMEDOUT && expired < 0) {
        /* our own acquire timeout, unless the caller's deadline passed too */
        int64_t d = aio_deadline();
        if (d == AIO_NEVER || aio_now() < d) {
            p->stats.acquire_timeouts++;
            return -EBUSY;
        }
    }
    return rc;
}

void db_pool_release(db_conn *c)
{
    db_pool *p = c->pool;
    if (c->state != DB_CONN_BORROWED || c->holder != aio_task_current())
        return; /* an interrupted statement gave it to the janitor already */
    if (c->broken || p->closing) {
        discard(p, c);
        maybe_grow(p, p->nwaiting);
        return;
    }
    if (!aio_list_is_empty(&c->ops) || PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        start_janitor(c, false, false);
        return;
    }
    checkin(p, c);
}

void db_pool_stats_get(const db_pool *p, db_pool_stats *st)
{
    *st = p->stats;
    st->open = p->nopen;
    st->idle = p->nidle;
    st->connecting = p->nconnecting;
    st->waiting = p->nwaiting;
    st->cleaning = p->ncleaning;
    st->in_use = p->nopen - p->nidle - p->ncleaning;
}

const char *db_pool_last_error(const db_pool *p) { return p->last_error; }

/* DATABASE_READ_URL holds one conninfo, or several URIs separated by
 * whitespace. */
static size_t split_replicas(char *list, char **urls, size_t max)
{
    size_t n = 0;
    if (strstr(list, "://") == NULL) {
        urls[n++] = list;
        return n;
    }
    char *save = NULL;
    for (char *tok = strtok_r(list, " \t\n", &save); tok && n < max; tok = strtok_r(NULL, " \t\n", &save))
        urls[n++] = tok;
    return n;
}

int db_pool_create_replicas(const char *list, const db_pool_config *primary, db_pool ***out, size_t *nout, char *err,
                            size_t errlen)
{
    *out = NULL;
    *nout = 0;
    if (list == NULL || *list == '\0')
        return 0;
    char *copy = strdup(list), *urls[DB_MAX_REPLICAS];
    size_t n = copy != NULL ? split_replicas(copy, urls, DB_MAX_REPLICAS) : 0;
    db_pool **pools = calloc(n ? n : 1, sizeof(*pools));
    int rc = copy != NULL && pools != NULL ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        db_pool_config cfg = *primary;
        cfg.conninfo = urls[i];
        cfg.min = 0;
        cfg.replica = true;
        cfg.connect_timeout = AIO_SEC(1); /* a hung replica should leave the rotation soon */
        char why[400];
        if ((rc = db_pool_create(&cfg, &pools[i], why, sizeof(why))) < 0)
            snprintf(err, errlen, "DATABASE_READ_URL entry %zu: %s", i + 1, why);
        else
            (*nout)++;
    }
    free(copy);
    *out = pools;
    return rc;
}
