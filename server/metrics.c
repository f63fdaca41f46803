#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/metrics.h"

/* Status codes tracked one by one; anything else is counted as its class. */
static const int STATUSES[] = {200, 201, 204, 400, 404, 405, 409, 413, 415, 422, 499, 500, 503, 504};
#define NSTATUS (sizeof(STATUSES) / sizeof(STATUSES[0]))
#define NCLASS 5 /* 1xx..5xx for the rest */

/* Latency buckets in seconds (upper bounds; +Inf is implicit). */
static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKET (sizeof(BUCKETS) / sizeof(BUCKETS[0]))
/* the same in nanoseconds, compared without a conversion per request */
#define NS(s) ((int64_t)((s)*1e9 + 0.5))
static const int64_t bucket_ns[] = {NS(0.0005), NS(0.001), NS(0.0025), NS(0.005), NS(0.01), NS(0.025), NS(0.05),
                                    NS(0.1),    NS(0.25),  NS(0.5),    NS(1),     NS(2.5),  NS(5),     NS(10)};
_Static_assert(sizeof(bucket_ns) / sizeof(bucket_ns[0]) == NBUCKET, "one per bucket");

typedef _Atomic uint64_t counter;

struct route_metrics {
    counter status[NSTATUS + NCLASS];
    counter bucket[NBUCKET + 1];
    counter sum_ns;
};

struct server_metrics {
    struct route_metrics *routes; /* nroutes + 1: the last is "no route" */
    counter rejected;
    counter inflight; /* sampled */
    counter *app;     /* the application's metrics, napp of them */
};

static const server_metric_def *app_defs;
static size_t napp;
static _Thread_local server_metrics *current;

void server_metrics_define(const server_metric_def *defs, size_t n)
{
    app_defs = defs;
    napp = n;
}

server_metrics *server_metrics_current(void) { return current; }
void server_metrics_set_current(server_metrics *m) { current = m; }

static const server_route_def *route_table;
static size_t route_count;

void server_metrics_set_routes(const server_route_def *routes, size_t n)
{
    route_table = routes;
    route_count = n;
}

server_metrics *server_metrics_create(void)
{
    server_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->routes = calloc(route_count + 1, sizeof(*m->routes));
    m->app = calloc(napp + 1, sizeof(*m->app));
    if (m->routes == NULL || m->app == NULL) {
        server_metrics_destroy(m);
        return NULL;
    }
    return m;
}

void server_metrics_destroy(server_metrics *m)
{
    if (m == NULL)
        return;
    free(m->routes);
    free(m->app);
    free(m);
}

/* Only the owning thread writes a counter, so a plain load-add-store is enough. */
static inline void bump(counter *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by, memory_order_relaxed);
}

static inline void set(counter *c, uint64_t v) { atomic_store_explicit(c, v, memory_order_relaxed); }
static inline uint64_t get(const counter *c) { return atomic_load_explicit(c, memory_order_relaxed); }

void server_metrics_request(server_metrics *m, const server_route_def *route, int status, int64_t duration_ns)
{
    size_t ri = route && route >= route_table && route < route_table + route_count ? (size_t)(route - route_table)
                                                                                    : route_count;
    struct route_metrics *rm = &m->routes[ri];
    size_t si;
    if (status == 200) {
        si = 0; /* most are */
    } else {
        si = NSTATUS + (status >= 100 && status < 600 ? (size_t)(status / 100 - 1) : 4);
        for (size_t i = 1; i < NSTATUS; i++)
            if (STATUSES[i] == status)
                si = i;
    }
    bump(&rm->status[si], 1);
    size_t b = 0;
    while (b < NBUCKET && duration_ns > bucket_ns[b])
        b++;
    bump(&rm->bucket[b], 1);
    bump(&rm->sum_ns, duration_ns > 0 ? (uint64_t)duration_ns : 0);
}

void server_metrics_rejected(server_metrics *m) { bump(&m->rejected, 1); }

void server_metrics_sample(server_metrics *m, int64_t inflight) { set(&m->inflight, (uint64_t)inflight); }

void server_metric_set(size_t index, uint64_t value)
{
    assert(index < napp);
    if (current != NULL)
        set(&current->app[index], value);
}

/* ---- rendering ---- */

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !o->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n) * 2;
        char *b = realloc(o->buf, cap);
        if (b == NULL) {
            o->failed = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static uint64_t sum(server_metrics *const *m, size_t n, size_t offset)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += get((const counter *)((const char *)m[i] + offset));
    return t;
}

static void simple(struct out *o, server_metrics *const *m, size_t n, const char *name, const char *type,
                   const char *help, size_t offset)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
        (unsigned long long)sum(m, n, offset));
}

static const char *route_label(size_t ri) { return ri < route_count ? route_table[ri].pattern : "unmatched"; }
static const char *method_label(size_t ri) { return ri < route_count ? route_table[ri].method : ""; }

static long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static void render_requests(struct out *o, server_metrics *const *m, size_t n)
{
    put(o, "# HELP h2pg_http_requests_total HTTP requests answered, by route, method and status.\n"
           "# TYPE h2pg_http_requests_total counter\n");
    for (size_t ri = 0; ri <= route_count; ri++) {
        for (size_t si = 0; si < NSTATUS + NCLASS; si++) {
            uint64_t c = 0;
            for (size_t w = 0; w < n; w++)
                c += get(&m[w]->routes[ri].status[si]);
            if (c == 0)
                continue;
            char status[8];
            if (si < NSTATUS)
                snprintf(status, sizeof(status), "%d", STATUSES[si]);
            else
                snprintf(status, sizeof(status), "%zuxx", si - NSTATUS + 1);
            put(o, "h2pg_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %llu\n", route_label(ri),
                method_label(ri), status, (unsigned long long)c);
        }
    }
}

static void render_route_durations(struct out *o, server_metrics *const *m, size_t n, size_t ri)
{
    uint64_t total = 0, buckets[NBUCKET + 1] = {0}, ns = 0;
    for (size_t w = 0; w < n; w++) {
        for (size_t b = 0; b <= NBUCKET; b++)
            buckets[b] += get(&m[w]->routes[ri].bucket[b]);
        ns += get(&m[w]->routes[ri].sum_ns);
    }
    for (size_t b = 0; b <= NBUCKET; b++)
        total += buckets[b];
    if (total == 0)
        return;
    const char *route = route_label(ri), *method = method_label(ri);
    uint64_t cum = 0;
    for (size_t b = 0; b < NBUCKET; b++) {
        cum += buckets[b];
        put(o, "h2pg_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"%g\"} %llu\n", route,
            method, BUCKETS[b], (unsigned long long)cum);
    }
    put(o, "h2pg_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"+Inf\"} %llu\n", route, method,
        (unsigned long long)total);
    put(o, "h2pg_http_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.9f\n", route, method,
        (double)ns / 1e9);
    put(o, "h2pg_http_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %llu\n", route, method,
        (unsigned long long)total);
}

/* The application's metrics, a family per run of equal names. */
static void render_app(struct out *o, server_metrics *const *m, size_t n)
{
    for (size_t i = 0; i < napp; i++) {
        const server_metric_def *d = &app_defs[i];
        if (i == 0 || strcmp(app_defs[i - 1].name, d->name) != 0)
            put(o, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name, d->type);
        uint64_t v = 0;
        for (size_t w = 0; w < n; w++)
            v += get(&m[w]->app[i]);
        if (d->labels != NULL)
            put(o, "%s{%s} %llu\n", d->name, d->labels, (unsigned long long)v);
        else
            put(o, "%s %llu\n", d->name, (unsigned long long)v);
    }
}

char *server_metrics_render(server_metrics *const *m, size_t n, size_t *len)
{
    struct out o = {.cap = 16384};
    if ((o.buf = malloc(o.cap)) == NULL)
        return NULL;
    render_requests(&o, m, n);
    put(&o, "# HELP h2pg_http_request_duration_seconds Time from routing to the response being handed to the "
            "connection.\n# TYPE h2pg_http_request_duration_seconds histogram\n");
    for (size_t ri = 0; ri <= route_count; ri++)
        render_route_durations(&o, m, n, ri);
    simple(&o, m, n, "h2pg_http_requests_in_flight", "gauge", "Requests being handled (sampled each second).",
           offsetof(struct server_metrics, inflight));
    simple(&o, m, n, "h2pg_http_requests_rejected_total", "counter",
           "Requests answered 503 at once: over MAX_INFLIGHT or shutting down.",
           offsetof(struct server_metrics, rejected));
    render_app(&o, m, n);
    put(&o, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
        resident_bytes());
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
