#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db/db.h"
#include "routes/common.h"
#include "server/query.h"

static void decref(void *p) { json_decref(p); }

int routes_json_depth(const char *s, size_t len)
{
    int depth = 0, max = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

json_t *routes_body_object(server_req *r)
{
    size_t len;
    const char *body = server_req_body(r, &len);
    json_t *v;
    char detail[256];
    int rc = routes_input_body(server_req_header(r, "content-type"), body, len, &v, detail, sizeof(detail));
    if (rc < 0) {
        server_respond_problem(r, rc == -ENOTSUP ? 415 : 400, detail, NULL);
        return NULL;
    }
    server_arena_defer(server_req_arena(r), decref, v);
    return v;
}

size_t routes_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80; /* count lead bytes, not continuations */
    return n;
}

bool routes_valid_email(const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);
    if (at == NULL || at == s || at == s + len - 1)
        return false;
    if (memchr(at + 1, '@', len - (size_t)(at - s) - 1) != NULL)
        return false;
    return routes_utf8_chars(s, len) <= 320;
}

void routes_error(json_t *errors, const char *field, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", message));
}

bool routes_field_string(json_t *obj, const char *field, bool required, size_t min_chars, size_t max_chars,
                         json_t *errors, const char **out, size_t *len)
{
    json_t *v = json_object_get(obj, field);
    if (v == NULL || (json_is_null(v) && !required)) {
        if (required)
            routes_error(errors, field, "is required");
        return false;
    }
    if (!json_is_string(v)) {
        routes_error(errors, field, "must be a string");
        return false;
    }
    *out = json_string_value(v);
    *len = json_string_length(v);
    size_t chars = routes_utf8_chars(*out, *len);
    char msg[96];
    if (chars < min_chars || chars > max_chars) {
        if (min_chars == 1 && chars == 0)
            snprintf(msg, sizeof(msg), "must not be empty");
        else
            snprintf(msg, sizeof(msg), "must be %zu to %zu characters long", min_chars, max_chars);
        routes_error(errors, field, msg);
        return false;
    }
    return true;
}

bool routes_field_int(json_t *obj, const char *field, bool required, int64_t min, int64_t max, json_t *errors,
                      int64_t *out)
{
    json_t *v = json_object_get(obj, field);
    if (v == NULL || (json_is_null(v) && !required)) {
        if (required)
            routes_error(errors, field, "is required");
        return false;
    }
    if (!json_is_integer(v)) {
        routes_error(errors, field, "must be an integer");
        return false;
    }
    *out = json_integer_value(v);
    if (*out < min || *out > max) {
        char msg[96];
        if (max == INT64_MAX)
            snprintf(msg, sizeof(msg), "must be at least %lld", (long long)min);
        else
            snprintf(msg, sizeof(msg), "must be between %lld and %lld", (long long)min, (long long)max);
        routes_error(errors, field, msg);
        return false;
    }
    return true;
}

void routes_invalid(server_req *r, json_t *errors)
{
    server_respond_problem(r, 422, "the request body failed validation", errors);
}

bool routes_path_id(server_req *r, const char *name, int64_t *id)
{
    const char *v = server_req_param(r, name);
    if (v == NULL || server_parse_id(v, strlen(v), id) < 0) {
        server_respond_problem(r, 404, "no such resource", NULL);
        return false;
    }
    return true;
}

bool routes_page_params(server_req *r, int64_t *limit, int64_t *after)
{
    size_t qlen;
    const char *q = server_req_query(r, &qlen);
    json_t *errors = json_array();
    if (!routes_input_page(q, qlen, limit, after, errors)) {
        server_respond_problem(r, 400, "bad query string", errors);
        return false;
    }
    json_decref(errors);
    return true;
}

static json_t *text(const PGresult *res, int row, int col)
{
    int len;
    const char *s = db_get_text(res, row, col, &len);
    return json_stringn_nocheck(s, (size_t)len); /* the database holds valid UTF-8 */
}

size_t routes_timestamp(int64_t us, char *out)
{
    if (us == INT64_MAX || us == INT64_MIN)
        return (size_t)sprintf(out, "%s", us > 0 ? "infinity" : "-infinity");
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) { /* before 1970: floor, so the fraction counts forward */
        frac += 1000000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return (size_t)sprintf(out, "invalid");
    return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

static json_t *timestamp(const PGresult *res, int row, int col)
{
    char buf[32];
    size_t len = routes_timestamp(db_get_timestamp(res, row, col), buf);
    return json_stringn_nocheck(buf, len);
}

json_t *routes_user_json(const PGresult *res, int row)
{
    return json_pack("{s:I, s:o, s:o, s:o}", "id", (json_int_t)db_get_int(res, row, 0), "name", text(res, row, 1),
                     "email", text(res, row, 2), "created_at", timestamp(res, row, 3));
}

json_t *routes_order_json(const PGresult *res, int row)
{
    return json_pack("{s:I, s:I, s:o, s:I, s:I, s:I, s:o}", "id", (json_int_t)db_get_int(res, row, 0), "user_id",
                     (json_int_t)db_get_int(res, row, 1), "item", text(res, row, 2), "quantity",
                     (json_int_t)db_get_int(res, row, 3), "price_cents", (json_int_t)db_get_int(res, row, 4),
                     "total_cents", (json_int_t)db_get_int(res, row, 5), "created_at", timestamp(res, row, 6));
}

json_t *routes_account_json(const PGresult *res, int row)
{
    return json_pack("{s:I, s:I, s:I, s:o}", "id", (json_int_t)db_get_int(res, row, 0), "user_id",
                     (json_int_t)db_get_int(res, row, 1), "balance_cents", (json_int_t)db_get_int(res, row, 2),
                     "created_at", timestamp(res, row, 3));
}

json_t *routes_transfer_json(const PGresult *res, int row)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:o}", "id", (json_int_t)db_get_int(res, row, 0), "from_account_id",
                     (json_int_t)db_get_int(res, row, 1), "to_account_id", (json_int_t)db_get_int(res, row, 2),
                     "amount_cents", (json_int_t)db_get_int(res, row, 3), "created_at", timestamp(res, row, 4));
}

json_t *routes_page_json(const PGresult *res, int64_t limit, json_t *(*item)(const PGresult *, int))
{
    int n = PQntuples(res);
    json_t *items = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(items, item(res, i));
    json_t *next = n == limit && n > 0 ? json_integer(db_get_int(res, n - 1, 0)) : json_null();
    return json_pack("{s:o, s:o}", "items", items, "next_after", next);
}

void routes_created(server_req *r, const char *prefix, int64_t id, json_t *body)
{
    char location[64];
    snprintf(location, sizeof(location), "%s%lld", prefix, (long long)id);
    server_respond_header(r, "location", location);
    server_respond_json(r, 201, body);
}
