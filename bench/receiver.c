/* A webhook receiver for bench/webhooks.sh's throughput run: the same
 * Standard Webhooks check as tests/webhooks/receiver.mjs (HMAC-SHA256 of
 * id.timestamp.body keyed with the secret's base64 part, against the
 * webhook-signature header's v1 signatures, the timestamp within five
 * minutes), with OpenSSL, answering 204 at once; for a few microseconds of
 * CPU per delivery, where the Node receiver takes about a hundred on the
 * same cores as the server under test. One thread, epoll, HTTP/1.1
 * keep-alive; requests with a Content-Length body, no chunked bodies (the
 * server's webhook client sends none). Not a test tool: the tests verify
 * with the npm library.
 *
 *   receiver             prints "listening <port>" (127.0.0.1, a free port)
 *   POST /_secret        the body is the webhook's secret, whsec_...
 *   GET /_stats          {"connections": n, "verified": n, "failed": n}
 *
 * Built by bench/webhooks.sh: cc -O2 bench/receiver.c -lcrypto. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define BUF (64 * 1024)

struct conn {
    int fd;
    size_t len;
    char buf[BUF];
};

static unsigned char key[256];
static int keylen;
static unsigned long accepted, verified, failed;

/* The value of header name within head (case-insensitive), NUL-terminated
 * in place of its CR; NULL if absent. Lines are found by their LF, so
 * that a value cut this way does not hide the lines after it. */
static char *header(char *head, size_t head_len, const char *name)
{
    size_t n = strlen(name);
    for (char *p = head; p < head + head_len;) {
        char *eol = memchr(p, '\n', (size_t)(head + head_len - p));
        if (eol == NULL)
            return NULL;
        if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            char *v = p + n + 1;
            while (*v == ' ')
                v++;
            eol[-1] = '\0'; /* the CR */
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

static bool signature_ok(const char *id, const char *ts, const char *sigs, const char *body, size_t len)
{
    if (id == NULL || ts == NULL || sigs == NULL)
        return false;
    long long t = atoll(ts);
    if (llabs((long long)time(NULL) - t) > 300)
        return false;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char prefix[512];
    int plen = snprintf(prefix, sizeof(prefix), "%s.%s.", id, ts);
    if (plen < 0 || (size_t)plen >= sizeof(prefix))
        return false;
    /* the HMAC of prefix + body, without copying the body */
    static EVP_MAC *mac;
    if (mac == NULL)
        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end()};
    size_t outl = 0;
    bool ok = ctx != NULL && EVP_MAC_init(ctx, key, (size_t)keylen, params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)plen) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 &&
              EVP_MAC_final(ctx, md, &outl, sizeof(md)) == 1;
    EVP_MAC_CTX_free(ctx);
    mdlen = (unsigned int)outl;
    if (!ok)
        return false;
    char want[EVP_MAX_MD_SIZE * 2];
    int wlen = EVP_EncodeBlock((unsigned char *)want, md, (int)mdlen);
    /* space-separated "v1,<base64>" entries */
    for (const char *p = sigs; *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n == 3 + (size_t)wlen && strncmp(p, "v1,", 3) == 0 && CRYPTO_memcmp(p + 3, want, (size_t)wlen) == 0)
            return true;
        p += n;
        while (*p == ' ')
            p++;
    }
    return false;
}

/* Takes secret (whsec_ + base64, len bytes) as the key; false if it is not one. */
static bool set_secret(const char *secret, size_t len)
{
    if (len <= 6 || strncmp(secret, "whsec_", 6) != 0)
        return false;
    const char *b64 = secret + 6;
    size_t b64len = len - 6;
    if (b64len % 4 != 0 || b64len > 4 * sizeof(key) / 3)
        return false;
    int n = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)b64len);
    for (size_t i = b64len; n > 0 && i > 0 && b64[i - 1] == '='; i--)
        n--;
    keylen = n > 0 ? n : 0;
    return n > 0;
}

static void reply(int fd, const char *status, const char *body)
{
    char out[256];
    int n = snprintf(out, sizeof(out), "HTTP/1.1 %s\r\nContent-Length: %zu\r\n\r\n%s", status, strlen(body), body);
    if (write(fd, out, (size_t)n) < 0) { /* the sender went away: its next read says so */
    }
}

/* Handles every complete request in c's buffer; false: close it. */
static bool serve(struct conn *c)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL)
            return c->len < BUF;
        size_t head_len = (size_t)(end - c->buf) + 2;
        char *cl = header(c->buf, head_len, "content-length");
        size_t body_len = cl != NULL ? strtoul(cl, NULL, 10) : 0;
        size_t total = head_len + 2 + body_len;
        if (total > BUF)
            return false;
        if (c->len < total)
            return true;
        char *body = end + 4;
        if (strncmp(c->buf, "POST /_secret", 13) == 0) {
            bool ok = set_secret(body, body_len);
            reply(c->fd, ok ? "200 OK" : "400 Bad Request", "");
        } else if (strncmp(c->buf, "GET /_stats", 11) == 0) {
            char stats[128];
            snprintf(stats, sizeof(stats), "{\"connections\": %lu, \"verified\": %lu, \"failed\": %lu}", accepted,
                     verified, failed);
            reply(c->fd, "200 OK", stats);
        } else {
            char *id = header(c->buf, head_len, "webhook-id");
            char *ts = header(c->buf, head_len, "webhook-timestamp");
            char *sigs = header(c->buf, head_len, "webhook-signature");
            if (signature_ok(id, ts, sigs, body, body_len))
                verified++;
            else
                failed++;
            reply(c->fd, "204 No Content", "");
        }
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 512) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                accepted += fd >= 0;
                struct conn *nc = fd >= 0 ? malloc(sizeof(*nc)) : NULL;
                if (nc == NULL) {
                    if (fd >= 0)
                        close(fd);
                    continue;
                }
                nc->fd = fd;
                nc->len = 0;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r > 0) {
                c->len += (size_t)r;
                if (serve(c))
                    continue;
            } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            close(c->fd); /* also leaves the epoll set */
            free(c);
        }
    }
}
