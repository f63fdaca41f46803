/* GET /events: the outbox as Server-Sent Events.
 *
 * Each worker has one hub: a task that LISTENs for the events_emit NOTIFY
 * (db/listen.h) and, when woken, reads the new rows of the events table in
 * id order into a ring of the most recent RING events, each already
 * formatted as an SSE frame, then wakes its subscribers. A subscriber is a
 * request task with a cursor (the last id it has passed): it writes what
 * the ring holds after its cursor, a chunk at a time, and
 * server_stream_write awaits until the client has taken each chunk. A
 * subscriber whose cursor is older than the ring (it resumed from far back
 * with Last-Event-ID, or read so slowly that the ring moved on) catches up
 * from the table itself, a batch at a time. So a slow reader costs one
 * chunk of memory, never a growing queue, and misses nothing that is still
 * within the retention.
 *
 * Ids increase in commit order (events_emit, migrations/0006), so "every
 * event after id N" is a stable question and a cursor is all a subscriber
 * needs.
 *
 * Who sees what (the contract's table): administrators, and everybody
 * while authentication is off, every event; a user the events about
 * itself, its orders and accounts, and the transfers that touch its
 * accounts. Each event row names those users (owner_id, other_owner_id:
 * migrations/0011, filled when the event is emitted), the ring keeps them
 * beside each frame, and a subscriber skips the frames of others by
 * comparing ids; its catch-up from the table asks only for its own rows
 * (EVENTS_AFTER_OWNED, the caller's id a parameter). The cursor still
 * moves over the others' events, so a user's stream costs no more than an
 * administrator's.
 *
 * Without LISTEN (DATABASE_POOLER=transaction and no DATABASE_LISTEN_URL)
 * the hub polls every EVENTS_POLL_MS; with it, a sweep every ten times
 * that catches what a lost notification missed. The hub starts with the
 * first subscriber of its worker, and holds its LISTEN connection (from a
 * small pool beside the requests', routes/app.c) from then on. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "base/log.h"
#include "db/listen.h"
#include "routes/events.h"
#include "routes/handler.h"
#include "server/config.h"
#include "server/parse.h"
#include "server/server.h"

#define RING 1024            /* recent events a worker keeps formatted */
#define FETCH 500            /* events read per statement */
#define CHUNK_BYTES 65536    /* a write stops adding events past this */
#define READ_TIMEOUT AIO_SEC(10)
#define LISTEN_RETRY AIO_SEC(5)

static const db_stmt LISTEN_EVENTS = DB_STMT("events_listen", "LISTEN h2pg_events", 0);
#define EVENT_COLUMNS "id, type, created_at, data::text, owner_id, other_owner_id"
static const db_stmt EVENTS_AFTER =
    DB_QUERY("events_after", "SELECT " EVENT_COLUMNS " FROM events WHERE id > $1 ORDER BY id LIMIT $2", 2, "itdtii");
/* The events of user $3 after $1: the first $2 of each owner index,
 * merged (other_owner_id is never owner_id, so no row comes twice). */
static const db_stmt EVENTS_AFTER_OWNED =
    DB_QUERY("events_after_owned",
             "SELECT " EVENT_COLUMNS " FROM events WHERE id IN ("
             "(SELECT id FROM events WHERE owner_id = $3 AND id > $1 ORDER BY id LIMIT $2) UNION ALL "
             "(SELECT id FROM events WHERE other_owner_id = $3 AND id > $1 ORDER BY id LIMIT $2)) "
             "ORDER BY id LIMIT $2",
             3, "itdtii");
static const db_stmt EVENTS_LAST = DB_QUERY("events_last", "SELECT coalesce(max(id), 0)::int8 FROM events", 0, "i");

static const char *const TYPES[] = {"user.created", "order.created", "account.created", "transfer.created"};
#define NTYPES (sizeof(TYPES) / sizeof(TYPES[0]))
#define ALL_TYPES ((1u << NTYPES) - 1)

/* One event as an SSE frame: "id: 7\nevent: user.created\ndata: {...}\n\n". */
struct frame {
    int64_t id;
    unsigned type; /* bit of TYPES, 0 for a type this build does not know */
    int64_t owner, other_owner; /* users who may see it besides administrators; 0: none */
    char *text;
    size_t len;
};

struct sub {
    aio_link link;
    aio_event wake;
};

struct hub {
    bool started, stopping;
    aio_task *task;
    db_pool *listen_pool; /* NULL: poll */
    int64_t poll, heartbeat;
    struct frame ring[RING];
    size_t first, count;
    /* every event with floor < id <= head is in the ring */
    int64_t floor, head;
    aio_list subs;
    size_t nsubs;
};

static _Thread_local struct hub hub;

/* ---- frames ---- */

static unsigned type_bit(const char *type, size_t len)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (strlen(TYPES[i]) == len && memcmp(TYPES[i], type, len) == 0)
            return 1u << i;
    return 0;
}

/* Row i of an EVENTS_AFTER result as a frame; -ENOMEM, or -EINVAL for a
 * row whose data is not JSON (it is jsonb: it cannot happen). */
static int frame_of(const PGresult *res, int i, struct frame *f)
{
    int tlen, dlen;
    const char *type = db_get_text(res, i, 1, &tlen);
    const char *data = db_get_text(res, i, 3, &dlen);
    char ts[32];
    db_format_timestamp(db_get_timestamp(res, i, 2), ts);
    f->id = db_get_int(res, i, 0);
    f->type = type_bit(type, (size_t)tlen);
    f->owner = PQgetisnull(res, i, 4) ? 0 : db_get_int(res, i, 4);
    f->other_owner = PQgetisnull(res, i, 5) ? 0 : db_get_int(res, i, 5);
    json_t *d = json_loadb(data, (size_t)dlen, JSON_DECODE_ANY, NULL);
    if (d == NULL)
        return -EINVAL;
    json_t *ev = json_pack("{s:I, s:s%, s:s, s:o}", "id", (json_int_t)f->id, "type", type, (size_t)tlen, "created_at",
                           ts, "data", d);
    char *js = ev != NULL ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (js == NULL)
        return -ENOMEM;
    /* the event type is one of ours; the JSON has no raw newline (jansson
     * escapes them in strings), so one data line carries it */
    size_t cap = strlen(js) + (size_t)tlen + 64;
    f->text = malloc(cap);
    if (f->text != NULL)
        f->len = (size_t)snprintf(f->text, cap, "id: %lld\nevent: %.*s\ndata: %s\n\n", (long long)f->id, tlen, type, js);
    free(js);
    return f->text != NULL ? 0 : -ENOMEM;
}

/* ---- the hub ---- */

static void wake_all(void)
{
    for (aio_link *l = hub.subs.next; l != &hub.subs; l = l->next)
        aio_event_set(&aio_container_of(l, struct sub, link)->wake);
}

static void ring_push(struct frame *f)
{
    if (hub.count == RING) {
        struct frame *old = &hub.ring[hub.first];
        hub.floor = old->id;
        free(old->text);
        hub.first = (hub.first + 1) % RING;
        hub.count--;
    }
    hub.ring[(hub.first + hub.count) % RING] = *f;
    hub.count++;
    hub.head = f->id;
}

/* Reads every event after head into the ring. */
static int hub_read(void)
{
    for (;;) {
        PGresult *res = NULL;
        aio_timeout scope;
        aio_timeout_open(&scope, READ_TIMEOUT);
        int rc = db_read(&EVENTS_AFTER, DB_PARAMS(DB_INT8(hub.head), DB_INT8(FETCH)), &res);
        aio_timeout_close(&scope);
        int n = rc == 0 ? PQntuples(res) : 0;
        for (int i = 0; i < n && rc == 0; i++) {
            struct frame f;
            if ((rc = frame_of(res, i, &f)) == 0)
                ring_push(&f);
        }
        PQclear(res);
        if (n > 0)
            wake_all();
        if (rc < 0 || n < FETCH)
            return rc;
    }
}

static int hub_run(void *arg)
{
    (void)arg;
    db_listener *listener = NULL;
    int64_t listen_after = 0;
    bool warned = false;
    for (;;) {
        if (listener == NULL && hub.listen_pool != NULL && aio_now() >= listen_after) {
            aio_timeout scope;
            aio_timeout_open(&scope, READ_TIMEOUT);
            int rc = db_listen_open(hub.listen_pool, &LISTEN_EVENTS, &listener);
            bool expired = aio_timeout_close(&scope) < 0;
            if (rc == -ECANCELED && !expired)
                break;
            if (rc < 0) {
                listener = NULL;
                listen_after = aio_now() + LISTEN_RETRY;
                log_warn("events: cannot LISTEN (%s); polling every %lld ms meanwhile", strerror(-rc),
                         (long long)(hub.poll / AIO_MSEC(1)));
            }
        }
        /* after LISTEN is in place, so that nothing committed in between is missed */
        int rc = hub_read();
        if (rc == -ECANCELED && aio_checkpoint() < 0)
            break;
        if (rc < 0 && !warned)
            log_warn("events: cannot read new events: %s", strerror(-rc));
        warned = rc < 0;
        if (listener == NULL) {
            if (aio_sleep(hub.poll) < 0)
                break; /* cancelled */
            continue;
        }
        aio_timeout scope;
        aio_timeout_open(&scope, hub.poll * 10);
        rc = db_listen_wait(listener, NULL);
        bool expired = aio_timeout_close(&scope) < 0;
        if (rc == -ECANCELED && !expired)
            break;
        if (rc == -ECONNRESET) {
            log_warn("events: the LISTEN connection was lost; listening again");
            db_listen_close(listener);
            listener = NULL;
        }
    }
    db_listen_close(listener);
    return 0;
}

/* The first subscriber starts the hub: from the newest event on. */
static int hub_start(void)
{
    if (hub.started)
        return 0;
    PGresult *res = NULL;
    int rc = db_read(&EVENTS_LAST, DB_NO_PARAMS, &res);
    if (rc < 0) {
        PQclear(res);
        return rc;
    }
    if (hub.started) { /* another subscriber started it while we read */
        PQclear(res);
        return 0;
    }
    hub.floor = hub.head = db_get_int(res, 0, 0);
    PQclear(res);
    if ((hub.task = aio_task_spawn(hub_run, NULL)) == NULL)
        return -ENOMEM;
    hub.started = true;
    return 0;
}

void routes_events_configure(db_pool *listen_pool, int64_t poll, int64_t heartbeat)
{
    aio_list_init(&hub.subs);
    hub.listen_pool = listen_pool;
    hub.poll = poll;
    hub.heartbeat = heartbeat;
}

void routes_events_stopping(void)
{
    hub.stopping = true;
    wake_all();
}

void routes_events_stop(void)
{
    if (hub.task != NULL) {
        aio_task_cancel(hub.task);
        aio_task_join(hub.task);
    }
    for (size_t i = 0; i < hub.count; i++)
        free(hub.ring[(hub.first + i) % RING].text);
    hub = (struct hub){0};
}

size_t routes_events_subscribers(void) { return hub.nsubs; }

/* ---- a subscriber ---- */

struct reader {
    server_req *r;
    unsigned types;
    bool all;     /* an administrator, or authentication is off */
    int64_t user; /* else the caller, who sees its own events only */
    int64_t cursor;
    char *buf;
    size_t len, cap;
};

static bool wanted(const struct reader *rd, const struct frame *f)
{
    if (!(f->type & rd->types))
        return false;
    return rd->all || (rd->user > 0 && (f->owner == rd->user || f->other_owner == rd->user));
}

static int add(struct reader *rd, const char *text, size_t len)
{
    if (rd->len + len > rd->cap) {
        size_t cap = (rd->len + len) * 2;
        char *b = realloc(rd->buf, cap);
        if (b == NULL)
            return -ENOMEM;
        rd->buf = b;
        rd->cap = cap;
    }
    memcpy(rd->buf + rd->len, text, len);
    rd->len += len;
    return 0;
}

static int flush(struct reader *rd)
{
    if (rd->len == 0)
        return 0;
    int rc = server_stream_write(rd->r, rd->buf, rd->len);
    rd->len = 0;
    return rc;
}

/* From the table: the cursor is older than the ring. */
static int catch_up(struct reader *rd)
{
    int64_t head = hub.head;
    PGresult *res = NULL;
    aio_timeout scope;
    aio_timeout_open(&scope, READ_TIMEOUT);
    int rc = rd->all ? db_read(&EVENTS_AFTER, DB_PARAMS(DB_INT8(rd->cursor), DB_INT8(FETCH)), &res)
                     : db_read(&EVENTS_AFTER_OWNED,
                               DB_PARAMS(DB_INT8(rd->cursor), DB_INT8(FETCH), DB_INT8(rd->user)), &res);
    aio_timeout_close(&scope);
    int n = rc == 0 ? PQntuples(res) : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct frame f;
        if ((rc = frame_of(res, i, &f)) < 0)
            break;
        if (wanted(rd, &f))
            rc = add(rd, f.text, f.len);
        free(f.text);
        rd->cursor = f.id;
    }
    PQclear(res);
    /* a short batch held everything committed when it ran, the hub's
     * head included (pruned rows can leave the cursor behind it) */
    if (rc == 0 && n < FETCH && rd->cursor < head)
        rd->cursor = head;
    return rc < 0 ? rc : flush(rd);
}

/* From the ring: what follows the cursor, up to a chunk. */
static int from_ring(struct reader *rd)
{
    size_t i = 0, hi = hub.count; /* the first event after the cursor: ids increase along the ring */
    while (i < hi) {
        size_t mid = i + (hi - i) / 2;
        if (hub.ring[(hub.first + mid) % RING].id <= rd->cursor)
            i = mid + 1;
        else
            hi = mid;
    }
    for (; i < hub.count && rd->len < CHUNK_BYTES; i++) {
        const struct frame *f = &hub.ring[(hub.first + i) % RING];
        if (wanted(rd, f) && add(rd, f->text, f->len) < 0)
            return -ENOMEM;
        rd->cursor = f->id;
    }
    return flush(rd); /* awaits: the ring may move on meanwhile */
}

static int stream(struct reader *rd, struct sub *s)
{
    static const char HELLO[] = "retry: 1000\n\n";
    static const char BEAT[] = ": keep-alive\n\n";
    int rc = server_stream_write(rd->r, HELLO, sizeof(HELLO) - 1);
    while (rc == 0 && !hub.stopping) {
        if (rd->cursor < hub.floor) {
            rc = catch_up(rd);
        } else if (rd->cursor < hub.head) {
            rc = from_ring(rd);
        } else {
            aio_event_clear(&s->wake);
            aio_timeout scope;
            aio_timeout_open(&scope, hub.heartbeat);
            rc = aio_event_wait(&s->wake);
            bool expired = aio_timeout_close(&scope) < 0;
            if (expired)
                rc = server_stream_write(rd->r, BEAT, sizeof(BEAT) - 1);
        }
    }
    return rc < 0 ? rc : server_stream_end(rd->r);
}

/* ---- the route ---- */

static int bad_query(server_req *r, const char *field, const char *message)
{
    json_t *errors = json_array();
    routes_error(errors, field, message);
    server_respond_problem(r, 400, "bad query string", errors);
    return SERVER_ANSWERED;
}

/* ?types=a,b as a set of bits; absent or empty: every type. */
static int parse_types(server_req *r, const char *q, size_t qlen, unsigned *types)
{
    char v[256];
    size_t vlen;
    int rc = server_parse_query_param(q, qlen, "types", v, sizeof(v), &vlen);
    *types = ALL_TYPES;
    if (rc == -ENOENT || (rc == 0 && vlen == 0))
        return 0;
    if (rc < 0)
        return bad_query(r, "types", "must be a comma-separated list of event types");
    *types = 0;
    for (const char *p = v; p <= v + vlen;) {
        const char *end = memchr(p, ',', (size_t)(v + vlen - p));
        if (end == NULL)
            end = v + vlen;
        unsigned bit = type_bit(p, (size_t)(end - p));
        if (bit == 0)
            return bad_query(r, "types",
                             "unknown event type: one of user.created, order.created, account.created, "
                             "transfer.created");
        *types |= bit;
        p = end + 1;
    }
    return 0;
}

/* Where to start: Last-Event-ID (a reconnecting EventSource sends it with
 * the original URL, so it wins), else ?after=, else the newest event. */
static int parse_start(server_req *r, const char *q, size_t qlen, int64_t *cursor)
{
    const char *h = server_req_header(r, "last-event-id");
    char v[32];
    size_t vlen;
    if (h != NULL) {
        if (server_parse_int64(h, strlen(h), false, cursor) < 0) {
            json_t *errors = json_array();
            routes_error(errors, "Last-Event-ID", "must be an event id");
            server_respond_problem(r, 400, "bad Last-Event-ID header", errors);
            return SERVER_ANSWERED;
        }
        return 0;
    }
    int rc = server_parse_query_param(q, qlen, "after", v, sizeof(v), &vlen);
    if (rc == 0 && server_parse_int64(v, vlen, false, cursor) == 0)
        return 0;
    if (rc != -ENOENT)
        return bad_query(r, "after", "must be an event id (a non-negative 64-bit integer)");
    PGresult *res = NULL;
    rc = db_read(&EVENTS_LAST, DB_NO_PARAMS, &res);
    if (rc == 0)
        *cursor = db_get_int(res, 0, 0);
    PQclear(res);
    return rc;
}

static int events_stream(server_req *r)
{
    struct reader rd = {.r = r, .all = routes_acts_for_all(r), .user = routes_caller_id(r)};
    size_t qlen;
    const char *q = server_req_query(r, &qlen);
    /* up to the first byte, the request's own deadline */
    aio_timeout scope;
    aio_timeout_open_at(&scope, server_req_deadline(r));
    int rc = parse_types(r, q, qlen, &rd.types);
    if (rc == 0)
        rc = parse_start(r, q, qlen, &rd.cursor);
    if (rc == 0)
        rc = hub_start();
    aio_timeout_close(&scope);
    if (rc < 0)
        return rc;
    struct sub s;
    aio_event_init(&s.wake);
    aio_list_push_back(&hub.subs, &s.link);
    hub.nsubs++;
    server_respond_header(r, "cache-control", "no-cache");
    server_respond_header(r, "x-accel-buffering", "no"); /* nginx: pass each event on at once */
    server_stream_start(r, 200, "text/event-stream");
    rc = stream(&rd, &s);
    aio_link_unlink(&s.link);
    hub.nsubs--;
    free(rd.buf);
    (void)rc; /* once streaming, a failure can only cut the stream short */
    return 0;
}

/* everybody authenticated: each sees what the reader's filter lets through */
ROUTES({.method = "GET", .pattern = "/events", .handler = events_stream, .streaming = true});
