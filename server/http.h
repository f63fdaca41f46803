/* The HTTP front end: h2o hands each request to the router, and each routed
 * request to a handler running in a task of its own (or, for handlers that
 * never await, directly).
 *
 * A request lives under a deadline (REQUEST_TIMEOUT_MS, shortened by a
 * Request-Timeout header) opened as a deadline scope around its handler, so
 * every await in it uses what is left. A handler answers with one of the
 * server_respond* calls; if it returns without answering, the front end
 * answers for it: 504 if the deadline passed, 500 otherwise. If the client
 * goes away first, the request's task is cancelled, and responding becomes a
 * no-op. */
#ifndef H2PG_SERVER_HTTP_H
#define H2PG_SERVER_HTTP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/arena.h"

typedef struct server_req server_req;

/* Returns 0 or a negative errno (answered for, as above, if not answered). */
typedef int (*server_handler_fn)(server_req *r);

/* A handler helper that answered the request itself (a 4xx for bad input)
 * returns this, so that the handler can stop with `if (rc < 0) return rc;`. */
#define SERVER_ANSWERED (-EALREADY)

/* A route; tables use designated initializers:
 *     {.method = "GET", .pattern = "/users/{id}", .handler = get_user} */
typedef struct server_route_def {
    const char *method;
    const char *pattern; /* "/users/{id}" */
    server_handler_fn handler;
    bool immediate;      /* never awaits: runs without a task of its own */
    bool streaming;      /* no deadline scope around the handler: it opens its
                          * own (server_req_deadline until the response starts;
                          * server_stream_write waits under the stall limit) */
    bool open;           /* no bearer token needed when authentication is on
                          * (probes, metrics, the document, the benchmarks);
                          * every other route needs one */
    bool unlimited;      /* not rate limited (probes and scrapes, which must
                          * not be turned away by a client's burst) */
    bool admin;          /* with authentication on, administrators only
                          * (403 for any other caller) */
} server_route_def;

/* ---- reading the request (valid for the request's whole life) ---- */

const char *server_req_method(const server_req *r);
const char *server_req_path(const server_req *r);
/* The raw query string after '?', "" if none. */
const char *server_req_query(const server_req *r, size_t *len);
/* The matched route pattern (a label for logs and metrics). */
const char *server_req_route(const server_req *r);
/* A path parameter, NUL-terminated, or NULL. */
const char *server_req_param(const server_req *r, const char *name);
/* The request body (empty if none). */
const char *server_req_body(const server_req *r, size_t *len);
/* A request header (case-insensitive name), NUL-terminated copy in the
 * arena; NULL if absent or the client is gone. */
const char *server_req_header(server_req *r, const char *name);
/* This request's arena. */
base_arena *server_req_arena(server_req *r);
/* Whether the client is still there to answer. */
bool server_req_alive(const server_req *r);
/* The request id (from X-Request-Id or generated). */
const char *server_req_id(const server_req *r);
/* The matched route's definition (NULL for an unmatched request). */
const server_route_def *server_req_route_def(const server_req *r);
/* The client's numeric address, resolved through TRUSTED_PROXIES. */
const char *server_req_client_addr(server_req *r);
/* One pointer the application keeps per request (NULL until set; what it
 * points to should live in the request's arena). */
void server_req_set_local(server_req *r, void *p);
void *server_req_local(const server_req *r);

/* The request's deadline (aio_now() time) and the configured request
 * timeout, for streaming handlers. */
int64_t server_req_deadline(const server_req *r);
int64_t server_req_timeout(const server_req *r);
/* The process's configuration (read-only). */
const struct server_config *server_req_config(const server_req *r);
/* The number of worker threads, and this request's worker (0-based). */
int server_req_worker(const server_req *r);

/* STREAM_STALL_TIMEOUT_MS in ns: how long server_stream_write waits for
 * the client to take a chunk. */
int64_t server_req_stall_timeout(const server_req *r);

/* ---- answering (once) ---- */

/* Adds a response header (copied). Call before responding. */
void server_respond_header(server_req *r, const char *name, const char *value);
/* Sends status with body bytes (copied) of the given content type. */
void server_respond(server_req *r, int status, const char *content_type, const char *body, size_t len);
/* The same without the copy, for a body allocated from server_req_arena(r)
 * (it lives until h2o is done with the request, the write included) or in
 * static storage. */
void server_respond_arena(server_req *r, int status, const char *content_type, const char *body, size_t len);
/* Sends a JSON value (not consumed). */
void server_respond_json(server_req *r, int status, const json_t *body);
/* Sends an RFC 9457 problem: {"type":"about:blank","title","status","detail"}
 * plus "errors" when given (consumed). */
void server_respond_problem(server_req *r, int status, const char *detail, json_t *errors);
/* Streaming a response: start, write chunks, end (chunked encoding).
 * server_stream_write awaits until the client has taken the previous chunk,
 * so a slow reader slows the producer instead of growing a buffer, for at
 * most STREAM_STALL_TIMEOUT_MS (or the task's own deadline, if it has a
 * shorter one); it returns 0, -ECANCELED when the client is gone, or
 * -ETIMEDOUT when the client stalled past the limit. The data is
 * copied. A stream that is not ended is aborted (the client sees a
 * truncated body) when the handler returns. */
void server_stream_start(server_req *r, int status, const char *content_type);
int server_stream_write(server_req *r, const char *data, size_t len);
int server_stream_end(server_req *r);

/* The problem+json text server_respond_problem would send (errors
 * consumed); malloc'd, the caller frees; NULL on ENOMEM. */
char *server_problem_json(int status, const char *detail, json_t *errors, size_t *len);

/* Whether the response has started (server_respond* was called). */
bool server_responded(const server_req *r);

/* The reason phrase of a status code. */
const char *server_status_reason(int status);

#endif
