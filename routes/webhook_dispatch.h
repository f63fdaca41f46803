/* Webhook delivery: signing (Standard Webhooks), one attempt over HTTP,
 * and the background dispatcher that turns events into deliveries and
 * delivers them.
 *
 * The dispatcher runs on every worker of every replica; the database
 * coordinates them. A pass is one round trip of up to three statements:
 * (1) fan-out, one statement holding the row locks of the webhooks it
 * serves (one fan-out at a time per webhook across replicas), reads the
 * events after each webhook's own cursor that it subscribes to, as many
 * as this worker may still take of it, and inserts a delivery for each,
 * leased to this worker (the attempt counted): a slow receiver's backlog
 * waits in the outbox, not as delivery rows; (2) the outcomes of every
 * attempt finished since the last pass, in one statement; (3) when due
 * deliveries may be waiting unleased (a backlog, a retry due, others'
 * expired leases: at least every WEBHOOK_POLL_MS), a claim (FOR UPDATE
 * SKIP LOCKED, a lease, the attempt counted). A worker holds up to
 * ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT of a webhook's deliveries; the
 * lanes attempt them under WEBHOOK_TIMEOUT_MS, at most
 * ROUTES_WEBHOOK_PER_ENDPOINT of one webhook at once, and a claim that
 * waits too long for a lane is released. The next pass comes when a lane
 * finishes an attempt, when the sequencer numbered events, when a retry
 * is due, or after WEBHOOK_POLL_MS, never sooner than 10 ms after the
 * last. A worker that dies mid-delivery leaves a lease that runs out, and
 * another worker delivers the event again, with the same webhook-id: at
 * least once. */
#ifndef H2PG_ROUTES_WEBHOOK_DISPATCH_H
#define H2PG_ROUTES_WEBHOOK_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aio/aio.h"

struct server_config;

/* Concurrent attempts per worker: tasks that each deliver one claimed
 * delivery after another, so a slow receiver holds up some lanes only. */
#define ROUTES_WEBHOOK_LANES 64
/* Attempts in flight to one webhook from one worker (a semaphore of the
 * worker's lanes); fewer than the lanes, so one webhook never takes them
 * all. */
#define ROUTES_WEBHOOK_PER_ENDPOINT 48
/* Deliveries of one webhook that one worker holds claimed (in flight, or
 * waiting for one of its ROUTES_WEBHOOK_PER_ENDPOINT lanes): more than may
 * run, so the lanes never wait for the next claim's round trip. It also
 * bounds what one pass can fan out, and under load passes come 20-70 ms
 * apart (each waits for a pool connection behind the API's requests): at
 * 128, one fast receiver got 3,900-4,500 deliveries a second on two busy
 * cores while the API wrote 4,500-4,900 transfers, and fell behind in half
 * the runs; at 192 it kept up in every run (bench/webhooks.sh). */
#define ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT 192
/* Deliveries one worker holds claimed, across webhooks. */
#define ROUTES_WEBHOOK_CLAIM_MAX 384
/* Response body bytes read from a receiver; more is cut off. */
#define ROUTES_WEBHOOK_MAX_RESPONSE (64 * 1024)
/* Event ids one fan-out reads past a webhook's cursor. */
#define ROUTES_WEBHOOK_FANOUT_BATCH 500

/* Copies the WEBHOOK_* settings; each worker calls it at start with the
 * same configuration. Never awaits. */
void routes_webhook_configure(const struct server_config *cfg);

/* A new secret: "whsec_" + base64 of 32 bytes from getrandom, into out (at
 * least 64 bytes). 0 or -EIO. */
int routes_webhook_secret(char *out, size_t size);

/* The webhook-signature value "v1,<base64 HMAC-SHA256>" of
 * id + "." + timestamp + "." + body, keyed with the base64-decoded part of
 * secret after "whsec_". out: at least 64 bytes. 0, or -EINVAL for a
 * secret that is not whsec_ + base64. Pure. */
int routes_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body, size_t len,
                        char *out, size_t size);

/* The outcome of one attempt. */
typedef struct routes_webhook_attempt {
    long status;      /* the receiver's HTTP status, 0 if none arrived */
    char error[300];  /* "" when a response arrived */
    int64_t duration_ms;
} routes_webhook_attempt;

/* POSTs body (the event JSON) to url, signed with secret as msg_id, under
 * WEBHOOK_TIMEOUT_MS (and the task's own deadline), not following
 * redirects, refusing non-public addresses unless WEBHOOK_ALLOW_PRIVATE.
 * Awaits. Returns 0 when the attempt ran to an outcome (a response, or a
 * failure described in out->error, including WEBHOOK_TIMEOUT_MS running
 * out); -ECANCELED, or -ETIMEDOUT when the caller's own deadline passed
 * first, or -ENOMEM. */
int routes_webhook_post(const char *url, const char *secret, const char *msg_id, const char *body, size_t len,
                        routes_webhook_attempt *out);

/* Whether an attempt's outcome counts as delivered (a 2xx). */
bool routes_webhook_delivered(const routes_webhook_attempt *a);

/* The pause before the next attempt after `attempts` attempts: base *
 * 2^(attempts-1), at most max, then a random point in its upper half
 * (jitter, so receivers that came back are not hit by every retry at once).
 * Milliseconds. */
int64_t routes_webhook_backoff_ms(int attempts, int64_t base_ms, int64_t max_ms);

/* The dispatcher task on the calling worker's loop; NULL when no task can
 * be made. sample: it also samples the age of the oldest due delivery once
 * a second (one worker is enough). stop cancels it (attempts in flight are abandoned; their leases
 * run out and they are retried) and awaits its end; stop(NULL) does
 * nothing. */
aio_task *routes_webhook_dispatcher_start(bool sample);
/* The background task (worker 0) that deletes settled deliveries whose
 * event is past EVENTS_RETENTION_S, as routes/retention.h runs it: a
 * pass at once, then one every routes_retention_interval_ms(retention).
 * A pending delivery stays until it is settled (its next attempt fails
 * it: the event is no longer stored). NULL when no task can be made;
 * routes_retention_stop stops it. */
aio_task *routes_webhook_pruner_start(void);

void routes_webhook_dispatcher_stop(aio_task *dispatcher);

/* This thread's counters since start. */
typedef struct routes_webhook_counters {
    uint64_t attempts, delivered, retried, failed;
    uint64_t released; /* claims given back unattempted (they waited too long for a lane) */
    uint64_t oldest_pending_s; /* age of the oldest undelivered event (OLDEST_DUE), last sampled */
} routes_webhook_counters;
void routes_webhook_counters_get(routes_webhook_counters *out);

#endif
