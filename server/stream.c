/* Streamed responses (chunked): h2o asks for the next chunk with proceed;
 * a writer waits for it, so a slow reader slows the producer instead of
 * growing a buffer. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "server/server_int.h"

static void stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct stream *s = (struct stream *)g;
    if (s->abort) {
        s->abort = false;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR); /* we are in h2o's callback: safe */
        return;
    }
    aio_event_set(&s->ready);
}


static void stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    struct stream *s = (struct stream *)g;
    s->stopped = true;
    s->dropped = true; /* h2o calls stop only for a response it abandons */
    aio_event_set(&s->ready);
}

/* h2o disposes its request: the response went out, or the client is gone. */

void server_stream_start(server_req *r, int status, const char *content_type)
{
    assert(!r->responded && "one response per request");
    r->responded = true;
    r->status = status;
    struct stream *s = base_arena_alloc(&r->arena, sizeof(*s));
    if (s == NULL || r->h2o == NULL) {
        r->finished = true; /* nothing will be sent: writes fail */
        return;
    }
    memset(s, 0, sizeof(*s));
    s->gen.proceed = stream_proceed;
    s->gen.stop = stream_stop;
    s->r = r;
    aio_event_init(&s->ready);
    aio_event_set(&s->ready);
    r->stream = s;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->id, strlen(r->id));
    /* h2o_start_response comes with the first chunk (see perform_send) */
}

/* Awaits h2o's go-ahead for the next chunk, for at most the stall limit
 * (STREAM_STALL_TIMEOUT_MS): a client that pauses is normal, one that stops
 * reading for good must not hold the request (and its transaction)
 * forever. The limit is separate from the request deadline, which covers
 * the time up to the first byte only. */
static int stream_wait(server_req *r)
{
    struct stream *s = r->stream;
    if (s == NULL || r->finished)
        return -ECANCELED;
    aio_timeout stall;
    aio_timeout_open(&stall, server_req_stall_timeout(r));
    int rc = aio_event_wait(&s->ready);
    aio_timeout_close(&stall);
    if (rc < 0)
        return rc;
    if (s->stopped || r->h2o == NULL)
        return -ECANCELED;
    aio_event_clear(&s->ready);
    return 0;
}

int server_stream_write(server_req *r, const char *data, size_t len)
{
    int rc = stream_wait(r);
    if (rc < 0)
        return rc;
    struct stream *s = r->stream;
    if (len > s->cap) {
        char *buf = realloc(s->buf, len);
        if (buf == NULL)
            return -ENOMEM;
        s->buf = buf;
        s->cap = len;
    }
    memcpy(s->buf, data, len);
    r->send_body = h2o_iovec_init(s->buf, len);
    r->bytes += len;
    server__schedule_send(r, SEND_CHUNK);
    return 0;
}

int server_stream_end(server_req *r)
{
    int rc = stream_wait(r);
    if (rc < 0)
        return rc;
    r->finished = true;
    r->stream->ended = true;
    server__schedule_send(r, SEND_FINAL);
    return 0;
}

