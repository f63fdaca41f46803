/* Holds many idle keep-alive connections open against one server (the load
 * tool of bench/idle.sh; built by it with cc, not part of the CMake build).
 *
 *   idle_conns HOST PORT N request|silent|partial [-p PATH] [-c CONNECTING] [-w SECONDS]
 *
 * Opens N TCP connections, at most CONNECTING (default 128) being set up at
 * a time so that the listen backlog never overflows. `request`: each sends
 * one `GET PATH HTTP/1.1` (default /json) and reads the whole response
 * (Content-Length or chunked), then stays idle; `silent`: each connects and
 * sends nothing; `partial`: each sends the request without the blank line
 * that ends its header, so that it stays a request in progress. Once every connection is idle (or failed) it prints
 *
 *   ready idle=N failed=F setup_ms=T
 *
 * and then only watches for the server closing them. Without -w it stays
 * until SIGTERM/SIGINT; with -w it stops as soon as every connection was
 * closed by the server, or after SECONDS. Either way it ends with
 *
 *   done idle=N closed_by_server=C still_open=O unexpected_bytes=B
 *   close_after_idle_ms min=… p50=… p99=… max=…     (when C > 0)
 *
 * where close_after_idle is, per connection, the time from when it went
 * idle (response read / connected) to when the server closed it. Exits 0,
 * or 1 when any connection failed to reach the idle state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { UNUSED, CONNECTING, AWAITING, IDLE, CLOSED, FAILED };

struct conn {
    int fd;
    enum state state;
    char *buf; /* the response while it arrives; NULL otherwise */
    size_t len;
    int64_t idle_since, closed_at; /* ms */
};

#define RESP_CAP 8192

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Whether buf holds one complete response; *ok says it was a 2xx. */
static bool response_complete(const char *buf, size_t len, bool *ok)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return false;
    *ok = len >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && buf[9] == '2';
    size_t head = (size_t)(end - buf) + 4;
    for (const char *p = buf; p < end; p++) {
        if (p[0] != '\n')
            continue;
        if (strncasecmp(p + 1, "content-length:", 15) == 0)
            return len - head >= strtoul(p + 16, NULL, 10);
        if (strncasecmp(p + 1, "transfer-encoding:", 18) == 0 && len - head >= 5)
            return memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0;
    }
    return true; /* no body (e.g. 204) */
}

static void usage(void)
{
    fprintf(stderr, "usage: idle_conns HOST PORT N request|silent|partial [-p PATH] [-c CONNECTING] [-w SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 5)
        usage();
    const char *host = argv[1], *port = argv[2];
    long n = strtol(argv[3], NULL, 10);
    bool send_request = strcmp(argv[4], "request") == 0, partial = strcmp(argv[4], "partial") == 0;
    if (n <= 0 || (!send_request && !partial && strcmp(argv[4], "silent") != 0))
        usage();
    const char *path = "/json";
    long connecting_max = 128, watch_s = -1;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-p") == 0)
            path = argv[i + 1];
        else if (strcmp(argv[i], "-c") == 0)
            connecting_max = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-w") == 0)
            watch_s = strtol(argv[i + 1], NULL, 10);
        else
            usage();
    }
    if ((argc - 5) % 2 != 0 || connecting_max <= 0)
        usage();

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int e = getaddrinfo(host, port, &hints, &ai);
    if (e != 0) {
        fprintf(stderr, "idle_conns: %s:%s: %s\n", host, port, gai_strerror(e));
        return 2;
    }
    char request[512];
    int reqlen = snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", path, host, port);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct conn *conns = calloc((size_t)n, sizeof(*conns));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || ep < 0) {
        perror("idle_conns");
        return 2;
    }
    long started = 0, busy = 0, idle = 0, failed = 0, closed = 0;
    uint64_t unexpected = 0;
    int64_t t0 = now_ms(), ready_at = -1;
    char scratch[4096];
    struct epoll_event evs[256];
    const char *first_error = NULL;

    while (!stop_requested) {
        /* keep CONNECTING connections being set up until all are started */
        while (started < n && busy < connecting_max) {
            struct conn *c = &conns[started];
            c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            started++;
            if (c->fd < 0 || (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)) {
                if (first_error == NULL)
                    first_error = strerror(errno);
                if (c->fd >= 0)
                    close(c->fd);
                c->fd = -1;
                c->state = FAILED;
                failed++;
                continue;
            }
            c->state = CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            busy++;
        }
        if (ready_at < 0 && started == n && busy == 0) {
            ready_at = now_ms();
            printf("ready idle=%ld failed=%ld setup_ms=%lld\n", idle, failed, (long long)(ready_at - t0));
            if (first_error != NULL)
                printf("first_error %s\n", first_error);
        }
        if (ready_at >= 0 && watch_s >= 0 && (closed == idle || now_ms() - ready_at >= watch_s * 1000))
            break;
        if (ready_at >= 0 && watch_s >= 0 && idle == 0)
            break;

        int k = epoll_wait(ep, evs, 256, 100);
        if (k < 0 && errno != EINTR) {
            perror("idle_conns: epoll_wait");
            return 2;
        }
        int64_t now = now_ms();
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                /* partial: all but the header's final CRLF */
                size_t wlen = (size_t)reqlen - (partial ? 2 : 0);
                if (err == 0 && (send_request || partial) && write(c->fd, request, wlen) != (ssize_t)wlen)
                    err = errno ? errno : EIO;
                if (err != 0) {
                    if (first_error == NULL)
                        first_error = strerror(err);
                    goto fail;
                }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (send_request) {
                    c->state = AWAITING;
                    if ((c->buf = malloc(RESP_CAP)) == NULL)
                        goto fail;
                } else {
                    c->state = IDLE;
                    c->idle_since = now;
                    idle++;
                    busy--;
                }
            } else if (c->state == AWAITING) {
                ssize_t r = read(c->fd, c->buf + c->len, RESP_CAP - c->len);
                bool ok = false;
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    if (first_error == NULL)
                        first_error = r == 0 ? "closed before the response" : strerror(errno);
                    goto fail;
                }
                c->len += (size_t)r;
                if (!response_complete(c->buf, c->len, &ok)) {
                    if (c->len == RESP_CAP) {
                        if (first_error == NULL)
                            first_error = "response too large";
                        goto fail;
                    }
                    continue;
                }
                free(c->buf);
                c->buf = NULL;
                if (!ok) {
                    if (first_error == NULL)
                        first_error = "non-2xx response";
                    goto fail;
                }
                c->state = IDLE;
                c->idle_since = now;
                idle++;
                busy--;
            } else if (c->state == IDLE) {
                ssize_t r;
                while ((r = read(c->fd, scratch, sizeof(scratch))) > 0)
                    unexpected += (uint64_t)r;
                if (r < 0 && errno == EAGAIN && !(evs[i].events & (EPOLLHUP | EPOLLERR)))
                    continue;
                /* EOF, a reset or an error: the server closed it */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->state = CLOSED;
                c->closed_at = now;
                closed++;
            }
            continue;
        fail:
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            free(c->buf);
            c->buf = NULL;
            c->state = FAILED;
            failed++;
            busy--;
        }
    }

    if (ready_at < 0)
        printf("ready idle=%ld failed=%ld setup_ms=%lld (interrupted)\n", idle, failed, (long long)(now_ms() - t0));
    printf("done idle=%ld closed_by_server=%ld still_open=%ld unexpected_bytes=%llu\n", idle, closed, idle - closed,
           (unsigned long long)unexpected);
    if (closed > 0) {
        int64_t *d = malloc((size_t)closed * sizeof(*d));
        long m = 0;
        for (long i = 0; i < n && d != NULL; i++)
            if (conns[i].state == CLOSED)
                d[m++] = conns[i].closed_at - conns[i].idle_since;
        if (d != NULL) {
            qsort(d, (size_t)m, sizeof(*d), cmp_i64);
            printf("close_after_idle_ms min=%lld p50=%lld p99=%lld max=%lld\n", (long long)d[0], (long long)d[m / 2],
                   (long long)d[(m * 99) / 100], (long long)d[m - 1]);
            free(d);
        }
    }
    for (long i = 0; i < n; i++) {
        if (conns[i].state == CONNECTING || conns[i].state == AWAITING || conns[i].state == IDLE)
            close(conns[i].fd);
        free(conns[i].buf);
    }
    free(conns);
    freeaddrinfo(ai);
    close(ep);
    return failed > 0 ? 1 : 0;
}
