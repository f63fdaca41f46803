/* Prometheus metrics (text format 0.0.4) for GET /metrics.
 *
 * Each worker thread counts into its own block: the owner writes with
 * relaxed atomic stores (no locked instructions on the hot path), readers on
 * other threads load relaxed. Pool and database gauges are sampled by each
 * worker once a second from its own pool. */
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

/* Copies this thread's pool and database counters into m (run by the
 * worker that owns both). */
void server_metrics_sample(server_metrics *m, int64_t inflight);

/* Renders every block as the text exposition format into a malloc'd
 * string (*len set); NULL on ENOMEM. */
char *server_metrics_render(server_metrics *const *blocks, size_t n, size_t *len);

#endif
