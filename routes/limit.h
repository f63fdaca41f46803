/* Rate limits: a token bucket per caller (RATE_LIMIT_PER_S, RATE_LIMIT_BURST).
 *
 * One table per process, shared by the worker threads: a caller's
 * connections land on different workers (SO_REUSEPORT), and per-thread
 * buckets would let it through THREADS times faster. The table is cut into
 * shards, each behind its own mutex held for a lookup and a little
 * arithmetic, never across an await. Its memory is fixed: a caller maps to
 * a few slots of its shard, and when they are all taken the one idle the
 * longest is reused (a bucket idle for BURST / RATE seconds is full again,
 * so forgetting it changes nothing). With several replicas each process
 * counts on its own: behind a load balancer a caller gets up to N times
 * the rate. */
#ifndef H2PG_ROUTES_LIMIT_H
#define H2PG_ROUTES_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct routes_limit {
    double per_s; /* tokens added per second; 0: no limit */
    double burst; /* bucket size */
} routes_limit;

typedef struct routes_limit_result {
    bool allowed;
    int64_t remaining;   /* whole requests left right now */
    int64_t retry_after; /* seconds until one more request is allowed (0: now) */
    int64_t full_in;     /* seconds until the bucket is full again */
} routes_limit_result;

/* Takes one token from key's bucket (key: up to 63 bytes, e.g. "u:42" or
 * "a:10.0.0.1") at now (ns, any monotonic clock). Thread-safe; never
 * blocks for longer than a shard's critical section. */
void routes_limit_take(const routes_limit *l, const char *key, int64_t now, routes_limit_result *out);

#endif
