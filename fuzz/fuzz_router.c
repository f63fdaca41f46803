/* The router with the service's real route table, and the {id} path
 * parameters the handlers read from it.
 *
 * Input: "METHOD path" (split at the first space), or a path alone (then
 * GET). Checks, for every input:
 * - the verdict (match, 404, 405) and the winning pattern are those of a
 *   plain reference matcher written from the contract in server/router.h
 *   (whole segments, a literal beats a parameter at the first position
 *   where two patterns differ, HEAD served by GET);
 * - on a match or a 405 the parameters are the pattern's, in order, each a
 *   whole non-empty segment pointing into the path, and substituting them
 *   into the pattern gives back the path byte for byte;
 * - a 405's Allow list is the reference's, a match's data is the route of
 *   that pattern and method; server_route_param agrees with the match;
 * - a path parameter read as an id agrees with a strtoll-based reference:
 *   server_parse_id on the parameter as a C string, which is what
 *   routes_path_id (routes/handler.h) does with the request's copy of it
 *   (server_req_param) before it answers 404 for a bad one. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "routes/handler.h"
#include "server/parse.h"
#include "server/router.h"

static server_router *router;
static const server_route_def *routes;
static size_t nroutes;

/* Built once, as server_run builds it; kept for the life of the process. */
static void build_router(void)
{
    routes = routes_all(&nroutes);
    FUZZ_CHECK(routes != NULL && nroutes > 0);
    router = server_router_create();
    FUZZ_CHECK(router != NULL);
    for (size_t i = 0; i < nroutes; i++)
        FUZZ_CHECK(server_router_add(router, routes[i].method, routes[i].pattern, &routes[i]) == 0);
}

/* ---- the reference ---- */

struct seg {
    const char *p;
    size_t len;
};

#define MAX_SEGS 64

/* Splits at '/': -1 when the text does not start with '/', has an empty
 * segment or is deeper than MAX_SEGS; "/" has no segments. */
static int split(const char *s, size_t n, struct seg *segs)
{
    if (n == 0 || s[0] != '/')
        return -1;
    if (n == 1)
        return 0;
    int k = 0;
    size_t start = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        if (i == start || k == MAX_SEGS)
            return -1;
        segs[k++] = (struct seg){s + start, i - start};
        start = i + 1;
    }
    return k;
}

static bool is_param(struct seg s) { return s.len >= 2 && s.p[0] == '{'; }

static bool ref_matches(const char *pattern, const struct seg *path, int npath)
{
    struct seg pat[MAX_SEGS];
    int n = split(pattern, strlen(pattern), pat);
    if (n != npath)
        return false;
    for (int i = 0; i < n; i++)
        if (!is_param(pat[i]) && (pat[i].len != path[i].len || memcmp(pat[i].p, path[i].p, pat[i].len) != 0))
            return false;
    return true;
}

/* Whether a beats b: a literal where b has a parameter, at the first
 * position where they differ in kind. */
static bool ref_beats(const char *a, const char *b)
{
    struct seg x[MAX_SEGS], y[MAX_SEGS];
    int n = split(a, strlen(a), x);
    FUZZ_CHECK(split(b, strlen(b), y) == n);
    for (int i = 0; i < n; i++)
        if (is_param(x[i]) != is_param(y[i]))
            return !is_param(x[i]);
    return false;
}

static bool method_is(const char *method, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(method, name, len) == 0;
}

static void ref_allow(const char *pattern, char *out, size_t outlen)
{
    bool has_get = false;
    for (size_t i = 0; i < nroutes; i++)
        has_get = has_get || (strcmp(routes[i].pattern, pattern) == 0 && strcmp(routes[i].method, "GET") == 0);
    out[0] = '\0';
    for (size_t i = 0; i < nroutes; i++) {
        if (strcmp(routes[i].pattern, pattern) != 0 || (has_get && strcmp(routes[i].method, "HEAD") == 0))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, outlen - used, "%s%s%s", used ? ", " : "", routes[i].method,
                 strcmp(routes[i].method, "GET") == 0 ? ", HEAD" : "");
    }
}

/* What an id parameter must read as: digits only, 1..INT64_MAX. */
static int ref_id(const char *s, size_t len, int64_t *v)
{
    if (len == 0 || strspn(s, "0123456789") != len)
        return -EINVAL;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    FUZZ_CHECK(*end == '\0');
    if (x == 0)
        return -EINVAL;
    *v = x;
    return 0;
}

/* ---- the target ---- */

static void check_params(const server_route_match *m, const char *path, size_t path_len)
{
    struct seg pat[MAX_SEGS], segs[MAX_SEGS];
    int n = split(m->pattern, strlen(m->pattern), pat);
    FUZZ_CHECK(split(path, path_len, segs) == n);
    size_t k = 0;
    char rebuilt[4096];
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const char *p = pat[i].p;
        size_t len = pat[i].len;
        if (is_param(pat[i])) {
            FUZZ_CHECK(k < m->nparams);
            const char *name = m->params[k].name, *value = m->params[k].value;
            FUZZ_CHECK(strlen(name) == pat[i].len - 2 && memcmp(name, pat[i].p + 1, pat[i].len - 2) == 0);
            /* a whole segment of this very path */
            FUZZ_CHECK(value == segs[i].p && m->params[k].len == segs[i].len);
            FUZZ_CHECK(value > path && value + m->params[k].len <= path + path_len && value[-1] == '/');
            FUZZ_CHECK(m->params[k].len > 0 && memchr(value, '/', m->params[k].len) == NULL);
            FUZZ_CHECK(memchr(value, '\0', m->params[k].len) == NULL);
            size_t got_len;
            FUZZ_CHECK(server_route_param(m, name, &got_len) == value && got_len == m->params[k].len);

            /* what routes_path_id does with it: server_parse_id on the
             * request's NUL-terminated copy (server_req_param) */
            char *c = fuzz_strndup(value, m->params[k].len);
            int64_t id = 0, want = 0;
            int rc = server_parse_id(c, m->params[k].len, &id), ref = ref_id(c, m->params[k].len, &want);
            FUZZ_CHECK(rc == ref);
            FUZZ_CHECK(rc < 0 || (id == want && id > 0));
            free(c);

            p = value;
            len = m->params[k].len;
            k++;
        }
        FUZZ_CHECK(used + 1 + len < sizeof(rebuilt));
        rebuilt[used++] = '/';
        memcpy(rebuilt + used, p, len);
        used += len;
    }
    FUZZ_CHECK(k == m->nparams);
    if (n == 0)
        rebuilt[used++] = '/';
    FUZZ_CHECK(used == path_len && memcmp(rebuilt, path, path_len) == 0);
    size_t len = 7;
    FUZZ_CHECK(server_route_param(m, "no_such_param", &len) == NULL && len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (router == NULL)
        build_router();
    const char *space = memchr(data, ' ', size);
    char *method, *path;
    size_t method_len, path_len;
    if (space != NULL) {
        method_len = (size_t)(space - (const char *)data);
        path_len = size - method_len - 1;
        method = fuzz_dup(data, method_len);
        path = fuzz_dup(space + 1, path_len);
    } else {
        method_len = 3;
        method = fuzz_dup("GET", 3);
        path_len = size;
        path = fuzz_dup(data, size);
    }

    server_route_match m;
    memset(&m, 0xa5, sizeof(m)); /* every field must be written */
    int rc = server_router_match(router, method, method_len, path, path_len, &m);
    FUZZ_CHECK(rc == 0 || rc == -ENOENT || rc == -EOPNOTSUPP);
    FUZZ_CHECK(memchr(m.allow, '\0', sizeof(m.allow)) != NULL);

    /* the reference: the most specific matching pattern, then the method */
    struct seg segs[MAX_SEGS];
    int nsegs = memchr(path, '\0', path_len) ? -1 : split(path, path_len, segs);
    const char *best = NULL;
    for (size_t i = 0; nsegs >= 0 && i < nroutes; i++)
        if (ref_matches(routes[i].pattern, segs, nsegs) && (best == NULL || ref_beats(routes[i].pattern, best)))
            best = routes[i].pattern;
    const server_route_def *want = NULL;
    for (size_t i = 0; best != NULL && i < nroutes; i++)
        if (strcmp(routes[i].pattern, best) == 0 && method_is(method, method_len, routes[i].method))
            want = &routes[i];
    for (size_t i = 0; best != NULL && want == NULL && method_is(method, method_len, "HEAD") && i < nroutes; i++)
        if (strcmp(routes[i].pattern, best) == 0 && strcmp(routes[i].method, "GET") == 0)
            want = &routes[i];

    if (best == NULL) {
        FUZZ_CHECK(rc == -ENOENT);
        FUZZ_CHECK(m.data == NULL && m.pattern == NULL && m.nparams == 0 && m.allow[0] == '\0');
    } else {
        FUZZ_CHECK(m.pattern != NULL && strcmp(m.pattern, best) == 0);
        check_params(&m, path, path_len);
        if (want != NULL) {
            FUZZ_CHECK(rc == 0 && m.data == want && m.allow[0] == '\0');
        } else {
            char allow[256];
            ref_allow(best, allow, sizeof(allow));
            FUZZ_CHECK(rc == -EOPNOTSUPP && m.data == NULL && strcmp(m.allow, allow) == 0);
        }
    }
    free(method);
    free(path);
    return 0;
}
