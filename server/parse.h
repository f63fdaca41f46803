/* Query-string parameters and strict decimal numbers, for the values that
 * come from a request line (paths, query strings), a header or a body.
 * Pure functions: no allocation, no shared state, safe from any thread,
 * never await. */
#ifndef H2PG_SERVER_PARSE_H
#define H2PG_SERVER_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Finds parameter `name` in a raw query string (the part after '?',
 * length-delimited, may be empty and then NULL), percent-decoding the value
 * ('+' means space) into out (outlen >= 1; NUL-terminated, "" on any error).
 * Pairs are separated by '&'; a pair without '=' has an empty value. Names
 * are compared after decoding too; a pair whose name cannot be decoded never
 * matches. The first occurrence wins, even when its value is bad. Returns 0
 * and sets *len (if len is not NULL); -ENOENT if absent; -EINVAL for a
 * malformed escape in the value (e.g. "%4", "%zz") or a decoded NUL byte;
 * -E2BIG if the decoded value does not fit outlen-1 (-EINVAL takes precedence,
 * so the verdict does not depend on the buffer's size). */
int server_parse_query_param(const char *query, size_t query_len, const char *name, char *out, size_t outlen, size_t *len);

/* Strict decimal parsing of s[0..len): an optional leading '-' only if
 * allow_negative, then one or more digits and nothing else (no spaces, no
 * '+', no hex or exponent; leading zeros are accepted). -EINVAL for anything
 * malformed, -ERANGE for a well-formed number outside int64_t. *out is written
 * only on success. */
int server_parse_int64(const char *s, size_t len, bool allow_negative, int64_t *out);

/* A positive id (1..INT64_MAX) as used in paths and bodies: 0, -EINVAL for
 * anything malformed and for 0 or a negative number, -ERANGE above
 * INT64_MAX. *out is written only on success. */
int server_parse_id(const char *s, size_t len, int64_t *out);

/* A Request-Timeout header value: strictly decimal milliseconds, at least
 * 1 (no sign, no spaces). Returns 0 and sets *ms to the value or max_ms,
 * whichever is smaller (the header may shorten the deadline, never
 * lengthen it); -EINVAL for anything else, a number beyond int64_t
 * included. *ms is written only on success. */
int server_parse_request_timeout(const char *s, size_t len, int64_t max_ms, int64_t *ms);

#endif
