#include "support/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>

#include "support/clock.h"

#define HTTP_TIMEOUT_MS 30000L

/* ---- growable byte buffer ---- */

struct buf {
    char *data;
    size_t len, cap;
};

static void buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *d = realloc(b->data, cap);
        ck_assert_msg(d != NULL, "out of memory");
        b->data = d;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* An empty buffer still hands out a valid "" string. */
static char *buf_take(struct buf *b, size_t *len)
{
    if (b->data == NULL)
        buf_append(b, "", 0);
    if (len != NULL)
        *len = b->len;
    char *d = b->data;
    *b = (struct buf){0};
    return d;
}

/* ---- headers in a raw block ---- */

/* The first value of name in a raw header block (the status line is
 * skipped), trimmed; malloc'd or NULL. */
static char *block_header(const char *block, const char *name)
{
    size_t nlen = strlen(name);
    const char *line = strstr(block, "\r\n");
    while (line != NULL) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (end == NULL || end == line)
            break;
        const char *colon = memchr(line, ':', (size_t)(end - line));
        if (colon != NULL && (size_t)(colon - line) == nlen && strncasecmp(line, name, nlen) == 0) {
            const char *v = colon + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = end;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            char *out = strndup(v, (size_t)(e - v));
            ck_assert_msg(out != NULL, "out of memory");
            return out;
        }
        line = end;
    }
    return NULL;
}

char *test_response_header(const test_response *r, const char *name)
{
    return r->headers != NULL ? block_header(r->headers, name) : NULL;
}

/* ---- libcurl ---- */

static void curl_init_once(void)
{
    static bool done;
    if (!done) {
        ck_assert_msg(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK, "curl_global_init failed");
        done = true;
    }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    buf_append(arg, p, size * n);
    return size * n;
}

/* Keeps only the last response's block: a 1xx is followed by another. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (size * n >= 5 && strncmp(p, "HTTP/", 5) == 0)
        b->len = 0;
    buf_append(b, p, size * n);
    return size * n;
}

void test_http(test_response *r, const char *method, const char *url, const char *body, size_t body_len,
               const char *const *headers)
{
    curl_init_once();
    *r = (test_response){0};
    CURL *c = curl_easy_init();
    ck_assert_msg(c != NULL, "curl_easy_init failed");
    struct buf b = {0}, h = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *list = NULL;
    for (const char *const *p = headers; p != NULL && *p != NULL; p++) {
        struct curl_slist *l = curl_slist_append(list, *p);
        ck_assert_msg(l != NULL, "out of memory");
        list = l;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        if (body != NULL || body_len > 0) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
        if (strcmp(method, "GET") != 0 || body != NULL)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        ck_abort_msg("%s %s: %s (%s)", method, url, curl_easy_strerror(rc), errbuf);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    r->body = buf_take(&b, &r->body_len);
    r->headers = buf_take(&h, NULL);
}

json_t *test_response_json(const test_response *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    if (j == NULL)
        ck_abort_msg("the body is not JSON (%s at %d): %.*s", e.text, e.position, (int)(r->body_len > 2000 ? 2000 : r->body_len),
                     r->body);
    return j;
}

void test_assert_problem(const test_response *r, long status)
{
    ck_assert_msg(r->status == status, "expected status %ld, got %ld: %.500s", status, r->status, r->body);
    char *ct = test_response_header(r, "Content-Type");
    ck_assert_msg(ct != NULL, "a %ld response without Content-Type: %.500s", status, r->body);
    size_t n = strlen("application/problem+json");
    ck_assert_msg(strncasecmp(ct, "application/problem+json", n) == 0 && (ct[n] == '\0' || ct[n] == ';'),
                  "a %ld response with Content-Type %s, not application/problem+json: %.500s", status, ct, r->body);
    free(ct);
    json_t *j = test_response_json(r);
    ck_assert_msg(json_is_object(j), "the problem is not a JSON object: %.500s", r->body);
    static const char *const strings[] = {"type", "title", "detail"};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        ck_assert_msg(json_is_string(json_object_get(j, strings[i])), "the problem has no string \"%s\": %.500s", strings[i],
                      r->body);
    json_t *st = json_object_get(j, "status");
    ck_assert_msg(json_is_integer(st) && json_integer_value(st) == status, "the problem's status is not %ld: %.500s",
                  status, r->body);
    json_decref(j);
}

void test_response_free(test_response *r)
{
    free(r->body);
    free(r->headers);
    *r = (test_response){0};
}

/* ---- raw TCP ---- */

int test_raw_try_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* before connect, so the window is scaled to it */
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    return fd;
}

int test_raw_connect_rcvbuf(int port, int rcvbuf)
{
    int fd = test_raw_try_connect(port, rcvbuf);
    if (fd < 0)
        ck_abort_msg("connect to 127.0.0.1:%d: %s", port, strerror(-fd));
    return fd;
}

int test_raw_connect(int port) { return test_raw_connect_rcvbuf(port, 0); }

void test_raw_send(int fd, const char *bytes, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n > 0, "send: %s", n < 0 ? strerror(errno) : "nothing written");
        off += (size_t)n;
    }
}

/* Waits for fd to be readable until deadline (ms of now_ms()); false on
 * timeout. */
static bool wait_readable(int fd, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            ck_abort_msg("poll: %s", strerror(errno));
    }
}

/* One read into b: >0 bytes, 0 at EOF (a reset counts as EOF: the server
 * may close right after answering, before reading all we sent). */
static ssize_t read_some(int fd, struct buf *b, size_t max)
{
    char chunk[16384];
    if (max > sizeof(chunk))
        max = sizeof(chunk);
    for (;;) {
        ssize_t n = recv(fd, chunk, max, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET)
            return 0;
        ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
        buf_append(b, chunk, (size_t)n);
        return n;
    }
}

char *test_raw_read_all(int fd, int timeout_ms, size_t *out_len)
{
    struct buf b = {0};
    while (wait_readable(fd, now_ms() + timeout_ms))
        if (read_some(fd, &b, SIZE_MAX) == 0)
            break;
    return buf_take(&b, out_len);
}

char *test_raw_exchange(int port, const char *bytes, size_t len, int timeout_ms, size_t *out_len)
{
    int fd = test_raw_connect(port);
    test_raw_send(fd, bytes, len);
    char *out = test_raw_read_all(fd, timeout_ms, out_len);
    close(fd);
    return out;
}

/* ---- parsing responses ---- */

/* Decodes a chunked body starting at p[0..len): the bytes consumed (through
 * the trailer's blank line), 0 if incomplete, -1 if malformed. */
static long parse_chunked(const char *p, size_t len, struct buf *body)
{
    size_t off = 0;
    for (;;) {
        const char *eol = memmem(p + off, len - off, "\r\n", 2);
        if (eol == NULL)
            return 0;
        char *end = NULL;
        unsigned long size = strtoul(p + off, &end, 16);
        if (end == p + off)
            return -1;
        size_t data = (size_t)(eol - p) + 2;
        if (size == 0) {
            /* trailers, then a blank line */
            size_t t = data;
            for (;;) {
                const char *e = memmem(p + t, len - t, "\r\n", 2);
                if (e == NULL)
                    return 0;
                if (e == p + t)
                    return (long)(t + 2);
                t = (size_t)(e - p) + 2;
            }
        }
        if (len - data < size + 2)
            return 0;
        if (memcmp(p + data + size, "\r\n", 2) != 0)
            return -1;
        buf_append(body, p + data, size);
        off = data + size + 2;
    }
}

/* Parses one response at the start of p[0..len): the bytes it takes, 0 if
 * incomplete (at_eof: a body without a length ends here), -1 if malformed.
 * Fills *r only when complete. */
static long parse_response(const char *p, size_t len, bool no_body, bool at_eof, test_response *r)
{
    const char *hend = memmem(p, len, "\r\n\r\n", 4);
    if (hend == NULL)
        return 0;
    size_t hlen = (size_t)(hend - p) + 4;
    int status;
    if (len < 12 || strncmp(p, "HTTP/1.", 7) != 0 || sscanf(p + 8, " %3d", &status) != 1)
        return -1;
    char *headers = strndup(p, hlen);
    ck_assert_msg(headers != NULL, "out of memory");
    struct buf body = {0};
    long used;
    char *cl = block_header(headers, "Content-Length");
    char *te = block_header(headers, "Transfer-Encoding");
    if (no_body || (status >= 100 && status < 200) || status == 204 || status == 304) {
        used = (long)hlen;
    } else if (cl != NULL) {
        char *end = NULL;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end != '\0')
            used = -1;
        else if (len - hlen < n)
            used = 0;
        else {
            buf_append(&body, p + hlen, (size_t)n);
            used = (long)(hlen + n);
        }
    } else if (te != NULL && strcasecmp(te, "chunked") == 0) {
        long n = parse_chunked(p + hlen, len - hlen, &body);
        used = n <= 0 ? n : (long)hlen + n;
    } else if (at_eof) {
        buf_append(&body, p + hlen, len - hlen);
        used = (long)len;
    } else {
        used = 0;
    }
    free(cl);
    free(te);
    if (used <= 0) {
        free(headers);
        free(body.data);
        return used;
    }
    r->status = status;
    r->headers = headers;
    r->body = buf_take(&body, &r->body_len);
    return used;
}

void test_raw_read_response(int fd, int timeout_ms, int no_body, test_response *r)
{
    *r = (test_response){0};
    int64_t deadline = now_ms() + timeout_ms;
    struct buf b = {0};
    bool eof = false;
    for (;;) {
        long used = b.len ? parse_response(b.data, b.len, no_body != 0, eof, r) : 0;
        if (used < 0)
            ck_abort_msg("a malformed response: %.500s", b.data);
        if (used > 0) {
            ck_assert_msg((size_t)used == b.len, "read past the response");
            free(b.data);
            return;
        }
        if (eof)
            ck_abort_msg("the connection closed inside a response: %.500s", b.data ? b.data : "(nothing)");
        if (!wait_readable(fd, deadline))
            ck_abort_msg("no complete response within %d ms: %.500s", timeout_ms, b.data ? b.data : "(nothing)");
        /* Never consume bytes of a following response: peek, and take only
         * up to the end of this one once its size is known. */
        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof(chunk), MSG_PEEK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET)
            n = 0;
        ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
        if (n == 0) {
            eof = true;
            continue;
        }
        size_t take = (size_t)n;
        struct buf probe = {0};
        buf_append(&probe, b.data ? b.data : "", b.len);
        buf_append(&probe, chunk, (size_t)n);
        test_response tmp = {0};
        long whole = parse_response(probe.data, probe.len, no_body != 0, false, &tmp);
        if (whole > 0) {
            take = (size_t)whole - b.len;
            test_response_free(&tmp);
        }
        free(probe.data);
        ssize_t got = read_some(fd, &b, take);
        if (got == 0)
            eof = true;
    }
}

size_t test_split_responses(const char *bytes, size_t len, test_response *out, size_t max)
{
    size_t n = 0, off = 0;
    while (off < len) {
        ck_assert_msg(n < max, "more than %zu responses", max);
        long used = parse_response(bytes + off, len - off, false, true, &out[n]);
        if (used <= 0)
            ck_abort_msg("%s response at byte %zu: %.300s", used < 0 ? "a malformed" : "an incomplete", off, bytes + off);
        off += (size_t)used;
        n++;
    }
    return n;
}

/* ---- a curl handle of the caller's own ---- */

size_t test_reply_write(char *p, size_t size, size_t n, void *arg)
{
    test_reply *r = arg;
    size_t add = size * n;
    if (r->len + add + 1 > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        while (cap < r->len + add + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}
