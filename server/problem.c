/* RFC 9457 problem+json: the body every error has, h2o's own text/plain
 * errors rewritten into it, and answers sent before a request exists. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "server/server_int.h"

char *server_problem_json(int status, const char *detail, json_t *errors, size_t *len)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", server_status_reason(status), "status",
                          status, "detail", detail ? detail : server_status_reason(status));
    if (p != NULL && errors != NULL)
        json_object_set(p, "errors", errors);
    json_decref(errors);
    char *s = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    *len = s ? strlen(s) : 0;
    return s;
}


/* ---- problem+json ---- */

static char *problem_body(h2o_mem_pool_t *pool, int status, const char *detail, json_t *errors, size_t *len)
{
    char *s = server_problem_json(status, detail, errors, len);
    if (s == NULL)
        return NULL;
    char *out = h2o_mem_alloc_pool(pool, *len);
    memcpy(out, s, *len);
    free(s);
    return out;
}

/* h2o answers some errors itself (400 for a broken request line or chunked
 * body, 413 for a body over the limit, 417): as text/plain. This filter
 * gives them the problem+json form every other error has. */
struct problem_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
};

static void problem_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct problem_ostream *o = (void *)self;
    (void)bufs;
    (void)n;
    h2o_iovec_t body = o->body;
    o->body.len = 0;
    h2o_ostream_send_next(self, req, body.len ? &body : NULL, body.len ? 1 : 0, state);
}

static void on_setup_problem(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    /* every answer: who answered (h2o's own Server line would cost a
     * sprintf per response: see server.c), and that a browser must not
     * guess a type other than the one sent */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SERVER, NULL, H2O_STRLIT("h2pg"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (req->res.status >= 400 && i >= 0 &&
        h2o_memis(req->res.headers.entries[i].value.base, 10, H2O_STRLIT("text/plain"))) {
        char detail[128];
        snprintf(detail, sizeof(detail), "%s",
                 req->res.status == 413 ? "the request body is larger than the configured limit" : "malformed request");
        size_t len;
        char *body = problem_body(&req->pool, req->res.status, detail, NULL, &len);
        if (body != NULL) {
            req->res.reason = server_status_reason(req->res.status);
            req->res.headers.entries[i].value = h2o_iovec_init(H2O_STRLIT("application/problem+json"));
            req->res.content_length = len;
            /* like every other answer, it carries a request id */
            const h2o_header_t *given = server__find_header(req, "x-request-id");
            h2o_iovec_t id;
            if (given != NULL && server__valid_request_id(given->value.base, given->value.len)) {
                id = h2o_strdup(&req->pool, given->value.base, given->value.len);
            } else {
                id.base = h2o_mem_alloc_pool(&req->pool, 17);
                id.len = (size_t)snprintf(id.base, 17, "%016llx", (unsigned long long)server__next_random(server__worker));
            }
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, id.base, id.len);
            struct problem_ostream *o = (void *)h2o_add_ostream(req, sizeof(*o), slot);
            o->super.do_send = problem_do_send;
            o->body = h2o_iovec_init(body, len);
            slot = &o->super.next;
        }
    }
    h2o_setup_next_ostream(req, slot);
}

void server__register_problem_filter(h2o_pathconf_t *pathconf)
{
    h2o_filter_t *f = h2o_create_filter(pathconf, sizeof(*f));
    f->on_setup_ostream = on_setup_problem;
}

/* Answers straight from the h2o callback, before any server_req exists. */
void server__early_problem(h2o_req_t *req, int status, const char *detail, const char *allow)
{
    size_t len;
    char *body = problem_body(&req->pool, status, detail, NULL, &len);
    req->res.status = status;
    req->res.reason = server_status_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/problem+json"));
    if (allow != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    if (status == 503)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

