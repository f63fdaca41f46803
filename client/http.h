/* Calling out over HTTP from a task (what aiohttp / httpx are to asyncio).
 *
 *     client_http_request req = {.url = "https://api.example.com/v1/things"};
 *     client_http_response resp;
 *     int rc = client_http_fetch(&req, &resp);   // awaits; the task's deadline applies
 *     if (rc == 0 && resp.status == 200) use(resp.body, resp.body_len);
 *     client_http_response_dispose(&resp);
 *
 * libcurl's multi interface, driven by the calling thread's loop: one multi
 * per loop, made at the first call and freed when the loop ends. Its sockets
 * and its timer (a timerfd) sit in an epoll set of its own, which one driver
 * task awaits with aio_fd_wait; nothing on the loop thread blocks. DNS runs on
 * libcurl's resolver threads (Debian builds it with the threaded resolver:
 * client_http_async_dns() says so at run time, and the tests check it).
 * Connections stay in the multi's cache for reuse (keep-alive; HTTP/2
 * multiplexing over TLS where the server offers it). TLS is verified against
 * the system CA store, or the request's CA file; it is never turned off.
 * Every scheme://host:port has a semaphore of max_per_host slots per loop.
 *
 * Errors (negative errno; libcurl's message is in resp->error):
 *   -ECANCELED    the task was cancelled: the transfer is removed from the
 *                 multi at once and its connection closed
 *   -ETIMEDOUT    the task's deadline passed (same clean-up), or the
 *                 connection could not be made within connect_timeout
 *   -EFBIG        the response is larger than max_response
 *   -ENXIO        the host name does not resolve
 *   -ECONNREFUSED (or the connect errno) nothing listens there
 *   -ECONNRESET   the server dropped the connection before a whole response
 *   -EACCES       the server's certificate could not be verified
 *   -EPROTO       another TLS or HTTP protocol failure
 *   -EINVAL       a bad URL or a scheme other than http/https
 *   -EPERM        public_only, and every address the name resolved to is
 *                 loopback, private, link-local or otherwise not public
 *   -ENOMEM
 *   -EIO          anything else libcurl reports
 * An HTTP error status is not an error: rc is 0 and resp->status says it. */
#ifndef H2PG_CLIENT_HTTP_H
#define H2PG_CLIENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENT_HTTP_MAX_RESPONSE_DEFAULT (1024 * 1024)

/* One request, in the caller's memory; everything it points to must stay
 * valid until client_http_fetch returns. */
typedef struct client_http_request {
    const char *method;          /* NULL: GET, or POST if there is a body */
    const char *url;             /* http:// or https:// */
    const char *const *headers;  /* "Name: value" lines */
    size_t nheaders;
    const void *body;            /* sent as is, body_len bytes */
    size_t body_len;
    size_t max_response;         /* body bytes accepted; 0: CLIENT_HTTP_MAX_RESPONSE_DEFAULT */
    const char *ca_file;         /* PEM file of trusted CAs; NULL: the system store */
    /* Connect only to public addresses: the check is made on each address
     * libcurl is about to connect to, after DNS, so a name that resolves
     * (or re-resolves) to 127.0.0.1, 10/8, 172.16/12, 192.168/16,
     * 100.64/10, 169.254/16, 0/8, multicast, ::1, ::, fc00::/7, fe80::/10
     * or an IPv4-mapped form of those is refused (-EPERM). Such requests
     * keep their connections apart: they reuse only ones opened by such a
     * request, through the check, never one opened without it (that could
     * lead anywhere). They ignore proxy settings. Redirects are never
     * followed by this client. */
    bool public_only;
} client_http_request;

/* Whether the address (a struct sockaddr_in or _in6) is one public_only
 * accepts. Pure. */
struct sockaddr;
bool client_http_address_public(const struct sockaddr *addr);

/* The answer. body and headers are malloc'd and NUL-terminated (never NULL
 * after a call); freed by client_http_response_dispose. */
typedef struct client_http_response {
    long status;        /* 0 if no response arrived */
    int http_version;   /* 1 or 2 */
    char *body;
    size_t body_len;
    char *headers;      /* the final response's header block, as received */
    size_t headers_len;
    char error[256];    /* libcurl's description of a failure, or "" */
} client_http_response;

/* Sends req and awaits the whole response (under the task's deadline and
 * cancellation). Returns 0 or a negative errno above; resp is filled either
 * way and must be disposed. Only from a task. */
int client_http_fetch(const client_http_request *req, client_http_response *resp);

void client_http_response_dispose(client_http_response *resp);

/* Settings of the calling thread's client. */
typedef struct client_http_options {
    size_t max_per_host;      /* concurrent requests per scheme://host:port; 0: 8 */
    int64_t connect_timeout;  /* nanoseconds; 0: 10 s */
} client_http_options;

/* Applies to requests started afterwards on this loop (a host already in
 * use keeps its limit until it is idle). 0, or -ENOMEM. Only on a loop thread. */
int client_http_configure(const client_http_options *opts);

/* Whether libcurl resolves names off the calling thread (CURL_VERSION_ASYNCHDNS). */
bool client_http_async_dns(void);

#endif
