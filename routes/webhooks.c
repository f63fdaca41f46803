/* Webhooks: subscriptions to the events, their deliveries, and a ping that
 * calls the receiver inside the request. Delivery itself is the
 * dispatcher's (routes/webhook_dispatch.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "routes/handler.h"
#include "routes/webhook_dispatch.h"

/* events travel as a comma-joined string (types never hold a comma) and
 * become an array in webhook_json: the row mapper knows no arrays */
#define WEBHOOK_COLUMNS "id, url, array_to_string(events, ',') AS events, disabled, created_at"
#define DELIVERY_COLUMNS                                                                                               \
    "id, event_id, type, state, attempts, last_status, last_error, next_attempt_at, delivered_at"

/* after_event_id: the newest event already committed, so a webhook gets
 * only the events that commit after it exists. Committed events may still
 * wait to be numbered (migrations/0008): SEQUENCE_NOW numbers them first,
 * in the same implicit transaction, so they count as before. */
static const db_stmt SEQUENCE_NOW = DB_QUERY("webhook_sequence_now", "SELECT events_sequence(1000000)", 0, "i");
static const db_stmt INSERT_WEBHOOK =
    DB_QUERY("webhook_insert",
             "INSERT INTO webhooks (url, events, secret, after_event_id, fanned_to) "
             "SELECT $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3, m, m "
             "FROM (SELECT COALESCE(max(id), 0) AS m FROM events) top RETURNING " WEBHOOK_COLUMNS ", secret",
             3, "ittbdt");
static const db_stmt LIST_WEBHOOKS =
    DB_QUERY("webhook_list", "SELECT " WEBHOOK_COLUMNS " FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2", 2, "ittbd");
static const db_stmt GET_WEBHOOK =
    DB_QUERY("webhook_get", "SELECT " WEBHOOK_COLUMNS " FROM webhooks WHERE id = $1", 1, "ittbd");
static const db_stmt GET_WEBHOOK_TARGET =
    DB_QUERY("webhook_target", "SELECT url, secret FROM webhooks WHERE id = $1", 1, "tt");
static const db_stmt DELETE_WEBHOOK =
    DB_QUERY("webhook_delete", "DELETE FROM webhooks WHERE id = $1 RETURNING 1", 1, "i");
/* its deliveries go with it: they hold no foreign key (migrations/0016) */
static const db_stmt DELETE_DELIVERIES =
    DB_STMT("webhook_delete_deliveries", "DELETE FROM webhook_deliveries WHERE webhook_id = $1", 1);
/* A page of a webhook's deliveries after id $2, by id: the (webhook_id, id)
 * index (migrations/0014). */
static const db_stmt LIST_DELIVERIES =
    DB_QUERY("webhook_deliveries",
             "SELECT " DELIVERY_COLUMNS " FROM webhook_deliveries WHERE webhook_id = $1 AND id > $2 ORDER BY id "
             "LIMIT $3",
             3, "iittiitdd");
static const db_stmt WEBHOOK_EXISTS = DB_QUERY("webhook_exists", "SELECT 1 FROM webhooks WHERE id = $1", 1, "i");

#define MAX_URL 2048

static const char *const EVENT_TYPES[] = {"user.created", "order.created", "account.created", "transfer.created"};

typedef struct webhook_input {
    const char *url;
    size_t url_len;
    char *events_json; /* the array as JSON text, freed by the caller */
} webhook_input;

/* Absolute http(s) URL with a host: what the dispatcher can call. */
static bool valid_url(const char *u, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f)
            return false;
    size_t skip;
    if (len > 7 && strncasecmp(u, "http://", 7) == 0)
        skip = 7;
    else if (len > 8 && strncasecmp(u, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    const char *auth = u + skip, *end = u + len;
    const char *stop = auth;
    while (stop < end && *stop != '/' && *stop != '?' && *stop != '#')
        stop++;
    const char *host = auth;
    for (const char *p = auth; p < stop; p++)
        if (*p == '@')
            host = p + 1;
    if (host >= stop)
        return false;
    if (*host == '[') { /* an IPv6 literal */
        const char *close = memchr(host, ']', (size_t)(stop - host));
        return close != NULL && close > host + 1 && (close + 1 == stop || close[1] == ':');
    }
    return *host != ':';
}

static bool known_type(const char *t)
{
    for (size_t i = 0; i < sizeof(EVENT_TYPES) / sizeof(EVENT_TYPES[0]); i++)
        if (strcmp(t, EVENT_TYPES[i]) == 0)
            return true;
    return false;
}

static bool validate_webhook(json_t *body, void *out, json_t *errors)
{
    webhook_input *in = out;
    *in = (webhook_input){0};
    bool ok = routes_field_string(body, "url", true, 1, MAX_URL, errors, &in->url, &in->url_len);
    if (ok && !valid_url(in->url, in->url_len)) {
        routes_error(errors, "url", "must be an absolute http:// or https:// URL with a host");
        ok = false;
    }
    json_t *events = json_object_get(body, "events");
    if (!json_is_array(events) || json_array_size(events) == 0) {
        routes_error(errors, "events", "must be a non-empty array of event types, or [\"*\"]");
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(events, i, v) {
        const char *t = json_string_value(v);
        if (t == NULL || !(known_type(t) || (strcmp(t, "*") == 0 && json_array_size(events) == 1))) {
            routes_error(errors, "events",
                         "each must be one of user.created, order.created, account.created, transfer.created; "
                         "or the array is [\"*\"]");
            return false;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(json_string_value(json_array_get(events, k)), t) == 0) {
                routes_error(errors, "events", "lists a type twice");
                return false;
            }
    }
    if (!ok)
        return false;
    in->events_json = json_dumps(events, JSON_COMPACT);
    return in->events_json != NULL;
}

/* A row of WEBHOOK_COLUMNS (and secret, when present) as the contract's
 * webhook. */
static json_t *webhook_json(const PGresult *res, int row)
{
    json_t *w = db_row_json(res, row);
    if (w == NULL)
        return NULL;
    json_t *events = json_array();
    const char *joined = json_string_value(json_object_get(w, "events"));
    for (const char *p = joined; events != NULL && p != NULL && *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        json_array_append_new(events, json_stringn(p, n));
        p = comma != NULL ? comma + 1 : NULL;
    }
    if (events == NULL || json_object_set_new(w, "events", events) < 0) {
        json_decref(w);
        return NULL;
    }
    return w;
}

static int create_webhook(server_req *r)
{
    webhook_input in;
    char secret[96];
    int rc = routes_body(r, validate_webhook, &in);
    if (rc < 0)
        return rc;
    rc = routes_webhook_secret(secret, sizeof(secret));
    db_call calls[] = {DB_CALL0(&SEQUENCE_NOW),
                       DB_CALL(&INSERT_WEBHOOK, DB_TEXTN(in.url, in.url_len), DB_TEXT(in.events_json), DB_TEXT(secret))};
    if (rc == 0)
        rc = routes_batch(r, NULL, calls, 2, DB_BATCH_ATOMIC);
    free(in.events_json);
    return rc < 0 ? rc : routes_created(r, "/webhooks/", webhook_json(calls[1].result, 0));
}

static int list_webhooks(server_req *r)
{
    routes_page page;
    PGresult *res;
    int rc = routes_page_params(r, &page);
    if (rc == 0)
        rc = routes_read(r, &LIST_WEBHOOKS, DB_PARAMS(DB_INT8(page.after), DB_INT8(page.limit)), &res);
    if (rc < 0)
        return rc;
    int n = PQntuples(res);
    json_t *items = json_array();
    for (int i = 0; items != NULL && i < n; i++)
        if (json_array_append_new(items, webhook_json(res, i)) < 0) {
            json_decref(items);
            items = NULL;
        }
    json_t *next = n == page.limit && n > 0 ? json_integer(db_get_int(res, n - 1, 0)) : json_null();
    return routes_json(r, 200, items != NULL ? json_pack("{s:o, s:o}", "items", items, "next_after", next) : NULL);
}

static int get_webhook(server_req *r)
{
    int64_t id;
    PGresult *res;
    int rc = routes_path_id(r, "id", &id);
    if (rc == 0)
        rc = routes_read(r, &GET_WEBHOOK, DB_PARAMS(DB_INT8(id)), &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        return routes_problem(r, 404, "no such webhook");
    return routes_json(r, 200, webhook_json(res, 0));
}

struct deletion {
    server_req *r;
    int64_t id;
    bool found;
};

/* The webhook, then its deliveries. The first statement waits for a
 * fan-out that holds the webhook's row lock; the second, a statement of
 * its own (READ COMMITTED), sees every delivery that fan-out made, and no
 * fan-out makes one after: each locks the webhook's row first. */
static int delete_body(db_conn *tx, void *arg)
{
    struct deletion *d = arg;
    PGresult *res;
    db_params id = DB_PARAMS(DB_INT8(d->id));
    int rc = routes_exec(d->r, tx, &DELETE_WEBHOOK, id, &res);
    if (rc < 0 || !(d->found = PQntuples(res) > 0))
        return rc;
    return routes_exec(d->r, tx, &DELETE_DELIVERIES, id, &res);
}

static int delete_webhook(server_req *r)
{
    struct deletion d = {.r = r};
    int rc = routes_path_id(r, "id", &d.id);
    if (rc == 0)
        rc = db_tx(delete_body, &d);
    if (rc < 0)
        return rc;
    if (!d.found)
        return routes_problem(r, 404, "no such webhook");
    server_respond(r, 204, NULL, "", 0);
    return 0;
}

/* The webhook and the page in one round trip; an unknown webhook is a 404,
 * not an empty page. */
static int list_deliveries(server_req *r)
{
    int64_t id;
    routes_page page;
    int rc = routes_path_id(r, "id", &id);
    if (rc == 0)
        rc = routes_page_params(r, &page);
    if (rc < 0)
        return rc;
    db_call c[] = {DB_CALL(&WEBHOOK_EXISTS, DB_INT8(id)),
                   DB_CALL(&LIST_DELIVERIES, DB_INT8(id), DB_INT8(page.after), DB_INT8(page.limit))};
    c[0].required = true;
    rc = routes_gather(r, c, 2);
    if (rc == -ENOENT)
        return routes_problem(r, 404, "no such webhook");
    if (rc < 0)
        return rc;
    return routes_page_answer(r, c[1].result, page.limit);
}

/* A ping event, sent now; the request's deadline and cancellation hold
 * (routes_webhook_post returns -ETIMEDOUT / -ECANCELED for them, and the
 * middleware answers 504). Anything the receiver does is a 200 that says
 * what happened. */
static int ping_webhook(server_req *r)
{
    int64_t id;
    PGresult *res;
    int rc = routes_path_id(r, "id", &id);
    if (rc == 0)
        rc = routes_read(r, &GET_WEBHOOK_TARGET, DB_PARAMS(DB_INT8(id)), &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        return routes_problem(r, 404, "no such webhook");
    int len;
    const char *url = db_get_text(res, 0, 0, &len);
    const char *secret = db_get_text(res, 0, 1, &len);
    char now[40], msg_id[64], rnd[72];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    db_format_timestamp((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, now);
    if (routes_webhook_secret(rnd, sizeof(rnd)) < 0)
        return -EIO;
    /* a fresh id per ping, from random bytes; '/' and '+' are fine in it */
    snprintf(msg_id, sizeof(msg_id), "ping_%.24s", rnd + 6);
    char *body = NULL;
    json_t *event = json_pack("{s:n, s:s, s:s, s:{s:I}}", "id", "type", "ping", "created_at", now, "data",
                              "webhook_id", (json_int_t)id);
    if (event != NULL)
        body = json_dumps(event, JSON_COMPACT);
    json_decref(event);
    if (body == NULL)
        return -ENOMEM;
    routes_webhook_attempt a;
    rc = routes_webhook_post(url, secret, msg_id, body, strlen(body), &a);
    free(body);
    if (rc < 0)
        return rc;
    return routes_json(r, 200,
                       json_pack("{s:o, s:o, s:I}", "status", a.status > 0 ? json_integer(a.status) : json_null(),
                                 "error", a.error[0] != '\0' ? json_string(a.error) : json_null(), "duration_ms",
                                 (json_int_t)a.duration_ms));
}

/* everything under /webhooks: administrators only (API.md) */
ROUTES({.method = "POST", .pattern = "/webhooks", .handler = create_webhook, .admin = true},
       {.method = "GET", .pattern = "/webhooks", .handler = list_webhooks, .admin = true},
       {.method = "GET", .pattern = "/webhooks/{id}", .handler = get_webhook, .admin = true},
       {.method = "DELETE", .pattern = "/webhooks/{id}", .handler = delete_webhook, .admin = true},
       {.method = "GET", .pattern = "/webhooks/{id}/deliveries", .handler = list_deliveries, .admin = true},
       {.method = "POST", .pattern = "/webhooks/{id}/ping", .handler = ping_webhook, .admin = true});
