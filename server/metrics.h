/* Prometheus metrics (text format 0.0.4) for GET /metrics.
 *
 * Each worker thread counts into its own block: the owner writes with
 * relaxed atomic stores (no locked instructions on the hot path), readers on
 * other threads load relaxed. The application above the server defines
 * metrics of its own (the database pools, say) once at start; each worker
 * keeps its own values of them, which /metrics sums. */
#ifndef H2PG_SERVER_METRICS_H
#define H2PG_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "server/http.h"

typedef struct server_metrics server_metrics;

/* The route table the metrics are labelled with (set once at start). */
void server_metrics_set_routes(const server_route_def *routes, size_t n);

/* A worker's block; NULL on ENOMEM. */
server_metrics *server_metrics_create(void);
void server_metrics_destroy(server_metrics *m);

/* One finished request: route (NULL when none matched), status, duration. */
void server_metrics_request(server_metrics *m, const server_route_def *route, int status, int64_t duration_ns);

/* Requests turned away at once (admission control or shutdown). */
void server_metrics_rejected(server_metrics *m);

/* The requests in flight on m's worker (sampled each second). */
void server_metrics_sample(server_metrics *m, int64_t inflight);

/* An application metric. Consecutive definitions with the same name are
 * one family, told apart by their labels. */
typedef struct server_metric_def {
    const char *name;   /* e.g. "h2pg_db_pool_connections" */
    const char *type;   /* "counter" or "gauge" */
    const char *help;
    const char *labels; /* e.g. "state=\"idle\"", or NULL */
} server_metric_def;

/* Defines the application's metrics (static storage, not copied), once,
 * before server_run. Their values are indexes into defs. */
void server_metrics_define(const server_metric_def *defs, size_t n);

/* Sets an application metric on the calling worker (a worker thread only;
 * elsewhere ignored). */
void server_metric_set(size_t index, uint64_t value);

/* The calling worker thread's block (server.c sets it), or NULL. */
server_metrics *server_metrics_current(void);
void server_metrics_set_current(server_metrics *m);

/* Renders every block as the text exposition format into a malloc'd
 * string (*len set); NULL on ENOMEM. */
char *server_metrics_render(server_metrics *const *blocks, size_t n, size_t *len);

#endif
