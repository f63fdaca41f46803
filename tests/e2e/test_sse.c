/* GET /events, the outbox as Server-Sent Events (API.md, "Events, webhooks
 * and the event stream"; routes/events.c), read the way a browser's
 * EventSource reads it: an HTTP/1.1 stream over a plain socket, decoded
 * here (chunked, then SSE frames), so that nothing tidies up what the
 * server sends.
 *
 * Events are made with events_emit, the function every writer calls, over
 * libpq: that is what the hub sees whoever wrote them. Each tcase has its
 * own database and server. Time bounds are waits for something that must
 * happen (generous, for a sanitizer build on 2 busy cores), except where
 * a bound is the point: LISTEN must beat a poll interval of a minute, and
 * a shutdown must not wait for a grace period of a minute. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

static char *db;
static test_server server;

/* ---- an SSE reader over a raw socket ---- */

typedef struct sse_event {
    long long id;
    char type[32];
    json_t *data; /* the parsed data line */
} sse_event;

typedef struct sse {
    int fd;
    char *raw; /* bytes read, not yet decoded */
    size_t rlen, rcap;
    char *body; /* decoded body, not yet split into frames */
    size_t blen, bcap;
    bool headers_done, ended;
    long status;
    long long chunk_left; /* -1: a size line comes next */
    bool chunk_crlf;      /* the CRLF after a chunk's data comes next */
    sse_event *ev;
    size_t nev, evcap;
    int comments; /* ": ..." lines seen */
    int retries;  /* "retry:" fields seen */
} sse;

static void append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
        ck_assert_ptr_nonnull(*buf);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void consume(char **buf, size_t *len, size_t n)
{
    memmove(*buf, *buf + n, *len - n);
    *len -= n;
    (*buf)[*len] = '\0';
}

/* One frame (the text before a blank line). */
static void on_frame(sse *s, const char *f, size_t n)
{
    sse_event e = {.id = -1};
    bool has_data = false;
    for (const char *line = f; line < f + n;) {
        const char *end = memchr(line, '\n', (size_t)(f + n - line));
        if (end == NULL)
            end = f + n;
        size_t len = (size_t)(end - line);
        if (len > 0 && line[0] == ':') {
            s->comments++;
        } else if (len > 4 && memcmp(line, "id: ", 4) == 0) {
            e.id = strtoll(line + 4, NULL, 10);
        } else if (len > 7 && memcmp(line, "event: ", 7) == 0) {
            ck_assert_uint_lt(len - 7, sizeof(e.type));
            memcpy(e.type, line + 7, len - 7);
        } else if (len > 6 && memcmp(line, "data: ", 6) == 0) {
            json_error_t err;
            e.data = json_loadb(line + 6, len - 6, 0, &err);
            ck_assert_msg(e.data != NULL, "a data line that is not JSON: %.*s (%s)", (int)len, line, err.text);
            has_data = true;
        } else if (len > 6 && memcmp(line, "retry:", 6) == 0) {
            s->retries++;
        } else {
            ck_abort_msg("an SSE line the test does not expect: %.*s", (int)len, line);
        }
        line = end + 1;
    }
    if (!has_data)
        return;
    ck_assert_msg(e.id > 0 && e.type[0] != '\0', "an event without id or type");
    if (s->nev == s->evcap) {
        s->evcap = s->evcap ? s->evcap * 2 : 64;
        s->ev = realloc(s->ev, s->evcap * sizeof(*s->ev));
        ck_assert_ptr_nonnull(s->ev);
    }
    s->ev[s->nev++] = e;
}

static void decode(sse *s)
{
    if (!s->headers_done) {
        char *end = strstr(s->raw, "\r\n\r\n");
        if (end == NULL)
            return;
        ck_assert_msg(sscanf(s->raw, "HTTP/1.1 %ld", &s->status) == 1, "no status line: %s", s->raw);
        *end = '\0';
        if (s->status == 200) {
            ck_assert_msg(strcasestr(s->raw, "\ncontent-type: text/event-stream") != NULL, "headers: %s", s->raw);
            ck_assert_msg(strcasestr(s->raw, "\ntransfer-encoding: chunked") != NULL, "headers: %s", s->raw);
            ck_assert_msg(strcasestr(s->raw, "\ncache-control: no-cache") != NULL, "headers: %s", s->raw);
        }
        consume(&s->raw, &s->rlen, (size_t)(end + 4 - s->raw));
        s->headers_done = true;
        s->chunk_left = -1;
    }
    for (;;) {
        if (s->chunk_crlf) {
            if (s->rlen < 2)
                break;
            ck_assert(s->raw[0] == '\r' && s->raw[1] == '\n');
            consume(&s->raw, &s->rlen, 2);
            s->chunk_crlf = false;
        }
        if (s->chunk_left < 0) {
            char *nl = strstr(s->raw, "\r\n");
            if (nl == NULL)
                break;
            s->chunk_left = strtoll(s->raw, NULL, 16);
            consume(&s->raw, &s->rlen, (size_t)(nl + 2 - s->raw));
            if (s->chunk_left == 0) {
                s->ended = true;
                break;
            }
        }
        size_t n = s->rlen < (size_t)s->chunk_left ? s->rlen : (size_t)s->chunk_left;
        if (n == 0)
            break;
        append(&s->body, &s->blen, &s->bcap, s->raw, n);
        consume(&s->raw, &s->rlen, n);
        if ((s->chunk_left -= (long long)n) == 0) {
            s->chunk_left = -1;
            s->chunk_crlf = true;
        }
    }
    char *sep;
    while (s->body != NULL && (sep = strstr(s->body, "\n\n")) != NULL) {
        on_frame(s, s->body, (size_t)(sep - s->body));
        consume(&s->body, &s->blen, (size_t)(sep + 2 - s->body));
    }
}

/* Opens GET path with the extra header lines (may be NULL). rcvbuf > 0
 * makes a small receive window (a slow reader). */
static void sse_open_rcvbuf(sse *s, const char *path, const char *extra, int rcvbuf)
{
    memset(s, 0, sizeof(*s));
    s->fd = rcvbuf > 0 ? test_raw_connect_rcvbuf(server.port, rcvbuf) : test_raw_connect(server.port);
    char req[1024];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n%s\r\n", path,
                     extra != NULL ? extra : "");
    test_raw_send(s->fd, req, (size_t)n);
}

static void sse_open(sse *s, const char *path, const char *extra) { sse_open_rcvbuf(s, path, extra, 0); }

/* Reads what is there within timeout_ms; false when the peer closed. */
static bool sse_pump(sse *s, int timeout_ms)
{
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return true;
    char buf[65536];
    ssize_t n = read(s->fd, buf, sizeof(buf));
    if (n <= 0)
        return false;
    append(&s->raw, &s->rlen, &s->rcap, buf, (size_t)n);
    decode(s);
    return true;
}

/* Reads until the stream holds want events (or ended / closed); asserts it
 * got there within timeout_ms. */
static void sse_wait_events(sse *s, size_t want, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (s->nev < want && now_ms() < until && !s->ended)
        if (!sse_pump(s, 50))
            break;
    ck_assert_msg(s->nev >= want, "%zu events after %d ms, want %zu", s->nev, timeout_ms, want);
}

static void sse_close(sse *s)
{
    if (s->fd > 0)
        close(s->fd);
    for (size_t i = 0; i < s->nev; i++)
        json_decref(s->ev[i].data);
    free(s->ev);
    free(s->raw);
    free(s->body);
    s->fd = -1;
    s->nev = s->evcap = 0;
    s->ev = NULL;
    s->raw = s->body = NULL;
}

/* ---- events, made as every writer makes them ---- */

static PGconn *pg(void)
{
    static PGconn *c;
    if (c == NULL)
        c = test_pg_connect(db);
    return c;
}

/* Until every committed event is numbered (migrations/0008). */
static void settle(void)
{
    int64_t until = now_ms() + 30000;
    long long pending;
    while ((pending = test_pg_int(pg(), "SELECT count(*) FROM events_pending")) > 0 && now_ms() < until)
        usleep(10000);
    ck_assert_msg(pending == 0, "%lld events still pending after 30 s", pending);
}

/* n events of type, data {"n": i} for i = first.., in one transaction,
 * once the server's sequencer has numbered them (30 s for a loaded
 * machine). */
static void emit(const char *type, int first, int n)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(events_emit('%s', jsonb_build_object('n', g))) FROM generate_series(%d, %d) g", type, first,
             first + n - 1);
    test_pg_int(pg(), sql);
    settle();
}

static long long last_id(void) { return test_pg_int(pg(), "SELECT coalesce(max(id), 0) FROM events"); }

/* The events are exactly ids (after, after + n] of the table, in order,
 * each as the table holds it. */
static void assert_events_follow(const sse *s, size_t from, long long after, size_t n, const char *type)
{
    ck_assert_uint_ge(s->nev, from + n);
    long long prev = after;
    for (size_t i = from; i < from + n; i++) {
        const sse_event *e = &s->ev[i];
        ck_assert_msg(e->id > prev, "event %zu: id %lld after %lld", i, e->id, prev);
        prev = e->id;
        if (type != NULL)
            ck_assert_str_eq(e->type, type);
        ck_assert_int_eq(json_integer_value(json_object_get(e->data, "id")), e->id);
        ck_assert_str_eq(json_string_value(json_object_get(e->data, "type")), e->type);
        const char *ts = json_string_value(json_object_get(e->data, "created_at"));
        ck_assert_msg(ts != NULL && strlen(ts) == 27 && ts[26] == 'Z', "created_at %s", ts ? ts : "(none)");
        ck_assert(json_is_object(json_object_get(e->data, "data")));
    }
    if (type == NULL) { /* every event of the range, none missing */
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE id > %lld AND id <= %lld", after, prev);
        ck_assert_int_eq(test_pg_int(pg(), sql), (long long)n);
    }
}

static void start(const char *const *env)
{
    test_server_start_on_fresh_db(&server, &db, env);
}

static void setup(void)
{
    const char *env[] = {"EVENTS_HEARTBEAT_MS=300", NULL};
    start(env);
}

static void teardown(void) { test_server_stop_and_drop_db(&server, &db); }

/* ---- the stream ---- */

START_TEST(new_events_arrive_in_order_as_they_commit)
{
    sse s;
    sse_open(&s, "/events", NULL);
    sse_pump(&s, 2000);
    ck_assert_int_eq(s.status, 200);
    long long before = last_id();
    /* the stream starts at the newest event: wait for the hello before emitting */
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    emit("user.created", 1, 30);
    emit("order.created", 1, 20);
    sse_wait_events(&s, 50, 20000);
    assert_events_follow(&s, 0, before, 50, NULL);
    ck_assert_str_eq(s.ev[0].type, "user.created");
    ck_assert_str_eq(s.ev[49].type, "order.created");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(s.ev[29].data, "data"), "n")), 30);
    sse_close(&s);
}
END_TEST

START_TEST(the_types_filter_passes_only_those_types)
{
    long long before = last_id();
    sse s;
    sse_open(&s, "/events?types=order.created,transfer.created&after=0", NULL);
    emit("user.created", 1, 5);
    emit("order.created", 1, 3);
    emit("account.created", 1, 5);
    emit("transfer.created", 1, 2);
    sse_wait_events(&s, 5, 20000);
    sse_pump(&s, 300); /* nothing else may follow */
    ck_assert_uint_eq(s.nev, 5);
    for (size_t i = 0; i < 3; i++)
        ck_assert_str_eq(s.ev[i].type, "order.created");
    for (size_t i = 3; i < 5; i++)
        ck_assert_str_eq(s.ev[i].type, "transfer.created");
    ck_assert(s.ev[0].id > before);
    sse_close(&s);
}
END_TEST

/* Older than the ring of recent events (1,024 per worker): these come
 * from the table, then the stream goes live. */
START_TEST(resuming_from_far_back_gets_every_stored_event_then_live_ones)
{
    long long first = last_id();
    emit("user.created", 1, 1500);
    long long mid = last_id();
    sse s;
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Last-Event-ID: %lld\r\n", first); /* wins over after=0 */
    sse_open(&s, "/events?after=0", hdr);
    sse_wait_events(&s, 1500, 30000);
    assert_events_follow(&s, 0, first, 1500, "user.created");
    ck_assert_int_eq(s.ev[1499].id, mid);
    emit("account.created", 1, 10);
    sse_wait_events(&s, 1510, 20000);
    assert_events_follow(&s, 0, first, 1510, NULL);
    sse_close(&s);
}
END_TEST

/* What a reconnecting EventSource does: Last-Event-ID of the last event
 * it saw; what committed while it was away comes first, nothing twice. */
START_TEST(a_client_that_disconnects_and_resumes_misses_nothing)
{
    long long before = last_id();
    sse s;
    sse_open(&s, "/events", NULL);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    emit("user.created", 1, 10);
    sse_wait_events(&s, 10, 20000);
    long long seen = s.ev[9].id;
    sse_close(&s);
    emit("user.created", 11, 25); /* while it is away */
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Last-Event-ID: %lld\r\n", seen);
    sse_open(&s, "/events", hdr);
    emit("user.created", 36, 5); /* and after it is back */
    sse_wait_events(&s, 30, 20000);
    assert_events_follow(&s, 0, seen, 30, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(s.ev[0].data, "data"), "n")), 11);
    ck_assert_int_eq(s.ev[29].id, before + 40);
    sse_pump(&s, 300);
    ck_assert_uint_eq(s.nev, 30);
    sse_close(&s);
}
END_TEST

START_TEST(an_idle_stream_gets_heartbeats)
{
    sse s;
    sse_open(&s, "/events", NULL);
    int64_t until = now_ms() + 20000;
    while (s.comments < 3 && now_ms() < until)
        ck_assert(sse_pump(&s, 100));
    /* EVENTS_HEARTBEAT_MS=300: three within 20 s even on a slow machine;
     * without heartbeats there are none at all */
    ck_assert_int_ge(s.comments, 3);
    ck_assert_uint_eq(s.nev, 0);
    sse_close(&s);
}
END_TEST

/* A reader that stops reading while 20,000 events (about 9 MB, more than
 * the socket buffers hold) go by: the ring of recent events moves on past
 * its cursor; when it reads again it gets every one, in order, the older
 * ones from the table. */
START_TEST(a_reader_that_pauses_catches_up_without_a_gap)
{
    long long before = last_id();
    sse s;
    sse_open_rcvbuf(&s, "/events", NULL, 4096);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    for (int i = 0; i < 40; i++) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(events_emit('order.created', jsonb_build_object('n', g, 'pad', repeat('x', 300)))) "
                 "FROM generate_series(%d, %d) g",
                 i * 500 + 1, i * 500 + 500);
        test_pg_int(pg(), sql);
    }
    settle();
    sleep(1); /* not reading */
    sse_wait_events(&s, 20000, 90000);
    assert_events_follow(&s, 0, before, 20000, NULL);
    sse_close(&s);
}
END_TEST

START_TEST(bad_parameters_are_400_problems)
{
    const char *paths[] = {"/events?types=user.created,nope", "/events?types=user.created,", "/events?after=-1",
                           "/events?after=x", "/events?after=99999999999999999999"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_response r;
        char url[256];
        snprintf(url, sizeof(url), "%s%s", server.base_url, paths[i]);
        test_http(&r, "GET", url, NULL, 0, NULL);
        test_assert_problem(&r, 400);
        test_response_free(&r);
    }
    test_response r;
    char url[256];
    snprintf(url, sizeof(url), "%s/events", server.base_url);
    const char *hdr[] = {"Last-Event-ID: seven", NULL};
    test_http(&r, "GET", url, NULL, 0, hdr);
    test_assert_problem(&r, 400);
    test_response_free(&r);
}
END_TEST

/* The hub LISTENs for numbered events, and worker 0's sequencer for
 * committed ones, each on a connection of its own; when both are killed,
 * both listen again, and events keep coming (EVENTS_POLL_MS=60000 here: a
 * sweep would take ten minutes, so only LISTEN can bring them). */
#define LISTENERS "SELECT count(%s) FROM pg_stat_activity WHERE datname = current_database() " \
                  "AND query IN ('LISTEN h2pg_events', 'LISTEN h2pg_outbox')"
START_TEST(the_listeners_listen_again_after_their_connections_are_killed)
{
    long long before = last_id();
    sse s;
    sse_open(&s, "/events", NULL);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    emit("user.created", 1, 1);
    sse_wait_events(&s, 1, 20000);
    /* the sequencer, and the hub of the worker that serves the stream (a
     * hub starts with its worker's first subscriber) */
    const char *outbox = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND query = 'LISTEN h2pg_outbox'";
    const char *hubs = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND query = 'LISTEN h2pg_events'";
    int64_t until = now_ms() + 20000;
    while ((test_pg_int(pg(), outbox) < 1 || test_pg_int(pg(), hubs) < 1) && now_ms() < until)
        usleep(50000);
    ck_assert_int_eq(test_pg_int(pg(), outbox), 1);
    long long listening = test_pg_int(pg(), hubs) + 1;
    char sql[256];
    snprintf(sql, sizeof(sql), LISTENERS, "pg_terminate_backend(pid)");
    ck_assert_int_eq(test_pg_int(pg(), sql), listening);
    /* both listen again (at once: the loss wakes them) */
    until = now_ms() + 20000;
    while ((test_pg_int(pg(), outbox) < 1 || test_pg_int(pg(), hubs) < 1) && now_ms() < until)
        usleep(50000);
    ck_assert_msg(test_pg_int(pg(), outbox) == 1, "the sequencer did not LISTEN again");
    ck_assert_msg(test_pg_int(pg(), hubs) >= 1, "the hub did not LISTEN again");
    /* and events come through them: each emit waits for the sequencer,
     * which only its new LISTEN can wake; the stream gets each at once */
    for (int n = 2; n <= 3; n++) {
        emit("user.created", n, 1);
        until = now_ms() + 20000;
        while (s.nev < (size_t)n && now_ms() < until)
            sse_pump(&s, 100);
    }
    ck_assert_msg(s.nev >= 3, "%zu of 3 events after the LISTEN connections were killed", s.nev);
    assert_events_follow(&s, 0, before, 3, NULL);
    sse_close(&s);
}
END_TEST

/* Behind a transaction pooler (DATABASE_POOLER=transaction) without
 * DATABASE_LISTEN_URL nothing can LISTEN: the hub and the sequencer poll
 * (every 100 ms here) and events still come. */
START_TEST(without_listen_the_hub_polls)
{
    long long before = last_id();
    sse s;
    sse_open(&s, "/events", NULL);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    emit("account.created", 1, 7);
    sse_wait_events(&s, 7, 20000);
    assert_events_follow(&s, 0, before, 7, "account.created");
    ck_assert_int_eq(test_pg_int(pg(), "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND query LIKE 'LISTEN%'"),
                     0);
    test_response r;
    char url[256];
    snprintf(url, sizeof(url), "%s/users?limit=1", server.base_url);
    test_http(&r, "GET", url, NULL, 0, NULL);
    ck_assert_int_eq(r.status, 200);
    test_response_free(&r);
    sse_close(&s);
}
END_TEST

/* DATABASE_LISTEN_URL: where to LISTEN when DATABASE_URL is a
 * transaction-pooling PgBouncer (here both reach PostgreSQL itself). */
START_TEST(database_listen_url_gives_the_hub_its_own_connection)
{
    long long before = last_id();
    sse s;
    sse_open(&s, "/events", NULL);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    emit("transfer.created", 1, 4);
    /* EVENTS_POLL_MS=60000: within 20 s only LISTEN can have brought them */
    sse_wait_events(&s, 4, 20000);
    assert_events_follow(&s, 0, before, 4, "transfer.created");
    sse_close(&s);
}
END_TEST

/* 1,000 streams at once, over two workers: each gets every event. */
#define MANY 1000
START_TEST(a_thousand_subscribers_each_get_every_event)
{
    static sse subs[MANY];
    long long before = last_id();
    for (int i = 0; i < MANY; i++)
        sse_open(&subs[i], "/events", NULL);
    int64_t until = now_ms() + 60000;
    int ready = 0;
    while (ready < MANY && now_ms() < until) {
        ready = 0;
        for (int i = 0; i < MANY; i++) {
            if (subs[i].retries == 0)
                sse_pump(&subs[i], 0);
            ready += subs[i].retries > 0;
        }
        usleep(10000);
    }
    ck_assert_int_eq(ready, MANY);
    emit("user.created", 1, 20);
    until = now_ms() + 60000;
    int done = 0;
    while (done < MANY && now_ms() < until) {
        struct pollfd p[MANY];
        for (int i = 0; i < MANY; i++)
            p[i] = (struct pollfd){.fd = subs[i].nev >= 20 ? -1 : subs[i].fd, .events = POLLIN};
        poll(p, MANY, 100);
        done = 0;
        for (int i = 0; i < MANY; i++) {
            if (p[i].revents & POLLIN)
                ck_assert(sse_pump(&subs[i], 0));
            done += subs[i].nev >= 20;
        }
    }
    ck_assert_msg(done == MANY, "%d of %d subscribers got all 20 events", done, MANY);
    for (int i = 0; i < MANY; i++) {
        assert_events_follow(&subs[i], 0, before, 20, "user.created");
        sse_close(&subs[i]);
    }
}
END_TEST

/* SIGTERM ends every stream (clients reconnect elsewhere with
 * Last-Event-ID) instead of holding the shutdown for its grace period. */
START_TEST(a_shutdown_ends_open_streams_at_once)
{
    sse s;
    sse_open(&s, "/events", NULL);
    while (s.retries == 0)
        ck_assert(sse_pump(&s, 100));
    int64_t t0 = now_ms();
    kill(server.pid, SIGTERM);
    while (!s.ended && now_ms() - t0 < 30000)
        if (!sse_pump(&s, 100))
            break;
    ck_assert_msg(s.ended, "the stream did not end with a last chunk");
    ck_assert_int_eq(test_server_stop(&server), 0);
    /* SHUTDOWN_GRACE_MS=60000: a held stream would have kept it a minute */
    ck_assert_int_lt(now_ms() - t0, 30000);
    sse_close(&s);
}
END_TEST

static void listen_lost_setup(void)
{
    const char *env[] = {"EVENTS_POLL_MS=60000", NULL};
    start(env);
}

static void poll_setup(void)
{
    const char *env[] = {"DATABASE_POOLER=transaction", "EVENTS_POLL_MS=100", NULL};
    start(env);
}

static void listen_url_setup(void)
{
    db = test_pg_create_db();
    char url[1024];
    snprintf(url, sizeof(url), "DATABASE_LISTEN_URL=%s", db);
    const char *env[] = {url, "DATABASE_POOLER=transaction", "EVENTS_POLL_MS=60000", NULL};
    test_server_start(&server, db, env);
}

static void many_setup(void)
{
    db = test_pg_create_db();
    test_server_options opts = {.nofile = 8192};
    test_server_start_with(&server, db, NULL, &opts);
    struct rlimit rl = {8192, 8192};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void shutdown_setup(void)
{
    const char *env[] = {"SHUTDOWN_GRACE_MS=60000", NULL};
    start(env);
}

static TCase *tcase(const char *name, void (*su)(void), int timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, su, teardown);
    tcase_set_timeout(tc, timeout);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("sse");
    TCase *tc = tcase("stream", setup, 300);
    tcase_add_test(tc, new_events_arrive_in_order_as_they_commit);
    tcase_add_test(tc, the_types_filter_passes_only_those_types);
    tcase_add_test(tc, resuming_from_far_back_gets_every_stored_event_then_live_ones);
    tcase_add_test(tc, a_client_that_disconnects_and_resumes_misses_nothing);
    tcase_add_test(tc, an_idle_stream_gets_heartbeats);
    tcase_add_test(tc, a_reader_that_pauses_catches_up_without_a_gap);
    tcase_add_test(tc, bad_parameters_are_400_problems);
    suite_add_tcase(s, tc);
    tc = tcase("listen", listen_lost_setup, 120);
    tcase_add_test(tc, the_listeners_listen_again_after_their_connections_are_killed);
    suite_add_tcase(s, tc);
    tc = tcase("poll", poll_setup, 120);
    tcase_add_test(tc, without_listen_the_hub_polls);
    suite_add_tcase(s, tc);
    tc = tcase("listen_url", listen_url_setup, 120);
    tcase_add_test(tc, database_listen_url_gives_the_hub_its_own_connection);
    suite_add_tcase(s, tc);
    tc = tcase("many", many_setup, 300);
    tcase_add_test(tc, a_thousand_subscribers_each_get_every_event);
    suite_add_tcase(s, tc);
    tc = tcase("shutdown", shutdown_setup, 120);
    tcase_add_test(tc, a_shutdown_ends_open_streams_at_once);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
