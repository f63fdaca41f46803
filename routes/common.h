/* What the REST handlers share: reading JSON bodies (415 / 400 / 422 as the
 * contract says), validating fields into an RFC 9457 "errors" list, path
 * ids, keyset pagination, and turning rows into the contract's objects. */
#ifndef H2PG_ROUTES_COMMON_H
#define H2PG_ROUTES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "routes/input.h"
#include "server/http.h"

/* Checks the Content-Type (application/json, else 415) and parses the body
 * into an object (else 400: malformed JSON, invalid UTF-8, a NUL byte,
 * duplicate keys, nesting deeper than ROUTES_MAX_JSON_DEPTH, not an
 * object), with routes_input_body. On failure the problem is sent and NULL
 * returned; on success the object belongs to the request's arena. */
json_t *routes_body_object(server_req *r);

/* The nesting depth of a JSON text (brackets outside strings). Pure. */
int routes_json_depth(const char *s, size_t len);

/* Unicode characters in valid UTF-8 (what "str 1..200" counts). Pure. */
size_t routes_utf8_chars(const char *s, size_t len);

/* Exactly one '@', something on both sides, at most 320 characters. Pure. */
bool routes_valid_email(const char *s, size_t len);

/* A validation error list under construction ("errors": [{field, message}]). */
void routes_error(json_t *errors, const char *field, const char *message);

/* Field readers: on a problem they append to errors and return false.
 * required false: an absent field is fine (returns false with nothing
 * appended, *present = false). JSON null counts as absent for optional
 * fields and as the wrong type for required ones. */
bool routes_field_string(json_t *obj, const char *field, bool required, size_t min_chars, size_t max_chars,
                         json_t *errors, const char **out, size_t *len);
bool routes_field_int(json_t *obj, const char *field, bool required, int64_t min, int64_t max, json_t *errors,
                      int64_t *out);

/* Sends 422 with the errors (consumed). */
void routes_invalid(server_req *r, json_t *errors);

/* The {id} path parameter as a positive 64-bit id, or sends 404 and
 * returns false. */
bool routes_path_id(server_req *r, const char *name, int64_t *id);

/* ?limit= (1..100, default 20) and ?after= (id, default 0), read with
 * routes_input_page: or sends 400 with the errors and returns false. */
bool routes_page_params(server_req *r, int64_t *limit, int64_t *after);

/* Column lists the objects below read, in this order. Timestamps come back
 * binary and are formatted here (routes_timestamp), not by to_char on the
 * server: the database is the shared bottleneck, formatting is not. */
#define ROUTES_USER_COLUMNS "id, name, email, created_at"
#define ROUTES_ORDER_COLUMNS "id, user_id, item, quantity, price_cents, total_cents, created_at"
#define ROUTES_ACCOUNT_COLUMNS "id, user_id, balance_cents, created_at"
#define ROUTES_TRANSFER_COLUMNS "id, from_account_id, to_account_id, amount_cents, created_at"

/* Unix microseconds as the contract's UTC timestamp with microseconds,
 * "2026-11-22T08:46:30.262000Z", into out (at least 32 bytes); returns the
 * length. INT64_MAX / INT64_MIN give "infinity" / "-infinity". Pure. */
size_t routes_timestamp(int64_t us, char *out);

/* Row `row` of a result read with the matching column list, as a new JSON object. */
json_t *routes_user_json(const PGresult *res, int row);
json_t *routes_order_json(const PGresult *res, int row);
json_t *routes_account_json(const PGresult *res, int row);
json_t *routes_transfer_json(const PGresult *res, int row);

/* {"items": [rows...], "next_after": last id when the page is full, else null}. */
json_t *routes_page_json(const PGresult *res, int64_t limit, json_t *(*item)(const PGresult *, int));

/* Sends 201 with the object and Location: <prefix><id>. */
void routes_created(server_req *r, const char *prefix, int64_t id, json_t *body);

#endif
