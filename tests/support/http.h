/* Test support: HTTP against a running h2pg over real sockets, for Check
 * integration tests. libcurl for ordinary requests; a raw TCP connection
 * for what curl would tidy up (malformed request lines, pipelining, an
 * announced body that never comes).
 *
 * Everything blocks, and a transport failure is a ck_abort_msg that says
 * what failed, so a test body reads straight. Nothing here is thread-safe
 * beyond what libcurl is; tests call it from their one thread. */
#ifndef H2PG_TESTS_SUPPORT_HTTP_H
#define H2PG_TESTS_SUPPORT_HTTP_H

#include <stddef.h>

#include <jansson.h>

/* One response. body and headers are malloc'd and NUL-terminated (body may
 * also hold NUL bytes: body_len counts them); free with test_response_free.
 * headers is the raw header block of the final response (after any 1xx):
 * status line, then "Name: value\r\n" lines, then the blank line. */
typedef struct test_response {
    long status;
    char *body;
    size_t body_len;
    char *headers;
} test_response;

/* Sends method to the absolute url with body[0..body_len) (body may be NULL
 * when body_len is 0) and the NULL-terminated "Name: value" headers (may be
 * NULL); fills *r. HEAD asks for no body. "Name:" with nothing after it
 * removes a header curl would add (e.g. "Expect:"). 30 s at most;
 * ck_abort on any transport failure or timeout. */
void test_http(test_response *r, const char *method, const char *url, const char *body, size_t body_len,
               const char *const *headers);

/* The value of the first response header called name (case-insensitive),
 * trimmed, as a malloc'd copy; NULL if there is none. */
char *test_response_header(const test_response *r, const char *name);

/* The body parsed as JSON (new reference), or ck_abort showing the body. */
json_t *test_response_json(const test_response *r);

/* Asserts status, a Content-Type of application/problem+json, and an
 * RFC 9457 body: an object with string type, title and detail, and an
 * integer status equal to status. */
void test_assert_problem(const test_response *r, long status);

/* Frees what *r holds and zeroes it; safe to call twice. */
void test_response_free(test_response *r);

/* ---- raw TCP ---- */

/* A blocking TCP connection to 127.0.0.1:port (TCP_NODELAY), or ck_abort.
 * Close it with close(2). */
int test_raw_connect(int port);

/* The same with SO_RCVBUF set to rcvbuf bytes before connecting, so the
 * window it advertises is scaled to it: a reader that stops reading
 * stalls the sender soon. */
int test_raw_connect_rcvbuf(int port, int rcvbuf);

/* The same without aborting, for threads that must not ck_abort and for
 * probes of a server that may not listen yet: the fd, or -errno. rcvbuf
 * <= 0 leaves the default. */
int test_raw_try_connect(int port, int rcvbuf);

/* Writes all of bytes[0..len) to fd, or ck_abort. */
void test_raw_send(int fd, const char *bytes, size_t len);

/* Reads from fd until the peer closes or timeout_ms pass without a byte;
 * returns the malloc'd bytes (NUL-terminated; the length in *out_len). */
char *test_raw_read_all(int fd, int timeout_ms, size_t *out_len);

/* Reads exactly one HTTP/1.1 response from fd (status line, headers, then
 * a Content-Length body, a chunked body (decoded), or for no_body, as after
 * a HEAD, none) into *r. No byte past the response is consumed. ck_abort if
 * it is not complete within timeout_ms or the peer closes first. */
void test_raw_read_response(int fd, int timeout_ms, int no_body, test_response *r);

/* Connects to 127.0.0.1:port, sends bytes (which may be several pipelined
 * requests), and reads until the peer closes or timeout_ms pass without a
 * byte. Returns the malloc'd bytes read (NUL-terminated), length in
 * *out_len. */
char *test_raw_exchange(int port, const char *bytes, size_t len, int timeout_ms, size_t *out_len);

/* Splits bytes[0..len) (what test_raw_exchange returned) into consecutive
 * HTTP/1.1 responses, each with a Content-Length body or none (1xx, 204,
 * 304), into out[0..max); returns how many. ck_abort if bytes hold more than
 * max responses or end inside one; free each with test_response_free. */
size_t test_split_responses(const char *bytes, size_t len, test_response *out, size_t max);

/* ---- a curl handle of the caller's own ----
 *
 * For threads that drive libcurl themselves (load generators), which must
 * not ck_abort: the response of one transfer, collected by
 * test_reply_write. */
typedef struct test_reply {
    long status;
    char *body; /* malloc'd, NUL-terminated after len bytes; NULL before any byte came; the caller frees it */
    size_t len, cap;
} test_reply;

/* A CURLOPT_WRITEFUNCTION appending to the test_reply of CURLOPT_WRITEDATA
 * (set len to 0 to reuse it for the next transfer); on ENOMEM it returns 0,
 * which fails the transfer. */
size_t test_reply_write(char *p, size_t size, size_t n, void *reply);

#endif
