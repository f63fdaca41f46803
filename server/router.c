#include "server/router.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define METHOD_MAX 15
#define ALLOW_CAP sizeof(((server_route_match *)0)->allow)

struct router_segment {
    const char *text; /* the literal, or the parameter's name; NUL-terminated either way */
    size_t len;
    bool param;
};

struct router_method {
    char name[METHOD_MAX + 1];
    size_t len;
    const void *data;
};

/* One distinct pattern with every method registered for it: grouping by
 * pattern is what lets a 405 name all the methods of a path. */
struct router_path {
    /* One allocation: the pattern as given (the route label), then a copy in
     * which '/' and the braces became NULs, so segments and names are
     * C strings without allocations of their own. */
    char *pattern;
    size_t nsegs;
    size_t nparams;
    struct router_segment segs[SERVER_ROUTER_MAX_SEGMENTS];
    struct router_method *methods;
    size_t nmethods;
    char allow[ALLOW_CAP]; /* built at add time so that a 405 only copies it */
};

/* Where a match looks: first, among the patterns without parameters, for
 * one equal to the whole path (a hash of the text); then at paths by their
 * first segment, so that a request is compared with the few paths that
 * begin as it does. A path whose first segment is a parameter is in every
 * bucket's sense a candidate: those are on a list of their own. */
struct router_key {
    uint32_t nsegs;
    uint32_t first_len; /* FIRST_IS_PARAM: the first segment is a parameter */
    uint64_t first8;    /* the first segment's first 8 bytes, zero-padded */
    int32_t next;       /* the next path of its bucket (or of the list), -1 at the end */
    int32_t exact_next; /* a pattern without parameters: the next of its exact bucket, -1 at the end */
    uint32_t exact_len; /* ... and its length; 0 for a pattern with parameters */
};
#define FIRST_IS_PARAM UINT32_MAX

struct server_router {
    struct router_path *paths;
    struct router_key *keys; /* keys[i] is paths[i]'s */
    size_t npaths;
    size_t cap;
    int32_t *buckets; /* first path of each bucket, -1 if none; nbuckets a power of 2 */
    size_t nbuckets;
    int32_t params_first; /* the first path whose first segment is a parameter */
    int32_t *exact;       /* patterns without parameters by their whole text, nbuckets of them */
};

struct path_segment {
    const char *p;
    size_t len;
};

server_router *server_router_create(void)
{
    server_router *r = calloc(1, sizeof(server_router));
    if (r != NULL)
        r->params_first = -1;
    return r;
}

void server_router_destroy(server_router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->npaths; i++) {
        free(r->paths[i].methods);
        free(r->paths[i].pattern);
    }
    free(r->paths);
    free(r->keys);
    free(r->buckets);
    free(r->exact);
    free(r);
}

static uint64_t first8(const char *p, size_t len)
{
    uint64_t v = 0;
    memcpy(&v, p, len < 8 ? len : 8);
    return v;
}

static size_t bucket_of(uint64_t first8, size_t len, size_t nbuckets)
{
    uint64_t h = (first8 ^ len) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & (nbuckets - 1);
}

/* A whole path's hash, eight bytes a step. */
static uint64_t text_hash(const char *p, size_t len)
{
    const uint64_t mul = 0x9E3779B97F4A7C15ULL;
    uint64_t h = len * mul;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = first8(p + i, len - i);
        h = (h ^ v) * mul;
        h ^= h >> 29;
    }
    return h;
}

/* Links path i into its bucket or onto the parameter-first list, and a
 * pattern without parameters into its exact bucket too. */
static void link_path(server_router *r, size_t i)
{
    struct router_key *k = &r->keys[i];
    int32_t *head = k->first_len == FIRST_IS_PARAM ? &r->params_first
                                                   : &r->buckets[bucket_of(k->first8, k->first_len, r->nbuckets)];
    k->next = *head;
    *head = (int32_t)i;
    k->exact_next = -1;
    if (k->exact_len > 0) {
        int32_t *e = &r->exact[text_hash(r->paths[i].pattern, k->exact_len) & (r->nbuckets - 1)];
        k->exact_next = *e;
        *e = (int32_t)i;
    }
}

/* Room for one more path, keeping buckets at most half full. */
static int grow_buckets(server_router *r)
{
    if (r->npaths + 1 <= r->nbuckets / 2)
        return 0;
    size_t n = r->nbuckets ? 2 * r->nbuckets : 64;
    int32_t *b = malloc(n * sizeof(*b)), *e = malloc(n * sizeof(*e));
    if (b == NULL || e == NULL) {
        free(b);
        free(e);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        b[i] = e[i] = -1;
    free(r->buckets);
    free(r->exact);
    r->buckets = b;
    r->exact = e;
    r->nbuckets = n;
    r->params_first = -1;
    for (size_t i = 0; i < r->npaths; i++)
        link_path(r, i);
    return 0;
}

/* Visible ASCII only: a literal holding a space, '%' escapes aside, could
 * never equal a segment of a well-formed request target anyway, and braces
 * would mean a half-written parameter. */
static bool is_literal_byte(unsigned char c) { return c > 0x20 && c < 0x7f && c != '{' && c != '}' && c != '?' && c != '#'; }

static bool is_name_byte(unsigned char c) { return (c >= 'a' && c <= 'z') || c == '_'; }

static int split_pattern(struct router_path *p, const char *pattern)
{
    size_t n = strlen(pattern);
    if (n == 0 || pattern[0] != '/')
        return -EINVAL;
    char *buf = malloc(2 * (n + 1));
    if (buf == NULL)
        return -ENOMEM;
    memcpy(buf, pattern, n + 1);
    char *split = buf + n + 1;
    memcpy(split, pattern, n + 1);
    *p = (struct router_path){.pattern = buf};
    if (n == 1)
        return 0; /* the root has no segments */

    for (size_t i = 1; i <= n; i++) {
        size_t start = i;
        while (i < n && split[i] != '/')
            i++;
        size_t len = i - start;
        split[i] = '\0';
        if (len == 0 || p->nsegs == SERVER_ROUTER_MAX_SEGMENTS)
            goto invalid;
        struct router_segment *s = &p->segs[p->nsegs++];
        if (split[start] == '{') {
            if (len < 3 || split[i - 1] != '}' || p->nparams == SERVER_ROUTER_MAX_PARAMS)
                goto invalid;
            split[i - 1] = '\0';
            for (size_t k = start + 1; k < i - 1; k++)
                if (!is_name_byte((unsigned char)split[k]))
                    goto invalid;
            *s = (struct router_segment){.text = split + start + 1, .len = len - 2, .param = true};
            /* a repeated name would make server_route_param ambiguous */
            for (size_t k = 0; k + 1 < p->nsegs; k++)
                if (p->segs[k].param && strcmp(p->segs[k].text, s->text) == 0)
                    goto invalid;
            p->nparams++;
        } else {
            for (size_t k = start; k < i; k++)
                if (!is_literal_byte((unsigned char)split[k]))
                    goto invalid;
            *s = (struct router_segment){.text = split + start, .len = len, .param = false};
        }
    }
    return 0;

invalid:
    free(buf);
    p->pattern = NULL;
    return -EINVAL;
}

/* 1: the same pattern; -1: the same paths match, but the parameters are named
 * differently; 0: different. */
static int compare_patterns(const struct router_path *a, const struct router_path *b)
{
    if (a->nsegs != b->nsegs)
        return 0;
    bool same_names = true;
    for (size_t i = 0; i < a->nsegs; i++) {
        const struct router_segment *x = &a->segs[i], *y = &b->segs[i];
        if (x->param != y->param)
            return 0;
        if (x->param)
            same_names = same_names && strcmp(x->text, y->text) == 0;
        else if (x->len != y->len || memcmp(x->text, y->text, x->len) != 0)
            return 0;
    }
    return same_names ? 1 : -1;
}

static bool append(char *out, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > ALLOW_CAP)
        return false;
    memcpy(out + *len, s, n + 1);
    *len += n;
    return true;
}

static int build_allow(const struct router_method *methods, size_t n, char *out)
{
    bool has_get = false;
    for (size_t i = 0; i < n; i++)
        has_get = has_get || strcmp(methods[i].name, "GET") == 0;
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *name = methods[i].name;
        bool is_get = strcmp(name, "GET") == 0;
        /* an explicit HEAD already sits right after GET */
        if (has_get && strcmp(name, "HEAD") == 0)
            continue;
        if ((len > 0 && !append(out, &len, ", ")) || !append(out, &len, name))
            return -E2BIG;
        if (is_get && !append(out, &len, ", HEAD"))
            return -E2BIG;
    }
    return 0;
}

/* Adds a method to a registered pattern. */
static int add_method(struct router_path *p, const struct router_method *entry)
{
    for (size_t i = 0; i < p->nmethods; i++)
        if (strcmp(p->methods[i].name, entry->name) == 0)
            return -EEXIST;
    /* growing the array first keeps a failure below harmless: the count,
     * not the capacity, says what is registered */
    struct router_method *grown = realloc(p->methods, (p->nmethods + 1) * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    p->methods = grown;
    grown[p->nmethods] = *entry;
    char allow[ALLOW_CAP];
    int rc = build_allow(grown, p->nmethods + 1, allow);
    if (rc < 0)
        return rc;
    p->nmethods++;
    memcpy(p->allow, allow, sizeof(allow));
    return 0;
}

/* Registers a new pattern (cand, which it takes on success) with one method. */
static int add_path(server_router *r, struct router_path *cand, const struct router_method *entry)
{
    if (r->npaths == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        struct router_path *paths = realloc(r->paths, cap * sizeof(*paths));
        if (paths == NULL)
            return -ENOMEM;
        r->paths = paths;
        struct router_key *keys = realloc(r->keys, cap * sizeof(*keys));
        if (keys == NULL)
            return -ENOMEM;
        r->keys = keys;
        r->cap = cap;
    }
    if (grow_buckets(r) < 0)
        return -ENOMEM;
    int rc = build_allow(entry, 1, cand->allow);
    if (rc < 0)
        return rc;
    if ((cand->methods = malloc(sizeof(*entry))) == NULL)
        return -ENOMEM;
    cand->methods[0] = *entry;
    cand->nmethods = 1;
    struct router_key *k = &r->keys[r->npaths];
    k->nsegs = (uint32_t)cand->nsegs;
    k->first_len = cand->nsegs == 0 ? 0 : cand->segs[0].param ? FIRST_IS_PARAM : (uint32_t)cand->segs[0].len;
    k->first8 = cand->nsegs == 0 || cand->segs[0].param ? 0 : first8(cand->segs[0].text, cand->segs[0].len);
    k->exact_len = cand->nparams == 0 ? (uint32_t)strlen(cand->pattern) : 0;
    r->paths[r->npaths] = *cand;
    link_path(r, r->npaths++);
    return 0;
}

int server_router_add(server_router *r, const char *method, const char *pattern, const void *data)
{
    assert(r != NULL && method != NULL && pattern != NULL);
    size_t mlen = strlen(method);
    assert(mlen > 0 && mlen <= METHOD_MAX);
    for (size_t i = 0; i < mlen; i++)
        assert(method[i] >= 'A' && method[i] <= 'Z');
    struct router_path cand;
    int rc = split_pattern(&cand, pattern);
    if (rc < 0)
        return rc;
    struct router_path *p = NULL;
    for (size_t i = 0; i < r->npaths && p == NULL && rc == 0; i++) {
        int same = compare_patterns(&r->paths[i], &cand);
        if (same < 0)
            rc = -EEXIST;
        else if (same > 0)
            p = &r->paths[i];
    }
    struct router_method entry = {.len = mlen, .data = data};
    memcpy(entry.name, method, mlen + 1);
    if (rc == 0 && p != NULL)
        rc = add_method(p, &entry);
    else if (rc == 0 && (rc = add_path(r, &cand, &entry)) == 0)
        return 0; /* cand now belongs to the router */
    free(cand.pattern);
    return rc;
}

/* Splits the path once for all patterns. Fails for what no pattern can match:
 * not starting with '/', an empty segment (a trailing or doubled slash), a NUL
 * byte (a handler might later treat a value as a C string), or more segments
 * than any pattern may have, found without reading the rest of the path. */
static bool split_path(const char *path, size_t path_len, struct path_segment *segs, size_t *nsegs)
{
    *nsegs = 0;
    if (path_len == 0 || path[0] != '/')
        return false;
    if (path_len == 1)
        return true;
    for (size_t i = 1; i <= path_len; i++) {
        size_t start = i;
        while (i < path_len && path[i] != '/') {
            if (path[i] == '\0')
                return false;
            i++;
        }
        if (i == start || *nsegs == SERVER_ROUTER_MAX_SEGMENTS)
            return false;
        segs[(*nsegs)++] = (struct path_segment){path + start, i - start};
    }
    return true;
}

static bool pattern_matches(const struct router_path *p, const struct path_segment *segs, size_t nsegs)
{
    if (p->nsegs != nsegs)
        return false;
    for (size_t i = 0; i < nsegs; i++) {
        const struct router_segment *s = &p->segs[i];
        if (!s->param && (s->len != segs[i].len || memcmp(s->text, segs[i].p, s->len) != 0))
            return false;
    }
    return true;
}

/* Both match the same path and so have the same depth; at least one
 * position differs in kind, since equal shapes are refused at add time. */
static bool more_specific(const struct router_path *a, const struct router_path *b)
{
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->segs[i].param != b->segs[i].param)
            return !a->segs[i].param;
    return false;
}

static const struct router_method *find_method(const struct router_path *p, const char *method, size_t len)
{
    for (size_t i = 0; i < p->nmethods; i++)
        if (p->methods[i].len == len && memcmp(p->methods[i].name, method, len) == 0)
            return &p->methods[i];
    return NULL;
}

/* The route of the matching pattern best for method (HEAD falls back to
 * GET), or -EOPNOTSUPP with the methods it has. */
static int answer(const struct router_path *best, const char *method, size_t method_len, server_route_match *m)
{
    m->pattern = best->pattern;
    const struct router_method *hit = find_method(best, method, method_len);
    if (hit == NULL && method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        hit = find_method(best, "GET", 3);
    if (hit == NULL) {
        memcpy(m->allow, best->allow, sizeof(m->allow));
        return -EOPNOTSUPP;
    }
    m->data = hit->data;
    return 0;
}

int server_router_match(const server_router *r, const char *method, size_t method_len, const char *path, size_t path_len,
                        server_route_match *m)
{
    assert(r != NULL && m != NULL);
    assert(method != NULL || method_len == 0);
    assert(path != NULL || path_len == 0);
    m->data = NULL;
    m->pattern = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';

    if (r->nbuckets == 0)
        return -ENOENT; /* no routes */
    /* a pattern without parameters is the best match there can be for the
     * path equal to it (literal at every position): looked up whole */
    for (int32_t i = r->exact[text_hash(path, path_len) & (r->nbuckets - 1)]; i >= 0; i = r->keys[i].exact_next)
        if (r->keys[i].exact_len == path_len && memcmp(r->paths[i].pattern, path, path_len) == 0)
            return answer(&r->paths[i], method, method_len, m);

    struct path_segment segs[SERVER_ROUTER_MAX_SEGMENTS];
    size_t nsegs;
    if (!split_path(path, path_len, segs, &nsegs))
        return -ENOENT;

    size_t len0 = nsegs > 0 ? segs[0].len : 0;
    uint64_t head0 = nsegs > 0 ? first8(segs[0].p, len0) : 0;
    const struct router_path *best = NULL;
    int32_t lists[2] = {r->buckets[bucket_of(head0, len0, r->nbuckets)], r->params_first};
    for (int l = 0; l < 2; l++) {
        for (int32_t i = lists[l]; i >= 0; i = r->keys[i].next) {
            const struct router_key *k = &r->keys[i];
            if (k->nsegs != nsegs || (k->first_len != FIRST_IS_PARAM && (k->first_len != len0 || k->first8 != head0)))
                continue;
            const struct router_path *p = &r->paths[i];
            if (pattern_matches(p, segs, nsegs) && (best == NULL || more_specific(p, best)))
                best = p;
        }
    }
    if (best == NULL)
        return -ENOENT;

    for (size_t i = 0; i < nsegs; i++) {
        if (!best->segs[i].param)
            continue;
        m->params[m->nparams].name = best->segs[i].text;
        m->params[m->nparams].value = segs[i].p;
        m->params[m->nparams].len = segs[i].len;
        m->nparams++;
    }
    return answer(best, method, method_len, m);
}

const char *server_route_param(const server_route_match *m, const char *name, size_t *len)
{
    assert(m != NULL && name != NULL);
    for (size_t i = 0; i < m->nparams; i++) {
        if (strcmp(m->params[i].name, name) == 0) {
            if (len != NULL)
                *len = m->params[i].len;
            return m->params[i].value;
        }
    }
    if (len != NULL)
        *len = 0;
    return NULL;
}
