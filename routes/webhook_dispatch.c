#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

#include "base/fmt.h"
#include "base/log.h"
#include "client/http.h"
#include "db/db.h"
#include "routes/events_outbox.h"
#include "routes/retention.h"
#include "routes/webhook_dispatch.h"
#include "server/config.h"

/* ---- settings: every worker stores the same values; relaxed is enough ---- */

static _Atomic bool allow_private;
static _Atomic int timeout_ms = 10000, max_attempts = 12, retry_base_ms = 1000, retry_max_ms = 3600000,
                   poll_ms = 500;

void routes_webhook_configure(const server_config *cfg)
{
    atomic_store_explicit(&allow_private, cfg->webhook_allow_private, memory_order_relaxed);
    atomic_store_explicit(&timeout_ms, cfg->webhook_timeout_ms, memory_order_relaxed);
    atomic_store_explicit(&max_attempts, cfg->webhook_max_attempts, memory_order_relaxed);
    atomic_store_explicit(&retry_base_ms, cfg->webhook_retry_base_ms, memory_order_relaxed);
    atomic_store_explicit(&retry_max_ms, cfg->webhook_retry_max_ms, memory_order_relaxed);
    atomic_store_explicit(&poll_ms, cfg->webhook_poll_ms, memory_order_relaxed);
}

#define SETTING(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* ---- signing ---- */

#define SECRET_PREFIX "whsec_"
#define SECRET_BYTES 32

int routes_webhook_secret(char *out, size_t size)
{
    unsigned char raw[SECRET_BYTES];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno != EINTR)
            return -EIO;
        if (n > 0)
            got += (size_t)n;
    }
    if (size < sizeof(SECRET_PREFIX) + 4 * ((SECRET_BYTES + 2) / 3))
        return -EINVAL;
    memcpy(out, SECRET_PREFIX, sizeof(SECRET_PREFIX) - 1);
    EVP_EncodeBlock((unsigned char *)out + sizeof(SECRET_PREFIX) - 1, raw, (int)sizeof(raw));
    return 0;
}

/* This thread's HMAC-SHA256 context, made on first use and freed when
 * the thread ends: fetching HMAC and SHA-256 and making a context cost
 * twice what a signature does (1.2 against 0.5 µs for a 300-byte body);
 * each signature only keys it anew. */
static pthread_key_t hmac_key;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static bool hmac_key_ok;

static void hmac_ctx_free(void *ctx) { EVP_MAC_CTX_free(ctx); }
static void hmac_key_init(void) { hmac_key_ok = pthread_key_create(&hmac_key, hmac_ctx_free) == 0; }

static EVP_MAC_CTX *thread_hmac(void)
{
    pthread_once(&hmac_once, hmac_key_init);
    if (!hmac_key_ok)
        return NULL;
    EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
    if (ctx != NULL)
        return ctx;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds a reference of its own */
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end()};
    if (ctx != NULL && (EVP_MAC_CTX_set_params(ctx, params) != 1 || pthread_setspecific(hmac_key, ctx) != 0)) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int routes_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body, size_t len,
                        char *out, size_t size)
{
    size_t plen = sizeof(SECRET_PREFIX) - 1;
    if (strncmp(secret, SECRET_PREFIX, plen) != 0)
        return -EINVAL;
    const char *b64 = secret + plen;
    size_t b64len = strlen(b64);
    if (b64len == 0 || b64len % 4 != 0 || b64len > 512)
        return -EINVAL;
    unsigned char key[400];
    int keylen = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)b64len);
    if (keylen < 0)
        return -EINVAL;
    /* DecodeBlock counts the padding as zero bytes */
    for (size_t i = b64len; i > 0 && b64[i - 1] == '='; i--)
        keylen--;
    char sep[32]; /* "." timestamp "." */
    int sep_len = snprintf(sep, sizeof(sep), ".%lld.", (long long)timestamp);
    unsigned char md[EVP_MAX_MD_SIZE];
    /* HMAC over the three parts without copying the body */
    EVP_MAC_CTX *ctx = thread_hmac();
    size_t outl = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, (size_t)keylen, NULL) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)sep, (size_t)sep_len) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 && EVP_MAC_final(ctx, md, &outl, sizeof(md)) == 1;
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok || size < 3 + 4 * ((outl + 2) / 3) + 1)
        return -ENOMEM;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, md, (int)outl);
    return 0;
}

/* ---- one attempt ---- */

bool routes_webhook_delivered(const routes_webhook_attempt *a) { return a->status >= 200 && a->status < 300; }

int routes_webhook_post(const char *url, const char *secret, const char *msg_id, const char *body, size_t len,
                        routes_webhook_attempt *out)
{
    *out = (routes_webhook_attempt){0};
    int64_t ts = (int64_t)time(NULL);
    char sig[128], h_id[160], h_ts[64], h_sig[160];
    if (routes_webhook_sign(secret, msg_id, ts, body, len, sig, sizeof(sig)) < 0) {
        snprintf(out->error, sizeof(out->error), "the webhook's secret cannot sign");
        return 0;
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", msg_id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    const char *headers[] = {"content-type: application/json", "user-agent: h2pg-webhooks", h_id, h_ts, h_sig};
    client_http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .nheaders = sizeof(headers) / sizeof(headers[0]),
        .body = body,
        .body_len = len,
        .max_response = ROUTES_WEBHOOK_MAX_RESPONSE,
        .public_only = !SETTING(allow_private),
    };
    client_http_response resp;
    int64_t start = aio_now();
    int64_t limit = SETTING(timeout_ms);
    aio_timeout scope;
    aio_timeout_open(&scope, AIO_MSEC(limit));
    int rc = client_http_fetch(&req, &resp);
    aio_timeout_close(&scope);
    out->duration_ms = (aio_now() - start) / AIO_MSEC(1);
    out->status = rc == 0 || rc == -EFBIG ? resp.status : 0;
    if (rc == -ETIMEDOUT && aio_remaining() == 0) {
        /* the caller's deadline, not ours: the caller answers for it */
        client_http_response_dispose(&resp);
        return rc;
    }
    if (rc == -ECANCELED || rc == -ENOMEM) {
        client_http_response_dispose(&resp);
        return rc;
    }
    if (rc == -ETIMEDOUT)
        snprintf(out->error, sizeof(out->error), "no response within WEBHOOK_TIMEOUT_MS (%lld ms)", (long long)limit);
    else if (rc == -EPERM)
        snprintf(out->error, sizeof(out->error), "%s (WEBHOOK_ALLOW_PRIVATE is off)", resp.error);
    else if (rc < 0 && rc != -EFBIG)
        snprintf(out->error, sizeof(out->error), "%s: %s", strerror(-rc), resp.error[0] ? resp.error : "no detail");
    client_http_response_dispose(&resp);
    return 0;
}

int64_t routes_webhook_backoff_ms(int attempts, int64_t base_ms, int64_t max_ms)
{
    int64_t delay = base_ms;
    for (int i = 1; i < attempts && delay < max_ms; i++)
        delay *= 2;
    if (delay > max_ms)
        delay = max_ms;
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)aio_now();
    int64_t half = delay / 2;
    return delay - half + (half > 0 ? (int64_t)(r % (uint64_t)(half + 1)) : 0);
}

/* ---- the dispatcher ---- */

static _Thread_local routes_webhook_counters counters;

void routes_webhook_counters_get(routes_webhook_counters *out) { *out = counters; }

/* Fan-out, one statement: locks the enabled webhooks that have events
 * after their cursor (fanned_to; FOR NO KEY UPDATE SKIP LOCKED: a webhook
 * that another worker or replica fans out now is left to it, the next
 * pass catches up) and, for each, reads the events after its cursor that
 * it subscribes to, at most $1 event ids ahead, and only as many as this
 * worker may still take of it: up to $3 held of one webhook ($4: what it
 * holds, a JSON array of {"webhook_id", "n"}, as for CLAIM), $5 in all (a
 * webhook it may take none of is neither locked nor read, nor is one whose
 * events after its cursor, fewer than $1, are none of its types: its
 * cursor moves when it has one, or when it falls $1 behind, instead of a
 * row lock and an update every pass for every webhook).
 * Those become deliveries leased to this worker (the attempt counted), and
 * the cursor moves past them, or to the end of what was read when it took
 * every one. A webhook whose receiver is slower than its events keeps its
 * backlog in the outbox, not as delivery rows. All or nothing, as one
 * statement; ids in the webhook's event order (the row lock serializes
 * its fan-outs; the deliveries page relies on that). One row of: whether
 * some webhook read all it could and more events wait (fan out again at
 * once), whether some webhook had no room for all its events (fan out
 * again when a lane finishes), how many deliveries were made, and with it,
 * or one per delivery, the columns of a CLAIM row (NULL without one).
 * Whether a webhook near the end of the outbox has an event of its types
 * is a subquery ordered by id, not an EXISTS: PostgreSQL drops the ORDER
 * BY and LIMIT of an EXISTS, and its plan for one was a sequential scan of
 * events (it expects a match early; the matches are the newest rows, at
 * the end), a read of the whole outbox on every pass of a webhook that
 * keeps up. A fan-out whose snapshot is older than
 * another's commit gets the cursor as that one moved it (the row lock
 * re-reads the row) and never moves it back (GREATEST). */
static const db_stmt FANOUT =
    DB_QUERY("webhook_fanout",
             "WITH top AS (SELECT COALESCE(max(id), 0) AS id FROM events), "
             "held AS (SELECT * FROM json_to_recordset($4::json) AS h(webhook_id bigint, n bigint)), "
             "behind AS (SELECT w.id, w.fanned_to, w.events, LEAST($3 - COALESCE(h.n, 0), $5) AS room "
             "FROM webhooks w LEFT JOIN held h ON h.webhook_id = w.id "
             "WHERE NOT w.disabled AND w.fanned_to < (SELECT id FROM top) AND (w.fanned_to + $1 < (SELECT id FROM top) "
             "OR (SELECT e.id FROM events e WHERE e.id > w.fanned_to "
             "AND (e.type = ANY (w.events) OR '*' = ANY (w.events)) ORDER BY e.id LIMIT 1) IS NOT NULL)), "
             "w AS (SELECT w.id, w.fanned_to AS cur, GREATEST(w.fanned_to, LEAST((SELECT id FROM top), "
             "w.fanned_to + $1)) AS upto, w.events, b.room FROM webhooks w JOIN behind b ON b.id = w.id "
             "WHERE b.room > 0 AND NOT w.disabled AND w.fanned_to < (SELECT id FROM top) "
             "FOR NO KEY UPDATE OF w SKIP LOCKED), "
             "cand AS (SELECT w.id AS webhook_id, e.id AS event_id, e.type, w.room, "
             "row_number() OVER (PARTITION BY w.id ORDER BY e.id) AS k FROM w CROSS JOIN LATERAL "
             "(SELECT e.id, e.type FROM events e WHERE e.id > w.cur AND e.id <= w.upto "
             "AND (e.type = ANY (w.events) OR '*' = ANY (w.events)) ORDER BY e.id LIMIT w.room + 1) e), "
             "pick AS (SELECT webhook_id, event_id, type FROM (SELECT c.*, row_number() OVER (ORDER BY event_id, "
             "webhook_id) AS g FROM cand c WHERE k <= room) x WHERE g <= $5), "
             "cand_n AS (SELECT webhook_id, count(*) AS n FROM cand GROUP BY webhook_id), "
             "pick_n AS (SELECT webhook_id, count(*) AS n, max(event_id) AS last FROM pick GROUP BY webhook_id), "
             "agg AS (SELECT w.id, w.cur, w.upto, COALESCE(c.n, 0) AS found, COALESCE(p.n, 0) AS taken, p.last "
             "FROM w LEFT JOIN cand_n c ON c.webhook_id = w.id LEFT JOIN pick_n p ON p.webhook_id = w.id), "
             "mv AS (UPDATE webhooks x SET fanned_to = CASE WHEN a.taken = a.found THEN a.upto ELSE a.last END "
             "FROM agg a WHERE x.id = a.id AND (a.taken = a.found OR a.taken > 0) RETURNING x.id), "
             "ins AS (INSERT INTO webhook_deliveries (webhook_id, event_id, type, attempts, lease_until) "
             "SELECT webhook_id, event_id, type, 1, now() + $2::bigint * interval '1 millisecond' FROM pick "
             "ORDER BY webhook_id, event_id RETURNING id, webhook_id, event_id, attempts), "
             "s AS (SELECT EXISTS (SELECT 1 FROM agg WHERE taken = found AND upto < (SELECT id FROM top)) AS more, "
             "EXISTS (SELECT 1 FROM agg WHERE taken < found) OR EXISTS (SELECT 1 FROM behind WHERE room <= 0) "
             "AS waiting, (SELECT count(*) FROM ins) AS made) "
             "SELECT s.more, s.waiting, s.made, j.* FROM s "
             "LEFT JOIN LATERAL (SELECT i.id, i.attempts, w.url, w.secret, e.id AS event_id, i.webhook_id, e.type, "
             "e.created_at, e.data::text AS data FROM ins i JOIN webhooks w ON w.id = i.webhook_id "
             "JOIN events e ON e.id = i.event_id ORDER BY i.id) j ON true",
             5, "bbiiittiitdt");
/* Leases due deliveries of enabled webhooks and counts the attempt: up
 * to $1, oldest first, and of each webhook no more than make this worker
 * hold $3 of its deliveries ($4: what it holds already, a JSON array of
 * {"webhook_id", "n"}), read from each webhook's own range of the due
 * index (a webhook at its limit is not read at all). Only the rows taken
 * are locked (SKIP LOCKED: another worker's claim has them), and a row
 * that another claim leased after this statement's snapshot fails the
 * UPDATE's re-check of its lease. Ids go from step to step as arrays
 * (= ANY (ARRAY(...))): an index lookup whatever the statistics say,
 * where a join planned on a table that was empty when last analyzed
 * rescans the candidates once per row. "Not settled" is written
 * state NOT IN ('delivered', 'failed'), not state = 'pending': when the
 * due index tested state = 'pending' (before migration 0015), the generic
 * plan looked the ids up by walking that whole index (12 ms a statement
 * with a backlog of thousands) instead of by primary key. A row is due
 * when it has a next_attempt_at (a retry, a released claim, a first
 * attempt the sweep found orphaned): a first attempt in flight has none,
 * its lease guards it. Returns what an attempt needs (the columns of a
 * job row: job_from_row). */
static const db_stmt CLAIM =
    DB_QUERY("webhook_claim",
             "WITH held AS (SELECT * FROM json_to_recordset($4::json) AS h(webhook_id bigint, n bigint)), "
             "pick AS (SELECT x.id FROM webhooks w LEFT JOIN held h ON h.webhook_id = w.id "
             "CROSS JOIN LATERAL (SELECT x.id, x.next_attempt_at FROM webhook_deliveries x "
             "WHERE x.webhook_id = w.id AND x.state = 'pending' AND x.next_attempt_at <= now() "
             "AND (x.lease_until IS NULL OR x.lease_until < now()) ORDER BY x.next_attempt_at, x.id "
             "LIMIT GREATEST($3 - COALESCE(h.n, 0), 0)) x "
             "WHERE NOT w.disabled ORDER BY x.next_attempt_at, x.id LIMIT $1), "
             "locked AS (SELECT id FROM webhook_deliveries WHERE id = ANY (ARRAY(SELECT id FROM pick)) "
             "FOR UPDATE SKIP LOCKED), "
             "c AS (UPDATE webhook_deliveries d SET lease_until = now() + $2::bigint * interval '1 millisecond', "
             "attempts = d.attempts + 1 WHERE d.id = ANY (ARRAY(SELECT id FROM locked)) "
             "AND d.state NOT IN ('delivered', 'failed') "
             "AND (d.lease_until IS NULL OR d.lease_until < now()) "
             "RETURNING d.id, d.webhook_id, d.event_id, d.attempts) "
             "SELECT c.id, c.attempts, w.url, w.secret, e.id, c.webhook_id, e.type, e.created_at, e.data::text "
             "FROM c JOIN webhooks w ON w.id = c.webhook_id LEFT JOIN events e ON e.id = c.event_id "
             "ORDER BY c.id",
             4, "iittiitdt");
/* The outcomes of a pass's finished jobs, one statement for them all: $1
 * is a JSON array of {"id", "attempts" (the claim's count: a delivery
 * that another worker claimed again since, after this one's lease ran
 * out, is left to it), "status" (null: no response), "error" (null when
 * delivered), "state" (delivered; pending: retried in "delay" ms; failed;
 * released: never attempted, the claim undone, attempt count included,
 * and due at once), "gone" (a 410: the webhook is disabled)}. The ids also
 * as an array, and "not settled" as in CLAIM, for the same reasons. A
 * first attempt's outcome leaves next_attempt_at NULL and changes no other
 * indexed column: an update in place (migrations/0015). */
static const db_stmt RECORD =
    DB_STMT("webhook_record",
            "WITH o AS (SELECT * FROM json_to_recordset($1::json) "
            "AS o(id bigint, attempts integer, status integer, error text, state text, delay bigint, gone boolean)), "
            "rel AS (UPDATE webhook_deliveries d SET lease_until = NULL, attempts = d.attempts - 1, "
            "next_attempt_at = COALESCE(d.next_attempt_at, now()) "
            "FROM o WHERE o.state = 'released' AND d.id = ANY (ARRAY(SELECT id FROM o)) AND d.id = o.id "
            "AND d.attempts = o.attempts AND d.state NOT IN ('delivered', 'failed')), "
            "rec AS (UPDATE webhook_deliveries d SET state = o.state, last_status = o.status, last_error = o.error, "
            "lease_until = NULL, delivered_at = CASE WHEN o.state = 'delivered' THEN now() END, "
            "next_attempt_at = CASE WHEN o.state = 'pending' THEN now() + o.delay * interval '1 millisecond' END "
            "FROM o WHERE o.state <> 'released' AND d.id = ANY (ARRAY(SELECT id FROM o)) AND d.id = o.id "
            "AND d.attempts = o.attempts AND d.state NOT IN ('delivered', 'failed') "
            "RETURNING d.webhook_id, o.gone) "
            "UPDATE webhooks SET disabled = true WHERE id IN (SELECT webhook_id FROM rec WHERE gone)",
            1);
/* The sweep, for first attempts whose worker died: the fan-out makes a
 * delivery leased and not due (no next_attempt_at, so that its outcome is
 * an update in place, migrations/0015), and if no outcome is ever recorded
 * nothing else would find it. For each enabled webhook it reads up to $1
 * deliveries after the webhook's swept_to (webhook_sweeps; none: 0), in id
 * order; the first attempts among them whose lease ran out become due (a
 * claim takes them, as the same webhook-id), and swept_to moves to the last
 * one read, or to just before the first one still leased. Below swept_to
 * every delivery is thus settled or due. The webhook's row is not locked
 * (a fan-out would pass the webhook by): its deliveries are made one
 * fan-out at a time under that lock, so one committed after this
 * statement's snapshot has ids above every one the snapshot shows, and
 * swept_to moves only forward (another replica's sweep). Ids as
 * an array as in CLAIM; the UPDATE re-checks each row (a late outcome may
 * have settled it). One row: how many became due, and whether some
 * webhook had more than $1 to read (sweep again at once). */
static const db_stmt SWEEP =
    DB_QUERY("webhook_sweep",
             "WITH s AS (SELECT w.id AS webhook_id, d.id, d.state = 'pending' AND d.next_attempt_at IS NULL AS first, "
             "d.lease_until AS lease FROM webhooks w LEFT JOIN webhook_sweeps sw ON sw.webhook_id = w.id "
             "CROSS JOIN LATERAL (SELECT x.id, x.state, x.next_attempt_at, x.lease_until FROM webhook_deliveries x "
             "WHERE x.webhook_id = w.id AND x.id > COALESCE(sw.swept_to, 0) ORDER BY x.id LIMIT $1) d "
             "WHERE NOT w.disabled), "
             "busy AS (SELECT webhook_id, min(id) AS id FROM s WHERE first AND lease >= now() GROUP BY webhook_id), "
             "seen AS (SELECT s.webhook_id, max(s.id) AS id, count(*) AS n, min(b.id) AS busy FROM s "
             "LEFT JOIN busy b ON b.webhook_id = s.webhook_id GROUP BY s.webhook_id), "
             "rev AS (UPDATE webhook_deliveries d SET next_attempt_at = now() "
             "WHERE d.id = ANY (ARRAY(SELECT id FROM s WHERE first AND (lease IS NULL OR lease < now()))) "
             "AND d.state = 'pending' AND d.next_attempt_at IS NULL "
             "AND (d.lease_until IS NULL OR d.lease_until < now()) "
             "RETURNING 1), "
             "mv AS (INSERT INTO webhook_sweeps AS sw (webhook_id, swept_to) "
             "SELECT webhook_id, COALESCE(busy - 1, id) FROM seen ON CONFLICT (webhook_id) DO UPDATE "
             "SET swept_to = excluded.swept_to WHERE excluded.swept_to > sw.swept_to) "
             "SELECT (SELECT count(*) FROM rev), EXISTS (SELECT 1 FROM seen WHERE n >= $1 AND busy IS NULL)",
             1, "ib");
/* The oldest undelivered: per enabled webhook, its oldest due delivery
 * (the first of its range of the due index), the event of its oldest
 * first attempt in flight (the first after swept_to) and the oldest event
 * after its cursor that it subscribes to (the first one the fan-out will
 * read). In whole seconds rounded down, so that 0 means under a second (a
 * cast alone rounds: 0.5 s read as 1). */
static const db_stmt OLDEST_DUE =
    DB_QUERY("webhook_oldest_due",
             "SELECT floor(COALESCE(extract(epoch FROM now() - LEAST(min(x.at), min(z.at), min(y.at))), 0))::bigint "
             "FROM webhooks w "
             "LEFT JOIN LATERAL (SELECT next_attempt_at AS at FROM webhook_deliveries WHERE webhook_id = w.id "
             "AND state = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 1) x ON true "
             "LEFT JOIN LATERAL (SELECT (SELECT e.created_at FROM events e WHERE e.id = d.event_id) AS at "
             "FROM webhook_deliveries d WHERE d.webhook_id = w.id "
             "AND d.id > COALESCE((SELECT swept_to FROM webhook_sweeps WHERE webhook_id = w.id), 0) "
             "AND d.state = 'pending' AND d.next_attempt_at IS NULL ORDER BY d.id LIMIT 1) z ON true "
             "LEFT JOIN LATERAL (SELECT e.created_at AS at FROM events e WHERE e.id > w.fanned_to "
             "AND (e.type = ANY (w.events) OR '*' = ANY (w.events)) ORDER BY e.id LIMIT 1) y ON true "
             "WHERE NOT w.disabled",
             0, "i");

#define STATEMENT_DEADLINE AIO_SEC(30)
/* The lease outlives an attempt by this much: time to record its outcome. */
#define LEASE_MARGIN_MS 5000

/* One claimed delivery, malloc'd with its strings after it. It waits on
 * the dispatcher's list until a lane may start it, then the lane delivers
 * it and puts it, with its outcome, on the list of finished ones; the pass
 * that records that outcome frees it. */
struct job {
    int64_t id, webhook_id;
    int attempts;
    int64_t claimed_at;
    const char *url, *secret, *body; /* body NULL: the event is no longer stored */
    int body_len;
    struct job *next; /* on the waiting or the finished list */
    /* the outcome */
    long status;       /* 0: no response */
    const char *state; /* "delivered", "pending" (retried after delay ms), "failed" or "released" */
    int64_t delay;
    bool gone;
    char error[340]; /* "" when delivered */
    char text[];
};

/* Decides what becomes of a finished attempt: delivered, retried after a
 * backoff, or failed for good (attempts run out, the event is gone, or a
 * 410, which also disables the webhook). */
static void settle(struct job *j, const routes_webhook_attempt *a)
{
    j->status = a->status;
    if (routes_webhook_delivered(a)) {
        counters.delivered++;
        j->state = "delivered";
        return;
    }
    j->gone = a->status == 410;
    bool last = j->gone || j->body == NULL || j->attempts >= SETTING(max_attempts);
    if (j->body == NULL)
        snprintf(j->error, sizeof(j->error), "the event is no longer stored");
    else if (a->error[0] != '\0')
        snprintf(j->error, sizeof(j->error), "%s", a->error);
    else
        snprintf(j->error, sizeof(j->error), "the receiver answered %ld%s", a->status,
                 j->gone ? ": the webhook is disabled" : "");
    if (j->gone)
        log_info("webhooks: delivery %lld answered 410 Gone; its webhook is disabled", (long long)j->id);
    if (last) {
        counters.failed++;
        j->state = "failed";
    } else {
        counters.retried++;
        j->state = "pending";
        j->delay = routes_webhook_backoff_ms(j->attempts, SETTING(retry_base_ms), SETTING(retry_max_ms));
    }
}

/* One attempt of j; false when it ran to no outcome (cancelled: its lease
 * runs out and another pass retries it). */
static bool deliver(struct job *j)
{
    routes_webhook_attempt a = {0};
    if (j->body != NULL) {
        char msg_id[48];
        snprintf(msg_id, sizeof(msg_id), "msg_%lld", (long long)j->id);
        counters.attempts++;
        if (routes_webhook_post(j->url, j->secret, msg_id, j->body, (size_t)j->body_len, &a) < 0)
            return false;
    }
    settle(j, &a);
    return true;
}

/* What one worker holds of one webhook's deliveries. */
struct hook {
    int64_t webhook_id;
    int held;    /* claimed and not finished: waiting or being attempted */
    int running; /* being attempted */
    /* until then, take no more than may run: a claim of it waited for a
     * lane until it was released (its receiver is slower than its
     * events), and claims beyond its lanes would only be released too */
    int64_t lanes_only_until;
};

/* The dispatcher's lanes: ROUTES_WEBHOOK_LANES tasks that each attempt one
 * claimed delivery after another, at most ROUTES_WEBHOOK_PER_ENDPOINT of
 * one webhook at once, so a slow receiver holds some lanes, never all. A
 * claim takes up to ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT of a webhook's
 * deliveries: the ones beyond what may run wait on the list, and a lane
 * that finishes takes the next it may start. One that waited longer than
 * RELEASE_AFTER is not attempted but released (its claim undone), so that
 * every attempt starts well inside its lease, and its webhook then takes
 * only as many as may run for a while (its receiver is slower than its
 * events: claims held beyond the lanes would only be released again, each
 * a row updated twice for nothing). Outcomes wait on the
 * finished list for the next pass, which records them all in one
 * statement, sent with its claim. */
struct lane {
    struct lanes *lanes;
    struct job *job; /* handed over by wake_lanes */
    bool idle;
    aio_event go;
};

struct lanes {
    struct job *waiting, *waiting_tail; /* oldest claim first */
    size_t held;                        /* jobs claimed and not finished */
    struct hook hooks[ROUTES_WEBHOOK_CLAIM_MAX];
    size_t nhooks;
    struct job *finished; /* newest first, for the next pass to record */
    size_t nfinished;
    struct lane lane[ROUTES_WEBHOOK_LANES];
    aio_event freed; /* a lane finished a job */
};

#define RELEASE_AFTER AIO_MSEC(LEASE_MARGIN_MS / 2)
/* How long a webhook whose claim was released takes only as many
 * deliveries as may run at once. */
#define LANES_ONLY_FOR AIO_SEC(10)

/* The shortest time between two passes of one dispatcher: at most 100
 * claims a second per worker, each of up to ROUTES_WEBHOOK_CLAIM_MAX
 * deliveries; an event waits at most this long for its pass. */
#define PASS_GAP AIO_MSEC(10)

static struct hook *hook_of(struct lanes *l, int64_t webhook_id)
{
    for (size_t i = 0; i < l->nhooks; i++)
        if (l->hooks[i].webhook_id == webhook_id)
            return &l->hooks[i];
    assert(l->nhooks < ROUTES_WEBHOOK_CLAIM_MAX); /* at most one per job held */
    l->hooks[l->nhooks] = (struct hook){.webhook_id = webhook_id};
    return &l->hooks[l->nhooks++];
}

/* A job leaves what the worker holds: onto the finished list. */
static void finish(struct lanes *l, struct job *j)
{
    struct hook *h = hook_of(l, j->webhook_id);
    if (--h->held == 0)
        *h = l->hooks[--l->nhooks];
    l->held--;
    j->next = l->finished;
    l->finished = j;
    l->nfinished++;
}

/* The oldest waiting job whose webhook has a lane to spare, taken off the
 * list (and counted running); NULL if none. Releases the ones that waited
 * too long on the way. */
static struct job *next_startable(struct lanes *l)
{
    int64_t now = aio_now();
    for (struct job **pp = &l->waiting, *prev = NULL; *pp != NULL;) {
        struct job *j = *pp;
        struct hook *h = hook_of(l, j->webhook_id);
        bool stale = now - j->claimed_at > RELEASE_AFTER;
        if (!stale && h->running >= ROUTES_WEBHOOK_PER_ENDPOINT) {
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (l->waiting_tail == j)
            l->waiting_tail = prev;
        if (!stale) {
            h->running++;
            return j;
        }
        j->state = "released";
        counters.released++;
        h->lanes_only_until = now + LANES_ONLY_FOR;
        finish(l, j);
    }
    return NULL;
}

static int lane_run(void *arg)
{
    struct lane *me = arg;
    struct lanes *l = me->lanes;
    for (;;) {
        struct job *j = me->job != NULL ? me->job : next_startable(l);
        me->job = NULL;
        if (j == NULL) {
            me->idle = true;
            aio_event_clear(&me->go);
            if (aio_event_wait(&me->go) < 0)
                return 0; /* a job handed over meanwhile is freed by the dispatcher */
            continue;
        }
        bool ran = deliver(j);
        hook_of(l, j->webhook_id)->running--;
        finish(l, j);
        if (!ran) { /* cancelled: nothing to record */
            l->finished = j->next;
            l->nfinished--;
            free(j);
        }
        aio_event_set(&l->freed);
    }
}

/* Hands startable jobs to idle lanes. Never awaits. */
static void wake_lanes(struct lanes *l)
{
    for (size_t i = 0; i < ROUTES_WEBHOOK_LANES && l->waiting != NULL; i++) {
        struct lane *ln = &l->lane[i];
        if (!ln->idle || ln->job != NULL)
            continue;
        ln->job = next_startable(l);
        if (ln->job == NULL)
            return;
        ln->idle = false;
        aio_event_set(&ln->go);
    }
}

/* The job of row i of a CLAIM result, or of a FANOUT result from its
 * column at (3: after the counts): the delivery's id and attempt count,
 * the webhook's URL and secret, the event's id (NULL: no longer stored),
 * the webhook's id, and the event's type, created_at and data (jsonb as
 * text). The body, the event as GET /events shows it, is written here
 * rather than by json_build_object and to_char in the statement: 3.6 µs
 * of PostgreSQL's time per delivery (EXPLAIN ANALYZE of a fan-out of 64,
 * eight runs each), for a fraction of one here; data is PostgreSQL's
 * own rendering of a jsonb, valid JSON as it is. */
static struct job *job_from_row(const PGresult *res, int i, int at)
{
    int url_len, secret_len, type_len = 0, data_len = 0;
    const char *url = db_get_text(res, i, at + 2, &url_len);
    const char *secret = db_get_text(res, i, at + 3, &secret_len);
    bool stored = !db_is_null(res, i, at + 4);
    const char *type = stored ? db_get_text(res, i, at + 6, &type_len) : NULL;
    const char *data = stored ? db_get_text(res, i, at + 8, &data_len) : NULL;
    /* {"id":N,"type":T,"created_at":"...","data":D} */
    size_t body_cap = stored ? 96 + BASE_JSON_STRING_MAX(type_len) + (size_t)data_len : 0;
    struct job *j = calloc(1, sizeof(*j) + (size_t)url_len + (size_t)secret_len + body_cap + 3);
    if (j == NULL)
        return NULL;
    char *p = j->text;
    j->id = db_get_int(res, i, at);
    j->attempts = (int)db_get_int(res, i, at + 1);
    j->webhook_id = db_get_int(res, i, at + 5);
    j->claimed_at = aio_now();
    j->url = memcpy(p, url, (size_t)url_len);
    p += url_len + 1;
    j->secret = memcpy(p, secret, (size_t)secret_len);
    p += secret_len + 1;
    if (stored) {
        char ts[32];
        db_format_timestamp(db_get_timestamp(res, i, at + 7), ts);
        int n = snprintf(p, body_cap, "{\"id\":%lld,\"type\":", (long long)db_get_int(res, i, at + 4));
        n += (int)base_json_string(p + n, type, (size_t)type_len);
        n += snprintf(p + n, body_cap - (size_t)n, ",\"created_at\":\"%s\",\"data\":", ts);
        assert(n > 0 && (size_t)n + (size_t)data_len + 1 < body_cap);
        memcpy(p + n, data, (size_t)data_len);
        p[n + data_len] = '}';
        j->body = p;
        j->body_len = n + data_len + 1;
    }
    return j;
}

/* arr with o appended; NULL (arr freed) if o is NULL or cannot go in. */
static json_t *append(json_t *arr, json_t *o)
{
    if (json_array_append_new(arr, o) < 0) { /* a NULL o fails too; o is freed */
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* arr as compact JSON text (the caller frees it), arr freed; NULL if arr
 * is NULL or without memory. */
static char *dump(json_t *arr)
{
    char *text = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

/* The RECORD statement's JSON for a list of finished jobs; NULL without
 * memory. The caller frees it. */
static char *outcomes_json(const struct job *list)
{
    json_t *arr = json_array();
    for (const struct job *j = list; arr != NULL && j != NULL; j = j->next)
        arr = append(arr, json_pack("{s:I, s:i, s:o, s:o, s:s, s:I, s:b}", "id", (json_int_t)j->id, "attempts",
                                    j->attempts, "status", j->status > 0 ? json_integer(j->status) : json_null(),
                                    "error", j->error[0] != '\0' ? json_string(j->error) : json_null(), "state",
                                    j->state, "delay", (json_int_t)j->delay, "gone", j->gone));
    return dump(arr);
}

/* The CLAIM and FANOUT statements' JSON of what this worker holds, per
 * webhook (counted as more for a webhook that is to take only what may
 * run); NULL without memory. The caller frees it. */
static char *held_json(const struct lanes *l)
{
    json_t *arr = json_array();
    int64_t now = aio_now();
    for (size_t i = 0; arr != NULL && i < l->nhooks; i++) {
        const struct hook *h = &l->hooks[i];
        int extra = now < h->lanes_only_until ? ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT - ROUTES_WEBHOOK_PER_ENDPOINT : 0;
        arr = append(arr, json_pack("{s:I, s:i}", "webhook_id", (json_int_t)h->webhook_id, "n", h->held + extra));
    }
    return dump(arr);
}

/* Puts the claimed rows of res (their columns from at on; a row whose
 * id there is NULL is no job) on the waiting list; the count, or -ENOMEM
 * (the rest stay leased, and are retried when the lease ends). */
static int queue_claimed(struct lanes *l, const PGresult *res, int at)
{
    int n = PQntuples(res), queued = 0;
    for (int i = 0; i < n; i++) {
        if (db_is_null(res, i, at))
            continue;
        struct job *j = job_from_row(res, i, at);
        if (j == NULL)
            return -ENOMEM;
        hook_of(l, j->webhook_id)->held++;
        l->held++;
        if (l->waiting_tail != NULL)
            l->waiting_tail->next = j;
        else
            l->waiting = j;
        l->waiting_tail = j;
        queued++;
    }
    wake_lanes(l);
    return queued;
}

static void free_jobs(struct job *list)
{
    while (list != NULL) {
        struct job *next = list->next;
        free(list);
        list = next;
    }
}

/* What a pass sends in its one round trip, and what came of it. */
struct round {
    bool fan;            /* fan out first */
    size_t lease;        /* deliveries the fan-out may lease to this worker */
    size_t want;         /* deliveries to claim (0: no claim) */
    bool more;           /* the fan-out read as far as it may: more events wait */
    bool waiting;        /* some webhook's events wait for room in this worker */
    int64_t made;        /* deliveries the fan-out made */
    int leased;          /* how many of them it leased here, or a negative errno */
    int claimed;         /* how many the claim leased, or a negative errno */
    int64_t retry_in_ms; /* the soonest retry among the outcomes recorded; -1: none */
};

static int queued_or_rc(struct lanes *l, const db_call *c, int at)
{
    return c->rc == 0 && c->result != NULL ? queue_claimed(l, c->result, at) : c->rc != 0 ? c->rc : -EIO;
}

/* Reads the fan-out's and the claim's results into r; logs a failure to
 * record outcomes. */
static void round_results(struct lanes *l, struct round *r, db_call *fan, db_call *record, db_call *claim,
                          size_t ndone)
{
    if (fan != NULL && fan->rc == 0 && fan->result != NULL && PQntuples(fan->result) >= 1) {
        r->more = db_get_bool(fan->result, 0, 0);
        r->waiting = db_get_bool(fan->result, 0, 1);
        r->made = db_get_int(fan->result, 0, 2);
        r->leased = queued_or_rc(l, fan, 3);
        if (r->made > 0)
            log_debug("webhooks: the fan-out made %lld deliveries, %d leased here", (long long)r->made, r->leased);
    }
    if (record != NULL && record->rc != 0 && record->rc != -ECANCELED)
        log_warn("webhooks: recording the outcomes of %zu deliveries failed: %s; they are retried when their "
                 "leases end", ndone, strerror(-record->rc));
    if (claim != NULL)
        r->claimed = queued_or_rc(l, claim, 0);
}

/* The soonest retry among the finished jobs, in ms (a released one is
 * due at once); -1 if none is retried. */
static int64_t soonest_retry(const struct job *list)
{
    int64_t soonest = -1;
    for (const struct job *j = list; j != NULL; j = j->next) {
        int64_t in = strcmp(j->state, "pending") == 0 ? j->delay : strcmp(j->state, "released") == 0 ? 0 : -1;
        if (in >= 0 && (soonest < 0 || in < soonest))
            soonest = in;
    }
    return soonest;
}

/* One round trip, up to three statements, each its own transaction, in
 * order: the fan-out (r->fan), leasing up to r->lease of its deliveries
 * here; the outcomes of the finished jobs (taken off the list: one that
 * cannot be recorded is retried when its lease ends); and a claim of up
 * to r->want due deliveries (if any), which sees the fan-out's new
 * deliveries and the recorded ones' leases gone. 0, or the first
 * failure's negative errno (each statement's own outcome is in r). */
static int exchange(struct lanes *l, struct round *r)
{
    struct job *done = l->finished;
    size_t ndone = l->nfinished;
    l->finished = NULL;
    l->nfinished = 0;
    r->retry_in_ms = soonest_retry(done);
    char *outcomes = done != NULL ? outcomes_json(done) : NULL;
    bool need_held = r->want > 0 || (r->fan && r->lease > 0);
    char *held = need_held ? held_json(l) : NULL;
    int64_t lease = SETTING(timeout_ms) + LEASE_MARGIN_MS;
    /* the calls' parameters live as long as this scope */
    db_call fan = DB_CALL(&FANOUT, DB_INT8(ROUTES_WEBHOOK_FANOUT_BATCH), DB_INT8(lease),
                          DB_INT8(ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT), DB_TEXT(held != NULL ? held : "[]"),
                          DB_INT8((int64_t)r->lease));
    db_call record = DB_CALL(&RECORD, DB_TEXT(outcomes));
    db_call claim = DB_CALL(&CLAIM, DB_INT8((int64_t)r->want), DB_INT8(lease),
                            DB_INT8(ROUTES_WEBHOOK_CLAIMED_PER_ENDPOINT), DB_TEXT(held));
    db_call calls[3];
    size_t n = 0, ifan = 3, irec = 3, iclaim = 3;
    int rc = (done != NULL && outcomes == NULL) || (need_held && held == NULL) ? -ENOMEM : 0;
    if (r->fan && (held != NULL || !need_held))
        calls[ifan = n++] = fan;
    if (outcomes != NULL)
        calls[irec = n++] = record;
    if (r->want > 0 && held != NULL)
        calls[iclaim = n++] = claim;
    if (n > 0) {
        aio_timeout scope;
        aio_timeout_open(&scope, STATEMENT_DEADLINE);
        int sent = db_exec_batch(NULL, calls, n, 0);
        aio_timeout_close(&scope);
        rc = sent < 0 ? sent : rc;
        round_results(l, r, ifan < n ? &calls[ifan] : NULL, irec < n ? &calls[irec] : NULL,
                      iclaim < n ? &calls[iclaim] : NULL, ndone);
    }
    db_calls_clear(calls, n);
    free(outcomes);
    free(held);
    free_jobs(done);
    return rc;
}

static void sample_oldest(void)
{
    PGresult *res = NULL;
    aio_timeout scope;
    aio_timeout_open(&scope, STATEMENT_DEADLINE);
    if (db_exec(NULL, &OLDEST_DUE, DB_NO_PARAMS, &res) == 0 && PQntuples(res) == 1)
        counters.oldest_pending_s = (uint64_t)db_get_int(res, 0, 0);
    aio_timeout_close(&scope);
    PQclear(res);
}

static void log_failure(const char *what, int rc, const db_failure *f)
{
    log_warn("webhooks: %s failed: %s%s%s", what, strerror(-rc), rc == -EREMOTEIO ? ": " : "",
             rc == -EREMOTEIO ? f->message : "");
}

/* Deliveries the sweep reads per webhook in one statement: a second of a
 * fast receiver's deliveries, about 2 ms of PostgreSQL's time. */
#define SWEEP_BATCH 4096
/* How often worker 0 sweeps (more often while it has more to read). A
 * first attempt it revives had its lease run out first: seconds. */
#define SWEEP_EVERY AIO_SEC(1)

/* One sweep (SWEEP); sets *more when some webhook has more to read.
 * Returns how many first attempts became due, or a negative errno. */
static int sweep(bool *more)
{
    PGresult *res = NULL;
    aio_timeout scope;
    aio_timeout_open(&scope, STATEMENT_DEADLINE);
    int rc = db_exec(NULL, &SWEEP, DB_PARAMS(DB_INT8(SWEEP_BATCH)), &res);
    aio_timeout_close(&scope);
    if (rc == 0 && PQntuples(res) == 1) {
        rc = (int)db_get_int(res, 0, 0);
        *more = db_get_bool(res, 0, 1);
        if (rc > 0)
            log_warn("webhooks: %d first attempts had no outcome when their leases ran out (a process that "
                     "died?): they are due again", rc);
    } else if (rc == 0) {
        rc = -EIO;
    }
    PQclear(res);
    return rc;
}

/* What a dispatcher remembers between its passes. */
struct passes {
    bool sample;      /* worker 0: samples the oldest due delivery and sweeps */
    bool sweep_more;  /* the last sweep read as far as it may */
    int64_t last_sweep;
    bool more_events; /* the last fan-out read as far as it may: more events wait */
    bool waiting;     /* the last fan-out left events for lack of room here */
    bool backlog;     /* due deliveries may wait unleased: claim at the next pass */
    int64_t last_sample, last_fanout, last_pass;
    int64_t next_claim; /* a claim at the latest then (retries, others' expired leases) */
    uint64_t seen_numbered;
    db_failure failure;
};

/* One pass, one round trip: fan out when there are new events (this
 * thread's sequencer numbered some, the last fan-out read as far as it
 * may, or left events for lack of room and there is room now) or a poll
 * interval passed, record the finished attempts' outcomes, and lease as
 * many deliveries as the worker may still hold. The fan-out makes
 * deliveries only as it leases them; a claim, which has to find due
 * deliveries in the table, runs only when some may be waiting: the last
 * claim found some (a backlog), one of this worker's retries is due, or a
 * poll interval passed (others' retries and expired leases, deliveries
 * left by a replica that died).
 * -ECANCELED when the dispatcher is cancelled, else 0 (failures are
 * logged). */
static int pass(struct lanes *l, struct passes *p)
{
    struct round r = {.retry_in_ms = -1}; /* -1: no outcome recorded, no retry due */
    int64_t now = aio_now();
    if (p->more_events || (p->waiting && l->held < ROUTES_WEBHOOK_CLAIM_MAX) ||
        routes_events_outbox_numbered() != p->seen_numbered || now - p->last_fanout >= AIO_MSEC(SETTING(poll_ms))) {
        p->seen_numbered = routes_events_outbox_numbered();
        p->last_fanout = now;
        r.fan = true;
    }
    wake_lanes(l); /* jobs a finished lane left startable; stale ones released */
    size_t room = ROUTES_WEBHOOK_CLAIM_MAX - l->held;
    bool claim = room > 0 && (p->backlog || now >= p->next_claim);
    /* With both, the room is shared: the fan-out leases new deliveries,
     * the claim (after it) the oldest due ones. */
    r.want = claim ? (r.fan ? (room + 1) / 2 : room) : 0;
    r.lease = r.fan ? room - r.want : 0;
    int rc = r.fan || r.want > 0 || l->finished != NULL ? exchange(l, &r) : 0;
    if (rc == -ECANCELED)
        return rc;
    if (rc < 0)
        log_failure("a pass (fan-out, outcomes, claim)", rc, &p->failure);
    now = aio_now();
    if (claim) {
        /* found some (or failed): look again. What the fan-out left, the
         * claim has seen. */
        p->backlog = r.claimed != 0;
        p->next_claim = now + AIO_MSEC(SETTING(poll_ms));
    }
    if (r.retry_in_ms >= 0 && now + AIO_MSEC(r.retry_in_ms) < p->next_claim)
        p->next_claim = now + AIO_MSEC(r.retry_in_ms);
    /* read as far as it may: the outbox holds more, at once */
    if (r.fan) {
        p->more_events = r.more;
        p->waiting = r.waiting;
    }
    if (p->more_events)
        aio_event_set(&l->freed);
    if (p->sample && (p->sweep_more || aio_now() - p->last_sweep >= SWEEP_EVERY)) {
        p->last_sweep = aio_now();
        p->sweep_more = false;
        int due = sweep(&p->sweep_more);
        if (due == -ECANCELED)
            return due;
        if (due < 0)
            log_failure("the sweep for first attempts left without an outcome", due, &p->failure);
        p->backlog |= due > 0; /* claim them at the next pass */
    }
    if (p->sample && aio_now() - p->last_sample >= AIO_SEC(1)) {
        sample_oldest();
        p->last_sample = aio_now();
    }
    return 0;
}

/* Awaits the next pass: when a lane finished a job (its outcome to
 * record, room to claim), when the sequencer numbered new events (worker
 * 0), when a retry of this worker's is due, or after the poll interval,
 * whichever comes first. -ECANCELED when the dispatcher is cancelled. */
static int await_next_pass(struct lanes *l, const struct passes *p)
{
    int64_t wait = AIO_MSEC(SETTING(poll_ms));
    if (!p->backlog && l->held < ROUTES_WEBHOOK_CLAIM_MAX && p->next_claim - aio_now() < wait)
        wait = p->next_claim - aio_now();
    if (wait <= 0)
        return 0;
    aio_timeout scope;
    aio_timeout_open(&scope, wait);
    int rc = aio_event_wait(&l->freed);
    bool expired = aio_timeout_close(&scope) < 0;
    return rc == -ECANCELED && !expired ? -ECANCELED : 0;
}

static int dispatcher_run(void *arg)
{
    struct passes p = {.sample = *(const bool *)arg};
    db_failure_open(&p.failure);
    struct lanes *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        log_error("webhooks: no memory for the dispatcher: this worker delivers nothing");
        db_failure_close(&p.failure);
        return 0;
    }
    /* the HTTP client's own limit per host (8 by default) would otherwise
     * hold a webhook below its lanes */
    client_http_configure(&(client_http_options){.max_per_host = ROUTES_WEBHOOK_PER_ENDPOINT});
    aio_event_init(&l->freed);
    aio_group g;
    aio_group_init(&g);
    size_t lanes = 0;
    for (size_t i = 0; i < ROUTES_WEBHOOK_LANES; i++) {
        l->lane[i] = (struct lane){.lanes = l};
        aio_event_init(&l->lane[i].go);
        lanes += aio_group_spawn(&g, lane_run, &l->lane[i]) != NULL;
    }
    if (lanes == 0)
        log_error("webhooks: no lane could start: this worker delivers nothing");
    /* worker 0: the sequencer wakes it when it has numbered new events */
    if (p.sample)
        routes_events_outbox_set_waker(&l->freed);
    while (lanes > 0) {
        /* Passes come no closer than PASS_GAP: under load every lane that
         * finishes wakes the dispatcher, and a pass per finished job made
         * claims of a few rows each, whose fixed cost (the due index's
         * walk past the leased rows, the lock and update steps, the
         * statement itself) was most of PostgreSQL's work per delivery.
         * The jobs claimed beyond the lanes keep them busy meanwhile. */
        if (aio_now() < p.last_pass + PASS_GAP && aio_sleep_until(p.last_pass + PASS_GAP) == -ECANCELED)
            break;
        aio_event_clear(&l->freed); /* before the awaits below: a lane freed meanwhile is seen */
        p.last_pass = aio_now();
        if (pass(l, &p) == -ECANCELED)
            break;
        if (await_next_pass(l, &p) == -ECANCELED)
            break;
    }
    if (p.sample)
        routes_events_outbox_set_waker(NULL);
    aio_group_cancel(&g);
    aio_group_join(&g);
    /* claimed and never attempted, or attempted and never recorded: their
     * leases run out and they are retried */
    for (size_t i = 0; i < ROUTES_WEBHOOK_LANES; i++)
        free(l->lane[i].job);
    free_jobs(l->waiting);
    free_jobs(l->finished);
    free(l);
    db_failure_close(&p.failure);
    return 0;
}

/* ---- retention ---- */

/* Settled deliveries whose event is past the retention ($1 s): below the
 * oldest event within it (with none, every event stored or fanned out
 * qualifies). Within a webhook, delivery ids follow event ids, so the
 * oldest deliveries of each webhook by its (webhook_id, id) index are the
 * ones to look at: a statement reads the first $2 of each and deletes up
 * to $2 of those that qualify. A pending one there (a retry to come, or
 * an attempt that will fail it: its event is gone) waits until it is
 * settled, and the deliveries behind it stay until then. */
static const db_stmt PRUNE_DELIVERIES =
    DB_QUERY("webhook_deliveries_prune",
             "WITH lo AS (SELECT COALESCE((SELECT min(id) FROM events WHERE created_at >= now() - "
             "make_interval(secs => $1::bigint)), (SELECT max(id) + 1 FROM events), "
             "(SELECT max(fanned_to) + 1 FROM webhooks), 0) AS id), "
             "head AS (SELECT d.id, d.event_id, d.state FROM webhooks w CROSS JOIN LATERAL "
             "(SELECT x.id, x.event_id, x.state FROM webhook_deliveries x WHERE x.webhook_id = w.id "
             "ORDER BY x.id LIMIT $2) d), "
             "gone AS (DELETE FROM webhook_deliveries WHERE id = ANY (ARRAY(SELECT id FROM head "
             "WHERE event_id < (SELECT id FROM lo) AND state IN ('delivered', 'failed') LIMIT $2)) RETURNING 1) "
             "SELECT count(*) FROM gone",
             2, "i");

static const routes_retention DELIVERIES_RETENTION = {.what = "webhook deliveries",
                                                      .prune = &PRUNE_DELIVERIES,
                                                      .batch = ROUTES_EVENTS_PRUNE_BATCH,
                                                      .retention_s = routes_events_outbox_retention};

aio_task *routes_webhook_pruner_start(void) { return routes_retention_start(&DELIVERIES_RETENTION); }

aio_task *routes_webhook_dispatcher_start(bool sample)
{
    static bool yes = true, no = false;
    return aio_task_spawn(dispatcher_run, sample ? &yes : &no);
}

void routes_webhook_dispatcher_stop(aio_task *dispatcher)
{
    if (dispatcher == NULL)
        return;
    aio_task_cancel(dispatcher);
    aio_task_join(dispatcher);
}
