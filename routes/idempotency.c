#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "aio/aio.h"
#include "base/log.h"
#include "routes/idempotency.h"
#include "routes/retention.h"

/* Claims the key: a new row, or a row whose outcome is older than the
 * retention ($3 seconds) taken over as if it were new. A row that is not
 * expired is locked all the same (ON CONFLICT DO UPDATE locks the row it
 * conflicts with even when its WHERE says no), returns nothing, and is
 * replayed. */
static const db_stmt CLAIM_KEY =
    DB_QUERY("idem_claim",
             "INSERT INTO idempotency_keys AS k (key, request_hash, status, response_body) VALUES ($1, $2, 0, '') "
             "ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = 0, response_body = '', "
             "created_at = now() WHERE k.created_at < now() - make_interval(secs => $3::bigint) RETURNING 1",
             3, "i");
static const db_stmt GET_KEY =
    DB_QUERY("idem_get", "SELECT request_hash, status, response_body FROM idempotency_keys WHERE key = $1", 1, "tit");
static const db_stmt STORE_KEY =
    DB_STMT("idem_store", "UPDATE idempotency_keys SET status = $2, response_body = $3 WHERE key = $1", 3);
/* The outcome kept and the event emitted in one statement: the update
 * first, the event last, emitted whatever the update found (the claim is
 * this transaction's own row, so it finds it; were it not so, only a
 * replay would suffer, never the rule that the change has its event).
 * $3 is the resource's JSON text. */
static const db_stmt STORE_KEY_EMIT =
    DB_QUERY("idem_store_emit",
             "WITH stored AS (UPDATE idempotency_keys SET status = $2::int, response_body = $3::text WHERE key = $1 "
             "RETURNING 1) SELECT (SELECT count(*) FROM stored), "
             "events_emit($4::text, $3::text::jsonb, $5::int8, $6::int8)",
             6, "ii");
static const db_stmt EMIT_EVENT =
    DB_QUERY("idem_emit", "SELECT events_emit($1::text, $2::text::jsonb, $3::int8, $4::int8)", 4, "i");
static const db_stmt FORGET_KEY = DB_STMT("idem_forget", "DELETE FROM idempotency_keys WHERE key = $1", 1);
/* One batch of the pruner, oldest first, skipping rows a claim holds. */
static const db_stmt PRUNE_KEYS =
    DB_QUERY("idem_prune",
             "WITH gone AS (DELETE FROM idempotency_keys k USING "
             "(SELECT key FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1::bigint) "
             "ORDER BY created_at LIMIT $2::bigint FOR UPDATE SKIP LOCKED) old "
             "WHERE k.key = old.key RETURNING 1) SELECT count(*) FROM gone",
             2, "i");

#define DEFAULT_RETENTION_S 86400

/* Every worker sets the same value at start; relaxed is enough. */
static _Atomic int64_t retention_s = DEFAULT_RETENTION_S;

void routes_idempotency_set_retention(int64_t seconds)
{
    atomic_store_explicit(&retention_s, seconds >= 1 ? seconds : 1, memory_order_relaxed);
}

static int64_t retention(void) { return atomic_load_explicit(&retention_s, memory_order_relaxed); }

static void outcome_reset(routes_outcome *o)
{
    json_decref(o->body);
    free(o->stored);
    *o = (routes_outcome){0};
}

int routes_outcome_problem(routes_outcome *o, int status, const char *detail, const char *field)
{
    json_t *errors = NULL;
    if (field != NULL) {
        errors = json_array();
        routes_error(errors, field, detail);
    }
    size_t len;
    char *text = server_problem_json(status, detail, errors, &len);
    outcome_reset(o);
    o->status = status;
    o->body = text != NULL ? json_loadb(text, len, 0, NULL) : NULL;
    free(text);
    return 0;
}

int routes_outcome_created(routes_outcome *o, json_t *object)
{
    outcome_reset(o);
    o->status = 201;
    o->body = object;
    return 0;
}

int routes_idempotency_key(server_req *r, const char **key)
{
    *key = server_req_header(r, "idempotency-key");
    if (*key != NULL && !routes_input_idempotency_key(*key, strlen(*key))) {
        server_respond_problem(r, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return SERVER_ANSWERED;
    }
    return 0;
}

struct run {
    server_req *r;
    const char *key;
    const char *event_type; /* NULL: none */
    char hash[65]; /* of the fingerprint, hex */
    routes_tx_work work;
    void *arg;
    routes_outcome out;
};

/* The stored outcome of an earlier request with the key, or 409 when that
 * request was another one. */
static int replay(struct run *run, db_conn *tx)
{
    PGresult *res;
    int rc = routes_exec(run->r, tx, &GET_KEY, DB_PARAMS(DB_TEXT(run->key)), &res);
    if (rc < 0)
        return rc;
    int len;
    const char *hash = db_get_text(res, 0, 0, &len);
    if (len != 64 || memcmp(hash, run->hash, 64) != 0)
        return routes_outcome_problem(&run->out, 409, "this Idempotency-Key was used with a different request", NULL);
    const char *body = db_get_text(res, 0, 2, &len);
    outcome_reset(&run->out);
    run->out.status = (int)db_get_int(res, 0, 1);
    run->out.stored = strndup(body, (size_t)len);
    return run->out.stored != NULL ? 0 : -ENOMEM;
}

static db_param owner_param(int64_t user_id) { return user_id > 0 ? DB_INT8(user_id) : DB_NULL; }

/* Keeps a 201: its body, for the replays (with a key), and emits its
 * event; one statement either way, the event last, sent with the COMMIT
 * (db_tx_exec_commit), so that events_emit's lock is held for the commit
 * alone and the event costs no round trip of its own. The event's data is
 * the body the client gets, which is what the resource's GET returns. */
static int store(struct run *run, db_conn *tx)
{
    if (run->key == NULL && run->event_type == NULL)
        return 0;
    char *text = json_dumps(run->out.body, JSON_COMPACT);
    if (text == NULL)
        return -ENOMEM;
    char status[8];
    snprintf(status, sizeof(status), "%d", run->out.status);
    PGresult *res = NULL;
    int rc;
    db_param owner = owner_param(run->out.owners[0]), other = owner_param(run->out.owners[1]);
    if (run->key == NULL)
        rc = db_tx_exec_commit(tx, &EMIT_EVENT, DB_PARAMS(DB_TEXT(run->event_type), DB_TEXT(text), owner, other), &res);
    else if (run->event_type == NULL)
        rc = db_tx_exec_commit(tx, &STORE_KEY, DB_PARAMS(DB_TEXT(run->key), DB_TEXT(status), DB_TEXT(text)), &res);
    else {
        rc = db_tx_exec_commit(
            tx, &STORE_KEY_EMIT,
            DB_PARAMS(DB_TEXT(run->key), DB_TEXT(status), DB_TEXT(text), DB_TEXT(run->event_type), owner, other), &res);
        if (rc == 0 && db_get_int(res, 0, 0) != 1)
            log_error("idempotency key %s: its claim was gone when its outcome was stored", run->key);
    }
    PQclear(res);
    free(text);
    return rc;
}

/* Anything but a 201 changed nothing: the claim goes, in the same
 * transaction, so no row is left behind and a retry runs afresh. */
static int forget(struct run *run, db_conn *tx)
{
    PGresult *res;
    return routes_exec(run->r, tx, &FORGET_KEY, DB_PARAMS(DB_TEXT(run->key)), &res);
}

static int run_tx(db_conn *tx, void *arg)
{
    struct run *run = arg;
    outcome_reset(&run->out);
    if (run->key != NULL) {
        PGresult *claimed;
        int rc = routes_exec(run->r, tx, &CLAIM_KEY,
                             DB_PARAMS(DB_TEXT(run->key), DB_TEXTN(run->hash, 64), DB_INT8(retention())), &claimed);
        if (rc < 0)
            return rc;
        if (PQntuples(claimed) == 0)
            return replay(run, tx);
    }
    int rc = run->work(run->r, tx, run->arg, &run->out);
    if (rc < 0)
        return rc;
    if (run->out.status == 201)
        return run->out.body != NULL ? store(run, tx) : -ENOMEM;
    return run->key != NULL ? forget(run, tx) : 0;
}

static void fingerprint_hash(const char *fingerprint, char hex[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(fingerprint, strlen(fingerprint), md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static int answer(server_req *r, routes_outcome *o, const char *created_prefix)
{
    char *text = o->stored != NULL ? strdup(o->stored) : o->body != NULL ? json_dumps(o->body, JSON_COMPACT) : NULL;
    if (text == NULL)
        return routes_problem(r, 500, "the response could not be built");
    if (o->status == 201) {
        json_t *created = o->body != NULL ? json_incref(o->body) : json_loads(text, 0, NULL);
        char location[96];
        snprintf(location, sizeof(location), "%s%lld", created_prefix,
                 (long long)json_integer_value(json_object_get(created, "id")));
        json_decref(created);
        server_respond_header(r, "location", location);
    }
    server_respond(r, o->status, o->status >= 400 ? "application/problem+json" : "application/json", text,
                   strlen(text));
    free(text);
    return 0;
}

int routes_idempotent(server_req *r, const char *key, const char *fingerprint, const char *created_prefix,
                      const char *event_type, routes_tx_work work, void *arg)
{
    struct run run = {.r = r, .key = key, .event_type = event_type, .work = work, .arg = arg};
    fingerprint_hash(fingerprint, run.hash);
    int rc = db_tx(run_tx, &run);
    if (rc >= 0)
        rc = run.out.status != 0 ? answer(r, &run.out, created_prefix)
                                 : routes_problem(r, 500, "the request decided nothing");
    outcome_reset(&run.out);
    return rc;
}

/* ---- retention ---- */

static const routes_retention KEYS_RETENTION = {
    .what = "idempotency keys", .prune = &PRUNE_KEYS, .batch = ROUTES_IDEMPOTENCY_PRUNE_BATCH, .retention_s = retention};

int routes_idempotency_prune(int64_t *deleted) { return routes_retention_prune(&KEYS_RETENTION, deleted); }

aio_task *routes_idempotency_pruner_start(void) { return routes_retention_start(&KEYS_RETENTION); }

void routes_idempotency_pruner_stop(aio_task *pruner) { routes_retention_stop(pruner); }
