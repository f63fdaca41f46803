/* Request routing: (method, path pattern) -> handler data.
 *
 * Patterns are built from literal segments and whole-segment parameters:
 * "/", "/users", "/users/{id}", "/users/{id}/orders". Routes are added at
 * startup from one thread; once the last route is added the router is never
 * written again, so any number of threads may match against it at once.
 * Matching neither allocates nor writes shared state.
 *
 * Which pattern a path belongs to depends on the path alone: among the
 * patterns that match it, the one with a literal at the first position where
 * they differ wins ("/users/me" beats "/users/{id}"). The method is then
 * checked against that pattern only, so a path never silently falls through
 * to a less specific pattern because of its method, and the Allow list of a
 * 405 is exactly what the path accepts. */
#ifndef H2PG_SERVER_ROUTER_H
#define H2PG_SERVER_ROUTER_H

#include <stddef.h>

/* Opaque: the route table keeps its patterns pre-split and its Allow lists
 * pre-built, which only server_router_add may change. */
typedef struct server_router server_router;

#define SERVER_ROUTER_MAX_PARAMS 8
/* Deepest pattern accepted; a deeper path is known not to match before it is
 * even fully split. */
#define SERVER_ROUTER_MAX_SEGMENTS 16

typedef struct server_route_match {
    const void *data;    /* what was registered; NULL unless the match returned 0 */
    const char *pattern; /* the matched pattern string, usable as a route label in logs and metrics; NULL on -ENOENT */
    size_t nparams;
    struct {
        const char *name;  /* NUL-terminated, owned by the router */
        const char *value; /* points into the matched path: raw (not percent-decoded), not NUL-terminated */
        size_t len;
    } params[SERVER_ROUTER_MAX_PARAMS];
    char allow[96]; /* on -EOPNOTSUPP: the allowed methods, e.g. "GET, HEAD, PATCH, DELETE"; else "" */
} server_route_match;

/* An empty router; NULL on ENOMEM. Free it with server_router_destroy. */
server_router *server_router_create(void);

/* Frees the router and its copies of the patterns; NULL is a no-op. No match
 * may be in progress, and the strings of earlier matches die with it. */
void server_router_destroy(server_router *r);

/* Registers (method, pattern) -> data; the pattern is copied, data is not
 * owned. method is an upper-case token of at most 15 letters (anything else
 * is an assert). -EINVAL for a malformed pattern (must start with '/', no
 * empty segments except the root "/", a parameter is a whole segment "{name}"
 * with name [a-z_]+, names unique within the pattern, at most
 * SERVER_ROUTER_MAX_PARAMS parameters and SERVER_ROUTER_MAX_SEGMENTS segments,
 * literals of printable ASCII without '{', '}', '?', '#'); -EEXIST for a
 * duplicate (method, pattern) or a pattern that differs from a registered one
 * only in its parameter names; -E2BIG if the pattern's Allow list would no
 * longer fit server_route_match.allow; -ENOMEM. Not thread-safe: call before
 * any match. */
int server_router_add(server_router *r, const char *method, const char *pattern, const void *data);

/* Matches a request path (no query string; the caller strips it). path is a
 * length-delimited buffer and may hold any bytes; a NUL byte never matches.
 * Returns 0 on a match; -ENOENT when no pattern matches the path (404);
 * -EOPNOTSUPP when a pattern matches but not for this method (405; allow[]
 * lists the methods registered for the winning pattern, in registration
 * order, with HEAD added right after GET when GET is registered). HEAD
 * matches a GET route unless HEAD is registered itself. On every return *m is
 * fully written (see the field comments); on -EOPNOTSUPP pattern and params
 * are set too. Never allocates; safe from many threads at once. */
int server_router_match(const server_router *r, const char *method, size_t method_len, const char *path, size_t path_len,
                        server_route_match *m);

/* Value of the parameter `name` of a match (pointing into the path, not
 * NUL-terminated), or NULL if the pattern has no such parameter; *len (if
 * len is not NULL) gets the value's length, 0 with NULL. */
const char *server_route_param(const server_route_match *m, const char *name, size_t *len);

#endif
