/* What clients send the REST handlers, read without a request, a server or
 * a database: the JSON body (Content-Type, syntax, nesting, duplicates),
 * each request body of the contract, the Idempotency-Key header and the
 * paging query string. The handlers answer with what these decide; the
 * fuzz targets (fuzz/) drive them directly.
 *
 * Pure functions: no shared state, safe from any thread, never await. The
 * validators append {field, message} objects to a caller's errors array
 * and return true exactly when they appended nothing. */
#ifndef H2PG_ROUTES_INPUT_H
#define H2PG_ROUTES_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Deepest nesting a body may have: checked before parsing, because the
 * parser recurses and a handler runs on a small coroutine stack. */
#define ROUTES_MAX_JSON_DEPTH 32

/* ---- primitives ---- */

/* The nesting depth of a JSON text (brackets outside strings). */
int routes_json_depth(const char *s, size_t len);

/* Unicode characters in valid UTF-8 (what "str 1..200" counts). */
size_t routes_utf8_chars(const char *s, size_t len);

/* An email as the contract has it: valid UTF-8 without spaces or control
 * characters (C0, DEL, C1, and every Unicode White_Space character: the
 * NBSP, U+2000..U+200A, U+2028, U+3000...), exactly one '@' with something
 * on both sides, at most 320 characters. routes_email_problem says why not
 * (a message for the errors list; the first rule broken, in that order),
 * or NULL when it is one. Uniqueness ignores case, which is the database's
 * business (a unique index on lower(email)). */
const char *routes_email_problem(const char *s, size_t len);
bool routes_valid_email(const char *s, size_t len);

/* Appends {field, message} to an "errors" list. */
void routes_error(json_t *errors, const char *field, const char *message);

/* Field readers: on a problem they append to errors and return false.
 * required false: an absent field is fine (returns false with nothing
 * appended). JSON null counts as absent for optional fields and as the
 * wrong type for required ones. */
bool routes_field_string(json_t *obj, const char *field, bool required, size_t min_chars, size_t max_chars,
                         json_t *errors, const char **out, size_t *len);
bool routes_field_int(json_t *obj, const char *field, bool required, int64_t min, int64_t max, json_t *errors,
                      int64_t *out);

/* ---- the contract's inputs ---- */

/* Reads a request body as a JSON object. content_type is the header's value
 * (NULL when absent); body may be NULL only when len is 0. Returns 0 and
 * sets *out to a new object (the caller decrefs it); -ENOTSUP when the
 * Content-Type is not application/json (415); -EINVAL for malformed JSON,
 * invalid UTF-8, a NUL byte, duplicate keys, nesting deeper than
 * ROUTES_MAX_JSON_DEPTH or a value that is not an object (400). On failure
 * *out is NULL and detail (detail_len >= 1) holds the problem's detail. */
int routes_input_body(const char *content_type, const char *body, size_t len, json_t **out, char *detail,
                      size_t detail_len);

/* Whether a Content-Type value is application/json (any case, optional
 * spaces, parameters after ';'); NULL is not. */
bool routes_input_is_json(const char *content_type);

/* POST /users (create: both fields required) and PATCH /users/{id} (at
 * least one of them). The strings point into body and live as long as it;
 * an absent field is NULL with length 0. */
typedef struct routes_user_input {
    const char *name; /* 1..200 characters */
    size_t name_len;
    const char *email; /* routes_valid_email */
    size_t email_len;
} routes_user_input;
bool routes_input_user(json_t *body, bool create, routes_user_input *in, json_t *errors);

/* POST /users/{id}/orders. item points into body. */
typedef struct routes_order_input {
    const char *item; /* 1..200 characters */
    size_t item_len;
    int64_t quantity;    /* 1..10000 */
    int64_t price_cents; /* >= 0 */
    int64_t total_cents; /* quantity * price_cents, which fits in 64 bits */
} routes_order_input;
bool routes_input_order(json_t *body, routes_order_input *in, json_t *errors);

/* POST /accounts. */
typedef struct routes_account_input {
    int64_t user_id;       /* >= 1 */
    int64_t balance_cents; /* >= 0 */
} routes_account_input;
bool routes_input_account(json_t *body, routes_account_input *in, json_t *errors);

/* POST /transfers. */
typedef struct routes_transfer_input {
    int64_t from_account_id; /* >= 1 */
    int64_t to_account_id;   /* >= 1, != from_account_id */
    int64_t amount_cents;    /* >= 1 */
} routes_transfer_input;
bool routes_input_transfer(json_t *body, routes_transfer_input *in, json_t *errors);

/* An Idempotency-Key value: 1 to 255 visible ASCII characters (0x21..0x7e). */
bool routes_input_idempotency_key(const char *key, size_t len);

/* ?limit= (1..100, default 20) and ?after= (an id, default 0) of a raw
 * query string (may be NULL when query_len is 0). */
bool routes_input_page(const char *query, size_t query_len, int64_t *limit, int64_t *after, json_t *errors);

#endif
