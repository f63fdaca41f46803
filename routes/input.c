#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "routes/input.h"
#include "server/parse.h"

/* ---- primitives ---- */

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

size_t routes_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80; /* count lead bytes, not continuations */
    return n;
}

/* The next code point of strict UTF-8 at s[*i..len), advancing *i; -1 for
 * a byte that does not start a well-formed sequence (overlong forms,
 * surrogates and values past U+10FFFF included). */
static int32_t utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    unsigned c = s[(*i)++];
    if (c < 0x80)
        return (int32_t)c;
    size_t need;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0)
        need = 1, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        need = 2, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        need = 3, cp = c & 0x07, min = 0x10000;
    else
        return -1;
    if (len - *i < need)
        return -1;
    for (size_t k = 0; k < need; k++) {
        if ((s[*i + k] & 0xc0) != 0x80)
            return -1;
        cp = cp << 6 | (s[*i + k] & 0x3f);
    }
    *i += need;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    return (int32_t)cp;
}

/* A control character (C0, DEL, C1) or a space (Unicode White_Space). */
static bool space_or_control(int32_t cp)
{
    return cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

const char *routes_email_problem(const char *s, size_t len)
{
    assert(s != NULL || len == 0);
    size_t chars = 0, ats = 0;
    for (size_t i = 0; i < len; chars++) {
        int32_t cp = utf8_next((const unsigned char *)s, len, &i);
        if (cp < 0)
            return "must be valid UTF-8";
        if (space_or_control(cp))
            return "must not contain spaces or control characters";
        ats += cp == '@';
    }
    if (ats != 1 || s[0] == '@' || s[len - 1] == '@')
        return "must contain exactly one @ with text on both sides";
    if (chars > 320)
        return "must be at most 320 characters long";
    return NULL;
}

bool routes_valid_email(const char *s, size_t len) { return routes_email_problem(s, len) == NULL; }

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

/* ---- the contract's inputs ---- */

bool routes_input_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

int routes_input_body(const char *content_type, const char *body, size_t len, json_t **out, char *detail,
                      size_t detail_len)
{
    assert(out != NULL && detail != NULL && detail_len >= 1);
    assert(body != NULL || len == 0);
    *out = NULL;
    detail[0] = '\0';
    if (!routes_input_is_json(content_type)) {
        snprintf(detail, detail_len, "the request body must be application/json");
        return -ENOTSUP;
    }
    if (body == NULL)
        body = ""; /* jansson refuses a NULL buffer whatever its length */
    if (routes_json_depth(body, len) > ROUTES_MAX_JSON_DEPTH) {
        snprintf(detail, detail_len, "the JSON body is nested too deeply");
        return -EINVAL;
    }
    /* JSON has no place for a raw NUL byte, and jansson (2.14) skips one
     * that follows a number or a literal: {"a":1<NUL>} would load */
    const char *nul = memchr(body, '\0', len);
    if (nul != NULL) {
        snprintf(detail, detail_len, "the body is not valid JSON: a NUL byte at offset %zu", (size_t)(nul - body));
        return -EINVAL;
    }
    json_error_t err;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (v == NULL) {
        snprintf(detail, detail_len, "the body is not valid JSON: %s", err.text);
        return -EINVAL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        snprintf(detail, detail_len, "the body must be a JSON object");
        return -EINVAL;
    }
    *out = v;
    return 0;
}

bool routes_input_user(json_t *body, bool create, routes_user_input *in, json_t *errors)
{
    size_t before = json_array_size(errors);
    *in = (routes_user_input){0};
    routes_field_string(body, "name", create, 1, 200, errors, &in->name, &in->name_len);
    const char *problem;
    if (routes_field_string(body, "email", create, 1, 320, errors, &in->email, &in->email_len) &&
        (problem = routes_email_problem(in->email, in->email_len)) != NULL) {
        routes_error(errors, "email", problem);
        in->email = NULL;
        in->email_len = 0;
    }
    if (!create && json_array_size(errors) == before && in->name == NULL && in->email == NULL)
        routes_error(errors, "name", "give at least one of name and email");
    return json_array_size(errors) == before;
}

bool routes_input_order(json_t *body, routes_order_input *in, json_t *errors)
{
    size_t before = json_array_size(errors);
    *in = (routes_order_input){0};
    routes_field_string(body, "item", true, 1, 200, errors, &in->item, &in->item_len);
    bool q_ok = routes_field_int(body, "quantity", true, 1, 10000, errors, &in->quantity);
    bool p_ok = routes_field_int(body, "price_cents", true, 0, INT64_MAX, errors, &in->price_cents);
    if (q_ok && p_ok && __builtin_mul_overflow(in->quantity, in->price_cents, &in->total_cents))
        routes_error(errors, "price_cents", "quantity times price_cents does not fit in 64 bits");
    return json_array_size(errors) == before;
}

bool routes_input_account(json_t *body, routes_account_input *in, json_t *errors)
{
    size_t before = json_array_size(errors);
    *in = (routes_account_input){0};
    routes_field_int(body, "user_id", true, 1, INT64_MAX, errors, &in->user_id);
    routes_field_int(body, "balance_cents", true, 0, INT64_MAX, errors, &in->balance_cents);
    return json_array_size(errors) == before;
}

bool routes_input_transfer(json_t *body, routes_transfer_input *in, json_t *errors)
{
    size_t before = json_array_size(errors);
    *in = (routes_transfer_input){0};
    bool f = routes_field_int(body, "from_account_id", true, 1, INT64_MAX, errors, &in->from_account_id);
    bool t = routes_field_int(body, "to_account_id", true, 1, INT64_MAX, errors, &in->to_account_id);
    routes_field_int(body, "amount_cents", true, 1, INT64_MAX, errors, &in->amount_cents);
    if (f && t && in->from_account_id == in->to_account_id)
        routes_error(errors, "to_account_id", "must differ from from_account_id");
    return json_array_size(errors) == before;
}

bool routes_input_idempotency_key(const char *key, size_t len)
{
    assert(key != NULL || len == 0);
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

bool routes_input_page(const char *query, size_t query_len, int64_t *limit, int64_t *after, json_t *errors)
{
    size_t before = json_array_size(errors), vlen;
    char v[64];
    *limit = 20;
    *after = 0;
    int rc = server_parse_query_param(query, query_len, "limit", v, sizeof(v), &vlen);
    if (rc != -ENOENT && (rc < 0 || server_parse_int64(v, vlen, true, limit) < 0 || *limit < 1 || *limit > 100))
        routes_error(errors, "limit", "must be an integer between 1 and 100");
    rc = server_parse_query_param(query, query_len, "after", v, sizeof(v), &vlen);
    if (rc != -ENOENT && (rc < 0 || server_parse_id(v, vlen, after) < 0))
        routes_error(errors, "after", "must be a positive 64-bit integer id");
    return json_array_size(errors) == before;
}
