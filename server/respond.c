/* Answering: headers, a whole body, JSON, problems. h2o must only be asked
 * to write from inside its own loop phase, so a task queues what to send
 * and h2o's timeouts send it (server__schedule_send). */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "server/server_int.h"

const char *server_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}


/* ---- handing answers to h2o ---- */

static void perform_send(server_req *r)
{
    int action = r->send_action;
    r->send_action = SEND_NONE;
    h2o_req_t *req = r->h2o;
    if (req == NULL || action == SEND_NONE)
        return;
    if (action == SEND_INLINE) {
        static h2o_generator_t inline_gen = {NULL, NULL};
        h2o_start_response(req, &inline_gen);
        if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
            h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL); /* headers only, Content-Length kept */
        else
            h2o_send(req, &r->send_body, 1, H2O_SEND_STATE_FINAL);
        return;
    }
    struct stream *s = r->stream;
    if (!s->started) {
        s->started = true;
        h2o_start_response(req, &s->gen);
    }
    if (action == SEND_CHUNK)
        h2o_send(req, &r->send_body, 1, H2O_SEND_STATE_IN_PROGRESS);
    else
        h2o_send(req, NULL, 0, action == SEND_FINAL ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR);
}


void server__on_send_entry(h2o_timeout_entry_t *e)
{
    server_req *r = aio_container_of(e, server_req, send_entry);
    perform_send(r);
    server__req_unref(r);
}

/* Answers sent at once from h2o's callbacks per loop turn. h2o takes a
 * pipelined request as soon as the previous answer is written, within the
 * same turn: answered at once without a limit, a connection with thousands
 * of requests queued would hold the thread until they are all through, and
 * every other connection of the worker would wait (seconds, measured). */
#define SENDS_PER_TURN 256

static void on_turn_end(aio_deferred *d) { aio_container_of(d, server_worker, turn_end)->turn_sends = 0; }

void server__sends_init(server_worker *w)
{
    aio_deferred_init(&w->turn_end, on_turn_end);
    h2o_timeout_init(w->ctx.loop, &w->next_turn, 1); /* the next millisecond: a later turn, after a poll */
}

/* Sends now when in h2o's own context (an immediate handler) and within
 * the turn's budget, else from h2o's timeouts: the zero timeout, in the
 * same loop turn, for a task; the next turn for an answer over budget. */
void server__schedule_send(server_req *r, int action)
{
    server_worker *w = r->worker;
    bool in_h2o = aio_task_current() == NULL;
    r->send_action = action;
    if (in_h2o && w->turn_sends < SENDS_PER_TURN) {
        if (w->turn_sends++ == 0)
            aio_defer(&w->turn_end);
        perform_send(r);
        return;
    }
    if (!h2o_timeout_is_linked(&r->send_entry)) {
        r->refs++;
        h2o_timeout_link(w->ctx.loop, in_h2o ? &w->next_turn : &w->ctx.zero_timeout, &r->send_entry);
    }
}


/* ---- answering ---- */

void server_respond_header(server_req *r, const char *name, const char *value)
{
    if (r->h2o == NULL)
        return;
    h2o_req_t *req = r->h2o;
    size_t nlen = strlen(name), vlen = strlen(value);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, vlen);
    const h2o_token_t *token = h2o_lookup_token(name, nlen);
    if (token != NULL) {
        h2o_add_header(&req->pool, &req->res.headers, token, NULL, v.base, v.len);
    } else {
        h2o_iovec_t n = h2o_strdup(&req->pool, name, nlen);
        h2o_strtolower(n.base, n.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 0, NULL, v.base, v.len);
    }
}

static void respond(server_req *r, int status, const char *content_type, const char *body, size_t len, bool copy)
{
    assert(!r->responded && "one response per request");
    r->responded = true;
    r->status = status;
    r->bytes = len;
    if (r->h2o == NULL)
        return;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->id, strlen(r->id));
    req->res.content_length = len;
    r->finished = true;
    r->send_body = copy ? h2o_strdup(&req->pool, body, len) : h2o_iovec_init(body, len);
    server__schedule_send(r, SEND_INLINE);
}

void server_respond(server_req *r, int status, const char *content_type, const char *body, size_t len)
{
    respond(r, status, content_type, body, len, true);
}

void server_respond_arena(server_req *r, int status, const char *content_type, const char *body, size_t len)
{
    respond(r, status, content_type, body, len, false);
}


void server_respond_json(server_req *r, int status, const json_t *body)
{
    char stack[4096];
    size_t len = json_dumpb(body, stack, sizeof(stack), JSON_COMPACT);
    if (len == 0) {
        server_respond_problem(r, 500, "the response could not be encoded", NULL);
        return;
    }
    if (len <= sizeof(stack)) {
        server_respond(r, status, "application/json", stack, len);
        return;
    }
    char *big = base_arena_alloc(&r->arena, len);
    if (big == NULL || json_dumpb(body, big, len, JSON_COMPACT) != len) {
        server_respond_problem(r, 500, "the response could not be encoded", NULL);
        return;
    }
    server_respond_arena(r, status, "application/json", big, len);
}


void server_respond_problem(server_req *r, int status, const char *detail, json_t *errors)
{
    size_t len;
    char *s = server_problem_json(status, detail, errors, &len);
    if (status == 503)
        server_respond_header(r, "retry-after", "1");
    server_respond(r, status, "application/problem+json", s ? s : "{}", s ? len : 2);
    free(s);
}

